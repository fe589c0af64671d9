//! What `edge serve` exposes on its local HTTP port: Prometheus metrics at `/metrics` and a
//! health check at `/healthz` (200 while connected to the broker and the last state flush
//! succeeded, 503 otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric, cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    /// Messages received.
    pub messages: Counter,
    /// Samples applied to a device's windows.
    pub samples: Counter,
    /// Samples skipped as already applied (redelivered) or older than the device's last.
    pub stale_samples: Counter,
    /// Messages rejected (bad payload, topic without a device, device id too long).
    pub malformed: Counter,
    /// Windows scored.
    pub windows: Counter,
    /// Windows flagged anomalous.
    pub anomalous: Counter,
    /// Streams restarted by a gap.
    pub gaps: Counter,
    /// Results the broker acknowledged.
    pub published: Counter,
    /// Results sent again (after a reconnect or restart).
    pub republished: Counter,
    /// Open windows dropped by a model reload.
    pub windows_dropped: Counter,
    /// Devices evicted to disk.
    pub evictions: Counter,
    /// Connections (re)established, per connection.
    pub reconnects: Counter,
    /// Connection errors.
    pub connection_errors: Counter,
    /// Times intake paused because the outbox was full.
    pub backpressure: Counter,
    /// Model reloads (SIGHUP) applied.
    pub reloads: Counter,
    /// Devices in memory.
    pub live_devices: Gauge,
    /// Results waiting for the broker.
    pub outbox: Gauge,
    /// Bytes in the log since the last snapshot.
    pub log_bytes: Gauge,
    /// Seconds per state flush (fsync of the log, or the start of a snapshot).
    pub flush_seconds: Histogram,
    /// Seconds per snapshot, from its start to its file being durable (written in the background).
    pub snapshot_seconds: Histogram,
    /// Seconds from receiving a window's last sample to the broker acknowledging its result.
    pub latency_seconds: Histogram,
    /// The subscriber connection is up.
    pub subscriber_up: Arc<AtomicBool>,
    /// The publisher connection is up.
    pub publisher_up: Arc<AtomicBool>,
    /// The last flush succeeded.
    pub flush_ok: Arc<AtomicBool>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered under the `edge_serve_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("edge_serve");
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let messages = counter(&mut r, "messages", "MQTT messages received");
        let samples = counter(&mut r, "samples", "Samples applied to device windows");
        let stale_samples =
            counter(&mut r, "stale_samples", "Samples skipped: already applied (redelivered) or older than the device's last");
        let malformed = counter(&mut r, "malformed_messages", "Messages rejected: bad payload, no device in the topic, device id too long");
        let windows = counter(&mut r, "windows", "Windows scored");
        let anomalous = counter(&mut r, "anomalous_windows", "Windows flagged anomalous");
        let gaps = counter(&mut r, "gaps", "Device streams restarted by a gap larger than --max-gap");
        let published = counter(&mut r, "results_published", "Results acknowledged by the broker");
        let republished = counter(&mut r, "results_resent", "Results sent again after a reconnect or restart");
        let windows_dropped = counter(&mut r, "windows_dropped_on_reload", "Open windows dropped because the model changed");
        let evictions = counter(&mut r, "evictions", "Idle devices moved from memory to disk");
        let reconnects = counter(&mut r, "connections", "Broker connections established (both connections, first included)");
        let connection_errors = counter(&mut r, "connection_errors", "Broker connection errors");
        let backpressure = counter(&mut r, "intake_pauses", "Times intake paused because the outbox was full");
        let reloads = counter(&mut r, "model_reloads", "Model reloads applied (SIGHUP)");
        let live_devices = gauge(&mut r, "live_devices", "Devices held in memory");
        let outbox = gauge(&mut r, "outbox_results", "Results waiting for the broker's acknowledgement");
        let log_bytes = gauge(&mut r, "log_bytes", "Bytes in the state log since the last snapshot");
        let flush_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register("flush_seconds", "State flush time (log fsync, or the start of a snapshot)", flush_seconds.clone());
        let snapshot_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        r.register("snapshot_seconds", "Snapshot time, start to durable (written in the background)", snapshot_seconds.clone());
        let latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        r.register("result_latency_seconds", "Window's last sample received to result acknowledged by the broker", latency_seconds.clone());
        Metrics {
            messages,
            samples,
            stale_samples,
            malformed,
            windows,
            anomalous,
            gaps,
            published,
            republished,
            windows_dropped,
            evictions,
            reconnects,
            connection_errors,
            backpressure,
            reloads,
            live_devices,
            outbox,
            log_bytes,
            flush_seconds,
            snapshot_seconds,
            latency_seconds,
            subscriber_up: Arc::new(AtomicBool::new(false)),
            publisher_up: Arc::new(AtomicBool::new(false)),
            flush_ok: Arc::new(AtomicBool::new(true)),
            registry: Arc::new(r),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    /// Whether the service is healthy (see the module docs).
    pub fn healthy(&self) -> bool {
        [&self.subscriber_up, &self.publisher_up, &self.flush_ok].iter().all(|f| f.load(Ordering::Relaxed))
    }

    /// Serves `/metrics` and `/healthz` on `addr` from a thread of its own; returns the bound
    /// address (port 0 picks a free one).
    pub fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, String> {
        let server = tiny_http::Server::http(addr).map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?;
        let bound = server.server_addr().to_ip().ok_or_else(|| format!("--metrics {addr}: not an IP address"))?;
        let m = self.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let (code, body, ctype) = match req.url() {
                        "/metrics" => (200, m.render(), "application/openmetrics-text; version=1.0.0; charset=utf-8"),
                        "/healthz" if m.healthy() => (200, "ok\n".to_string(), "text/plain"),
                        "/healthz" => (503, "unhealthy: broker disconnected or state flush failing\n".to_string(), "text/plain"),
                        _ => (404, "not found: /metrics or /healthz\n".to_string(), "text/plain"),
                    };
                    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()).expect("valid header");
                    let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(code).with_header(header));
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(bound)
    }
}
