//! Latent means for every series of a dataset, computed by the runtime's native kernels (the
//! code devices run, batched over all cores), and writers for them (CSV, `.npy`).

use std::fmt::Write as _;
use std::path::Path;

use runtime::batch::{assign_all, embed_windows, raw_decisions};
use runtime::bundle::AlignedBytes;
use runtime::{Assignment, Encoder};

use crate::cluster::decision::Decision;
use crate::data::prep::{cut_to, resample_all, LengthMode, Normalization};
use crate::data::{Dataset, Series};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::{ModelConfig, ParamStore};
use crate::run_record::RunRecord;

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
        Self::with_format(cfg, norm, weights, decision, runtime::WeightFormat::F32)
    }

    /// [`NativeEncoder::new`] with the weights stored as `format` says (int8: what a device
    /// flashed with `trainer export --weights int8` computes).
    pub fn with_format(
        cfg: &ModelConfig,
        norm: Normalization,
        weights: &ParamStore,
        decision: &Decision,
        format: runtime::WeightFormat,
    ) -> Result<Self> {
        let bytes = crate::export::bundle_bytes_min(cfg, norm, weights, decision, 1, format)?;
        Ok(NativeEncoder { bytes: AlignedBytes::new(&bytes) })
    }

    fn encoder(&self) -> Result<Encoder<'_>> {
        Encoder::from_bytes(self.bytes.as_bytes()).map_err(|e| Error::Mismatch(format!("bundle: {e}")))
    }

    /// Latent means, row-major `n x latent`: each series encoded over its own steps (series of
    /// one length in one batch call).
    pub fn embed(&self, series: &[Series]) -> Result<Vec<f32>> {
        let enc = self.encoder()?;
        let l = enc.bundle().header.latent as usize;
        per_length(series, l, |flat, width, _| embed_windows(&enc, flat, width))
    }

    /// The device's cluster decision for every series, from its latent row (as `embed` gave it)
    /// and the summary of its values.
    pub fn assign(&self, series: &[Series], latents: &[f32]) -> Result<Vec<Assignment>> {
        let enc = self.encoder()?;
        let l = enc.bundle().header.latent as usize;
        let mut out = vec![None; series.len()];
        for g in by_length(series) {
            let got =
                assign_all(&enc, &g.values, g.width, &latent_rows(latents, l, &g.rows)).map_err(|e| Error::Mismatch(e.to_string()))?;
            for (&i, a) in g.rows.iter().zip(got) {
                out[i] = Some(a);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Raw decision vectors (latent, then summary), row-major `n x decision values`.
    pub fn raw_decisions(&self, series: &[Series], latents: &[f32]) -> Result<Vec<f32>> {
        let enc = self.encoder()?;
        let l = enc.bundle().header.latent as usize;
        let dims = enc.bundle().header.decision_dims();
        per_length(series, dims, |flat, width, rows| raw_decisions(&enc, flat, width, &latent_rows(latents, l, rows)))
    }

    /// The bundle bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_bytes()
    }
}

/// Series of one length: their indices (in input order), their values concatenated, and the
/// values per series.
struct LengthGroup {
    rows: Vec<usize>,
    values: Vec<f32>,
    width: usize,
}

/// The series grouped by length, groups in order of first appearance (one group, the whole
/// input in order, when all lengths are equal).
fn by_length(series: &[Series]) -> Vec<LengthGroup> {
    let mut groups: Vec<LengthGroup> = Vec::new();
    let mut slot = std::collections::HashMap::new();
    for (i, s) in series.iter().enumerate() {
        let g = *slot.entry(s.values.len()).or_insert_with(|| {
            groups.push(LengthGroup { rows: Vec::new(), values: Vec::new(), width: s.values.len() });
            groups.len() - 1
        });
        groups[g].rows.push(i);
        groups[g].values.extend_from_slice(&s.values);
    }
    groups
}

/// Rows `rows` of the row-major `n x l` matrix `latents`, in that order.
fn latent_rows(latents: &[f32], l: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter().flat_map(|&i| latents[i * l..(i + 1) * l].iter().copied()).collect()
}

/// Runs `f(values, width, rows)` on each length group, which returns `width_out` values per
/// series, and puts every series' values back at its input position.
fn per_length(
    series: &[Series],
    width_out: usize,
    f: impl Fn(&[f32], usize, &[usize]) -> std::result::Result<Vec<f32>, runtime::EncodeError>,
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; series.len() * width_out];
    for g in by_length(series) {
        let got = f(&g.values, g.width, &g.rows).map_err(|e| Error::Mismatch(e.to_string()))?;
        for (&i, row) in g.rows.iter().zip(got.chunks_exact(width_out.max(1))) {
            out[i * width_out..(i + 1) * width_out].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// What [`prepare`] did to new data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Series interpolated onto the model's length (a resample-mode model).
    pub resampled: usize,
    /// Series cut to the model's length, their first steps kept (a native-length model).
    pub cut: usize,
}

/// Prepares new data for a model the way its training data was (normalisation happens inside
/// the encoder, as on devices): checks the feature count; a resample-mode model gets every
/// series interpolated onto its length; a native-length model gets series longer than its
/// length cut to it, and refuses series shorter than its minimum length.
pub fn prepare(ds: &mut Dataset, run: &RunRecord) -> Result<Prepared> {
    let cfg = &run.model;
    let want = cfg.n_features;
    let src = || ds.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    if ds.n_features != want {
        return Err(Error::Mismatch(format!(
            "{}: data has {} features per time step but the model was trained on {want}",
            src(),
            ds.n_features
        )));
    }
    let t = cfg.seq_len;
    if run.data.length == LengthMode::Native {
        let min = run.data.min_length.unwrap_or(1);
        if let Some((i, s)) = ds.series.iter().enumerate().find(|(_, s)| s.len < min) {
            return Err(Error::Mismatch(format!(
                "{}: series {i} has {} steps, fewer than the model's minimum length {min} (half its shortest training series)",
                src(),
                s.len
            )));
        }
        return Ok(Prepared { resampled: 0, cut: cut_to(ds, t) });
    }
    let n = ds.series.iter().filter(|s| s.len != t).count();
    resample_all(ds, t);
    Ok(Prepared { resampled: n, cut: 0 })
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
