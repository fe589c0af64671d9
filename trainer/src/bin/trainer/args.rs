//! The command line: one `Args` struct per command, mapping 1:1 onto the library's parameter
//! structs (clap derive), and how the shared flags become values.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use trainer::cluster::decision::DecisionFlags;
use trainer::cluster::kmeans::N_INIT;
use trainer::data::prep::{LengthMode, Normalization};
use trainer::data::{bundled, load_files, CsvLabel, CsvOptions, Dataset};
use trainer::fit::HOLDOUT;
use trainer::params::{Preset, VraeFlags};
use trainer::report::tsne::TsneParams;

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
    #[arg(long, default_value_t = N_INIT)]
    pub(crate) n_init: usize,
    /// Seed of the clustering.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) decision: DecisionFlags,
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
    #[arg(long, default_value_t = TsneParams::DEFAULT.perplexity)]
    pub(crate) perplexity: f32,
    /// t-SNE gradient-descent iterations (Barnes-Hut above 1000 points).
    #[arg(long, default_value_t = TsneParams::DEFAULT.iterations)]
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
    /// How the bundle stores the encoder's weight matrices: f32 as trained, or int8
    /// (per-channel symmetric, a quarter of the flash; cluster IDs within ~1% of f32).
    #[arg(long, value_enum, default_value_t = runtime::WeightFormat::F32, requires = "bundle")]
    pub(crate) weights: runtime::WeightFormat,
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
    #[arg(long, default_value_t = HOLDOUT, conflicts_with = "resume")]
    pub(crate) holdout: f64,
    /// Number of clusters, or `auto` (eigengap of the kNN graph) [default: the number of
    /// distinct labels; auto when the data has none].
    #[arg(long, conflicts_with = "resume", value_parser = parse_clusters)]
    pub(crate) clusters: Option<Clusters>,
    #[command(flatten)]
    pub(crate) decision: DecisionFlags,
    /// k-means restarts (k-means++ seeding each).
    #[arg(long, default_value_t = N_INIT, conflicts_with = "resume")]
    pub(crate) n_init: usize,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Skip the report's figures (PCA, t-SNE, loss curve, examples); report.json/html are still written.
    #[arg(long)]
    pub(crate) no_plots: bool,
    /// How model.bundle stores the encoder's weight matrices: f32 as trained, or int8
    /// (per-channel symmetric, a quarter of the flash). The device figures run that bundle.
    #[arg(long, value_enum, default_value_t = runtime::WeightFormat::F32)]
    pub(crate) weights: runtime::WeightFormat,
    #[command(flatten)]
    pub(crate) tsne: TsneArgs,
    #[command(flatten)]
    pub(crate) data_args: DataArgs,
    #[command(flatten)]
    pub(crate) hp: VraeFlags,
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
