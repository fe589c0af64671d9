//! `edge assign` on the shipped sample fleet with the shipped ECG5000 model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runtime::bundle::AlignedBytes;
use runtime::encoder::State;
use runtime::Encoder;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge")).args(args).output().expect("run edge")
}

fn run_assign(extra: &[&str]) -> (Vec<Vec<String>>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    let (model, input) = (root().join("models/ecg5000"), root().join("data/fleet/sample.csv"));
    let mut args = vec!["assign", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    args.extend(extra);
    let o = edge(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "edge failed: {stderr}");
    let rows = std::fs::read_to_string(&out).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    (rows, stderr)
}

/// Per device, its readings in time order, read independently of `edge`.
fn readings() -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut m: std::collections::BTreeMap<String, Vec<(i64, f32)>> = Default::default();
    for line in std::fs::read_to_string(root().join("data/fleet/sample.csv")).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 3 {
            continue;
        }
        if let (Ok(t), Ok(v)) = (f[1].parse::<i64>(), f[2].parse::<f32>()) {
            if v.is_finite() {
                m.entry(f[0].to_string()).or_default().push((t, v));
            }
        }
    }
    m.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|p| p.0);
            (k, v.into_iter().map(|p| p.1).collect())
        })
        .collect()
}

#[test]
fn assigns_every_window_like_the_runtime_library() {
    let (rows, summary) = run_assign(&[]);
    assert_eq!(rows.len(), 24 * 3, "24 devices x 3 windows of 140");
    assert!(summary.contains("3 malformed"), "{summary}");
    assert!(summary.contains("25 (1 with fewer samples than a window of 140)"), "{summary}");
    let bytes = std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap();
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).unwrap();
    let data = readings();
    for r in &rows {
        let series = &data[&r[0]];
        let n = rows.iter().filter(|x| x[0] == r[0]).position(|x| x == r).unwrap();
        let window = &series[n * 140..(n + 1) * 140];
        let mut s = State::<128, 2>::default();
        let (_, want) = enc.classify_window::<128, 2, 64>(&mut s, window).unwrap();
        assert_eq!(r[3].parse::<usize>().unwrap(), want.cluster, "{r:?}");
        assert!((r[4].parse::<f32>().unwrap() - want.distance).abs() < 1e-6);
    }
}

#[test]
fn tract_engine_gives_the_same_clusters() {
    let (native, _) = run_assign(&[]);
    let (tract, _) = run_assign(&["--engine", "tract"]);
    assert_eq!(native.len(), tract.len());
    for (a, b) in native.iter().zip(&tract) {
        assert_eq!(a[..4], b[..4], "native {a:?} vs tract {b:?}");
        assert!((a[4].parse::<f32>().unwrap() - b[4].parse::<f32>().unwrap()).abs() < 1e-3);
    }
}

#[test]
fn overlapping_windows_and_strict_mode() {
    let (rows, _) = run_assign(&["--stride", "70"]);
    assert_eq!(rows.len(), 24 * 5, "(420 - 140) / 70 + 1 = 5 windows per device");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    let (model, input) = (root().join("models/ecg5000"), root().join("data/fleet/sample.csv"));
    let o = edge(&["assign", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("sample.csv:") && e.contains("not finite"), "{e}");
    assert!(!out.exists(), "a failed run must not leave a partial output");
    let o = edge(&["assign", "--model", dir.path().to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("model.bundle"), "{e}");
    std::fs::write(dir.path().join("model.bundle"), b"VRAEBNDL garbage").unwrap();
    let o = edge(&["assign", "--model", dir.path().to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("invalid model bundle"), "{e}");
}
