//! The broker side of `edge serve`: two MQTT connections, three tasks and the processor thread
//! that owns the [`Gateway`].
//!
//! - **Subscriber** (client id `ID`, persistent session, QoS 1, manual acknowledgements): polls
//!   its event loop and hands each message to the processor. It also writes the processor's
//!   acknowledgements itself, straight onto its connection (see `write_acks` for why not through
//!   rumqttc's request queue), and stops reading once `max_unacked` messages are held: that,
//!   not the broker's in-flight limit, bounds what it holds.
//! - **Processor** (a thread): parses, applies, and every `flush_messages` messages or
//!   `flush_interval` runs the encoder over the batch's samples for all devices together and
//!   makes the log durable ([`Gateway::sync`]); only then are the messages
//!   acknowledged and their windows published. When the log is large or old it begins a
//!   snapshot, which a `snapshot` thread writes while it goes on ([`Gateway::begin_snapshot`]).
//! - **Publisher** (client id `ID-pub`, QoS 1): sends results, maps each packet id to its
//!   result as rumqttc reports the send, and reports the broker's acknowledgement back.
//!
//! After a connection error each connection starts a fresh rumqttc event loop (and request
//! channel), so nothing queued for a dead connection is sent on the next one: acknowledgements
//! of the old connection are dropped (the broker redelivers those messages; the gateway skips
//! them as already applied and acknowledges them again), and every result not yet acknowledged
//! is sent again in order on the new publisher connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing as Out, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::Notify;

use super::gateway::{Gateway, GatewayError, Outgoing, WrittenSnapshot};
use super::metrics::Metrics;
use super::payload;
use super::streams::Model;
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

/// Messages to the processor.
enum Control {
    /// The broker acknowledged result `seq`, `latency` after its last sample arrived.
    Acked(u64, Option<Duration>),
    /// Serve this model (SIGHUP).
    Reload(Model, Vec<u8>),
    /// Flush, snapshot and stop (SIGTERM).
    Shutdown,
}

/// A received message, the incarnation of the subscriber connection it came on, and when.
struct Incoming {
    publish: Publish,
    connection: u64,
    at: Instant,
}

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

/// An acknowledgement to write: the subscriber connection's incarnation and the packet id.
type Ack = (u64, u16);

/// What the subscriber loop does next.
enum Step {
    /// An acknowledgement from the processor (`None`: the processor has stopped).
    Ack(Option<Ack>),
    /// The event loop's next event.
    Event(Result<Event, rumqttc::ConnectionError>),
}

/// Writes `first` and every acknowledgement already waiting straight onto the subscriber's
/// connection, one flush for all; returns how many were for this connection. Acks of an older
/// connection are dropped (the broker redelivers those messages).
///
/// Why not `AsyncClient::ack`: rumqttc's event loop takes one request per poll but reads up to
/// ten packets, so against a broker that does not hold to its in-flight limit (mosquitto 2.0
/// sent thousands unacknowledged here) queued acks fall ever further behind and memory grows.
/// Written here, in the polling task, they go out as soon as the processor releases them, and
/// the subscriber can stop reading at `max_unacked` without ever waiting on its own poll.
async fn write_acks(
    events: &mut EventLoop,
    incarnation: u64,
    first: Ack,
    rx: &flume::Receiver<Ack>,
) -> Result<usize, rumqttc::ConnectionError> {
    let Some(net) = events.network.as_mut() else { return Ok(0) };
    let mut n = 0;
    for (i, pkid) in std::iter::once(first).chain(rx.try_iter()) {
        if i == incarnation {
            net.write(Packet::PubAck(rumqttc::PubAck::new(pkid))).await.map_err(rumqttc::ConnectionError::MqttState)?;
            n += 1;
        }
    }
    if n > 0 {
        net.flush().await.map_err(rumqttc::ConnectionError::MqttState)?;
    }
    Ok(n)
}

/// What the publisher tracks; see the module docs.
#[derive(Default)]
struct PubState {
    client: Option<AsyncClient>,
    /// Results not acknowledged, by seq, with when their last sample arrived.
    all: BTreeMap<u64, (Outgoing, Option<Instant>)>,
    /// Seqs to hand to the client, in order.
    waiting: VecDeque<u64>,
    /// Seqs handed to the client whose packet id rumqttc has not reported yet.
    handed: VecDeque<u64>,
    /// Packet id -> seq of results on the wire.
    on_wire: HashMap<u16, u64>,
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
pub fn run(p: Prepared, mut gateway: Gateway, model_bundle: PathBuf, metrics: Metrics, log: LogFn) -> Result<(), ServeError> {
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
            p.waiting.push_back(r.seq);
            p.all.insert(r.seq, (r, None));
        }
    }

    let processor = {
        let (o, metrics, log, pubs, wake) = (o.clone(), metrics.clone(), log.clone(), pubs.clone(), wake.clone());
        std::thread::Builder::new()
            .name("processor".into())
            .spawn(move || -> Result<(), ServeError> {
                let r = process(&o, &mut gateway, &level, msg_rx, ctl_rx, ack_tx, &pubs, &wake, &metrics, &log);
                if let Err(e) = &r {
                    log(&format!("error: {e}"));
                }
                r
            })
            .map_err(ServeError::Start)?
    };

    rt.block_on(async {
        // Subscriber, which also writes the acknowledgements (see `write_acks`).
        let subscriber = {
            let (metrics, log, subscribe, delay, max_unacked) =
                (metrics.clone(), log.clone(), o.subscribe.clone(), o.reconnect_delay, o.max_unacked);
            tokio::spawn(async move {
                let mut incarnation = 0u64;
                loop {
                    incarnation += 1;
                    let (client, mut events) = AsyncClient::new(sub_opts.clone(), 64);
                    // Received on this connection and not yet acknowledged on the wire.
                    let mut held = 0usize;
                    let mut last_msg: Option<Instant> = None;
                    loop {
                        // At the limit only acknowledgements are awaited: nothing more is read.
                        let step = if held >= max_unacked {
                            Step::Ack(ack_rx.recv_async().await.ok())
                        } else if let Ok(a) = ack_rx.try_recv() {
                            Step::Ack(Some(a))
                        } else if last_msg.is_some_and(|t| t.elapsed() < BUSY) {
                            // Streaming: take what is already read or readable; when nothing
                            // is, nap for `COALESCE` (acknowledgements still go out at once)
                            // so that a few messages wait in the socket and come in one read,
                            // rather than a wake-up and a read per message (see `COALESCE`).
                            match tokio::time::timeout(Duration::ZERO, events.poll()).await {
                                Ok(e) => Step::Event(e),
                                Err(_) => tokio::select! {
                                    biased;
                                    a = ack_rx.recv_async() => Step::Ack(a.ok()),
                                    _ = tokio::time::sleep(COALESCE) => continue,
                                },
                            }
                        } else {
                            // An ack winning the race drops the pending poll: rumqttc keeps
                            // what it had read in its state and frame buffer for the next poll.
                            tokio::select! {
                                biased;
                                a = ack_rx.recv_async() => Step::Ack(a.ok()),
                                e = events.poll() => Step::Event(e),
                            }
                        };
                        let ev = match step {
                            Step::Ack(None) => return,
                            Step::Ack(Some(first)) => {
                                match write_acks(&mut events, incarnation, first, &ack_rx).await {
                                    Ok(n) => {
                                        held = held.saturating_sub(n);
                                        continue;
                                    }
                                    Err(e) => Err(e),
                                }
                            }
                            Step::Event(e) => e,
                        };
                        match ev {
                            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                                metrics.reconnects.inc();
                                log(&format!("subscriber connected (session present: {})", c.session_present));
                                if let Err(e) = client.try_subscribe(subscribe.clone(), QoS::AtLeastOnce) {
                                    log(&format!("cannot subscribe to {subscribe}: {e}"));
                                }
                            }
                            // Up (and healthy) once the subscription holds, not at connect.
                            Ok(Event::Incoming(Packet::SubAck(s))) => {
                                if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                                    log(&format!("the broker refused the subscription to {subscribe}"));
                                } else {
                                    metrics.subscriber_up.store(true, Relaxed);
                                }
                            }
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                held += 1;
                                let at = Instant::now();
                                last_msg = Some(at);
                                let m = Incoming { publish: p, connection: incarnation, at };
                                if msg_tx.send_async(m).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                metrics.subscriber_up.store(false, Relaxed);
                                metrics.connection_errors.inc();
                                log(&format!("subscriber connection: {e}; reconnecting in {delay:?}"));
                                break;
                            }
                        }
                    }
                    drop(client);
                    tokio::time::sleep(delay).await;
                }
            })
        };
        // Publisher: the poll loop and the feeder.
        let publisher = {
            let (pubs, wake, metrics, log, ctl_tx, delay) = (pubs.clone(), wake.clone(), metrics.clone(), log.clone(), ctl_tx.clone(), o.reconnect_delay);
            tokio::spawn(async move {
                loop {
                    let (client, mut events): (AsyncClient, EventLoop) = AsyncClient::new(pub_opts.clone(), 1024);
                    loop {
                        let ev = events.poll().await;
                        let mut p = pubs.lock().expect("not poisoned");
                        match ev {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                metrics.reconnects.inc();
                                // A fresh connection: every unacknowledged result goes again, in order.
                                let resent = p.all.len() - p.waiting.len();
                                metrics.republished.inc_by(resent as u64);
                                p.waiting = p.all.keys().copied().collect();
                                p.handed.clear();
                                p.on_wire.clear();
                                p.client = Some(client.clone());
                                metrics.publisher_up.store(true, Relaxed);
                                log("publisher connected");
                                wake.notify_one();
                            }
                            Ok(Event::Outgoing(Out::Publish(pkid))) => {
                                if let Some(seq) = p.handed.pop_front() {
                                    p.on_wire.insert(pkid, seq);
                                }
                                wake.notify_one();
                            }
                            Ok(Event::Incoming(Packet::PubAck(a))) => {
                                if let Some(seq) = p.on_wire.remove(&a.pkid) {
                                    if let Some((_, at)) = p.all.remove(&seq) {
                                        let _ = ctl_tx.send(Control::Acked(seq, at.map(|t| t.elapsed())));
                                    }
                                }
                                wake.notify_one();
                            }
                            Ok(_) => {}
                            Err(e) => {
                                p.client = None;
                                p.handed.clear();
                                p.on_wire.clear();
                                metrics.publisher_up.store(false, Relaxed);
                                metrics.connection_errors.inc();
                                log(&format!("publisher connection: {e}; reconnecting in {delay:?}"));
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(delay).await;
                }
            })
        };
        let feeder = {
            let (pubs, wake, template) = (pubs.clone(), wake.clone(), template.clone());
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    let mut guard = pubs.lock().expect("not poisoned");
                    let p = &mut *guard;
                    let Some(client) = p.client.clone() else { continue };
                    // Bounded by the request channel: never block while holding the lock.
                    while p.handed.len() < 512 {
                        let Some(seq) = p.waiting.pop_front() else { break };
                        let Some((r, _)) = p.all.get(&seq) else { continue };
                        match client.try_publish(template.topic(&r.device), QoS::AtLeastOnce, false, r.to_json()) {
                            Ok(()) => p.handed.push_back(seq),
                            Err(_) => {
                                p.waiting.push_front(seq);
                                break;
                            }
                        }
                    }
                }
            })
        };

        // Signals.
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
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
                _ = term.recv(), if !stopping => { log("SIGTERM: flushing state and stopping"); stopping = true; let _ = ctl_tx.send(Control::Shutdown); }
                _ = int.recv(), if !stopping => { log("SIGINT: flushing state and stopping"); stopping = true; let _ = ctl_tx.send(Control::Shutdown); }
                _ = hup.recv() => {
                    match std::fs::read(&model_bundle) {
                        Ok(bytes) => match Model::load(&bytes) {
                            Ok(m) => { let _ = ctl_tx.send(Control::Reload(m, bytes)); }
                            Err(e) => log(&format!("SIGHUP: {}: {e}; still serving the current model", model_bundle.display())),
                        },
                        Err(e) => log(&format!("SIGHUP: {}: {e}; still serving the current model", model_bundle.display())),
                    }
                }
                _ = &mut processor_done => break,
            }
        }
        // Let the last acknowledgements reach the broker, then leave.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for t in [subscriber, publisher, feeder] {
            t.abort();
        }
    });
    Ok(())
}

/// While messages keep coming (one within `BUSY`), the processor looks for more every
/// `COALESCE` instead of being woken for each, and the subscriber reads the socket again only
/// after as long when it has nothing buffered: at most that much latency each for far fewer
/// wake-ups (the same idea as interrupt coalescing in network drivers).
const COALESCE: Duration = Duration::from_millis(1);
/// See [`COALESCE`].
const BUSY: Duration = Duration::from_millis(50);

/// Lowers the calling thread's priority (nice 10; Linux keeps a nice value per thread): the
/// snapshot writer is background work that should take idle CPU, not the processor's or the
/// MQTT tasks' share of a gateway's few cores. Best effort: on failure it runs as it is.
fn yield_to_samples() {
    // SAFETY: plain system calls about this thread only, no memory passed.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// The processor thread's loop; see the module docs.
#[allow(clippy::too_many_arguments)]
fn process(
    o: &ServeOptions,
    g: &mut Gateway,
    level: &DeviceLevel,
    msg_rx: flume::Receiver<Incoming>,
    ctl_rx: flume::Receiver<Control>,
    ack_tx: flume::Sender<Ack>,
    pubs: &Mutex<PubState>,
    wake: &Notify,
    m: &Metrics,
    log: &LogFn,
) -> Result<(), ServeError> {
    let features = g.model().features();
    let mut unflushed: Vec<Ack> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut last_snapshot = Instant::now();
    // The snapshot being written on its own thread (at most one), and when it began.
    type Writer = (std::thread::JoinHandle<Result<WrittenSnapshot, GatewayError>>, Instant);
    let mut writing: Option<Writer> = None;
    let finish = |g: &mut Gateway, (h, began): Writer| {
        let written = h.join().map_err(|_| ServeError::SnapshotWriter)??;
        g.snapshot_written(written)?;
        m.snapshot_seconds.observe(began.elapsed().as_secs_f64());
        Ok::<(), ServeError>(())
    };
    // When each window's last sample arrived (for the latency histogram), by seq.
    let mut arrived: HashMap<u64, Instant> = HashMap::new();
    // When the last message came in: within `BUSY` of it the processor polls (see the loop).
    let mut last_msg: Option<Instant> = None;
    let mut paused = false;
    let mut stopping: Option<Instant> = None;
    let release = |results: Vec<Outgoing>, arrived: &mut HashMap<u64, Instant>| {
        if results.is_empty() {
            return;
        }
        m.anomalous.inc_by(results.iter().filter(|r| r.window.anomalous).count() as u64);
        let mut p = pubs.lock().expect("not poisoned");
        for r in results {
            let at = arrived.remove(&r.seq);
            p.waiting.push_back(r.seq);
            p.all.insert(r.seq, (r, at));
        }
        drop(p);
        wake.notify_one();
    };
    loop {
        let flush_due = oldest.map(|t| t + o.flush_interval);
        let timeout =
            flush_due.map_or(Duration::from_millis(500), |d| d.saturating_duration_since(Instant::now())).min(Duration::from_millis(500));
        enum Got {
            Msg(Incoming),
            Ctl(Control),
            Idle,
            Closed,
        }
        let intake = !paused && stopping.is_none();
        // Ready work first, without a selector (it allocates its hooks). With nothing ready
        // while messages are streaming in, poll again after `COALESCE` rather than sleep in the
        // selector: a blocked receiver costs the subscriber a wake-up per message, a short
        // poll lets a few messages queue and run as one batch. Idle, it blocks as before.
        let ready = match ctl_rx.try_recv() {
            Ok(c) => Some(Got::Ctl(c)),
            Err(flume::TryRecvError::Disconnected) => Some(Got::Closed),
            Err(flume::TryRecvError::Empty) if intake => match msg_rx.try_recv() {
                Ok(m) => Some(Got::Msg(m)),
                Err(flume::TryRecvError::Disconnected) => Some(Got::Closed),
                Err(flume::TryRecvError::Empty) => None,
            },
            Err(flume::TryRecvError::Empty) => None,
        };
        let got = match ready {
            Some(g) => g,
            None if intake && last_msg.is_some_and(|t| t.elapsed() < BUSY) && timeout >= COALESCE => {
                std::thread::sleep(COALESCE);
                Got::Idle
            }
            None => {
                let sel = flume::Selector::new().recv(&ctl_rx, |r| r.map_or(Got::Closed, Got::Ctl));
                let sel = if intake { sel.recv(&msg_rx, |r| r.map_or(Got::Closed, Got::Msg)) } else { sel };
                sel.wait_timeout(timeout).unwrap_or(Got::Idle)
            }
        };
        match got {
            Got::Msg(inc) => {
                last_msg = Some(Instant::now());
                m.messages.inc();
                let result = match level.device(&inc.publish.topic) {
                    None => Err("the topic has no device id at the device level".to_string()),
                    Some(device) => match payload::parse(&inc.publish.payload, features) {
                        Ok(samples) => match g.apply(device, &samples) {
                            Ok(a) => Ok(a),
                            Err(GatewayError::Params(why)) => Err(why),
                            Err(e) => return Err(e.into()),
                        },
                        Err(e) => Err(e.to_string()),
                    },
                };
                match result {
                    Ok(a) => {
                        m.samples.inc_by(a.samples);
                        m.stale_samples.inc_by(a.stale);
                        m.gaps.inc_by(a.gaps);
                        m.windows.inc_by(a.windows);
                        m.evictions.inc_by(a.evicted);
                    }
                    Err(why) => {
                        m.malformed.inc();
                        log(&format!("message on '{}' rejected: {why}", inc.publish.topic));
                    }
                }
                // Acknowledged after the next flush, malformed ones too (they would only come again).
                // Only the packet id is kept: the payload would pin rumqttc's read buffer.
                unflushed.push((inc.connection, inc.publish.pkid));
                oldest.get_or_insert(inc.at);
                for seq in g.unreleased_seqs() {
                    arrived.entry(*seq).or_insert(inc.at);
                }
            }
            Got::Ctl(Control::Acked(seq, latency)) => {
                g.published(seq)?;
                m.published.inc();
                if let Some(l) = latency {
                    m.latency_seconds.observe(l.as_secs_f64());
                }
            }
            Got::Ctl(Control::Reload(model, bytes)) => match g.reload(model, &bytes) {
                Ok(None) => log("SIGHUP: the model is unchanged"),
                Ok(Some(dropped)) => {
                    m.reloads.inc();
                    m.windows_dropped.inc_by(dropped as u64);
                    log(&format!("SIGHUP: now serving model {:08x}; {dropped} open window(s) restarted", model.id));
                }
                Err(GatewayError::Params(why)) => log(&format!("SIGHUP: {why}; still serving the current model")),
                Err(e) => return Err(e.into()),
            },
            Got::Ctl(Control::Shutdown) => {
                stopping = Some(Instant::now());
                oldest.get_or_insert(Instant::now());
            }
            Got::Idle => {}
            Got::Closed => stopping = stopping.or(Some(Instant::now())),
        }
        if writing.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            finish(g, writing.take().expect("checked"))?;
        }
        let now = Instant::now();
        let due = oldest.is_some_and(|t| now >= t + o.flush_interval)
            || unflushed.len() >= o.flush_messages
            || (stopping.is_some() && oldest.is_some());
        // Written on another thread: here only the state is copied and the next log begun.
        let snapshot_due =
            writing.is_none() && stopping.is_none() && (g.log_bytes() >= o.snapshot_bytes || now >= last_snapshot + o.snapshot_interval);
        if due || snapshot_due {
            let t = Instant::now();
            let r = if snapshot_due {
                last_snapshot = now;
                match g.begin_snapshot() {
                    Ok((pending, results)) => {
                        let writer = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
                            yield_to_samples();
                            pending.write()
                        });
                        // Nothing is acknowledged yet: the broker keeps the messages.
                        writing = Some((writer.map_err(ServeError::Start)?, now));
                        Ok(results)
                    }
                    Err(e) => Err(e),
                }
            } else {
                g.sync()
            };
            match r {
                Ok(results) => {
                    m.flush_seconds.observe(t.elapsed().as_secs_f64());
                    m.flush_ok.store(true, Relaxed);
                    release(results, &mut arrived);
                    for a in unflushed.drain(..) {
                        let _ = ack_tx.send(a);
                    }
                    oldest = None;
                }
                Err(e) => {
                    // Nothing is acknowledged: the broker keeps the messages.
                    m.flush_ok.store(false, Relaxed);
                    return Err(e.into());
                }
            }
        }
        m.live_devices.set(g.live_devices() as i64);
        m.outbox.set(g.outbox_len() as i64);
        m.log_bytes.set(g.log_bytes() as i64);
        let full = g.outbox_len() >= o.max_pending_results;
        if full && !paused {
            m.backpressure.inc();
            log(&format!("{} results wait for the broker: intake paused", g.outbox_len()));
        }
        paused = full;
        if let Some(since) = stopping {
            if oldest.is_none() && (g.outbox_len() == 0 || since.elapsed() >= o.shutdown_grace) {
                if let Some(w) = writing.take() {
                    finish(g, w)?;
                }
                let results = g.snapshot()?;
                release(results, &mut arrived);
                log(&format!("state saved; {} result(s) still wait for the broker and go out after the restart", g.outbox_len()));
                return Ok(());
            }
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
