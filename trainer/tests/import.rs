//! `trainer import` of PyTorch-exported encoders (fixtures written by
//! `bench/export_torch_encoder.py`: the seed's VRAE trained briefly on ECG5000, LSTM and GRU,
//! one and two layers, with PyTorch's latents of the first 200 ECG5000 TEST beats).
#![cfg(feature = "onnx-import")]

use std::path::{Path, PathBuf};

use candle_onnx::onnx::{self, ModelProto};
use prost::Message;
use trainer::artifacts::load_model;
use trainer::data::{bundled, Series};
use trainer::import::{import, CentroidSource, ImportOptions};

#[allow(dead_code)]
mod common;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(name)
}

/// PyTorch's latents, one row per beat.
fn torch_latents(name: &str) -> Vec<Vec<f32>> {
    std::fs::read_to_string(fixture(&format!("{name}_latents.csv")))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect()
}

/// The first `n` ECG5000 TEST beats (the bundled set is TRAIN's 500 rows, then TEST).
fn test_beats(n: usize) -> Vec<Series> {
    bundled::ecg5000().unwrap().series[500..500 + n].to_vec()
}

/// Five PyTorch latent rows as a centroid table (nearest centroid on the latent).
fn centroid_table(dir: &Path, name: &str) -> PathBuf {
    let z = torch_latents(name);
    let rows: Vec<&Vec<f32>> = [0, 40, 80, 120, 160].iter().map(|&i| &z[i]).collect();
    let p = dir.join("centroids.json");
    std::fs::write(&p, serde_json::to_string(&rows).unwrap()).unwrap();
    p
}

fn import_with_table(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(name);
    import(ImportOptions {
        onnx: fixture(&format!("{name}.onnx")),
        out: out.clone(),
        centroids: CentroidSource::File(centroid_table(dir, name)),
        seq_len: Some(140),
        normalization: trainer::data::prep::Normalization::None,
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    out
}

fn nearest(z: &[f32], table: &[Vec<f32>]) -> usize {
    let d = |c: &Vec<f32>| c.iter().zip(z).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
    (0..table.len()).min_by(|&a, &b| d(&table[a]).total_cmp(&d(&table[b]))).unwrap()
}

#[test]
fn imported_lstm_and_gru_give_pytorchs_latents_and_clusters() {
    let beats = test_beats(200);
    for name in ["lstm90", "gru90", "gru32x2"] {
        let dir = tempfile::tempdir().unwrap();
        let out = import_with_table(name, dir.path());
        let m = load_model(&out, &candle_core::Device::Cpu).unwrap();
        assert!(m.config.imported.is_some() && !m.vrae.has_decoder());
        let native = m.native().unwrap();
        let z = native.embed(&beats).unwrap();
        let want = torch_latents(name);
        let l = m.config.model.latent_length;
        assert_eq!(want.len(), 200);
        let worst = z.chunks(l).zip(&want).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs())).fold(0f32, f32::max);
        eprintln!("{name}: runtime vs PyTorch max abs diff {worst:e}");
        assert!(worst <= TOL, "{name}: runtime latents differ from PyTorch's by {worst:e} (tolerance {TOL:e})");
        // The device's cluster is the nearest centroid of PyTorch's own latent.
        let table = &m.centroids.as_ref().unwrap().centroids;
        let ids: Vec<usize> = native.assign(&beats, &z).unwrap().iter().map(|a| a.cluster).collect();
        let torch_ids: Vec<usize> = want.iter().map(|z| nearest(z, table)).collect();
        assert_eq!(ids, torch_ids, "{name}: cluster IDs differ");
        assert!(torch_ids.iter().collect::<std::collections::HashSet<_>>().len() > 1, "{name}: a one-cluster check proves nothing");
        // The directory holds the ONNX file as given and a bundle the runtime loads.
        assert_eq!(std::fs::read(out.join("encoder.onnx")).unwrap(), std::fs::read(fixture(&format!("{name}.onnx"))).unwrap());
        let bundle = runtime::bundle::AlignedBytes::new(&std::fs::read(out.join("model.bundle")).unwrap());
        assert_eq!(runtime::Encoder::from_bytes(bundle.as_bytes()).unwrap().bundle().header.k, 5);
    }
}

/// The bundle the Cortex-M firmware test flashes (`firmware-sim/tests/qemu.rs`) is what
/// `trainer import` makes of `gru90.onnx` with `gru90_centroids.json`, today.
#[test]
fn the_firmwares_imported_bundle_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    import(ImportOptions {
        onnx: fixture("gru90.onnx"),
        out: out.clone(),
        centroids: CentroidSource::File(fixture("gru90_centroids.json")),
        seq_len: Some(140),
        normalization: trainer::data::prep::Normalization::None,
    })
    .unwrap();
    let fresh = std::fs::read(out.join("model.bundle")).unwrap();
    let committed = std::fs::read(fixture("gru90.bundle")).unwrap();
    assert!(
        fresh == committed,
        "trainer/tests/fixtures/torch/gru90.bundle is stale: regenerate with `trainer import trainer/tests/fixtures/torch/gru90.onnx \
         --centroids trainer/tests/fixtures/torch/gru90_centroids.json --seq-len 140 --out DIR` and copy DIR/model.bundle"
    );
}

#[test]
fn fitted_centroids_use_fits_decision_and_score_against_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut ds = bundled::ecg5000().unwrap();
    ds.series.truncate(500);
    ds.labels.as_mut().unwrap().truncate(500);
    let out = dir.path().join("m");
    let s = import(ImportOptions {
        onnx: fixture("gru90.onnx"),
        out: out.clone(),
        centroids: CentroidSource::Fit { data: ds, k: Some(5), decision: Box::default(), n_init: 4, seed: 0 },
        seq_len: None,
        normalization: trainer::data::prep::Normalization::None,
    })
    .unwrap();
    assert_eq!((s.k, s.config.seq_len, s.sizes.iter().sum::<usize>()), (5, 140, 500));
    let sc = s.scores.expect("labelled data is scored");
    eprintln!("gru90 (2 PyTorch epochs) + fit's decision on 500 ECG5000 TRAIN beats: ARI {:.3} NMI {:.3}", sc.ari, sc.nmi);
    assert!(sc.nmi > 0.3, "NMI {}", sc.nmi);
    let m = load_model(&out, &candle_core::Device::Cpu).unwrap();
    let d = m.centroids.as_ref().unwrap().decision.as_ref().expect("a fitted decision");
    assert!(d.segments > 0 && d.anomaly_thresholds.len() == 5, "the decision carries the window summary and thresholds");
}

/// Writes `model` after `edit` to a temp file and imports it; returns the error text.
fn import_error(edit: impl FnOnce(&mut ModelProto), base: &str) -> String {
    let mut m = ModelProto::decode(std::fs::read(fixture(&format!("{base}.onnx"))).unwrap().as_slice()).unwrap();
    edit(&mut m);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edited.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    try_import(&p, dir.path())
}

fn try_import(onnx: &Path, dir: &Path) -> String {
    let r = import(ImportOptions {
        onnx: onnx.to_path_buf(),
        out: dir.join("out"),
        centroids: CentroidSource::File(centroid_table(dir, "gru90")),
        seq_len: Some(140),
        normalization: trainer::data::prep::Normalization::None,
    });
    match r {
        Ok(_) => "imported".into(),
        Err(e) => {
            assert!(!dir.join("out").exists(), "a failed import leaves no directory");
            e.to_string()
        }
    }
}

fn node<'a>(m: &'a mut ModelProto, op: &str) -> &'a mut onnx::NodeProto {
    m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == op).unwrap()
}

fn expect(err: String, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} lacks {p:?}");
    }
}

#[test]
fn unsupported_or_malformed_graphs_are_named_errors() {
    // Control: the unedited fixture imports.
    assert_eq!(import_error(|_| {}, "lstm90"), "imported");
    // No head: the output is the RNN's state.
    let e = import_error(
        |m| {
            let g = m.graph.as_mut().unwrap();
            g.node.retain(|n| n.op_type != "Gemm");
            g.output[0].name = "/Gather_output_0".into();
        },
        "lstm90",
    );
    expect(e, &["edited.onnx", "missing head", "hidden_to_mean"]);
    // A 3-D head weight.
    let e = import_error(
        |m| {
            let w = m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "head.weight").unwrap();
            w.dims = vec![1, 20, 90];
        },
        "lstm90",
    );
    expect(e, &["node '/head/Gemm' (Gemm)", "head's weight has shape [1, 20, 90]", "2-D"]);
    // Bidirectional.
    let e = import_error(
        |m| {
            node(m, "LSTM").attribute.push(onnx::AttributeProto {
                name: "direction".into(),
                r#type: onnx::attribute_proto::AttributeType::String as i32,
                s: b"bidirectional".to_vec(),
                ..Default::default()
            })
        },
        "lstm90",
    );
    expect(e, &["(LSTM)", "direction is bidirectional", "forward"]);
    // A GRU whose reset gate is applied before the recurrent product (not PyTorch's GRU).
    let e = import_error(|m| node(m, "GRU").attribute.retain(|a| a.name != "linear_before_reset"), "gru90");
    expect(e, &["(GRU)", "linear_before_reset = 0"]);
    // The head on the bottom layer of two.
    let e = import_error(
        |m| {
            let c = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.output.iter().any(|o| o == "/Constant_output_0")).unwrap();
            let t = c.attribute[0].t.as_mut().unwrap();
            t.raw_data = 0i64.to_le_bytes().to_vec();
        },
        "gru32x2",
    );
    expect(e, &["head reads layer 0's state", "top of the 2 layers is layer 1"]);
    // An op the pattern does not know, on the data path.
    let e = import_error(
        |m| {
            let g = m.graph.as_mut().unwrap();
            let at = g.node.iter().position(|n| n.op_type == "Gemm").unwrap();
            g.node[at].input[0] = "relu".into();
            g.node.insert(
                at,
                onnx::NodeProto {
                    name: "act".into(),
                    op_type: "Relu".into(),
                    input: vec!["/Gather_output_0".into()],
                    output: vec!["relu".into()],
                    ..Default::default()
                },
            );
        },
        "lstm90",
    );
    expect(e, &["node 'act' (Relu)", "not part of the VRAE encoder pattern"]);
    // A batch-first export: a Transpose before the RNN.
    let e = import_error(
        |m| {
            let g = m.graph.as_mut().unwrap();
            node_mut(g, "LSTM").input[0] = "xt".into();
            g.node.insert(
                0,
                onnx::NodeProto {
                    name: "tr".into(),
                    op_type: "Transpose".into(),
                    input: vec!["x".into()],
                    output: vec!["xt".into()],
                    ..Default::default()
                },
            );
        },
        "lstm90",
    );
    expect(e, &["node 'tr' (Transpose)", "batch_first"]);
    // A truncated file.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("lstm90.onnx")).unwrap();
    let p = dir.path().join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect(try_import(&p, dir.path()), &["truncated.onnx", "not a readable ONNX model"]);
    // Not there at all.
    expect(try_import(&dir.path().join("missing.onnx"), dir.path()), &["missing.onnx"]);
}

fn node_mut<'a>(g: &'a mut onnx::GraphProto, op: &str) -> &'a mut onnx::NodeProto {
    g.node.iter_mut().find(|n| n.op_type == op).unwrap()
}

#[test]
fn a_symbolic_length_needs_seq_len_and_bad_centroids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |centroids: PathBuf, seq_len| ImportOptions {
        onnx: fixture("gru90.onnx"),
        out: dir.path().join("out"),
        centroids: CentroidSource::File(centroids),
        seq_len,
        normalization: trainer::data::prep::Normalization::None,
    };
    let table = centroid_table(dir.path(), "gru90");
    let e = import(opts(table, None)).unwrap_err().to_string();
    expect(e, &["sequence length is symbolic", "--seq-len"]);
    let short = dir.path().join("short.json");
    std::fs::write(&short, "[[1.0, 2.0]]").unwrap();
    expect(import(opts(short.clone(), Some(140))).unwrap_err().to_string(), &["short.json", "centroid 0 has 2 values", "latent has 20"]);
    std::fs::write(&short, "{\"k\": 1}").unwrap();
    expect(import(opts(short, Some(140))).unwrap_err().to_string(), &["short.json", "expected a JSON array"]);
    // .npy tables (float64 here) are read too.
    let z = torch_latents("gru90");
    let npy = dir.path().join("c.npy");
    let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 20), }".to_string();
    header.push_str(&" ".repeat(64 - (10 + header.len() + 1) % 64));
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    for row in &z[..3] {
        b.extend(row.iter().flat_map(|v| (*v as f64).to_le_bytes()));
    }
    std::fs::write(&npy, &b).unwrap();
    // Malformed tables name the file and what is wrong: cut short, not .npy at all.
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, &b[..b.len() - 8]).unwrap();
    expect(import(opts(bad.clone(), Some(140))).unwrap_err().to_string(), &["bad.npy", "data bytes for shape (3, 20)"]);
    std::fs::write(&bad, b"not numpy").unwrap();
    expect(import(opts(bad, Some(140))).unwrap_err().to_string(), &["bad.npy", "not a .npy file"]);
    import(opts(npy, Some(140))).unwrap();
    let m = load_model(&dir.path().join("out"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(m.centroids.unwrap().centroids[2], z[2]);
}

#[test]
fn the_cli_imports_and_then_embeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let o = common::trainer()
        .args(["import"])
        .arg(fixture("lstm90.onnx"))
        .arg("--centroids")
        .arg(centroid_table(dir.path(), "lstm90"))
        .args(["--seq-len", "140", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    common::ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Lstm") && stdout.contains("latent 20") && stdout.contains("pytorch"), "{stdout}");
    // `trainer cluster` on the imported directory works like on a fitted one.
    let data = dir.path().join("beats.tsv");
    let rows: Vec<String> =
        test_beats(5).iter().map(|s| format!("1\t{}", s.values.iter().map(f32::to_string).collect::<Vec<_>>().join("\t"))).collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let o = common::trainer().arg("cluster").arg(&out).arg(&data).output().unwrap();
    common::ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 6);
    // Both sources of centroids at once is a usage error.
    let o = common::trainer()
        .args(["import"])
        .arg(fixture("lstm90.onnx"))
        .args(["--centroids", "a.json", "--fit-centroids", "b.tsv", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

/// The opset 11/12 form of the same graph (Squeeze and Unsqueeze axes as attributes, not inputs)
/// is the same encoder.
#[test]
fn the_opset_11_form_imports_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModelProto::decode(std::fs::read(fixture("gru32x2.onnx")).unwrap().as_slice()).unwrap();
    m.opset_import[0].version = 11;
    let g = m.graph.as_mut().unwrap();
    let consts: std::collections::HashMap<String, Vec<i64>> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .filter_map(|n| {
            let t = n.attribute[0].t.as_ref()?;
            (t.data_type == 7)
                .then(|| (n.output[0].clone(), t.raw_data.chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()))
        })
        .collect();
    let mut moved = 0;
    for n in g.node.iter_mut().filter(|n| n.op_type == "Squeeze" || n.op_type == "Unsqueeze") {
        let axes = consts[&n.input[1]].clone();
        n.input.truncate(1);
        n.attribute.push(onnx::AttributeProto {
            name: "axes".into(),
            r#type: onnx::attribute_proto::AttributeType::Ints as i32,
            ints: axes,
            ..Default::default()
        });
        moved += 1;
    }
    assert!(moved >= 2, "the fixture has Squeeze and Unsqueeze nodes");
    let p = dir.path().join("opset11.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    let (_, old) = trainer::import::read_encoder(&p).unwrap();
    let (_, new) = trainer::import::read_encoder(&fixture("gru32x2.onnx")).unwrap();
    assert_eq!((old.opset, new.opset), (11, 17));
    assert_eq!(old.layers, new.layers);
    assert_eq!((old.head_weight, old.head_bias), (new.head_weight, new.head_bias));
}
