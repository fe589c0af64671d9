//! The encoder and its latent-mean head as a standard ONNX graph (opset 17).
//!
//! ```text
//! x [seq_len, batch, F] ─ LSTM/GRU (layer 0) ─ Squeeze(Y, 1) ─ ... ─ LSTM/GRU (last) ─ Y_h
//! Y_h [1, batch, H] ─ Squeeze(0) ─ Gemm(·, W_mean, b_mean, transB=1) ─ z_mean [batch, L]
//! zeros [1, batch, H] = ConstantOfShape(Concat([1], Shape(x)[1], [H]))  (initial_h, initial_c)
//! ```
//!
//! Layout 0 (`[seq, batch, feature]`) because onnxruntime's CPU RNN kernels reject layout 1; batch
//! and sequence length are symbolic. The zero initial states are built from the input's shape
//! because tract cannot optimise an RNN without `initial_h` when the batch is symbolic.
//!
//! Gate order differs between PyTorch/candle and ONNX, so weight row blocks are permuted:
//! * LSTM: PyTorch `i, f, g, o` -> ONNX `i, o, f, c`: blocks `[0, 3, 1, 2]`.
//! * GRU: PyTorch `r, z, n` -> ONNX `z, r, h`: blocks `[1, 0, 2]`, with `linear_before_reset = 1`
//!   (PyTorch applies the reset gate to `h W_hn^T + b_hn`).
//!
//! ONNX `B` is `[Wb; Rb]` = `[b_ih permuted; b_hh permuted]`. The log-variance head and the
//! decoder are not exported; centroids travel beside the file.
//!
//! A GRU over a single input feature gets a zero second feature (`Pad`) and a zero column in `W`:
//! tract 0.23.9's fused GRU assumes the product `x Wᵀ` is row-major, which ndarray does not give
//! for a one-column `x`, and the model would fail to run there. The result is unchanged.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use super::onnx_pb::*;
use crate::artifacts::LoadedModel;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::params::Cell;

/// The opset the graph declares.
pub const ONNX_OPSET: i64 = 17;
/// ONNX IR version written (IR 8 goes with opset 17).
const IR_VERSION: i64 = 8;

/// Permutation of gate blocks from PyTorch order to ONNX order.
pub fn onnx_gate_blocks(cell: Cell) -> &'static [usize] {
    match cell {
        Cell::Lstm => &[0, 3, 1, 2],
        Cell::Gru => &[1, 0, 2],
    }
}

/// Reorders the row blocks of a `[G*H, cols]` matrix (or a `[G*H]` vector with `cols = 1`).
pub fn permute_blocks(data: &[f32], blocks: &[usize], h: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for &b in blocks {
        out.extend_from_slice(&data[b * h * cols..(b + 1) * h * cols]);
    }
    out
}

/// The inverse of [`permute_blocks`]: ONNX order back to PyTorch order (`trainer import`).
pub fn unpermute_blocks(data: &[f32], blocks: &[usize], h: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for (j, &b) in blocks.iter().enumerate() {
        out[b * h * cols..(b + 1) * h * cols].copy_from_slice(&data[j * h * cols..(j + 1) * h * cols]);
    }
    out
}

fn float_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type::FLOAT),
        name: Some(name.into()),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        doc_string: None,
    }
}

fn int64_tensor(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![data.len() as i64],
        data_type: Some(data_type::INT64),
        name: Some(name.into()),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        doc_string: None,
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(v), r#type: Some(attribute_type::INT), ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.into()),
        op_type: Some(op.into()),
        attribute: attrs,
        doc_string: None,
    }
}

/// A tensor dimension in a graph signature.
enum Dim {
    Fixed(usize),
    Symbol(&'static str),
}

fn value_info(name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    value_info_of(data_type::FLOAT, name, dims, doc)
}

fn value_info_of(elem_type: i32, name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(v) => Dimension { dim_value: Some(*v as i64), dim_param: None },
                            Dim::Symbol(p) => Dimension { dim_value: None, dim_param: Some(p.to_string()) },
                        })
                        .collect(),
                }),
            }),
        }),
        doc_string: Some(doc.into()),
    }
}

/// Builds the ONNX model of `m`'s encoder and latent-mean head.
pub fn encoder_onnx(m: &LoadedModel) -> Result<ModelProto> {
    encoder_onnx_with(m, onnx_gate_blocks(m.config.model.cell), BatchLengths::Equal)
}

/// How the series of one batch line up in the exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLengths {
    /// Every series has the batch's length: the one input `x`.
    Equal,
    /// A second input, `lengths` `[batch]` int32, is every recurrent node's `sequence_lens`:
    /// series of unequal lengths go in one batch, each padded after its end, and each latent
    /// is taken at its own series' last step (`Y_h`). onnxruntime follows it; tract 0.23.9
    /// refuses a `sequence_lens` fed at run time ("Non constant seq_len is not supported"), so
    /// there batch series of one length together with the one-input graph.
    Ragged,
}

/// [`encoder_onnx`] with an explicit gate-block permutation (only tests pass anything but
/// [`onnx_gate_blocks`], to prove a wrong order is caught by the parity checks) and batch layout.
pub fn encoder_onnx_with(m: &LoadedModel, blocks: &[usize], lengths: BatchLengths) -> Result<ModelProto> {
    let cfg = &m.config.model;
    let (h, f, depth, l) = (cfg.hidden_size, cfg.n_features, cfg.hidden_layer_depth, cfg.latent_length);
    let g = cfg.cell.gates();
    let tensors = m.weights.tensors();
    let get = |name: &str| -> Result<Vec<f32>> {
        let t = tensors.get(name).ok_or_else(|| Error::model(&m.dir, format!("weights lack '{name}'")))?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    };
    if blocks.len() != g {
        return Err(Error::Param(format!("{} gate blocks given for a {g}-gate cell", blocks.len())));
    }
    let mut init = vec![
        int64_tensor("one", &[1]),
        int64_tensor("batch_index", &[1]),
        int64_tensor("hidden_dim", &[h as i64]),
        int64_tensor("axis0", &[0]),
    ];
    if depth > 1 {
        init.push(int64_tensor("axis1", &[1]));
    }
    let zero = AttributeProto {
        name: Some("value".into()),
        t: Some(float_tensor("zero", &[1], &[0.0])),
        r#type: Some(attribute_type::TENSOR),
        ..Default::default()
    };
    let mut nodes = vec![
        node("Shape", "input_shape", &["x"], &["x_shape"], vec![]),
        node("Gather", "batch_size", &["x_shape", "batch_index"], &["batch"], vec![attr_int("axis", 0)]),
        node("Concat", "state_shape", &["one", "batch", "hidden_dim"], &["state_shape"], vec![attr_int("axis", 0)]),
        node("ConstantOfShape", "zero_state", &["state_shape"], &["zeros"], vec![zero]),
    ];
    let (op, extra) = match cfg.cell {
        Cell::Lstm => ("LSTM", vec![]),
        Cell::Gru => ("GRU", vec![attr_int("linear_before_reset", 1)]),
    };
    let mut input = "x".to_string();
    let pad_input = cfg.cell == Cell::Gru && f == 1;
    if pad_input {
        init.push(int64_tensor("pad_feature", &[0, 0, 0, 0, 0, 1]));
        nodes.push(node("Pad", "pad_x", &["x", "pad_feature"], &["x_padded"], vec![]));
        input = "x_padded".into();
    }
    for layer in 0..depth {
        let inp = if layer == 0 { f } else { h };
        let p = |s: &str| format!("encoder.{s}_l{layer}");
        let mut w = permute_blocks(&get(&p("weight_ih"))?, blocks, h, inp);
        let inp = if layer == 0 && pad_input {
            w = w.iter().flat_map(|&v| [v, 0.0]).collect();
            2
        } else {
            inp
        };
        let r = permute_blocks(&get(&p("weight_hh"))?, blocks, h, h);
        let mut b = permute_blocks(&get(&p("bias_ih"))?, blocks, h, 1);
        b.extend(permute_blocks(&get(&p("bias_hh"))?, blocks, h, 1));
        let (wn, rn, bn) = (format!("W{layer}"), format!("R{layer}"), format!("B{layer}"));
        init.push(float_tensor(&wn, &[1, g * h, inp], &w));
        init.push(float_tensor(&rn, &[1, g * h, h], &r));
        init.push(float_tensor(&bn, &[1, 2 * g * h], &b));
        let (y, yh) = (format!("Y{layer}"), format!("Y_h{layer}"));
        let seq_lens = if lengths == BatchLengths::Ragged { "lengths" } else { "" };
        let mut inputs = vec![input.as_str(), wn.as_str(), rn.as_str(), bn.as_str(), seq_lens, "zeros"];
        let mut outputs = vec![y.as_str(), yh.as_str()];
        if cfg.cell == Cell::Lstm {
            inputs.push("zeros"); // initial_c
            outputs.push(""); // Y_c unused
        }
        let mut attrs = vec![attr_int("hidden_size", h as i64)];
        attrs.extend(extra.iter().cloned());
        nodes.push(node(op, &format!("encoder_layer{layer}"), &inputs, &outputs, attrs));
        if layer + 1 < depth {
            // Y is [seq, num_directions = 1, batch, H]; the next layer wants [seq, batch, H].
            let next = format!("X{}", layer + 1);
            nodes.push(node("Squeeze", &format!("squeeze_y{layer}"), &[&y, "axis1"], &[&next], vec![]));
            input = next;
        } else {
            nodes.push(node("Squeeze", "last_hidden", &[&yh, "axis0"], &["h_last"], vec![]));
        }
    }
    init.push(float_tensor("W_mean", &[l, h], &get("hidden_to_mean.weight")?));
    init.push(float_tensor("b_mean", &[l], &get("hidden_to_mean.bias")?));
    nodes.push(node("Gemm", "hidden_to_mean", &["h_last", "W_mean", "b_mean"], &["z_mean"], vec![attr_int("transB", 1)]));

    let c = &m.config;
    let mut meta: Vec<(String, String)> = vec![
        ("cell".into(), format!("{:?}", cfg.cell).to_lowercase()),
        ("n_features".into(), f.to_string()),
        ("seq_len".into(), cfg.seq_len.to_string()),
        ("hidden_size".into(), h.to_string()),
        ("hidden_layer_depth".into(), depth.to_string()),
        ("latent_length".into(), l.to_string()),
        ("normalization".into(), serde_json::to_string(&c.data.normalization).unwrap_or_default().trim_matches('"').into()),
        ("seed".into(), c.params.seed.to_string()),
        ("hyper_parameters".into(), serde_json::to_string(&c.params).unwrap_or_default()),
        ("data_sources".into(), c.data.sources.join(";")),
    ];
    if let Some(labels) = &c.data.labels {
        meta.push(("labels".into(), labels.join(",")));
    }
    let graph = GraphProto {
        node: nodes,
        name: Some("vrae_encoder".into()),
        initializer: init,
        doc_string: Some(format!(
            "VRAE encoder ({} x{depth}, hidden {h}) and latent-mean head; trained on series of {} steps x {f} features",
            op, cfg.seq_len
        )),
        input: graph_inputs(f, lengths),
        output: vec![value_info("z_mean", &[Dim::Symbol("batch"), Dim::Fixed(l)], "latent means [batch, latent]")],
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("edge-vrae-trainer".into()),
        producer_version: Some(c.trainer_version.clone()),
        domain: Some("ai.edge-vrae".into()),
        model_version: Some(1),
        doc_string: Some(
            "Encoder of a variational recurrent autoencoder: series -> latent mean; assign to the centroids in centroids.json".into(),
        ),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(ONNX_OPSET) }],
        metadata_props: meta.into_iter().map(|(k, v)| StringStringEntryProto { key: Some(k), value: Some(v) }).collect(),
    })
}

/// `x`, and `lengths` for [`BatchLengths::Ragged`].
fn graph_inputs(f: usize, lengths: BatchLengths) -> Vec<ValueInfoProto> {
    let mut inputs = vec![value_info(
        "x",
        &[Dim::Symbol("seq_len"), Dim::Symbol("batch"), Dim::Fixed(f)],
        "time-major series [seq_len, batch, features], normalised as the metadata 'normalization' says",
    )];
    if lengths == BatchLengths::Ragged {
        let doc = "steps of each series (1..=seq_len); x is padded after them";
        inputs.push(value_info_of(data_type::INT32, "lengths", &[Dim::Symbol("batch")], doc));
    }
    inputs
}

/// Writes `m`'s encoder to `path` atomically; returns the encoded size in bytes.
pub fn write_encoder_onnx(m: &LoadedModel, path: &Path) -> Result<usize> {
    write_encoder_onnx_with(m, path, BatchLengths::Equal)
}

/// [`write_encoder_onnx`] with the given batch layout.
pub fn write_encoder_onnx_with(m: &LoadedModel, path: &Path, lengths: BatchLengths) -> Result<usize> {
    let bytes = encoder_onnx_with(m, onnx_gate_blocks(m.config.model.cell), lengths)?.encode_to_vec();
    write_atomic(path, &bytes)?;
    Ok(bytes.len())
}

/// Metadata entries of an encoded model, for readers that want them back.
pub fn metadata(model: &ModelProto) -> HashMap<String, String> {
    model.metadata_props.iter().filter_map(|e| Some((e.key.clone()?, e.value.clone()?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_blocks_map_pytorch_to_onnx_order() {
        // Rows labelled by PyTorch gate: LSTM i f g o -> ONNX i o f c(=g).
        let lstm: Vec<f32> = vec![0.0, 1.0, 2.0, 3.0]; // i, f, g, o with h = 1
        assert_eq!(permute_blocks(&lstm, onnx_gate_blocks(Cell::Lstm), 1, 1), vec![0.0, 3.0, 1.0, 2.0]);
        // GRU r z n -> ONNX z r h.
        let gru = vec![10.0, 10.5, 20.0, 20.5, 30.0, 30.5]; // h = 2, cols = 1
        assert_eq!(permute_blocks(&gru, onnx_gate_blocks(Cell::Gru), 2, 1), vec![20.0, 20.5, 10.0, 10.5, 30.0, 30.5]);
    }
}
