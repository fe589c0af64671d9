//! The `edge` binary: `edge assign` scores a recorded fleet file, `edge serve` scores live
//! samples from an MQTT broker. One file per command in `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "edge", version, about = "Score a fleet's readings with a trained model: recorded (assign) or live over MQTT (serve)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster ID, distance, runner-up distance and anomaly flag for every device window, and
    /// one row per device.
    Assign(cmd::assign::AssignArgs),
    /// Live gateway service: samples over MQTT in, each window's cluster out; state survives
    /// restarts (design and delivery guarantee: the `edge::serve` module docs).
    Serve(Box<cmd::serve::ServeArgs>),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Assign(a) => cmd::assign::run(a),
        Cmd::Serve(a) => cmd::serve::run(*a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
