//! The gateway's durable core, without the network: messages in, scored windows out, state on
//! disk. [`crate::serve::mqtt`] drives it from the broker; tests drive it directly.
//!
//! # What is durable when
//!
//! [`Gateway::apply`] appends the message's samples to the log (buffered) and applies them;
//! [`Gateway::sync`] makes the log durable and hands back the windows those samples completed.
//! The caller acknowledges messages to the broker only after the `sync` that follows their
//! `apply`, and publishes a window only after the `sync` that made its samples durable. So after
//! a crash at any point:
//! - every acknowledged sample is in the snapshot or the log and is applied again on restart
//!   (the log is replayed through the same code, which is deterministic: same states, same
//!   evictions, same windows, same result numbers);
//! - an unacknowledged message comes again from the broker; a sample whose timestamp is not
//!   after its device's last applied one is recognised as already applied and skipped, so
//!   nothing is applied twice;
//! - a window's result stays in the outbox (snapshot + log) until the broker acknowledged its
//!   publication ([`Gateway::published`]); unacknowledged results are sent again after a restart
//!   or reconnect. A result can therefore be published twice (when the process dies between the
//!   broker's acknowledgement and the next sync), always with the same `seq`, device and window:
//!   consumers that need exactly-once keep the last `seq` per gateway.
//!
//! # When the encoder runs
//!
//! `apply` windows the samples (redelivery, gaps, which windows they open and complete, result
//! numbers) at once, but queues them for the encoder; `sync`, `snapshot`, an eviction or a model
//! switch first runs every device's queued samples, one round per sample position, all devices'
//! windows of a round stepped together through the runtime's multi-window kernel
//! (`runtime::batch::push_each`, bit-identical to stepping each alone). A flush batch of many
//! devices so reads the encoder's weights once for several windows instead of once per sample.
//!
//! Memory is bounded by `max_devices` live devices; the least recently active one is evicted to
//! `devices/` when another arrives, and read back when it sends again.
//! The bundles the log was written with are kept in `models/`, so a restart replays with the
//! model that produced the log even if the model directory changed meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::payload::Sample;
use super::store::{SnapshotJob, Store, StoreError, MAX_DEVICE_ID};
use super::streams::{DeviceStream, Model, ModelError, Pushed, Round, SavedStream, Scored, Windowing};

/// Limits and windowing of a gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayParams {
    /// The `edge assign` windows.
    pub windowing: Windowing,
    /// Devices kept in memory.
    pub max_devices: usize,
}

/// A scored window waiting for (or being sent to) the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// This gateway's number for the result, increasing; the same after a restart.
    pub seq: u64,
    /// Device id.
    pub device: String,
    /// Id of the model that scored it.
    pub model: u32,
    /// The window and its assignment.
    pub window: Scored,
}

impl Outgoing {
    /// The JSON that is published.
    pub fn to_json(&self) -> String {
        let w = &self.window;
        serde_json::json!({
            "device": self.device,
            "window_start": w.start,
            "window_end": w.end,
            "cluster": w.cluster,
            "distance": w.distance,
            "second_distance": if w.second_distance.is_finite() { Some(w.second_distance) } else { None },
            "anomalous": w.anomalous,
            "model": format!("{:08x}", self.model),
            "seq": self.seq,
        })
        .to_string()
    }
}

/// A gateway failure.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A model kept in the state directory cannot be loaded.
    #[error("{path}: {source}")]
    Model {
        /// The bundle copy.
        path: PathBuf,
        /// Why.
        source: ModelError,
    },
    /// Encoding a sample failed (a model/state mismatch; samples are checked before).
    #[error("device '{device}': {source}")]
    Encode {
        /// Device id.
        device: String,
        /// Why.
        source: runtime::EncodeError,
    },
    /// Bad parameters.
    #[error("{0}")]
    Params(String),
}

/// What one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Samples applied.
    pub samples: u64,
    /// Samples skipped as already applied (redelivered) or older than the device's last.
    pub stale: u64,
    /// Streams restarted by a gap.
    pub gaps: u64,
    /// Windows completed.
    pub windows: u64,
    /// Devices evicted to disk to make room.
    pub evicted: u64,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Log records replayed.
    pub records: usize,
    /// Bytes of a torn log tail cut off.
    pub truncated_bytes: u64,
    /// Devices in memory.
    pub devices: usize,
    /// Devices on disk.
    pub evicted_devices: usize,
    /// Results still to publish.
    pub pending_results: usize,
    /// Open windows dropped because the model or the windowing changed.
    pub windows_restarted: usize,
}

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Samples { device: String, samples: Vec<Sample> },
    Published { seq: u64 },
    Model { id: u32 },
}

/// [`Record::Samples`] borrowing its fields, so logging a message copies nothing: postcard
/// writes a variant as its index then its fields, and `&str` / `&[T]` as `String` / `Vec<T>`.
#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    Samples { device: &'a str, samples: &'a [Sample] },
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    generation: u64,
    model: u32,
    windowing: Windowing,
    max_devices: usize,
    clock: u64,
    next_seq: u64,
    devices: Vec<SavedDevice>,
    evicted: Vec<(String, u32)>,
    outbox: Vec<Outgoing>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedDevice {
    id: String,
    active: u64,
    evictions: u32,
    stream: SavedStream,
}

#[derive(Debug)]
struct Live {
    stream: DeviceStream,
    /// Clock at its last sample (eviction order).
    active: u64,
    /// Times it was evicted (its next file's number).
    evictions: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct Gateway {
    dir: PathBuf,
    store: Store,
    model: Model,
    windowing: Windowing,
    max_devices: usize,
    clock: u64,
    next_seq: u64,
    devices: HashMap<String, Live>,
    evicted: HashMap<String, u32>,
    outbox: BTreeMap<u64, Outgoing>,
    /// Results whose samples are not yet durable.
    unreleased: Vec<u64>,
    /// Devices with samples waiting for the encoder (an id may repeat, or name a device evicted
    /// since; [`Gateway::run_pending`] skips those).
    dirty: Vec<String>,
}

impl Gateway {
    /// Opens `dir` (creating it), restores the snapshot, replays the log with the models it was
    /// written with, then switches to `model` and `p` (dropping open windows if either changed)
    /// and snapshots.
    pub fn open(dir: &Path, p: &GatewayParams, model: Model, bundle: &[u8]) -> Result<(Self, Recovery), GatewayError> {
        if p.windowing.window == 0 || p.windowing.stride == 0 || p.max_devices == 0 {
            return Err(GatewayError::Params("--window, --stride and --max-devices must be at least 1".into()));
        }
        if p.windowing.max_gap.is_some_and(|g| g.is_nan() || g <= 0.0) {
            return Err(GatewayError::Params("--max-gap must be a positive number".into()));
        }
        let opened = Store::open::<Snapshot, Record>(dir, |s| s.generation)?;
        let mut rec = Recovery { records: opened.records.len(), truncated_bytes: opened.truncated, ..Recovery::default() };
        std::fs::create_dir_all(dir.join("models")).map_err(|source| StoreError::Io { path: dir.join("models"), source })?;
        let mut g = Gateway {
            dir: dir.to_path_buf(),
            store: opened.store,
            model,
            windowing: p.windowing,
            max_devices: p.max_devices,
            clock: 0,
            next_seq: 0,
            devices: HashMap::new(),
            evicted: HashMap::new(),
            outbox: BTreeMap::new(),
            unreleased: Vec::new(),
            dirty: Vec::new(),
        };
        if let Some(s) = opened.snapshot {
            g.model = g.kept_model(s.model)?;
            g.windowing = s.windowing;
            g.max_devices = s.max_devices;
            g.clock = s.clock;
            g.next_seq = s.next_seq;
            for d in s.devices {
                let stream = DeviceStream::load(d.stream, &g.model).ok_or_else(|| StoreError::Corrupt {
                    path: dir.join("snapshot.bin"),
                    why: format!("device '{}': saved window state does not fit model {:08x}", d.id, g.model.id),
                })?;
                g.devices.insert(d.id, Live { stream, active: d.active, evictions: d.evictions });
            }
            g.evicted = s.evicted.into_iter().collect();
            g.outbox = s.outbox.into_iter().map(|o| (o.seq, o)).collect();
        }
        for r in opened.records {
            match r {
                Record::Samples { device, samples } => {
                    g.apply_samples(&device, &samples)?;
                }
                Record::Published { seq } => {
                    // The result may still wait for its samples to be run.
                    g.run_pending()?;
                    g.outbox.remove(&seq);
                }
                Record::Model { id } => {
                    let m = g.kept_model(id)?;
                    g.switch_model(m)?;
                }
            }
        }
        g.run_pending()?;
        g.unreleased.clear();
        // Now the settings of this run.
        if g.model.id != model.id {
            g.keep_bundle(model.id, bundle)?;
            rec.windows_restarted += g.switch_model(model)?;
        }
        if g.windowing != p.windowing {
            g.run_pending()?;
            rec.windows_restarted += g.devices.values_mut().map(|d| d.stream.restart()).sum::<usize>();
            g.windowing = p.windowing;
        }
        g.max_devices = p.max_devices;
        g.keep_bundle(model.id, bundle)?;
        g.snapshot()?;
        rec.devices = g.devices.len();
        rec.evicted_devices = g.evicted.len();
        rec.pending_results = g.outbox.len();
        Ok((g, rec))
    }

    fn bundle_path(&self, id: u32) -> PathBuf {
        self.dir.join("models").join(format!("{id:08x}.bundle"))
    }

    /// A copy of the served bundle in the state directory (what a later replay needs).
    fn keep_bundle(&self, id: u32, bytes: &[u8]) -> Result<(), GatewayError> {
        let path = self.bundle_path(id);
        if path.exists() {
            return Ok(());
        }
        atomic_file::write_atomic(&path, bytes).map_err(|source| GatewayError::Store(StoreError::Io { path, source }))
    }

    fn kept_model(&self, id: u32) -> Result<Model, GatewayError> {
        let path = self.bundle_path(id);
        let bytes = std::fs::read(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        Model::load(&bytes).map_err(|source| GatewayError::Model { path, source })
    }

    /// Open windows are dropped: they were computed by the old model (windows already complete
    /// are scored by it first). Returns how many.
    fn switch_model(&mut self, m: Model) -> Result<usize, GatewayError> {
        self.run_pending()?;
        self.model = m;
        Ok(self.devices.values_mut().map(|d| d.stream.restart()).sum())
    }

    /// Runs every device's pending samples through the encoder, one round per sample index, all
    /// devices' windows of a round together ([`Round`]); completed windows go to the outbox.
    fn run_pending(&mut self) -> Result<(), GatewayError> {
        // The busy devices leave the map for the rounds (so each is borrowed on its own) and
        // come back after, whatever happens.
        let mut busy: Vec<(String, Live)> = Vec::with_capacity(self.dirty.len());
        for id in self.dirty.drain(..) {
            if let Some(entry) = self.devices.remove_entry(&id) {
                busy.push(entry);
            }
        }
        let result = self.run_rounds(&mut busy);
        self.devices.extend(busy);
        result
    }

    /// The rounds of [`Gateway::run_pending`] over `busy`, then each device's completed windows
    /// into the outbox.
    fn run_rounds(&mut self, busy: &mut [(String, Live)]) -> Result<(), GatewayError> {
        let f = self.model.features();
        let rounds = busy.iter().map(|(_, d)| d.stream.pending()).max().unwrap_or(0);
        for r in 0..rounds {
            let mut round = Round::default();
            for (_, d) in busy.iter_mut().filter(|(_, d)| d.stream.pending() > r) {
                d.stream.round(r, f, &mut round);
            }
            round.run(&self.model).map_err(|source| GatewayError::Encode { device: "(a flush batch)".into(), source })?;
        }
        for (id, d) in busy.iter_mut() {
            let scored = d.stream.settle(&self.model).map_err(|source| GatewayError::Encode { device: id.clone(), source })?;
            for (seq, window) in scored {
                self.outbox.insert(seq, Outgoing { seq, device: id.clone(), model: self.model.id, window });
            }
        }
        Ok(())
    }

    /// The model serving now.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Devices in memory.
    pub fn live_devices(&self) -> usize {
        self.devices.len()
    }

    /// Bytes in the log since the last snapshot.
    pub fn log_bytes(&self) -> u64 {
        self.store.log_bytes()
    }

    /// Results not yet acknowledged by the broker.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Results whose samples are not durable yet (released by the next sync).
    pub fn unreleased_seqs(&self) -> &[u64] {
        &self.unreleased
    }

    /// Results whose samples are durable and that the broker has not acknowledged, oldest first
    /// (what to send again after a reconnect).
    pub fn releasable(&self) -> Vec<Outgoing> {
        self.outbox.values().filter(|o| !self.unreleased.contains(&o.seq)).cloned().collect()
    }

    /// Logs and applies one message's samples for `device` (see the module docs: durable, and
    /// its windows releasable, after the next [`Gateway::sync`]).
    pub fn apply(&mut self, device: &str, samples: &[Sample]) -> Result<Applied, GatewayError> {
        if device.len() > MAX_DEVICE_ID {
            return Err(GatewayError::Params(format!("device id of {} bytes: at most {MAX_DEVICE_ID}", device.len())));
        }
        let f = self.model.features();
        if let Some((i, s)) = samples.iter().enumerate().find(|(_, s)| s.values.len() != f || s.values.iter().any(|v| !v.is_finite())) {
            return Err(GatewayError::Params(format!(
                "sample {} ({} value(s)) is not {f} finite value(s) for this model",
                i + 1,
                s.values.len()
            )));
        }
        self.store.append(&RecordRef::Samples { device, samples })?;
        self.apply_samples(device, samples)
    }

    fn apply_samples(&mut self, device: &str, samples: &[Sample]) -> Result<Applied, GatewayError> {
        let mut out = Applied::default();
        if !self.devices.contains_key(device) {
            out.evicted += self.make_room()?;
            let live = match self.evicted.remove(device) {
                Some(n) => {
                    let (model, saved): (u32, SavedStream) = self.store.read_device(device, n)?;
                    // Saved under an older model: its open windows cannot continue.
                    let saved = if model == self.model.id { saved } else { saved.without_windows() };
                    let stream = DeviceStream::load(saved, &self.model).ok_or_else(|| StoreError::Corrupt {
                        path: self.dir.join("devices"),
                        why: format!("device '{device}' (file {n}): saved window state does not fit model {:08x}", self.model.id),
                    })?;
                    Live { stream, active: 0, evictions: n + 1 }
                }
                None => Live { stream: DeviceStream::default(), active: 0, evictions: 0 },
            };
            self.devices.insert(device.to_string(), live);
        }
        self.clock += 1;
        let d = self.devices.get_mut(device).expect("inserted above");
        d.active = self.clock;
        if d.stream.pending() == 0 {
            self.dirty.push(device.to_string());
        }
        for s in samples {
            match d.stream.push(&self.model, &self.windowing, s, &mut self.next_seq) {
                Pushed::Stale => out.stale += 1,
                Pushed::Applied { gap, completed } => {
                    out.samples += 1;
                    out.gaps += gap as u64;
                    if let Some(seq) = completed {
                        out.windows += 1;
                        self.unreleased.push(seq);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Evicts the least recently active device when memory is full.
    fn make_room(&mut self) -> Result<u64, GatewayError> {
        if self.devices.len() < self.max_devices {
            return Ok(0);
        }
        let Some(id) = self.devices.iter().min_by_key(|(id, d)| (d.active, id.as_str())).map(|(id, _)| id.clone()) else {
            return Ok(0);
        };
        let mut entry = [self.devices.remove_entry(&id).expect("found above")];
        // Its queued samples are run (alone) before its state is saved.
        self.run_rounds(&mut entry)?;
        let [(id, d)] = entry;
        self.store.write_device(&id, d.evictions, &(self.model.id, d.stream.save(&self.model)))?;
        self.evicted.insert(id, d.evictions);
        Ok(1)
    }

    /// Makes everything applied so far durable; returns the windows that became publishable.
    pub fn sync(&mut self) -> Result<Vec<Outgoing>, GatewayError> {
        self.run_pending()?;
        self.store.sync()?;
        Ok(self.release())
    }

    /// The results whose samples just became durable.
    fn release(&mut self) -> Vec<Outgoing> {
        self.unreleased.drain(..).filter_map(|s| self.outbox.get(&s).cloned()).collect()
    }

    /// The broker acknowledged result `seq` (durable at the next sync or snapshot).
    pub fn published(&mut self, seq: u64) -> Result<(), GatewayError> {
        if self.outbox.remove(&seq).is_some() {
            self.store.append(&Record::Published { seq })?;
        }
        Ok(())
    }

    /// Serves `model` from now on (SIGHUP); open windows restart. Returns how many were dropped,
    /// or `None` when it is the model already served.
    pub fn reload(&mut self, model: Model, bundle: &[u8]) -> Result<Option<usize>, GatewayError> {
        if model.id == self.model.id {
            return Ok(None);
        }
        if model.features() != self.model.features() {
            return Err(GatewayError::Params(format!(
                "the new model reads {} feature(s) per sample, the served one {}: restart edge serve to change the input",
                model.features(),
                self.model.features()
            )));
        }
        self.keep_bundle(model.id, bundle)?;
        self.run_pending()?;
        self.store.append(&Record::Model { id: model.id })?;
        self.store.sync()?;
        Ok(Some(self.switch_model(model)?))
    }

    /// Writes a snapshot and starts a new log (also a [`Gateway::sync`]: what was applied is
    /// durable afterwards); returns the windows that became publishable.
    pub fn snapshot(&mut self) -> Result<Vec<Outgoing>, GatewayError> {
        let (pending, results) = self.begin_snapshot()?;
        let written = pending.write()?;
        self.snapshot_written(written)?;
        Ok(results)
    }

    /// [`Gateway::snapshot`] in two halves, so the write (encoding ~2 KB per live device, its
    /// fsync and rename: hundreds of milliseconds for 10,000 devices on a slow disk) can run on
    /// another thread while this one goes on applying messages: a [`Gateway::sync`] that also
    /// copies the state and starts the next log. Pass what [`PendingSnapshot::write`] returns
    /// to [`Gateway::snapshot_written`]; begin no other snapshot before.
    pub fn begin_snapshot(&mut self) -> Result<(PendingSnapshot, Vec<Outgoing>), GatewayError> {
        self.run_pending()?;
        let job = self.store.begin_snapshot()?;
        let mut devices: Vec<SavedDevice> = self
            .devices
            .iter()
            .map(|(id, d)| SavedDevice { id: id.clone(), active: d.active, evictions: d.evictions, stream: d.stream.save(&self.model) })
            .collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let mut evicted: Vec<(String, u32)> = self.evicted.iter().map(|(k, v)| (k.clone(), *v)).collect();
        evicted.sort();
        let snap = Snapshot {
            generation: job.generation(),
            model: self.model.id,
            windowing: self.windowing,
            max_devices: self.max_devices,
            clock: self.clock,
            next_seq: self.next_seq,
            devices,
            evicted,
            outbox: self.outbox.values().cloned().collect(),
        };
        Ok((PendingSnapshot { job, snap }, self.release()))
    }

    /// The snapshot is durable: removes the logs, device files and model copies that neither it
    /// nor the state since needs.
    pub fn snapshot_written(&mut self, w: WrittenSnapshot) -> Result<(), GatewayError> {
        self.store.snapshot_written(w.generation)?;
        // A restart from the snapshot reads back the device files it names; the live state
        // needs the current ones (a device may have been evicted again meanwhile).
        let evicted = &self.evicted;
        let named = |d: &str, n: u32| w.evicted.binary_search_by(|(k, v)| (k.as_str(), *v).cmp(&(d, n))).is_ok();
        self.store.prune_devices(|d, n| evicted.get(d) == Some(&n) || named(d, n))?;
        // After a reload since the snapshot began, its log names models in between: they are
        // kept until the next snapshot.
        if w.model == self.model.id {
            let keep = format!("{:08x}.bundle", self.model.id);
            if let Ok(entries) = std::fs::read_dir(self.dir.join("models")) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy() != keep {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The state at a [`Gateway::begin_snapshot`], to be written on any thread.
#[derive(Debug)]
pub struct PendingSnapshot {
    job: SnapshotJob,
    snap: Snapshot,
}

impl PendingSnapshot {
    /// Writes it durably (see [`SnapshotJob::write`]).
    pub fn write(self) -> Result<WrittenSnapshot, GatewayError> {
        let generation = self.job.write(&self.snap)?;
        Ok(WrittenSnapshot { generation, model: self.snap.model, evicted: self.snap.evicted })
    }
}

/// What [`Gateway::snapshot_written`] needs to know of a durable snapshot.
#[derive(Debug)]
pub struct WrittenSnapshot {
    generation: u64,
    model: u32,
    /// The evicted devices it names, sorted.
    evicted: Vec<(String, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Window, WindowerParams};
    use crate::score::{BatchScorer, Model as ScoreModel};
    use runtime::Assignment;

    fn bundle(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// The shipped fleet file as messages: (device, samples), a few samples per message, in
    /// file order; rows that are not readings are left out (they would be rejected messages).
    fn messages() -> Vec<(String, Vec<Sample>)> {
        let text = std::fs::read_to_string(format!("{}/../data/fleet/sample.csv", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut out: Vec<(String, Vec<Sample>)> = Vec::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let (Some(t), Some(v)) = (f.get(1).and_then(|t| t.parse::<f64>().ok()), f.get(2).and_then(|v| v.parse::<f32>().ok())) else {
                continue;
            };
            if f.len() != 3 || !v.is_finite() {
                continue;
            }
            let s = Sample { t, text: f[1].into(), values: vec![v].into() };
            match out.last_mut() {
                Some((d, ss)) if d == f[0] && ss.len() < 3 => ss.push(s),
                _ => out.push((f[0].to_string(), vec![s])),
            }
        }
        out
    }

    /// What `edge assign` computes for the same samples: (device, start, end, cluster, distance bits, anomalous).
    fn reference(model: &Model, w: &Windowing, msgs: &[(String, Vec<Sample>)]) -> Vec<(String, String, String, usize, u32, bool)> {
        let enc = model.encoder();
        let params = WindowerParams {
            features: 1,
            window: w.window,
            stride: w.stride,
            max_gap: w.max_gap,
            strict: false,
            sessions: None,
            session_column: false,
        };
        let mut scorer = BatchScorer::new(params, enc.bundle().header.k as usize, 4096).unwrap();
        let mut out = Vec::new();
        let mut sink = |j: &Window, a: &Assignment| {
            out.push((j.device.clone(), j.start.clone(), j.end.clone(), a.cluster, a.distance.to_bits(), a.anomalous));
            Ok(())
        };
        let model = ScoreModel::native(enc);
        for (d, ss) in msgs {
            for s in ss {
                let row = crate::fleet::Row { device: d, time: s.t, time_text: s.text.as_str(), session: None, values: &s.values[..] };
                scorer.feed_row(Ok(row), &model, &mut sink).unwrap();
            }
        }
        scorer.finish(&model, &mut sink).unwrap();
        out.sort();
        out
    }

    #[test]
    fn borrowed_samples_record_is_written_as_the_owned_one() {
        let samples = vec![Sample { t: 1.5, text: "1.5".into(), values: vec![0.25, -1.0].into() }];
        let owned = postcard::to_allocvec(&Record::Samples { device: "dev-1".into(), samples: samples.clone() }).unwrap();
        let borrowed = postcard::to_allocvec(&RecordRef::Samples { device: "dev-1", samples: &samples }).unwrap();
        assert_eq!(owned, borrowed);
        assert!(matches!(postcard::from_bytes::<Record>(&borrowed).unwrap(), Record::Samples { device, .. } if device == "dev-1"));
    }

    fn key(o: &Outgoing) -> (String, String, String, usize, u32, bool) {
        let w = &o.window;
        (o.device.clone(), w.start.clone(), w.end.clone(), w.cluster, w.distance.to_bits(), w.anomalous)
    }

    /// The log being appended to (the newest).
    fn log_file(dir: &Path) -> PathBuf {
        let generation = |p: &PathBuf| p.file_name()?.to_str()?.strip_prefix("log-")?.strip_suffix(".bin")?.parse::<u64>().ok();
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| generation(p).is_some()).max_by_key(generation).unwrap()
    }

    /// A power cut after the sync that made `synced` durable (the records' end and the file's):
    /// unsynced bytes are gone (the zeros laid down before are still there) and half a frame
    /// was on its way; the gateway reopened, the torn frame dropped.
    fn cut_power(g: Gateway, dir: &Path, synced: (u64, u64), p: &GatewayParams, model: Model, bytes: &[u8]) -> Gateway {
        drop(g);
        let f = std::fs::OpenOptions::new().write(true).open(log_file(dir)).unwrap();
        f.set_len(synced.1).unwrap();
        let zeros = vec![0u8; (synced.1 - synced.0) as usize];
        std::os::unix::fs::FileExt::write_all_at(&f, &zeros, synced.0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[9, 0, 0, 0, 1, 2], synced.0).unwrap();
        let (g, rec) = Gateway::open(dir, p, model, bytes).unwrap();
        assert_eq!(rec.truncated_bytes, 6);
        g
    }

    /// Power cuts at many points (the log loses what was not synced, and a torn half frame is
    /// left behind), the broker redelivering everything unacknowledged plus some acknowledged
    /// messages, devices evicted to disk all along (room for 4 of 25), snapshots written in the
    /// background (a cut while one is written kills it before or after its write): the windows
    /// published are exactly `edge assign`'s for the same samples, each with one seq, none lost.
    #[test]
    fn power_cuts_and_redelivery_lose_and_double_nothing() {
        let bytes = bundle("models/ecg5000/model.bundle");
        let model = Model::load(&bytes).unwrap();
        let msgs = messages();
        for w in [
            Windowing { window: model.seq_len(), stride: model.seq_len(), max_gap: None },
            Windowing { window: 50, stride: 20, max_gap: Some(30.0) },
        ] {
            let want = reference(&model, &w, &msgs);
            assert!(want.len() > 50, "{}", want.len());
            let dir = tempfile::tempdir().unwrap();
            let p = GatewayParams { windowing: w, max_devices: 4 };
            let (mut g, _) = Gateway::open(dir.path(), &p, model, &bytes).unwrap();
            let mut published: BTreeMap<u64, Outgoing> = BTreeMap::new();
            let (mut acked, mut next, mut cuts, mut applied) = (0usize, 0usize, 0, 0usize);
            let (mut syncs, mut pending, mut cut_pending) = (0usize, None::<PendingSnapshot>, [0usize; 2]);
            // What a sync made durable: the records' end and the file's (records, then zeros).
            let durable = |g: &Gateway| (g.log_bytes(), std::fs::metadata(log_file(dir.path())).unwrap().len());
            let mut synced = durable(&g);
            while acked < msgs.len() {
                g.apply(&msgs[next].0, &msgs[next].1).unwrap();
                next += 1;
                applied += 1;
                if next % 7 == 0 || next == msgs.len() {
                    syncs += 1;
                    let released = if syncs % 20 == 0 {
                        let (snap, released) = g.begin_snapshot().unwrap();
                        pending = Some(snap);
                        released
                    } else {
                        g.sync().unwrap()
                    };
                    if syncs % 20 == 10 {
                        if let Some(snap) = pending.take() {
                            let written = std::thread::spawn(move || snap.write()).join().unwrap().unwrap();
                            g.snapshot_written(written).unwrap();
                        }
                    }
                    for o in released {
                        assert!(published.insert(o.seq, o).is_none(), "a seq released twice");
                    }
                    // The broker acknowledges some publications (in order).
                    let seqs: Vec<u64> = published.keys().copied().filter(|s| g.outbox.contains_key(s)).take(3).collect();
                    seqs.into_iter().for_each(|s| g.published(s).unwrap());
                    acked = next;
                    synced = durable(&g);
                }
                if applied % 1009 == 0 || (next == msgs.len() && cuts < 3) {
                    cuts += 1;
                    if let Some(snap) = pending.take() {
                        cut_pending[cuts % 2] += 1;
                        if cuts % 2 == 1 {
                            snap.write().unwrap();
                        }
                    }
                    g = cut_power(g, dir.path(), synced, &p, model, &bytes);
                    // Redelivery: everything not acknowledged, and a few acknowledged messages.
                    next = acked.saturating_sub(2);
                    // Results durable before the cut go out again (same seq, same content).
                    for o in g.releasable() {
                        if let Some(prev) = published.get(&o.seq) {
                            assert_eq!(prev, &o, "a result changed across a restart");
                        }
                        published.insert(o.seq, o);
                    }
                    synced = durable(&g);
                }
            }
            assert!(cuts >= 3);
            assert!(cut_pending.iter().all(|&n| n > 0), "cuts before and after a background write: {cut_pending:?}");
            let mut got: Vec<_> = published.values().map(key).collect();
            got.sort();
            assert_eq!(got.len(), want.len(), "windows published vs edge assign (window {})", w.window);
            assert_eq!(got, want);
            assert!(dir.path().join("devices").read_dir().unwrap().count() > 0, "devices were evicted to disk");
        }
    }

    /// A message with a sample of the wrong width or a non-finite value is refused whole, with
    /// a message naming the sample, before anything is logged or applied.
    #[test]
    fn bad_samples_are_refused_before_they_are_logged() {
        let bytes = bundle("models/ecg5000/model.bundle");
        let model = Model::load(&bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = GatewayParams { windowing: Windowing { window: 20, stride: 20, max_gap: None }, max_devices: 10 };
        let (mut g, _) = Gateway::open(dir.path(), &p, model, &bytes).unwrap();
        let good = |t: f64| Sample { t, text: t.to_string().into(), values: vec![0.5].into() };
        let before = g.log_bytes();
        let wide = vec![good(1.0), Sample { t: 2.0, text: "2".into(), values: vec![0.5, 0.5].into() }];
        match g.apply("dev", &wide) {
            Err(GatewayError::Params(why)) => assert!(why.contains("sample 2 (2 value(s)) is not 1 finite value(s)"), "{why}"),
            other => panic!("{other:?}"),
        }
        let nan = vec![Sample { t: 3.0, text: "3".into(), values: vec![f32::NAN].into() }];
        match g.apply("dev", &nan) {
            Err(GatewayError::Params(why)) => assert!(why.contains("sample 1 (1 value(s)) is not 1 finite value(s)"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.log_bytes(), before, "nothing logged");
        // The refused samples were not applied: their timestamps are not stale.
        let a = g.apply("dev", &[good(1.0), good(2.0), good(3.0)]).unwrap();
        assert_eq!((a.samples, a.stale), (3, 0));
    }

    /// Negative control for the power-cut test: without the redelivery of unacknowledged
    /// messages (what the broker does and that test relies on), windows are missing.
    #[test]
    fn a_cut_without_redelivery_loses_windows() {
        let bytes = bundle("models/ecg5000/model.bundle");
        let model = Model::load(&bytes).unwrap();
        let msgs = messages();
        let w = Windowing { window: 20, stride: 20, max_gap: None };
        let dir = tempfile::tempdir().unwrap();
        let p = GatewayParams { windowing: w, max_devices: 100 };
        let (mut g, _) = Gateway::open(dir.path(), &p, model, &bytes).unwrap();
        let half = msgs.len() / 2;
        msgs[..half].iter().for_each(|(d, s)| {
            g.apply(d, s).unwrap();
        });
        drop(g); // unsynced: the BufWriter's drop wrote it, a power cut would not have
        std::fs::OpenOptions::new().write(true).open(log_file(dir.path())).unwrap().set_len(0).unwrap();
        let (mut g, _) = Gateway::open(dir.path(), &p, model, &bytes).unwrap();
        msgs[half..].iter().for_each(|(d, s)| {
            g.apply(d, s).unwrap();
        });
        let got = g.sync().unwrap().len();
        assert!(got < reference(&model, &w, &msgs).len());
    }

    /// A new model restarts open windows (counted), a restart replays the log with the model
    /// that wrote it (kept in the state directory), and a feature-count change is refused.
    #[test]
    fn model_reload_and_replay_with_the_old_model() {
        let a_bytes = bundle("models/ecg5000/model.bundle");
        let b_bytes = bundle("runtime/tests/fixtures/ecg5000-v3.bundle");
        let (a, b) = (Model::load(&a_bytes).unwrap(), Model::load(&b_bytes).unwrap());
        assert_ne!(a.id, b.id);
        let msgs = messages();
        let w = Windowing { window: 30, stride: 30, max_gap: None };
        let p = GatewayParams { windowing: w, max_devices: 100 };
        let dir = tempfile::tempdir().unwrap();
        let (mut g, _) = Gateway::open(dir.path(), &p, a, &a_bytes).unwrap();
        msgs[..200].iter().for_each(|(d, s)| {
            g.apply(d, s).unwrap();
        });
        let before = g.sync().unwrap();
        assert_eq!(g.reload(a, &a_bytes).unwrap(), None);
        let dropped = g.reload(b, &b_bytes).unwrap().unwrap();
        assert!(dropped > 0);
        msgs[200..400].iter().for_each(|(d, s)| {
            g.apply(d, s).unwrap();
        });
        let after = g.sync().unwrap();
        assert!(after.iter().all(|o| o.model == b.id) && before.iter().all(|o| o.model == a.id));
        let outbox: Vec<Outgoing> = g.releasable();
        drop(g);
        // Restart still configured with b: the log (samples under a, the switch, samples under b) replays.
        let (g, rec) = Gateway::open(dir.path(), &p, b, &b_bytes).unwrap();
        assert_eq!(g.releasable(), outbox, "replay (through the model switch) rebuilt the same outbox");
        assert_eq!(rec.windows_restarted, 0);
        drop(g);
        let (g, rec) = Gateway::open(dir.path(), &p, a, &a_bytes).unwrap();
        assert!(rec.windows_restarted > 0, "configured model differs from the served one");
        assert_eq!(g.model().id, a.id);
        drop(g);

        // A reload while a snapshot (of model a) is written in the background: the model copy
        // the snapshot names outlives it, so a restart from that snapshot replays the switch.
        let (mut g, _) = Gateway::open(dir.path(), &p, a, &a_bytes).unwrap();
        let (pending, _) = g.begin_snapshot().unwrap();
        g.reload(b, &b_bytes).unwrap().unwrap();
        msgs[400..500].iter().for_each(|(d, s)| {
            g.apply(d, s).unwrap();
        });
        g.sync().unwrap();
        g.snapshot_written(pending.write().unwrap()).unwrap();
        let outbox = g.releasable();
        drop(g);
        let (g, rec) = Gateway::open(dir.path(), &p, b, &b_bytes).unwrap();
        assert_eq!((g.releasable(), rec.windows_restarted), (outbox, 0));
    }
}
