//! `edge assign`: cluster IDs for every window of every device in a recorded fleet file.
//!
//! Input is long format, `device_id,timestamp,value[,value...]` (an optional header line whose
//! second field is not a number), devices interleaved in any order; each device's rows must come
//! in increasing timestamp order. Memory is bounded by devices x window (one ring buffer per
//! device) plus one batch of pending windows, not by file size.
//!
//! Rows that are malformed (wrong field count, non-numeric, NaN/inf) or out of time order are
//! skipped and counted (`--strict` makes them errors). A gap larger than `--max-gap` between two
//! samples of a device restarts that device's window. Devices with fewer samples than a window
//! produce no output row and are counted. A summary goes to stderr at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use runtime::batch::{assign_all, embed_windows};
use runtime::bundle::AlignedBytes;
use runtime::Encoder;

#[derive(Parser)]
#[command(name = "edge", version, about = "Score a fleet's recorded readings with a trained model")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster ID, distance and runner-up distance for every device window.
    Assign(AssignArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The runtime's own kernels (what devices run).
    Native,
    /// encoder.onnx through tract.
    Tract,
}

#[derive(clap::Args)]
struct AssignArgs {
    /// Model directory (model.bundle, and encoder.onnx for --engine tract).
    #[arg(long)]
    model: PathBuf,
    /// Readings in long format: device_id,timestamp,value[,value...].
    #[arg(long)]
    input: PathBuf,
    /// Output CSV.
    #[arg(long)]
    out: PathBuf,
    /// Samples per window [default: the model's training length].
    #[arg(long)]
    window: Option<usize>,
    /// Samples between window starts [default: --window, i.e. no overlap].
    #[arg(long)]
    stride: Option<usize>,
    /// Largest timestamp step inside a window; a larger gap restarts the device's window.
    #[arg(long)]
    max_gap: Option<f64>,
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

/// Per-device ring buffer of the last `window` samples.
struct Device {
    buf: Vec<f32>,
    /// Timestamps (as written) of the buffered samples, for the output's window start/end.
    times: Vec<String>,
    filled: usize,
    since_emit: usize,
    last_t: f64,
    windows: usize,
    samples: usize,
}

#[derive(Default)]
struct Summary {
    rows: usize,
    malformed: usize,
    out_of_order: usize,
    gaps: usize,
    windows: usize,
}

/// A complete window waiting for inference.
struct Job {
    device: String,
    start: String,
    end: String,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Assign(a) => assign(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load_bundle(dir: &Path) -> Result<AlignedBytes> {
    let p = dir.join("model.bundle");
    let bytes = std::fs::read(&p).with_context(|| format!("{}: cannot read the model bundle", p.display()))?;
    let aligned = AlignedBytes::new(&bytes);
    Encoder::from_bytes(aligned.as_bytes()).with_context(|| format!("{}: invalid model bundle", p.display()))?;
    Ok(aligned)
}

fn assign(a: AssignArgs) -> Result<()> {
    let bundle = load_bundle(&a.model)?;
    let enc = Encoder::from_bytes(bundle.as_bytes())?;
    let hd = enc.bundle().header;
    let f = hd.n_features as usize;
    let window = a.window.unwrap_or(hd.seq_len as usize);
    let stride = a.stride.unwrap_or(window);
    if window == 0 || stride == 0 || a.batch == 0 {
        bail!("--window, --stride and --batch must be at least 1");
    }
    #[cfg(feature = "tract")]
    let tract = match a.engine {
        Engine::Tract => Some(runtime::tract_engine::TractEncoder::load(&a.model.join("encoder.onnx"), window, f)?),
        Engine::Native => None,
    };
    #[cfg(not(feature = "tract"))]
    if a.engine == Engine::Tract {
        bail!("--engine tract: this edge binary was built without the `tract` feature");
    }
    if a.engine == Engine::Tract && hd.normalization != runtime::bundle::Normalization::None {
        bail!("--engine tract: the model z-normalises windows, which encoder.onnx does not contain; use --engine native");
    }

    let input = File::open(&a.input).with_context(|| format!("{}: cannot open", a.input.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(size) };
    pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")?);
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let out_file = a.out.with_extension("csv.tmp");
    let mut out = BufWriter::new(File::create(&out_file).with_context(|| format!("{}: cannot create", out_file.display()))?);
    writeln!(out, "device,window_start,window_end,cluster,distance,second_distance")?;

    let started = Instant::now();
    let mut devices: HashMap<String, Device> = HashMap::new();
    let mut s = Summary::default();
    let mut jobs: Vec<Job> = Vec::new();
    let mut pending: Vec<f32> = Vec::new();
    let flush = |jobs: &mut Vec<Job>, pending: &mut Vec<f32>, out: &mut BufWriter<File>| -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let z = match a.engine {
            Engine::Native => embed_windows(&enc, pending, window * f)?,
            #[cfg(feature = "tract")]
            Engine::Tract => tract.as_ref().expect("loaded above").embed(pending)?,
            #[cfg(not(feature = "tract"))]
            Engine::Tract => unreachable!("rejected above"),
        };
        for (job, asg) in jobs.iter().zip(assign_all(&enc, &z)?) {
            writeln!(out, "{},{},{},{},{},{}", job.device, job.start, job.end, asg.cluster, asg.distance, asg.second_distance)?;
        }
        jobs.clear();
        pending.clear();
        Ok(())
    };

    let mut line = String::new();
    let mut line_no = 0usize;
    let mut read = 0u64;
    let mut vals = vec![0f32; f];
    loop {
        line.clear();
        let n = reader.read_line(&mut line).with_context(|| format!("{}: read error", a.input.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        read += n as u64;
        if line_no % 65536 == 0 {
            pb.set_position(read);
        }
        let row = line.trim_end();
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if line_no == 1 && fields.len() >= 2 && fields[1].parse::<f64>().is_err() {
            continue; // header
        }
        s.rows += 1;
        let parsed = parse_row(&fields, f, &mut vals);
        let t = match parsed {
            Ok(t) => t,
            Err(why) => {
                if a.strict {
                    bail!("{}:{line_no}: {why}", a.input.display());
                }
                s.malformed += 1;
                continue;
            }
        };
        let dev = devices.entry(fields[0].to_string()).or_insert_with(|| Device {
            buf: vec![0.0; window * f],
            times: vec![String::new(); window],
            filled: 0,
            since_emit: 0,
            last_t: f64::NEG_INFINITY,
            windows: 0,
            samples: 0,
        });
        if t <= dev.last_t {
            if a.strict {
                bail!("{}:{line_no}: device '{}' time {t} is not after {}", a.input.display(), fields[0], dev.last_t);
            }
            s.out_of_order += 1;
            continue;
        }
        if a.max_gap.is_some_and(|g| dev.filled > 0 && t - dev.last_t > g) {
            s.gaps += 1;
            dev.filled = 0;
            dev.since_emit = 0;
        }
        dev.last_t = t;
        dev.samples += 1;
        let slot = dev.filled % window;
        dev.buf[slot * f..(slot + 1) * f].copy_from_slice(&vals);
        dev.times[slot] = fields[1].to_string();
        dev.filled += 1;
        dev.since_emit += 1;
        if dev.filled >= window && (dev.filled == window || dev.since_emit >= stride) {
            dev.since_emit = 0;
            dev.windows += 1;
            // Oldest sample first.
            let first = dev.filled % window;
            for k in 0..window {
                let i = (first + k) % window;
                pending.extend_from_slice(&dev.buf[i * f..(i + 1) * f]);
            }
            jobs.push(Job { device: fields[0].to_string(), start: dev.times[first].clone(), end: fields[1].to_string() });
            s.windows += 1;
            if jobs.len() >= a.batch {
                flush(&mut jobs, &mut pending, &mut out)?;
                pb.set_message(format!("{} windows", s.windows));
            }
        }
    }
    flush(&mut jobs, &mut pending, &mut out)?;
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    std::fs::rename(&out_file, &a.out).with_context(|| format!("{}: cannot write", a.out.display()))?;
    pb.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let short = devices.values().filter(|d| d.windows == 0).count();
    let samples: usize = devices.values().map(|d| d.samples).sum();
    eprintln!("rows read             {}", s.rows);
    eprintln!("rows skipped          {} malformed, {} out of time order", s.malformed, s.out_of_order);
    eprintln!("devices               {} ({} with fewer samples than a window of {window})", devices.len(), short);
    eprintln!("windows restarted     {} (gap > --max-gap)", s.gaps);
    eprintln!("windows scored        {} -> {}", s.windows, a.out.display());
    eprintln!("time                  {secs:.2} s, {:.0} samples/s", samples as f64 / secs.max(1e-9));
    Ok(())
}

/// Parses timestamp and values of a row into `vals`; returns the timestamp.
fn parse_row(fields: &[&str], f: usize, vals: &mut [f32]) -> std::result::Result<f64, String> {
    if fields.len() != 2 + f {
        return Err(format!("expected {} fields (device, timestamp, {f} value(s)), found {}", 2 + f, fields.len()));
    }
    if fields[0].is_empty() {
        return Err("empty device id".into());
    }
    let t: f64 = fields[1].parse().map_err(|_| format!("timestamp '{}' is not a number", fields[1]))?;
    if !t.is_finite() {
        return Err(format!("timestamp '{}' is not finite", fields[1]));
    }
    for (v, cell) in vals.iter_mut().zip(&fields[2..]) {
        *v = cell.parse().map_err(|_| format!("value '{cell}' is not a number"))?;
        if !v.is_finite() {
            return Err(format!("value '{cell}' is not finite"));
        }
    }
    Ok(t)
}
