//! `trainer fit` end to end, one function per stage:
//!
//! 1. [`prepare`]: normalise, resample unequal lengths, split, fill the run's [`RunRecord`];
//! 2. [`train`]: train (or resume), checkpointing each epoch;
//! 3. [`cluster`]: embed, build the decision (latent + window summary -> spectral or k-means ->
//!    prototypes), and take the device's decision on every series;
//! 4. [`write_model`]: weights, config, centroids, bundle, ONNX, assignments;
//! 5. [`score`]: scores against labels, with raw-series k-means as the baseline;
//! 6. [`write_run_report`]: figures, report.json and report.html.
//!
//! Everything goes into a staging directory that replaces `out` in one step at the end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::artifacts::{self, Centroids, LoadedModel, Staging};
use crate::checkpoint::{self, Checkpoint, CheckpointMeta, CHECKPOINT, CHECKPOINT_VERSION};
use crate::cluster::decision::{apply_scaling, knn_vote, ClusterParams, DecisionParams};
use crate::cluster::kmeans::N_INIT;
use crate::cluster::metrics::encode_labels;
use crate::cluster::{ClusterScores, Contingency, KMeans, KMeansParams};
use crate::data::prep::{native_min_length, resample, shape_lengths, split, LengthMode, Normalization};
use crate::data::{Dataset, Series};
use crate::decide::{check_clusters, fit_decision, latent_means, FittedDecision};
use crate::embed::NativeEncoder;
use crate::error::{Error, Result};
use crate::export::{write_bundle, write_encoder_onnx};
use crate::files::{write_atomic, write_json};
use crate::model::{ModelConfig, ParamStore, Vrae};
use crate::params::VraeValidParams;
use crate::progress::{Progress, Reporter};
use crate::report::tsne::TsneParams;
use crate::report::{decode_centroids, write_plots, write_report, CandidateScores, Metrics, PlotInfo, PlotInput, Report};
use crate::run_record::{fingerprint, ClusterRequest, DataInfo, RunRecord};
use crate::train::{train_resumable, EpochEnd, Stop, BEST_PREFIX};
use crate::train_log::{write_training_log, EpochLog};

/// Share of the series held out from training by default (`trainer fit --holdout`).
pub const HOLDOUT: f64 = 0.1;

/// Everything `fit` needs besides the data.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Validated hyper-parameters (their `seed` drives the split and k-means too).
    pub params: VraeValidParams,
    /// Fraction of series held out from training, in [0, 1).
    pub holdout: f64,
    /// Per-series normalisation.
    pub normalization: Normalization,
    /// Series of unequal lengths: each at its own length, or interpolated onto one.
    pub length: LengthMode,
    /// Longer series are cut to this many steps (their start kept); `None`: the longest series.
    pub max_length: Option<usize>,
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
    /// How the model's bundle stores the weight matrices; the device measurements (agreement,
    /// device ARI/NMI) run that bundle. The decision is fitted on the f32 latents either way.
    pub weight_format: runtime::WeightFormat,
}

impl FitOptions {
    /// `params` with the CLI's defaults: [`HOLDOUT`] held out, no extra normalisation, k = number
    /// of labels, [`N_INIT`] k-means restarts, progress to nobody, a checkpoint every epoch, a
    /// fresh start.
    pub fn new(params: VraeValidParams) -> Self {
        FitOptions {
            params,
            holdout: HOLDOUT,
            normalization: Normalization::None,
            length: LengthMode::Native,
            max_length: None,
            clusters: None,
            auto_clusters: false,
            decision: DecisionParams::default(),
            n_init: N_INIT,
            progress: Reporter::default(),
            checkpoint_every: 1,
            resume: None,
            plots: true,
            tsne: TsneParams::default(),
            weight_format: runtime::WeightFormat::F32,
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

fn scores(truth: &[usize], idx: &[usize], pred: &[usize]) -> Option<ClusterScores> {
    if idx.is_empty() {
        return None;
    }
    let t: Vec<usize> = idx.iter().map(|&i| truth[i]).collect();
    Some(Contingency::new(&t, pred).scores())
}

/// Trains, clusters and writes every artifact into `out`, replacing its previous content in one
/// step at the end; checkpoints go to `out` during training.
pub fn fit(ds: Dataset, opts: &FitOptions, out: &Path, dev: &Device) -> Result<FitSummary> {
    let prep = prepare(ds, opts)?;
    // Checked before training, so hours are not spent on a run that could not be saved.
    let staging = Staging::begin(out)?;
    let stage = staging.path().to_path_buf();
    let trained = train(&prep, opts, out, dev)?;
    let clustered = cluster(&prep, opts, &trained.weights)?;
    let loaded = write_model(&prep, opts, &trained, &clustered, &stage, out)?;
    let metrics = score(&prep, opts, &trained, &clustered)?;
    write_json(&stage.join(artifacts::METRICS), &metrics)?;
    write_run_report(&prep, opts, &trained, &clustered, &loaded, &metrics, &stage, dev)?;
    staging.commit()?;
    let (n_train, n_holdout) = (prep.train_idx.len(), prep.hold_idx.len());
    Ok(FitSummary { dir: out.to_path_buf(), metrics, log: trained.log, n_train, n_holdout })
}

/// The data ready for training, split, and the run's record.
struct Prepared {
    ds: Dataset,
    record: RunRecord,
    train_idx: Vec<usize>,
    hold_idx: Vec<usize>,
    train_series: Vec<Series>,
    hold_series: Vec<Series>,
    /// Encoded labels and their names.
    truth: Option<(Vec<usize>, Vec<String>)>,
    /// Clusters asked for (`None`: the eigengap chooses), and where the number came from.
    k_given: Option<usize>,
    k_from: &'static str,
}

/// Checks the options, cuts series above `--max-length`, normalises, resamples unequal lengths
/// in resample mode (each with a note), splits, and fills the [`RunRecord`] that config.json,
/// the checkpoint and report.json carry.
fn prepare(mut ds: Dataset, opts: &FitOptions) -> Result<Prepared> {
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
    if opts.max_length == Some(0) {
        return Err(Error::Param("--max-length must be at least 1".into()));
    }
    let length_range = (ds.series.iter().map(|s| s.len).min().unwrap_or(0), ds.max_len());
    let plan = shape_lengths(&mut ds, opts.length, opts.max_length, opts.normalization);
    let seq_len = plan.seq_len;
    if plan.cut > 0 {
        opts.progress.report(Progress::Note(&format!(
            "note: {} of {} series are longer than --max-length {seq_len}; each keeps its first {seq_len} steps",
            plan.cut,
            ds.len()
        )));
    }
    let resampled = plan.resampled > 0;
    if resampled {
        opts.progress.report(Progress::Note(&format!(
            "note: series lengths range {}..{}; resampling all to {seq_len} steps (linear interpolation, --length resample)",
            length_range.0, length_range.1
        )));
    } else if plan.length == LengthMode::Native {
        opts.progress.report(Progress::Note(&format!(
            "note: series lengths range {}..{seq_len}; training at each series' own length (--length native)",
            ds.series.iter().map(|s| s.len).min().unwrap_or(0)
        )));
    }
    let (train_idx, hold_idx) = split(ds.len(), opts.holdout, p.seed);
    let length = plan.length;
    opts.decision.check()?;
    let truth = ds.labels.as_ref().map(|l| encode_labels(l));
    let (k_given, k_from) = match (opts.clusters, &truth) {
        (Some(k), _) if !opts.auto_clusters => (Some(k), "given"),
        (None, Some((_, names))) if !opts.auto_clusters => (Some(names.len()), "labels"),
        _ => (None, "eigengap"),
    };
    check_clusters(k_given, train_idx.len())?;
    let train_series: Vec<Series> = train_idx.iter().map(|&i| ds.series[i].clone()).collect();
    let hold_series: Vec<Series> = hold_idx.iter().map(|&i| ds.series[i].clone()).collect();
    let model = ModelConfig {
        cell: p.cell,
        n_features: ds.n_features,
        seq_len,
        hidden_size: p.hidden_size,
        hidden_layer_depth: p.hidden_layer_depth,
        latent_length: p.latent_length,
        dropout: p.dropout,
    };
    let data = DataInfo {
        sources: ds.sources.iter().map(|s| s.display().to_string()).collect(),
        n_series: ds.len(),
        n_train: train_idx.len(),
        n_holdout: hold_idx.len(),
        holdout: opts.holdout,
        length_range,
        resampled,
        length,
        min_length: (length == LengthMode::Native).then(|| native_min_length(&train_series)),
        cut: plan.cut,
        normalization: opts.normalization,
        labels: truth.as_ref().map(|t| t.1.clone()),
        fingerprint: Some(fingerprint(&train_series, ds.n_features)),
    };
    let clustering = ClusterRequest { clusters: opts.clusters, auto: opts.auto_clusters, n_init: opts.n_init, decision: opts.decision };
    let record = RunRecord { clustering: Some(clustering), ..RunRecord::new(model, (**p).clone(), data) };
    Ok(Prepared { ds, record, train_idx, hold_idx, train_series, hold_series, truth, k_given, k_from })
}

/// What training left.
struct Trained {
    weights: ParamStore,
    log: Vec<EpochLog>,
    stop: Stop,
    /// The last checkpoint written (epochs done, bytes), copied into the new directory.
    last_checkpoint: Option<(usize, Vec<u8>)>,
    seconds: f64,
}

/// Trains from scratch or from `opts.resume` (refused unless it is this run with the same
/// data), writing a checkpoint into `out` every `checkpoint_every` epochs; a diverged run keeps
/// its last good checkpoint and the previous model files.
fn train(prep: &Prepared, opts: &FitOptions, out: &Path, dev: &Device) -> Result<Trained> {
    let p = &opts.params;
    let record = &prep.record;
    if let Some(ck) = &opts.resume {
        let diff = record.mismatches(&ck.meta.run);
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
        let meta = CheckpointMeta { version: CHECKPOINT_VERSION, run: record.clone(), state: end.state };
        let bytes = checkpoint::encode(&meta, end.weights, &opt_tensors)?;
        write_atomic(&out.join(CHECKPOINT), &bytes)?;
        last_checkpoint = Some((done, bytes));
        Ok(())
    };
    let resume = opts.resume.as_deref().cloned();
    let trained = train_resumable(p, &record.model, &prep.train_series, dev, &|e| opts.progress.report(e), resume, &mut on_epoch);
    match trained {
        Ok(t) => Ok(Trained { weights: t.weights, log: t.log, stop: t.stop, last_checkpoint, seconds: t0.elapsed().as_secs_f64() }),
        Err(e @ Error::Diverged { .. }) => {
            let kept = match last_checkpoint.as_ref().map(|c| c.0) {
                Some(k) => {
                    format!("the last good checkpoint (epoch {k}) is kept in {}", out.join(CHECKPOINT).display())
                }
                _ => "no checkpoint had been written yet".to_string(),
            };
            Err(Error::Training(format!("{e}. Stopped; {kept}; the previous model files in {} are untouched", out.display())))
        }
        Err(e) => Err(e),
    }
}

/// The cluster decision and what a device decides with it on every series.
struct Clustered {
    fitted: FittedDecision,
    z_hold: Vec<f32>,
    train_assign: Vec<runtime::Assignment>,
    hold_assign: Vec<runtime::Assignment>,
    /// Share of training series whose device decision equals the offline clustering.
    agreement_train: f64,
    /// Share of held-out series whose device decision equals a k-NN vote of the training ones.
    agreement_holdout: f64,
    /// Mean latent of each cluster's training series, row-major `k x latent`, and sizes.
    latent_means: Vec<f32>,
    sizes: Vec<usize>,
    seconds: f64,
}

/// Builds the decision on the training series ([`fit_decision`]) and runs the device's
/// decision (the runtime, through the bundle's tables) on every series.
fn cluster(prep: &Prepared, opts: &FitOptions, weights: &ParamStore) -> Result<Clustered> {
    let p = &opts.params;
    let t0 = Instant::now();
    let cp = ClusterParams::of(&opts.decision, prep.k_given, opts.n_init, p.seed);
    let model = &prep.record.model;
    let fitted = fit_decision(model, opts.normalization, weights, &prep.train_series, &opts.decision, &cp)?;
    let native = NativeEncoder::with_format(model, opts.normalization, weights, &fitted.decision, opts.weight_format)?;
    let z_hold = native.embed(&prep.hold_series)?;
    // int8 weights give the device other latents than the f32 ones the decision was fitted on.
    let z_device;
    let z_train = if opts.weight_format == runtime::WeightFormat::F32 {
        &fitted.z_train
    } else {
        z_device = native.embed(&prep.train_series)?;
        &z_device
    };
    let train_assign = native.assign(&prep.train_series, z_train)?;
    let hold_assign = native.assign(&prep.hold_series, &z_hold)?;
    let train_pred: Vec<usize> = train_assign.iter().map(|a| a.cluster).collect();
    let hold_pred: Vec<usize> = hold_assign.iter().map(|a| a.cluster).collect();
    let agree =
        |a: &[usize], b: &[usize]| if a.is_empty() { 1.0 } else { a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64 };
    let agreement_train = agree(&train_pred, &fitted.clustering.labels);
    let hold_vote = if prep.hold_series.is_empty() {
        Vec::new()
    } else {
        let d = &fitted.decision;
        let raw_hold = native.raw_decisions(&prep.hold_series, &z_hold)?;
        let scaled = apply_scaling(&raw_hold, &d.offsets, &d.scales);
        knn_vote(&fitted.x_train, &fitted.clustering.labels, d.k, &scaled, fitted.dims, opts.decision.neighbors)
    };
    let agreement_holdout = agree(&hold_pred, &hold_vote);
    let (latent_means, sizes) = latent_means(&fitted.z_train, p.latent_length, &train_pred, fitted.decision.k);
    Ok(Clustered {
        fitted,
        z_hold,
        train_assign,
        hold_assign,
        agreement_train,
        agreement_holdout,
        latent_means,
        sizes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes the model files into `stage`: weights and config, the training log and checkpoint,
/// centroids, the runtime bundle, the ONNX encoder and every series' assignment. Returns the
/// model as `embed`/`cluster` will load it (`out` names the weights in errors).
fn write_model(prep: &Prepared, opts: &FitOptions, trained: &Trained, cl: &Clustered, stage: &Path, out: &Path) -> Result<LoadedModel> {
    let (record, weights) = (&prep.record, &trained.weights);
    artifacts::save_model(stage, record, weights)?;
    write_training_log(&stage.join(artifacts::TRAINING_LOG), &trained.log)?;
    if let Some((_, bytes)) = &trained.last_checkpoint {
        write_atomic(&stage.join(CHECKPOINT), bytes)?;
    }
    let decision = &cl.fitted.decision;
    let l = record.model.latent_length;
    let centroids = Centroids {
        k: decision.k,
        latent_length: l,
        centroids: cl.latent_means.chunks(l).map(|c| c.to_vec()).collect(),
        sizes: cl.sizes.clone(),
        inertia: 0.0,
        decision: Some(decision.clone()),
    };
    write_json(&stage.join(artifacts::CENTROIDS), &centroids)?;
    let min_len = record.data.min_length.unwrap_or(1);
    write_bundle(&record.model, opts.normalization, weights, decision, min_len, opts.weight_format, &stage.join(artifacts::BUNDLE))?;
    let vrae = Vrae::bind(&record.model, weights, &out.join(artifacts::WEIGHTS))?;
    let loaded =
        LoadedModel { dir: stage.to_path_buf(), config: record.clone(), vrae, weights: weights.clone(), centroids: Some(centroids) };
    write_encoder_onnx(&loaded, &stage.join(artifacts::ENCODER_ONNX))?;

    let mut assignments = String::from("index,split,label,cluster,distance,anomalous\n");
    for (part, idx, asg) in [("train", &prep.train_idx, &cl.train_assign), ("holdout", &prep.hold_idx, &cl.hold_assign)] {
        for (&i, a) in idx.iter().zip(asg.iter()) {
            let label = prep.ds.labels.as_ref().map_or("", |l| l[i].as_str());
            let _ = writeln!(assignments, "{i},{part},{label},{},{},{}", a.cluster, a.distance, a.anomalous);
        }
    }
    write_atomic(&stage.join(artifacts::ASSIGNMENTS), assignments.as_bytes())?;
    Ok(loaded)
}

/// Timings, cluster sizes and, with labels, ARI/NMI/purity of the device's decision, of the
/// offline clustering, and of k-means on the raw series (the baseline).
fn score(prep: &Prepared, opts: &FitOptions, trained: &Trained, cl: &Clustered) -> Result<Metrics> {
    let p = &opts.params;
    let fitted = &cl.fitted;
    let k = fitted.decision.k;
    let mut epoch_secs: Vec<f64> = trained.log.iter().map(|e| e.seconds).collect();
    epoch_secs.sort_by(f64::total_cmp);
    let mut metrics = Metrics {
        k,
        k_from: prep.k_from.to_string(),
        method: opts.decision.cluster_method,
        vrae_train: None,
        vrae_holdout: None,
        offline_train: None,
        agreement_train: cl.agreement_train,
        agreement_holdout: cl.agreement_holdout,
        prototypes: fitted.clustering.prototype_clusters.len(),
        stability: fitted.stabilities.clone(),
        modularity: fitted.modularity.clone(),
        candidates: Vec::new(),
        representation: fitted.representation.clone(),
        anomalous_train: cl.train_assign.iter().filter(|a| a.anomalous).count(),
        anomalous_holdout: cl.hold_assign.iter().filter(|a| a.anomalous).count(),
        eigenvalues: fitted.clustering.eigenvalues.clone(),
        cluster_seconds: cl.seconds,
        raw_train: None,
        raw_holdout: None,
        seconds_per_epoch: epoch_secs.get(epoch_secs.len() / 2).copied().unwrap_or(0.0),
        train_seconds: trained.seconds,
        cluster_sizes: cl.sizes.clone(),
        stop: Some(trained.stop.clone()),
    };
    metrics.candidates = fitted
        .candidates
        .iter()
        .map(|c| CandidateScores {
            name: c.name.clone(),
            modularity: c.modularity,
            null_gaussian: c.null_gaussian,
            null_permuted: c.null_permuted,
            agreement: Some(c.agreement).filter(|v| v.is_finite()),
            nmi: prep.truth.as_ref().and_then(|(t, _)| scores(t, &prep.train_idx, &c.labels)).map(|s| s.nmi),
        })
        .collect();
    if let Some((truth, _)) = &prep.truth {
        let pred = |a: &[runtime::Assignment]| a.iter().map(|a| a.cluster).collect::<Vec<_>>();
        metrics.vrae_train = scores(truth, &prep.train_idx, &pred(&cl.train_assign));
        metrics.vrae_holdout = scores(truth, &prep.hold_idx, &pred(&cl.hold_assign));
        metrics.offline_train = scores(truth, &prep.train_idx, &fitted.clustering.labels);
        let (t, nf) = (prep.record.model.seq_len, prep.ds.n_features);
        // k-means on raw values needs one length: native series are interpolated onto the
        // model's length for the baseline only.
        let raw_rows = |series: &[Series]| -> Vec<f32> { series.iter().flat_map(|s| resample(s, nf, t).values).collect() };
        let raw =
            KMeans::fit(&raw_rows(&prep.train_series), t * nf, &KMeansParams { n_init: opts.n_init, ..KMeansParams::new(k, p.seed) })?;
        let raw_hold: Vec<usize> = raw.predict(&raw_rows(&prep.hold_series))?.iter().map(|a| a.cluster).collect();
        metrics.raw_train = scores(truth, &prep.train_idx, &raw.labels);
        metrics.raw_holdout = scores(truth, &prep.hold_idx, &raw_hold);
    }
    Ok(metrics)
}

/// Draws the figures (unless `--no-plots`; a figure that cannot be drawn costs a warning, not
/// the model) and writes report.json and report.html.
#[allow(clippy::too_many_arguments)]
fn write_run_report(
    prep: &Prepared,
    opts: &FitOptions,
    trained: &Trained,
    cl: &Clustered,
    loaded: &LoadedModel,
    metrics: &Metrics,
    stage: &Path,
    dev: &Device,
) -> Result<()> {
    let plots = if opts.plots { draw_plots(prep, opts, trained, cl, loaded, stage, dev)? } else { None };
    let report = Report { run: prep.record.clone(), epochs: trained.log.clone(), metrics: metrics.clone(), plots };
    write_report(stage, &report)
}

/// The report's figures into `stage/plots`; `None` (with a warning) if they cannot be drawn.
fn draw_plots(
    prep: &Prepared,
    opts: &FitOptions,
    trained: &Trained,
    cl: &Clustered,
    loaded: &LoadedModel,
    stage: &Path,
    dev: &Device,
) -> Result<Option<PlotInfo>> {
    let latents: Vec<f32> = cl.fitted.z_train.iter().chain(&cl.z_hold).copied().collect();
    let clusters: Vec<(usize, f32)> = cl.train_assign.iter().chain(&cl.hold_assign).map(|a| (a.cluster, a.distance)).collect();
    let series: Vec<Series> = prep.train_series.iter().chain(&prep.hold_series).cloned().collect();
    let truth = &prep.truth;
    let labels: Option<Vec<usize>> = truth.as_ref().map(|(t, _)| prep.train_idx.iter().chain(&prep.hold_idx).map(|&i| t[i]).collect());
    let centroid_series = decode_centroids(&loaded.vrae, &cl.latent_means, dev)?;
    let input = PlotInput {
        latents: &latents,
        dim: prep.record.model.latent_length,
        clusters: &clusters,
        k: cl.fitted.decision.k,
        labels: labels.as_deref().zip(truth.as_ref().map(|(_, names)| names.as_slice())),
        series: &series,
        n_features: prep.ds.n_features,
        centroid_series: &centroid_series,
        log: Some(&trained.log),
        tsne: TsneParams { seed: opts.params.seed, ..opts.tsne.clone() },
    };
    opts.progress.report(Progress::Note(&format!("drawing the report's figures (t-SNE of {} latents)...", clusters.len())));
    match write_plots(&stage.join(artifacts::PLOTS), stage, &input) {
        Ok(info) => Ok(Some(info)),
        Err(e) => {
            opts.progress.report(Progress::Note(&format!("warning: the report's figures were not drawn: {e}")));
            Ok(None)
        }
    }
}
