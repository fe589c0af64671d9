//! Recognises the VRAE encoder in an ONNX graph that PyTorch's `torch.onnx.export` wrote:
//!
//! ```text
//! x [T, B, F] ─ LSTM/GRU (layer 0) ─ Y ─ Squeeze(axis 1) ─ ... ─ LSTM/GRU (last) ─ Y_h
//!   initial states: absent, or zeros (ConstantOfShape of the input's shape, Slice/Gather of it)
//! Y_h [1, B, H] ─ Gather(-1, axis 0) | Squeeze(0)   (several layers: Concat of the Y_h first)
//!     ─ Gemm(W [L, H], b, transB=1) | MatMul(W [H, L]) + Add(b) ─ z_mean [B, L]
//! ```
//!
//! The recogniser walks the nodes in order and gives every value a meaning ([`Value`]): the
//! input, a constant, a number computed from shapes, a zero tensor, a layer's output sequence,
//! stacked final states, one layer's last hidden state, the head's output. Each op is accepted
//! only on the meanings for which its result is known exactly (`Gather(-1, axis 0)` of the output
//! sequence is the last step, of `Y_h` the top layer's state); anything else on the encoder's data
//! path is an error naming the node and why, never a guess. Constant and shape arithmetic is not
//! evaluated: such values only ever feed shapes, or the check that an initial state is zero.
//!
//! Semantics checked against the runtime's cells (PyTorch's): forward direction only, default
//! activations, no clip, no peepholes, `input_forget = 0`, `layout = 0`, GRU with
//! `linear_before_reset = 1` (PyTorch applies the reset gate to `h W_hn^T + b_hn`), no
//! `sequence_lens`. Gate blocks come back from ONNX order to PyTorch order
//! ([`crate::export::onnx::onnx_gate_blocks`]).

use std::collections::HashMap;

use candle_onnx::onnx::{self, attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, TensorProto};

use crate::export::onnx::{onnx_gate_blocks, unpermute_blocks};
use crate::params::Cell;

/// Default-domain opsets the recogniser reads (LSTM/GRU/Gemm/Gather/Squeeze/Slice semantics are
/// the same throughout; the fixtures are opset 17).
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// One recurrent layer's weights, PyTorch layout and gate order (`weight_ih_l{n}` etc.).
#[derive(Debug, Clone, PartialEq)]
pub struct RnnLayer {
    /// `[G*H, In]`.
    pub weight_ih: Vec<f32>,
    /// `[G*H, H]`.
    pub weight_hh: Vec<f32>,
    /// `[G*H]`.
    pub bias_ih: Vec<f32>,
    /// `[G*H]`.
    pub bias_hh: Vec<f32>,
}

/// The encoder a graph holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognised {
    /// Recurrent cell.
    pub cell: Cell,
    /// Values per time step.
    pub n_features: usize,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Layers, bottom first.
    pub layers: Vec<RnnLayer>,
    /// Latent dimension.
    pub latent: usize,
    /// Head weight `[L, H]` (`hidden_to_mean.weight`).
    pub head_weight: Vec<f32>,
    /// Head bias `[L]`.
    pub head_bias: Vec<f32>,
    /// The input's sequence length when the graph fixes it.
    pub seq_len: Option<usize>,
    /// Producer name and version.
    pub producer: String,
    /// Default-domain opset.
    pub opset: i64,
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq)]
struct Const {
    dims: Vec<usize>,
    data: ConstData,
}

#[derive(Debug, Clone, PartialEq)]
enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Const {
    fn is_zero(&self) -> bool {
        match &self.data {
            ConstData::F32(v) => v.iter().all(|x| *x == 0.0),
            ConstData::I64(v) => v.iter().all(|x| *x == 0),
        }
    }

    fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }
}

/// What a graph value is, as far as the encoder pattern goes.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// The graph input `x` `[T, B, F]`.
    Input,
    /// A constant (initializer, `Constant` node, or `Identity` of one).
    Const(Const),
    /// Computed from constants and the input's shape; its value is not tracked.
    Computed,
    /// An all-zero float tensor of a computed shape.
    Zeros,
    /// Layer `l`'s `Y` `[T, 1, B, H]`.
    Seq(usize),
    /// Layer `l`'s `Y` without the direction axis, `[T, B, H]`.
    SeqFlat(usize),
    /// Final hidden states of these layers stacked on axis 0, `[n, B, H]` (one layer's `Y_h`
    /// is a stack of one).
    Finals(Vec<usize>),
    /// Layer `l`'s last hidden state `[B, H]`.
    Hidden(usize),
    /// Layer `l`'s `Y_c`.
    CellState(usize),
    /// `Hidden(layer) W` before a bias: `weight` is `[L, H]`.
    Projected { layer: usize, weight: Vec<f32>, latent: usize },
    /// The head's output `[B, L]`.
    Latent { layer: usize, weight: Vec<f32>, bias: Vec<f32>, latent: usize },
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Input => "the graph input".into(),
            Value::Const(_) => "a constant".into(),
            Value::Computed => "a value computed from shapes".into(),
            Value::Zeros => "a zero tensor".into(),
            Value::Seq(l) => format!("layer {l}'s output sequence Y"),
            Value::SeqFlat(l) => format!("layer {l}'s output sequence"),
            Value::Finals(ls) => format!("the final hidden state(s) of layer(s) {ls:?}"),
            Value::Hidden(l) => format!("layer {l}'s last hidden state"),
            Value::CellState(l) => format!("layer {l}'s cell state Y_c"),
            Value::Projected { .. } => "the head's product (before its bias)".into(),
            Value::Latent { .. } => "the head's output".into(),
        }
    }

    /// Constants and shape arithmetic: values off the encoder's data path.
    fn is_static(&self) -> bool {
        matches!(self, Value::Const(_) | Value::Computed)
    }
}

type R<T> = std::result::Result<T, String>;

/// Reads the encoder out of `model`, or says which node does not fit and why.
pub fn recognise(model: &ModelProto) -> R<Recognised> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or("the model declares no default-domain opset")?;
    if !OPSETS.contains(&opset) {
        return Err(format!(
            "opset {opset} is not supported (opsets {} to {}; export with torch.onnx.export(..., opset_version=17))",
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &graph.initializer {
        values.insert(t.name.clone(), Value::Const(tensor(t)?));
    }
    let inputs: Vec<&onnx::ValueInfoProto> = graph.input.iter().filter(|i| !values.contains_key(&i.name)).collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(format!("expected one graph input (x [seq_len, batch, features]), found {}: {names:?}", names.len()));
    };
    let input_dims = input_shape(input)?;
    values.insert(input.name.clone(), Value::Input);

    let mut rec = Walk { values, layers: Vec::new(), cell: None, hidden: 0, n_features: 0 };
    for node in &graph.node {
        rec.node(node).map_err(|e| format!("node '{}' ({}): {e}", node.name, node.op_type))?;
    }
    let outputs: Vec<(&str, &Value)> =
        graph.output.iter().map(|o| (o.name.as_str(), rec.values.get(&o.name).unwrap_or(&Value::Computed))).collect();
    let latents: Vec<&(&str, &Value)> =
        outputs.iter().filter(|(_, v)| matches!(v, Value::Latent { .. } | Value::Projected { .. })).collect();
    let (name, value) = match latents.as_slice() {
        [one] => **one,
        [] => {
            let (name, v) = outputs.first().ok_or("the graph has no output")?;
            return Err(match v {
                Value::Hidden(_) | Value::Finals(_) | Value::Seq(_) | Value::SeqFlat(_) => format!(
                    "missing head: output '{name}' is {}, with no hidden_to_mean head (Gemm, or MatMul + Add) after it",
                    v.describe()
                ),
                _ => format!("output '{name}' is {}, not the encoder's latent mean", v.describe()),
            });
        }
        many => {
            return Err(format!(
                "{} outputs are latent means ({:?}); expected one",
                many.len(),
                many.iter().map(|o| o.0).collect::<Vec<_>>()
            ))
        }
    };
    let (layer, weight, bias, latent) = match value.clone() {
        Value::Latent { layer, weight, bias, latent } => (layer, weight, bias, latent),
        Value::Projected { layer, weight, latent } => (layer, weight, vec![0.0; latent], latent),
        _ => unreachable!("filtered above"),
    };
    let cell = rec.cell.ok_or("the graph has no LSTM or GRU node")?;
    let depth = rec.layers.len();
    if layer + 1 != depth {
        return Err(format!(
            "output '{name}': the head reads layer {layer}'s state, but the top of the {depth} layers is layer {}",
            depth - 1
        ));
    }
    if let Some(f) = input_dims.get(2).copied().flatten() {
        if f != rec.n_features {
            return Err(format!("input '{}' declares {f} features, the first layer's W has {}", input.name, rec.n_features));
        }
    }
    Ok(Recognised {
        cell,
        n_features: rec.n_features,
        hidden: rec.hidden,
        layers: rec.layers,
        latent,
        head_weight: weight,
        head_bias: bias,
        seq_len: input_dims.first().copied().flatten(),
        producer: format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
        opset,
    })
}

/// The input's dimensions (`None`: symbolic); checks a float input of rank 3.
fn input_shape(input: &onnx::ValueInfoProto) -> R<Vec<Option<usize>>> {
    let bad = |why: &str| format!("input '{}' {why}; expected float x [seq_len, batch, features]", input.name);
    let Some(onnx::type_proto::Value::TensorType(tt)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(bad("is not a tensor"));
    };
    if tt.elem_type != DataType::Float as i32 {
        return Err(bad(&format!("has element type {}", tt.elem_type)));
    }
    let Some(shape) = &tt.shape else { return Ok(vec![None; 3]) };
    if shape.dim.len() != 3 {
        return Err(bad(&format!("has rank {}", shape.dim.len())));
    }
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(onnx::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect())
}

/// A tensor's values as f32 or i64; external data and other element types are errors.
fn tensor(t: &TensorProto) -> R<Const> {
    if t.data_location == onnx::tensor_proto::DataLocation::External as i32 || !t.external_data.is_empty() {
        return Err(format!(
            "tensor '{}' keeps its data in an external file, which is not supported (export without external data)",
            t.name
        ));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("tensor '{}' has a negative dimension", t.name))?;
    let n: usize = dims.iter().product();
    let data = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => ConstData::F32(le(t, &dims, f32::from_le_bytes, || t.float_data.clone())?),
        Ok(DataType::Double) => {
            ConstData::F32(le(t, &dims, |b| f64::from_le_bytes(b) as f32, || t.double_data.iter().map(|&v| v as f32).collect())?)
        }
        Ok(DataType::Int64) => ConstData::I64(le(t, &dims, i64::from_le_bytes, || t.int64_data.clone())?),
        Ok(DataType::Int32) => {
            ConstData::I64(le(t, &dims, |b| i32::from_le_bytes(b) as i64, || t.int32_data.iter().map(|&v| v as i64).collect())?)
        }
        _ => return Err(format!("tensor '{}' has element type {}, expected float, double, int32 or int64", t.name, t.data_type)),
    };
    let len = match &data {
        ConstData::F32(v) => v.len(),
        ConstData::I64(v) => v.len(),
    };
    if len != n {
        return Err(format!("tensor '{}' of shape {dims:?} holds {len} values, expected {n}", t.name));
    }
    if let ConstData::F32(v) = &data {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("tensor '{}' holds a non-finite value at index {i}", t.name));
        }
    }
    Ok(Const { dims, data })
}

/// A tensor's values of `W` bytes each from `raw_data` (little-endian, as ONNX stores them), or
/// from the typed field (`typed`) when there is no raw data.
fn le<const W: usize, T>(t: &TensorProto, dims: &[usize], from: fn([u8; W]) -> T, typed: impl FnOnce() -> Vec<T>) -> R<Vec<T>> {
    if t.raw_data.is_empty() {
        return Ok(typed());
    }
    let n: usize = dims.iter().product();
    if t.raw_data.len() != n * W {
        return Err(format!("tensor '{}' of shape {dims:?} holds {} bytes, expected {}", t.name, t.raw_data.len(), n * W));
    }
    Ok(t.raw_data.chunks_exact(W).map(|c| from(c.try_into().expect("chunks of W bytes"))).collect())
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// The walk's state: meanings so far and the layers met.
struct Walk {
    values: HashMap<String, Value>,
    layers: Vec<RnnLayer>,
    cell: Option<Cell>,
    hidden: usize,
    n_features: usize,
}

impl Walk {
    fn node(&mut self, node: &NodeProto) -> R<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!("custom domain '{}' is not part of the encoder pattern", node.domain));
        }
        let ins: Vec<Option<Value>> = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                self.values
                    .get(name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("reads '{name}', which no earlier node or initializer defines"))
            })
            .collect::<R<_>>()?;
        let outs = self.op(node, &ins)?;
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                self.values.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// The meanings of `node`'s outputs, from those of its inputs.
    fn op(&mut self, node: &NodeProto, ins: &[Option<Value>]) -> R<Vec<Value>> {
        let op = node.op_type.as_str();
        let first = ins.first().cloned().flatten();
        let data_path: Vec<&Value> = ins.iter().flatten().filter(|v| !v.is_static()).collect();
        // Pure constant or shape arithmetic: its value only matters where it is checked below.
        if data_path.is_empty() && !matches!(op, "Constant" | "ConstantOfShape" | "Identity" | "LSTM" | "GRU") {
            return Ok(vec![Value::Computed; node.output.len().max(1)]);
        }
        // Shape ops keep a zero tensor zero.
        let zero_ops = ["Slice", "Squeeze", "Unsqueeze", "Reshape", "Expand", "Gather", "Concat", "Cast", "Tile", "Identity", "Transpose"];
        if zero_ops.contains(&op) && data_path.iter().all(|v| **v == Value::Zeros) && first == Some(Value::Zeros) {
            return Ok(vec![Value::Zeros]);
        }
        if op == "Concat" && data_path.iter().all(|v| **v == Value::Zeros) {
            let all_zero = ins.iter().flatten().all(|v| match v {
                Value::Zeros => true,
                Value::Const(c) => c.is_zero(),
                _ => false,
            });
            return Ok(vec![if all_zero { Value::Zeros } else { Value::Computed }]);
        }
        if data_path.contains(&&Value::Input) && !matches!(op, "LSTM" | "GRU" | "Shape") {
            return Err(
                "reads the input x directly: the encoder must feed x [seq_len, batch, features] to the first LSTM/GRU as it is (a batch_first \
                 export puts a Transpose here; export with batch_first=False)"
                    .into(),
            );
        }
        match op {
            "Constant" => Ok(vec![Value::Const(constant(node)?)]),
            "Identity" => Ok(vec![first.ok_or("has no input")?]),
            "Dropout" => {
                if let Some(Some(mode)) = ins.get(2) {
                    if !matches!(mode, Value::Const(c) if c.is_zero()) {
                        return Err("training_mode is not a constant false: dropout would change the encoder's output".into());
                    }
                }
                Ok(vec![first.ok_or("has no input")?, Value::Computed])
            }
            "Shape" => Ok(vec![Value::Computed]),
            "ConstantOfShape" => {
                let zero = match attr(node, "value") {
                    None => true,
                    Some(a) => a.t.as_ref().map(tensor).transpose()?.is_none_or(|c| c.is_zero()),
                };
                Ok(vec![if zero { Value::Zeros } else { Value::Computed }])
            }
            "LSTM" | "GRU" => self.rnn(node, ins),
            "Squeeze" => {
                let axes = axes(node, ins.get(1))?;
                Ok(vec![match (first.ok_or("has no input")?, axes.as_slice()) {
                    (Value::Seq(l), [1]) => Value::SeqFlat(l),
                    (Value::Finals(ls), [0]) if ls.len() == 1 => Value::Hidden(ls[0]),
                    (v, _) => return Err(format!("squeezes axes {axes:?} of {}, which is not part of the encoder pattern", v.describe())),
                }])
            }
            "Unsqueeze" => {
                let axes = axes(node, ins.get(1))?;
                Ok(vec![match (first.ok_or("has no input")?, axes.as_slice()) {
                    (Value::Hidden(l), [0]) => Value::Finals(vec![l]),
                    (v, _) => return Err(format!("unsqueezes axes {axes:?} of {}, which is not part of the encoder pattern", v.describe())),
                }])
            }
            "Gather" => {
                let axis = attr_int(node, "axis", 0);
                let Some(Some(Value::Const(idx))) = ins.get(1) else {
                    return Err("the index is not a constant".into());
                };
                let (scalar, i) = match (idx.dims.as_slice(), idx.ints()) {
                    ([], Some([i])) => (true, *i),
                    ([1], Some([i])) => (false, *i),
                    _ => return Err(format!("gathers with an index of shape {:?}; expected one integer", idx.dims)),
                };
                let data = first.ok_or("has no input")?;
                if axis != 0 {
                    return Err(format!("gathers on axis {axis} of {}; only axis 0 (time or layer) is part of the encoder pattern", data.describe()));
                }
                let picked = match &data {
                    Value::Finals(ls) => {
                        let n = ls.len() as i64;
                        let j = if i < 0 { i + n } else { i };
                        let j = usize::try_from(j).ok().filter(|&j| j < ls.len()).ok_or(format!("index {i} is outside the {n} stacked states"))?;
                        ls[j]
                    }
                    Value::SeqFlat(l) if i == -1 => *l,
                    Value::SeqFlat(l) => {
                        return Err(format!("takes time step {i} of layer {l}'s output; only the last step (-1) is the encoder's state"))
                    }
                    v => return Err(format!("gathers from {}, which is not part of the encoder pattern", v.describe())),
                };
                Ok(vec![if scalar { Value::Hidden(picked) } else { Value::Finals(vec![picked]) }])
            }
            "Slice" => {
                let data = first.ok_or("has no input")?;
                let int = |k: usize| -> R<Option<Vec<i64>>> {
                    match ins.get(k) {
                        None | Some(None) => Ok(None),
                        Some(Some(Value::Const(c))) => c.ints().map(|v| Some(v.to_vec())).ok_or("a slice bound is not an integer".into()),
                        Some(Some(_)) => Err("a slice bound is not a constant".into()),
                    }
                };
                let (starts, ends) = (int(1)?.unwrap_or_default(), int(2)?.unwrap_or_default());
                let axes = int(3)?.unwrap_or(vec![0]);
                let steps = int(4)?.unwrap_or(vec![1]);
                let ([s], [e], [0], [1]) = (starts.as_slice(), ends.as_slice(), axes.as_slice(), steps.as_slice()) else {
                    return Err(format!("slices {} with starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?}; only one range on axis 0 is part of the encoder pattern", data.describe()));
                };
                match &data {
                    Value::Finals(ls) => {
                        let n = ls.len() as i64;
                        let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
                        let sub = ls[clamp(*s)..clamp(*e).max(clamp(*s))].to_vec();
                        if sub.is_empty() {
                            return Err(format!("the slice {s}..{e} of {} is empty", data.describe()));
                        }
                        Ok(vec![Value::Finals(sub)])
                    }
                    Value::SeqFlat(l) if *s == -1 && *e >= i32::MAX as i64 => Ok(vec![Value::Finals(vec![*l])]),
                    v => Err(format!("slices {s}..{e} of {}, which is not part of the encoder pattern", v.describe())),
                }
            }
            "Concat" => {
                let axis = attr_int(node, "axis", 0);
                let mut ls = Vec::new();
                for v in ins.iter().flatten() {
                    match v {
                        Value::Finals(l) if axis == 0 => ls.extend(l),
                        v => return Err(format!("concatenates {} on axis {axis}, which is not part of the encoder pattern", v.describe())),
                    }
                }
                Ok(vec![Value::Finals(ls)])
            }
            "Gemm" => {
                let Some(Value::Hidden(layer)) = first else {
                    return Err(format!("the head's input is {}, expected the top layer's last hidden state", first.map_or("absent".into(), |v| v.describe())));
                };
                if attr_int(node, "transA", 0) != 0 {
                    return Err("transA = 1 is not the hidden_to_mean head".into());
                }
                let alpha = attr(node, "alpha").map_or(1.0, |a| a.f);
                let beta = attr(node, "beta").map_or(1.0, |a| a.f);
                let (mut weight, latent) = self.head_weight(ins.get(1), attr_int(node, "transB", 0) != 0)?;
                weight.iter_mut().for_each(|w| *w *= alpha);
                let mut bias = match ins.get(2) {
                    None | Some(None) => vec![0.0; latent],
                    Some(Some(v)) => head_bias(v, latent)?,
                };
                bias.iter_mut().for_each(|b| *b *= beta);
                Ok(vec![Value::Latent { layer, weight, bias, latent }])
            }
            "MatMul" => {
                let Some(Value::Hidden(layer)) = first else {
                    return Err(format!("the head's input is {}, expected the top layer's last hidden state", first.map_or("absent".into(), |v| v.describe())));
                };
                let (weight, latent) = self.head_weight(ins.get(1), false)?;
                Ok(vec![Value::Projected { layer, weight, latent }])
            }
            "Add" => {
                let (p, b) = match (ins.first().cloned().flatten(), ins.get(1).cloned().flatten()) {
                    (Some(p @ Value::Projected { .. }), Some(b)) | (Some(b), Some(p @ Value::Projected { .. })) => (p, b),
                    _ => return Err(format!("adds {}, which is not part of the encoder pattern", data_path[0].describe())),
                };
                let Value::Projected { layer, weight, latent } = p else { unreachable!() };
                let bias = head_bias(&b, latent)?;
                Ok(vec![Value::Latent { layer, weight, bias, latent }])
            }
            _ => Err(format!(
                "reads {}; {op} is not part of the VRAE encoder pattern (LSTM/GRU layers, Squeeze/Gather/Slice/Concat of their states, a Gemm or MatMul + Add head)",
                data_path[0].describe()
            )),
        }
    }

    /// The head's weight as `[L, H]`: `transposed` says the graph stores it `[L, H]` already.
    fn head_weight(&self, v: Option<&Option<Value>>, transposed: bool) -> R<(Vec<f32>, usize)> {
        let Some(Some(Value::Const(c))) = v else {
            return Err("the head's weight is not a constant".into());
        };
        let ConstData::F32(w) = &c.data else { return Err("the head's weight is not a float tensor".into()) };
        let [a, b] = c.dims[..] else {
            return Err(format!("the head's weight has shape {:?}; expected a 2-D matrix [latent, hidden]", c.dims));
        };
        let (latent, h) = if transposed { (a, b) } else { (b, a) };
        if h != self.hidden {
            return Err(format!("the head's weight has shape {:?}, which does not take hidden size {}", c.dims, self.hidden));
        }
        if latent == 0 {
            return Err("the head has no outputs".into());
        }
        let w = if transposed { w.clone() } else { (0..latent * h).map(|i| w[(i % h) * latent + i / h]).collect() };
        Ok((w, latent))
    }

    fn rnn(&mut self, node: &NodeProto, ins: &[Option<Value>]) -> R<Vec<Value>> {
        let cell = if node.op_type == "LSTM" { Cell::Lstm } else { Cell::Gru };
        if let Some(c) = self.cell.filter(|&c| c != cell) {
            return Err(format!("mixes cells: earlier layers are {c:?}"));
        }
        let dir = attr(node, "direction").map_or(String::new(), |a| String::from_utf8_lossy(&a.s).into_owned());
        if !(dir.is_empty() || dir == "forward") {
            return Err(format!("direction is {dir}: a device streams samples forward only, so only forward encoders run on it"));
        }
        let defaults: &[&str] = match cell {
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
        };
        if let Some(a) = attr(node, "activations") {
            let got: Vec<String> = a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            if !got.iter().map(String::as_str).eq(defaults.iter().copied()) {
                return Err(format!("activations {got:?} differ from PyTorch's {defaults:?}"));
            }
        }
        for unsupported in ["clip", "activation_alpha", "activation_beta"] {
            if attr(node, unsupported).is_some() {
                return Err(format!("sets '{unsupported}', which PyTorch's cells do not have"));
            }
        }
        if attr_int(node, "layout", 0) != 0 {
            return Err("layout = 1 (batch first) is not supported; export x as [seq_len, batch, features]".into());
        }
        if cell == Cell::Lstm && attr_int(node, "input_forget", 0) != 0 {
            return Err("input_forget = 1 couples the gates, which PyTorch's LSTM does not".into());
        }
        if cell == Cell::Gru && attr_int(node, "linear_before_reset", 0) != 1 {
            return Err("linear_before_reset = 0 applies the reset gate before the recurrent product; PyTorch's GRU (and the runtime) apply it after (linear_before_reset = 1)".into());
        }
        let l = self.layers.len();
        match (l, ins.first().cloned().flatten()) {
            (0, Some(Value::Input)) => {}
            (l, Some(Value::SeqFlat(p))) if l > 0 && p + 1 == l => {}
            (l, x) => {
                let want = if l == 0 { "the graph input x".to_string() } else { format!("layer {}'s output sequence", l - 1) };
                return Err(format!("layer {l} reads {}, expected {want}", x.map_or("nothing".into(), |v| v.describe())));
            }
        }
        let g = cell.gates();
        let weight = |k: usize, what: &str| -> R<Const> {
            match ins.get(k).cloned().flatten() {
                Some(Value::Const(c)) if matches!(c.data, ConstData::F32(_)) => Ok(c),
                Some(v) => Err(format!("{what} is {}, expected a float constant", v.describe())),
                None => Err(format!("has no {what}")),
            }
        };
        let w = weight(1, "W")?;
        let r = weight(2, "R")?;
        let h = usize::try_from(attr_int(node, "hidden_size", 0)).unwrap_or(0);
        let input_size = match w.dims[..] {
            [1, gh, i] if gh == g * h && h > 0 && i > 0 => i,
            _ => return Err(format!("W has shape {:?}; expected [1, {g} x hidden_size {h}, input]", w.dims)),
        };
        if r.dims != [1, g * h, h] {
            return Err(format!("R has shape {:?}; expected [1, {}, {h}]", r.dims, g * h));
        }
        if l == 0 {
            self.n_features = input_size;
            self.hidden = h;
        } else if h != self.hidden || input_size != h {
            return Err(format!(
                "hidden size {h} with input {input_size} after layers of hidden size {}; all layers must share one hidden size",
                self.hidden
            ));
        }
        let b = match ins.get(3).cloned().flatten() {
            None => vec![0.0; 2 * g * h],
            Some(Value::Const(Const { dims, data: ConstData::F32(b) })) if dims == [1, 2 * g * h] => b,
            Some(v) => return Err(format!("B is {}; expected a float constant [1, {}]", v.describe(), 2 * g * h)),
        };
        if ins.get(4).cloned().flatten().is_some() {
            return Err("sequence_lens is set: the encoder reads every step of x (a padded batch is encoded per length)".into());
        }
        for (k, what) in [(5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")] {
            match ins.get(k).cloned().flatten() {
                None | Some(Value::Zeros) => {}
                Some(Value::Const(c)) if c.is_zero() => {}
                Some(v) => return Err(format!("{what} is {}; the encoder starts from zero states and has no peepholes", v.describe())),
            }
        }
        let blocks = onnx_gate_blocks(cell);
        let (ConstData::F32(wd), ConstData::F32(rd)) = (&w.data, &r.data) else { unreachable!("checked float") };
        self.layers.push(RnnLayer {
            weight_ih: unpermute_blocks(wd, blocks, h, input_size),
            weight_hh: unpermute_blocks(rd, blocks, h, h),
            bias_ih: unpermute_blocks(&b[..g * h], blocks, h, 1),
            bias_hh: unpermute_blocks(&b[g * h..], blocks, h, 1),
        });
        self.cell = Some(cell);
        let mut outs = vec![Value::Seq(l), Value::Finals(vec![l])];
        if cell == Cell::Lstm {
            outs.push(Value::CellState(l));
        }
        Ok(outs)
    }
}

/// The value of a `Constant` node.
fn constant(node: &NodeProto) -> R<Const> {
    let a = node.attribute.first().ok_or("has no value")?;
    match (a.name.as_str(), AttributeType::try_from(a.r#type)) {
        ("value", _) => tensor(a.t.as_ref().ok_or("has an empty value")?),
        ("value_float", _) => Ok(Const { dims: vec![], data: ConstData::F32(vec![a.f]) }),
        ("value_floats", _) => Ok(Const { dims: vec![a.floats.len()], data: ConstData::F32(a.floats.clone()) }),
        ("value_int", _) => Ok(Const { dims: vec![], data: ConstData::I64(vec![a.i]) }),
        ("value_ints", _) => Ok(Const { dims: vec![a.ints.len()], data: ConstData::I64(a.ints.clone()) }),
        (name, _) => Err(format!("holds a '{name}' value, which the recogniser does not read")),
    }
}

/// `Squeeze`/`Unsqueeze` axes: the second input (opset 13 on) or the attribute.
fn axes(node: &NodeProto, input: Option<&Option<Value>>) -> R<Vec<i64>> {
    match input {
        Some(Some(Value::Const(c))) => c.ints().map(<[i64]>::to_vec).ok_or("the axes are not integers".into()),
        Some(Some(v)) => Err(format!("the axes are {}, not a constant", v.describe())),
        _ => attr_ints(node, "axes").ok_or("has no axes".into()),
    }
}

/// The head's bias, `[L]` or `[1, L]`.
fn head_bias(v: &Value, latent: usize) -> R<Vec<f32>> {
    match v {
        Value::Const(Const { dims, data: ConstData::F32(b) }) if (dims == &[latent] || dims == &[1, latent]) => Ok(b.clone()),
        Value::Const(c) => Err(format!("the head's bias has shape {:?}; expected [{latent}]", c.dims)),
        v => Err(format!("the head's bias is {}, not a constant", v.describe())),
    }
}
