//! The cluster decision of a trained encoder, fitted on its training series: latents and window
//! summaries from the runtime's native kernels (the code devices run) -> scaled decision vectors
//! -> clusters (spectral or k-means) -> prototypes -> anomaly thresholds from the distances the
//! device's decision gives the training series.
//!
//! `trainer fit` runs it after training; `trainer import --fit-centroids` on an imported encoder.

use crate::cluster::consensus::consensus;
use crate::cluster::decision::{
    anomaly_thresholds, apply_scaling, cluster, fit_scaling, stability, step_edges, summary_layout, ClusterParams, Clustering, Decision,
    DecisionParams, Representation, SummaryLayout,
};
use crate::cluster::null;
use crate::cluster::Contingency;
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
    /// Modularity of each decision vector's clustering considered by the label-free choice.
    pub modularity: Vec<(String, Option<f64>)>,
    /// Every candidate the label-free choice scored, in order (empty with `given`).
    pub candidates: Vec<Candidate>,
    /// The decision vector kept (a candidate's name: `given`, `latent`, `level`, `differences`,
    /// `phase-free`;
    /// `latent+summary` or `latent` without a choice of representation).
    pub representation: String,
    /// Latent means of the training series, row-major `n x latent`.
    pub z_train: Vec<f32>,
    /// The scaled training decision vectors the clustering saw, row-major `n x dims`.
    pub x_train: Vec<f32>,
    /// Values per decision vector.
    pub dims: usize,
}

/// A candidate decision vector the label-free choice scored: its clustering's modularity on
/// its own kNN graph and the modularity the same clustering reaches on its nulls
/// ([`crate::cluster::null`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `given`, `latent`, `level`, `differences` or `phase-free`.
    pub name: String,
    /// Modularity of its partition.
    pub modularity: f64,
    /// The same on a Gaussian sample of its mean and covariance (computed for
    /// `modularity-gap` only).
    pub null_gaussian: Option<f64>,
    /// The same with its columns permuted on their own (as `null_gaussian`).
    pub null_permuted: Option<f64>,
    /// Mean adjusted Rand index of its partition with every other candidate's.
    pub agreement: f64,
    /// Its partition of the training series.
    pub labels: Vec<usize>,
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
    let raw = RawDecisions { latent: l, features: nf, layout, rows: &raw_full, dims: full_dims };
    let chosen = if dp.representation == Representation::Given { given_or_latent(dp, cp, &raw)? } else { choose(dp, cp, &raw)? };
    let Chosen { layout: lay, dims, offsets, scales, x_train, clustering, stabilities, modularity, candidates, name } = chosen;
    let k = clustering.k;
    let mut decision = Decision {
        k,
        segments: lay.segments,
        stride: lay.stride,
        freqs: lay.freqs,
        step_edges: if lay.step_levels > 0 { edges } else { Vec::new() },
        step_freqs: lay.step_freqs,
        diffs: lay.diffs,
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
    Ok(FittedDecision { decision, clustering, stabilities, modularity, candidates, representation: name, z_train, x_train, dims })
}

/// The decision vector picked, scaled, with its clustering and what the choice measured.
struct Chosen {
    layout: SummaryLayout,
    dims: usize,
    offsets: Vec<f32>,
    scales: Vec<f32>,
    x_train: Vec<f32>,
    clustering: Clustering,
    stabilities: Vec<(String, Option<f64>)>,
    modularity: Vec<(String, Option<f64>)>,
    candidates: Vec<Candidate>,
    name: String,
}

/// Weights of the seven blocks in order: latent, segment means, segment mean absolute steps,
/// spectrum, step distribution, steps' spectrum, segment differences.
type Weights = [f64; 7];

/// Lengths of the seven blocks of `layout` (see [`Weights`]).
fn block_lens(l: usize, nf: usize, lay: &SummaryLayout) -> [usize; 7] {
    let [a, b, c, d, e, f] = lay.block_lens(nf);
    [l, a, b, c, d, e, f]
}

/// The given weights of `dp`.
fn given_weights(dp: &DecisionParams) -> Weights {
    let p = dp.position_weight;
    [dp.latent_weight, p, p, dp.spectrum_weight, dp.step_weight, dp.step_spectrum_weight, dp.difference_weight]
}

/// The candidates of the label-free choice: the given weights, and each family of blocks alone:
/// the latent; the segment means (the time-aligned shape at the summary's resolution); their
/// differences (the same shape without its level); the phase-free blocks (spectra and step
/// distribution, at the default's relative weights).
fn candidates(dp: &DecisionParams) -> Vec<(&'static str, Weights)> {
    vec![
        ("given", given_weights(dp)),
        ("latent", [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        ("level", [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        ("differences", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
        ("phase-free", [0.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.0]),
    ]
}

/// The raw (unscaled) decision vectors of the training series in the full layout, what every
/// choice of representation starts from.
struct RawDecisions<'a> {
    latent: usize,
    features: usize,
    layout: SummaryLayout,
    /// Row-major `n x dims`.
    rows: &'a [f32],
    dims: usize,
}

/// The previous behaviour: the given weights, or with `choose_summary` the more stable of them
/// and the latent alone.
fn given_or_latent(dp: &DecisionParams, cp: &ClusterParams, raw: &RawDecisions) -> Result<Chosen> {
    let RawDecisions { latent: l, features: nf, layout, rows: raw_full, dims: full_dims } = *raw;
    let mut layouts = vec![layout];
    if dp.choose_summary && layout != SummaryLayout::NONE {
        layouts.push(SummaryLayout::NONE);
    }
    let mut best: Option<(f64, Chosen)> = None;
    let mut stabilities = Vec::new();
    for &lay in &layouts {
        let dims = l + lay.len(nf);
        let raw_train: Vec<f32> = if dims == full_dims {
            raw_full.to_vec()
        } else {
            raw_full.chunks_exact(full_dims).flat_map(|r| r[..dims].iter().copied()).collect()
        };
        let w = given_weights(dp);
        let blocks: Vec<(usize, f64)> = block_lens(l, nf, &lay).into_iter().zip(w).filter(|b| b.0 > 0).collect();
        let (offsets, scales) = fit_scaling(&raw_train, dims, &blocks)?;
        let x_train = apply_scaling(&raw_train, &offsets, &scales);
        let clustering = cluster(&x_train, dims, cp)?;
        let st = if layouts.len() > 1 { stability(&x_train, dims, clustering.k, cp, 3)? } else { f64::NAN };
        let name = if lay == SummaryLayout::NONE { "latent" } else { "latent+summary" };
        stabilities.push((name.to_string(), Some(st).filter(|v| v.is_finite())));
        if best.as_ref().is_none_or(|b| st > b.0) {
            let c = Chosen {
                layout: lay,
                dims,
                offsets,
                scales,
                x_train,
                clustering,
                stabilities: Vec::new(),
                modularity: Vec::new(),
                candidates: Vec::new(),
                name: name.to_string(),
            };
            best = Some((st, c));
        }
    }
    let (_, mut c) = best.expect("at least one candidate");
    c.stabilities = stabilities;
    Ok(c)
}

/// The label-free choice of representation ([`Representation`]): every candidate of
/// [`candidates`] is scaled and clustered on the full decision vector, scored by the criterion,
/// and the best is kept; blocks it weighs 0 are then cut from the summary (the latent stays,
/// at scale 0 if unweighted), so the device computes only what decides.
fn choose(dp: &DecisionParams, cp: &ClusterParams, raw: &RawDecisions) -> Result<Chosen> {
    let RawDecisions { latent: l, features: nf, layout, rows: raw_full, dims: full_dims } = *raw;
    let lens = block_lens(l, nf, &layout);
    let mut seen: Vec<Vec<(usize, f64)>> = Vec::new();
    /// A scored candidate: score, name, weights, offsets, scales, scaled rows, clustering.
    type Scored = (f64, &'static str, Weights, Vec<f32>, Vec<f32>, Vec<f32>, Clustering);
    let mut scored: Vec<Scored> = Vec::new();
    let (mut stabilities, mut candidates_seen) = (Vec::new(), Vec::new());
    for (name, w) in candidates(dp) {
        let blocks: Vec<(usize, f64)> = lens.iter().copied().zip(w).collect();
        let present: Vec<(usize, f64)> = blocks.iter().copied().filter(|b| b.0 > 0).collect();
        // A candidate that weighs nothing present, or repeats an earlier one, is not scored.
        if present.iter().all(|b| b.1 == 0.0) || seen.contains(&present) {
            continue;
        }
        seen.push(present.clone());
        let (offsets, scales) = fit_scaling(raw_full, full_dims, &present)?;
        let x = apply_scaling(raw_full, &offsets, &scales);
        let clustering = cluster(&x, full_dims, cp)?;
        let q = modularity_of(&x, full_dims, cp, &clustering)?;
        let null = |y: Vec<f32>| -> Result<f64> {
            let sub = ClusterParams { k: Some(clustering.k), per_cluster: 1, ..*cp };
            let c = cluster(&y, full_dims, &sub)?;
            modularity_of(&y, full_dims, &sub, &c)
        };
        // The nulls cost two more clusterings each: only the criterion that reads them pays.
        let (null_gaussian, null_permuted) = if dp.representation == Representation::ModularityGap {
            (Some(null(null::gaussian_like(&x, full_dims, cp.seed))?), Some(null(null::columns_permuted(&x, full_dims, cp.seed))?))
        } else {
            (None, None)
        };
        candidates_seen.push(Candidate {
            name: name.to_string(),
            modularity: q,
            null_gaussian,
            null_permuted,
            agreement: f64::NAN,
            labels: clustering.labels.clone(),
        });
        let score = match dp.representation {
            Representation::Stability => {
                let st = stability(&x, full_dims, clustering.k, cp, 3)?;
                stabilities.push((name.to_string(), Some(st).filter(|v| v.is_finite())));
                st
            }
            Representation::ModularityGap => q - null_gaussian.unwrap_or(f64::NAN),
            _ => q,
        };
        scored.push((score, name, w, offsets, scales, x, clustering));
    }
    // Each candidate's agreement with the others: the corroboration `corroborated` adds.
    let m = candidates_seen.len();
    for i in 0..m {
        let total: f64 =
            (0..m).filter(|&j| j != i).map(|j| Contingency::new(&candidates_seen[i].labels, &candidates_seen[j].labels).ari()).sum();
        candidates_seen[i].agreement = if m > 1 { total / (m - 1) as f64 } else { f64::NAN };
    }
    if dp.representation == Representation::Corroborated {
        for (c, seen) in scored.iter_mut().zip(&candidates_seen) {
            c.0 = seen.modularity + seen.agreement;
        }
    }
    if dp.representation == Representation::Consensus {
        // Each candidate's agreement (ARI) with the consensus of all their partitions.
        let parts: Vec<&[usize]> = scored.iter().map(|c| c.6.labels.as_slice()).collect();
        let agreed = consensus(&parts, scored.first().map_or(1, |c| c.6.k));
        for c in &mut scored {
            c.0 = Contingency::new(&agreed, &c.6.labels).ari();
        }
    }
    if scored.is_empty() {
        return Err(Error::Param("no candidate decision vector weighs anything".into()));
    }
    // Ties (and NaN scores) keep the earlier candidate: the given weights come first.
    let at = (0..scored.len()).fold(0, |b, i| if scored[i].0 > scored[b].0 { i } else { b });
    let (_, name, w, offsets, scales, x, mut clustering) = scored.swap_remove(at);
    // Cut the unweighted summary blocks: columns kept, and the layout the device then computes.
    // The differences are read from the segment means, so they keep the segments.
    let keep_seg = w[1] > 0.0 || w[2] > 0.0 || w[6] > 0.0;
    let lay = SummaryLayout {
        segments: if keep_seg { layout.segments } else { 0 },
        stride: if keep_seg { layout.stride } else { 0 },
        freqs: if w[3] > 0.0 { layout.freqs } else { 0 },
        step_levels: if w[4] > 0.0 { layout.step_levels } else { 0 },
        step_freqs: if w[5] > 0.0 { layout.step_freqs } else { 0 },
        diffs: layout.diffs && w[6] > 0.0,
    };
    let kept = [true, keep_seg, keep_seg, w[3] > 0.0, w[4] > 0.0, w[5] > 0.0, w[6] > 0.0];
    let mask: Vec<bool> = lens.iter().zip(kept).flat_map(|(&n, k)| std::iter::repeat_n(k, n)).collect();
    let pick = |v: &[f32]| -> Vec<f32> {
        v.chunks_exact(full_dims).flat_map(|r| r.iter().zip(&mask).filter(|(_, &k)| k).map(|(x, _)| *x)).collect()
    };
    let dims = mask.iter().filter(|&&k| k).count();
    let x_train = pick(&x);
    let modularity = candidates_seen.iter().map(|c| (c.name.clone(), Some(c.modularity).filter(|v| v.is_finite()))).collect();
    clustering.prototypes = pick(&clustering.prototypes);
    Ok(Chosen {
        layout: lay,
        dims,
        offsets: pick(&offsets),
        scales: pick(&scales),
        x_train,
        clustering,
        stabilities,
        modularity,
        candidates: candidates_seen,
        name: name.to_string(),
    })
}

/// Modularity of `c`'s partition of `x` on `x`'s kNN graph (built here when the clustering did
/// not build one).
fn modularity_of(x: &[f32], dims: usize, cp: &ClusterParams, c: &Clustering) -> Result<f64> {
    if c.modularity.is_finite() {
        return Ok(c.modularity);
    }
    Ok(crate::cluster::spectral::Graph::knn(x, dims, cp.n_neighbors)?.modularity(&c.labels, c.k))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::decision::ClusterMethod;
    use rand::{Rng, SeedableRng};

    /// 150 series in three groups that their segment means show (a noisy step at a group's
    /// own time), beside a latent that is a featureless 2-d cloud.
    fn rows() -> (Vec<f32>, Vec<usize>, SummaryLayout) {
        let lay = SummaryLayout { segments: 4, stride: 1, freqs: 0, step_levels: 0, step_freqs: 0, diffs: true };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (mut x, mut truth) = (Vec::new(), Vec::new());
        for i in 0..150 {
            let g = i % 3;
            truth.push(g);
            let mut e = || (rng.gen::<f32>() - 0.5) * 0.3;
            let latent = [e() * 10.0, e() * 10.0];
            let means: Vec<f32> = (0..4).map(|s| if s > g { 1.0 } else { 0.0 } + 3.0 * e()).collect();
            let abs: Vec<f32> = (0..4).map(|_| 0.1 + e() * 0.1).collect();
            let diffs: Vec<f32> = means.windows(2).map(|w| w[1] - w[0]).collect();
            x.extend(latent.iter().chain(&means).chain(&abs).chain(&diffs));
        }
        (x, truth, lay)
    }

    fn chosen(representation: Representation) -> (Chosen, Vec<usize>) {
        let (x, truth, layout) = rows();
        let dims = 2 + layout.len(1);
        let raw = RawDecisions { latent: 2, features: 1, layout, rows: &x, dims };
        let dp = DecisionParams { representation, ..DecisionParams::default() };
        let cp = ClusterParams {
            k: Some(3),
            k_max: 6,
            method: ClusterMethod::Spectral,
            n_neighbors: 10,
            n_init: 5,
            per_cluster: 2,
            refine_rounds: 0,
            seed: 1,
        };
        (choose(&dp, &cp, &raw).unwrap(), truth)
    }

    #[test]
    fn corroboration_and_consensus_pass_over_a_featureless_latent() {
        for r in [Representation::Corroborated, Representation::Consensus] {
            let (c, truth) = chosen(r);
            let ari = Contingency::new(&truth, &c.clustering.labels).ari();
            assert!(c.name != "latent" && ari > 0.6, "{r:?} kept {} (ARI {ari:.3})", c.name);
            // Negative control: the latent's partition has the highest modularity and is far from
            // the groups, so modularity alone keeps it and fails the assertion above.
            let latent = c.candidates.iter().find(|k| k.name == "latent").unwrap();
            assert!(Contingency::new(&truth, &latent.labels).ari() < 0.2);
            assert!(c.candidates.iter().all(|k| k.modularity <= latent.modularity));
            assert!(c.candidates.iter().all(|k| k.agreement.is_finite() && k.null_gaussian.is_none()));
        }
        let (gap, _) = chosen(Representation::ModularityGap);
        assert!(gap.candidates.iter().all(|k| k.null_gaussian.is_some() && k.null_permuted.is_some()));
    }
}
