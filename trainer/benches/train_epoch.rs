//! Training speed on ECG5000 with the seed hyper-parameters (4500 series x 140 steps, batch 32,
//! hidden 90, latent 20, Adam, clip 5): seconds per epoch and milliseconds per batch, median of
//! `EPOCHS` epochs, for LSTM and GRU on 1 and 2 threads. Prints a table (also as CSV lines
//! starting with `csv,` for `bench/compare-train.sh`).
//!
//! `cargo bench -p trainer --bench train_epoch [-- EPOCHS [lstm|gru]... [1|2]...]` (no cell or
//! thread count given: all of them).

use candle_core::Device;
use trainer::data::{bundled, prep::split, Series};
use trainer::model::ModelConfig;
use trainer::params::{CellKind, VraeParams};
use trainer::train::train;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let epochs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let wanted_cells: Vec<&str> = args.iter().map(String::as_str).filter(|a| matches!(*a, "lstm" | "gru")).collect();
    let wanted_threads: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    let ds = bundled::ecg5000().expect("bundled data");
    let (train_idx, _) = split(ds.len(), 0.1, 0);
    let series: Vec<Series> = train_idx.iter().map(|&i| ds.series[i].clone()).collect();
    let batches = series.len().div_ceil(32);
    println!("ECG5000: {} training series, {batches} batches of 32 per epoch, median of {epochs} epochs", series.len());
    println!("{:<5} {:>7} {:>11} {:>11}", "cell", "threads", "s/epoch", "ms/batch");
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let name = format!("{cell:?}").to_lowercase();
        if !wanted_cells.is_empty() && !wanted_cells.contains(&name.as_str()) {
            continue;
        }
        for threads in [1, 2] {
            if !wanted_threads.is_empty() && !wanted_threads.contains(&threads) {
                continue;
            }
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
                .install(|| train(&p.clone().check().expect("valid"), &cfg, &series, &Device::Cpu, false))
                .expect("training runs");
            let mut secs: Vec<f64> = log.iter().map(|e| e.seconds).collect();
            secs.sort_by(f64::total_cmp);
            let med = secs[secs.len() / 2];
            println!("{name:<5} {threads:>7} {med:>11.2} {:>11.1}", med * 1000.0 / batches as f64);
            println!("csv,rust,{name},{threads},{med:.4},{:.3}", med * 1000.0 / batches as f64);
        }
    }
}
