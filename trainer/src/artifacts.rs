//! The model directory: what `trainer fit` writes and `embed`/`cluster` read back.
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | all weights, PyTorch-style names |
//! | `config.json` | the [`RunRecord`]: architecture, hyper-parameters, data shape, normalisation, seed |
//! | `centroids.json` | k-means centroids of the latent means |
//! | `metrics.json` | ARI/NMI/purity and the raw k-means baseline (labelled data only) |
//! | `training_log.csv` | per-epoch losses and times |
//! | `assignments.csv` | cluster of every training and held-out series |
//! | `model.bundle` | encoder weights + centroids for the runtime (see `runtime::bundle`) |
//! | `encoder.onnx` | encoder + latent-mean head, opset 17 (see [`crate::export::onnx`]) |
//! | `checkpoint.safetensors` | training state for `fit --resume` (see [`crate::checkpoint`]) |
//!
//! Every file is written to a temporary file in the same directory, fsynced, then renamed, so a
//! crash leaves either the old or the new file, never a torn one. `trainer fit` goes further and
//! builds the whole directory under a staging name next to it, then swaps it in with one rename
//! ([`Staging`]), so a crash never leaves new weights beside old centroids.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::files::{write_atomic, write_json};
use crate::model::{ParamStore, Vrae};
use crate::run_record::{RunRecord, FORMAT_VERSION};

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

/// Run report (JSON) file name.
pub const REPORT_JSON: &str = "report.json";
/// Run report (HTML) file name.
pub const REPORT_HTML: &str = "report.html";
/// Folder of plots.
pub const PLOTS: &str = "plots";

/// Everything `trainer fit` may write into a model directory: a directory holding only these (and
/// leftover temp files) may be replaced by a new run; anything else is the user's and stops `fit`.
pub const KNOWN_ENTRIES: [&str; 12] = [
    WEIGHTS,
    CONFIG,
    CENTROIDS,
    METRICS,
    TRAINING_LOG,
    BUNDLE,
    ENCODER_ONNX,
    ASSIGNMENTS,
    crate::checkpoint::CHECKPOINT,
    REPORT_JSON,
    REPORT_HTML,
    PLOTS,
];

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
    /// k-means inertia on the training latents (0 when another method clustered).
    pub inertia: f64,
    /// The cluster decision the bundle carries; absent in directories written before it
    /// existed (then: nearest row of `centroids` on the latent alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::cluster::decision::Decision>,
}

impl Centroids {
    /// Row-major `k x latent_length` table.
    pub fn flat(&self) -> Vec<f32> {
        self.centroids.iter().flatten().copied().collect()
    }

    /// The decision the bundle carries (nearest centroid for old directories).
    pub fn decision(&self) -> crate::cluster::decision::Decision {
        self.decision.clone().unwrap_or_else(|| crate::cluster::decision::Decision::centroids(&self.flat(), self.latent_length))
    }
}

/// A model directory being built under a hidden name next to its final place, then swapped in
/// whole by [`Staging::commit`]. Dropped without a commit, it removes itself.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    dir: PathBuf,
    done: bool,
}

impl Staging {
    /// Checks that `target` is absent, empty or a model directory (never someone's other files)
    /// and creates a fresh staging directory beside it, removing stale ones of dead processes.
    pub fn begin(target: &Path) -> Result<Staging> {
        check_replaceable(target)?;
        let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let name = target
            .file_name()
            .ok_or_else(|| Error::model(target, "output directory needs a name (not `..` or `/`)"))?
            .to_string_lossy()
            .into_owned();
        remove_stale_staging(parent, &name);
        let dir = parent.join(format!(".{name}.staging-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging { target: target.to_path_buf(), dir, done: false })
    }

    /// Where to write the new directory's files.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces the target with the staged directory in one step (Linux: `renameat2` with
    /// `RENAME_EXCHANGE`; elsewhere two renames with a brief window where only the old copy, under
    /// a hidden name, exists), then deletes the old content.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.dir);
        let parent = self.dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        if self.target.exists() {
            if !exchange(&self.dir, &self.target) {
                let old = PathBuf::from(format!("{}.old", self.dir.display()));
                std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
                std::fs::rename(&self.dir, &self.target).map_err(|e| Error::io(&self.target, e))?;
                let _ = std::fs::remove_dir_all(&old);
            }
            // After the exchange the staging name holds the previous content.
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            std::fs::rename(&self.dir, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        sync_dir(&parent);
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn sync_dir(dir: &Path) {
    // Not all platforms can open a directory for fsync, so best effort.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(ca), Ok(cb)) = (std::ffi::CString::new(a.as_os_str().as_bytes()), std::ffi::CString::new(b.as_os_str().as_bytes())) else {
        return false;
    };
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) == 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

fn check_replaceable(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    if !target.is_dir() {
        return Err(Error::model(target, "exists and is not a directory"));
    }
    let entries = std::fs::read_dir(target).map_err(|e| Error::io(target, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(target, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let temp = name.starts_with('.') && name.ends_with(".tmp");
        if !temp && !KNOWN_ENTRIES.contains(&name.as_str()) {
            return Err(Error::model(
                target,
                format!("holds '{name}', which `trainer fit` did not write; choose a new or empty --out directory (fit replaces the whole directory)"),
            ));
        }
    }
    Ok(())
}

/// Removes `.{name}.staging-PID` folders left by crashed runs (Linux: PID no longer alive).
fn remove_stale_staging(parent: &Path, name: &str) {
    // Elsewhere there is no cheap liveness check, so leftovers stay.
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = format!(".{name}.staging-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|p| p.trim_end_matches(".old").parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::model(path, format!("malformed JSON: {e}")))
}

/// A model directory loaded for inference.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// Directory it came from.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: RunRecord,
    /// Bound weights.
    pub vrae: Vrae,
    /// Raw weights (for exporters).
    pub weights: ParamStore,
    /// Its centroids, when `centroids.json` exists.
    pub centroids: Option<Centroids>,
}

impl LoadedModel {
    /// The encoder and its cluster decision on the runtime's native kernels (a placeholder
    /// decision when there is no `centroids.json`: embedding only).
    pub fn native(&self) -> Result<crate::embed::NativeEncoder> {
        let m = &self.config.model;
        let d = match &self.centroids {
            Some(c) => c.decision(),
            None => crate::cluster::decision::Decision::placeholder(
                m.latent_length,
                m.n_features,
                &crate::cluster::decision::SummaryLayout::NONE,
                Vec::new(),
            ),
        };
        crate::embed::NativeEncoder::new(m, self.config.data.normalization, &self.weights, &d)
    }
}

/// Saves weights and config into `dir`.
pub fn save_model(dir: &Path, config: &RunRecord, weights: &ParamStore) -> Result<()> {
    write_atomic(&dir.join(WEIGHTS), &weights.to_safetensors()?)?;
    write_json(&dir.join(CONFIG), config)
}

/// Loads a model directory, checking that config, weights and centroids agree.
pub fn load_model(dir: &Path, dev: &Device) -> Result<LoadedModel> {
    if !dir.is_dir() {
        return Err(Error::model(dir, "is not a directory (expected a model directory written by `trainer fit`)"));
    }
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| Error::io(&p, e))
    };
    let config = read(CONFIG)?;
    let weights = read(WEIGHTS)?;
    let centroids = if dir.join(CENTROIDS).exists() { Some(read(CENTROIDS)?) } else { None };
    parse_model(dir, &config, &weights, centroids.as_deref(), dev)
}

/// Checks and binds the contents of a model directory's `config.json`, `model.safetensors` and
/// (optional) `centroids.json`; `dir` only names the files in errors.
pub fn parse_model(dir: &Path, config: &[u8], weights: &[u8], centroids: Option<&[u8]>, dev: &Device) -> Result<LoadedModel> {
    let cfg_path = dir.join(CONFIG);
    let config: RunRecord = parse_json(&cfg_path, config)?;
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
    let weights = ParamStore::from_safetensors(weights, &w_path, dev)?;
    let vrae = if config.imported.is_some() {
        Vrae::bind_encoder(&config.model, &weights, &w_path)?
    } else {
        Vrae::bind(&config.model, &weights, &w_path)?
    };
    let c_path = dir.join(CENTROIDS);
    let centroids = match centroids {
        Some(bytes) => {
            let c: Centroids = parse_json(&c_path, bytes)?;
            if c.k == 0 || c.centroids.len() != c.k || c.latent_length != m.latent_length {
                return Err(Error::model(
                    &c_path,
                    format!("expected k rows of {} values, found k={} with {} rows", m.latent_length, c.k, c.centroids.len()),
                ));
            }
            if let Some(i) = c.centroids.iter().position(|r| r.len() != m.latent_length || r.iter().any(|v| !v.is_finite())) {
                return Err(Error::model(&c_path, format!("centroid {i} has the wrong length or a non-finite value")));
            }
            if let Some(d) = &c.decision {
                let dims = d.expected_dims(m.latent_length, m.n_features);
                let n_p = d.prototype_clusters.len();
                let problem = if d.k != c.k {
                    Some(format!("decision has k = {}, the centroids {}", d.k, c.k))
                } else if d.offsets.len() != dims || d.scales.len() != dims {
                    Some(format!("decision offsets/scales must have {dims} values (latent + summary)"))
                } else if n_p == 0 || d.prototypes.len() != n_p * dims {
                    Some(format!("decision prototypes must be rows of {dims} values, one per prototype cluster"))
                } else if d.segments > 0 && d.stride == 0 {
                    Some("decision summary stride is 0".to_string())
                } else if !d.step_edges.len().is_multiple_of(m.n_features.max(1)) {
                    Some(format!("decision has {} step edges, not a multiple of {} features", d.step_edges.len(), m.n_features))
                } else if d.step_edges.iter().any(|v| !v.is_finite()) {
                    Some("a step edge is not finite".to_string())
                } else if d.prototype_clusters.iter().any(|&p| p >= d.k) {
                    Some(format!("a decision prototype names a cluster outside 0..{}", d.k))
                } else if !d.anomaly_thresholds.is_empty() && d.anomaly_thresholds.len() != d.k {
                    Some(format!("decision has {} anomaly thresholds for {} clusters", d.anomaly_thresholds.len(), d.k))
                } else if d.anomaly_thresholds.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
                    Some("an anomaly threshold is negative or not finite".to_string())
                } else if d.offsets.iter().chain(&d.scales).chain(&d.prototypes).any(|v| !v.is_finite()) {
                    Some("decision tables hold a non-finite value".to_string())
                } else {
                    None
                };
                if let Some(p) = problem {
                    return Err(Error::model(&c_path, p));
                }
            }
            Some(c)
        }
        None => None,
    };
    Ok(LoadedModel { dir: dir.to_path_buf(), config, vrae, weights, centroids })
}
