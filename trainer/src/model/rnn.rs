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
use candle_nn::ops::sigmoid;
use rand_chacha::ChaCha8Rng;

use super::params::ParamStore;
use crate::error::Result;
use crate::params::CellKind;

impl CellKind {
    /// Gate blocks per layer (`G`).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// A stack of recurrent layers.
#[derive(Debug, Clone)]
pub struct Rnn {
    kind: CellKind,
    hidden: usize,
    layers: Vec<Layer>,
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

/// Recurrent state of every layer: `h` and (LSTM only) `c`, each `[B, H]`.
#[derive(Debug, Clone)]
pub struct State {
    /// Hidden state per layer.
    pub h: Vec<Tensor>,
    /// Cell state per layer (empty for GRU).
    pub c: Vec<Tensor>,
}

impl Rnn {
    /// Adds freshly initialised weights under `prefix` to `store`. PyTorch's RNN init:
    /// every weight and bias `U(-1/sqrt(H), 1/sqrt(H))`. `input` is `None` for a stack whose
    /// first layer never sees input (it then has no `weight_ih_l0`).
    pub fn init(
        store: &mut ParamStore,
        prefix: &str,
        kind: CellKind,
        input: Option<usize>,
        hidden: usize,
        depth: usize,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> Result<()> {
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
    pub fn bind(
        store: &ParamStore,
        prefix: &str,
        kind: CellKind,
        input: Option<usize>,
        hidden: usize,
        depth: usize,
        origin: &Path,
    ) -> Result<Self> {
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
        Ok(Rnn { kind, hidden, layers })
    }

    /// Number of layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Runs the stack over `steps` time steps.
    ///
    /// `inputs[t]` is `[B, In]` (ignored and may be empty when the first layer has no input
    /// weights); `state` is the initial state; `dropout(layer, h)` is applied to each layer's
    /// output before it feeds the next layer. Returns the top layer's hidden state per step and
    /// the final state.
    pub fn forward(
        &self,
        inputs: &[Tensor],
        steps: usize,
        mut state: State,
        mut dropout: impl FnMut(usize, &Tensor) -> Result<Tensor>,
    ) -> Result<(Vec<Tensor>, State)> {
        let mut seq: Vec<Tensor> = inputs.to_vec();
        for (l, layer) in self.layers.iter().enumerate() {
            let mut h = state.h[l].clone();
            let mut c = state.c.get(l).cloned();
            // Biases that are simply added are summed once per sequence, not per step.
            let bias = match self.kind {
                CellKind::Lstm => (&layer.b_ih + &layer.b_hh)?,
                CellKind::Gru => layer.b_ih.clone(),
            };
            let w_ih_t = layer.w_ih.as_ref().map(|w| w.t()).transpose()?;
            let w_hh_t = layer.w_hh.t()?;
            let mut out = Vec::with_capacity(steps);
            for t in 0..steps {
                let gx = match (&w_ih_t, seq.get(t)) {
                    (Some(w), Some(x)) => Some(x.matmul(w)?),
                    _ => None,
                };
                h = match self.kind {
                    CellKind::Lstm => {
                        let hw = h.matmul(&w_hh_t)?;
                        let a = match gx {
                            Some(g) => (g + hw)?.broadcast_add(&bias)?,
                            None => hw.broadcast_add(&bias)?,
                        };
                        let (h2, c2) = self.lstm_gates(&a, c.as_ref().expect("LSTM state has c"))?;
                        c = Some(c2);
                        h2
                    }
                    CellKind::Gru => {
                        let gh = h.matmul(&w_hh_t)?.broadcast_add(&layer.b_hh)?;
                        let gx = match gx {
                            Some(g) => g.broadcast_add(&bias)?,
                            None => bias.unsqueeze(0)?.broadcast_as(gh.shape())?,
                        };
                        self.gru_gates(&gx, &gh, &h)?
                    }
                };
                out.push(h.clone());
            }
            state.h[l] = h;
            if let Some(c) = c {
                state.c[l] = c;
            }
            seq = if l + 1 < self.layers.len() {
                out.iter().map(|h| dropout(l, h)).collect::<Result<_>>()?
            } else {
                out
            };
        }
        Ok((seq, state))
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

    /// A zero state for batch `b`.
    pub fn zero_state(&self, b: usize, dev: &Device) -> Result<State> {
        let z = Tensor::zeros((b, self.hidden), self.layers[0].w_hh.dtype(), dev)?;
        Ok(State {
            h: vec![z.clone(); self.depth()],
            c: if self.kind == CellKind::Lstm { vec![z; self.depth()] } else { vec![] },
        })
    }
}
