//! Generates the firmware's test data on the host: the first ECG5000 TEST beats as f32 windows,
//! and their expected cluster IDs computed by the runtime's native path (the same crate, built
//! for the host), then one window of noise, which the model flags as anomalous, then two
//! windows of other lengths (the first 100 samples of a beat; two beats run together, 200
//! samples): the streaming encoder takes any number of samples. `lengths.bin` holds each
//! window's length.
//! `FIRMWARE_CORRUPT_EXPECTED=1` deliberately corrupts the first expectation, to
//! prove the firmware's check can fail. `FIRMWARE_BUNDLE=PATH` flashes another bundle than the
//! shipped `models/ecg5000/model.bundle` (e.g. one `trainer import` made).
//! `FIRMWARE_MIN_LEN=N` flashes the bundle re-encoded with a minimum window length of N
//! (version 6, as a model trained on series of their own lengths carries): the windows shorter
//! than N are expected to be refused, on the device as on the host (expected cluster
//! `TOO_SHORT`).

use std::io::Read;
use std::path::PathBuf;

use runtime::batch::HostState;
use runtime::bundle::{encode, AlignedBytes, Bundle, DecisionTables};
use runtime::{EncodeError, Encoder};

const WINDOWS: usize = 16;
/// The expected cluster of a window the model refuses as shorter than its minimum length.
const TOO_SHORT: u32 = u32::MAX;

/// `bytes` re-encoded with `header.min_len = min_len`, every weight and table as it was.
fn with_min_len(bytes: &[u8], min_len: u32) -> Vec<u8> {
    let aligned = AlignedBytes::new(bytes);
    let b = Bundle::parse(aligned.as_bytes()).expect("valid bundle");
    let header = runtime::bundle::Header { min_len, ..b.header };
    encode(&header, &b.float_weights(), &DecisionTables::of(&b)).expect("re-encoded bundle")
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let bundle_path = match std::env::var_os("FIRMWARE_BUNDLE") {
        Some(p) => PathBuf::from(p),
        None => root.join("models/ecg5000/model.bundle"),
    };
    let data_path = root.join("data/ecg5000/ECG5000_TEST.tsv.gz");
    println!("cargo:rerun-if-changed={}", bundle_path.display());
    println!("cargo:rerun-if-changed={}", data_path.display());
    println!("cargo:rerun-if-changed=memory-an386.x");
    println!("cargo:rerun-if-changed=memory-an505.x");
    println!("cargo:rerun-if-changed=memory-microbit.x");
    println!("cargo:rerun-if-env-changed=FIRMWARE_CORRUPT_EXPECTED");
    println!("cargo:rerun-if-env-changed=FIRMWARE_BUNDLE");
    println!("cargo:rerun-if-env-changed=FIRMWARE_MIN_LEN");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // The board's memory map as the `memory.x` cortex-m-rt's link.x includes: MPS2 AN505 for
    // Cortex-M33 (thumbv8m.main), AN386 for Cortex-M4F. No file of that name in this directory:
    // the linker would read it before the one in OUT_DIR.
    let target = std::env::var("TARGET").unwrap_or_default();
    let memory = if target.starts_with("thumbv8m") {
        "memory-an505.x"
    } else if target.starts_with("thumbv6m") {
        "memory-microbit.x"
    } else {
        "memory-an386.x"
    };
    std::fs::copy(root.join("firmware-sim/mcu").join(memory), out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    let mut bytes = std::fs::read(&bundle_path).unwrap_or_else(|e| panic!("{}: {e}", bundle_path.display()));
    if let Some(n) = std::env::var("FIRMWARE_MIN_LEN").ok().filter(|v| !v.is_empty()) {
        bytes = with_min_len(&bytes, n.parse().expect("FIRMWARE_MIN_LEN is a number of samples"));
    }
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).expect("valid bundle");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&data_path).unwrap()).read_to_string(&mut text).unwrap();
    let mut windows = Vec::new();
    let mut expected = Vec::new();
    let mut state = Box::new(HostState::default());
    let beats = text.lines().take(WINDOWS).map(|line| line.split('\t').skip(1).map(|v| v.trim().parse().unwrap()).collect());
    let mut x = 12345u32;
    let noise: Vec<f32> = (0..enc.bundle().header.seq_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as f32 / u32::MAX as f32 - 0.5
        })
        .collect();
    let beats: Vec<Vec<f32>> = beats.collect();
    let short: Vec<f32> = beats[0][..100].to_vec();
    let long: Vec<f32> = beats[1].iter().chain(&beats[2][..60]).copied().collect();
    let mut lengths = Vec::new();
    for w in beats.into_iter().chain([noise, short, long]) {
        lengths.extend((w.len() as u32).to_le_bytes());
        windows.extend(w.iter().flat_map(|v| v.to_le_bytes()));
        match enc.classify_window::<512, 4, 256>(&mut state, &w) {
            Ok((_, a)) => {
                expected.extend((a.cluster as u32).to_le_bytes());
                expected.extend(a.distance.to_le_bytes());
                expected.extend((a.anomalous as u32).to_le_bytes());
            }
            Err(EncodeError::TooShort { .. }) => {
                expected.extend(TOO_SHORT.to_le_bytes());
                expected.extend(f32::NAN.to_le_bytes());
                expected.extend(0u32.to_le_bytes());
            }
            Err(e) => panic!("window of {} samples: {e}", w.len()),
        }
    }
    if std::env::var("FIRMWARE_CORRUPT_EXPECTED").is_ok_and(|v| v == "1") {
        let k = enc.bundle().header.k as u32;
        let id = u32::from_le_bytes(expected[0..4].try_into().unwrap());
        expected[0..4].copy_from_slice(&((id + 1) % k).to_le_bytes());
    }
    std::fs::write(out.join("windows.bin"), windows).unwrap();
    std::fs::write(out.join("lengths.bin"), lengths).unwrap();
    std::fs::write(out.join("expected.bin"), expected).unwrap();
    std::fs::write(out.join("model.bundle"), bytes).unwrap();
}
