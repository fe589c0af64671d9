//! `edge serve` against a real broker (Debian's mosquitto): the shipped fleet file replayed over
//! MQTT gives exactly `edge assign`'s windows, across `kill -9` of the service and a broker
//! restart; bad messages are counted and the service stays up; SIGTERM and SIGHUP behave.
//!
//! `scripts/test.sh` installs mosquitto, starts one on a free 127.0.0.1 port for these tests
//! (`EDGE_TEST_MQTT=127.0.0.1:PORT`), stops it after, and sets `REQUIRE_MOSQUITTO=1` so that a
//! missing broker fails instead of skipping. Tests share that broker under topic prefixes and
//! client ids of their own; the broker-restart test (and any test when `EDGE_TEST_MQTT` is unset)
//! starts a mosquitto of its own, with persistence so that a restart keeps sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A mosquitto: the one `scripts/test.sh` started, or one of this test's own on a free port,
/// its database in a temp dir.
struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// The shared broker of `EDGE_TEST_MQTT`, else one of this test's own.
    fn shared() -> Option<Broker> {
        let Ok(addr) = std::env::var("EDGE_TEST_MQTT") else { return Broker::start() };
        let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("EDGE_TEST_MQTT is HOST:PORT");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "no broker at EDGE_TEST_MQTT={addr}");
        Some(Broker { port, dir: tempfile::tempdir().unwrap(), child: None })
    }

    /// `None` (test skipped) when mosquitto is not installed and not required.
    fn start() -> Option<Broker> {
        let found = ["mosquitto", "/usr/sbin/mosquitto"].iter().any(|b| Command::new(b).arg("-h").output().is_ok());
        if !found {
            assert!(std::env::var_os("REQUIRE_MOSQUITTO").is_none(), "REQUIRE_MOSQUITTO is set but mosquitto is not installed");
            eprintln!("mosquitto not installed: skipping (scripts/test.sh installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // `user root` only matters when run as root (CI): keep root instead of dropping to a
        // `mosquitto` user who could not write the temp dir.
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\n\
             max_queued_messages 100000\nmax_inflight_messages 20\nlog_dest file {}/mosquitto.log\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker { port, dir, child: None };
        b.spawn();
        Some(b)
    }

    fn spawn(&mut self) {
        let bin = if Command::new("mosquitto").arg("-h").output().is_ok() { "mosquitto" } else { "/usr/sbin/mosquitto" };
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "mosquitto did not start: {}",
            self.log()
        );
    }

    /// Stops the broker cleanly (it saves sessions and queued messages) and starts it again.
    fn restart(&mut self) {
        let mut c = self.child.take().expect("a broker of this test's own");
        signal(&c, "-TERM");
        assert!(wait_exit(&mut c, Duration::from_secs(10)).is_some(), "mosquitto did not stop");
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn options(&self, id: &str, clean: bool) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", self.port);
        o.set_keep_alive(Duration::from_secs(5)).set_clean_session(clean);
        o
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An `edge serve` process; its stderr (all incarnations) goes to one file.
struct Serve {
    args: Vec<String>,
    metrics: u16,
    stderr: PathBuf,
    child: Option<Child>,
}

impl Serve {
    fn start(broker: &Broker, prefix: &str, state: &Path, extra: &[&str]) -> Serve {
        let metrics = free_port();
        let model = root().join("models/ecg5000");
        let defaults = [
            ("--model", model.to_str().unwrap().to_string()),
            ("--state-dir", state.to_str().unwrap().to_string()),
            ("--broker", format!("mqtt://127.0.0.1:{}", broker.port)),
            ("--client-id", format!("{prefix}-serve")),
            ("--subscribe", format!("{prefix}/sensors/+/samples")),
            ("--publish", format!("{prefix}/clusters/{{device}}")),
            ("--metrics", format!("127.0.0.1:{metrics}")),
            ("--flush-interval-ms", "50".into()),
            ("--reconnect-delay-ms", "100".into()),
        ];
        // A flag in `extra` replaces its default.
        let mut args = vec!["serve".to_string()];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Serve { args, metrics, stderr: state.with_extension("stderr"), child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_edge")).args(&self.args).stdout(Stdio::null()).stderr(err).spawn().unwrap();
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(20), || {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none(), "edge serve exited ({exited:?}):\n{}", self.log());
            self.healthy()
        });
        assert!(up, "edge serve did not become healthy:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn http(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn healthy(&self) -> bool {
        self.http("/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
    }

    /// A counter or gauge from `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let body = self.http("/metrics").expect("/metrics answers");
        let line = body.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM; the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        signal(&c, "-TERM");
        wait_exit(&mut c, Duration::from_secs(20)).unwrap_or_else(|| {
            let _ = c.kill();
            panic!("edge serve did not stop on SIGTERM:\n{}", self.log())
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One published result: the `edge assign` columns as text (floats in their shortest form),
/// and its seq.
type Row = (String, String, String, String, String, String, String);

/// Subscribes to the results and keeps every one it gets (duplicates included).
struct Collector {
    got: Arc<Mutex<Vec<(Row, u64)>>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start(broker: &Broker, prefix: &str) -> Collector {
        // A persistent session: results published while a broker restart cuts this client off
        // are queued for it.
        let (client, mut conn) = Client::new(broker.options(&format!("{prefix}-collector"), false), 64);
        let (got, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let subscribed = Arc::new(AtomicBool::new(false));
        let filter = format!("{prefix}/clusters/+");
        {
            let (got, stop, subscribed) = (got.clone(), stop.clone(), subscribed.clone());
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    match conn.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            client.try_subscribe(filter.clone(), QoS::AtLeastOnce).unwrap();
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed.store(true, SeqCst),
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("results are JSON");
                            let text = |k: &str| match &v[k] {
                                serde_json::Value::String(s) => s.clone(),
                                serde_json::Value::Number(n) => n.as_f64().map(|f| (f as f32).to_string()).unwrap(),
                                serde_json::Value::Bool(b) => b.to_string(),
                                other => panic!("{k}: unexpected {other}"),
                            };
                            let cluster = v["cluster"].as_u64().unwrap().to_string();
                            let row = (
                                text("device"),
                                text("window_start"),
                                text("window_end"),
                                cluster,
                                text("distance"),
                                text("second_distance"),
                                text("anomalous"),
                            );
                            assert_eq!(p.topic, format!("{}/clusters/{}", filter.trim_end_matches("/clusters/+"), row.0));
                            got.lock().unwrap().push((row, v["seq"].as_u64().unwrap()));
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        assert!(wait_until(Duration::from_secs(10), || subscribed.load(SeqCst)), "collector did not subscribe");
        Collector { got, stop }
    }

    fn distinct_seqs(&self) -> usize {
        self.got.lock().unwrap().iter().map(|g| g.1).collect::<BTreeSet<_>>().len()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

/// The fleet file as a sensor gateway would send it: per device, CSV payloads of up to 8
/// samples in time order (the file's order); a row that is not a reading goes alone (the service
/// rejects that message whole and counts it).
fn messages(file: &Path) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::new();
    let mut open: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bad = 0;
    for line in std::fs::read_to_string(file).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let ok = f.len() == 3 && f[1].parse::<f64>().is_ok() && f[2].parse::<f32>().is_ok_and(|v| v.is_finite());
        if !ok {
            bad += 1;
            out.push((f[0].to_string(), f[1..].join(",")));
            continue;
        }
        let buf = open.entry(f[0].to_string()).or_default();
        buf.push(format!("{},{}", f[1], f[2]));
        if buf.len() == 8 {
            out.push((f[0].to_string(), std::mem::take(buf).join("\n")));
        }
    }
    out.extend(open.into_iter().filter(|(_, b)| !b.is_empty()).map(|(d, b)| (d, b.join("\n"))));
    (out, bad)
}

/// Publishes `msgs` (QoS 1) from a thread, one every `pace`; `sent` counts those handed over.
/// The sensor's session is persistent and rumqttc re-sends what the broker had not acknowledged
/// when a connection drops, so a broker restart loses nothing on this side either.
fn sensor(
    broker: &Broker,
    prefix: &str,
    msgs: Vec<(String, String)>,
    pace: Duration,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let (client, mut conn) = Client::new(broker.options(&format!("{prefix}-sensor"), false), 16);
    std::thread::spawn(move || loop {
        match conn.recv_timeout(Duration::from_millis(50)) {
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    });
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for (device, payload) in msgs {
            client.publish(format!("{prefix}/sensors/{device}/samples"), QoS::AtLeastOnce, false, payload).unwrap();
            sent.fetch_add(1, SeqCst);
            std::thread::sleep(pace);
        }
        // Leave the event-loop thread time to get the last acknowledgements.
        std::thread::sleep(Duration::from_secs(1));
    })
}

/// `edge assign`'s window rows for the shipped fleet file.
fn assign_rows() -> BTreeSet<Row> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    let model = root().join("models/ecg5000");
    let input = root().join("data/fleet/sample.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["assign", "--quiet", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<String> = l.split(',').map(String::from).collect();
            (f[0].clone(), f[1].clone(), f[2].clone(), f[3].clone(), f[4].clone(), f[5].clone(), f[6].clone())
        })
        .collect()
}

/// Checks the union of everything published against `edge assign`: every window once, the same
/// cluster and distances; a duplicate only as a re-send of the same result (same seq).
fn check_against_assign(c: &Collector, serve: &Serve) {
    let want = assign_rows();
    assert_eq!(want.len(), 72);
    let ok = wait_until(Duration::from_secs(60), || c.distinct_seqs() >= want.len());
    let got = c.got.lock().unwrap().clone();
    let mut by_seq: BTreeMap<u64, Row> = BTreeMap::new();
    for (row, seq) in &got {
        if let Some(first) = by_seq.insert(*seq, row.clone()) {
            assert_eq!(&first, row, "seq {seq} published with two different contents");
        }
    }
    let rows: BTreeSet<Row> = by_seq.values().cloned().collect();
    assert_eq!(rows.len(), by_seq.len(), "a window published under two seqs (doubled, not a marked re-send)");
    let missing: Vec<_> = want.difference(&rows).collect();
    let extra: Vec<_> = rows.difference(&want).collect();
    assert!(
        ok && missing.is_empty() && extra.is_empty(),
        "{} of {} windows published; missing {missing:?}; not in edge assign {extra:?}\nservice log:\n{}",
        rows.len(),
        want.len(),
        serve.log()
    );
    eprintln!("{} results received for {} windows ({} re-sends)", got.len(), rows.len(), got.len() - rows.len());
}

fn prefix(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

#[test]
fn replay_over_mqtt_equals_assign_across_kill_9_and_sigterm() {
    let Some(broker) = Broker::shared() else { return };
    let p = prefix("kill");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let collector = Collector::start(&broker, &p);
    // Few devices in memory, so evicted devices' files are part of what survives the kills;
    // one background snapshot after the other, so the kills come during their writes.
    let mut serve = Serve::start(&broker, &p, &state, &["--max-devices", "8", "--flush-messages", "10", "--snapshot-mib", "0"]);
    let (msgs, bad) = messages(&root().join("data/fleet/sample.csv"));
    let n = msgs.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let sensor = sensor(&broker, &p, msgs, Duration::from_millis(2), sent.clone());
    for cut in [n / 5, n / 2, n * 4 / 5] {
        assert!(wait_until(Duration::from_secs(60), || sent.load(SeqCst) >= cut), "sensor stalled");
        assert!(serve.metric("edge_serve_snapshot_seconds_count") > 0.0, "snapshots were written while serving");
        serve.kill9();
        serve.spawn();
    }
    sensor.join().unwrap();
    check_against_assign(&collector, &serve);
    let log = serve.log();
    assert_eq!(log.matches("serving model").count(), 4, "{log}");
    assert!(serve.metric("edge_serve_samples_total") > 0.0);

    // SIGTERM: flushed, clean exit; a restart after it publishes nothing new.
    let status = serve.terminate();
    assert!(status.success(), "exit status {status:?}:\n{}", serve.log());
    assert!(serve.log().contains("state saved"), "{}", serve.log());
    let before = collector.got.lock().unwrap().len();
    serve.spawn();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serve.metric("edge_serve_outbox_results"), 0.0);
    assert_eq!(collector.got.lock().unwrap().len(), before, "results published again after a clean stop");
    assert!(bad >= 3, "the fleet file's malformed rows were sent ({bad})");
}

#[test]
fn broker_restart_mid_stream_loses_nothing() {
    let Some(mut broker) = Broker::start() else { return };
    let p = prefix("broker");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let collector = Collector::start(&broker, &p);
    let serve = Serve::start(&broker, &p, &state, &[]);
    let (msgs, _) = messages(&root().join("data/fleet/sample.csv"));
    let n = msgs.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let sensor = sensor(&broker, &p, msgs, Duration::from_millis(2), sent.clone());
    assert!(wait_until(Duration::from_secs(60), || sent.load(SeqCst) >= n / 2), "sensor stalled");
    broker.restart();
    sensor.join().unwrap();
    check_against_assign(&collector, &serve);
    assert!(serve.metric("edge_serve_connection_errors_total") >= 2.0, "both connections saw the broker go:\n{}", serve.log());
    assert!(serve.healthy(), "reconnected");
}

#[test]
fn bad_messages_are_counted_and_the_service_stays_up() {
    let Some(broker) = Broker::shared() else { return };
    let p = prefix("bad");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A copy of the model, to break it under the running service.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(root().join("models/ecg5000/model.bundle"), model.join("model.bundle")).unwrap();
    let mut serve = Serve::start(&broker, &p, &state, &["--window", "4", "--model", model.to_str().unwrap()]);
    let collector = Collector::start(&broker, &p);
    let (client, mut conn) = Client::new(broker.options(&format!("{p}-sensor"), true), 16);
    let acks = Arc::new(AtomicUsize::new(0));
    {
        let acks = acks.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acks.fetch_add(1, SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
    }
    let send = |topic: String, payload: &str| client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
    let dev = |d: &str| format!("{p}/sensors/{d}/samples");
    send(dev("a"), r#"{"t": 1, "v": [0.5]}"#);
    send(dev("a"), "not a sample");
    send(dev("a"), r#"{"t": 2, "v": [0.5, 1.0]}"#); // two features for a one-feature model
    send(format!("{p}/sensors//samples"), "3,0.1"); // an empty device id
    send(dev("a"), r#"[{"t": 2, "v": 0.1}, {"t": 3, "v": 0.2}]"#);
    send(dev("a"), "1,0.9\n4,0.3"); // t=1 again: skipped as already seen
    send(dev("a"), r#"{"samples": [{"t": 5, "v": -0.1}]}"#);
    assert!(wait_until(Duration::from_secs(10), || acks.load(SeqCst) == 7), "broker acknowledged the sensor");
    assert!(wait_until(Duration::from_secs(10), || serve.metric("edge_serve_messages_total") == 7.0), "{}", serve.log());
    assert!(wait_until(Duration::from_secs(10), || collector.distinct_seqs() == 1), "one window of 4 (t = 1..4) published");
    assert_eq!(serve.metric("edge_serve_malformed_messages_total"), 3.0);
    assert_eq!(serve.metric("edge_serve_stale_samples_total"), 1.0);
    assert_eq!(serve.metric("edge_serve_samples_total"), 5.0);
    assert_eq!(collector.got.lock().unwrap()[0].0 .1, "1");
    let log = serve.log();
    for why in ["not a sample", "the model expects 1", "no device id"] {
        assert!(log.contains(why), "log names the problem ({why}):\n{log}");
    }
    assert!(serve.healthy());

    // SIGHUP with the same bundle: nothing changes; with a broken one: still serving.
    signal(serve.child.as_ref().unwrap(), "-HUP");
    assert!(wait_until(Duration::from_secs(10), || serve.log().contains("the model is unchanged")), "{}", serve.log());
    std::fs::write(model.join("model.bundle"), b"not a bundle").unwrap();
    signal(serve.child.as_ref().unwrap(), "-HUP");
    assert!(wait_until(Duration::from_secs(10), || serve.log().contains("still serving the current model")), "{}", serve.log());
    send(dev("a"), "6,0.1\n7,0.2\n8,0.3");
    assert!(wait_until(Duration::from_secs(10), || collector.distinct_seqs() == 2), "the old model still scores:\n{}", serve.log());
    assert_eq!(serve.metric("edge_serve_model_reloads_total"), 0.0);
    assert!(serve.terminate().success());
}
