//! Stacked LSTM/GRU layers built from candle tensor ops (so autograd differentiates them on
//! every backend).
//!
//! Weights use PyTorch's layout and names: `weight_ih_l{k}` `[G*H, In]`, `weight_hh_l{k}`
//! `[G*H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[G*H]`, with `G` gate blocks stacked by rows.
//!
//! LSTM, gate blocks `i, f, g, o`:
//! ```text
//! [a_i a_f a_g a_o] = x W_ih^T + b_ih + h W_hh^T + b_hh
//! i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)
//! c' = f ⊙ c + i ⊙ g      h' = o ⊙ tanh(c')
//! ```
//! GRU, gate blocks `r, z, n` (the reset gate multiplies the *projected* hidden state, which is
//! ONNX's `linear_before_reset = 1`):
//! ```text
//! r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)     z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)
//! n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))
//! h' = (1 - z) ⊙ n + z ⊙ h
//! ```

use std::path::Path;

use candle_core::{Device, Tensor, D};
use rand_chacha::ChaCha8Rng;

use super::fused::{self, Output};
use super::params::ParamStore;
use crate::error::Result;
use crate::params::Cell;

/// `1 / (1 + e^-x)` from candle's own ops (differentiable; the op-by-op reference path only).
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// A stack of recurrent layers.
#[derive(Debug, Clone)]
pub struct Rnn {
    kind: Cell,
    hidden: usize,
    layers: Vec<Layer>,
    /// Use the op-by-op path even on CPU (see [`Rnn::set_reference`]).
    reference: bool,
}

#[derive(Debug, Clone)]
struct Layer {
    /// `W_ih` `[G*H, In]`; `None` for a layer whose input is always zero (decoder layer 0).
    /// Weights stay the variables' own tensors (transposed as views at use): a transposed copy
    /// made once would not see the optimiser's in-place updates.
    w_ih: Option<Tensor>,
    /// `W_hh` `[G*H, H]`.
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
}

/// The shape of a stack of recurrent layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackShape {
    /// Cell of every layer.
    pub kind: Cell,
    /// Values per step into the first layer; `None`: it never sees input.
    pub input: Option<usize>,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Layers.
    pub depth: usize,
}

impl Rnn {
    /// Adds freshly initialised weights under `prefix` to `store`. PyTorch's RNN init:
    /// every weight and bias `U(-1/sqrt(H), 1/sqrt(H))`. `input` is `None` for a stack whose
    /// first layer never sees input (it then has no `weight_ih_l0`).
    pub fn init(store: &mut ParamStore, prefix: &str, shape: StackShape, rng: &mut ChaCha8Rng, dev: &Device) -> Result<()> {
        let StackShape { kind, input, hidden, depth } = shape;
        let gh = kind.gates() * hidden;
        let k = 1.0 / (hidden as f64).sqrt();
        for l in 0..depth {
            let inp = if l == 0 { input } else { Some(hidden) };
            if let Some(i) = inp {
                store.uniform(&format!("{prefix}.weight_ih_l{l}"), &[gh, i], k, rng, dev)?;
            }
            store.uniform(&format!("{prefix}.weight_hh_l{l}"), &[gh, hidden], k, rng, dev)?;
            store.uniform(&format!("{prefix}.bias_ih_l{l}"), &[gh], k, rng, dev)?;
            store.uniform(&format!("{prefix}.bias_hh_l{l}"), &[gh], k, rng, dev)?;
        }
        Ok(())
    }

    /// Binds the weights under `prefix`, checking their shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(store: &ParamStore, prefix: &str, shape: StackShape, origin: &Path) -> Result<Self> {
        let StackShape { kind, input, hidden, depth } = shape;
        let gh = kind.gates() * hidden;
        let layers = (0..depth)
            .map(|l| {
                let inp = if l == 0 { input } else { Some(hidden) };
                let w_ih = match inp {
                    Some(i) => Some(store.get(&format!("{prefix}.weight_ih_l{l}"), &[gh, i], origin)?),
                    None => None,
                };
                Ok(Layer {
                    w_ih,
                    w_hh: store.get(&format!("{prefix}.weight_hh_l{l}"), &[gh, hidden], origin)?,
                    b_ih: store.get(&format!("{prefix}.bias_ih_l{l}"), &[gh], origin)?,
                    b_hh: store.get(&format!("{prefix}.bias_hh_l{l}"), &[gh], origin)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Rnn { kind, hidden, layers, reference: false })
    }

    /// Number of layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Runs the stack over `steps` time steps and returns the top layer's hidden states in the
    /// shape `out` names.
    ///
    /// `x` is `[T, B, In]` (`None` for a stack whose first layer has no input weights);
    /// `h0[l]` is layer `l`'s initial hidden state `[B, H]` (cell states start at zero);
    /// `dropout` is applied to each layer's output before it feeds the next layer (it receives
    /// `[T, B, H]` on the fused path and `[B, H]` per step on the reference path, and must draw
    /// its randomness in time-major order so both paths see the same masks). `lengths` (one per
    /// batch row, each in `1..=steps`) runs a padded batch of unequal series: a row holds its
    /// state after its own last step (see [`fused::lstm_seq`]), so `Output::Last` is each row's
    /// state at its own end.
    pub fn forward(
        &self,
        x: Option<&Tensor>,
        steps: usize,
        h0: &[Tensor],
        dropout: impl FnMut(&Tensor) -> Result<Tensor>,
        out: Output,
        lengths: Option<&[usize]>,
    ) -> Result<Tensor> {
        if self.fused_applies(h0) {
            return self.forward_fused(x, steps, h0, dropout, out, lengths);
        }
        let y = self.forward_reference(x, steps, h0, dropout, lengths)?;
        Ok(match out {
            Output::Seq => y,
            Output::Flat => y.reshape((steps * h0[0].dim(0)?, self.hidden))?,
            Output::Last => y.get(steps - 1)?,
        })
    }

    /// Whether the fused CPU kernels run this stack (f32 on the CPU, not forced off).
    fn fused_applies(&self, h0: &[Tensor]) -> bool {
        !self.reference && h0[0].device().is_cpu() && h0[0].dtype() == candle_core::DType::F32
    }

    /// Forces the op-by-op path even where the fused kernels apply (for comparisons).
    pub fn set_reference(&mut self, yes: bool) {
        self.reference = yes;
    }

    fn forward_fused(
        &self,
        x: Option<&Tensor>,
        steps: usize,
        h0: &[Tensor],
        mut dropout: impl FnMut(&Tensor) -> Result<Tensor>,
        out: Output,
        lengths: Option<&[usize]>,
    ) -> Result<Tensor> {
        let mut seq = match x {
            Some(x) => x.clone(),
            None => Tensor::zeros((steps, h0[0].dim(0)?, 0), h0[0].dtype(), h0[0].device())?,
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let mut parts: Vec<Tensor> = layer.w_ih.iter().cloned().collect();
            parts.push(layer.w_hh.clone());
            parts.push(layer.b_ih.unsqueeze(1)?);
            parts.push(layer.b_hh.unsqueeze(1)?);
            let w = Tensor::cat(&parts, 1)?;
            let top = l + 1 == self.layers.len();
            let out = if top { out } else { Output::Seq };
            let y = match self.kind {
                Cell::Lstm => fused::lstm_seq(&seq, &w, &h0[l], out, lengths)?,
                Cell::Gru => fused::gru_seq(&seq, &w, &h0[l], out, lengths)?,
            };
            seq = if l + 1 < self.layers.len() { dropout(&y)? } else { y };
        }
        Ok(seq)
    }

    fn forward_reference(
        &self,
        x: Option<&Tensor>,
        steps: usize,
        h0: &[Tensor],
        mut dropout: impl FnMut(&Tensor) -> Result<Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<Tensor> {
        // Rows still running at step t, as a [B, H] mask; `None` where every row runs.
        let b = h0[0].dim(0)?;
        let running = |t: usize| -> Result<Option<Tensor>> {
            let Some(l) = lengths.filter(|l| l.iter().any(|&n| n <= t)) else { return Ok(None) };
            let m: Vec<u8> = l.iter().map(|&n| u8::from(n > t)).collect();
            Ok(Some(Tensor::from_vec(m, (b, 1), h0[0].device())?.broadcast_as((b, self.hidden))?.contiguous()?))
        };
        // Per-step tensors throughout: narrowing a sequence tensor that carries gradient would
        // make every step's backward materialise a full-size zero gradient.
        let mut seq: Vec<Tensor> = match x {
            Some(x) => (0..steps).map(|t| x.get(t)).collect::<candle_core::Result<_>>()?,
            None => vec![],
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let mut h = h0[l].clone();
            let mut c = (self.kind == Cell::Lstm).then(|| h.zeros_like()).transpose()?;
            // Biases that are simply added are summed once per sequence, not per step.
            let bias = match self.kind {
                Cell::Lstm => (&layer.b_ih + &layer.b_hh)?,
                Cell::Gru => layer.b_ih.clone(),
            };
            let w_ih_t = layer.w_ih.as_ref().map(|w| w.t()).transpose()?;
            let w_hh_t = layer.w_hh.t()?;
            let mut out = Vec::with_capacity(steps);
            for t in 0..steps {
                let (hprev, cprev) = (h.clone(), c.clone());
                let gx = match (&w_ih_t, seq.get(t)) {
                    (Some(w), Some(x)) => Some(x.matmul(w)?),
                    _ => None,
                };
                h = match self.kind {
                    Cell::Lstm => {
                        let hw = h.matmul(&w_hh_t)?;
                        let a = match gx {
                            Some(g) => (g + hw)?.broadcast_add(&bias)?,
                            None => hw.broadcast_add(&bias)?,
                        };
                        let (h2, c2) = self.lstm_gates(&a, c.as_ref().expect("LSTM has a cell state"))?;
                        c = Some(c2);
                        h2
                    }
                    Cell::Gru => {
                        let gh = h.matmul(&w_hh_t)?.broadcast_add(&layer.b_hh)?;
                        let gx = match gx {
                            Some(g) => g.broadcast_add(&bias)?,
                            None => bias.unsqueeze(0)?.broadcast_as(gh.shape())?,
                        };
                        self.gru_gates(&gx, &gh, &h)?
                    }
                };
                if let Some(m) = running(t)? {
                    h = m.where_cond(&h, &hprev)?;
                    if let (Some(cn), Some(cp)) = (&c, &cprev) {
                        c = Some(m.where_cond(cn, cp)?);
                    }
                }
                out.push(h.clone());
            }
            seq = if l + 1 < self.layers.len() { out.iter().map(&mut dropout).collect::<Result<_>>()? } else { out };
        }
        Ok(Tensor::stack(&seq, 0)?)
    }

    fn lstm_gates(&self, a: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.hidden;
        let i = sigmoid(&a.narrow(D::Minus1, 0, h)?)?;
        let f = sigmoid(&a.narrow(D::Minus1, h, h)?)?;
        let g = a.narrow(D::Minus1, 2 * h, h)?.tanh()?;
        let o = sigmoid(&a.narrow(D::Minus1, 3 * h, h)?)?;
        let c2 = ((f * c)? + (i * g)?)?;
        let h2 = (o * c2.tanh()?)?;
        Ok((h2, c2))
    }

    fn gru_gates(&self, gx: &Tensor, gh: &Tensor, hprev: &Tensor) -> Result<Tensor> {
        let h = self.hidden;
        let rz = sigmoid(&(gx.narrow(D::Minus1, 0, 2 * h)? + gh.narrow(D::Minus1, 0, 2 * h)?)?)?;
        let r = rz.narrow(D::Minus1, 0, h)?;
        let z = rz.narrow(D::Minus1, h, h)?;
        let n = (gx.narrow(D::Minus1, 2 * h, h)? + (r * gh.narrow(D::Minus1, 2 * h, h)?)?)?.tanh()?;
        // h' = n + z ⊙ (h - n), the same as (1 - z) ⊙ n + z ⊙ h with one fewer op.
        Ok((&n + (z * (hprev - &n)?)?)?)
    }
}
