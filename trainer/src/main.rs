//! `trainer`: fit a VRAE on time series, embed series, assign clusters.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use trainer::artifacts::{load_model, write_atomic};
use trainer::checkpoint::Checkpoint;
use trainer::cluster::decision::{ClusterMethod, DecisionParams};
use trainer::cluster::metrics::encode_labels;
use trainer::cluster::ClusterScores;
use trainer::data::prep::Normalization;
use trainer::data::{bundled, load_files, CsvLabel, CsvOptions, Dataset};
use trainer::embed::{latents_csv, prepare, write_latents};
use trainer::export::{write_bundle, write_encoder_onnx, ONNX_OPSET};
use trainer::fit::{fit, FitOptions};
use trainer::params::{Cell, LossScaling, OptimizerKind, Preset, ReconLoss, VraeParams};
use trainer::report::tsne::TsneParams;
use trainer::report::{decode_centroids, write_plots, PlotInput};
use trainer::train_log::read_training_log;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train a variational recurrent autoencoder on time series and cluster its latent space")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train on DATA (default: the bundled ECG5000), cluster the latents, write a model directory.
    Fit(Box<FitArgs>),
    /// Write the latent mean of every series in DATA (CSV, or .npy by extension).
    Embed(InferArgs),
    /// Assign every series in DATA to its nearest stored centroid (CSV).
    Cluster(InferArgs),
    /// Export the encoder and latent-mean head to ONNX (opset 17).
    Export(ExportArgs),
    /// Draw PCA and t-SNE plots of DATA's latents (by cluster and label), the loss curve and
    /// example series per cluster with the decoded centroid.
    Plot(PlotArgs),
    /// Import a VRAE encoder trained elsewhere (PyTorch's `torch.onnx.export` of the LSTM/GRU
    /// encoder and its `hidden_to_mean` head) as a model directory: bundle, encoder.onnx,
    /// config, centroids. Needs a trainer built with `--features onnx-import`.
    Import(Box<ImportArgs>),
}

#[derive(Args)]
struct ImportArgs {
    /// The ONNX encoder: x [seq_len, batch, features] -> latent mean [batch, latent].
    encoder: PathBuf,
    /// Output model directory (new, empty, or an earlier model directory, replaced as a whole).
    #[arg(long)]
    out: PathBuf,
    /// Centroid table, k rows of latent values: a JSON array of rows, a centroids.json, or .npy.
    /// Devices then pick the nearest centroid of the latent.
    #[arg(long, value_name = "FILE", required_unless_present = "fit_centroids", conflicts_with = "fit_centroids")]
    centroids: Option<PathBuf>,
    /// Fit the clusters on these data files instead (same formats as `fit`; the decision `fit`
    /// builds: latent + window summary, spectral clustering, prototypes, anomaly thresholds).
    #[arg(long, value_name = "DATA", num_args = 1..)]
    fit_centroids: Vec<PathBuf>,
    /// Number of clusters for --fit-centroids, or `auto` [default: the number of labels; auto
    /// when the data has none].
    #[arg(long, value_parser = parse_clusters, requires = "fit_centroids")]
    clusters: Option<Clusters>,
    /// Window length devices encode [default: the graph's fixed input length, else the length
    /// of the --fit-centroids data].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Per-series normalisation the encoder was trained with (devices apply it too).
    #[arg(long, value_enum, default_value_t = Normalization::None)]
    normalize: Normalization,
    /// k-means restarts.
    #[arg(long, default_value_t = 10)]
    n_init: usize,
    /// Seed of the clustering.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    decision: DecisionArgs,
    /// Where the label sits in a wide CSV (auto: a header column named label/class/target/y).
    #[arg(long, value_enum, default_value_t = CsvLabel::Auto)]
    csv_label: CsvLabel,
}

#[derive(Args)]
struct PlotArgs {
    /// Model directory written by `trainer fit`.
    model: PathBuf,
    /// Data files (same formats as `fit`). Default: the bundled ECG5000 TRAIN+TEST.
    data: Vec<PathBuf>,
    /// Output folder [default: MODEL/plots].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the t-SNE start [default: the model's seed].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    tsne: TsneArgs,
    #[command(flatten)]
    data_args: DataArgs,
}

#[derive(Args)]
struct TsneArgs {
    /// t-SNE perplexity, the effective number of neighbours (lowered to (n-1)/3 for small sets).
    #[arg(long, default_value_t = 30.0)]
    perplexity: f32,
    /// t-SNE gradient-descent iterations (Barnes-Hut above 1000 points).
    #[arg(long, default_value_t = 1000)]
    tsne_iterations: usize,
}

#[derive(Args)]
struct ExportArgs {
    /// Model directory written by `trainer fit`.
    model: PathBuf,
    /// ONNX output file [default: MODEL/encoder.onnx].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the runtime bundle (encoder + centroids) [default path: MODEL/model.bundle].
    #[arg(long, num_args = 0..=1)]
    bundle: Option<Option<PathBuf>>,
}

/// Compute device.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Args)]
struct DataArgs {
    /// Where the label sits in a wide CSV (auto: a header column named label/class/target/y).
    #[arg(long, value_enum, default_value_t = CsvLabel::Auto)]
    csv_label: CsvLabel,
    /// Compute device (`cuda` needs a trainer built with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
}

#[derive(Args)]
struct FitArgs {
    /// Data files: UCR .tsv/.txt, aeon .ts, .csv (wide or long `series_id,t,value...`), optionally
    /// .gz; several files are concatenated. Default: the bundled ECG5000 TRAIN+TEST.
    data: Vec<PathBuf>,
    /// Output model directory (new, empty, or an earlier model directory, which is replaced as a
    /// whole when the run completes).
    #[arg(long, default_value = "models/ecg5000", conflicts_with = "resume")]
    out: PathBuf,
    /// Continue the interrupted run whose checkpoint is in DIR (same DATA; settings come from the
    /// checkpoint; only --epochs, --learning-rate and --clip-norm may change).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Save a training checkpoint every N epochs and after the last; 0 = never.
    #[arg(long, default_value_t = 1, value_name = "N")]
    checkpoint_every: usize,
    /// Starting point for the hyper-parameters; the flags below override single values.
    #[arg(long, value_enum, default_value_t = Preset::Default, conflicts_with = "resume")]
    preset: Preset,
    /// Per-series normalisation. UCR sets (ECG5000 included) are already z-normalised per series,
    /// so the default leaves values unchanged.
    #[arg(long, value_enum, default_value_t = Normalization::None, conflicts_with = "resume")]
    normalize: Normalization,
    /// Fraction of all series held out from training (shuffled with --seed).
    #[arg(long, default_value_t = 0.1, conflicts_with = "resume")]
    holdout: f64,
    /// Number of clusters, or `auto` (eigengap of the kNN graph) [default: the number of
    /// distinct labels; auto when the data has none].
    #[arg(long, conflicts_with = "resume", value_parser = parse_clusters)]
    clusters: Option<Clusters>,
    #[command(flatten)]
    decision: DecisionArgs,
    /// k-means restarts (k-means++ seeding each).
    #[arg(long, default_value_t = 10, conflicts_with = "resume")]
    n_init: usize,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Skip the report's figures (PCA, t-SNE, loss curve, examples); report.json/html are still written.
    #[arg(long)]
    no_plots: bool,
    #[command(flatten)]
    tsne: TsneArgs,
    #[command(flatten)]
    data_args: DataArgs,
    #[command(flatten)]
    hp: HyperArgs,
}

/// `p.field = v` for every `Some(v)` in the flag struct's field of the same name.
macro_rules! override_fields {
    ($args:ident, $p:ident; $($f:ident),* $(,)?) => { $( if let Some(v) = $args.$f { $p.$f = v; } )* };
}

/// `--clusters`: a number or `auto`.
#[derive(Clone, Copy, Debug)]
enum Clusters {
    Auto,
    Fixed(usize),
}

fn parse_clusters(s: &str) -> std::result::Result<Clusters, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Clusters::Auto);
    }
    s.parse::<usize>().map(Clusters::Fixed).map_err(|_| format!("expected a number of clusters or `auto`, got '{s}'"))
}

/// One flag per field of `DecisionParams` (how the cluster decision is built). They may change
/// on `--resume`: a finished run resumed with other values is re-clustered without training.
#[derive(Args)]
struct DecisionArgs {
    /// Clustering of the decision vectors [spectral].
    #[arg(long, value_enum)]
    cluster_method: Option<ClusterMethod>,
    /// Segments of the window summary (means and mean absolute steps), at most; 0 = none [32].
    #[arg(long)]
    summary_segments: Option<usize>,
    /// Spectrum frequencies per feature in the window summary, at most; 0 = none [32].
    #[arg(long)]
    spectrum_freqs: Option<usize>,
    /// Step-distribution edges per feature in the window summary, at most; 0 = none [16].
    #[arg(long)]
    step_levels: Option<usize>,
    /// Weight of the latent in the decision vector [0.5].
    #[arg(long)]
    latent_weight: Option<f64>,
    /// Weight of each segment block (means, mean absolute steps) [0.5].
    #[arg(long)]
    position_weight: Option<f64>,
    /// Weight of the spectrum block [1].
    #[arg(long)]
    spectrum_weight: Option<f64>,
    /// Weight of the step-distribution block [1].
    #[arg(long)]
    step_weight: Option<f64>,
    /// Frequencies per feature of the steps' spectrum in the window summary, at most; 0 = none [32].
    #[arg(long)]
    step_spectrum_freqs: Option<usize>,
    /// Weight of the steps' spectrum block [0.5].
    #[arg(long)]
    step_spectrum_weight: Option<f64>,
    /// Neighbours per series in the kNN graph [10].
    #[arg(long)]
    neighbors: Option<usize>,
    /// Prototypes per cluster in the bundle, at most [16].
    #[arg(long)]
    prototypes_per_cluster: Option<usize>,
    /// Largest k that `--clusters auto` considers [12].
    #[arg(long)]
    max_clusters: Option<usize>,
    /// Quantile of each cluster's training distances above which a window is anomalous [0.99].
    #[arg(long)]
    anomaly_quantile: Option<f64>,
    /// Also cluster the latent alone; keep the more stable of it and latent + summary [false].
    #[arg(long)]
    choose_summary: Option<bool>,
}

impl DecisionArgs {
    fn apply(&self, mut p: DecisionParams) -> DecisionParams {
        override_fields!(self, p; cluster_method, summary_segments, spectrum_freqs, step_levels, latent_weight,
                         position_weight, spectrum_weight, step_weight, step_spectrum_freqs, step_spectrum_weight, neighbors, prototypes_per_cluster,
                         max_clusters, anomaly_quantile, choose_summary);
        p
    }
}

/// One flag per field of `VraeParams`; unset flags keep the preset's value.
#[derive(Args)]
struct HyperArgs {
    /// Recurrent cell [default gru, seed lstm].
    #[arg(long, value_enum)]
    cell: Option<Cell>,
    /// Hidden units per layer [90].
    #[arg(long)]
    hidden_size: Option<usize>,
    /// Stacked recurrent layers [1].
    #[arg(long)]
    hidden_layer_depth: Option<usize>,
    /// Latent dimension [20].
    #[arg(long)]
    latent_length: Option<usize>,
    /// Series per batch [32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate [default 2e-3, seed 5e-4].
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Training epochs: fixes the count and turns early stopping off [default: stop on
    /// convergence, at most 300; seed: 40]. On --resume: the new upper bound.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop on convergence of a validation split (true/false) [default true, seed false].
    #[arg(long)]
    early_stopping: Option<bool>,
    /// Share of the training part held out for the stopping rule [0.1].
    #[arg(long)]
    validation: Option<f64>,
    /// Epochs without validation improvement before stopping [10].
    #[arg(long)]
    patience: Option<usize>,
    /// Optimiser steps before the stopping rule may stop [600].
    #[arg(long)]
    min_steps: Option<usize>,
    /// Most time steps of training series to process, in millions (rows x length x epochs) [10].
    #[arg(long)]
    step_budget: Option<f64>,
    /// Dropout between encoder layers [0.2].
    #[arg(long)]
    dropout: Option<f32>,
    /// Optimiser [adam].
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Max global gradient norm, 0 = off [5].
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Reconstruction loss [mse].
    #[arg(long, value_enum)]
    loss: Option<ReconLoss>,
    /// Loss scaling [default mean, seed seed].
    #[arg(long, value_enum)]
    loss_scaling: Option<LossScaling>,
    /// KL weight [default 0.1, seed 1].
    #[arg(long)]
    kl_weight: Option<f64>,
    /// KL warm-up epochs [default 5, seed 0].
    #[arg(long)]
    kl_anneal_epochs: Option<usize>,
    /// Weight of the contrastive term on the encoder; 0 disables [default 1, seed 0].
    #[arg(long)]
    contrastive_weight: Option<f64>,
    /// Temperature of the contrastive softmax [0.2].
    #[arg(long)]
    contrastive_temperature: Option<f64>,
    /// Shortest contrastive crop as a share of the series length [0.5].
    #[arg(long)]
    contrastive_crop: Option<f64>,
    /// Seed for init, split, shuffling, dropout, sampling and k-means [0].
    #[arg(long)]
    seed: Option<u64>,
}

impl HyperArgs {
    fn apply(&self, mut p: VraeParams) -> VraeParams {
        override_fields!(self, p; cell, hidden_size, hidden_layer_depth, latent_length, batch_size, learning_rate, epochs, dropout,
             optimizer, clip_norm, loss, loss_scaling, kl_weight, kl_anneal_epochs, seed, early_stopping, validation,
             patience, min_steps, step_budget, contrastive_weight, contrastive_temperature, contrastive_crop);
        p
    }

    /// A fresh run: `--epochs N` alone fixes the epoch count (early stopping off unless asked).
    fn apply_fresh(&self, p: VraeParams) -> VraeParams {
        let mut p = self.apply(p);
        if self.epochs.is_some() && self.early_stopping.is_none() {
            p.early_stopping = false;
        }
        p
    }

    /// Flags that a resumed run may not change (they would make it a different run).
    fn fixed_on_resume(&self) -> Vec<String> {
        let mut set = Vec::new();
        macro_rules! check {
            ($($f:ident),*) => { $( if self.$f.is_some() { set.push(format!("--{}", stringify!($f).replace('_', "-"))); } )* };
        }
        check!(
            cell,
            hidden_size,
            hidden_layer_depth,
            latent_length,
            batch_size,
            dropout,
            optimizer,
            loss,
            loss_scaling,
            kl_weight,
            kl_anneal_epochs,
            seed,
            early_stopping,
            validation,
            patience,
            min_steps,
            step_budget,
            contrastive_weight,
            contrastive_temperature,
            contrastive_crop
        );
        set
    }
}

#[derive(Args)]
struct InferArgs {
    /// Model directory written by `trainer fit`.
    model: PathBuf,
    /// Data files (same formats as `fit`).
    #[arg(required = true)]
    data: Vec<PathBuf>,
    /// Output file (default: CSV on stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data_args: DataArgs,
}

fn device(d: DeviceArg) -> Result<candle_core::Device> {
    match d {
        DeviceArg::Cpu => Ok(candle_core::Device::Cpu),
        DeviceArg::Cuda => {
            if cfg!(feature = "cuda") {
                candle_core::Device::new_cuda(0).context("cannot open CUDA device 0")
            } else {
                bail!("--device cuda: this trainer was built without CUDA; rebuild with `cargo build --release -p trainer --features cuda`")
            }
        }
    }
}

fn load(data: &[PathBuf], args: &DataArgs) -> Result<Dataset> {
    if data.is_empty() {
        return Ok(bundled::ecg5000()?);
    }
    Ok(load_files(data, &CsvOptions { label: args.csv_label })?)
}

fn fmt_scores(s: Option<ClusterScores>) -> String {
    s.map_or("   -      -      -".into(), |s| format!("{:6.3} {:6.3} {:6.3}", s.ari, s.nmi, s.purity))
}

fn run_fit(a: FitArgs) -> Result<()> {
    let dev = device(a.data_args.device)?;
    let resume = match &a.resume {
        Some(dir) => {
            let fixed = a.hp.fixed_on_resume();
            if !fixed.is_empty() {
                bail!("--resume continues a run with its own settings; {} cannot change", fixed.join(", "));
            }
            let ck = Checkpoint::load(dir, &dev)?;
            eprintln!(
                "resuming {} after epoch {} of {}",
                dir.display(),
                ck.meta.state.epochs_done,
                a.hp.epochs.unwrap_or(ck.meta.settings.params.epochs)
            );
            Some(Box::new(ck))
        }
        None => None,
    };
    let fixed = match a.clusters {
        Some(Clusters::Fixed(k)) => Some(k),
        _ => None,
    };
    let (params, out, holdout, normalization, clusters, n_init) = match &resume {
        Some(ck) => {
            let s = &ck.meta.settings;
            let dir = a.resume.clone().unwrap_or_default();
            (a.hp.apply(s.params.clone()).check()?, dir, s.holdout, s.normalization, s.clusters, s.n_init)
        }
        None => (a.hp.apply_fresh(VraeParams::preset(a.preset)).check()?, a.out.clone(), a.holdout, a.normalize, fixed, a.n_init),
    };
    let resume_decision = resume.as_ref().map(|ck| ck.meta.settings.decision.unwrap_or_default());
    let ds = load(&a.data, &a.data_args)?;
    eprintln!(
        "data: {} series, {} feature(s), length {}..{}, labels: {}",
        ds.len(),
        ds.n_features,
        ds.series.iter().map(|s| s.len).min().unwrap_or(0),
        ds.max_len(),
        if ds.labels.is_some() { "yes" } else { "no" }
    );
    let opts = FitOptions {
        params,
        holdout,
        normalization,
        clusters,
        auto_clusters: matches!(a.clusters, Some(Clusters::Auto)),
        decision: a.decision.apply(match (&resume_decision, a.preset) {
            (Some(d), _) => *d,
            (None, Preset::Seed) => DecisionParams::seed(),
            (None, Preset::Default) => DecisionParams::default(),
        }),
        n_init,
        show_progress: !a.quiet,
        checkpoint_every: a.checkpoint_every,
        resume,
        plots: !a.no_plots,
        tsne: TsneParams { perplexity: a.tsne.perplexity, iterations: a.tsne.tsne_iterations, seed: 0 },
    };
    let s = fit(ds, &opts, &out, &dev)?;
    let m = &s.metrics;
    println!("model written to {} (open report.html there)", s.dir.display());
    println!(
        "trained on {} series, held out {}; {:.2} s/epoch (median), {:.1} s in all; final loss {:.5}",
        s.n_train,
        s.n_holdout,
        m.seconds_per_epoch,
        m.train_seconds,
        s.log.last().map_or(f64::NAN, |e| e.loss)
    );
    if let Some(st) = &m.stop {
        println!(
            "training stopped after {} epochs / {} steps: {}; kept epoch {} ({} validation rows)",
            st.epochs, st.steps, st.reason, st.kept_epoch, st.validation_rows
        );
    }
    println!(
        "k = {} ({}), {:?} clustering in {:.1} s, {} prototypes; cluster sizes {:?}",
        m.k, m.k_from, m.method, m.cluster_seconds, m.prototypes, m.cluster_sizes
    );
    println!(
        "device decision = offline clusters on {:.1}% of training series, = nearest-neighbour vote on {:.1}% held out",
        100.0 * m.agreement_train,
        100.0 * m.agreement_holdout
    );
    // Only a choice between decision vectors (`--choose-summary true`) measures stability.
    if m.stability.len() > 1 {
        let s: Vec<String> = m.stability.iter().map(|(n, v)| v.map_or(format!("{n} -"), |v| format!("{n} {v:.3}"))).collect();
        println!("resampling stability (ARI): {}; kept the most stable", s.join(", "));
    }
    println!(
        "anomalous (beyond the cluster's {} quantile of training distances): {} training, {} held-out series",
        opts.decision.anomaly_quantile, m.anomalous_train, m.anomalous_holdout
    );
    if m.vrae_train.is_some() {
        println!("{:<22} {:>6} {:>6} {:>6}", "clusters vs labels", "ARI", "NMI", "purity");
        println!("{:<22} {}", "VRAE device train", fmt_scores(m.vrae_train));
        println!("{:<22} {}", "VRAE device held-out", fmt_scores(m.vrae_holdout));
        println!("{:<22} {}", "VRAE offline train", fmt_scores(m.offline_train));
        println!("{:<22} {}", "raw k-means train", fmt_scores(m.raw_train));
        println!("{:<22} {}", "raw k-means held-out", fmt_scores(m.raw_holdout));
    }
    Ok(())
}

fn emit(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => Ok(write_atomic(p, text.as_bytes())?),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn run_infer(a: InferArgs, assign: bool) -> Result<()> {
    let dev = device(a.data_args.device)?;
    let model = load_model(&a.model, &dev)?;
    let mut ds = load_files(&a.data, &CsvOptions { label: a.data_args.csv_label })?;
    let resampled = prepare(&mut ds, &model.config.model)?;
    if resampled > 0 {
        eprintln!("note: {resampled} series resampled to the model's length {}", model.config.model.seq_len);
    }
    let l = model.config.model.latent_length;
    let native = model.native()?;
    let z = native.embed(&ds.series)?;
    let labels = ds.labels.as_deref();
    if !assign {
        return match &a.out {
            Some(p) => Ok(write_latents(p, &z, l, labels)?),
            None => emit(None, &latents_csv(&z, l, labels)),
        };
    }
    if model.centroids.is_none() {
        bail!("{}: no centroids.json; re-run `trainer fit` to produce one", model.dir.display());
    }
    let mut s = String::from("index,label,cluster,distance,second_distance\n");
    for (i, a) in native.assign(&ds.series, &z)?.iter().enumerate() {
        let _ = writeln!(s, "{i},{},{},{},{}", labels.map_or("", |lb| lb[i].as_str()), a.cluster, a.distance, a.second_distance);
    }
    emit(a.out.as_deref(), &s)
}

fn run_export(a: ExportArgs) -> Result<()> {
    let model = load_model(&a.model, &candle_core::Device::Cpu)?;
    let out = a.out.unwrap_or_else(|| a.model.join(trainer::artifacts::ENCODER_ONNX));
    let n = write_encoder_onnx(&model, &out)?;
    println!("wrote {} ({n} bytes, opset {ONNX_OPSET})", out.display());
    if let Some(path) = a.bundle {
        let path = path.unwrap_or_else(|| a.model.join(trainer::artifacts::BUNDLE));
        let Some(c) = &model.centroids else {
            bail!("{}: no centroids.json; a bundle carries the cluster decision", model.dir.display());
        };
        let n = write_bundle(&model.config.model, model.config.data.normalization, &model.weights, &c.decision(), &path)?;
        println!("wrote {} ({n} bytes)", path.display());
    }
    Ok(())
}

fn run_plot(a: PlotArgs) -> Result<()> {
    let dev = candle_core::Device::Cpu;
    let model = load_model(&a.model, &dev)?;
    let Some(centroids) = &model.centroids else {
        bail!("{}: no centroids.json; re-run `trainer fit` to produce one", model.dir.display());
    };
    let mut ds = load(&a.data, &a.data_args)?;
    let resampled = prepare(&mut ds, &model.config.model)?;
    if resampled > 0 {
        eprintln!("note: {resampled} series resampled to the model's length {}", model.config.model.seq_len);
    }
    let native = model.native()?;
    let z = native.embed(&ds.series)?;
    let clusters: Vec<(usize, f32)> = native.assign(&ds.series, &z)?.iter().map(|a| (a.cluster, a.distance)).collect();
    let labels = ds.labels.as_ref().map(|l| encode_labels(l));
    let log_path = a.model.join(trainer::artifacts::TRAINING_LOG);
    let log = if log_path.exists() { Some(read_training_log(&log_path)?) } else { None };
    // An imported encoder has no decoder: its clusters are drawn with their members' mean series.
    let centroid_series = if model.vrae.has_decoder() {
        decode_centroids(&model.vrae, &centroids.flat(), &dev)?
    } else {
        member_means(&ds.series, &clusters, centroids.k)
    };
    let out = a.out.unwrap_or_else(|| a.model.join(trainer::artifacts::PLOTS));
    let input = PlotInput {
        latents: &z,
        dim: model.config.model.latent_length,
        clusters: &clusters,
        k: centroids.k,
        labels: labels.as_ref().map(|(l, names)| (l.as_slice(), names.as_slice())),
        series: &ds.series,
        n_features: ds.n_features,
        centroid_series: &centroid_series,
        log: log.as_deref(),
        tsne: TsneParams {
            perplexity: a.tsne.perplexity,
            iterations: a.tsne.tsne_iterations,
            seed: a.seed.unwrap_or(model.config.params.seed),
        },
    };
    eprintln!("t-SNE of {} latents ({} iterations)...", clusters.len(), a.tsne.tsne_iterations);
    let info = write_plots(&out, Path::new(""), &input)?;
    for f in &info.files {
        println!("wrote {f}");
    }
    println!(
        "PCA axes hold {:.0}% + {:.0}% of the latent variance; t-SNE {:.1} s (perplexity {}{})",
        info.pca_variance_ratio[0] * 100.0,
        info.pca_variance_ratio[1] * 100.0,
        info.tsne_seconds,
        info.tsne_perplexity,
        if info.tsne_barnes_hut { ", Barnes-Hut" } else { ", exact" }
    );
    Ok(())
}

#[cfg(not(feature = "onnx-import"))]
fn run_import(_: ImportArgs) -> Result<()> {
    bail!("this trainer was built without ONNX import; rebuild with `cargo build --release -p trainer --features onnx-import` (needs protoc: Debian's protobuf-compiler)")
}

#[cfg(feature = "onnx-import")]
fn run_import(a: ImportArgs) -> Result<()> {
    use trainer::import::{import, CentroidSource, ImportOptions};
    let centroids = match a.centroids {
        Some(p) => CentroidSource::File(p),
        None => {
            let data = load_files(&a.fit_centroids, &CsvOptions { label: a.csv_label })?;
            // As in `fit`: k defaults to the number of labels; `auto` (or no labels) is the eigengap.
            let k = match a.clusters {
                Some(Clusters::Fixed(k)) => Some(k),
                Some(Clusters::Auto) => None,
                None => data.labels.as_ref().map(|l| encode_labels(l).1.len()),
            };
            CentroidSource::Fit { data, k, decision: a.decision.apply(DecisionParams::default()), n_init: a.n_init, seed: a.seed }
        }
    };
    let s =
        import(ImportOptions { onnx: a.encoder.clone(), out: a.out.clone(), centroids, seq_len: a.seq_len, normalization: a.normalize })?;
    let c = &s.config;
    println!(
        "imported {} ({}): {:?}, {} feature(s), {} layer(s) of {} hidden, latent {}, windows of {} steps",
        a.encoder.display(),
        if s.producer.is_empty() { "unknown producer" } else { &s.producer },
        c.cell,
        c.n_features,
        c.hidden_layer_depth,
        c.hidden_size,
        c.latent_length,
        c.seq_len
    );
    println!("{} clusters{}", s.k, if s.sizes.is_empty() { String::new() } else { format!(", sizes {:?}", s.sizes) });
    if let Some(sc) = s.scores {
        println!("device decision vs labels: ARI {:.3} NMI {:.3} purity {:.3}", sc.ari, sc.nmi, sc.purity);
    }
    println!("wrote {} (bundle {} bytes)", a.out.display(), s.bundle_bytes);
    Ok(())
}

/// Per cluster, the mean of its members' values (zeros for an empty cluster).
fn member_means(series: &[trainer::data::Series], clusters: &[(usize, f32)], k: usize) -> Vec<Vec<f32>> {
    let width = series.first().map_or(0, |s| s.values.len());
    let mut sums = vec![vec![0f32; width]; k];
    let mut counts = vec![0usize; k];
    for (s, &(c, _)) in series.iter().zip(clusters) {
        counts[c] += 1;
        sums[c].iter_mut().zip(&s.values).for_each(|(m, v)| *m += v);
    }
    for (m, n) in sums.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= n.max(1) as f32);
    }
    sums
}

fn main() {
    trainer::train::park_idle_candle_workers();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Fit(a) => run_fit(*a),
        Cmd::Embed(a) => run_infer(a, false),
        Cmd::Cluster(a) => run_infer(a, true),
        Cmd::Export(a) => run_export(a),
        Cmd::Plot(a) => run_plot(a),
        Cmd::Import(a) => run_import(*a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
