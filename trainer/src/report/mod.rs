//! Seeing the result: PCA and t-SNE scatter plots of the latent means (by cluster and by label),
//! the loss curves, example series per cluster beside the decoded centroid, and the run report
//! (`report.json`, and `report.html`, one page that shows the plots and the metrics).

pub mod pca;
pub mod plot;
pub mod tsne;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::artifacts::{PLOTS, REPORT_HTML, REPORT_JSON};
use crate::cluster::decision::ClusterMethod;
use crate::cluster::ClusterScores;
use crate::data::Series;
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_json};
use crate::model::Vrae;
use crate::run_record::RunRecord;
use crate::train::Stop;
use crate::train_log::EpochLog;
use pca::Pca;
use plot::{save, ClusterExamples, LossCurve, Scatter};
use tsne::{tsne, TsneParams};

/// Member series drawn per cluster in the examples grid (those nearest the centroid).
pub const EXAMPLES_PER_CLUSTER: usize = 5;

/// What the plots are made of.
pub struct PlotInput<'a> {
    /// Latent means, row-major `n x dim`.
    pub latents: &'a [f32],
    /// Latent dimension.
    pub dim: usize,
    /// Cluster of each row and the distance to its centroid.
    pub clusters: &'a [(usize, f32)],
    /// Number of clusters.
    pub k: usize,
    /// Encoded label of each row and the label names, when the data has labels.
    pub labels: Option<(&'a [usize], &'a [String])>,
    /// The series (prepared as the model saw them).
    pub series: &'a [Series],
    /// Values per time step.
    pub n_features: usize,
    /// Decoder output for each centroid (time-major).
    pub centroid_series: &'a [Vec<f32>],
    /// Training log, for the loss curve.
    pub log: Option<&'a [EpochLog]>,
    /// t-SNE settings.
    pub tsne: TsneParams,
}

/// What was drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlotInfo {
    /// Image files, relative to the model directory (PNG and SVG of each figure).
    pub files: Vec<String>,
    /// Points in the scatter plots.
    pub points: usize,
    /// Share of latent variance on the two PCA axes.
    pub pca_variance_ratio: [f64; 2],
    /// t-SNE perplexity used.
    pub tsne_perplexity: f32,
    /// t-SNE iterations.
    pub tsne_iterations: usize,
    /// Whether t-SNE used Barnes-Hut.
    pub tsne_barnes_hut: bool,
    /// Seconds spent in t-SNE.
    pub tsne_seconds: f64,
}

/// Draws every figure into `dir`; file names in the result are relative to `rel_to`.
pub fn write_plots(dir: &Path, rel_to: &Path, inp: &PlotInput<'_>) -> Result<PlotInfo> {
    let n = inp.clusters.len();
    if inp.latents.len() != n * inp.dim || inp.series.len() != n || inp.centroid_series.len() != inp.k {
        return Err(Error::Mismatch(format!(
            "plot input: {} latent values, {} assignments, {} series, {} centroids (k = {})",
            inp.latents.len(),
            n,
            inp.series.len(),
            inp.centroid_series.len(),
            inp.k
        )));
    }
    let mut files = Vec::new();
    let mut keep = |paths: [std::path::PathBuf; 2]| {
        for p in paths {
            let rel = p.strip_prefix(rel_to).unwrap_or(&p);
            files.push(rel.to_string_lossy().replace('\\', "/"));
        }
    };
    let cluster_of: Vec<usize> = inp.clusters.iter().map(|c| c.0).collect();
    let cluster_names: Vec<String> = (0..inp.k).map(|c| format!("cluster {c}")).collect();

    let pca = Pca::fit(inp.latents, inp.dim)?;
    let pts = pca.transform(inp.latents);
    let axes =
        |name: &str, r: [f64; 2]| [format!("{name} 1 ({:.0}% of variance)", r[0] * 100.0), format!("{name} 2 ({:.0}%)", r[1] * 100.0)];
    let t0 = Instant::now();
    let ts = tsne(inp.latents, inp.dim, &inp.tsne)?;
    let tsne_seconds = t0.elapsed().as_secs_f64();
    let tsne_axes = ["t-SNE 1".to_string(), "t-SNE 2".to_string()];
    let subtitle = format!("perplexity {}", ts.perplexity);
    for (what, points, ax) in [("pca", &pts, axes("PC", pca.ratio)), ("tsne", &ts.points, tsne_axes)] {
        let title = |by: &str| match what {
            "pca" => format!("PCA of the latent means, by {by}"),
            _ => format!("t-SNE of the latent means ({subtitle}), by {by}"),
        };
        let fig = Scatter { title: title("cluster"), axes: ax.clone(), points, groups: &cluster_of, names: &cluster_names };
        keep(save(&fig, &dir.join(format!("{what}_clusters")))?);
        if let Some((labels, names)) = inp.labels {
            let names: Vec<String> = names.iter().map(|l| format!("label {l}")).collect();
            let fig = Scatter { title: title("true label"), axes: ax, points, groups: labels, names: &names };
            keep(save(&fig, &dir.join(format!("{what}_labels")))?);
        }
    }
    if let Some(log) = inp.log.filter(|l| !l.is_empty()) {
        keep(save(&LossCurve { log }, &dir.join("loss"))?);
    }
    let members: Vec<(Vec<&[f32]>, usize)> = (0..inp.k)
        .map(|c| {
            let mut idx: Vec<usize> = (0..n).filter(|&i| inp.clusters[i].0 == c).collect();
            let size = idx.len();
            idx.sort_by(|&a, &b| inp.clusters[a].1.total_cmp(&inp.clusters[b].1));
            (idx.iter().take(EXAMPLES_PER_CLUSTER).map(|&i| inp.series[i].values.as_slice()).collect(), size)
        })
        .collect();
    let fig = ClusterExamples { members: &members, centroids: inp.centroid_series, n_features: inp.n_features };
    keep(save(&fig, &dir.join("examples"))?);
    Ok(PlotInfo {
        files,
        points: n,
        pca_variance_ratio: pca.ratio,
        tsne_perplexity: ts.perplexity,
        tsne_iterations: inp.tsne.iterations,
        tsne_barnes_hut: ts.barnes_hut,
        tsne_seconds,
    })
}

/// The decoder's output for each centroid: `k` time-major series of `seq_len x n_features`.
pub fn decode_centroids(vrae: &Vrae, centroids: &[f32], dev: &Device) -> Result<Vec<Vec<f32>>> {
    let c = vrae.config();
    let (l, t, f) = (c.latent_length, c.seq_len, c.n_features);
    if centroids.is_empty() || !centroids.len().is_multiple_of(l) {
        return Err(Error::Mismatch(format!("{} centroid values are not rows of {l}", centroids.len())));
    }
    let k = centroids.len() / l;
    let z = Tensor::from_vec(centroids.to_vec(), (k, l), dev)?;
    // [T, k, F] -> per centroid, time-major.
    let y = vrae.decode(&z, t)?.transpose(0, 1)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    Ok(y.chunks(t * f).map(<[f32]>::to_vec).collect())
}

/// One candidate of the label-free choice in `metrics.json` ([`crate::decide::Candidate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScores {
    /// Candidate name.
    pub name: String,
    /// Modularity of its partition on its kNN graph.
    pub modularity: f64,
    /// The same clustering's modularity on a Gaussian sample of its mean and covariance
    /// (`modularity-gap` only).
    pub null_gaussian: Option<f64>,
    /// The same with its columns permuted on their own (`modularity-gap` only).
    pub null_permuted: Option<f64>,
    /// Mean adjusted Rand index of its partition with the other candidates'.
    #[serde(default)]
    pub agreement: Option<f64>,
    /// NMI of its partition against the labels (training part), when there are labels.
    pub nmi: Option<f64>,
}

/// `metrics.json`: cluster quality of the device's decision and of k-means on the raw series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of clusters.
    pub k: usize,
    /// How k was chosen: "given", "labels" or "eigengap".
    #[serde(default)]
    pub k_from: String,
    /// Clustering method of the decision vectors.
    #[serde(default = "default_method")]
    pub method: ClusterMethod,
    /// The device's decision (nearest prototype) on the training part (labelled data only).
    pub vrae_train: Option<ClusterScores>,
    /// The device's decision on the held-out part.
    pub vrae_holdout: Option<ClusterScores>,
    /// The offline clustering itself on the training part.
    #[serde(default)]
    pub offline_train: Option<ClusterScores>,
    /// Share of training series where the device's decision equals the offline cluster.
    #[serde(default)]
    pub agreement_train: f64,
    /// Share of held-out series where the device's decision equals the majority cluster of
    /// their nearest training series (the graph's out-of-sample rule); 1 when none is held out.
    #[serde(default)]
    pub agreement_holdout: f64,
    /// Prototypes in the bundle.
    #[serde(default)]
    pub prototypes: usize,
    /// Resampling stability (mean ARI) of each decision vector considered, when choosing
    /// (`None`: too few series to resample; the first candidate is kept).
    #[serde(default)]
    pub stability: Vec<(String, Option<f64>)>,
    /// Modularity of each decision vector's clustering considered by the label-free choice of
    /// representation (`--representation modularity`).
    #[serde(default)]
    pub modularity: Vec<(String, Option<f64>)>,
    /// Every candidate the label-free choice scored: modularity, its nulls and, with labels,
    /// how its own partition scores (labels chose nothing).
    #[serde(default)]
    pub candidates: Vec<CandidateScores>,
    /// The decision vector kept (`given`, `latent`, `level`, `differences`, `phase-free`;
    /// `latent+summary` or
    /// `latent` without a choice).
    #[serde(default)]
    pub representation: String,
    /// Training series the device flags as anomalous (beyond their cluster's threshold).
    #[serde(default)]
    pub anomalous_train: usize,
    /// Held-out series the device flags as anomalous.
    #[serde(default)]
    pub anomalous_holdout: usize,
    /// The kNN graph's top eigenvalues (the eigengap curve), when computed.
    #[serde(default)]
    pub eigenvalues: Vec<f64>,
    /// Seconds spent building the decision (embedding the training series included).
    #[serde(default)]
    pub cluster_seconds: f64,
    /// k-means on the raw series, training part.
    pub raw_train: Option<ClusterScores>,
    /// k-means on the raw series, held-out part.
    pub raw_holdout: Option<ClusterScores>,
    /// Median seconds per training epoch.
    pub seconds_per_epoch: f64,
    /// Total training seconds.
    pub train_seconds: f64,
    /// Training series per cluster.
    pub cluster_sizes: Vec<usize>,
    /// How training ended.
    #[serde(default)]
    pub stop: Option<Stop>,
}

fn default_method() -> ClusterMethod {
    ClusterMethod::Kmeans
}

/// `report.json`: everything about one `trainer fit` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run, as `config.json` records it.
    pub run: RunRecord,
    /// Per-epoch losses and times.
    pub epochs: Vec<EpochLog>,
    /// Scores (VRAE and raw k-means), cluster sizes and timings.
    pub metrics: Metrics,
    /// Figures (absent with `fit --no-plots` or when they could not be drawn).
    pub plots: Option<PlotInfo>,
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write_report(dir: &Path, report: &Report) -> Result<()> {
    write_json(&dir.join(REPORT_JSON), report)?;
    write_atomic(&dir.join(REPORT_HTML), render_html(report).as_bytes())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The one-page HTML report (images referenced from `plots/`, no scripts, no network).
pub fn render_html(r: &Report) -> String {
    let m = &r.metrics;
    let p = &r.run.params;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>VRAE run report</title>\n<style>\
body{{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}\
td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}th{{background:#eee}}td:first-child,th:first-child{{text-align:left}}\
img{{max-width:100%;border:1px solid #ddd;margin:6px 0}}.grid{{display:grid;grid-template-columns:1fr 1fr;gap:8px}}\
</style></head><body>\n<h1>VRAE run report</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p id=\"summary\">{} series ({} trained on, {} held out), {} feature(s), {} steps; {} encoder, {} hidden x {} layer(s), latent {}; \
{} epochs in {:.1} s ({:.2} s/epoch); k = {}.</p>",
        r.run.data.n_series,
        r.run.data.n_train,
        r.run.data.n_holdout,
        r.run.model.n_features,
        r.run.model.seq_len,
        format!("{:?}", r.run.model.cell).to_uppercase(),
        r.run.model.hidden_size,
        r.run.model.hidden_layer_depth,
        r.run.model.latent_length,
        r.epochs.len(),
        m.train_seconds,
        m.seconds_per_epoch,
        m.k
    );
    h.push_str("<h2>Cluster quality</h2>\n");
    if m.vrae_train.is_some() {
        h.push_str("<table id=\"metrics\"><tr><th>clusters vs labels</th><th>ARI</th><th>NMI</th><th>purity</th></tr>\n");
        for (name, s) in [
            ("VRAE + k-means, train", m.vrae_train),
            ("VRAE + k-means, held out", m.vrae_holdout),
            ("raw k-means, train", m.raw_train),
            ("raw k-means, held out", m.raw_holdout),
        ] {
            match s {
                Some(s) => {
                    let _ = writeln!(h, "<tr><td>{name}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>", s.ari, s.nmi, s.purity);
                }
                None => {
                    let _ = writeln!(h, "<tr><td>{name}</td><td>-</td><td>-</td><td>-</td></tr>");
                }
            }
        }
        h.push_str("</table>\n");
    } else {
        h.push_str("<p>The data has no labels, so there are no scores against labels.</p>\n");
    }
    let sizes: Vec<String> = m.cluster_sizes.iter().enumerate().map(|(c, n)| format!("cluster {c}: {n}")).collect();
    let _ = writeln!(h, "<p>Training series per cluster: {}.</p>", esc(&sizes.join(", ")));
    let img = |h: &mut String, stem: &str, alt: &str| {
        let svg = format!("{PLOTS}/{stem}.svg");
        if r.plots.as_ref().is_some_and(|pl| pl.files.contains(&svg)) {
            let _ = writeln!(h, "<div><img src=\"{svg}\" alt=\"{}\"></div>", esc(alt));
        }
    };
    h.push_str("<h2>Training</h2>\n");
    img(&mut h, "loss", "training loss per epoch");
    h.push_str("<h2>Latent space</h2>\n<div class=\"grid\">\n");
    img(&mut h, "pca_clusters", "PCA by cluster");
    img(&mut h, "pca_labels", "PCA by label");
    img(&mut h, "tsne_clusters", "t-SNE by cluster");
    img(&mut h, "tsne_labels", "t-SNE by label");
    h.push_str("</div>\n");
    match &r.plots {
        Some(pl) => {
            let _ = writeln!(
                h,
                "<p>PCA axes hold {:.0}% and {:.0}% of the latent variance; t-SNE: perplexity {}, {} iterations{}, {:.1} s.</p>",
                pl.pca_variance_ratio[0] * 100.0,
                pl.pca_variance_ratio[1] * 100.0,
                pl.tsne_perplexity,
                pl.tsne_iterations,
                if pl.tsne_barnes_hut { ", Barnes-Hut" } else { ", exact" },
                pl.tsne_seconds
            );
        }
        None => {
            h.push_str("<p>Figures were not drawn for this run (<code>--no-plots</code>, or too few series; see the run's warnings).</p>\n")
        }
    }
    h.push_str("<h2>Clusters</h2>\n");
    let _ = writeln!(h, "<p>Up to {EXAMPLES_PER_CLUSTER} series nearest each centroid (coloured) and the decoder's reconstruction of the centroid (black).</p>");
    img(&mut h, "examples", "example series per cluster");
    h.push_str("<h2>Settings</h2>\n<table id=\"params\"><tr><th>parameter</th><th>value</th></tr>\n");
    let params = serde_json::to_value(p).unwrap_or_default();
    if let Some(obj) = params.as_object() {
        for (k, v) in obj {
            let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v.to_string().trim_matches('"')));
        }
    }
    let _ = writeln!(h, "</table>\n<p>Data: {}.</p>\n</body></html>", esc(&r.run.data.sources.join(", ")));
    h
}
