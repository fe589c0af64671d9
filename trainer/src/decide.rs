//! The cluster decision of a trained encoder, fitted on its training series: latents and window
//! summaries from the runtime's native kernels (the code devices run) -> scaled decision vectors
//! -> clusters (spectral or k-means) -> prototypes -> anomaly thresholds from the distances the
//! device's decision gives the training series.
//!
//! `trainer fit` runs it after training; `trainer import --fit-centroids` on an imported encoder.

use crate::cluster::decision::{
    anomaly_thresholds, apply_scaling, cluster, fit_scaling, stability, step_edges, summary_layout, ClusterParams, Clustering, Decision,
    DecisionParams, SummaryLayout,
};
use crate::data::prep::Normalization;
use crate::data::Series;
use crate::embed::NativeEncoder;
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ParamStore};

/// A fitted decision and what was learnt on the way.
#[derive(Debug, Clone)]
pub struct FittedDecision {
    /// What the bundle carries.
    pub decision: Decision,
    /// The offline clustering of the training series.
    pub clustering: Clustering,
    /// Resampling stability of each decision vector considered (`None`: not resampled).
    pub stabilities: Vec<(String, Option<f64>)>,
    /// Latent means of the training series, row-major `n x latent`.
    pub z_train: Vec<f32>,
    /// The scaled training decision vectors the clustering saw, row-major `n x dims`.
    pub x_train: Vec<f32>,
    /// Values per decision vector.
    pub dims: usize,
}

/// Checks that `k` clusters (`None`: chosen by the eigengap) can be made from `n` training
/// series, before anything long runs.
pub fn check_clusters(k: Option<usize>, n: usize) -> Result<()> {
    match k {
        Some(k) if k == 0 || k > n => Err(Error::Param(format!("cannot make {k} clusters from {n} training series"))),
        None if n < 3 => {
            Err(Error::Param(format!("choosing k (--clusters auto) needs at least 3 training series, there are {n}; pass --clusters K")))
        }
        _ => Ok(()),
    }
}

/// Fits the decision of the encoder in `weights` on `train` (all of `cfg.seq_len` steps) with
/// the representation `dp` and the clustering `cp` (see [`ClusterParams::of`]).
pub fn fit_decision(
    cfg: &ModelConfig,
    norm: Normalization,
    weights: &ParamStore,
    train: &[Series],
    dp: &DecisionParams,
    cp: &ClusterParams,
) -> Result<FittedDecision> {
    let (l, nf) = (cfg.latent_length, cfg.n_features);
    let layout = summary_layout(cfg.seq_len, nf, dp);
    let train_values: Vec<&[f32]> = train.iter().map(|s| s.values.as_slice()).collect();
    let edges = step_edges(&train_values, nf, layout.step_levels);
    let layout = if edges.is_empty() { SummaryLayout { step_levels: 0, ..layout } } else { layout };
    let stand_in = Decision::placeholder(l, nf, &layout, edges.clone());
    let native = NativeEncoder::new(cfg, norm, weights, &stand_in)?;
    let z_train = native.embed(train)?;
    let raw_full = native.raw_decisions(train, &z_train)?;
    let full_dims = stand_in.dims();
    // The decision vector with the summary, and (when asked to choose) the latent alone, which
    // is its first `l` values; the more stable clustering wins.
    let mut candidates = vec![layout];
    if dp.choose_summary && layout != SummaryLayout::NONE {
        candidates.push(SummaryLayout::NONE);
    }
    /// One decision vector considered: its stability, summary layout, width, scaling, the
    /// scaled training rows and their clustering.
    type Candidate = (f64, SummaryLayout, usize, Vec<f32>, Vec<f32>, Vec<f32>, Clustering);
    let mut best: Option<Candidate> = None;
    let mut stabilities = Vec::new();
    for &lay in &candidates {
        let dims = l + lay.len(nf);
        let raw_train: Vec<f32> = if dims == full_dims {
            raw_full.clone()
        } else {
            raw_full.chunks_exact(full_dims).flat_map(|r| r[..dims].iter().copied()).collect()
        };
        let seg = lay.segments * nf;
        let blocks: Vec<(usize, f64)> = [
            (l, dp.latent_weight),
            (seg, dp.position_weight),
            (seg, dp.position_weight),
            (lay.freqs * nf, dp.spectrum_weight),
            (lay.step_levels * nf, dp.step_weight),
            (lay.step_freqs * nf, dp.step_spectrum_weight),
        ]
        .into_iter()
        .filter(|b| b.0 > 0)
        .collect();
        let (offsets, scales) = fit_scaling(&raw_train, dims, &blocks)?;
        let x_train = apply_scaling(&raw_train, &offsets, &scales);
        let clustering = cluster(&x_train, dims, cp)?;
        let st = if candidates.len() > 1 { stability(&x_train, dims, clustering.k, cp, 3)? } else { f64::NAN };
        let name = if lay == SummaryLayout::NONE { "latent" } else { "latent+summary" };
        stabilities.push((name.to_string(), Some(st).filter(|v| v.is_finite())));
        if best.as_ref().is_none_or(|b| st > b.0) {
            best = Some((st, lay, dims, offsets, scales, x_train, clustering));
        }
    }
    let (_, lay, dims, offsets, scales, x_train, clustering) = best.expect("at least one candidate");
    let k = clustering.k;
    let mut decision = Decision {
        k,
        segments: lay.segments,
        stride: lay.stride,
        freqs: lay.freqs,
        step_edges: if lay.step_levels > 0 { edges } else { Vec::new() },
        step_freqs: lay.step_freqs,
        offsets,
        scales,
        prototypes: clustering.prototypes.clone(),
        prototype_clusters: clustering.prototype_clusters.clone(),
        anomaly_thresholds: Vec::new(),
    };
    // The thresholds come from the distances the device's decision gives the training series.
    let unflagged = NativeEncoder::new(cfg, norm, weights, &decision)?;
    let distances: Vec<(usize, f32)> = unflagged.assign(train, &z_train)?.iter().map(|a| (a.cluster, a.distance)).collect();
    decision.anomaly_thresholds = anomaly_thresholds(k, &distances, dp.anomaly_quantile);
    Ok(FittedDecision { decision, clustering, stabilities, z_train, x_train, dims })
}

/// Per-cluster means of the latent rows `z` (`latent` values each) over the clusters in `pred`,
/// and the cluster sizes: `centroids.json`'s table.
pub fn latent_means(z: &[f32], latent: usize, pred: &[usize], k: usize) -> (Vec<f32>, Vec<usize>) {
    let mut sizes = vec![0usize; k];
    let mut means = vec![0f32; k * latent];
    for (&c, z) in pred.iter().zip(z.chunks(latent)) {
        sizes[c] += 1;
        for (m, v) in means[c * latent..(c + 1) * latent].iter_mut().zip(z) {
            *m += v;
        }
    }
    for (c, &n) in sizes.iter().enumerate() {
        means[c * latent..(c + 1) * latent].iter_mut().for_each(|m| *m /= n.max(1) as f32);
    }
    (means, sizes)
}
