//! The processor thread of `edge serve`: owns the [`Gateway`], applies each received message,
//! and every `flush_messages` messages or `flush_interval` makes the log durable
//! ([`Gateway::sync`]) or begins a snapshot ([`Gateway::begin_snapshot`], written on its own
//! thread); only then are the messages acknowledged (through the subscriber) and their windows
//! handed to the publisher.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::Publish;
use tokio::sync::Notify;

use super::gateway::{Gateway, GatewayError, Outgoing, WrittenSnapshot};
use super::metrics::Metrics;
use super::mqtt::{LogFn, ServeError, ServeOptions};
use super::payload;
use super::publisher::PubState;
use super::streams::Model;
use super::topic::DeviceLevel;

/// While messages keep coming (one within `BUSY`), the processor looks for more every
/// `COALESCE` instead of being woken for each, and the subscriber reads the socket again only
/// after as long when it has nothing buffered: at most that much latency each for far fewer
/// wake-ups (the same idea as interrupt coalescing in network drivers).
pub(super) const COALESCE: Duration = Duration::from_millis(1);
/// See [`COALESCE`].
pub(super) const BUSY: Duration = Duration::from_millis(50);
/// Longest wait for work before the processor looks at its timers again.
const IDLE: Duration = Duration::from_millis(500);

/// An acknowledgement to write: the subscriber connection's incarnation and the packet id.
pub(super) type Ack = (u64, u16);

/// Messages to the processor.
pub(super) enum Control {
    /// The broker acknowledged result `seq`, `latency` after its last sample arrived.
    Acked(u64, Option<Duration>),
    /// Serve this model (SIGHUP).
    Reload(Box<Model>, Vec<u8>),
    /// Flush, snapshot and stop (SIGTERM).
    Shutdown,
}

/// A received message, the incarnation of the subscriber connection it came on, and when.
pub(super) struct Incoming {
    /// The message.
    pub publish: Publish,
    /// The subscriber connection's incarnation.
    pub connection: u64,
    /// When it was read.
    pub at: Instant,
}

/// The processor's channels and shared state.
pub(super) struct Links {
    /// Messages from the subscriber.
    pub messages: flume::Receiver<Incoming>,
    /// Acknowledgements, reloads and shutdown.
    pub control: flume::Receiver<Control>,
    /// Acknowledgements for the subscriber to write.
    pub acks: flume::Sender<Ack>,
    /// Results for the publisher.
    pub pubs: Arc<Mutex<PubState>>,
    /// Wakes the publisher's feeder.
    pub wake: Arc<Notify>,
}

/// The snapshot being written on its own thread, and when it began.
type Writer = (JoinHandle<Result<WrittenSnapshot, GatewayError>>, Instant);

/// What the processor waited for.
enum Got {
    Msg(Incoming),
    Ctl(Control),
    Idle,
    Closed,
}

/// The processor: the gateway, its links and the state of the current flush.
pub(super) struct Processor {
    o: ServeOptions,
    g: Gateway,
    level: DeviceLevel,
    links: Links,
    m: Metrics,
    log: LogFn,
    features: usize,
    /// Applied messages waiting for the next flush to be acknowledged.
    unflushed: Vec<Ack>,
    /// When the oldest of them arrived (the flush is due `flush_interval` later).
    oldest: Option<Instant>,
    last_snapshot: Instant,
    /// At most one snapshot is written at a time.
    writing: Option<Writer>,
    /// When each window's last sample arrived (for the latency histogram), by seq.
    arrived: HashMap<u64, Instant>,
    /// When the last message came in: within `BUSY` of it the processor polls.
    last_msg: Option<Instant>,
    /// Intake paused: too many results wait for the broker.
    paused: bool,
    /// When shutdown began.
    stopping: Option<Instant>,
}

impl Processor {
    /// A processor for `g` with nothing applied yet.
    pub fn new(o: ServeOptions, g: Gateway, level: DeviceLevel, links: Links, m: Metrics, log: LogFn) -> Self {
        let features = g.model().features();
        Processor {
            o,
            g,
            level,
            links,
            m,
            log,
            features,
            unflushed: Vec::new(),
            oldest: None,
            last_snapshot: Instant::now(),
            writing: None,
            arrived: HashMap::new(),
            last_msg: None,
            paused: false,
            stopping: None,
        }
    }

    /// Runs until shutdown (state saved) or an error (nothing unflushed acknowledged).
    pub fn run(mut self) -> Result<(), ServeError> {
        loop {
            match self.next() {
                Got::Msg(inc) => self.on_message(inc)?,
                Got::Ctl(c) => self.on_control(c)?,
                Got::Idle => {}
                Got::Closed => self.stopping = self.stopping.or(Some(Instant::now())),
            }
            if self.writing.as_ref().is_some_and(|(h, _)| h.is_finished()) {
                let w = self.writing.take().expect("checked");
                self.snapshot_finished(w)?;
            }
            self.flush_if_due()?;
            self.gauges();
            if self.stopped()? {
                return Ok(());
            }
        }
    }

    /// The next thing to do: ready work first, without a selector (it allocates its hooks).
    /// With nothing ready while messages are streaming in, polls again after `COALESCE` rather
    /// than sleep in the selector: a blocked receiver costs the subscriber a wake-up per
    /// message, a short poll lets a few messages queue and run as one batch. Idle, it blocks.
    fn next(&self) -> Got {
        let flush_due = self.oldest.map(|t| t + self.o.flush_interval);
        let timeout = flush_due.map_or(IDLE, |d| d.saturating_duration_since(Instant::now())).min(IDLE);
        let intake = !self.paused && self.stopping.is_none();
        let (ctl, msg) = (&self.links.control, &self.links.messages);
        let ready = match ctl.try_recv() {
            Ok(c) => Some(Got::Ctl(c)),
            Err(flume::TryRecvError::Disconnected) => Some(Got::Closed),
            Err(flume::TryRecvError::Empty) if intake => match msg.try_recv() {
                Ok(m) => Some(Got::Msg(m)),
                Err(flume::TryRecvError::Disconnected) => Some(Got::Closed),
                Err(flume::TryRecvError::Empty) => None,
            },
            Err(flume::TryRecvError::Empty) => None,
        };
        match ready {
            Some(g) => g,
            None if intake && self.last_msg.is_some_and(|t| t.elapsed() < BUSY) && timeout >= COALESCE => {
                std::thread::sleep(COALESCE);
                Got::Idle
            }
            None => {
                let sel = flume::Selector::new().recv(ctl, |r| r.map_or(Got::Closed, Got::Ctl));
                let sel = if intake { sel.recv(msg, |r| r.map_or(Got::Closed, Got::Msg)) } else { sel };
                sel.wait_timeout(timeout).unwrap_or(Got::Idle)
            }
        }
    }

    /// Applies one message (a malformed one is counted and logged); it is acknowledged after
    /// the next flush either way (a malformed one would only come again).
    fn on_message(&mut self, inc: Incoming) -> Result<(), ServeError> {
        self.last_msg = Some(Instant::now());
        let m = &self.m;
        m.messages.inc();
        let result = match self.level.device(&inc.publish.topic) {
            None => Err("the topic has no device id at the device level".to_string()),
            Some(device) => match payload::parse(&inc.publish.payload, self.features) {
                Ok(samples) => match self.g.apply(device, &samples) {
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
                (self.log)(&format!("message on '{}' rejected: {why}", inc.publish.topic));
            }
        }
        // Only the packet id is kept: the payload would pin rumqttc's read buffer.
        self.unflushed.push((inc.connection, inc.publish.pkid));
        self.oldest.get_or_insert(inc.at);
        for seq in self.g.unreleased_seqs() {
            self.arrived.entry(*seq).or_insert(inc.at);
        }
        Ok(())
    }

    fn on_control(&mut self, c: Control) -> Result<(), ServeError> {
        match c {
            Control::Acked(seq, latency) => {
                self.g.published(seq)?;
                self.m.published.inc();
                if let Some(l) = latency {
                    self.m.latency_seconds.observe(l.as_secs_f64());
                }
            }
            Control::Reload(model, bytes) => match self.g.reload(*model, &bytes) {
                Ok(None) => (self.log)("SIGHUP: the model is unchanged"),
                Ok(Some(dropped)) => {
                    self.m.reloads.inc();
                    self.m.windows_dropped.inc_by(dropped as u64);
                    (self.log)(&format!("SIGHUP: now serving model {:08x}; {dropped} open window(s) restarted", model.id));
                }
                Err(GatewayError::Params(why)) => (self.log)(&format!("SIGHUP: {why}; still serving the current model")),
                Err(e) => return Err(e.into()),
            },
            Control::Shutdown => {
                self.stopping = Some(Instant::now());
                self.oldest.get_or_insert(Instant::now());
            }
        }
        Ok(())
    }

    /// Flushes (or begins a snapshot, which flushes too) when one is due; then acknowledges
    /// the messages and releases their results. On an error nothing is acknowledged: the
    /// broker keeps the messages.
    fn flush_if_due(&mut self) -> Result<(), ServeError> {
        let now = Instant::now();
        let o = &self.o;
        let due = self.oldest.is_some_and(|t| now >= t + o.flush_interval)
            || self.unflushed.len() >= o.flush_messages
            || (self.stopping.is_some() && self.oldest.is_some());
        // Written on another thread: here only the state is copied and the next log begun.
        let snapshot_due = self.writing.is_none()
            && self.stopping.is_none()
            && (self.g.log_bytes() >= o.snapshot_bytes || now >= self.last_snapshot + o.snapshot_interval);
        if !due && !snapshot_due {
            return Ok(());
        }
        let t = Instant::now();
        let r = if snapshot_due { self.begin_snapshot(now)? } else { self.g.sync() };
        match r {
            Ok(results) => {
                self.m.flush_seconds.observe(t.elapsed().as_secs_f64());
                self.m.flush_ok.store(true, Relaxed);
                self.release(results);
                for a in self.unflushed.drain(..) {
                    let _ = self.links.acks.send(a);
                }
                self.oldest = None;
                Ok(())
            }
            Err(e) => {
                self.m.flush_ok.store(false, Relaxed);
                Err(e.into())
            }
        }
    }

    /// Copies the state and starts its writer thread; the outer error is a thread that cannot
    /// start, the inner one the gateway's.
    fn begin_snapshot(&mut self, now: Instant) -> Result<Result<Vec<Outgoing>, GatewayError>, ServeError> {
        self.last_snapshot = now;
        let (pending, results) = match self.g.begin_snapshot() {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let writer = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            yield_to_samples();
            pending.write()
        });
        self.writing = Some((writer.map_err(ServeError::Start)?, now));
        Ok(Ok(results))
    }

    fn snapshot_finished(&mut self, (h, began): Writer) -> Result<(), ServeError> {
        let written = h.join().map_err(|_| ServeError::SnapshotWriter)??;
        self.g.snapshot_written(written)?;
        self.m.snapshot_seconds.observe(began.elapsed().as_secs_f64());
        Ok(())
    }

    /// Hands durable results to the publisher.
    fn release(&mut self, results: Vec<Outgoing>) {
        if results.is_empty() {
            return;
        }
        self.m.anomalous.inc_by(results.iter().filter(|r| r.window.anomalous).count() as u64);
        let mut p = self.links.pubs.lock().expect("not poisoned");
        for r in results {
            let at = self.arrived.remove(&r.seq);
            p.queue(r, at);
        }
        drop(p);
        self.links.wake.notify_one();
    }

    /// The gauges, and intake paused while too many results wait for the broker.
    fn gauges(&mut self) {
        let (g, m) = (&self.g, &self.m);
        m.live_devices.set(g.live_devices() as i64);
        m.outbox.set(g.outbox_len() as i64);
        m.log_bytes.set(g.log_bytes() as i64);
        let full = g.outbox_len() >= self.o.max_pending_results;
        if full && !self.paused {
            m.backpressure.inc();
            (self.log)(&format!("{} results wait for the broker: intake paused", g.outbox_len()));
        }
        self.paused = full;
    }

    /// Stopping, and everything flushed and published (or the grace spent): waits for the
    /// snapshot being written, writes a last one and says so.
    fn stopped(&mut self) -> Result<bool, ServeError> {
        let Some(since) = self.stopping else { return Ok(false) };
        if self.oldest.is_some() || (self.g.outbox_len() > 0 && since.elapsed() < self.o.shutdown_grace) {
            return Ok(false);
        }
        if let Some(w) = self.writing.take() {
            self.snapshot_finished(w)?;
        }
        let results = self.g.snapshot()?;
        self.release(results);
        (self.log)(&format!("state saved; {} result(s) still wait for the broker and go out after the restart", self.g.outbox_len()));
        Ok(true)
    }
}

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
