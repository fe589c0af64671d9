//! The model directory: what `trainer fit` writes and `embed`/`cluster` read back.
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | all weights, PyTorch-style names |
//! | `config.json` | architecture, hyper-parameters, data shape, normalisation, seed |
//! | `centroids.json` | k-means centroids of the latent means |
//! | `metrics.json` | ARI/NMI/purity and the raw k-means baseline (labelled data only) |
//! | `training_log.csv` | per-epoch losses and times |
//! | `assignments.csv` | cluster of every training and held-out series |
//! | `model.bundle` | encoder weights + centroids for the runtime (see `runtime::bundle`) |
//! | `encoder.onnx` | encoder + latent-mean head, opset 17 (see [`crate::export::onnx`]) |
//!
//! Every file is written to a temporary file in the same directory, fsynced, then renamed, so a
//! crash leaves either the old or the new file, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::data::prep::Normalization;
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ParamStore, Vrae};
use crate::params::VraeParams;

/// Weights file name.
pub const WEIGHTS: &str = "model.safetensors";
/// Config file name.
pub const CONFIG: &str = "config.json";
/// Centroid file name.
pub const CENTROIDS: &str = "centroids.json";
/// Metrics file name.
pub const METRICS: &str = "metrics.json";
/// Training log file name.
pub const TRAINING_LOG: &str = "training_log.csv";
/// Runtime bundle file name.
pub const BUNDLE: &str = "model.bundle";
/// Exported encoder file name.
pub const ENCODER_ONNX: &str = "encoder.onnx";
/// Per-series assignment file name.
pub const ASSIGNMENTS: &str = "assignments.csv";

/// Version of the model-directory layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Shape and preparation of the training data, stored so new data can be prepared the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// Files the model was trained on.
    pub sources: Vec<String>,
    /// Series loaded.
    pub n_series: usize,
    /// Series used for training.
    pub n_train: usize,
    /// Series held out.
    pub n_holdout: usize,
    /// Held-out fraction.
    pub holdout: f64,
    /// Shortest and longest series before resampling.
    pub length_range: (usize, usize),
    /// True when series were resampled to `seq_len` because lengths differed.
    pub resampled: bool,
    /// Normalisation applied per series before the model.
    pub normalization: Normalization,
    /// Distinct labels in order of first appearance, when the data had labels.
    pub labels: Option<Vec<String>>,
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Trainer version that wrote the directory.
    pub trainer_version: String,
    /// Architecture.
    pub model: ModelConfig,
    /// Hyper-parameters of the run.
    pub params: VraeParams,
    /// Training data.
    pub data: DataInfo,
}

/// `centroids.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Centroids {
    /// Number of clusters.
    pub k: usize,
    /// Latent dimension.
    pub latent_length: usize,
    /// One row per cluster.
    pub centroids: Vec<Vec<f32>>,
    /// Training series per cluster.
    pub sizes: Vec<usize>,
    /// k-means inertia on the training latents.
    pub inertia: f64,
}

impl Centroids {
    /// Row-major `k x latent_length` table.
    pub fn flat(&self) -> Vec<f32> {
        self.centroids.iter().flatten().copied().collect()
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; not all platforms can open a directory, so best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Serialises `value` as pretty JSON into `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::model(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("malformed JSON: {e}")))
}

/// A model directory loaded for inference.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// Directory it came from.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: RunConfig,
    /// Bound weights.
    pub vrae: Vrae,
    /// Raw weights (for exporters).
    pub weights: ParamStore,
    /// Its centroids, when `centroids.json` exists.
    pub centroids: Option<Centroids>,
}

impl LoadedModel {
    /// The encoder and centroids on the runtime's native kernels.
    pub fn native(&self) -> Result<crate::embed::NativeEncoder> {
        let c = self.centroids.as_ref().map(|c| c.flat());
        crate::embed::NativeEncoder::new(&self.config.model, self.config.data.normalization, &self.weights, c.as_deref())
    }
}

/// Saves weights and config into `dir`.
pub fn save_model(dir: &Path, config: &RunConfig, weights: &ParamStore) -> Result<()> {
    write_atomic(&dir.join(WEIGHTS), &weights.to_safetensors()?)?;
    write_json(&dir.join(CONFIG), config)
}

/// Loads a model directory, checking that config, weights and centroids agree.
pub fn load_model(dir: &Path, dev: &Device) -> Result<LoadedModel> {
    if !dir.is_dir() {
        return Err(Error::model(dir, "is not a directory (expected a model directory written by `trainer fit`)"));
    }
    let cfg_path = dir.join(CONFIG);
    let config: RunConfig = read_json(&cfg_path)?;
    if config.format_version != FORMAT_VERSION {
        return Err(Error::model(
            &cfg_path,
            format!("format_version {} is not supported (this trainer reads {FORMAT_VERSION})", config.format_version),
        ));
    }
    let m = &config.model;
    if m.n_features == 0 || m.seq_len == 0 || m.hidden_size == 0 || m.hidden_layer_depth == 0 || m.latent_length == 0 {
        return Err(Error::model(&cfg_path, "model dimensions must all be >= 1"));
    }
    let w_path = dir.join(WEIGHTS);
    let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
    let weights = ParamStore::from_safetensors(&bytes, &w_path, dev)?;
    let vrae = Vrae::bind(&config.model, &weights, &w_path)?;
    let c_path = dir.join(CENTROIDS);
    let centroids = if c_path.exists() {
        let c: Centroids = read_json(&c_path)?;
        if c.k == 0 || c.centroids.len() != c.k || c.latent_length != m.latent_length {
            return Err(Error::model(
                &c_path,
                format!("expected k rows of {} values, found k={} with {} rows", m.latent_length, c.k, c.centroids.len()),
            ));
        }
        if let Some(i) = c.centroids.iter().position(|r| r.len() != m.latent_length || r.iter().any(|v| !v.is_finite())) {
            return Err(Error::model(&c_path, format!("centroid {i} has the wrong length or a non-finite value")));
        }
        Some(c)
    } else {
        None
    };
    Ok(LoadedModel { dir: dir.to_path_buf(), config, vrae, weights, centroids })
}
