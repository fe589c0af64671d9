//! Latent means for every series of a dataset, and writers for them (CSV, `.npy`).

use std::fmt::Write as _;
use std::path::Path;

use candle_core::Device;

use crate::artifacts::{write_atomic, RunConfig};
use crate::data::prep::{normalize, resample_all};
use crate::data::{Dataset, Series};
use crate::error::{Error, Result};
use crate::model::Vrae;
use crate::train::batch_tensor;

/// Series per forward pass at inference.
pub const INFER_BATCH: usize = 512;

/// Prepares new data the way the model's training data was prepared: checks the feature count,
/// applies the stored normalisation and resamples to the model's length. Returns how many series
/// were resampled.
pub fn prepare(ds: &mut Dataset, cfg: &RunConfig) -> Result<usize> {
    let want = cfg.model.n_features;
    if ds.n_features != want {
        let src = ds.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::Mismatch(format!(
            "{src}: data has {} features per time step but the model was trained on {want}",
            ds.n_features
        )));
    }
    normalize(ds, cfg.data.normalization);
    let t = cfg.model.seq_len;
    let n = ds.series.iter().filter(|s| s.len != t).count();
    resample_all(ds, t);
    Ok(n)
}

/// Latent means, row-major `n x latent_length`, for series all of the model's length. Every
/// series is embedded (the last batch may be smaller), in batches of [`INFER_BATCH`].
pub fn embed(model: &Vrae, series: &[Series], dev: &Device) -> Result<Vec<f32>> {
    let cfg = model.config();
    let mut out = Vec::with_capacity(series.len() * cfg.latent_length);
    for chunk in series.chunks(INFER_BATCH) {
        let refs: Vec<&Series> = chunk.iter().collect();
        let x = batch_tensor(&refs, cfg.seq_len, cfg.n_features, dev)?;
        let z = model.encode_mean(&x)?;
        out.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Writes a float matrix as NumPy `.npy` (version 1.0, little-endian f32, C order).
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes latents to `path`: `.npy` gives the bare matrix; anything else gives CSV with columns
/// `index,label,z0..` (label empty when the data has none).
pub fn write_latents(path: &Path, latents: &[f32], dim: usize, labels: Option<&[String]>) -> Result<()> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        return write_atomic(path, &npy_bytes(latents, latents.len() / dim.max(1), dim));
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
