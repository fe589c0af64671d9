//! Latent means for every series of a dataset, computed by the runtime's native kernels (the
//! code devices run, batched over all cores), and writers for them (CSV, `.npy`).

use std::fmt::Write as _;
use std::path::Path;

use runtime::batch::{assign_all, embed_windows, raw_decisions};
use runtime::bundle::AlignedBytes;
use runtime::{Assignment, Encoder};

use crate::cluster::decision::Decision;
use crate::data::prep::{resample_all, Normalization};
use crate::data::{Dataset, Series};
use crate::error::{Error, Result};
use crate::export::bundle_bytes;
use crate::files::write_atomic;
use crate::model::{ModelConfig, ParamStore};

/// A trained encoder and its cluster decision in the runtime's bundle format, ready to run
/// natively.
#[derive(Debug, Clone)]
pub struct NativeEncoder {
    bytes: AlignedBytes,
}

impl NativeEncoder {
    /// Bundles `weights` with `decision` (a [`Decision::placeholder`] before the clusters exist:
    /// then `embed` and `raw_decisions` work, `assign` does not mean anything).
    pub fn new(cfg: &ModelConfig, norm: Normalization, weights: &ParamStore, decision: &Decision) -> Result<Self> {
        let bytes = bundle_bytes(cfg, norm, weights, decision)?;
        Ok(NativeEncoder { bytes: AlignedBytes::new(&bytes) })
    }

    fn encoder(&self) -> Result<Encoder<'_>> {
        Encoder::from_bytes(self.bytes.as_bytes()).map_err(|e| Error::Mismatch(format!("bundle: {e}")))
    }

    /// Latent means, row-major `n x latent`, of series all of the model's length.
    pub fn embed(&self, series: &[Series]) -> Result<Vec<f32>> {
        let Some((flat, width)) = windows(series)? else { return Ok(Vec::new()) };
        embed_windows(&self.encoder()?, &flat, width).map_err(|e| Error::Mismatch(e.to_string()))
    }

    /// The device's cluster decision for every series, from its latent row (as `embed` gave it)
    /// and the summary of its values.
    pub fn assign(&self, series: &[Series], latents: &[f32]) -> Result<Vec<Assignment>> {
        let Some((flat, width)) = windows(series)? else { return Ok(Vec::new()) };
        assign_all(&self.encoder()?, &flat, width, latents).map_err(|e| Error::Mismatch(e.to_string()))
    }

    /// Raw decision vectors (latent, then summary), row-major `n x decision values`.
    pub fn raw_decisions(&self, series: &[Series], latents: &[f32]) -> Result<Vec<f32>> {
        let Some((flat, width)) = windows(series)? else { return Ok(Vec::new()) };
        raw_decisions(&self.encoder()?, &flat, width, latents).map_err(|e| Error::Mismatch(e.to_string()))
    }

    /// The bundle bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_bytes()
    }
}

/// All series' values concatenated, and the common width (`None` when there are none).
fn windows(series: &[Series]) -> Result<Option<(Vec<f32>, usize)>> {
    let Some(first) = series.first() else { return Ok(None) };
    let width = first.values.len();
    if let Some(i) = series.iter().position(|s| s.values.len() != width) {
        return Err(Error::Mismatch(format!("series {i} has {} values, series 0 has {width}", series[i].values.len())));
    }
    Ok(Some((series.iter().flat_map(|s| s.values.iter().copied()).collect(), width)))
}

/// Prepares new data for a model: checks the feature count and resamples to the model's length
/// (normalisation happens inside the encoder, as on devices). Returns how many series were
/// resampled.
pub fn prepare(ds: &mut Dataset, cfg: &ModelConfig) -> Result<usize> {
    let want = cfg.n_features;
    if ds.n_features != want {
        let src = ds.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::Mismatch(format!(
            "{src}: data has {} features per time step but the model was trained on {want}",
            ds.n_features
        )));
    }
    let t = cfg.seq_len;
    let n = ds.series.iter().filter(|s| s.len != t).count();
    resample_all(ds, t);
    Ok(n)
}

/// Writes latents to `path`: `.npy` gives the bare matrix; anything else gives CSV.
pub fn write_latents(path: &Path, latents: &[f32], dim: usize, labels: Option<&[String]>) -> Result<()> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        return write_atomic(path, &crate::npy::matrix_bytes(latents, latents.len() / dim.max(1), dim));
    }
    write_atomic(path, latents_csv(latents, dim, labels).as_bytes())
}

/// Latents as CSV with columns `index,label,z0..` (label empty when the data has none).
pub fn latents_csv(latents: &[f32], dim: usize, labels: Option<&[String]>) -> String {
    let mut s = String::from("index,label");
    for j in 0..dim {
        let _ = write!(s, ",z{j}");
    }
    s.push('\n');
    for (i, row) in latents.chunks(dim).enumerate() {
        let _ = write!(s, "{i},{}", labels.map_or("", |l| l[i].as_str()));
        for v in row {
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    s
}
