//! `edge assign`: cluster IDs and anomaly flags for every window of every device in a recorded
//! fleet file, and one row per device.
//!
//! Input is long format, `device_id,timestamp,value[,value...]`, as CSV (quoted fields allowed;
//! an optional header line whose second field is not a number) or as Parquet with the same
//! columns in the same order (see `edge::parquet_input`), devices interleaved in any order; each
//! device's rows must come in increasing timestamp order. Memory is bounded by devices x window
//! (one ring buffer and one totals record per device) plus one batch of pending windows (and, for
//! Parquet, one row group), not by file size.
//!
//! Outputs: the window table at `--out` and the device table (`--devices`, by default beside
//! `--out` as `NAME.devices.EXT`), each CSV or Parquet by its extension, written atomically: a
//! failed or killed run leaves earlier files at those paths as they were.
//!
//! Rows that are malformed (wrong field count, non-numeric, NaN/inf) or out of time order are
//! skipped and counted (`--strict` makes them errors). A first CSV line that is neither this
//! model's header nor a reading, or a file where no row is valid, is an error. A gap larger than
//! `--max-gap` between two samples of a device restarts that device's window. Devices with fewer
//! samples than a window produce no output row and are counted. A summary goes to stderr.
//!
//! `--sessions` scores sessions instead of windows: each device's stream is cut at every gap
//! larger than `--max-gap` (sessions longer than `--max-session` are cut there too), and each
//! session of at least `--min-session` samples is encoded at its own length, one row per session
//! in the window table (`window_start`/`window_end` are the session's first and last timestamp).
//! Sessions too short are counted in the summary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use runtime::bundle::AlignedBytes;
use runtime::Encoder;

use edge::fleet::{Window, WindowerParams};
use edge::outputs::{device_cells, device_columns, window_cells, window_columns};
use edge::parquet_input::{is_parquet, ParquetInputError, ParquetReadings};
use edge::score::{BatchScorer, Model, ScoreError};
use edge::table::{TableFormat, TableWriter};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The runtime's own kernels (what devices run).
    Native,
    /// encoder.onnx through tract.
    Tract,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Parquet for a `.parquet`/`.pq` name or a file that starts with Parquet's magic bytes (and
    /// ends with them or is binary), CSV otherwise.
    Auto,
    /// Comma-separated text.
    Csv,
    /// Apache Parquet (flat columns: device id, timestamp, values).
    Parquet,
}

#[derive(clap::Args)]
pub struct AssignArgs {
    /// Model directory (model.bundle, and encoder.onnx for --engine tract).
    #[arg(long)]
    model: PathBuf,
    /// Readings in long format: device_id,timestamp,value[,value...] (CSV or Parquet).
    #[arg(long)]
    input: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    format: Format,
    /// Window table: CSV, or Parquet for a `.parquet` / `.pq` name.
    #[arg(long)]
    out: PathBuf,
    /// Device table (CSV or Parquet by extension) [default: beside --out, NAME.devices.EXT].
    #[arg(long, conflicts_with = "no_devices")]
    devices: Option<PathBuf>,
    /// Do not write the device table.
    #[arg(long)]
    no_devices: bool,
    #[command(flatten)]
    windows: super::WindowArgs,
    /// Score sessions instead of fixed windows: each device's stream is cut at every gap larger
    /// than --max-gap (and where the session id changes, with --session-column), and each
    /// session is encoded at its own length (native engine).
    #[arg(long, conflicts_with_all = ["window", "stride"])]
    sessions: bool,
    /// The input has a session id column after the timestamp (device, timestamp, session,
    /// values...; CSV or Parquet, string or integer ids): a row whose id differs from the
    /// device's previous row's starts a new session, and the window table gets a `session`
    /// column. --max-gap is then optional.
    #[arg(long, requires = "sessions")]
    session_column: bool,
    /// Sessions with fewer samples are counted and not scored [default: a quarter of the
    /// model's training length, or its minimum length when that is more].
    #[arg(long, requires = "sessions")]
    min_session: Option<usize>,
    /// A session reaching this many samples is scored and the next sample starts a new one
    /// [default: four times the model's training length].
    #[arg(long, requires = "sessions")]
    max_session: Option<usize>,
    /// Inference engine.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    engine: Engine,
    /// Fail on the first malformed or out-of-order row instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Windows scored per parallel batch.
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn load_bundle(dir: &Path) -> Result<AlignedBytes> {
    let p = dir.join("model.bundle");
    let bytes = std::fs::read(&p).with_context(|| format!("{}: cannot read the model bundle", p.display()))?;
    let aligned = AlignedBytes::new(&bytes);
    Encoder::from_bytes(aligned.as_bytes()).with_context(|| format!("{}: invalid model bundle", p.display()))?;
    Ok(aligned)
}

/// The device table's default path: `NAME.devices.EXT` beside the window table `NAME.EXT`.
fn default_devices_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match out.extension() {
        Some(ext) => format!("{stem}.devices.{}", ext.to_string_lossy()),
        None => format!("{stem}.devices"),
    };
    out.with_file_name(name)
}

pub fn run(a: AssignArgs) -> Result<()> {
    let bundle = load_bundle(&a.model)?;
    let enc = Encoder::from_bytes(bundle.as_bytes())?;
    let hd = enc.bundle().header;
    let f = hd.n_features as usize;
    let k = hd.k as usize;
    let (window, stride) = a.windows.window_and_stride(hd.seq_len as usize);
    if window == 0 || stride == 0 || a.batch == 0 {
        bail!("--window, --stride and --batch must be at least 1");
    }
    if !a.sessions {
        edge::sessions::check_min_len("--window", window, hd.min_len as usize).map_err(anyhow::Error::msg)?;
    }
    #[cfg(feature = "tract")]
    let tract = match a.engine {
        Engine::Tract => Some(runtime::tract_engine::TractEncoder::load(&a.model.join("encoder.onnx"), window, f)?),
        Engine::Native => None,
    };
    #[cfg(not(feature = "tract"))]
    if a.engine == Engine::Tract {
        bail!("--engine tract: this edge binary was built without the `tract` feature (cargo build --release -p edge --features tract)");
    }
    if a.engine == Engine::Tract && hd.normalization != runtime::bundle::Normalization::None {
        bail!("--engine tract: the model z-normalises windows, which encoder.onnx does not contain; use --engine native");
    }
    if a.engine == Engine::Tract && enc.bundle().is_int8() && !a.quiet {
        eprintln!(
            "note: {} has int8 weights; --engine tract runs encoder.onnx's f32 weights, so its latents are not the device's \
             (--engine native runs the int8 kernels)",
            a.model.join("model.bundle").display()
        );
    }
    if !enc.bundle().has_anomaly_thresholds() && !a.quiet {
        eprintln!(
            "note: {} has no anomaly thresholds (bundle format version {}, or a model fitted before them): no window is flagged; \
             `trainer fit --resume {}` re-clusters it and adds them",
            a.model.join("model.bundle").display(),
            enc.bundle().version,
            a.model.display()
        );
    }

    let parquet = match a.format {
        Format::Csv => false,
        Format::Parquet => true,
        Format::Auto => is_parquet(&a.input).with_context(|| format!("{}: cannot open", a.input.display()))?,
    };
    let devices_path = if a.no_devices { None } else { Some(a.devices.clone().unwrap_or_else(|| default_devices_path(&a.out))) };
    if devices_path.as_deref() == Some(a.out.as_path()) {
        bail!("--devices and --out name the same file {}", a.out.display());
    }
    let started = Instant::now();
    let seq_len = hd.seq_len as usize;
    let min_len = hd.min_len as usize;
    edge::sessions::check_min_len("--min-session", a.min_session.unwrap_or(0), min_len).map_err(anyhow::Error::msg)?;
    let sessions = a.sessions.then(|| edge::sessions::limits_for(seq_len, min_len, a.min_session, a.max_session));
    if sessions.is_some() && a.engine == Engine::Tract {
        bail!("--sessions: sessions of unequal lengths run on --engine native (tract takes one input length per plan)");
    }
    let mut scorer = BatchScorer::new(
        WindowerParams {
            features: f,
            window,
            stride,
            max_gap: a.windows.max_gap,
            strict: a.strict,
            sessions,
            session_column: a.session_column,
        },
        k,
        a.batch,
    )?;
    let model = Model {
        encoder: &enc,
        #[cfg(feature = "tract")]
        tract: tract.as_ref(),
    };
    // Nothing appears at --out or --devices unless the whole run succeeds (atomic commits).
    let mut out = TableWriter::create(&a.out, TableFormat::of(&a.out), &window_columns(a.session_column))?;
    let mut sink = |job: &Window, asg: &runtime::Assignment| out.write(&window_cells(job, asg));
    // Rejected rows (strict mode) name the input; scoring and output errors carry their own.
    let named = |e: ScoreError| match e {
        ScoreError::Row(_) => anyhow::Error::new(e).context(format!("{}", a.input.display())),
        e => e.into(),
    };
    let pb;
    if parquet {
        let readings = ParquetReadings::open(&a.input, f, a.session_column).with_context(|| format!("{}", a.input.display()))?;
        pb = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(readings.rows()) };
        pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rows {msg} ETA {eta}")?);
        let mut n = 0u64;
        readings
            .for_each(|row| -> Result<()> {
                if scorer.feed_row(row, &model, &mut sink).map_err(named)? {
                    pb.set_message(format!("{} windows", scorer.windower().summary().windows));
                }
                n += 1;
                if n.is_multiple_of(65536) {
                    pb.set_position(n);
                }
                Ok(())
            })
            .map_err(|e| if e.is::<ParquetInputError>() { e.context(format!("{}", a.input.display())) } else { e })?;
    } else {
        let input = File::open(&a.input).with_context(|| format!("{}: cannot open", a.input.display()))?;
        let size = input.metadata().map(|m| m.len()).unwrap_or(0);
        pb = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(size) };
        pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")?);
        let mut reader = edge::csv_input::reader(input);
        let mut record = csv::ByteRecord::new();
        let mut records = 0usize;
        while reader.read_byte_record(&mut record).with_context(|| format!("{}: read error", a.input.display()))? {
            records += 1;
            if records.is_multiple_of(65536) {
                pb.set_position(reader.position().byte());
            }
            let line = record.position().map_or(records, |p| p.line() as usize);
            if scorer.feed_record(line, &record, &model, &mut sink).map_err(named)? {
                pb.set_message(format!("{} windows", scorer.windower().summary().windows));
            }
        }
    }
    // Sessions still open at the end of the input, and the last partial batch.
    scorer.finish(&model, &mut sink)?;
    pb.finish_and_clear();
    let (windower, table) = (scorer.windower(), scorer.table());
    let s = windower.summary();
    if windower.samples() == 0 {
        let why = s.first_skipped.as_ref().map_or(String::new(), |e| format!("; the first skipped: {e}"));
        bail!(
            "{}: no valid reading ({} row(s): {} malformed, {} out of time order{why}); expected {} and {f} value column(s) per row",
            a.input.display(),
            s.rows,
            s.malformed,
            s.out_of_order,
            edge::fleet::key_columns(a.session_column),
        );
    }
    let rows = table.rows();
    let devices_out = match &devices_path {
        Some(p) => {
            let mut w = TableWriter::create(p, TableFormat::of(p), &device_columns(k))?;
            for r in &rows {
                w.write(&device_cells(r))?;
            }
            Some(w)
        }
        None => None,
    };
    out.commit()?;
    if let Some(w) = devices_out {
        w.commit()?;
    }

    let secs = started.elapsed().as_secs_f64();
    let flagged: u64 = rows.iter().map(|r| r.anomalous_windows).sum();
    eprintln!("rows read             {}", s.rows);
    eprintln!("rows skipped          {} malformed, {} out of time order", s.malformed, s.out_of_order);
    if let Some(l) = sessions {
        eprintln!("devices               {} ({} without a session scored)", windower.devices(), windower.short_devices());
        eprintln!("sessions ended by gap {} (gap > --max-gap)", s.gaps);
        if a.session_column {
            eprintln!("sessions ended by id  {} (a new session id)", s.session_ids);
        }
        eprintln!("sessions too short    {} (fewer than {} samples)", s.short_sessions, l.min);
        eprintln!("sessions cut          {} (at {} samples)", s.cut_sessions, l.max);
        eprintln!("sessions scored       {} -> {}", s.windows, a.out.display());
    } else {
        eprintln!(
            "devices               {} ({} with fewer samples than a window of {window})",
            windower.devices(),
            windower.short_devices()
        );
        eprintln!("windows restarted     {} (gap > --max-gap)", s.gaps);
        eprintln!("windows scored        {} -> {}", s.windows, a.out.display());
    }
    eprintln!("windows anomalous     {flagged}");
    if let Some(p) = &devices_path {
        eprintln!("device table          {} devices -> {}", table.len(), p.display());
    }
    eprintln!("time                  {secs:.2} s, {:.0} samples/s", windower.samples() as f64 / secs.max(1e-9));
    Ok(())
}
