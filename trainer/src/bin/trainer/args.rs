//! The command line: one `Args` struct per command, mapping 1:1 onto the library's parameter
//! structs (clap derive), and how the shared flags become values.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use trainer::cluster::decision::{ClusterMethod, DecisionParams, Representation};
use trainer::data::prep::{LengthMode, Normalization};
use trainer::data::{bundled, load_files, CsvLabel, CsvOptions, Dataset};
use trainer::params::{Cell, LossScaling, OptimizerKind, Preset, ReconLoss, VraeParams};

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train a variational recurrent autoencoder on time series and cluster its latent space")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
pub(crate) struct ImportArgs {
    /// The ONNX encoder: x [seq_len, batch, features] -> latent mean [batch, latent].
    pub(crate) encoder: PathBuf,
    /// Output model directory (new, empty, or an earlier model directory, replaced as a whole).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Centroid table, k rows of latent values: a JSON array of rows, a centroids.json, or .npy.
    /// Devices then pick the nearest centroid of the latent.
    #[arg(long, value_name = "FILE", required_unless_present = "fit_centroids", conflicts_with = "fit_centroids")]
    pub(crate) centroids: Option<PathBuf>,
    /// Fit the clusters on these data files instead (same formats as `fit`; the decision `fit`
    /// builds: latent + window summary, spectral clustering, prototypes, anomaly thresholds).
    #[arg(long, value_name = "DATA", num_args = 1..)]
    pub(crate) fit_centroids: Vec<PathBuf>,
    /// Number of clusters for --fit-centroids, or `auto` [default: the number of labels; auto
    /// when the data has none].
    #[arg(long, value_parser = parse_clusters, requires = "fit_centroids")]
    pub(crate) clusters: Option<Clusters>,
    /// Window length devices encode [default: the graph's fixed input length, else the length
    /// of the --fit-centroids data].
    #[arg(long)]
    pub(crate) seq_len: Option<usize>,
    /// Per-series normalisation the encoder was trained with (devices apply it too).
    #[arg(long, value_enum, default_value_t = Normalization::None)]
    pub(crate) normalize: Normalization,
    /// k-means restarts.
    #[arg(long, default_value_t = 10)]
    pub(crate) n_init: usize,
    /// Seed of the clustering.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) decision: DecisionArgs,
    /// Where the label sits in a wide CSV (auto: a header column named label/class/target/y).
    #[arg(long, value_enum, default_value_t = CsvLabel::Auto)]
    pub(crate) csv_label: CsvLabel,
}

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// Model directory written by `trainer fit`.
    pub(crate) model: PathBuf,
    /// Data files (same formats as `fit`). Default: the bundled ECG5000 TRAIN+TEST.
    pub(crate) data: Vec<PathBuf>,
    /// Output folder [default: MODEL/plots].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Seed of the t-SNE start [default: the model's seed].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) tsne: TsneArgs,
    #[command(flatten)]
    pub(crate) data_args: DataArgs,
}

#[derive(Args)]
pub(crate) struct TsneArgs {
    /// t-SNE perplexity, the effective number of neighbours (lowered to (n-1)/3 for small sets).
    #[arg(long, default_value_t = 30.0)]
    pub(crate) perplexity: f32,
    /// t-SNE gradient-descent iterations (Barnes-Hut above 1000 points).
    #[arg(long, default_value_t = 1000)]
    pub(crate) tsne_iterations: usize,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// Model directory written by `trainer fit`.
    pub(crate) model: PathBuf,
    /// ONNX output file [default: MODEL/encoder.onnx].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Also write the runtime bundle (encoder + centroids) [default path: MODEL/model.bundle].
    #[arg(long, num_args = 0..=1)]
    pub(crate) bundle: Option<Option<PathBuf>>,
    /// Give the graph a second input, `lengths` [batch] int32 (ONNX `sequence_lens`): a batch of
    /// series of unequal lengths, each padded after its end, encodes each at its own length
    /// (onnxruntime; tract 0.23.9 refuses it: batch by length there). Use with --out: the model
    /// directory's encoder.onnx keeps the one-input form the runtime's tract engine reads.
    #[arg(long)]
    pub(crate) lengths: bool,
}

/// Compute device.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Args)]
pub(crate) struct DataArgs {
    /// Where the label sits in a wide CSV (auto: a header column named label/class/target/y).
    #[arg(long, value_enum, default_value_t = CsvLabel::Auto)]
    pub(crate) csv_label: CsvLabel,
    /// Compute device (`cuda` needs a trainer built with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub(crate) device: DeviceArg,
}

#[derive(Args)]
pub(crate) struct FitArgs {
    /// Data files: UCR .tsv/.txt, aeon .ts, .csv (wide or long `series_id,t,value...`), optionally
    /// .gz; several files are concatenated. Default: the bundled ECG5000 TRAIN+TEST.
    pub(crate) data: Vec<PathBuf>,
    /// Output model directory (new, empty, or an earlier model directory, which is replaced as a
    /// whole when the run completes).
    #[arg(long, default_value = "models/ecg5000", conflicts_with = "resume")]
    pub(crate) out: PathBuf,
    /// Continue the interrupted run whose checkpoint is in DIR (same DATA; settings come from the
    /// checkpoint; only --epochs, --learning-rate and --clip-norm may change).
    #[arg(long, value_name = "DIR")]
    pub(crate) resume: Option<PathBuf>,
    /// Save a training checkpoint every N epochs and after the last; 0 = never.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) checkpoint_every: usize,
    /// Starting point for the hyper-parameters; the flags below override single values.
    #[arg(long, value_enum, default_value_t = Preset::Default, conflicts_with = "resume")]
    pub(crate) preset: Preset,
    /// Per-series normalisation. UCR sets (ECG5000 included) are already z-normalised per series,
    /// so the default leaves values unchanged.
    #[arg(long, value_enum, default_value_t = Normalization::None, conflicts_with = "resume")]
    pub(crate) normalize: Normalization,
    /// Series of unequal lengths: `native` trains and embeds each at its own length (padded
    /// batches with a masked loss); `resample` interpolates all onto the longest (the seed's way).
    /// Equal-length data is the same either way.
    #[arg(long, value_enum, default_value_t = LengthMode::Native, conflicts_with = "resume")]
    pub(crate) length: LengthMode,
    /// Series longer than N steps keep their first N (noted); the model's length is then N
    /// [default: the longest series, so none is cut].
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub(crate) max_length: Option<usize>,
    /// Fraction of all series held out from training (shuffled with --seed).
    #[arg(long, default_value_t = 0.1, conflicts_with = "resume")]
    pub(crate) holdout: f64,
    /// Number of clusters, or `auto` (eigengap of the kNN graph) [default: the number of
    /// distinct labels; auto when the data has none].
    #[arg(long, conflicts_with = "resume", value_parser = parse_clusters)]
    pub(crate) clusters: Option<Clusters>,
    #[command(flatten)]
    pub(crate) decision: DecisionArgs,
    /// k-means restarts (k-means++ seeding each).
    #[arg(long, default_value_t = 10, conflicts_with = "resume")]
    pub(crate) n_init: usize,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Skip the report's figures (PCA, t-SNE, loss curve, examples); report.json/html are still written.
    #[arg(long)]
    pub(crate) no_plots: bool,
    #[command(flatten)]
    pub(crate) tsne: TsneArgs,
    #[command(flatten)]
    pub(crate) data_args: DataArgs,
    #[command(flatten)]
    pub(crate) hp: HyperArgs,
}

/// `p.field = v` for every `Some(v)` in the flag struct's field of the same name.
macro_rules! override_fields {
    ($args:ident, $p:ident; $($f:ident),* $(,)?) => { $( if let Some(v) = $args.$f { $p.$f = v; } )* };
}

/// `--clusters`: a number or `auto`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clusters {
    Auto,
    Fixed(usize),
}

pub(crate) fn parse_clusters(s: &str) -> std::result::Result<Clusters, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Clusters::Auto);
    }
    s.parse::<usize>().map(Clusters::Fixed).map_err(|_| format!("expected a number of clusters or `auto`, got '{s}'"))
}

/// One flag per field of `DecisionParams` (how the cluster decision is built). They may change
/// on `--resume`: a finished run resumed with other values is re-clustered without training.
#[derive(Args)]
pub(crate) struct DecisionArgs {
    /// Clustering of the decision vectors [spectral].
    #[arg(long, value_enum)]
    pub(crate) cluster_method: Option<ClusterMethod>,
    /// Segments of the window summary (means and mean absolute steps), at most; 0 = none [32].
    #[arg(long)]
    pub(crate) summary_segments: Option<usize>,
    /// Spectrum frequencies per feature in the window summary, at most; 0 = none [32].
    #[arg(long)]
    pub(crate) spectrum_freqs: Option<usize>,
    /// Step-distribution edges per feature in the window summary, at most; 0 = none [16].
    #[arg(long)]
    pub(crate) step_levels: Option<usize>,
    /// Weight of the latent in the decision vector [0.5].
    #[arg(long)]
    pub(crate) latent_weight: Option<f64>,
    /// Weight of each segment block (means, mean absolute steps) [0.5].
    #[arg(long)]
    pub(crate) position_weight: Option<f64>,
    /// Weight of the spectrum block [1].
    #[arg(long)]
    pub(crate) spectrum_weight: Option<f64>,
    /// Weight of the step-distribution block [1].
    #[arg(long)]
    pub(crate) step_weight: Option<f64>,
    /// Frequencies per feature of the steps' spectrum in the window summary, at most; 0 = none [32].
    #[arg(long)]
    pub(crate) step_spectrum_freqs: Option<usize>,
    /// Weight of the steps' spectrum block [0.5].
    #[arg(long)]
    pub(crate) step_spectrum_weight: Option<f64>,
    /// Weight of the segment differences block in the given weights [0].
    #[arg(long)]
    pub(crate) difference_weight: Option<f64>,
    /// Neighbours per series in the kNN graph [10].
    #[arg(long)]
    pub(crate) neighbors: Option<usize>,
    /// Prototypes per cluster in the bundle, at most [16].
    #[arg(long)]
    pub(crate) prototypes_per_cluster: Option<usize>,
    /// Largest k that `--clusters auto` considers [12].
    #[arg(long)]
    pub(crate) max_clusters: Option<usize>,
    /// Quantile of each cluster's training distances above which a window is anomalous [0.99].
    #[arg(long)]
    pub(crate) anomaly_quantile: Option<f64>,
    /// Also cluster the latent alone; keep the more stable of it and latent + summary [false].
    #[arg(long)]
    pub(crate) choose_summary: Option<bool>,
    /// How the blocks' weights are chosen: `modularity` (label-free choice among the given
    /// weights, the latent alone, the segment means alone, the segment differences alone, the
    /// spectra and step distribution alone), `stability` (the same candidates, by resampling), `given` [given].
    #[arg(long, value_enum)]
    pub(crate) representation: Option<Representation>,
}

impl DecisionArgs {
    pub(crate) fn apply(&self, mut p: DecisionParams) -> DecisionParams {
        override_fields!(self, p; cluster_method, summary_segments, spectrum_freqs, step_levels, latent_weight,
                         position_weight, spectrum_weight, step_weight, step_spectrum_freqs, step_spectrum_weight, difference_weight, neighbors, prototypes_per_cluster,
                         max_clusters, anomaly_quantile, choose_summary, representation);
        p
    }
}

/// One flag per field of `VraeParams`; unset flags keep the preset's value.
#[derive(Args)]
pub(crate) struct HyperArgs {
    /// Recurrent cell [default gru, seed lstm].
    #[arg(long, value_enum)]
    pub(crate) cell: Option<Cell>,
    /// Hidden units per layer [90].
    #[arg(long)]
    pub(crate) hidden_size: Option<usize>,
    /// Stacked recurrent layers [1].
    #[arg(long)]
    pub(crate) hidden_layer_depth: Option<usize>,
    /// Latent dimension [20].
    #[arg(long)]
    pub(crate) latent_length: Option<usize>,
    /// Series per batch [32].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Learning rate [default 2e-3, seed 5e-4].
    #[arg(long)]
    pub(crate) learning_rate: Option<f64>,
    /// Training epochs: fixes the count and turns early stopping off [default: stop on
    /// convergence, at most 300; seed: 40]. On --resume: the new upper bound.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Stop on convergence of a validation split (true/false) [default true, seed false].
    #[arg(long)]
    pub(crate) early_stopping: Option<bool>,
    /// Share of the training part held out for the stopping rule [0.1].
    #[arg(long)]
    pub(crate) validation: Option<f64>,
    /// Epochs without validation improvement before stopping [10].
    #[arg(long)]
    pub(crate) patience: Option<usize>,
    /// Optimiser steps before the stopping rule may stop [600].
    #[arg(long)]
    pub(crate) min_steps: Option<usize>,
    /// Most time steps of training series to process, in millions (rows x length x epochs) [10].
    #[arg(long)]
    pub(crate) step_budget: Option<f64>,
    /// Dropout between encoder layers [0.2].
    #[arg(long)]
    pub(crate) dropout: Option<f32>,
    /// Optimiser [adam].
    #[arg(long, value_enum)]
    pub(crate) optimizer: Option<OptimizerKind>,
    /// Max global gradient norm, 0 = off [5].
    #[arg(long)]
    pub(crate) clip_norm: Option<f64>,
    /// Reconstruction loss [mse].
    #[arg(long, value_enum)]
    pub(crate) loss: Option<ReconLoss>,
    /// Loss scaling [default mean, seed seed].
    #[arg(long, value_enum)]
    pub(crate) loss_scaling: Option<LossScaling>,
    /// KL weight [default 0.1, seed 1].
    #[arg(long)]
    pub(crate) kl_weight: Option<f64>,
    /// KL warm-up epochs [default 5, seed 0].
    #[arg(long)]
    pub(crate) kl_anneal_epochs: Option<usize>,
    /// Weight of the contrastive term on the encoder; 0 disables [default 1, seed 0].
    #[arg(long)]
    pub(crate) contrastive_weight: Option<f64>,
    /// Temperature of the contrastive softmax [0.2].
    #[arg(long)]
    pub(crate) contrastive_temperature: Option<f64>,
    /// Shortest contrastive crop as a share of the series length [0.5].
    #[arg(long)]
    pub(crate) contrastive_crop: Option<f64>,
    /// Seed for init, split, shuffling, dropout, sampling and k-means [0].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

impl HyperArgs {
    pub(crate) fn apply(&self, mut p: VraeParams) -> VraeParams {
        override_fields!(self, p; cell, hidden_size, hidden_layer_depth, latent_length, batch_size, learning_rate, epochs, dropout,
             optimizer, clip_norm, loss, loss_scaling, kl_weight, kl_anneal_epochs, seed, early_stopping, validation,
             patience, min_steps, step_budget, contrastive_weight, contrastive_temperature, contrastive_crop);
        p
    }

    /// A fresh run: `--epochs N` alone fixes the epoch count (early stopping off unless asked).
    pub(crate) fn apply_fresh(&self, p: VraeParams) -> VraeParams {
        let mut p = self.apply(p);
        if self.epochs.is_some() && self.early_stopping.is_none() {
            p.early_stopping = false;
        }
        p
    }

    /// Flags that a resumed run may not change (they would make it a different run).
    pub(crate) fn fixed_on_resume(&self) -> Vec<String> {
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
pub(crate) struct InferArgs {
    /// Model directory written by `trainer fit`.
    pub(crate) model: PathBuf,
    /// Data files (same formats as `fit`).
    #[arg(required = true)]
    pub(crate) data: Vec<PathBuf>,
    /// Output file (default: CSV on stdout).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) data_args: DataArgs,
}

pub(crate) fn device(d: DeviceArg) -> Result<candle_core::Device> {
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

pub(crate) fn load(data: &[PathBuf], args: &DataArgs) -> Result<Dataset> {
    if data.is_empty() {
        return Ok(bundled::ecg5000()?);
    }
    Ok(load_files(data, &CsvOptions { label: args.csv_label })?)
}
