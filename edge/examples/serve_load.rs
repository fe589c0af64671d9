//! Load benchmark for `edge serve` (not a test): N simulated devices publish batched samples
//! through a local mosquitto; prints a markdown table of the sustained rate, the
//! sample-to-result latency at 50% and 90% of it, the service's CPU time per million samples
//! (against `edge assign` on the same devices) and its memory.
//!
//! ```sh
//! cargo build --release -p edge --bins --examples
//! target/release/examples/serve_load --devices 10000 [--rate-base SAMPLES_PER_S] [--inflight N --flush-messages N]
//! ```
//!
//! It starts its own mosquitto (free port, no queue limit) and `target/release/edge serve` (state
//! in a temp dir). Latency is measured end to end at the generator: from publishing the message
//! that holds a window's last sample to receiving that window's result. Broker, generator and
//! service share the machine, so the sustained rate is the whole pipeline's on this machine.
//! `--rate-base N` makes the 50% and 90% phases shares of N samples/s instead of the measured
//! sustained rate, so two builds can be compared at the same load.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

const WINDOW: u64 = 140;

struct Args {
    devices: usize,
    batch: u64,
    phase_s: f64,
    flush_messages: usize,
    inflight: usize,
    snapshot_mib: u64,
    /// The rate the 50% and 90% phases are shares of; `None`: the measured sustained rate.
    rate_base: Option<f64>,
    edge: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        devices: 10_000,
        batch: 10,
        phase_s: 15.0,
        flush_messages: 20,
        inflight: 20,
        snapshot_mib: 64,
        rate_base: None,
        edge: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/edge"),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or_default();
        let bad = || -> ! { panic!("{}: expected a value, got '{v}'", pair[0]) };
        match pair[0].as_str() {
            "--devices" => a.devices = v.parse().unwrap_or_else(|_| bad()),
            "--batch" => a.batch = v.parse().unwrap_or_else(|_| bad()),
            "--phase-s" => a.phase_s = v.parse().unwrap_or_else(|_| bad()),
            "--flush-messages" => a.flush_messages = v.parse().unwrap_or_else(|_| bad()),
            "--inflight" => a.inflight = v.parse().unwrap_or_else(|_| bad()),
            "--snapshot-mib" => a.snapshot_mib = v.parse().unwrap_or_else(|_| bad()),
            "--rate-base" => a.rate_base = Some(v.parse().unwrap_or_else(|_| bad())),
            "--edge" => a.edge = v.into(),
            other => panic!(
                "unknown flag {other}; flags: --devices --batch --phase-s --flush-messages --inflight --snapshot-mib --rate-base --edge"
            ),
        }
    }
    assert!(WINDOW.is_multiple_of(a.batch), "--batch must divide the window of {WINDOW}");
    a
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(port: u16, name: &str) -> f64 {
    let body = http(port, "/metrics").unwrap_or_default();
    body.lines().find(|l| l.split(' ').next() == Some(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// Observations of histogram `name` above its largest bucket bound not over `limit`: (bound, count).
fn over(port: u16, name: &str, limit: f64) -> (f64, f64) {
    let body = http(port, "/metrics").unwrap_or_default();
    let prefix = format!("{name}_bucket{{le=\"");
    let count_key = format!("{name}_count");
    let (mut bound, mut below, mut count) = (0.0, 0.0, 0.0);
    for l in body.lines() {
        if let Some(c) = l.strip_prefix(&count_key).and_then(|r| r.trim().parse::<f64>().ok()) {
            count = c;
        }
        let Some(rest) = l.strip_prefix(&prefix) else { continue };
        let (le, n) = rest.split_once("\"} ").unwrap_or_default();
        if let (Ok(le), Ok(n)) = (le.parse::<f64>(), n.parse::<f64>()) {
            if le <= limit && le >= bound {
                (bound, below) = (le, n);
            }
        }
    }
    (bound, count - below)
}

/// utime + stime (s) of the `/proc/.../stat` text of a process or thread.
fn stat_cpu(stat: &str) -> f64 {
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks()
}

/// CPU seconds of the service: all of it, its processor thread, its main thread (the MQTT tasks).
#[derive(Clone, Copy)]
struct Cpu {
    total: f64,
    processor: f64,
    network: f64,
}

impl Cpu {
    fn of(pid: u32) -> Cpu {
        let total = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
        let (mut processor, mut network) = (0.0, 0.0);
        for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let name = &stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()];
            if name == "processor" {
                processor += stat_cpu(&stat);
            } else if e.file_name().to_str() == Some(pid.to_string().as_str()) {
                network += stat_cpu(&stat);
            }
        }
        Cpu { total, processor, network }
    }

    /// CPU s per million of `samples` since `before`: (all, processor, MQTT tasks, other threads).
    fn per_m_since(self, before: Cpu, samples: f64) -> (f64, (f64, f64, f64)) {
        let m = |x: f64| x / samples * 1e6;
        let (t, p, n) = (self.total - before.total, self.processor - before.processor, self.network - before.network);
        (m(t), (m(p), m(n), m(t - p - n)))
    }
}

fn ticks() -> f64 {
    let o = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(100.0)
}

fn status_kib(pid: u32, key: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0.0)
}

fn value(device: usize, n: u64) -> f32 {
    let x = n as f32 * std::f32::consts::TAU / 35.0 + device as f32 * 0.37;
    0.8 * x.sin() + 0.1 * ((n * 2654435761 + device as u64) % 1000) as f32 / 1000.0
}

fn payload(device: usize, from: u64, batch: u64) -> String {
    (from..from + batch).map(|n| format!("{n},{}", value(device, n))).collect::<Vec<_>>().join("\n")
}

/// Send times of the messages that complete a window, by (device, window).
type Sent = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

/// Publishes rounds of one message per device at `rate` samples/s (None: as fast as possible)
/// for `secs`; `next` is each device's next sample number. Returns samples sent.
fn generate(client: &Client, a: &Args, next: &mut [u64], rate: Option<f64>, secs: f64, sent: &Sent) -> u64 {
    let start = Instant::now();
    let mut samples = 0u64;
    let mut i = 0u64;
    'outer: loop {
        #[allow(clippy::needless_range_loop)] // d is also the device id
        for d in 0..a.devices {
            if start.elapsed().as_secs_f64() >= secs {
                break 'outer;
            }
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64((i * a.batch) as f64 / r);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let from = next[d];
            client.publish(format!("load/sensors/d{d:05}/samples"), QoS::AtLeastOnce, false, payload(d, from, a.batch)).unwrap();
            next[d] += a.batch;
            if next[d].is_multiple_of(WINDOW) {
                sent.lock().unwrap().insert((d, next[d] / WINDOW - 1), Instant::now());
            }
            samples += a.batch;
            i += 1;
        }
    }
    samples
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let a = parse_args();
    assert!(a.edge.exists(), "{}: build it first (cargo build --release -p edge)", a.edge.display());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nmax_inflight_messages {}\nlog_dest none\n",
            a.inflight
        ),
    )
    .unwrap();
    let _broker = Killed(
        Command::new("mosquitto").arg("-c").arg(dir.path().join("mosquitto.conf")).stderr(Stdio::null()).spawn().expect("mosquitto"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mport = free_port();
    let serve = Killed(
        Command::new(&a.edge)
            .args(["serve", "--model"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ecg5000"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args([
                "--broker",
                &format!("mqtt://127.0.0.1:{port}"),
                "--subscribe",
                "load/sensors/+/samples",
                "--publish",
                "load/clusters/{device}",
            ])
            .args(["--metrics", &format!("127.0.0.1:{mport}"), "--max-devices", &a.devices.to_string()])
            .args(["--flush-messages", &a.flush_messages.to_string(), "--snapshot-mib", &a.snapshot_mib.to_string()])
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = serve.0.id();
    let t = Instant::now();
    while !http(mport, "/healthz").is_some_and(|r| r.contains(" 200 ")) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "edge serve did not start: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Results: latency by window.
    let sent: Sent = Default::default();
    let latencies: Arc<Mutex<Vec<(Instant, f64)>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let mut o = MqttOptions::new("load-collector", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 1000);
        client.subscribe("load/clusters/+", QoS::AtLeastOnce).unwrap();
        let (sent, latencies, stop) = (sent.clone(), latencies.clone(), stop.clone());
        std::thread::spawn(move || {
            let _keep = client;
            while !stop.load(SeqCst) {
                if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = conn.recv_timeout(Duration::from_millis(100)) {
                    let now = Instant::now();
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let d: usize = v["device"].as_str().unwrap()[1..].parse().unwrap();
                    let end: u64 = v["window_end"].as_str().unwrap().parse().unwrap();
                    if let Some(at) = sent.lock().unwrap().remove(&(d, (end + 1) / WINDOW - 1)) {
                        latencies.lock().unwrap().push((at, (now - at).as_secs_f64() * 1e3));
                    }
                }
            }
        });
    }
    let mut o = MqttOptions::new("load-generator", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_inflight(1000);
    let (client, mut conn) = Client::new(o, 1000);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    let mut next = vec![0u64; a.devices];
    let wait_drained = |total: u64| {
        let t = Instant::now();
        while metric(mport, "edge_serve_samples_total") < total as f64 {
            assert!(t.elapsed() < Duration::from_secs(600), "edge serve fell behind for 10 minutes");
            std::thread::sleep(Duration::from_millis(20));
            if std::env::var_os("SERVE_LOAD_TRACE").is_some() && t.elapsed().as_millis() % 1000 < 20 {
                eprintln!(
                    "{:.1} s: RSS {:.1} MiB, samples {}",
                    t.elapsed().as_secs_f64(),
                    status_kib(pid, "VmRSS:") / 1024.0,
                    metric(mport, "edge_serve_samples_total")
                );
            }
        }
        t
    };

    // Warm-up: every device sends once, so all are in memory with an open window.
    let mut total = 0u64;
    #[allow(clippy::needless_range_loop)] // d is also the device id
    for d in 0..a.devices {
        client.publish(format!("load/sensors/d{d:05}/samples"), QoS::AtLeastOnce, false, payload(d, next[d], a.batch)).unwrap();
        next[d] += a.batch;
        total += a.batch;
    }
    wait_drained(total);
    let warm_rss = status_kib(pid, "VmRSS:") / 1024.0;

    // Saturation: as fast as the generator can publish; sustained = samples applied per second
    // from the first publish to the last sample applied.
    let (cpu0, t0) = (Cpu::of(pid), Instant::now());
    total += generate(&client, &a, &mut next, None, a.phase_s, &sent);
    wait_drained(total);
    let sat_secs = t0.elapsed().as_secs_f64();
    let sat_samples = total as f64 - (a.devices as u64 * a.batch) as f64;
    let sustained = sat_samples / sat_secs;
    let (sat_cpu, sat_split) = Cpu::of(pid).per_m_since(cpu0, sat_samples);

    let mut rows = Vec::new();
    for share in [0.5, 0.9] {
        latencies.lock().unwrap().clear();
        let (cpu0, from) = (Cpu::of(pid), Instant::now());
        let n = generate(&client, &a, &mut next, Some(a.rate_base.unwrap_or(sustained) * share), a.phase_s, &sent);
        total += n;
        wait_drained(total);
        std::thread::sleep(Duration::from_millis(1500));
        let (cpu, split) = Cpu::of(pid).per_m_since(cpu0, n as f64);
        let mut l: Vec<f64> = latencies.lock().unwrap().iter().filter(|(at, _)| *at >= from).map(|x| x.1).collect();
        let count = l.len();
        rows.push((share, n as f64 / a.phase_s, percentile(&mut l, 0.5), percentile(&mut l, 0.99), count, cpu, split));
    }
    let (rss, hwm) = (status_kib(pid, "VmRSS:") / 1024.0, status_kib(pid, "VmHWM:") / 1024.0);
    let flush = (metric(mport, "edge_serve_flush_seconds_sum"), metric(mport, "edge_serve_flush_seconds_count"));
    let long_flushes = over(mport, "edge_serve_flush_seconds", 0.06);
    let snaps = (metric(mport, "edge_serve_snapshot_seconds_sum"), metric(mport, "edge_serve_snapshot_seconds_count"));
    let gauges: Vec<String> = [
        "edge_serve_windows_total",
        "edge_serve_results_published_total",
        "edge_serve_outbox_results",
        "edge_serve_log_bytes",
        "edge_serve_messages_total",
    ]
    .iter()
    .map(|g| format!("{g} {}", metric(mport, g)))
    .collect();
    stop.store(true, SeqCst);
    drop(serve);

    // `edge assign` on the same devices: a file of 2 windows per device.
    let csv = dir.path().join("fleet.csv");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(w, "device_id,timestamp,value").unwrap();
        for n in 0..2 * WINDOW {
            for d in 0..a.devices {
                writeln!(w, "d{d:05},{n},{}", value(d, n)).unwrap();
            }
        }
    }
    let before = children_cpu();
    let st = Command::new(&a.edge)
        .args(["assign", "--quiet", "--model"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ecg5000"))
        .arg("--input")
        .arg(&csv)
        .arg("--out")
        .arg(dir.path().join("ids.csv"))
        .status()
        .unwrap();
    assert!(st.success());
    let assign_cpu = (children_cpu() - before) / (a.devices as f64 * 2.0 * WINDOW as f64) * 1e6;

    println!(
        "edge serve load: {} devices, {} samples per message, QoS 1 both ways, mosquitto max_inflight_messages {}, --flush-messages {}",
        a.devices, a.batch, a.inflight, a.flush_messages
    );
    println!();
    println!("| load | samples/s | latency p50 (ms) | latency p99 (ms) | windows timed | service CPU s per M samples | of it: processor / MQTT tasks / other threads |");
    println!("|---|---|---|---|---|---|---|");
    let split = |(p, n, o): (f64, f64, f64)| format!("{p:.2} / {n:.2} / {o:.2}");
    println!("| saturated ({:.1} s) | {:.0} | | | | {:.2} | {} |", sat_secs, sustained, sat_cpu, split(sat_split));
    for (share, r, p50, p99, n, cpu, s) in rows {
        println!("| {:.0}% of sustained | {:.0} | {:.1} | {:.1} | {} | {:.2} | {} |", share * 100.0, r, p50, p99, n, cpu, split(s));
    }
    println!();
    println!("edge assign on the same {} devices (2 windows each): {:.2} CPU s per M samples", a.devices, assign_cpu);
    println!("at the end: {}", gauges.join(", "));
    println!("edge serve memory: RSS {warm_rss:.1} MiB with every device live after warm-up, {rss:.1} MiB at the end, peak {hwm:.1} MiB; mean state flush {:.2} ms over {} flushes ({} over {:.0} ms); {} snapshots, {:.0} ms each (written in the background)", flush.0 / flush.1.max(1.0) * 1e3, flush.1, long_flushes.1, long_flushes.0 * 1e3, snaps.1, snaps.0 / snaps.1.max(1.0) * 1e3);
}

/// CPU seconds of waited-for children of this process.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / ticks()
}
