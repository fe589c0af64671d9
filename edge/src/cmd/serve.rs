//! `edge serve`: the runtime as a live gateway service (see `edge::serve` for the design and
//! the delivery guarantee, and the README's "Running on a gateway").
//!
//! Every flag can also come from a TOML file (`--config`), keys named as the flags without the
//! dashes (`broker = "mqtt://..."`, `max-devices = 500`, booleans as `true`); flags given on the
//! command line win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use edge::serve::gateway::{Gateway, GatewayParams};
use edge::serve::metrics::Metrics;
use edge::serve::mqtt::{self, ServeOptions};
use edge::serve::streams::{Model, Windowing};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of these flags (keys without the leading dashes); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory (its model.bundle is served; SIGHUP reloads it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where device state, the log and unsent results live [default: $STATE_DIRECTORY, as
    /// systemd's StateDirectory= sets it].
    #[arg(long, env = "STATE_DIRECTORY")]
    state_dir: Option<PathBuf>,
    /// Broker: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883, TLS).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Client id (the publisher connection uses ID-pub). Keep it stable across restarts.
    #[arg(long, default_value = "edge-serve")]
    client_id: String,
    /// User name.
    #[arg(long)]
    username: Option<String>,
    /// Password [env EDGE_SERVE_PASSWORD].
    #[arg(long, env = "EDGE_SERVE_PASSWORD", hide_env_values = true, conflicts_with = "password_file")]
    password: Option<String>,
    /// File holding the password (first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for TLS [default: the system's].
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Subscription; the device id is the level of its first '+'.
    #[arg(long, default_value = "sensors/+/samples")]
    subscribe: String,
    /// 1-based topic level holding the device id [default: the subscription's first '+'].
    #[arg(long)]
    device_level: Option<usize>,
    /// Topic results go to; {device} is replaced by the device id.
    #[arg(long, default_value = "clusters/{device}")]
    publish: String,
    #[command(flatten)]
    windows: super::WindowArgs,
    /// Devices kept in memory; the least recently active one goes to disk when another arrives.
    #[arg(long, default_value_t = 10_000)]
    max_devices: usize,
    /// Longest time (ms) a received message waits for the state fsync and its acknowledgement.
    #[arg(long, default_value_t = 1000)]
    flush_interval_ms: u64,
    /// Messages that trigger a flush before the interval (a broker in-flight limit below it
    /// makes flushes come from the interval alone).
    #[arg(long, default_value_t = 20)]
    flush_messages: usize,
    /// Longest time (s) between state snapshots.
    #[arg(long, default_value_t = 300)]
    snapshot_interval_s: u64,
    /// Log size (MiB) that triggers a snapshot (0: each begins when the last is written).
    #[arg(long, default_value_t = 64)]
    snapshot_mib: u64,
    /// Results waiting for the broker before intake pauses (nothing is dropped).
    #[arg(long, default_value_t = 100_000)]
    max_pending_results: usize,
    /// Messages held unacknowledged (waiting for their flush) before reading from the broker
    /// pauses; at least --flush-messages.
    #[arg(long, default_value_t = 1000)]
    max_unacked_messages: usize,
    /// Local address of /metrics and /healthz ("off" for none).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: String,
    /// MQTT keep-alive (s).
    #[arg(long, default_value_t = 30)]
    keep_alive_s: u64,
    /// Wait before reconnecting to the broker (ms).
    #[arg(long, default_value_t = 1000)]
    reconnect_delay_ms: u64,
    /// On SIGTERM, how long (ms) to wait for the broker to acknowledge results already sent.
    #[arg(long, default_value_t = 2000)]
    shutdown_grace_ms: u64,
}

/// `edge serve`'s own parser, to read the command line again with the config file's values in
/// front (later values override earlier ones).
#[derive(Parser)]
#[command(name = "edge serve", args_override_self = true)]
struct Reparse {
    #[command(flatten)]
    args: ServeArgs,
}

/// Command-line tokens for the TOML table `t`.
fn config_tokens(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the config file", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{}: not a valid TOML file", path.display()))?;
    let mut out = Vec::new();
    for (k, v) in table {
        if k == "config" {
            bail!("{}: a config file cannot name another config file", path.display());
        }
        let flag = format!("--{}", k.replace('_', "-"));
        match v {
            toml::Value::String(s) => out.extend([flag, s]),
            toml::Value::Integer(i) => out.extend([flag, i.to_string()]),
            toml::Value::Float(f) => out.extend([flag, f.to_string()]),
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            other => bail!("{}: key '{k}': expected a string, number or boolean, found {}", path.display(), other.type_str()),
        }
    }
    Ok(out)
}

/// The arguments with the config file applied under the command line's own.
fn with_config(a: ServeArgs) -> Result<ServeArgs> {
    let Some(path) = a.config.clone() else { return Ok(a) };
    let mut argv = vec!["edge serve".to_string()];
    argv.extend(config_tokens(&path)?);
    let cli: Vec<String> = std::env::args().collect();
    let after = cli.iter().position(|s| s == "serve").map_or(cli.len(), |i| i + 1);
    argv.extend(cli[after..].iter().cloned());
    Reparse::try_parse_from(&argv).map(|r| r.args).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(a: ServeArgs) -> Result<()> {
    let a = with_config(a)?;
    let Some(model_dir) = a.model.clone() else { bail!("--model is required (on the command line or in --config)") };
    let Some(state_dir) = a.state_dir.clone() else {
        bail!("--state-dir is required (or $STATE_DIRECTORY, which systemd sets from StateDirectory=)")
    };
    let password = match &a.password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("{}: cannot read the password file", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        None => a.password.clone(),
    };
    let o = ServeOptions {
        broker: a.broker,
        client_id: a.client_id,
        username: a.username,
        password,
        ca_file: a.ca_file,
        client_cert: a.client_cert,
        client_key: a.client_key,
        subscribe: a.subscribe,
        device_level: a.device_level,
        publish: a.publish,
        keep_alive: Duration::from_secs(a.keep_alive_s),
        flush_interval: Duration::from_millis(a.flush_interval_ms),
        flush_messages: a.flush_messages,
        snapshot_interval: Duration::from_secs(a.snapshot_interval_s),
        snapshot_bytes: a.snapshot_mib.saturating_mul(1 << 20),
        max_pending_results: a.max_pending_results,
        max_unacked: a.max_unacked_messages,
        reconnect_delay: Duration::from_millis(a.reconnect_delay_ms),
        shutdown_grace: Duration::from_millis(a.shutdown_grace_ms),
    };
    let prepared = mqtt::prepare(o)?;
    let bundle_path = model_dir.join("model.bundle");
    let bytes = std::fs::read(&bundle_path).with_context(|| format!("{}: cannot read the model bundle", bundle_path.display()))?;
    let model = Model::load(&bytes).with_context(|| format!("{}", bundle_path.display()))?;
    let (window, stride) = a.windows.window_and_stride(model.seq_len());
    edge::sessions::check_min_len("--window", window, model.min_len() as usize).map_err(anyhow::Error::msg)?;
    let p = GatewayParams { windowing: Windowing { window, stride, max_gap: a.windows.max_gap }, max_devices: a.max_devices };
    let log: mqtt::LogFn = Arc::new(|line: &str| eprintln!("{} edge serve: {line}", unix_time()));
    let (gateway, rec) =
        Gateway::open(&state_dir, &p, model, &bytes).with_context(|| format!("state directory {}", state_dir.display()))?;
    log(&format!(
        "serving model {:08x} from {}; state {}: {} device(s) in memory, {} on disk, {} result(s) to send, {} log record(s) replayed{}{}",
        model.id,
        model_dir.display(),
        state_dir.display(),
        rec.devices,
        rec.evicted_devices,
        rec.pending_results,
        rec.records,
        if rec.truncated_bytes > 0 {
            format!(", torn log tail of {} bytes cut (never acknowledged: the broker resends it)", rec.truncated_bytes)
        } else {
            String::new()
        },
        if rec.windows_restarted > 0 {
            format!(", {} open window(s) restarted (model or windowing changed)", rec.windows_restarted)
        } else {
            String::new()
        },
    ));
    let metrics = Metrics::new();
    if a.metrics != "off" {
        let addr: SocketAddr = a.metrics.parse().with_context(|| format!("--metrics '{}': expected HOST:PORT or off", a.metrics))?;
        let bound = metrics.serve(addr).map_err(anyhow::Error::msg)?;
        log(&format!("metrics on http://{bound}/metrics, health on http://{bound}/healthz"));
    }
    mqtt::run(prepared, gateway, bundle_path, metrics, log)?;
    Ok(())
}

fn unix_time() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}
