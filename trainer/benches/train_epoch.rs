//! Training speed on ECG5000 with the seed hyper-parameters (4500 series x 140 steps, batch 32,
//! hidden 90, latent 20, Adam, clip 5): seconds per epoch and milliseconds per batch, median of
//! `EPOCHS` epochs, for LSTM and GRU on 1 and 2 threads. Prints a table (also as CSV lines
//! starting with `csv,` for `bench/compare-train.sh`).
//!
//! `cargo bench -p trainer --bench train_epoch [-- EPOCHS [lstm|gru]... [1|2]...]` (no cell or
//! thread count given: all of them).
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
        run_one(cell, parts[1].parse().expect("thread count"), parts[2].parse().expect("epochs"));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let epochs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let wanted_cells: Vec<&str> = args.iter().map(String::as_str).filter(|a| matches!(*a, "lstm" | "gru")).collect();
    let wanted_threads: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = training_series().len();
    println!("ECG5000: {n} training series, {} batches of 32 per epoch, median of {epochs} epochs", n.div_ceil(32));
    println!("{:<5} {:>7} {:>11} {:>11}", "cell", "threads", "s/epoch", "ms/batch");
    let exe = std::env::current_exe().expect("own executable");
    for cell in ["lstm", "gru"] {
        if !wanted_cells.is_empty() && !wanted_cells.contains(&cell) {
            continue;
        }
        for threads in [1usize, 2] {
            if !wanted_threads.is_empty() && !wanted_threads.contains(&threads) {
                continue;
            }
            let out = Command::new(&exe)
                .env(CHILD, format!("{cell},{threads},{epochs}"))
                .env("CANDLE_NUM_THREADS", threads.to_string())
                .output()
                .expect("child bench runs");
            assert!(out.status.success(), "{cell} {threads}: {}", String::from_utf8_lossy(&out.stderr));
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

/// The series `trainer fit` trains on by default (90% of ECG5000).
fn training_series() -> Vec<Series> {
    let ds = bundled::ecg5000().expect("bundled data");
    let (train_idx, _) = split(ds.len(), 0.1, 0);
    train_idx.iter().map(|&i| ds.series[i].clone()).collect()
}

fn run_one(cell: Cell, threads: usize, epochs: usize) {
    let name = format!("{cell:?}").to_lowercase();
    let series = training_series();
    let batches = series.len().div_ceil(32);
    let p = VraeParams { cell, epochs, ..VraeParams::seed() };
    let cfg = ModelConfig {
        cell,
        n_features: 1,
        seq_len: 140,
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
    println!("{name:<5} {threads:>7} {med:>11.2} {:>11.1}", med * 1000.0 / batches as f64);
    println!("csv,rust,{name},{threads},{med:.4},{:.3}", med * 1000.0 / batches as f64);
}
