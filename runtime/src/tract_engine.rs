//! The exported `encoder.onnx` run by tract (gateways that prefer a standard model file), with
//! the same centroid assignment as the native core.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

/// Windows per tract run.
pub const TRACT_BATCH: usize = 64;

/// Errors of the tract engine.
#[derive(Debug, thiserror::Error)]
pub enum TractError {
    /// tract could not load, optimise or run the model.
    #[error("{path}: {message}")]
    Tract {
        /// The ONNX file.
        path: PathBuf,
        /// What tract said.
        message: String,
    },
    /// Windows of the wrong size.
    #[error("windows of {got} values do not fit {seq_len} steps x {features} features")]
    Shape {
        /// Values per window given.
        got: usize,
        /// Model window length.
        seq_len: usize,
        /// Model features.
        features: usize,
    },
}

type Plan = Arc<TypedSimplePlan>;

/// `encoder.onnx` under tract, with one optimised plan per batch size used.
pub struct TractEncoder {
    path: PathBuf,
    seq_len: usize,
    features: usize,
    plans: Mutex<HashMap<usize, Plan>>,
}

impl TractEncoder {
    /// Prepares `path` for windows of `seq_len` steps of `features` values.
    pub fn load(path: &Path, seq_len: usize, features: usize) -> Result<Self, TractError> {
        let e = TractEncoder { path: path.to_path_buf(), seq_len, features, plans: Mutex::new(HashMap::new()) };
        e.plan(1)?; // fail early on an unreadable model
        Ok(e)
    }

    fn err(&self, e: impl std::fmt::Display) -> TractError {
        TractError::Tract { path: self.path.clone(), message: e.to_string() }
    }

    fn plan(&self, batch: usize) -> Result<Plan, TractError> {
        if let Some(p) = self.plans.lock().map_err(|e| self.err(e))?.get(&batch) {
            return Ok(p.clone());
        }
        let plan = tract_onnx::onnx()
            .model_for_path(&self.path)
            .and_then(|m| m.with_input_fact(0, f32::fact([self.seq_len, batch, self.features]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| self.err(format!("{e:#}")))?;
        self.plans.lock().map_err(|e| self.err(e))?.insert(batch, plan.clone());
        Ok(plan)
    }

    /// Latent means (row-major `n x latent`) of concatenated time-major windows.
    pub fn embed(&self, windows: &[f32]) -> Result<Vec<f32>, TractError> {
        let per = self.seq_len * self.features;
        if !windows.len().is_multiple_of(per) {
            return Err(TractError::Shape { got: windows.len(), seq_len: self.seq_len, features: self.features });
        }
        let mut out = Vec::new();
        for chunk in windows.chunks(TRACT_BATCH * per) {
            let b = chunk.len() / per;
            // Windows are [batch][time][feature]; ONNX layout 0 wants [time][batch][feature].
            let mut x = vec![0f32; chunk.len()];
            for (w, win) in chunk.chunks(per).enumerate() {
                for t in 0..self.seq_len {
                    let dst = (t * b + w) * self.features;
                    x[dst..dst + self.features].copy_from_slice(&win[t * self.features..(t + 1) * self.features]);
                }
            }
            let input: Tensor = tract_ndarray::Array3::from_shape_vec((self.seq_len, b, self.features), x).map_err(|e| self.err(e))?.into();
            let res = self.plan(b)?.run(tvec!(input.into())).map_err(|e| self.err(e))?;
            out.extend(res[0].to_plain_array_view::<f32>().map_err(|e| self.err(e))?.iter().copied());
        }
        Ok(out)
    }
}
