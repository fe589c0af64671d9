//! Generates the firmware's test data on the host: the first ECG5000 TEST beats as f32 windows,
//! and their expected cluster IDs computed by the runtime's native path (the same crate, built
//! for the host), then one window of noise, which the model flags as anomalous, then two
//! windows of other lengths (the first 100 samples of a beat; two beats run together, 200
//! samples): the streaming encoder takes any number of samples. `lengths.bin` holds each
//! window's length.
//! `FIRMWARE_CORRUPT_EXPECTED=1` deliberately corrupts the first expectation, to
//! prove the firmware's check can fail. `FIRMWARE_BUNDLE=PATH` flashes another bundle than the
//! shipped `models/ecg5000/model.bundle` (e.g. one `trainer import` made).

use std::io::Read;
use std::path::PathBuf;

use runtime::batch::HostState;
use runtime::bundle::AlignedBytes;
use runtime::Encoder;

const WINDOWS: usize = 16;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let bundle_path = match std::env::var_os("FIRMWARE_BUNDLE") {
        Some(p) => PathBuf::from(p),
        None => root.join("models/ecg5000/model.bundle"),
    };
    let data_path = root.join("data/ecg5000/ECG5000_TEST.tsv.gz");
    println!("cargo:rerun-if-changed={}", bundle_path.display());
    println!("cargo:rerun-if-changed={}", data_path.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=FIRMWARE_CORRUPT_EXPECTED");
    println!("cargo:rerun-if-env-changed=FIRMWARE_BUNDLE");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy(root.join("firmware-sim/mcu/memory.x"), out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());

    let bytes = std::fs::read(&bundle_path).unwrap_or_else(|e| panic!("{}: {e}", bundle_path.display()));
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
        let (_, a) = enc.classify_window::<512, 4, 256>(&mut state, &w).unwrap();
        windows.extend(w.iter().flat_map(|v| v.to_le_bytes()));
        expected.extend((a.cluster as u32).to_le_bytes());
        expected.extend(a.distance.to_le_bytes());
        expected.extend((a.anomalous as u32).to_le_bytes());
    }
    if std::env::var("FIRMWARE_CORRUPT_EXPECTED").is_ok_and(|v| v == "1") {
        let k = enc.bundle().header.k as u32;
        let id = u32::from_le_bytes(expected[0..4].try_into().unwrap());
        expected[0..4].copy_from_slice(&((id + 1) % k).to_le_bytes());
    }
    std::fs::write(out.join("windows.bin"), windows).unwrap();
    std::fs::write(out.join("lengths.bin"), lengths).unwrap();
    std::fs::write(out.join("expected.bin"), expected).unwrap();
    std::fs::copy(&bundle_path, out.join("model.bundle")).unwrap();
}
