//! The exported encoder gives the trainer's own latents under onnxruntime and tract, for LSTM
//! and GRU, one and two layers, one and three features, batches 1, 7 and 256 of real ECG5000
//! beats; a wrong gate order is caught; the file passes the official ONNX checker.

use std::path::Path;

use candle_core::{Device, Tensor};
use prost::Message;
use tests::*;
use trainer::export::{encoder_onnx_with, BatchLengths};
use trainer::params::Cell;

const TOL: f32 = 1e-4;

#[test]
fn candle_ort_and_tract_agree_on_every_configuration() {
    let mut table = vec![format!(
        "{:<5} {:>5} {:>3} {:>5} {:>11} {:>11} {:>11}",
        "cell", "depth", "F", "batch", "candle-ort", "candle-tract", "ort-tract"
    )];
    let mut worst = 0f32;
    for (ci, cell) in [Cell::Lstm, Cell::Gru].into_iter().enumerate() {
        for depth in [1, 2] {
            for f in [1, 3] {
                let dir = tempfile::tempdir().unwrap();
                let m = fixture_model(dir.path(), cell, depth, f, 24, (ci * 10 + depth * 3 + f) as u64).unwrap();
                let onnx = dir.path().join("encoder.onnx");
                let series = ecg_series(256, f, 140).unwrap();
                let mut ort = OrtEncoder::load(&onnx, 1).unwrap();
                for b in [1, 7, 256] {
                    let x = time_major(&series[..b], 140, f);
                    let c = candle_embed(&m, &series[..b]).unwrap();
                    let o = ort.run(&x, 140, b, f).unwrap();
                    let t = TractEncoder::load(&onnx, 140, b, f)
                        .unwrap()
                        .run(&x, 140, b, f)
                        .unwrap_or_else(|e| panic!("tract, {cell:?} depth {depth} F {f} batch {b}: {e:#}"));
                    let (co, ct, ot) = (max_abs_diff(&c, &o), max_abs_diff(&c, &t), max_abs_diff(&o, &t));
                    table.push(format!("{cell:<5?} {depth:>5} {f:>3} {b:>5} {co:>11.2e} {ct:>11.2e} {ot:>11.2e}"));
                    assert!(
                        co <= TOL && ct <= TOL && ot <= TOL,
                        "{cell:?} depth {depth} F {f} batch {b}: max abs diff candle-ort {co:e}, candle-tract {ct:e}, ort-tract {ot:e} (tolerance {TOL:e})"
                    );
                    worst = worst.max(co).max(ct).max(ot);
                }
            }
        }
    }
    eprintln!("{}\nworst max abs diff {worst:e}", table.join("\n"));
}

/// Latents for a sequence length other than the model's (the ONNX time axis is symbolic).
#[test]
fn other_sequence_lengths_agree() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let dir = tempfile::tempdir().unwrap();
        let m = fixture_model(dir.path(), cell, 2, 3, 16, 7).unwrap();
        let onnx = dir.path().join("encoder.onnx");
        let mut ort = OrtEncoder::load(&onnx, 1).unwrap();
        for len in [60, 200] {
            let series = ecg_series(5, 3, len).unwrap();
            let x = time_major(&series, len, 3);
            let xt = Tensor::from_vec(x.clone(), (len, 5, 3), &Device::Cpu).unwrap();
            let c: Vec<f32> = m.vrae.encode_mean(&xt, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let o = ort.run(&x, len, 5, 3).unwrap();
            let t = TractEncoder::load(&onnx, len, 5, 3).unwrap().run(&x, len, 5, 3).unwrap();
            let (co, ct) = (max_abs_diff(&c, &o), max_abs_diff(&c, &t));
            assert!(co <= TOL && ct <= TOL, "{cell:?} length {len}: candle-ort {co:e}, candle-tract {ct:e}");
        }
    }
}

/// A padded batch of series of unequal lengths through `trainer export --lengths`'s graph
/// (`sequence_lens` on every layer): onnxruntime gives each series the latent of that series
/// alone, at its own length (1 to 200 steps; LSTM and GRU, 2 layers, 3 features, and the
/// one-feature GRU whose input the exporter pads). tract 0.23.9 refuses the graph
/// ("Non constant seq_len is not supported"), which this pins: batches for tract go by length.
#[test]
fn padded_batches_of_unequal_lengths() {
    let lens = [140usize, 37, 1, 200, 90];
    let (t, b) = (200, lens.len());
    for (cell, features) in [(Cell::Lstm, 3), (Cell::Gru, 3), (Cell::Gru, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let m = fixture_model(dir.path(), cell, 2, features, 16, 11).unwrap();
        let onnx = dir.path().join("ragged.onnx");
        trainer::export::write_encoder_onnx_with(&m, &onnx, BatchLengths::Ragged).unwrap();
        let series = ecg_series(b, features, t).unwrap();
        // Series i keeps its first lens[i] steps; the padding after them is a constant the
        // engines must not read (a value far from the data, so reading it shows).
        let mut x = vec![7.5f32; t * b * features];
        let mut want = Vec::new();
        for (i, (s, &len)) in series.iter().zip(&lens).enumerate() {
            for step in 0..len {
                for k in 0..features {
                    x[(step * b + i) * features + k] = s.values[step * features + k];
                }
            }
            let alone = Tensor::from_vec(s.values[..len * features].to_vec(), (len, 1, features), &Device::Cpu).unwrap();
            want.extend(m.vrae.encode_mean(&alone, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        let lengths: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let case = format!("{cell:?} {features} feature(s)");
        let got = OrtEncoder::load(&onnx, 1).unwrap().run_with_lengths(&x, t, b, features, &lengths).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= TOL, "{case}: onnxruntime with lengths vs each series alone: {d:e}");
        // tract refuses `sequence_lens` fed at run time (it takes only a constant one).
        let e = format!("{:#}", tract_with_lengths(&onnx, &x, (t, b, features), &lengths).unwrap_err());
        assert!(e.contains("Non constant seq_len is not supported"), "{case}: tract: {e}");
        // Negative control: the one-input graph on the same padded batch reads the padding.
        let padded = OrtEncoder::load(&dir.path().join("encoder.onnx"), 1).unwrap().run(&x, t, b, features).unwrap();
        assert!(max_abs_diff(&padded, &want) > 100.0 * TOL, "{case}: the padding changed nothing");
    }
}

/// The `lengths` graph under tract, both inputs fixed to these shapes: latents, or the error.
fn tract_with_lengths(path: &Path, x: &[f32], (t, b, f): (usize, usize, usize), lengths: &[i32]) -> anyhow::Result<Vec<f32>> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact([t, b, f]).into())?
        .with_input_fact(1, i32::fact([b]).into())?
        .into_optimized()?
        .into_runnable()?;
    let xt: Tensor = tract_ndarray::Array3::from_shape_vec((t, b, f), x.to_vec())?.into();
    let lt: Tensor = tract_ndarray::Array1::from_vec(lengths.to_vec()).into();
    let out = plan.run(tvec!(xt.into(), lt.into()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// The parity check can fail: exporting with PyTorch's gate order left in place gives latents
/// far from the trainer's.
#[test]
fn a_swapped_gate_order_is_caught() {
    for (cell, wrong) in [(Cell::Lstm, &[0usize, 1, 2, 3][..]), (Cell::Gru, &[0, 1, 2][..])] {
        let dir = tempfile::tempdir().unwrap();
        let m = fixture_model(dir.path(), cell, 1, 1, 16, 3).unwrap();
        let bad = dir.path().join("bad.onnx");
        std::fs::write(&bad, encoder_onnx_with(&m, wrong, BatchLengths::Equal).unwrap().encode_to_vec()).unwrap();
        let series = ecg_series(7, 1, 140).unwrap();
        let x = time_major(&series, 140, 1);
        let c = candle_embed(&m, &series).unwrap();
        let o = OrtEncoder::load(&bad, 1).unwrap().run(&x, 140, 7, 1).unwrap();
        let d = max_abs_diff(&c, &o);
        assert!(d > 1e-2, "{cell:?}: a wrong gate order went unnoticed (max abs diff {d:e})");
    }
}

/// What a user sees in Netron: opset, symbolic dims, one RNN node per layer, metadata. Decoded
/// with tract's own generated ONNX messages, which also proves our prost messages are compatible.
#[test]
fn graph_structure_and_metadata_read_back_with_tract_messages() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture_model(dir.path(), Cell::Gru, 2, 3, 16, 1).unwrap();
    let bytes = std::fs::read(dir.path().join("encoder.onnx")).unwrap();
    let model = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.opset_import[0].version, 17);
    let g = model.graph.as_ref().unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "GRU").count(), 2, "{ops:?}");
    assert!(ops.contains(&"Gemm") && ops.contains(&"ConstantOfShape"));
    let gru = g.node.iter().find(|n| n.op_type == "GRU").unwrap();
    let lbr = gru.attribute.iter().find(|a| a.name == "linear_before_reset").unwrap();
    assert_eq!(lbr.i, 1);
    let dims = |v: &tract_onnx::pb::ValueInfoProto| -> Vec<String> {
        let t = v.r#type.as_ref().unwrap().value.as_ref().unwrap();
        let tract_onnx::pb::type_proto::Value::TensorType(t) = t;
        t.shape.as_ref().unwrap().dim.iter().map(|d| format!("{:?}", d.value.as_ref().unwrap())).collect()
    };
    let input = dims(&g.input[0]);
    assert!(input[0].contains("seq_len") && input[1].contains("batch") && input[2].contains('3'), "{input:?}");
    let meta: std::collections::HashMap<_, _> = model.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(meta["cell"], "gru");
    assert_eq!(meta["latent_length"], m.config.model.latent_length.to_string());
    assert!(meta["hyper_parameters"].contains("\"hidden_layer_depth\":2"), "{}", meta["hyper_parameters"]);
    // Weights: R of layer 0 is W_hh with blocks reordered r,z,n -> z,r,h.
    let r0 = g.initializer.iter().find(|t| t.name == "R0").unwrap();
    let onnx_r: Vec<f32> = r0.raw_data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let torch: Vec<f32> = m.weights.tensors()["encoder.weight_hh_l0"].flatten_all().unwrap().to_vec1().unwrap();
    let block = 16 * 16;
    assert_eq!(&onnx_r[..block], &torch[block..2 * block], "ONNX z block must be PyTorch's second block");
    assert_eq!(&onnx_r[block..2 * block], &torch[..block], "ONNX r block must be PyTorch's first block");
}

/// The official checker (`onnx.checker.check_model(full_check=True)`, Python package `onnx`,
/// found through `ONNX_PYTHONPATH`).
#[test]
fn exported_files_pass_the_onnx_checker() {
    let pythonpath = std::env::var("ONNX_PYTHONPATH")
        .expect("ONNX_PYTHONPATH is not set: point it at a directory holding the PyPI `onnx` package (scripts/test.sh sets it)");
    for (cell, depth, f) in [(Cell::Lstm, 1, 1), (Cell::Lstm, 2, 3), (Cell::Gru, 1, 1), (Cell::Gru, 2, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let m = fixture_model(dir.path(), cell, depth, f, 8, 0).unwrap();
        check_with_python(&dir.path().join("encoder.onnx"), &pythonpath);
        let ragged = dir.path().join("ragged.onnx");
        trainer::export::write_encoder_onnx_with(&m, &ragged, BatchLengths::Ragged).unwrap();
        check_with_python(&ragged, &pythonpath);
    }
}

fn check_with_python(path: &Path, pythonpath: &str) {
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", pythonpath)
        .args(["-c", "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')"])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "ONNX checker rejected {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

/// PyTorch's committed latents of the first 200 ECG5000 TEST beats for fixture `name`, and the
/// beats time-major (`trainer/tests/fixtures/torch`, written by `bench/export_torch_encoder.py`).
fn torch_fixture(name: &str) -> (Vec<f32>, Vec<f32>) {
    let ds = trainer::data::bundled::ecg5000().unwrap();
    let want: Vec<f32> = std::fs::read_to_string(torch_dir().join(format!("{name}_latents.csv")))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .flat_map(|l| l.split(',').map(|v| v.trim().parse::<f32>().unwrap()).collect::<Vec<_>>())
        .collect();
    (want, time_major(&ds.series[500..700], 140, 1))
}

fn torch_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/tests/fixtures/torch")
}

/// The PyTorch-exported encoders `trainer import` reads: onnxruntime and tract on the files as
/// PyTorch wrote them give PyTorch's latents, so the import's reference is sound. tract 0.23.9
/// cannot run the two-layer one-feature GRU as exported ("xw not contiguous": its fused GRU
/// assumes a row-major `x Wᵀ`, see `trainer::export::onnx`); that one case must fail that way,
/// and `trainer export` of the imported model runs (next test).
#[test]
fn pytorch_exported_encoders_give_pytorchs_latents_under_ort_and_tract() {
    for name in ["lstm90", "gru90", "gru32x2"] {
        let (want, x) = torch_fixture(name);
        let onnx = torch_dir().join(format!("{name}.onnx"));
        let o = OrtEncoder::load(&onnx, 1).unwrap().run(&x, 140, 200, 1).unwrap();
        let dor = max_abs_diff(&o, &want);
        assert!(dor <= TOL, "{name}: ort {dor:e} from PyTorch's latents (tolerance {TOL:e})");
        match TractEncoder::load(&onnx, 140, 200, 1).and_then(|t| t.run(&x, 140, 200, 1)) {
            Ok(t) => {
                let dtr = max_abs_diff(&t, &want);
                eprintln!("{name}: ort vs PyTorch {dor:e}, tract vs PyTorch {dtr:e}");
                assert!(dtr <= TOL, "{name}: tract {dtr:e} from PyTorch's latents (tolerance {TOL:e})");
            }
            Err(e) => {
                eprintln!("{name}: ort vs PyTorch {dor:e}, tract: {e:#}");
                assert!(name == "gru32x2" && format!("{e:#}").contains("xw not contiguous"), "{name}: tract failed: {e:#}");
            }
        }
    }
}

/// An imported encoder re-exported by `trainer export` (our graph: the one-feature GRU padded for
/// tract) gives PyTorch's latents under both engines, and the runtime's own from the bundle.
#[cfg(feature = "onnx-import")]
#[test]
fn imported_then_reexported_encoders_run_under_ort_tract_and_the_runtime() {
    for name in ["lstm90", "gru90", "gru32x2"] {
        let (want, x) = torch_fixture(name);
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("c.json");
        let rows: Vec<&[f32]> = want.chunks(20).step_by(40).collect();
        std::fs::write(&table, serde_json::to_string(&rows).unwrap()).unwrap();
        let out = dir.path().join("m");
        trainer::import::import(trainer::import::ImportOptions {
            onnx: torch_dir().join(format!("{name}.onnx")),
            out: out.clone(),
            centroids: trainer::import::CentroidSource::File(table),
            seq_len: Some(140),
            normalization: trainer::data::prep::Normalization::None,
        })
        .unwrap();
        let m = trainer::artifacts::load_model(&out, &Device::Cpu).unwrap();
        let onnx = dir.path().join("ours.onnx");
        trainer::export::write_encoder_onnx(&m, &onnx).unwrap();
        let o = OrtEncoder::load(&onnx, 1).unwrap().run(&x, 140, 200, 1).unwrap();
        let t = TractEncoder::load(&onnx, 140, 200, 1).unwrap().run(&x, 140, 200, 1).unwrap();
        let ds = trainer::data::bundled::ecg5000().unwrap();
        let r = native_embed(&m, &ds.series[500..700]).unwrap();
        let (dor, dtr, drt) = (max_abs_diff(&o, &want), max_abs_diff(&t, &want), max_abs_diff(&r, &want));
        eprintln!("{name} re-exported: ort {dor:e}, tract {dtr:e}, runtime {drt:e} from PyTorch");
        assert!(dor <= TOL && dtr <= TOL && drt <= TOL, "{name}: ort {dor:e}, tract {dtr:e}, runtime {drt:e}");
    }
}
