//! The `trainer` binary end to end on small files: fit -> embed -> cluster, and clear errors for
//! bad models, bad data and bad flags.

use std::path::Path;
use std::process::{Command, Output};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer")).args(args).output().expect("run trainer")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected a clean failure, got {:?}", o.status);
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The stderr of a usage error clap reports (exit status 2).
fn usage_err(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{e}");
    e
}

/// Wide CSV, header with a label column: 30 series of two shapes, 16 steps.
fn write_csv(path: &Path, n: usize) {
    let mut s = String::from("label");
    for t in 0..16 {
        s.push_str(&format!(",t{t}"));
    }
    s.push('\n');
    for i in 0..n {
        let class = i % 2;
        s.push_str(if class == 0 { "up" } else { "down" });
        for t in 0..16 {
            let v = if class == 0 { t as f32 / 8.0 - 1.0 } else { 1.0 - t as f32 / 8.0 } + (i as f32 * 0.37).sin() * 0.05;
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

const TINY: [&str; 12] =
    ["--hidden-size", "8", "--latent-length", "2", "--epochs", "2", "--batch-size", "8", "--n-init", "3", "--quiet", "--holdout"];

#[test]
fn fit_embed_cluster_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.csv");
    write_csv(&data, 30);
    let model = dir.path().join("m");
    let mut args = vec!["fit", data.to_str().unwrap(), "--out", model.to_str().unwrap(), "--cell", "gru"];
    args.extend(TINY);
    args.push("0.2");
    let out = ok(&trainer(&args));
    assert!(out.contains("VRAE device held-out") && out.contains("raw k-means held-out"), "{out}");
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["k"], 2);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["params"]["cell"], "gru");
    assert_eq!(cfg["model"]["seq_len"], 16);

    // embed -> CSV file with one row per series, and .npy with the right header and size.
    let csv = dir.path().join("z.csv");
    ok(&trainer(&["embed", model.to_str().unwrap(), data.to_str().unwrap(), "--out", csv.to_str().unwrap()]));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 31);
    assert!(text.starts_with("index,label,z0,z1\n0,up,"), "{}", &text[..40]);
    let npy = dir.path().join("z.npy");
    ok(&trainer(&["embed", model.to_str().unwrap(), data.to_str().unwrap(), "--out", npy.to_str().unwrap()]));
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert!(String::from_utf8_lossy(&bytes[10..10 + hlen]).contains("'shape': (30, 2)"));
    assert_eq!(bytes.len(), 10 + hlen + 30 * 2 * 4);
    assert_eq!((10 + hlen) % 64, 0);
    // The npy values equal the CSV values.
    let first: Vec<f32> = text.lines().nth(1).unwrap().split(',').skip(2).map(|v| v.parse().unwrap()).collect();
    let npy0 = f32::from_le_bytes(bytes[10 + hlen..14 + hlen].try_into().unwrap());
    assert_eq!(first[0], npy0);

    // cluster -> stdout; ids within k, distances finite, second >= first.
    let out = ok(&trainer(&["cluster", model.to_str().unwrap(), data.to_str().unwrap()]));
    let rows: Vec<Vec<String>> = out.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 30);
    for r in &rows {
        let c: usize = r[2].parse().unwrap();
        let (d, d2): (f32, f32) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!(c < 2 && d.is_finite() && d2 >= d, "{r:?}");
    }
    // The saved training assignments agree with `cluster` on the same series.
    let saved = std::fs::read_to_string(model.join("assignments.csv")).unwrap();
    for line in saved.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let i: usize = f[0].parse().unwrap();
        assert_eq!(f[3], rows[i][2], "series {i}");
    }

    // Data with another feature count is refused, naming the file.
    let multi = dir.path().join("multi.csv");
    std::fs::write(&multi, "series_id,t,a,b\ns,0,1,2\ns,1,3,4\n").unwrap();
    let e = err(&trainer(&["cluster", model.to_str().unwrap(), multi.to_str().unwrap()]));
    assert!(e.contains("multi.csv") && e.contains("2 features") && e.contains("trained on 1"), "{e}");

    // A different series length is resampled to the model's length, with a note.
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "1,2,3,4,5\n").unwrap();
    let o = trainer(&["embed", model.to_str().unwrap(), short.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("resampled"));
    assert_eq!(ok(&o).lines().count(), 2);

    // export --lengths: a graph with a second input, never over the directory's encoder.onnx.
    let before = std::fs::read(model.join("encoder.onnx")).unwrap();
    let e = err(&trainer(&["export", model.to_str().unwrap(), "--lengths"]));
    assert!(e.contains("--lengths") && e.contains("--out"), "{e}");
    let ragged = dir.path().join("ragged.onnx");
    ok(&trainer(&["export", model.to_str().unwrap(), "--lengths", "--out", ragged.to_str().unwrap()]));
    let r = std::fs::read(&ragged).unwrap();
    assert!(r.windows(7).any(|w| w == b"lengths") && !before.windows(7).any(|w| w == b"lengths"));
    assert_eq!(std::fs::read(model.join("encoder.onnx")).unwrap(), before);

    // export --weights int8: a smaller, version 8 bundle; without --bundle the flag is refused
    // (the error names what it needs).
    let q8 = dir.path().join("int8.bundle");
    let (m, r, q) = (model.to_str().unwrap(), ragged.to_str().unwrap(), q8.to_str().unwrap());
    ok(&trainer(&["export", m, "--out", r, "--bundle", q, "--weights", "int8"]));
    let (qb, fb) = (std::fs::read(&q8).unwrap(), std::fs::read(model.join("model.bundle")).unwrap());
    assert_eq!((u32::from_le_bytes(qb[8..12].try_into().unwrap()), qb.len() < fb.len()), (8, true));
    let e = usage_err(&trainer(&["export", model.to_str().unwrap(), "--weights", "int8"]));
    assert!(e.contains("--bundle"), "{e}");
    let e = usage_err(&trainer(&["export", model.to_str().unwrap(), "--bundle", q8.to_str().unwrap(), "--weights", "int4"]));
    assert!(e.contains("int4") && e.contains("int8") && e.contains("f32"), "{e}");

    // Damaged model files: each gives an error naming the file.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "model.safetensors", "centroids.json"] {
        std::fs::copy(model.join(f), broken.join(f)).unwrap();
    }
    let w = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &w[..w.len() / 2]).unwrap();
    let e = err(&trainer(&["embed", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
    std::fs::copy(model.join("model.safetensors"), broken.join("model.safetensors")).unwrap();
    let c = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(broken.join("config.json"), &c[..c.len() / 2]).unwrap();
    let e = err(&trainer(&["embed", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("config.json") && e.contains("malformed JSON"), "{e}");
    std::fs::write(broken.join("config.json"), c.replace("\"hidden_size\": 8", "\"hidden_size\": 9")).unwrap();
    let e = err(&trainer(&["embed", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("model.safetensors") && e.contains("shape"), "{e}");
    std::fs::write(broken.join("config.json"), &c).unwrap();
    std::fs::write(
        broken.join("centroids.json"),
        "{\"k\": 2, \"latent_length\": 2, \"centroids\": [[1.0, 2.0]], \"sizes\": [], \"inertia\": 0}",
    )
    .unwrap();
    let e = err(&trainer(&["cluster", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("centroids.json"), "{e}");
    // A decision table that does not fit the model: a prototype naming a cluster that does not
    // exist, and prototypes cut short.
    let mut cj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("centroids.json")).unwrap()).unwrap();
    cj["decision"]["prototype_clusters"][0] = serde_json::json!(7);
    std::fs::write(broken.join("centroids.json"), cj.to_string()).unwrap();
    let e = err(&trainer(&["cluster", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("centroids.json") && e.contains("cluster outside 0..2"), "{e}");
    let mut cj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("centroids.json")).unwrap()).unwrap();
    cj["decision"]["prototypes"].as_array_mut().unwrap().pop();
    std::fs::write(broken.join("centroids.json"), cj.to_string()).unwrap();
    let e = err(&trainer(&["cluster", broken.to_str().unwrap(), data.to_str().unwrap()]));
    assert!(e.contains("centroids.json") && e.contains("prototypes must be rows"), "{e}");
}

#[test]
fn bad_invocations_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(&trainer(&["embed", dir.path().join("nope").to_str().unwrap(), "x.csv"]));
    assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
    let e = err(&trainer(&["fit", "--dropout", "1.5", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("dropout"), "{e}");
    // A flag value clap cannot parse: its usage error (exit status 2) with our message.
    let e = usage_err(&trainer(&["fit", "--clusters", "many", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("expected a number of clusters or `auto`") && e.contains("many"), "{e}");
    let e = err(&trainer(&["fit", "--latent-weight=-1", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("latent weight must be finite and >= 0"), "{e}");
    let e = err(&trainer(&["fit", "--neighbors", "0", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("neighbors and prototypes per cluster must be >= 1"), "{e}");
    let e = err(&trainer(&["fit", "--validation", "0.9", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("validation must be in (0, 0.5]"), "{e}");
    let e = err(&trainer(&["fit", "--anomaly-quantile", "1.5", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("anomaly quantile must be in (0, 1], got 1.5"), "{e}");
    let e = err(&trainer(&["fit", "--spectrum-weight=-1", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("spectrum weight must be finite and >= 0, got -1"), "{e}");
    let e = err(&trainer(&["fit", "--step-spectrum-weight=-1", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("step spectrum weight must be finite and >= 0, got -1"), "{e}");
    let e = err(&trainer(&["fit", "--difference-weight=-1", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("difference weight must be finite and >= 0, got -1"), "{e}");
    let e = usage_err(&trainer(&["fit", "--refine-rounds=-1", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("-1") && e.contains("--refine-rounds"), "{e}");
    let e = usage_err(&trainer(&["fit", "--representation", "best", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("best") && e.contains("modularity"), "{e}");
    let off = [
        "fit",
        "--latent-weight",
        "0",
        "--summary-segments",
        "0",
        "--spectrum-freqs",
        "0",
        "--step-weight",
        "0",
        "--step-spectrum-freqs",
        "0",
    ];
    let e = err(&trainer(&[&off[..], &["--out", dir.path().to_str().unwrap()]].concat()));
    assert!(e.contains("latent weight 0 with no weighted summary block"), "{e}");
    let e = err(&trainer(&["fit", "--contrastive-temperature", "0", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("contrastive_temperature must be > 0, got 0"), "{e}");
    let e = err(&trainer(&["fit", "--contrastive-crop", "1.5", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("contrastive_crop must be in (0, 1], got 1.5"), "{e}");
    let e = err(&trainer(&["fit", "--device", "cuda", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("cuda") || e.contains("CUDA"), "{e}");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "1,2,3\n4,5\n").unwrap();
    let e = err(&trainer(&["fit", bad.to_str().unwrap(), "--clusters", "2", "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("bad.csv:2") && e.contains("ragged"), "{e}");
    let unl = dir.path().join("unlabelled.csv");
    std::fs::write(&unl, "1,2,3\n4,5,6\n").unwrap();
    let e = err(&trainer(&["fit", unl.to_str().unwrap(), "--out", dir.path().to_str().unwrap()]));
    assert!(e.contains("--clusters"), "{e}");
}

/// Unlabelled series of `k` shapes (sine, square, ramp, bump), 16 each, small noise.
fn write_unlabelled(path: &std::path::Path, k: usize) {
    let mut s = String::new();
    let mut noise = 12345u32;
    for i in 0..16 * k {
        let vals: Vec<String> = (0..40)
            .map(|t| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                let e = (noise as f32 / u32::MAX as f32 - 0.5) * 0.2;
                let x = t as f32 / 40.0;
                let v = match i % k {
                    0 => (x * 12.0).sin(),
                    1 => {
                        if (x * 4.0).fract() < 0.5 {
                            1.0
                        } else {
                            -1.0
                        }
                    }
                    2 => 2.0 * x - 1.0,
                    _ => 3.0 * (-((x - 0.5) * 8.0).powi(2)).exp() - 0.5,
                };
                format!("{}", v + e)
            })
            .collect();
        s.push_str(&vals.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// `--clusters auto` (the default without labels) finds the number of shapes in unlabelled
/// data from the kNN graph's eigengap, and the metrics show the curve.
#[test]
fn auto_clusters_finds_k_in_unlabelled_data() {
    for k in [3usize, 4] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("u.csv");
        write_unlabelled(&data, k);
        let model = dir.path().join("m");
        let mut args = vec!["fit", data.to_str().unwrap(), "--out", model.to_str().unwrap(), "--no-plots"];
        args.extend(TINY);
        args.push("0");
        let out = ok(&trainer(&args));
        assert!(out.contains("(eigengap)"), "{out}");
        let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(metrics["k"], k as u64, "{k} shapes: {}", metrics["eigenvalues"]);
        assert_eq!(metrics["k_from"], "eigengap");
        assert!(metrics["eigenvalues"].as_array().unwrap().len() > k);
        let centroids: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("centroids.json")).unwrap()).unwrap();
        assert_eq!(centroids["decision"]["k"], k as u64);
    }
}
