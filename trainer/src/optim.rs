//! Optimisers whose whole state can be saved and restored, so a resumed run continues exactly
//! where a checkpoint left it (candle-nn's optimisers keep their moments private).
//!
//! Adam (Kingma & Ba), per parameter θ with gradient g at step t:
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ − lr · (m / (1−β₁ᵗ)) / (sqrt(v / (1−β₂ᵗ)) + ε)`
//! — the same operations in the same order as `candle_nn::AdamW` with zero weight decay.
//! SGD: `θ ← θ − lr · g`.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::params::OptimizerKind;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Adam's moments of one parameter.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor,
    v: Tensor,
}

/// Adam or SGD over a fixed set of named variables.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    step: usize,
}

impl Optimizer {
    /// A fresh optimiser (zero moments, step 0) over `vars`.
    pub fn new(kind: OptimizerKind, lr: f64, vars: Vec<(String, Var)>) -> Result<Self> {
        let moments = match kind {
            OptimizerKind::Adam => {
                vars.iter().map(|(_, v)| Ok(Moments { m: v.zeros_like()?, v: v.zeros_like()? })).collect::<Result<_>>()?
            }
            OptimizerKind::Sgd => Vec::new(),
        };
        Ok(Optimizer { kind, lr, vars, moments, step: 0 })
    }

    /// Updates steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let lr = self.lr;
        match self.kind {
            OptimizerKind::Sgd => {
                for (_, var) in &self.vars {
                    if let Some(g) = grads.get(var) {
                        var.set(&var.sub(&(g * lr)?)?)?;
                    }
                }
            }
            OptimizerKind::Adam => {
                let scale_m = 1.0 / (1.0 - BETA1.powi(self.step as i32));
                let scale_v = 1.0 / (1.0 - BETA2.powi(self.step as i32));
                for ((_, var), mo) in self.vars.iter().zip(self.moments.iter_mut()) {
                    if let Some(g) = grads.get(var) {
                        let m = ((&mo.m * BETA1)? + (g * (1.0 - BETA1))?)?;
                        let v = ((&mo.v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                        let step = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + EPS)?)?;
                        var.set(&(var.as_tensor() - (step * lr)?)?)?;
                        mo.m = m;
                        mo.v = v;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state to checkpoint: step count and, for Adam, `m.<name>` / `v.<name>` tensors.
    pub fn state(&self) -> (usize, BTreeMap<String, Tensor>) {
        let mut t = BTreeMap::new();
        for ((name, _), mo) in self.vars.iter().zip(&self.moments) {
            t.insert(format!("m.{name}"), mo.m.clone());
            t.insert(format!("v.{name}"), mo.v.clone());
        }
        (self.step, t)
    }

    /// Restores a [`Optimizer::state`]; every moment must be present with its variable's shape.
    pub fn restore(&mut self, step: usize, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for ((name, var), mo) in self.vars.iter().zip(self.moments.iter_mut()) {
            let get = |key: String| -> Result<Tensor> {
                let t = tensors.get(&key).ok_or_else(|| Error::Training(format!("checkpoint lacks optimiser tensor '{key}'")))?;
                if t.dims() != var.dims() {
                    return Err(Error::Training(format!("optimiser tensor '{key}' has shape {:?}, expected {:?}", t.dims(), var.dims())));
                }
                Ok(t.to_device(var.device())?)
            };
            mo.m = get(format!("m.{name}"))?;
            mo.v = get(format!("v.{name}"))?;
        }
        self.step = step;
        Ok(())
    }
}
