//! Training speed on ECG5000 with the seed hyper-parameters (4500 series x 140 steps, batch 32,
//! hidden 90, latent 20, Adam, clip 5): seconds per epoch and milliseconds per batch, median of
//! `EPOCHS` epochs, for LSTM and GRU on 1 and 2 threads. Prints a table (also as CSV lines
//! starting with `csv,` for `bench/compare-train.sh`).
//!
//! `cargo bench -p trainer --bench train_epoch [-- EPOCHS [lstm|gru]... [1|2]... [ragged]]` (no
//! cell or thread count given: all of them).
//!
//! `ragged`: native-length training instead. Every series is cut to a seeded random length in
//! 35..=140 (4x range; padded batches, masked loss, length-bucketed order), against the same
//! series all cut to the mean of those lengths (equal-length batches of the same total real
//! steps): the table gives both and the overhead of the ragged batches.
//!
//! Each cell and thread count runs in a child process of its own, with candle's element-wise
//! thread pool (sized once per process) as large as the training pool: a "1 thread" figure then
//! uses one core for everything, like PyTorch after `torch.set_num_threads(1)`.

use std::process::Command;

use candle_core::Device;
use trainer::data::{bundled, prep::split, Series};
use trainer::model::ModelConfig;
use trainer::params::{Cell, VraeParams};
use trainer::train::train;

/// Set in a child: `cell,threads,epochs` of the one configuration it runs.
const CHILD: &str = "TRAIN_EPOCH_RUN";

fn main() {
    trainer::train::park_idle_candle_workers();
    if let Ok(spec) = std::env::var(CHILD) {
        let parts: Vec<&str> = spec.split(',').collect();
        let cell = if parts[0] == "gru" { Cell::Gru } else { Cell::Lstm };
        let variant = parts.get(3).copied().unwrap_or("full");
        run_one(cell, parts[1].parse().expect("thread count"), parts[2].parse().expect("epochs"), variant);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let epochs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let wanted_cells: Vec<&str> = args.iter().map(String::as_str).filter(|a| matches!(*a, "lstm" | "gru")).collect();
    let wanted_threads: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let variants: &[&str] = if args.iter().any(|a| a == "ragged") { &["equal", "ragged"] } else { &["full"] };
    let n = training_series().len();
    println!("ECG5000: {n} training series, {} batches of 32 per epoch, median of {epochs} epochs", n.div_ceil(32));
    if variants.len() > 1 {
        let (lengths, mean) = ragged_lengths(n);
        println!(
            "ragged: lengths {}..={} (mean {mean}); equal: every series {mean} steps",
            lengths.iter().min().unwrap(),
            lengths.iter().max().unwrap()
        );
    }
    println!("{:<5} {:>7} {:>7} {:>11} {:>11} {:>14}", "cell", "threads", "variant", "s/epoch", "ms/batch", "ns/real step");
    let exe = std::env::current_exe().expect("own executable");
    for cell in ["lstm", "gru"] {
        if !wanted_cells.is_empty() && !wanted_cells.contains(&cell) {
            continue;
        }
        for threads in [1usize, 2] {
            if !wanted_threads.is_empty() && !wanted_threads.contains(&threads) {
                continue;
            }
            for variant in variants {
                let out = Command::new(&exe)
                    .env(CHILD, format!("{cell},{threads},{epochs},{variant}"))
                    .env("CANDLE_NUM_THREADS", threads.to_string())
                    .output()
                    .expect("child bench runs");
                assert!(out.status.success(), "{cell} {threads}: {}", String::from_utf8_lossy(&out.stderr));
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
}

/// The series `trainer fit` trains on by default (90% of ECG5000).
fn training_series() -> Vec<Series> {
    let ds = bundled::ecg5000().expect("bundled data");
    let (train_idx, _) = split(ds.len(), 0.1, 0);
    train_idx.iter().map(|&i| ds.series[i].clone()).collect()
}

/// Seeded lengths in 35..=140 for `n` series, and their mean (rounded).
fn ragged_lengths(n: usize) -> (Vec<usize>, usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let lengths: Vec<usize> = (0..n).map(|_| rng.gen_range(35..=140)).collect();
    let mean = (lengths.iter().sum::<usize>() as f64 / n as f64).round() as usize;
    (lengths, mean)
}

fn cut(s: &Series, n: usize) -> Series {
    Series { values: s.values[..n].to_vec(), len: n }
}

fn run_one(cell: Cell, threads: usize, epochs: usize, variant: &str) {
    let name = format!("{cell:?}").to_lowercase();
    let mut series = training_series();
    let (lengths, mean) = ragged_lengths(series.len());
    match variant {
        "ragged" => series = series.iter().zip(&lengths).map(|(s, &n)| cut(s, n)).collect(),
        "equal" => series = series.iter().map(|s| cut(s, mean)).collect(),
        _ => {}
    }
    let real_steps: usize = series.iter().map(|s| s.len).sum();
    let seq_len = series.iter().map(|s| s.len).max().unwrap_or(140);
    let batches = series.len().div_ceil(32);
    let p = VraeParams { cell, epochs, ..VraeParams::seed() };
    let cfg = ModelConfig {
        cell,
        n_features: 1,
        seq_len,
        hidden_size: p.hidden_size,
        hidden_layer_depth: p.hidden_layer_depth,
        latent_length: p.latent_length,
        dropout: p.dropout,
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let (_, log) = pool
        .install(|| train(&p.clone().check().expect("valid"), &cfg, &series, &Device::Cpu, &trainer::progress::quiet))
        .expect("training runs");
    let mut secs: Vec<f64> = log.iter().map(|e| e.seconds).collect();
    secs.sort_by(f64::total_cmp);
    let med = secs[secs.len() / 2];
    let per_step = med * 1e9 / real_steps as f64;
    println!("{name:<5} {threads:>7} {variant:>7} {med:>11.2} {:>11.1} {per_step:>14.0}", med * 1000.0 / batches as f64);
    if variant == "full" {
        println!("csv,rust,{name},{threads},{med:.4},{:.3}", med * 1000.0 / batches as f64);
    }
}
