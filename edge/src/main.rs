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
    /// Live gateway service: samples over MQTT in, each window's cluster out, nothing lost on restart
    ///
    /// Payloads: {"t": T, "v": [..]}, a JSON list of them, {"samples": [..]} or CSV lines
    /// "t,v1[,v2..]". Every delivered sample is applied exactly once (messages are acknowledged
    /// after the state fsync); every result is published at least once, a re-send carrying the
    /// same "seq". SIGTERM flushes and exits, SIGHUP reloads the model. Details, the systemd
    /// unit and the example config: the README's "Running on a gateway" and edge/deploy/.
    #[command(verbatim_doc_comment)]
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
