//! `trainer fit` end to end: prepare data -> split -> train -> save -> embed -> decision vectors
//! (latent + window summary) -> clusters (spectral or k-means) -> prototypes -> the device's
//! decision on every series -> scores against labels (with raw-series k-means as the baseline)
//! -> save -> bundle + ONNX export.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::artifacts::{self, Centroids, DataInfo, LoadedModel, RunConfig, Staging, FORMAT_VERSION};
use crate::checkpoint::{self, fingerprint, Checkpoint, CheckpointMeta, RunSettings, CHECKPOINT, CHECKPOINT_VERSION};
use crate::cluster::decision::{apply_scaling, knn_vote, ClusterParams, DecisionParams};
use crate::cluster::metrics::encode_labels;
use crate::cluster::{ClusterScores, Contingency, KMeans, KMeansParams};
use crate::data::prep::{normalize, resample_all, split, Normalization};
use crate::data::{Dataset, Series};
use crate::decide::{check_clusters, fit_decision, latent_means, FittedDecision};
use crate::embed::NativeEncoder;
use crate::error::{Error, Result};
use crate::export::{write_bundle, write_encoder_onnx};
use crate::files::{write_atomic, write_json};
use crate::model::{ModelConfig, Vrae};
use crate::params::VraeValidParams;
use crate::progress::{Progress, Reporter};
use crate::report::tsne::TsneParams;
use crate::report::{decode_centroids, write_plots, write_report, Metrics, PlotInput, Report, ReportData};
use crate::train::{train_resumable, EpochEnd, BEST_PREFIX};
use crate::train_log::{write_training_log, EpochLog};

/// Everything `fit` needs besides the data.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Validated hyper-parameters (their `seed` drives the split and k-means too).
    pub params: VraeValidParams,
    /// Fraction of series held out from training, in [0, 1).
    pub holdout: f64,
    /// Per-series normalisation.
    pub normalization: Normalization,
    /// Number of clusters; `None` takes the number of distinct labels, or picks k by the
    /// eigengap when the data has none.
    pub clusters: Option<usize>,
    /// Pick k by the eigengap even when the data has labels.
    pub auto_clusters: bool,
    /// Representation and clustering of the cluster decision.
    pub decision: DecisionParams,
    /// k-means restarts.
    pub n_init: usize,
    /// Where progress goes (training, notes); the binary draws it.
    pub progress: Reporter,
    /// Write `checkpoint.safetensors` every this many epochs (and after the last); 0 = never.
    pub checkpoint_every: usize,
    /// Continue from this checkpoint (taken by a run with the same settings and data).
    pub resume: Option<Box<Checkpoint>>,
    /// Draw the figures of the report (PCA, t-SNE, loss, examples) into `plots/`.
    pub plots: bool,
    /// t-SNE settings for the report's figures (its seed is replaced by the run's).
    pub tsne: TsneParams,
}

impl FitOptions {
    /// `params` with the CLI's defaults: 10% held out, no extra normalisation, k = number of
    /// labels, 10 k-means restarts, progress to nobody, a checkpoint every epoch, a fresh start.
    pub fn new(params: VraeValidParams) -> Self {
        FitOptions {
            params,
            holdout: 0.1,
            normalization: Normalization::None,
            clusters: None,
            auto_clusters: false,
            decision: DecisionParams::default(),
            n_init: 10,
            progress: Reporter::default(),
            checkpoint_every: 1,
            resume: None,
            plots: true,
            tsne: TsneParams::default(),
        }
    }
}

/// What `fit` produced.
#[derive(Debug, Clone)]
pub struct FitSummary {
    /// Output directory.
    pub dir: PathBuf,
    /// Scores and timings.
    pub metrics: Metrics,
    /// Per-epoch log.
    pub log: Vec<EpochLog>,
    /// Series trained on / held out.
    pub n_train: usize,
    /// Series held out.
    pub n_holdout: usize,
}

fn rows(series: &[Series]) -> Vec<f32> {
    series.iter().flat_map(|s| s.values.iter().copied()).collect()
}

fn scores(truth: &[usize], idx: &[usize], pred: &[usize]) -> Option<ClusterScores> {
    if idx.is_empty() {
        return None;
    }
    let t: Vec<usize> = idx.iter().map(|&i| truth[i]).collect();
    Some(Contingency::new(&t, pred).scores())
}

/// Trains, clusters and writes every artifact into `out`, replacing its previous content in one
/// step at the end; checkpoints go to `out` during training.
pub fn fit(mut ds: Dataset, opts: &FitOptions, out: &Path, dev: &Device) -> Result<FitSummary> {
    let p = &opts.params;
    if !(0.0..1.0).contains(&opts.holdout) {
        return Err(Error::Param(format!("holdout must be in [0, 1), got {}", opts.holdout)));
    }
    if ds.is_empty() {
        return Err(Error::Param("no series to train on".into()));
    }
    if opts.normalization == Normalization::Zscore && ds.n_features > runtime::encoder::MAX_ZSCORE_FEATURES {
        return Err(Error::Param(format!(
            "--normalize zscore: the runtime z-normalises at most {} features per step, the data has {}",
            runtime::encoder::MAX_ZSCORE_FEATURES,
            ds.n_features
        )));
    }
    let length_range = (ds.series.iter().map(|s| s.len).min().unwrap_or(0), ds.max_len());
    normalize(&mut ds, opts.normalization);
    let seq_len = ds.max_len();
    let resampled = ds.equal_length().is_none();
    if resampled {
        opts.progress.report(Progress::Note(&format!(
            "note: series lengths range {}..{}; resampling all to {seq_len} steps (linear interpolation)",
            length_range.0, length_range.1
        )));
        resample_all(&mut ds, seq_len);
    }
    let (train_idx, hold_idx) = split(ds.len(), opts.holdout, p.seed);
    opts.decision.check()?;
    let truth = ds.labels.as_ref().map(|l| encode_labels(l));
    let (k_given, k_from) = match (opts.clusters, &truth) {
        (Some(k), _) if !opts.auto_clusters => (Some(k), "given"),
        (None, Some((_, names))) if !opts.auto_clusters => (Some(names.len()), "labels"),
        _ => (None, "eigengap"),
    };
    check_clusters(k_given, train_idx.len())?;
    // Checked before training, so hours are not spent on a run that could not be saved.
    let staging = Staging::begin(out)?;
    let stage = staging.path().to_path_buf();

    let model_cfg = ModelConfig {
        cell: p.cell,
        n_features: ds.n_features,
        seq_len,
        hidden_size: p.hidden_size,
        hidden_layer_depth: p.hidden_layer_depth,
        latent_length: p.latent_length,
        dropout: p.dropout,
    };
    let config = RunConfig {
        format_version: FORMAT_VERSION,
        trainer_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model_cfg,
        params: (**p).clone(),
        data: DataInfo {
            sources: ds.sources.iter().map(|s| s.display().to_string()).collect(),
            n_series: ds.len(),
            n_train: train_idx.len(),
            n_holdout: hold_idx.len(),
            holdout: opts.holdout,
            length_range,
            resampled,
            normalization: opts.normalization,
            labels: truth.as_ref().map(|t| t.1.clone()),
        },
        imported: None,
    };
    let train_series: Vec<Series> = train_idx.iter().map(|&i| ds.series[i].clone()).collect();
    let hold_series: Vec<Series> = hold_idx.iter().map(|&i| ds.series[i].clone()).collect();

    let settings = RunSettings {
        params: (**p).clone(),
        model: model_cfg,
        holdout: opts.holdout,
        normalization: opts.normalization,
        clusters: opts.clusters,
        n_init: opts.n_init,
        decision: Some(opts.decision),
        n_train: train_series.len(),
        data_fingerprint: fingerprint(&train_series, ds.n_features),
    };
    if let Some(ck) = &opts.resume {
        let diff = settings.mismatches(&ck.meta.settings);
        if !diff.is_empty() {
            return Err(Error::Training(format!("cannot resume from {}: {}", out.join(CHECKPOINT).display(), diff.join("; "))));
        }
        if ck.meta.state.epochs_done > p.epochs {
            return Err(Error::Param(format!(
                "the checkpoint has {} epochs done, more than --epochs {}",
                ck.meta.state.epochs_done, p.epochs
            )));
        }
    }

    let t0 = Instant::now();
    // A resumed run that trains no further epochs still hands its checkpoint to the new directory.
    let mut last_checkpoint: Option<(usize, Vec<u8>)> = match &opts.resume {
        Some(ck) => Some((ck.meta.state.epochs_done, ck.to_bytes()?)),
        None => None,
    };
    let mut on_epoch = |end: EpochEnd<'_>| -> Result<()> {
        let done = end.state.epochs_done;
        // With early stopping the last epoch is not known in advance, so with an interval above 1
        // the checkpoint may be a few epochs behind the stop (a resume then retrains those).
        if opts.checkpoint_every == 0 || (!done.is_multiple_of(opts.checkpoint_every) && done != p.epochs) {
            return Ok(());
        }
        // A step can turn weights non-finite without the loss showing it yet; never save those.
        for (_, v) in end.weights.iter() {
            if v.flatten_all()?.to_vec1::<f32>()?.iter().any(|x| !x.is_finite()) {
                return Err(Error::Diverged { epoch: done, batch: 0, what: "weights", value: f64::NAN });
            }
        }
        let (_, mut opt_tensors) = end.optimizer.state();
        if let Some(best) = end.best {
            opt_tensors.extend(best.iter().map(|(k, t)| (format!("{BEST_PREFIX}{k}"), t.clone())));
        }
        let meta = CheckpointMeta { version: CHECKPOINT_VERSION, settings: settings.clone(), state: end.state };
        let bytes = checkpoint::encode(&meta, end.weights, &opt_tensors)?;
        write_atomic(&out.join(CHECKPOINT), &bytes)?;
        last_checkpoint = Some((done, bytes));
        Ok(())
    };
    let resume = opts.resume.as_deref().cloned();
    let trained = train_resumable(p, &model_cfg, &train_series, dev, &|e| opts.progress.report(e), resume, &mut on_epoch);
    let (weights, log, stop) = match trained {
        Ok(t) => (t.weights, t.log, t.stop),
        Err(e @ Error::Diverged { .. }) => {
            let kept = match last_checkpoint.as_ref().map(|c| c.0) {
                Some(k) => {
                    format!("the last good checkpoint (epoch {k}) is kept in {}", out.join(CHECKPOINT).display())
                }
                _ => "no checkpoint had been written yet".to_string(),
            };
            return Err(Error::Training(format!("{e}. Stopped; {kept}; the previous model files in {} are untouched", out.display())));
        }
        Err(e) => return Err(e),
    };
    let train_seconds = t0.elapsed().as_secs_f64();
    artifacts::save_model(&stage, &config, &weights)?;
    write_training_log(&stage.join(artifacts::TRAINING_LOG), &log)?;
    if let Some((_, bytes)) = &last_checkpoint {
        write_atomic(&stage.join(CHECKPOINT), bytes)?;
    }

    let vrae = Vrae::bind(&model_cfg, &weights, &out.join(artifacts::WEIGHTS))?;
    let l = p.latent_length;
    let t_cluster = Instant::now();
    let cp = ClusterParams::of(&opts.decision, k_given, opts.n_init, p.seed);
    let fitted = fit_decision(&model_cfg, opts.normalization, &weights, &train_series, &opts.decision, &cp)?;
    let FittedDecision { decision, clustering, stabilities, z_train, x_train, dims } = fitted;
    let k = decision.k;
    let native = NativeEncoder::new(&model_cfg, opts.normalization, &weights, &decision)?;
    let z_hold = native.embed(&hold_series)?;
    // What a device decides, for every series: the scores below are of this.
    let train_assign = native.assign(&train_series, &z_train)?;
    let hold_assign = native.assign(&hold_series, &z_hold)?;
    let train_pred: Vec<usize> = train_assign.iter().map(|a| a.cluster).collect();
    let hold_pred: Vec<usize> = hold_assign.iter().map(|a| a.cluster).collect();
    let agree =
        |a: &[usize], b: &[usize]| if a.is_empty() { 1.0 } else { a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64 };
    let agreement_train = agree(&train_pred, &clustering.labels);
    let hold_vote = if hold_series.is_empty() {
        Vec::new()
    } else {
        let raw_hold = native.raw_decisions(&hold_series, &z_hold)?;
        knn_vote(
            &x_train,
            &clustering.labels,
            k,
            &apply_scaling(&raw_hold, &decision.offsets, &decision.scales),
            dims,
            opts.decision.neighbors,
        )
    };
    let agreement_holdout = agree(&hold_pred, &hold_vote);
    let cluster_seconds = t_cluster.elapsed().as_secs_f64();
    let (latent_means, sizes) = latent_means(&z_train, l, &train_pred, k);
    let centroids = Centroids {
        k,
        latent_length: l,
        centroids: latent_means.chunks(l).map(|c| c.to_vec()).collect(),
        sizes: sizes.clone(),
        inertia: 0.0,
        decision: Some(decision.clone()),
    };
    write_json(&stage.join(artifacts::CENTROIDS), &centroids)?;
    write_bundle(&model_cfg, opts.normalization, &weights, &decision, &stage.join(artifacts::BUNDLE))?;
    let loaded = LoadedModel { dir: stage.clone(), config, vrae, weights, centroids: Some(centroids) };
    write_encoder_onnx(&loaded, &stage.join(artifacts::ENCODER_ONNX))?;

    let mut assignments = String::from("index,split,label,cluster,distance,anomalous\n");
    for (part, idx, asg) in [("train", &train_idx, &train_assign), ("holdout", &hold_idx, &hold_assign)] {
        for (&i, a) in idx.iter().zip(asg.iter()) {
            let label = ds.labels.as_ref().map_or("", |l| l[i].as_str());
            let _ = writeln!(assignments, "{i},{part},{label},{},{},{}", a.cluster, a.distance, a.anomalous);
        }
    }
    write_atomic(&stage.join(artifacts::ASSIGNMENTS), assignments.as_bytes())?;

    let mut epoch_secs: Vec<f64> = log.iter().map(|e| e.seconds).collect();
    epoch_secs.sort_by(f64::total_cmp);
    let mut metrics = Metrics {
        k,
        k_from: k_from.to_string(),
        method: opts.decision.cluster_method,
        vrae_train: None,
        vrae_holdout: None,
        offline_train: None,
        agreement_train,
        agreement_holdout,
        prototypes: clustering.prototype_clusters.len(),
        stability: stabilities.clone(),
        anomalous_train: train_assign.iter().filter(|a| a.anomalous).count(),
        anomalous_holdout: hold_assign.iter().filter(|a| a.anomalous).count(),
        eigenvalues: clustering.eigenvalues.clone(),
        cluster_seconds,
        raw_train: None,
        raw_holdout: None,
        seconds_per_epoch: epoch_secs.get(epoch_secs.len() / 2).copied().unwrap_or(0.0),
        train_seconds,
        cluster_sizes: sizes,
        stop: Some(stop.clone()),
    };
    if let Some((truth, _)) = &truth {
        metrics.vrae_train = scores(truth, &train_idx, &train_pred);
        metrics.vrae_holdout = scores(truth, &hold_idx, &hold_pred);
        metrics.offline_train = scores(truth, &train_idx, &clustering.labels);
        let dim = seq_len * ds.n_features;
        let raw = KMeans::fit(&rows(&train_series), dim, &KMeansParams { n_init: opts.n_init, ..KMeansParams::new(k, p.seed) })?;
        let raw_hold: Vec<usize> = raw.predict(&rows(&hold_series))?.iter().map(|a| a.cluster).collect();
        metrics.raw_train = scores(truth, &train_idx, &raw.labels);
        metrics.raw_holdout = scores(truth, &hold_idx, &raw_hold);
    }
    write_json(&stage.join(artifacts::METRICS), &metrics)?;

    let plots = if opts.plots {
        let latents: Vec<f32> = z_train.iter().chain(&z_hold).copied().collect();
        let clusters: Vec<(usize, f32)> = train_assign.iter().chain(&hold_assign).map(|a| (a.cluster, a.distance)).collect();
        let series: Vec<Series> = train_series.iter().chain(&hold_series).cloned().collect();
        let labels: Option<Vec<usize>> = truth.as_ref().map(|(t, _)| train_idx.iter().chain(&hold_idx).map(|&i| t[i]).collect());
        let centroid_series = decode_centroids(&loaded.vrae, &latent_means, dev)?;
        let input = PlotInput {
            latents: &latents,
            dim: l,
            clusters: &clusters,
            k,
            labels: labels.as_deref().zip(truth.as_ref().map(|(_, names)| names.as_slice())),
            series: &series,
            n_features: ds.n_features,
            centroid_series: &centroid_series,
            log: Some(&log),
            tsne: TsneParams { seed: p.seed, ..opts.tsne.clone() },
        };
        opts.progress.report(Progress::Note(&format!("drawing the report's figures (t-SNE of {} latents)...", clusters.len())));
        // A figure that cannot be drawn (e.g. too few series for t-SNE) must not cost the model.
        match write_plots(&stage.join(artifacts::PLOTS), &stage, &input) {
            Ok(info) => Some(info),
            Err(e) => {
                opts.progress.report(Progress::Note(&format!("warning: the report's figures were not drawn: {e}")));
                None
            }
        }
    } else {
        None
    };
    let report = Report {
        trainer_version: env!("CARGO_PKG_VERSION").to_string(),
        hyper_parameters: (**p).clone(),
        model: model_cfg,
        data: ReportData {
            sources: loaded.config.data.sources.clone(),
            n_series: ds.len(),
            n_train: train_idx.len(),
            n_holdout: hold_idx.len(),
            n_features: ds.n_features,
            seq_len,
            labels: truth.as_ref().map(|(_, names)| names.clone()),
        },
        epochs: log.clone(),
        metrics: metrics.clone(),
        plots,
    };
    write_report(&stage, &report)?;
    staging.commit()?;
    Ok(FitSummary { dir: out.to_path_buf(), metrics, log, n_train: train_idx.len(), n_holdout: hold_idx.len() })
}
