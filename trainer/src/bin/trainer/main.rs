//! `trainer`: fit a VRAE on time series, embed series, assign clusters.
//!
//! One file per command (`fit.rs`, `infer.rs` for embed and cluster, `export.rs`, `plot.rs`,
//! `import.rs`), the flags apart in `args.rs`.

mod args;
mod common;
mod export;
mod fit;
mod import;
mod infer;
mod plot;

use clap::Parser;

use args::{Cli, Cmd};

fn main() {
    trainer::train::park_idle_candle_workers();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Fit(a) => fit::run_fit(*a),
        Cmd::Embed(a) => infer::run_infer(a, false),
        Cmd::Cluster(a) => infer::run_infer(a, true),
        Cmd::Export(a) => export::run_export(a),
        Cmd::Plot(a) => plot::run_plot(a),
        Cmd::Import(a) => import::run_import(*a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
