//! The runtime's model bundle (see `runtime::bundle` for the byte layout), built from trained
//! weights: what devices flash and what the trainer's own inference runs.

use std::path::Path;

use runtime::bundle::{encode, Header, WeightFormat};

use crate::cluster::decision::Decision;

use crate::data::prep::Normalization;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::{ModelConfig, ParamStore};

fn dim<T: TryFrom<usize>>(v: usize, what: &str) -> Result<T> {
    T::try_from(v).map_err(|_| Error::Param(format!("{what} = {v} does not fit the bundle format")))
}

/// Encodes the encoder weights of `weights` and the cluster decision as a bundle with no minimum
/// window length (what the trainer's own inference runs).
pub fn bundle_bytes(cfg: &ModelConfig, norm: Normalization, weights: &ParamStore, decision: &Decision) -> Result<Vec<u8>> {
    bundle_bytes_min(cfg, norm, weights, decision, 1, WeightFormat::F32)
}

/// [`bundle_bytes`] with a minimum window length, which devices enforce in `finish`, and the
/// weights stored as `weight_format` says (int8: quantised by `runtime::bundle::encode`).
pub fn bundle_bytes_min(
    cfg: &ModelConfig,
    norm: Normalization,
    weights: &ParamStore,
    decision: &Decision,
    min_len: usize,
    weight_format: WeightFormat,
) -> Result<Vec<u8>> {
    let l = cfg.latent_length;
    let d = decision.expected_dims(l, cfg.n_features);
    if decision.dims() != d || decision.prototypes.is_empty() || !decision.prototypes.len().is_multiple_of(d) {
        return Err(Error::Param(format!("decision tables of {} values per row do not fit latent {l} + summary", decision.dims())));
    }
    let tensors = weights.tensors();
    let mut flat = Vec::new();
    // Recurrent weights go in transposed (`[In, G*H]`), the layout the step kernel streams.
    let mut take = |name: String, transpose: bool| -> Result<()> {
        let t = tensors.get(&name).ok_or_else(|| Error::Param(format!("weights lack '{name}'")))?;
        let t = if transpose { t.t()?.contiguous()? } else { t.clone() };
        flat.extend(t.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    };
    for layer in 0..cfg.hidden_layer_depth {
        for (part, transpose) in [("weight_ih", true), ("weight_hh", true), ("bias_ih", false), ("bias_hh", false)] {
            take(format!("encoder.{part}_l{layer}"), transpose)?;
        }
    }
    take("hidden_to_mean.weight".into(), false)?;
    take("hidden_to_mean.bias".into(), false)?;
    let header = Header {
        cell: cfg.cell,
        n_features: dim(cfg.n_features, "n_features")?,
        hidden: dim(cfg.hidden_size, "hidden_size")?,
        layers: dim(cfg.hidden_layer_depth, "hidden_layer_depth")?,
        latent: dim(l, "latent_length")?,
        k: dim(decision.k, "k")?,
        seq_len: dim(cfg.seq_len, "seq_len")?,
        normalization: norm,
        weights_len: dim(flat.len(), "weight count")?,
        segments: dim(decision.segments, "summary segments")?,
        stride: dim(decision.stride, "summary stride")?,
        prototypes: dim(decision.prototypes.len() / d, "prototypes")?,
        freqs: dim(decision.freqs, "spectrum frequencies")?,
        step_edges: dim(decision.step_levels(cfg.n_features), "step edges")?,
        step_freqs: dim(decision.step_freqs, "steps' spectrum frequencies")?,
        min_len: dim(min_len.max(1), "minimum length")?,
        diffs: u8::from(decision.diffs),
        weight_format,
    };
    encode(&header, &flat, &decision.tables()).map_err(|e| Error::Param(format!("bundle: {e}")))
}

/// Writes the bundle (minimum window length `min_len`, 1 for none; weights as `weight_format`)
/// to `path` atomically; returns its size in bytes.
pub fn write_bundle(
    cfg: &ModelConfig,
    norm: Normalization,
    weights: &ParamStore,
    decision: &Decision,
    min_len: usize,
    weight_format: WeightFormat,
    path: &Path,
) -> Result<usize> {
    let b = bundle_bytes_min(cfg, norm, weights, decision, min_len, weight_format)?;
    write_atomic(path, &b)?;
    Ok(b.len())
}
