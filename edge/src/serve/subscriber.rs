//! The subscriber side of `edge serve` (client id `ID`, persistent session, QoS 1, manual
//! acknowledgements): polls its event loop and hands each message to the processor. It also
//! writes the processor's acknowledgements itself, straight onto its connection (see
//! [`write_acks`] for why not through rumqttc's request queue), and stops reading once
//! `max_unacked` messages are held: that, not the broker's in-flight limit, bounds what it holds.
//!
//! After a connection error a fresh event loop starts: acknowledgements of the old connection
//! are dropped (the broker redelivers those messages; the gateway skips them as already applied
//! and acknowledges them again).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use super::metrics::Metrics;
use super::mqtt::LogFn;
use super::processor::{Ack, Incoming, BUSY, COALESCE};

/// The subscriber task's settings and channels.
pub(super) struct Subscriber {
    /// Connection settings.
    pub opts: MqttOptions,
    /// The subscription.
    pub subscribe: String,
    /// Wait before reconnecting.
    pub reconnect_delay: Duration,
    /// Messages held unacknowledged before reading stops.
    pub max_unacked: usize,
    /// Counters.
    pub metrics: Metrics,
    /// Operator log.
    pub log: LogFn,
    /// Messages to the processor.
    pub messages: flume::Sender<Incoming>,
    /// Acknowledgements from the processor.
    pub acks: flume::Receiver<Ack>,
}

/// One connection's state.
struct Connection {
    /// Counts connections: acknowledgements carry the one their message came on.
    incarnation: u64,
    client: AsyncClient,
    events: EventLoop,
    /// Received on this connection and not yet acknowledged on the wire.
    held: usize,
    last_msg: Option<Instant>,
}

/// What the subscriber loop does next.
enum Step {
    /// An acknowledgement from the processor (`None`: the processor has stopped).
    Ack(Option<Ack>),
    /// The event loop's next event.
    Event(Result<Event, rumqttc::ConnectionError>),
    /// Nothing yet (a nap while streaming).
    Again,
}

/// After a step.
enum Flow {
    Go,
    Reconnect,
    Stop,
}

impl Subscriber {
    /// Reads messages until the processor stops, reconnecting after errors.
    pub async fn run(self) {
        let mut incarnation = 0u64;
        loop {
            incarnation += 1;
            let (client, events) = AsyncClient::new(self.opts.clone(), 64);
            let mut c = Connection { incarnation, client, events, held: 0, last_msg: None };
            loop {
                match self.step(&mut c).await {
                    Flow::Go => {}
                    Flow::Reconnect => break,
                    Flow::Stop => return,
                }
            }
            drop(c);
            tokio::time::sleep(self.reconnect_delay).await;
        }
    }

    async fn step(&self, c: &mut Connection) -> Flow {
        let ev = match self.next(c).await {
            Step::Again => return Flow::Go,
            Step::Ack(None) => return Flow::Stop,
            Step::Ack(Some(first)) => match write_acks(&mut c.events, c.incarnation, first, &self.acks).await {
                Ok(n) => {
                    c.held = c.held.saturating_sub(n);
                    return Flow::Go;
                }
                Err(e) => Err(e),
            },
            Step::Event(e) => e,
        };
        self.on_event(c, ev).await
    }

    /// Waits for an acknowledgement or an event. At `max_unacked` only acknowledgements are
    /// awaited: nothing more is read.
    async fn next(&self, c: &mut Connection) -> Step {
        if c.held >= self.max_unacked {
            return Step::Ack(self.acks.recv_async().await.ok());
        }
        if let Ok(a) = self.acks.try_recv() {
            return Step::Ack(Some(a));
        }
        if c.last_msg.is_some_and(|t| t.elapsed() < BUSY) {
            // Streaming: take what is already read or readable; when nothing is, nap for
            // `COALESCE` (acknowledgements still go out at once) so that a few messages wait in
            // the socket and come in one read, rather than a wake-up and a read per message.
            return match tokio::time::timeout(Duration::ZERO, c.events.poll()).await {
                Ok(e) => Step::Event(e),
                Err(_) => tokio::select! {
                    biased;
                    a = self.acks.recv_async() => Step::Ack(a.ok()),
                    _ = tokio::time::sleep(COALESCE) => Step::Again,
                },
            };
        }
        // An ack winning the race drops the pending poll: rumqttc keeps what it had read in its
        // state and frame buffer for the next poll.
        tokio::select! {
            biased;
            a = self.acks.recv_async() => Step::Ack(a.ok()),
            e = c.events.poll() => Step::Event(e),
        }
    }

    async fn on_event(&self, c: &mut Connection, ev: Result<Event, rumqttc::ConnectionError>) -> Flow {
        let (m, log, subscribe) = (&self.metrics, &self.log, &self.subscribe);
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                m.reconnects.inc();
                log(&format!("subscriber connected (session present: {})", ack.session_present));
                if let Err(e) = c.client.try_subscribe(subscribe.clone(), QoS::AtLeastOnce) {
                    log(&format!("cannot subscribe to {subscribe}: {e}"));
                }
            }
            // Up (and healthy) once the subscription holds, not at connect.
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    log(&format!("the broker refused the subscription to {subscribe}"));
                } else {
                    m.subscriber_up.store(true, Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                c.held += 1;
                let at = Instant::now();
                c.last_msg = Some(at);
                if self.messages.send_async(Incoming { publish: p, connection: c.incarnation, at }).await.is_err() {
                    return Flow::Stop;
                }
            }
            Ok(_) => {}
            Err(e) => {
                m.subscriber_up.store(false, Relaxed);
                m.connection_errors.inc();
                log(&format!("subscriber connection: {e}; reconnecting in {:?}", self.reconnect_delay));
                return Flow::Reconnect;
            }
        }
        Flow::Go
    }
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
