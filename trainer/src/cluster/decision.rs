//! The cluster decision a device runs, fitted on the training series: how the raw decision
//! vector (latent, then the window summary; `runtime::summary`) is weighted, how the clusters
//! are found, and the prototypes that stand for them.
//!
//! Weighting: each block (latent; segment means; segment mean absolute steps; spectrum; step
//! distribution; steps' spectrum) is centred and scaled so its total variance, `Σ_j Var(x_j)` over the block, is
//! `w_block²`; so a block's share of every distance does not depend on its dimension or its
//! units. Every block's weight is a parameter ([`DecisionParams`]).
//!
//! Prototypes: up to `per_cluster` k-means centres inside each cluster. The nearest prototype
//! then reproduces a non-round cluster (spectral clusters follow the data's shape) where one
//! centroid per cluster could not.

use serde::{Deserialize, Serialize};

use super::kmeans::{KMeans, KMeansParams};
use super::spectral::{eigengap_k, nearest_rows, spectral_on, Graph, SpectralParams};
use crate::error::{Error, Result};
use crate::flags::params_with_flags;

/// Sizes of the streaming summary's blocks (see `runtime::summary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryLayout {
    /// Segments (blocks 1-2; 0: none).
    pub segments: usize,
    /// Samples per segment.
    pub stride: usize,
    /// Spectrum frequencies per feature.
    pub freqs: usize,
    /// Step-distribution edges per feature.
    pub step_levels: usize,
    /// Frequencies per feature of the steps' spectrum.
    pub step_freqs: usize,
    /// Whether the segment differences follow (block 6; only with at least 2 segments).
    pub diffs: bool,
}

impl SummaryLayout {
    /// No summary.
    pub const NONE: SummaryLayout = SummaryLayout { segments: 0, stride: 0, freqs: 0, step_levels: 0, step_freqs: 0, diffs: false };

    /// Segment differences per feature ([`runtime::summary::diff_count`]).
    pub fn diff_count(&self) -> usize {
        runtime::summary::diff_count(self.segments, self.diffs)
    }

    /// Lengths of the summary's blocks for `n_features` ([`runtime::summary::block_lens`]).
    pub fn block_lens(&self, n_features: usize) -> [usize; 6] {
        runtime::summary::block_lens(n_features, self.segments, self.freqs, self.step_levels * n_features, self.step_freqs, self.diffs)
    }

    /// Summary values for `n_features`.
    pub fn len(&self, n_features: usize) -> usize {
        self.block_lens(n_features).iter().sum()
    }
}

/// The summary for a model of `seq_len` steps and `n_features`, within the runtime's state
/// ([`runtime::encoder::SUMMARY_SLOTS`]): per feature a budget of `SUMMARY_SLOTS / features - 1`
/// slots, of which the spectrum (2 slots per frequency, at most `seq_len / 2` frequencies) takes
/// up to half and the step distribution up to an eighth, the segments (2 slots each) what those
/// leave, and the steps' spectrum (2 slots per frequency) what is left after them.
/// Each block is capped by its maximum in `p` (0 turns it off). No segment is empty.
pub fn summary_layout(seq_len: usize, n_features: usize, p: &DecisionParams) -> SummaryLayout {
    let f = n_features.max(1);
    let budget = (runtime::encoder::SUMMARY_SLOTS / f).saturating_sub(1);
    let freqs = p.spectrum_freqs.min(seq_len / 2).min(budget / 4);
    let step_levels = if seq_len > 1 { p.step_levels.min(budget / 8) } else { 0 };
    let room = budget.saturating_sub(2 * freqs + step_levels) / 2;
    let segments = p.summary_segments.min(room).min(seq_len);
    let (segments, stride) = if segments == 0 {
        (0, 0)
    } else {
        let stride = seq_len.div_ceil(segments);
        (seq_len.div_ceil(stride), stride)
    };
    // The steps' spectrum takes only what the other blocks leave, so a tight budget (several
    // features) keeps the layout it had before the block existed.
    let left = budget.saturating_sub(2 * freqs + step_levels + 2 * segments);
    let step_freqs = if seq_len > 1 { p.step_spectrum_freqs.min(seq_len / 2).min(left / 2) } else { 0 };
    // The differences are read from the segment means: no slots of their own. Computed when
    // they are weighted or may be chosen.
    let diffs = segments >= 2 && (p.difference_weight > 0.0 || p.representation != Representation::Given);
    SummaryLayout { segments, stride, freqs, step_levels, step_freqs, diffs }
}

/// The step distribution's edges, edge-major then feature: per feature, the quantiles
/// `j / (levels + 1)`, `j = 1..=levels`, of the first differences `x_t - x_{t-1}` over all
/// `series` (time-major rows of `n_features`), so each edge splits the training steps at a
/// fixed share. Empty when `levels` is 0 or there is no step.
pub fn step_edges(series: &[&[f32]], n_features: usize, levels: usize) -> Vec<f32> {
    let f = n_features.max(1);
    let mut per_feature: Vec<Vec<f32>> = vec![Vec::new(); f];
    for x in series {
        for (a, b) in x.chunks_exact(f).zip(x.chunks_exact(f).skip(1)) {
            for k in 0..f {
                per_feature[k].push(b[k] - a[k]);
            }
        }
    }
    if levels == 0 || per_feature[0].is_empty() {
        return Vec::new();
    }
    per_feature.iter_mut().for_each(|d| d.sort_by(f32::total_cmp));
    let mut edges = Vec::with_capacity(levels * f);
    for j in 1..=levels {
        for d in &per_feature {
            let at = ((j as f64 / (levels + 1) as f64) * (d.len() - 1) as f64).round() as usize;
            edges.push(d[at.min(d.len() - 1)]);
        }
    }
    edges
}

/// What the bundle's decision section holds (see `runtime::bundle`), kept in `centroids.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Number of clusters.
    pub k: usize,
    /// Summary segments (0: none).
    pub segments: usize,
    /// Samples per summary segment.
    pub stride: usize,
    /// Spectrum frequencies per feature (absent before the spectrum: 0).
    #[serde(default)]
    pub freqs: usize,
    /// Step-distribution edges, edge-major then feature (absent before it: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_edges: Vec<f32>,
    /// Frequencies per feature of the steps' spectrum (absent before it: 0).
    #[serde(default)]
    pub step_freqs: usize,
    /// Whether the summary ends with the segment differences (absent before them: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diffs: bool,
    /// Subtracted from each raw decision value.
    pub offsets: Vec<f32>,
    /// Applied after the offset.
    pub scales: Vec<f32>,
    /// Prototypes, row-major `n x decision values`.
    pub prototypes: Vec<f32>,
    /// Cluster of each prototype.
    pub prototype_clusters: Vec<usize>,
    /// Per cluster, the distance above which a window is anomalous (absent in directories
    /// written before the anomaly flag: never; `runtime::bundle::NO_THRESHOLD` also never flags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomaly_thresholds: Vec<f32>,
}

impl Decision {
    /// Nearest centroid on the latent alone (what models before the decision tables did).
    pub fn centroids(centroids: &[f32], latent: usize) -> Self {
        let t = runtime::bundle::DecisionTables::centroids(centroids, latent);
        Decision {
            k: t.clusters.len(),
            segments: 0,
            stride: 0,
            freqs: 0,
            step_edges: Vec::new(),
            step_freqs: 0,
            diffs: false,
            offsets: t.offsets,
            scales: t.scales,
            prototypes: t.prototypes,
            prototype_clusters: t.clusters,
            anomaly_thresholds: Vec::new(),
        }
    }

    /// A stand-in with the summary's shape and one zero prototype: enough to embed and to read
    /// raw decision vectors before the clusters exist.
    pub fn placeholder(latent: usize, n_features: usize, layout: &SummaryLayout, step_edges: Vec<f32>) -> Self {
        let d = latent + layout.len(n_features);
        Decision {
            k: 1,
            segments: layout.segments,
            stride: layout.stride,
            freqs: layout.freqs,
            step_edges,
            step_freqs: layout.step_freqs,
            diffs: layout.diffs,
            offsets: vec![0.0; d],
            scales: vec![1.0; d],
            prototypes: vec![0.0; d],
            prototype_clusters: vec![0],
            anomaly_thresholds: Vec::new(),
        }
    }

    /// Values per decision vector.
    pub fn dims(&self) -> usize {
        self.offsets.len()
    }

    /// Values the decision vector of a model with `latent` and `n_features` must have.
    pub fn expected_dims(&self, latent: usize, n_features: usize) -> usize {
        let diffs = runtime::summary::diff_count(self.segments, self.diffs);
        latent + (2 * self.segments + self.freqs + self.step_freqs + diffs) * n_features + self.step_edges.len()
    }

    /// Step-distribution edges per feature.
    pub fn step_levels(&self, n_features: usize) -> usize {
        self.step_edges.len() / n_features.max(1)
    }

    /// The runtime's tables.
    pub fn tables(&self) -> runtime::bundle::DecisionTables {
        runtime::bundle::DecisionTables {
            offsets: self.offsets.clone(),
            scales: self.scales.clone(),
            prototypes: self.prototypes.clone(),
            clusters: self.prototype_clusters.clone(),
            anomaly_thresholds: if self.anomaly_thresholds.is_empty() {
                vec![runtime::bundle::NO_THRESHOLD; self.k]
            } else {
                self.anomaly_thresholds.clone()
            },
            step_edges: self.step_edges.clone(),
        }
    }
}

/// Per cluster, the `quantile` of the distances of the training series the device puts in it
/// (nearest rank: the smallest distance with at least `quantile` of the cluster's distances at
/// or below it), so about `1 - quantile` of training series are flagged. A cluster no training
/// series falls in gets [`runtime::bundle::NO_THRESHOLD`] (never flags).
pub fn anomaly_thresholds(k: usize, assigned: &[(usize, f32)], quantile: f64) -> Vec<f32> {
    let mut by_cluster = vec![Vec::new(); k];
    for &(c, d) in assigned {
        if let Some(v) = by_cluster.get_mut(c) {
            v.push(d);
        }
    }
    by_cluster
        .into_iter()
        .map(|mut d| {
            if d.is_empty() {
                return runtime::bundle::NO_THRESHOLD;
            }
            d.sort_by(f32::total_cmp);
            let rank = ((quantile * d.len() as f64).ceil() as usize).clamp(1, d.len());
            d[rank - 1]
        })
        .collect()
}

/// How clusters are found in the weighted decision vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMethod {
    /// Spectral clustering on a kNN graph (follows the shape of the data).
    Spectral,
    /// k-means (round clusters of equal spread).
    Kmeans,
}

/// How the decision vector's block weights are chosen ([`crate::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Representation {
    /// The weights as given (`--latent-weight`, `--position-weight`, ...).
    Given,
    /// Of the candidates (the given weights; the latent alone; the segment means alone; the
    /// segment differences alone; the spectra and step distribution alone), the one whose clustering has the highest
    /// modularity on its own kNN graph ([`Graph::modularity`](super::spectral::Graph::modularity)).
    Modularity,
    /// Of the same candidates, the one whose modularity exceeds most what the same clustering
    /// reaches on a Gaussian sample of the candidate's mean and covariance
    /// ([`gaussian_like`](super::null::gaussian_like)): the structure beyond a featureless
    /// cloud of the same shape and dimension.
    ModularityGap,
    /// Of the same candidates, the one whose partition agrees best (adjusted Rand index) with
    /// the consensus of all their partitions ([`consensus`](super::consensus::consensus)).
    Consensus,
    /// Of the same candidates, the one with the highest modularity plus mean agreement
    /// (adjusted Rand index) with the other candidates' partitions: clear graph structure that
    /// other views of the series corroborate.
    Corroborated,
    /// Of the same candidates, the one whose clustering is most stable under resampling
    /// ([`stability`]).
    Stability,
}

/// Per-value offsets and scales that weight the blocks of the decision vector (module docs).
/// `blocks` gives each block's length and weight, in order.
pub fn fit_scaling(raw: &[f32], dims: usize, blocks: &[(usize, f64)]) -> Result<(Vec<f32>, Vec<f32>)> {
    if dims == 0 || !raw.len().is_multiple_of(dims) || raw.is_empty() {
        return Err(Error::Param(format!("decision: {} values do not form rows of {dims}", raw.len())));
    }
    if blocks.iter().map(|b| b.0).sum::<usize>() != dims {
        return Err(Error::Param("decision: blocks do not cover the decision vector".into()));
    }
    let n = raw.len() / dims;
    let mut mean = vec![0f64; dims];
    let mut var = vec![0f64; dims];
    for row in raw.chunks_exact(dims) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    for row in raw.chunks_exact(dims) {
        for j in 0..dims {
            var[j] += (row[j] as f64 - mean[j]).powi(2);
        }
    }
    var.iter_mut().for_each(|v| *v /= n as f64);
    let mut scales = vec![0f32; dims];
    let mut at = 0;
    for &(len, w) in blocks {
        let total: f64 = var[at..at + len].iter().sum();
        let s = if total > 1e-24 { w / total.sqrt() } else { 0.0 };
        scales[at..at + len].iter_mut().for_each(|x| *x = s as f32);
        at += len;
    }
    Ok((mean.iter().map(|&m| m as f32).collect(), scales))
}

/// `(raw - offset) * scale` for every row: the vectors the prototypes live among.
pub fn apply_scaling(raw: &[f32], offsets: &[f32], scales: &[f32]) -> Vec<f32> {
    let d = offsets.len();
    raw.chunks_exact(d).flat_map(|r| r.iter().zip(offsets).zip(scales).map(|((x, o), s)| (x - o) * s)).collect()
}

/// Clusters found and the prototypes that stand for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Number of clusters.
    pub k: usize,
    /// Cluster of each training row.
    pub labels: Vec<usize>,
    /// Prototypes, row-major `n x dims`.
    pub prototypes: Vec<f32>,
    /// Cluster of each prototype.
    pub prototype_clusters: Vec<usize>,
    /// The graph's top eigenvalues, when the spectral method or the eigengap ran.
    pub eigenvalues: Vec<f64>,
    /// Modularity of `labels` on the kNN graph ([`Graph::modularity`]), when a graph was built
    /// (NaN otherwise).
    pub modularity: f64,
}

params_with_flags! {
    /// How `fit` builds the decision: the representation (summary, latent weight) and the
    /// clustering; every field is the `trainer fit` flag of the same name ([`DecisionFlags`]).
    /// Defaults measured on the dev suite (README, "Clustering quality"); a field missing from
    /// a record written before it existed reads as the default.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct DecisionParams;
    /// One flag per field of [`DecisionParams`] (how the cluster decision is built). They may
    /// change on `--resume`: a finished run resumed with other values is re-clustered without
    /// training.
    pub struct DecisionFlags;
    {
        /// Clustering of the decision vectors [spectral].
        cluster_method: ClusterMethod,
        /// Segments of the window summary (segment means and mean absolute steps), at most;
        /// 0 = none [32].
        summary_segments: usize,
        /// Spectrum frequencies per feature in the window summary, at most; 0 = none [32].
        spectrum_freqs: usize,
        /// Step-distribution edges per feature in the window summary, at most; 0 = none [16].
        step_levels: usize,
        /// Frequencies per feature of the steps' spectrum in the window summary, at most;
        /// 0 = none [32].
        step_spectrum_freqs: usize,
        /// Weight of the latent block in the decision vector [0.75, [`LATENT_WEIGHT`]].
        latent_weight: f64,
        /// Weight of each of the two segment blocks (means, mean absolute steps) [0.5].
        position_weight: f64,
        /// Weight of the spectrum block [1].
        spectrum_weight: f64,
        /// Weight of the step-distribution block [1].
        step_weight: f64,
        /// Weight of the steps' spectrum block [0.5: on the dev suite it raised or kept every
        /// set; 0.7 lowered ECG5000].
        step_spectrum_weight: f64,
        /// Weight of the segment differences block in the given weights [0.25, measured on the
        /// 16-set suite beside latent weight 0.75: docs/quality.md].
        difference_weight: f64,
        /// Neighbours per series in the kNN graph [10].
        neighbors: usize,
        /// Prototypes per cluster in the bundle, at most [16: measured, 8 left the device
        /// agreeing with the offline clusters on 97.0-97.4% of ACSF1 and ECG5000].
        prototypes_per_cluster: usize,
        /// Rounds of handing every training series to its nearest prototype's cluster and
        /// refitting the prototypes, so the offline clusters are what the device's decision
        /// reproduces (0: the clustering's own partition) [0].
        refine_rounds: usize,
        /// Largest k that `--clusters auto` considers [12].
        max_clusters: usize,
        /// Quantile of each cluster's training distances above which a window is anomalous, in
        /// (0, 1]; 1 flags only windows farther than every training series of the cluster [0.99].
        anomaly_quantile: f64,
        /// Also cluster the latent alone and keep whichever of it and latent + summary clusters
        /// more stably under resampling ([`stability`]) [false: measured, it picks the worse one
        /// on ECG5000's seed split].
        choose_summary: bool,
        /// How the blocks' weights are chosen: `given` keeps the weights above (and
        /// --choose-summary); `modularity` is a label-free choice among the given weights, the
        /// latent alone, the segment means alone, the segment differences alone, the spectra and
        /// step distribution alone; `modularity-gap` the same candidates by their modularity
        /// above a Gaussian null of their covariance; `consensus` the one agreeing best with
        /// the consensus of all their partitions; `corroborated` by modularity plus agreement
        /// with the other candidates; `stability` the same candidates, by resampling [given:
        /// measured on the 16-set suite, `modularity` raised the mean NMI 0.536 -> 0.586 but put
        /// 4 sets below raw k-means (docs/quality.md)].
        representation: Representation,
    }
}

/// Default weight of the latent block beside the summary (measured on the 16-set suite:
/// docs/quality.md).
pub const LATENT_WEIGHT: f64 = 0.75;

impl Default for DecisionParams {
    fn default() -> Self {
        DecisionParams {
            cluster_method: ClusterMethod::Spectral,
            summary_segments: 32,
            spectrum_freqs: 32,
            step_levels: 16,
            step_spectrum_freqs: 32,
            latent_weight: LATENT_WEIGHT,
            position_weight: 0.5,
            spectrum_weight: 1.0,
            step_weight: 1.0,
            step_spectrum_weight: 0.5,
            difference_weight: 0.25,
            neighbors: 10,
            prototypes_per_cluster: 16,
            refine_rounds: 0,
            max_clusters: 12,
            anomaly_quantile: 0.99,
            choose_summary: false,
            representation: Representation::Given,
        }
    }
}

impl DecisionParams {
    /// The seed notebook's clustering: k-means on the latent alone, one centroid per cluster.
    pub fn seed() -> Self {
        DecisionParams {
            cluster_method: ClusterMethod::Kmeans,
            summary_segments: 0,
            spectrum_freqs: 0,
            step_levels: 0,
            step_spectrum_freqs: 0,
            latent_weight: 1.0,
            prototypes_per_cluster: 1,
            choose_summary: false,
            representation: Representation::Given,
            ..Self::default()
        }
    }

    /// Rejects values no fit can use.
    pub fn check(&self) -> Result<()> {
        for (what, w) in [
            ("latent", self.latent_weight),
            ("position", self.position_weight),
            ("spectrum", self.spectrum_weight),
            ("step", self.step_weight),
            ("step spectrum", self.step_spectrum_weight),
            ("difference", self.difference_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Param(format!("{what} weight must be finite and >= 0, got {w}")));
            }
        }
        let summary = [
            (self.summary_segments, self.position_weight),
            (self.spectrum_freqs, self.spectrum_weight),
            (self.step_levels, self.step_weight),
            (self.step_spectrum_freqs, self.step_spectrum_weight),
            (self.summary_segments, self.difference_weight),
        ];
        if self.latent_weight == 0.0 && summary.iter().all(|&(n, w)| n == 0 || w == 0.0) {
            return Err(Error::Param("latent weight 0 with no weighted summary block leaves nothing to cluster on".into()));
        }
        if !(self.anomaly_quantile > 0.0 && self.anomaly_quantile <= 1.0) {
            return Err(Error::Param(format!("anomaly quantile must be in (0, 1], got {}", self.anomaly_quantile)));
        }
        if self.neighbors == 0 || self.prototypes_per_cluster == 0 || self.max_clusters < 2 {
            return Err(Error::Param("neighbors and prototypes per cluster must be >= 1, max clusters >= 2".into()));
        }
        Ok(())
    }
}

/// For each row of `x`, the majority cluster of its `n_neighbors` nearest rows of `train`
/// (ties: the lowest cluster): the graph clustering's own out-of-sample rule, against which
/// the device's prototype decision on held-out series is compared.
pub fn knn_vote(train: &[f32], labels: &[usize], k: usize, x: &[f32], dims: usize, n_neighbors: usize) -> Vec<usize> {
    use rayon::prelude::*;
    let rows: Vec<&[f32]> = train.chunks_exact(dims).collect();
    let nn = n_neighbors.clamp(1, rows.len().max(1));
    x.par_chunks_exact(dims)
        .map(|q| {
            let mut votes = vec![0usize; k];
            for i in nearest_rows(&rows, q, nn) {
                votes[labels[i]] += 1;
            }
            (0..k).max_by(|&a, &b| votes[a].cmp(&votes[b]).then(b.cmp(&a))).unwrap_or(0)
        })
        .collect()
}

/// Settings of [`cluster`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterParams {
    /// Number of clusters; `None` picks it by the eigengap of the kNN graph.
    pub k: Option<usize>,
    /// Largest k the eigengap considers.
    pub k_max: usize,
    /// Method.
    pub method: ClusterMethod,
    /// Neighbours in the kNN graph.
    pub n_neighbors: usize,
    /// k-means restarts.
    pub n_init: usize,
    /// Prototypes per cluster at most.
    pub per_cluster: usize,
    /// Rounds of handing the training series to their nearest prototype's cluster and
    /// refitting the prototypes.
    pub refine_rounds: usize,
    /// Seed.
    pub seed: u64,
}

impl ClusterParams {
    /// The clustering `dp` asks for, with `k` clusters (`None`: by the eigengap), `n_init`
    /// k-means restarts and `seed`.
    pub fn of(dp: &DecisionParams, k: Option<usize>, n_init: usize, seed: u64) -> Self {
        ClusterParams {
            k,
            k_max: dp.max_clusters,
            method: dp.cluster_method,
            n_neighbors: dp.neighbors,
            n_init,
            per_cluster: dp.prototypes_per_cluster,
            refine_rounds: dp.refine_rounds,
            seed,
        }
    }
}

/// Clusters the weighted decision vectors `x` (row-major `n x dims`) and fits prototypes.
pub fn cluster(x: &[f32], dims: usize, p: &ClusterParams) -> Result<Clustering> {
    let n = x.len().checked_div(dims).unwrap_or(0);
    if n == 0 {
        return Err(Error::Param("cannot cluster zero series".into()));
    }
    let sp = SpectralParams { n_neighbors: p.n_neighbors, n_init: p.n_init, seed: p.seed };
    let needs_graph = p.method == ClusterMethod::Spectral || p.k.is_none();
    let graph = if needs_graph { Some(Graph::knn(x, dims, p.n_neighbors)?) } else { None };
    let (k, mut eigenvalues) = match (p.k, &graph) {
        (Some(k), _) => (k, Vec::new()),
        (None, Some(g)) => eigengap_k(g, p.k_max.min(n - 1).max(2), p.seed),
        (None, None) => unreachable!("a graph is built whenever k is not given"),
    };
    if k == 0 || k > n {
        return Err(Error::Param(format!("cannot make {k} clusters from {n} training series")));
    }
    let mut labels = match (p.method, &graph) {
        (ClusterMethod::Spectral, Some(g)) => {
            if eigenvalues.is_empty() {
                eigenvalues = g.top_eigen(k + 1, p.seed).0;
            }
            spectral_on(g, k, &sp)?
        }
        _ => KMeans::fit(x, dims, &KMeansParams { n_init: p.n_init, ..KMeansParams::new(k, p.seed) })?.labels,
    };
    let (mut prototypes, mut prototype_clusters) = fit_prototypes(x, dims, &labels, k, p)?;
    // The device decides by the nearest prototype: each round hands every training series to
    // its nearest prototype's cluster and refits the prototypes, so the clusters become what
    // the device can reproduce (k-means' alternation with several centres per cluster).
    for _ in 0..p.refine_rounds {
        let nearest = nearest_prototype_clusters(x, dims, &prototypes, &prototype_clusters)?;
        if nearest == labels {
            break;
        }
        labels = nearest;
        (prototypes, prototype_clusters) = fit_prototypes(x, dims, &labels, k, p)?;
    }
    let modularity = graph.as_ref().map_or(f64::NAN, |g| g.modularity(&labels, k));
    Ok(Clustering { k, labels, prototypes, prototype_clusters, eigenvalues, modularity })
}

/// Up to `p.per_cluster` k-means centres inside each of the `k` clusters of `labels`, and the
/// cluster of each.
fn fit_prototypes(x: &[f32], dims: usize, labels: &[usize], k: usize, p: &ClusterParams) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut prototypes = Vec::new();
    let mut prototype_clusters = Vec::new();
    for c in 0..k {
        let rows: Vec<f32> = x.chunks_exact(dims).zip(labels).filter(|(_, &l)| l == c).flat_map(|(r, _)| r.iter().copied()).collect();
        let m = rows.len() / dims;
        if m == 0 {
            // An empty cluster (possible when k-means on the embedding leaves one empty) gets no
            // prototype and so no device window.
            continue;
        }
        let q = p.per_cluster.clamp(1, m);
        let km = KMeans::fit(&rows, dims, &KMeansParams { n_init: 3, ..KMeansParams::new(q, p.seed.wrapping_add(c as u64)) })?;
        prototypes.extend(&km.centroids);
        prototype_clusters.extend(std::iter::repeat_n(c, q));
    }
    Ok((prototypes, prototype_clusters))
}

/// The cluster of each row's nearest prototype, by the device's own decision
/// ([`runtime::assign::nearest`]).
fn nearest_prototype_clusters(x: &[f32], dims: usize, prototypes: &[f32], clusters: &[usize]) -> Result<Vec<usize>> {
    use rayon::prelude::*;
    let clusters: Vec<f32> = clusters.iter().map(|&c| c as f32).collect();
    x.par_chunks_exact(dims)
        .map(|r| {
            runtime::assign::nearest(|j| r[j], dims, prototypes, &clusters)
                .map(|a| a.cluster)
                .map_err(|e| Error::Param(format!("decision: {e}")))
        })
        .collect()
}

/// Largest subsample [`stability`] clusters.
pub const STABILITY_ROWS: usize = 2000;

/// How reproducible the clustering of `x` is (Ben-Hur et al. 2002, Lange et al. 2004): over
/// `rounds` pairs of seeded 80% subsamples (at most [`STABILITY_ROWS`] rows), each clustered on its own with `k` clusters, the
/// mean adjusted Rand index of the two labelings on the series both contain. Structure that is
/// there survives resampling; a partition of a featureless cloud does not. Labels play no part.
pub fn stability(x: &[f32], dims: usize, k: usize, p: &ClusterParams, rounds: usize) -> Result<f64> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let n = x.len().checked_div(dims).unwrap_or(0);
    // At most STABILITY_ROWS per subsample: large sets stay affordable (each subsample is
    // clustered on its own), and a few thousand rows estimate the agreement well.
    let m = ((n * 4) / 5).min(STABILITY_ROWS);
    if m < 2 * k.max(1) || rounds == 0 {
        return Ok(f64::NAN);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed ^ 0x5eed_57ab);
    let sub = ClusterParams { k: Some(k), per_cluster: 1, ..*p };
    let mut total = 0.0;
    for _ in 0..rounds {
        let mut draw = || -> Result<(Vec<usize>, Vec<usize>)> {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            idx.truncate(m);
            idx.sort_unstable();
            let rows: Vec<f32> = idx.iter().flat_map(|&i| x[i * dims..(i + 1) * dims].iter().copied()).collect();
            Ok((idx, cluster(&rows, dims, &sub)?.labels))
        };
        let (ia, la) = draw()?;
        let (ib, lb) = draw()?;
        let mut pos_b = vec![usize::MAX; n];
        ib.iter().enumerate().for_each(|(j, &i)| pos_b[i] = j);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (j, &i) in ia.iter().enumerate() {
            if pos_b[i] != usize::MAX {
                a.push(la[j]);
                b.push(lb[pos_b[i]]);
            }
        }
        total += super::metrics::Contingency::new(&a, &b).ari();
    }
    Ok(total / rounds as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_threshold_is_the_nearest_rank_quantile_per_cluster() {
        // Cluster 0: distances 1..=100; cluster 1: one series; cluster 2: none.
        let mut a: Vec<(usize, f32)> = (1..=100).rev().map(|d| (0, d as f32)).collect();
        a.push((1, 7.0));
        let t = anomaly_thresholds(3, &a, 0.99);
        assert_eq!(t, vec![99.0, 7.0, f32::MAX]);
        assert_eq!(anomaly_thresholds(1, &a[..100], 1.0), vec![100.0]);
        assert_eq!(anomaly_thresholds(1, &a[..100], 0.5), vec![50.0]);
    }

    #[test]
    fn stability_is_high_for_real_clusters_and_low_for_a_cloud() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let blobs: Vec<f32> = (0..300)
            .flat_map(|i| {
                let g = (i % 3) as f32;
                let mut e = || rng.gen::<f32>() - 0.5;
                [8.0 * g + e(), -4.0 * g + e()]
            })
            .collect();
        let cloud: Vec<f32> = (0..600).map(|_| rng.gen::<f32>()).collect();
        let p = ClusterParams {
            k: Some(3),
            k_max: 8,
            method: ClusterMethod::Spectral,
            n_neighbors: 10,
            n_init: 3,
            per_cluster: 1,
            refine_rounds: 0,
            seed: 2,
        };
        let (a, b) = (stability(&blobs, 2, 3, &p, 3).unwrap(), stability(&cloud, 2, 3, &p, 3).unwrap());
        assert!(a > 0.99, "three separated blobs: {a}");
        assert!(b < a - 0.1, "a uniform square: {b} (blobs {a})");
    }

    #[test]
    fn summary_fits_the_state() {
        let d = DecisionParams::default();
        let lay = |t, f, p: &DecisionParams| {
            let l = summary_layout(t, f, p);
            (l.segments, l.stride, l.freqs, l.step_levels, l.step_freqs)
        };
        // Slots the runtime's summary of layout `l` needs.
        let slots = |l: &SummaryLayout, features: usize, period: usize| {
            let edges = vec![0.0; l.step_levels * features];
            let shape = runtime::summary::Shape {
                features,
                segments: l.segments,
                stride: l.stride,
                freqs: l.freqs,
                step_freqs: l.step_freqs,
                period,
                edges: &edges,
                diffs: l.diffs,
            };
            assert_eq!(shape.len(), l.len(features));
            shape.slots()
        };
        assert_eq!(lay(140, 1, &d), (28, 5, 32, 16, 32));
        assert_eq!(lay(2000, 1, &d), (32, 63, 32, 16, 32));
        // Short: at most seq_len / 2 frequencies in both spectra.
        assert_eq!(lay(10, 1, &d), (10, 1, 5, 16, 5));
        // Three features: 16 segments, 21 frequencies, 10 edges fill 255 of 256 slots and leave
        // nothing for the steps' spectrum (the layout before it existed).
        let l = summary_layout(300, 3, &d);
        assert_eq!((l.segments, l.freqs, l.step_levels, l.step_freqs), (16, 21, 10, 0));
        assert_eq!(slots(&l, 3, 300), 255);
        // Two features at 140 steps: 24 segments, 31 frequencies and 15 edges leave one steps'
        // frequency; all 256 slots used.
        assert_eq!(lay(140, 2, &d), (24, 6, 31, 15, 1));
        assert_eq!(slots(&summary_layout(140, 2, &d), 2, 140), runtime::encoder::SUMMARY_SLOTS);
        assert_eq!(lay(300, 200, &d), (0, 0, 0, 0, 0));
        let off = DecisionParams { summary_segments: 0, spectrum_freqs: 0, step_levels: 0, step_spectrum_freqs: 0, ..d };
        assert_eq!(lay(300, 1, &off), (0, 0, 0, 0, 0));
        assert_eq!(lay(300, 1, &DecisionParams { summary_segments: 0, ..d }), (0, 0, 32, 16, 32));
    }

    #[test]
    fn step_edges_split_the_training_steps_at_fixed_shares() {
        // Feature 0 steps 1..=99 (x_t = t(t+1)/2), feature 1 constant: edges at the quartiles.
        let x: Vec<f32> = (0..100).flat_map(|t| [(t * (t + 1) / 2) as f32, 5.0]).collect();
        let e = step_edges(&[&x], 2, 3);
        // Sorted steps d[i] = i + 1; edge j at d[round(j / 4 * 98)] = d[25], d[49], d[74].
        assert_eq!(e, vec![26.0, 0.0, 50.0, 0.0, 75.0, 0.0]);
        assert!(step_edges(&[&x], 2, 0).is_empty());
        assert!(step_edges(&[&x[..2]], 2, 3).is_empty(), "one sample has no step");
    }

    #[test]
    fn each_block_gets_its_weight() {
        // Block A: 2 dims with variance 4 each; block B: 1 dim with variance 100.
        let raw: Vec<f32> = (0..100)
            .flat_map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                [5.0 + 2.0 * s, -2.0 * s, 10.0 * s]
            })
            .collect();
        let (off, sc) = fit_scaling(&raw, 3, &[(2, 0.5), (1, 1.0)]).unwrap();
        assert!((off[0] - 5.0).abs() < 1e-6 && off[1].abs() < 1e-6);
        let x = apply_scaling(&raw, &off, &sc);
        let total = |j0: usize, j1: usize| x.chunks(3).map(|r| r[j0..j1].iter().map(|v| v * v).sum::<f32>()).sum::<f32>() / 100.0;
        assert!((total(0, 2) - 0.25).abs() < 1e-5, "{}", total(0, 2));
        assert!((total(2, 3) - 1.0).abs() < 1e-5);
        assert!(fit_scaling(&raw, 3, &[(2, 1.0)]).is_err());
    }

    #[test]
    fn prototypes_reproduce_clusters_and_auto_k_finds_them() {
        // Three well-separated blobs in 3-D.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f32> = (0..150)
            .flat_map(|i| {
                let g = (i % 3) as f32;
                let mut e = || rng.gen::<f32>() - 0.5;
                [10.0 * g + e(), -5.0 * g + e(), e()]
            })
            .collect();
        let p = ClusterParams {
            k: None,
            k_max: 8,
            method: ClusterMethod::Spectral,
            n_neighbors: 10,
            n_init: 5,
            per_cluster: 4,
            refine_rounds: 0,
            seed: 1,
        };
        let c = cluster(&x, 3, &p).unwrap();
        assert_eq!(c.k, 3, "{:?}", c.eigenvalues);
        assert_eq!(c.prototype_clusters.len(), 12);
        let nearest: Vec<usize> = x
            .chunks(3)
            .map(|r| {
                let d: Vec<f32> = c.prototypes.chunks(3).map(|q| q.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum()).collect();
                c.prototype_clusters[(0..d.len()).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap()]
            })
            .collect();
        assert_eq!(nearest, c.labels);
    }

    #[test]
    fn refinement_makes_the_clusters_what_the_prototypes_decide() {
        // Two concentric rings: spectral clustering separates them, one centroid per ring cannot
        // (both centroids sit near the middle).
        let x: Vec<f32> = (0..200)
            .flat_map(|i| {
                let (r, a) = (if i % 2 == 0 { 1.0f32 } else { 3.0 }, i as f32 * 0.37);
                [r * a.cos(), r * a.sin()]
            })
            .collect();
        let p = ClusterParams {
            k: Some(2),
            k_max: 4,
            method: ClusterMethod::Spectral,
            n_neighbors: 8,
            n_init: 5,
            per_cluster: 1,
            refine_rounds: 0,
            seed: 1,
        };
        let agree = |c: &Clustering| {
            let near = nearest_prototype_clusters(&x, 2, &c.prototypes, &c.prototype_clusters).unwrap();
            near.iter().zip(&c.labels).filter(|(a, b)| a == b).count()
        };
        let plain = cluster(&x, 2, &p).unwrap();
        assert!(agree(&plain) < 190, "one centroid per ring already reproduces the rings: {}", agree(&plain));
        let refined = cluster(&x, 2, &ClusterParams { refine_rounds: 20, ..p }).unwrap();
        assert_eq!(agree(&refined), 200);
    }
}
