//! Shared helpers of the cross-crate tests: the independent inference engines (onnxruntime via
//! `ort`, tract), fixture models and real ECG5000 inputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use rand::SeedableRng;
use trainer::artifacts::{load_model, save_model, LoadedModel};
use trainer::data::prep::Normalization;
use trainer::model::{ModelConfig, Vrae};
use trainer::params::{Cell, VraeParams};
use trainer::run_record::{DataInfo, RunRecord};

/// Environment variable naming onnxruntime's shared library.
pub const ORT_ENV: &str = "ORT_DYLIB_PATH";

/// The process-wide onnxruntime environment, loaded from `$ORT_DYLIB_PATH`.
pub fn ort_env() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var_os(ORT_ENV).ok_or_else(|| {
            format!(
                "{ORT_ENV} is not set: point it at libonnxruntime.so.1.32.0 from the PyPI onnxruntime wheel \
                 (scripts/test.sh installs it under target/pydeps and sets it)"
            )
        })?;
        let b = ort::init_from(&path).map_err(|e| format!("{ORT_ENV}={}: {e}", Path::new(&path).display()))?;
        b.with_name("parity-tests").build().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// An encoder run by onnxruntime.
pub struct OrtEncoder {
    session: ort::session::Session,
}

impl OrtEncoder {
    /// Loads `path` with `threads` intra-op threads.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        let env = ort_env()?;
        let session = ort::session::Session::builder(env)
            .map_err(|e| anyhow!("{e}"))?
            .with_intra_threads(threads)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_file(path)
            .map_err(|e| anyhow!("onnxruntime cannot load {}: {e}", path.display()))?;
        Ok(OrtEncoder { session })
    }

    /// Latent means `[b, L]` of `x` `[t, b, f]` (time-major).
    pub fn run(&mut self, x: &[f32], t: usize, b: usize, f: usize) -> Result<Vec<f32>> {
        let input = ort::value::Tensor::from_array(([t, b, f], x.to_vec())).map_err(|e| anyhow!("{e}"))?;
        let out = self.session.run(ort::inputs!["x" => input]).map_err(|e| anyhow!("onnxruntime run: {e}"))?;
        // The first output: `z_mean` in our files, whatever the exporter named it in others.
        let (_, z) = out[0].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
        Ok(z.to_vec())
    }

    /// [`OrtEncoder::run`] for a graph with a `lengths` input (`trainer export --lengths`):
    /// `x` holds `b` series padded to `t` steps, series `i` ending at `lengths[i]`.
    pub fn run_with_lengths(&mut self, x: &[f32], t: usize, b: usize, f: usize, lengths: &[i32]) -> Result<Vec<f32>> {
        let input = ort::value::Tensor::from_array(([t, b, f], x.to_vec())).map_err(|e| anyhow!("{e}"))?;
        let lens = ort::value::Tensor::from_array(([b], lengths.to_vec())).map_err(|e| anyhow!("{e}"))?;
        let out = self.session.run(ort::inputs!["x" => input, "lengths" => lens]).map_err(|e| anyhow!("onnxruntime run: {e}"))?;
        let (_, z) = out[0].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
        Ok(z.to_vec())
    }
}

/// An encoder run by tract, optimised for one input shape.
pub struct TractEncoder {
    plan: std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>,
}

impl TractEncoder {
    /// Loads `path`, fixes the input to `[t, b, f]` and optimises.
    pub fn load(path: &Path, t: usize, b: usize, f: usize) -> Result<Self> {
        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .with_context(|| format!("tract cannot load {}", path.display()))?
            .with_input_fact(0, f32::fact([t, b, f]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(TractEncoder { plan })
    }

    /// Latent means `[b, L]` of `x` `[t, b, f]`.
    pub fn run(&self, x: &[f32], t: usize, b: usize, f: usize) -> Result<Vec<f32>> {
        use tract_onnx::prelude::*;
        let input: Tensor = tract_ndarray::Array3::from_shape_vec((t, b, f), x.to_vec())?.into();
        let out = self.plan.run(tvec!(input.into()))?;
        Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }
}

/// Latent means from the trainer's own (candle) forward pass.
pub fn candle_embed(m: &LoadedModel, series: &[trainer::data::Series]) -> Result<Vec<f32>> {
    let cfg = &m.config.model;
    let mut out = Vec::new();
    for chunk in series.chunks(512) {
        let refs: Vec<&trainer::data::Series> = chunk.iter().collect();
        let x = trainer::train::batch_tensor(&refs, chunk[0].len, cfg.n_features, &Device::Cpu)?;
        out.extend(m.vrae.encode_mean(&x, None)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Latent means from the runtime's native kernels (what devices run).
pub fn native_embed(m: &LoadedModel, series: &[trainer::data::Series]) -> Result<Vec<f32>> {
    Ok(m.native()?.embed(series)?)
}

/// Time-major `[t, b, f]` buffer of `series`.
pub fn time_major(series: &[trainer::data::Series], t: usize, f: usize) -> Vec<f32> {
    let b = series.len();
    let mut x = vec![0f32; t * b * f];
    for (j, s) in series.iter().enumerate() {
        for step in 0..t {
            for k in 0..f {
                x[(step * b + j) * f + k] = s.values[step * f + k];
            }
        }
    }
    x
}

/// ECG5000 series; with `f > 1`, a synthetic multivariate version: feature `k` of step `t` is the
/// beat shifted by `k` steps and scaled (real shapes, distinct channels).
pub fn ecg_series(n: usize, f: usize, len: usize) -> Result<Vec<trainer::data::Series>> {
    let ds = trainer::data::bundled::ecg5000()?;
    if n > ds.len() {
        bail!("asked for {n} series, ECG5000 has {}", ds.len());
    }
    Ok(ds.series[..n]
        .iter()
        .map(|s| {
            let src = trainer::data::prep::resample(s, 1, len);
            let mut values = Vec::with_capacity(len * f);
            for t in 0..len {
                for k in 0..f {
                    let v = src.values[(t + k) % len];
                    values.push(v * (1.0 - 0.3 * k as f32));
                }
            }
            trainer::data::Series { values, len }
        })
        .collect())
}

/// Saves a freshly initialised (seeded, random biases) model of the given shape into `dir` and
/// exports its encoder; returns the loaded model.
pub fn fixture_model(dir: &Path, cell: Cell, depth: usize, features: usize, hidden: usize, seed: u64) -> Result<LoadedModel> {
    let p = VraeParams { cell, hidden_size: hidden, hidden_layer_depth: depth, latent_length: 6, seed, ..VraeParams::default() };
    let cfg = ModelConfig {
        cell,
        n_features: features,
        seq_len: 140,
        hidden_size: hidden,
        hidden_layer_depth: depth,
        latent_length: 6,
        dropout: 0.0,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let store = Vrae::init(&cfg, &mut rng, &Device::Cpu)?;
    let config = RunRecord {
        trainer_version: "fixture".into(),
        ..RunRecord::new(
            cfg,
            p,
            DataInfo {
                sources: vec!["fixture".into()],
                n_series: 0,
                n_train: 0,
                n_holdout: 0,
                holdout: 0.0,
                length_range: (140, 140),
                resampled: false,
                length: trainer::data::prep::LengthMode::Native,
                min_length: None,
                cut: 0,
                normalization: Normalization::None,
                labels: None,
                fingerprint: None,
            },
        )
    };
    save_model(dir, &config, &store)?;
    let m = load_model(dir, &Device::Cpu)?;
    trainer::export::write_encoder_onnx(&m, &dir.join("encoder.onnx"))?;
    Ok(m)
}

/// Largest absolute difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "outputs differ in length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The committed ECG5000 model directory.
pub fn shipped_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ecg5000")
}
