//! The publisher side of `edge serve` (client id `ID-pub`, QoS 1): the poll loop maps each
//! packet id to its result as rumqttc reports the send and reports the broker's
//! acknowledgement to the processor; the feeder hands waiting results to the client. After a
//! connection error a fresh event loop starts and every result not yet acknowledged is sent
//! again, in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing as Out, Packet, QoS};
use tokio::sync::Notify;

use super::gateway::Outgoing;
use super::metrics::Metrics;
use super::mqtt::LogFn;
use super::processor::Control;
use super::topic::PublishTemplate;

/// Results handed to the client and not yet reported sent, at most: bounded by rumqttc's
/// request channel, so the feeder never blocks while holding the lock.
const MAX_HANDED: usize = 512;

/// The results the publisher tracks, shared by the processor (which queues them), the poll
/// loop and the feeder.
#[derive(Default)]
pub(super) struct PubState {
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

impl PubState {
    /// Queues result `r` (its last sample arrived `at`) behind those waiting.
    pub fn queue(&mut self, r: Outgoing, at: Option<Instant>) {
        self.waiting.push_back(r.seq);
        self.all.insert(r.seq, (r, at));
    }

    /// A fresh connection: every unacknowledged result goes again, in order; how many had
    /// been sent before.
    fn reconnected(&mut self, client: AsyncClient) -> usize {
        let resent = self.all.len() - self.waiting.len();
        self.waiting = self.all.keys().copied().collect();
        self.handed.clear();
        self.on_wire.clear();
        self.client = Some(client);
        resent
    }

    fn disconnected(&mut self) {
        self.client = None;
        self.handed.clear();
        self.on_wire.clear();
    }

    /// Hands waiting results to the client while its request channel takes them.
    fn feed(&mut self, template: &PublishTemplate) {
        let Some(client) = self.client.clone() else { return };
        while self.handed.len() < MAX_HANDED {
            let Some(seq) = self.waiting.pop_front() else { break };
            let Some((r, _)) = self.all.get(&seq) else { continue };
            match client.try_publish(template.topic(&r.device), QoS::AtLeastOnce, false, r.to_json()) {
                Ok(()) => self.handed.push_back(seq),
                Err(_) => {
                    self.waiting.push_front(seq);
                    break;
                }
            }
        }
    }
}

/// The publisher connection's poll loop.
pub(super) struct Publisher {
    /// Connection settings.
    pub opts: MqttOptions,
    /// Shared with the processor and the feeder.
    pub pubs: Arc<Mutex<PubState>>,
    /// Wakes the feeder.
    pub wake: Arc<Notify>,
    /// Acknowledged results go to the processor.
    pub control: flume::Sender<Control>,
    /// Counters.
    pub metrics: Metrics,
    /// Operator log.
    pub log: LogFn,
    /// Wait before reconnecting.
    pub reconnect_delay: Duration,
}

impl Publisher {
    /// Polls the connection forever, reconnecting after errors.
    pub async fn run(self) {
        loop {
            let (client, mut events): (AsyncClient, EventLoop) = AsyncClient::new(self.opts.clone(), 1024);
            while self.on_event(&client, events.poll().await) {}
            tokio::time::sleep(self.reconnect_delay).await;
        }
    }

    /// Handles one event; false after a connection error.
    fn on_event(&self, client: &AsyncClient, ev: Result<Event, rumqttc::ConnectionError>) -> bool {
        let mut p = self.pubs.lock().expect("not poisoned");
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                self.metrics.reconnects.inc();
                let resent = p.reconnected(client.clone());
                self.metrics.republished.inc_by(resent as u64);
                self.metrics.publisher_up.store(true, Relaxed);
                (self.log)("publisher connected");
            }
            Ok(Event::Outgoing(Out::Publish(pkid))) => {
                if let Some(seq) = p.handed.pop_front() {
                    p.on_wire.insert(pkid, seq);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if let Some(seq) = p.on_wire.remove(&a.pkid) {
                    if let Some((_, at)) = p.all.remove(&seq) {
                        let _ = self.control.send(Control::Acked(seq, at.map(|t| t.elapsed())));
                    }
                }
            }
            Ok(_) => return true,
            Err(e) => {
                p.disconnected();
                self.metrics.publisher_up.store(false, Relaxed);
                self.metrics.connection_errors.inc();
                (self.log)(&format!("publisher connection: {e}; reconnecting in {:?}", self.reconnect_delay));
                return false;
            }
        }
        self.wake.notify_one();
        true
    }
}

/// Hands results to the publisher's client whenever woken.
pub(super) struct Feeder {
    /// Shared with the processor and the poll loop.
    pub pubs: Arc<Mutex<PubState>>,
    /// Woken by new results, sends and acknowledgements.
    pub wake: Arc<Notify>,
    /// Result topics.
    pub template: PublishTemplate,
}

impl Feeder {
    /// Feeds forever.
    pub async fn run(self) {
        loop {
            self.wake.notified().await;
            self.pubs.lock().expect("not poisoned").feed(&self.template);
        }
    }
}
