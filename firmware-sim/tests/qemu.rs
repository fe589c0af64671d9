//! The firmware in QEMU: every cluster ID equals the host runtime's, and a corrupted embedded
//! expectation makes it exit non-zero; a bundle `trainer import` made of a PyTorch-trained
//! encoder runs on it too, with PyTorch's own clusters; a bundle with a minimum window length
//! refuses the shorter windows on the device as on the host; the shipped model with int8
//! weights gives the host's int8 IDs and distances, bit for bit, on the Cortex-M4F (its
//! `SXTB16`/`SMLAD` kernel) and the Cortex-M33 (the portable one).

use std::io::Read;

use firmware_sim::{build, build_for, mcu_dir, run_on, run_qemu, Board};
use runtime::batch::HostState;
use runtime::bundle::AlignedBytes;
use runtime::Encoder;

/// Cluster IDs and anomaly flags of the first `n` ECG5000 TEST beats, computed here on the host
/// with the bundle at `bundle` (relative to the repository root).
fn host_ids(n: usize, bundle: &str) -> Vec<(usize, bool)> {
    let root = mcu_dir().join("../..");
    let bytes = std::fs::read(root.join(bundle)).unwrap();
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).unwrap();
    let mut text = String::new();
    let f = std::fs::File::open(root.join("data/ecg5000/ECG5000_TEST.tsv.gz")).unwrap();
    flate2::read::GzDecoder::new(f).read_to_string(&mut text).unwrap();
    let mut s = Box::new(HostState::default());
    text.lines()
        .take(n)
        .map(|l| {
            let w: Vec<f32> = l.split('\t').skip(1).map(|v| v.trim().parse().unwrap()).collect();
            let a = enc.classify_window::<512, 4, 256>(&mut s, &w).unwrap().1;
            (a.cluster, a.anomalous)
        })
        .collect()
}

/// The `window=` lines of a firmware run as (cluster, anomalous), after checking that the device's
/// distances and flags equal the host's exactly; windows refused as too short are left out.
fn device_ids(stdout: &str) -> Vec<(usize, bool)> {
    let encoded = || stdout.lines().filter(|l| l.starts_with("window=") && !l.contains(" too_short "));
    for line in encoded() {
        let field = |k: &str| line.split(' ').find_map(|f| f.strip_prefix(k)).unwrap().to_string();
        assert_eq!(field("dist="), field("host_dist="), "{line}");
        assert_eq!(field("anomalous="), field("host_anomalous="), "{line}");
    }
    encoded()
        .filter_map(|l| l.strip_prefix("window="))
        .map(|l| {
            let field = |k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).unwrap().to_string();
            (field("cluster=").parse().unwrap(), field("anomalous=") == "1")
        })
        .collect()
}

#[test]
fn firmware_matches_the_host_and_catches_a_corrupted_expectation() {
    let target = mcu_dir().join("target");
    let elf = build(&target, &[]).unwrap_or_else(|e| panic!("firmware build failed:\n{e}"));
    let out = run_qemu(&elf).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "firmware failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Bit-identical arithmetic: the distances printed by the device equal the host's exactly.
    let ids = device_ids(&stdout);
    // 16 ECG beats, then a window of noise the model must flag, then windows of 100 and 200
    // samples (their distances equal the host's to the bit, checked above).
    assert_eq!(ids.len(), 19, "{stdout}");
    assert!(ids[16].1, "the noise window is not flagged anomalous:\n{stdout}");
    assert_eq!(ids[..16], host_ids(16, "models/ecg5000/model.bundle")[..], "Cortex-M IDs differ from the host's:\n{stdout}");
    let samples: Vec<&str> = stdout.lines().filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("samples="))).collect();
    assert_eq!(samples[15..], ["140", "140", "100", "200"], "{stdout}");
    let stack: usize = stdout.lines().find_map(|l| l.strip_prefix("stack_high_water_bytes=")).unwrap().parse().unwrap();
    let state: usize = stdout.lines().find_map(|l| l.strip_prefix("state_bytes_per_device=")).unwrap().parse().unwrap();
    assert!(stack > 0 && stack + state <= 16 * 1024, "RAM budget: stack {stack} + state {state} bytes");

    let corrupt = build(&mcu_dir().join("target/corrupt"), &[("FIRMWARE_CORRUPT_EXPECTED", "1")]).unwrap();
    let out = run_qemu(&corrupt).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a wrong expectation must fail the run:\n{stdout}");
    assert!(stdout.contains("window=0") && stdout.contains("MISMATCH"), "{stdout}");
}

/// PyTorch's latents of the first ECG5000 TEST beats for the imported GRU, and its centroid table.
fn torch_fixture() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dir = mcu_dir().join("../../trainer/tests/fixtures/torch");
    let rows = |text: String| -> Vec<Vec<f32>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                l.trim_matches(['[', ']', ' ']).split(',').filter(|v| !v.trim().is_empty()).map(|v| v.trim().parse().unwrap()).collect()
            })
            .collect()
    };
    let latents = rows(std::fs::read_to_string(dir.join("gru90_latents.csv")).unwrap());
    let table = std::fs::read_to_string(dir.join("gru90_centroids.json")).unwrap().replace("],", "]\n");
    (latents, rows(table))
}

#[test]
fn firmware_runs_a_bundle_imported_from_pytorch() {
    let bundle = "trainer/tests/fixtures/torch/gru90.bundle";
    let path = mcu_dir().join("../..").join(bundle);
    let elf = build(&mcu_dir().join("target/imported"), &[("FIRMWARE_BUNDLE", path.to_str().unwrap())])
        .unwrap_or_else(|e| panic!("firmware build failed:\n{e}"));
    let out = run_qemu(&elf).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "firmware failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ids = device_ids(&stdout);
    assert_eq!(ids.len(), 19, "{stdout}");
    let device: Vec<usize> = ids[..16].iter().map(|i| i.0).collect();
    assert_eq!(device, host_ids(16, bundle).iter().map(|i| i.0).collect::<Vec<_>>(), "Cortex-M IDs differ from the host's:\n{stdout}");
    // The clusters PyTorch's own latents fall in: the device runs PyTorch's model.
    let (latents, table) = torch_fixture();
    assert_eq!(table.len(), 5);
    let nearest = |z: &[f32]| {
        let d = |c: &Vec<f32>| c.iter().zip(z).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
        (0..table.len()).min_by(|&a, &b| d(&table[a]).total_cmp(&d(&table[b]))).unwrap()
    };
    let torch: Vec<usize> = latents[..16].iter().map(|z| nearest(z)).collect();
    assert_eq!(device, torch, "the device's clusters differ from those of PyTorch's latents:\n{stdout}");
    assert!(device.iter().any(|&c| c != device[0]), "one cluster for every beat proves little:\n{stdout}");
}

#[test]
fn firmware_enforces_the_models_minimum_length() {
    // The shipped model re-encoded with a minimum of 120 samples: of the windows of 140, 100 and
    // 200 samples, the device must refuse the 100 (as the host does) and encode the others.
    let elf =
        build(&mcu_dir().join("target/min-len"), &[("FIRMWARE_MIN_LEN", "120")]).unwrap_or_else(|e| panic!("firmware build failed:\n{e}"));
    let out = run_qemu(&elf).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "firmware failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let refused: Vec<&str> = stdout.lines().filter(|l| l.contains(" too_short ")).collect();
    assert_eq!(refused, ["window=17 samples=100 too_short min=120 expected=4294967295 ok"], "{stdout}");
    let ids = device_ids(&stdout);
    assert_eq!(ids.len(), 18, "{stdout}");
    assert_eq!(ids[..16], host_ids(16, "models/ecg5000/model.bundle")[..], "Cortex-M IDs differ from the host's:\n{stdout}");
}

/// Builds the firmware for `board` with `bundle` (relative to the repository root) into
/// `mcu/target/DIR`, runs it, and checks that it exits 0 and that its 19 windows' IDs (and,
/// in `device_ids`, distances) equal the host's; returns the IDs and the output.
fn matches_the_host_on(board: Board, bundle: &str, dir: &str) -> (Vec<(usize, bool)>, String) {
    let path = mcu_dir().join("../..").join(bundle);
    let elf = build_for(board, &mcu_dir().join("target").join(dir), &[("FIRMWARE_BUNDLE", path.to_str().unwrap())])
        .unwrap_or_else(|e| panic!("{board:?} firmware build failed:\n{e}"));
    let out = run_on(board, &elf).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{board:?} firmware failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ids = device_ids(&stdout);
    assert_eq!(ids.len(), 19, "{stdout}");
    assert_eq!(ids[..16], host_ids(16, bundle)[..], "{board:?} IDs differ from the host's ({bundle}):\n{stdout}");
    (ids, stdout)
}

/// The same firmware on a Cortex-M33 (Armv8-M Mainline, `thumbv8m.main-none-eabihf`, QEMU's
/// MPS2 AN505): the shipped model's IDs and the imported GRU's (several clusters) equal the
/// host's, distances to the bit.
#[test]
fn cortex_m33_firmware_matches_the_host() {
    matches_the_host_on(Board::An505, "models/ecg5000/model.bundle", "m33");
    let (ids, stdout) = matches_the_host_on(Board::An505, "trainer/tests/fixtures/torch/gru90.bundle", "m33-imported");
    assert!(ids[..16].iter().any(|i| i.0 != ids[0].0), "one cluster for every beat proves little:\n{stdout}");
}

/// Armv6-M (`thumbv6m-none-eabi`, the Cortex-M0+'s instruction set; no FPU, so soft float) on
/// QEMU's micro:bit (Cortex-M0, 256 KiB flash, 16 KiB RAM): the imported GRU's IDs (several
/// clusters) and distances equal the host's, bit for bit, within the board's RAM.
#[test]
fn armv6m_firmware_matches_the_host() {
    let (ids, stdout) = matches_the_host_on(Board::Microbit, "trainer/tests/fixtures/torch/gru90.bundle", "m0");
    assert!(ids[..16].iter().any(|i| i.0 != ids[0].0), "one cluster for every beat proves little:\n{stdout}");
    let stack: usize = stdout.lines().find_map(|l| l.strip_prefix("stack_high_water_bytes=")).unwrap().parse().unwrap();
    assert!(stack < 16 * 1024, "stack {stack} bytes in 16 KiB of RAM");
}

/// The shipped model with int8 weights (`trainer export --weights int8` writes the same bytes:
/// `tests/tests/int8.rs`), written under `mcu/target`; returns its path.
fn int8_bundle() -> String {
    let shipped = AlignedBytes::new(&std::fs::read(mcu_dir().join("../../models/ecg5000/model.bundle")).unwrap());
    let b = runtime::Bundle::parse(shipped.as_bytes()).unwrap();
    let header = runtime::Header { weight_format: runtime::WeightFormat::Int8, ..b.header };
    let bytes = runtime::bundle::encode(&header, b.weights, &runtime::bundle::DecisionTables::of(&b)).unwrap();
    let path = mcu_dir().join("target/ecg5000-int8.bundle");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// int8 weights on the Cortex-M4F (DSP instructions) and the Cortex-M33 (portable loop): IDs,
/// distances and anomaly flags equal the host's int8 ones to the bit, and the model takes at
/// most a third of its f32 flash (a byte a weight and a prototype value, plus f32 scales).
#[test]
fn int8_firmware_matches_the_host() {
    let bundle = int8_bundle();
    let (ids, stdout) = matches_the_host_on(Board::An386, &bundle, "m4-int8");
    assert!(ids[16].1, "the noise window is not flagged anomalous:\n{stdout}");
    matches_the_host_on(Board::An505, &bundle, "m33-int8");
    let f32_len = std::fs::metadata(mcu_dir().join("../../models/ecg5000/model.bundle")).unwrap().len();
    let int8_len = std::fs::metadata(&bundle).unwrap().len();
    assert!(3 * int8_len <= f32_len, "int8 bundle {int8_len} bytes, f32 {f32_len}");
}
