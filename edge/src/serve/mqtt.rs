//! The broker side of `edge serve`: its options and connection settings, and [`run`], which
//! wires two MQTT connections, three tasks and the processor thread that owns the [`Gateway`].
//!
//! - **Subscriber** (`subscriber.rs`; client id `ID`, persistent session, QoS 1, manual acknowledgements): polls
//!   its event loop and hands each message to the processor. It also writes the processor's
//!   acknowledgements itself, straight onto its connection (see `write_acks` for why not through
//!   rumqttc's request queue), and stops reading once `max_unacked` messages are held: that,
//!   not the broker's in-flight limit, bounds what it holds.
//! - **Processor** (`processor.rs`, a thread): parses, applies, and every `flush_messages` messages or
//!   `flush_interval` runs the encoder over the batch's samples for all devices together and
//!   makes the log durable ([`Gateway::sync`]); only then are the messages
//!   acknowledged and their windows published. When the log is large or old it begins a
//!   snapshot, which a `snapshot` thread writes while it goes on ([`Gateway::begin_snapshot`]).
//! - **Publisher** (`publisher.rs`; client id `ID-pub`, QoS 1): a poll loop and a feeder send
//!   results, maps each packet id to its
//!   result as rumqttc reports the send, and reports the broker's acknowledgement back.
//!
//! After a connection error each connection starts a fresh rumqttc event loop (and request
//! channel), so nothing queued for a dead connection is sent on the next one: acknowledgements
//! of the old connection are dropped (the broker redelivers those messages; the gateway skips
//! them as already applied and acknowledges them again), and every result not yet acknowledged
//! is sent again in order on the new publisher connection.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use tokio::sync::Notify;

use super::gateway::{Gateway, GatewayError};
use super::metrics::Metrics;
use super::processor::{Ack, Control, Incoming, Links, Processor};
use super::publisher::{Feeder, PubState, Publisher};
use super::streams::Model;
use super::subscriber::Subscriber;
use super::topic::{DeviceLevel, PublishTemplate, TopicError};

/// How to reach the broker and how often to flush (the `edge serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (8883, TLS).
    pub broker: String,
    /// Client id of the subscriber; the publisher uses `ID-pub`. Keep it stable: the broker
    /// keeps the subscriber's session (and messages queued while it is down) under it.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// CA certificates (PEM) for mqtts [default: the system's].
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Subscription, e.g. `sensors/+/samples`.
    pub subscribe: String,
    /// 1-based topic level holding the device id [default: the subscription's first `+`].
    pub device_level: Option<usize>,
    /// Result topic template, with `{device}`.
    pub publish: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Longest time an applied message waits for the log fsync (and its acknowledgement).
    pub flush_interval: Duration,
    /// Messages that trigger a flush before the interval. A broker that holds to an in-flight
    /// limit below it makes flushes come from the interval alone.
    pub flush_messages: usize,
    /// Longest time between snapshots.
    pub snapshot_interval: Duration,
    /// Log size that triggers a snapshot.
    pub snapshot_bytes: u64,
    /// Results waiting for the broker before intake pauses.
    pub max_pending_results: usize,
    /// Messages received and not yet acknowledged (applied, waiting for their flush) before the
    /// subscriber stops reading from the broker: the bound on what a broker that ignores its
    /// own in-flight limit can make us hold. At least `flush_messages`.
    pub max_unacked: usize,
    /// Wait before reconnecting.
    pub reconnect_delay: Duration,
    /// On SIGTERM, how long to wait for the broker to acknowledge results already sent.
    pub shutdown_grace: Duration,
}

/// Why `edge serve` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A topic setting.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The gateway (state directory, model).
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A bad option.
    #[error("{0}")]
    Options(String),
    /// A TLS file.
    #[error("{path}: {why}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Could not start the async runtime or a thread.
    #[error("cannot start: {0}")]
    Start(std::io::Error),
    /// The snapshot writer thread panicked (the snapshot it wrote is not trusted).
    #[error("the snapshot writer thread panicked")]
    SnapshotWriter,
}

/// Lines for the operator's log (the binary prints them).
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// `host, port, tls` of a broker URL.
fn parse_broker(url: &str) -> Result<(String, u16, bool), ServeError> {
    let bad = |why: &str| ServeError::Options(format!("--broker '{url}': {why} (expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT])"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(bad("unknown scheme"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("the port is not a number 1-65535"))?)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad("no host or port"));
    }
    Ok((host.to_string(), port, tls))
}

fn tls_config(o: &ServeOptions) -> Result<rustls::ClientConfig, ServeError> {
    let err = |path: &PathBuf, why: String| ServeError::Tls { path: path.clone(), why };
    let read = |path: &PathBuf| File::open(path).map(BufReader::new).map_err(|e| err(path, e.to_string()));
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca_file {
        Some(path) => {
            for cert in rustls_pemfile::certs(&mut read(path)?) {
                let cert = cert.map_err(|e| err(path, format!("not a PEM certificate file: {e}")))?;
                roots.add(cert).map_err(|e| err(path, format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err(path, "holds no PEM certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Options(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (&o.client_cert, &o.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cp), Some(kp)) => {
            let certs = rustls_pemfile::certs(&mut read(cp)?).collect::<Result<Vec<_>, _>>().map_err(|e| err(cp, e.to_string()))?;
            let key = rustls_pemfile::private_key(&mut read(kp)?)
                .map_err(|e| err(kp, e.to_string()))?
                .ok_or_else(|| err(kp, "holds no PEM private key".into()))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| err(cp, format!("client certificate and key do not match: {e}")))
        }
        _ => Err(ServeError::Options("--client-cert and --client-key go together".into())),
    }
}

/// MQTT options for one connection.
fn mqtt_options(
    o: &ServeOptions,
    (host, port): (&str, u16),
    client_id: &str,
    persistent: bool,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mut m = MqttOptions::new(client_id, host, port);
    m.set_keep_alive(o.keep_alive.max(Duration::from_secs(1)));
    m.set_clean_session(!persistent);
    m.set_manual_acks(persistent);
    m.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(u) = &o.username {
        m.set_credentials(u.clone(), o.password.clone().unwrap_or_default());
    }
    if let Some(t) = tls {
        m.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(t.clone())));
    }
    m
}

/// Options checked and turned into what the connections need: [`prepare`] runs before the
/// state directory is opened, so a wrong flag fails before anything is touched.
pub struct Prepared {
    o: ServeOptions,
    level: DeviceLevel,
    template: PublishTemplate,
    sub_opts: MqttOptions,
    pub_opts: MqttOptions,
}

/// Checks the options (topics, broker URL, TLS files, counts) and builds both connections' settings.
pub fn prepare(o: ServeOptions) -> Result<Prepared, ServeError> {
    let level = DeviceLevel::new(&o.subscribe, o.device_level)?;
    let template = PublishTemplate::new(&o.publish)?;
    if o.flush_messages == 0 || o.max_pending_results == 0 {
        return Err(ServeError::Options("--flush-messages and --max-pending-results must be at least 1".into()));
    }
    if o.max_unacked < o.flush_messages {
        return Err(ServeError::Options(format!(
            "--max-unacked-messages ({}) must be at least --flush-messages ({}): a flush would only ever come from the interval",
            o.max_unacked, o.flush_messages
        )));
    }
    let (host, port, tls) = parse_broker(&o.broker)?;
    let tls = if tls || o.ca_file.is_some() { Some(Arc::new(tls_config(&o)?)) } else { None };
    let sub_opts = mqtt_options(&o, (&host, port), &o.client_id, true, tls.as_ref());
    let pub_opts = mqtt_options(&o, (&host, port), &format!("{}-pub", o.client_id), false, tls.as_ref());
    Ok(Prepared { o, level, template, sub_opts, pub_opts })
}

/// Runs `edge serve` until SIGTERM/SIGINT. `model_bundle` is where SIGHUP reloads from.
pub fn run(p: Prepared, gateway: Gateway, model_bundle: PathBuf, metrics: Metrics, log: LogFn) -> Result<(), ServeError> {
    let Prepared { o, level, template, sub_opts, pub_opts } = p;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Start)?;
    // Never full: the subscriber holds at most `max_unacked` messages.
    let (msg_tx, msg_rx) = flume::bounded::<Incoming>(o.max_unacked + 1);
    let (ctl_tx, ctl_rx) = flume::unbounded::<Control>();
    let (ack_tx, ack_rx) = flume::unbounded::<Ack>();
    let pubs = Arc::new(Mutex::new(PubState::default()));
    let wake = Arc::new(Notify::new());

    // Results to publish after a restart: everything durable and unacknowledged.
    {
        let mut p = pubs.lock().expect("not poisoned");
        for r in gateway.releasable() {
            p.queue(r, None);
        }
    }

    let subscriber = Subscriber {
        opts: sub_opts,
        subscribe: o.subscribe.clone(),
        reconnect_delay: o.reconnect_delay,
        max_unacked: o.max_unacked,
        metrics: metrics.clone(),
        log: log.clone(),
        messages: msg_tx,
        acks: ack_rx,
    };
    let publisher = Publisher {
        opts: pub_opts,
        pubs: pubs.clone(),
        wake: wake.clone(),
        control: ctl_tx.clone(),
        metrics: metrics.clone(),
        log: log.clone(),
        reconnect_delay: o.reconnect_delay,
    };
    let feeder = Feeder { pubs: pubs.clone(), wake: wake.clone(), template };
    let links = Links { messages: msg_rx, control: ctl_rx, acks: ack_tx, pubs, wake };
    let processor = {
        let p = Processor::new(o, gateway, level, links, metrics, log.clone());
        let log = log.clone();
        std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || -> Result<(), ServeError> {
                let r = p.run();
                if let Err(e) = &r {
                    log(&format!("error: {e}"));
                }
                r
            })
            .map_err(ServeError::Start)?
    };

    rt.block_on(async {
        let tasks = [tokio::spawn(subscriber.run()), tokio::spawn(publisher.run()), tokio::spawn(feeder.run())];
        until_stopped(processor, &ctl_tx, &model_bundle, &log).await;
        // Let the last acknowledgements reach the broker, then leave.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for t in tasks {
            t.abort();
        }
    });
    Ok(())
}

/// Turns signals into control messages (SIGTERM/SIGINT: shutdown; SIGHUP: reload the model
/// from `model_bundle`) until the processor thread ends.
async fn until_stopped(processor: JoinHandle<Result<(), ServeError>>, control: &flume::Sender<Control>, model_bundle: &Path, log: &LogFn) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                log("cannot install signal handlers");
                return;
            }
        };
    let mut processor_done = tokio::task::spawn_blocking(move || processor.join());
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = term.recv(), if !stopping => { log("SIGTERM: flushing state and stopping"); stopping = true; let _ = control.send(Control::Shutdown); }
            _ = int.recv(), if !stopping => { log("SIGINT: flushing state and stopping"); stopping = true; let _ = control.send(Control::Shutdown); }
            _ = hup.recv() => {
                match std::fs::read(model_bundle).map_err(|e| e.to_string()).and_then(|b| Model::load(&b).map(|m| (m, b)).map_err(|e| e.to_string())) {
                    Ok((m, bytes)) => { let _ = control.send(Control::Reload(Box::new(m), bytes)); }
                    Err(e) => log(&format!("SIGHUP: {}: {e}; still serving the current model", model_bundle.display())),
                }
            }
            _ = &mut processor_done => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884, false));
        assert_eq!(parse_broker("mqtts://broker.local/").unwrap(), ("broker.local".into(), 8883, true));
        assert_eq!(parse_broker("mqtt://[::1]:1883").unwrap(), ("::1".into(), 1883, false));
        for (url, want) in [
            ("http://h", "unknown scheme"),
            ("mqtt://h:x", "the port is not a number"),
            ("mqtt://", "no host"),
            ("mqtt://h:0", "no host or port"),
        ] {
            let e = parse_broker(url).unwrap_err().to_string();
            assert!(e.contains(url) && e.contains(want), "{url}: {e}");
        }
    }
}
