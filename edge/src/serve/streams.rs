//! One device's live windows, pushed one sample at a time through the runtime's streaming
//! encoder: no window buffer, only the open windows' [`State`]s and the samples that arrived
//! since the gateway last ran the encoder (it runs all devices' pending samples together at
//! each flush, see [`DeviceStream`]).
//!
//! The windows are `edge assign`'s: a window of `window` samples starts every `stride` samples
//! since the device's stream (re)started, so `ceil(window / stride)` of them are open at once; a
//! timestamp gap larger than `max_gap` closes them all and restarts the stream. The encoder and
//! the decision are the ones `edge assign` runs (the runtime's streaming and batched paths are
//! bit-identical), so a window's result here equals its row in `edge assign`'s table.

use std::collections::VecDeque;

use runtime::batch::{push_each, HostState, HOST_MAX_HIDDEN, HOST_MAX_LATENT, HOST_MAX_LAYERS};
use runtime::bundle::{AlignedBytes, Normalization};
use runtime::{Assignment, EncodeError, Encoder, State};
use serde::{Deserialize, Serialize};

use super::payload::Sample;

/// A model loaded for serving: its bundle (kept for the process's life, see [`Model::load`]) and
/// an id results carry.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    enc: Encoder<'static>,
    /// FNV-1a hash of the bundle (8 hex digits in results): which model scored a window. Not
    /// its CRC-32: a bundle ends with its own CRC, which makes every bundle's CRC the same.
    pub id: u32,
}

/// Why a bundle cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// Not a valid bundle.
    #[error("invalid model bundle: {0}")]
    Bundle(#[from] runtime::BundleError),
    /// A model that z-normalises whole windows cannot be streamed sample by sample.
    #[error(
        "this model z-normalises each window, which needs the whole window before its first step; \
         edge serve streams samples through the encoder: fit with --normalization none, or score recorded data with edge assign"
    )]
    NeedsWindow,
}

impl Model {
    /// Parses a bundle. Its bytes are kept for the rest of the process (the encoder borrows them
    /// on every sample); a reload keeps the old ones too, a few hundred KB per reload.
    pub fn load(bytes: &[u8]) -> Result<Self, ModelError> {
        let aligned: &'static AlignedBytes = Box::leak(Box::new(AlignedBytes::new(bytes)));
        let enc = Encoder::from_bytes(aligned.as_bytes())?;
        enc.check_capacity::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>()?;
        if enc.bundle().header.normalization != Normalization::None {
            return Err(ModelError::NeedsWindow);
        }
        Ok(Model { enc, id: fnv1a(bytes) })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder<'static> {
        &self.enc
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.enc.bundle().header.n_features as usize
    }

    /// The training window length (the default `--window`).
    pub fn seq_len(&self) -> usize {
        self.enc.bundle().header.seq_len as usize
    }

    /// The shortest window the model encodes (the bundle's `min_len`).
    pub fn min_len(&self) -> u32 {
        self.enc.bundle().header.min_len
    }

    /// Words one saved window state takes.
    fn state_words(&self) -> usize {
        let h = self.enc.bundle().header;
        HostState::saved_words(h.hidden as usize, h.layers as usize)
    }
}

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// How samples become windows (the `edge assign` flags).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Windowing {
    /// Samples per window.
    pub window: usize,
    /// Samples between window starts.
    pub stride: usize,
    /// Largest timestamp step inside a window.
    pub max_gap: Option<f64>,
}

/// An open window's encoder state, in the smallest capacity the model fits: the host maximum
/// (512 x 4 units, 17 KiB) per window would put 10,000 devices at 170 MB; the shipped model's
/// 90 x 1 fits `State<128, 1>` (2 KiB). Every capacity computes the same bits.
#[derive(Debug, Clone)]
enum WindowState {
    Small(Box<State<128, 1>>),
    Medium(Box<State<256, 2>>),
    Host(Box<HostState>),
}

/// `$body` with `$s` bound to the state, whatever its capacity.
macro_rules! with_state {
    ($ws:expr, $s:ident => $body:expr) => {
        match $ws {
            WindowState::Small($s) => $body,
            WindowState::Medium($s) => $body,
            WindowState::Host($s) => $body,
        }
    };
}

impl WindowState {
    /// A fresh state for `model`.
    fn new(model: &Model) -> Self {
        let h = model.enc.bundle().header;
        match (h.hidden, h.layers) {
            (..=128, ..=1) => WindowState::Small(Box::default()),
            (..=256, ..=2) => WindowState::Medium(Box::default()),
            _ => WindowState::Host(Box::default()),
        }
    }

    fn steps(&self) -> u32 {
        with_state!(self, s => s.steps())
    }

    fn assign(&self, enc: &Encoder<'static>) -> Result<Assignment, EncodeError> {
        with_state!(self, s => {
            let z = enc.finish::<_, _, HOST_MAX_LATENT>(&**s)?;
            enc.decide(&**s, &z)
        })
    }

    /// The used part of the state as words ([`State::save`]).
    fn save(&self, model: &Model) -> Vec<u32> {
        let h = model.enc.bundle().header;
        let mut words = Vec::with_capacity(model.state_words());
        let r = with_state!(self, s => s.save(h.hidden as usize, h.layers as usize, |x| words.push(x)));
        r.expect("the state was made for this model");
        words
    }

    /// A state [`WindowState::save`] wrote for `model`; `None` if the words do not fit it.
    fn load(model: &Model, words: Vec<u32>) -> Option<Self> {
        let h = model.enc.bundle().header;
        let mut it = words.into_iter();
        let mut ws = WindowState::new(model);
        with_state!(&mut ws, s => **s = State::load(h.hidden as usize, h.layers as usize, || it.next())?);
        Some(ws)
    }
}

/// One open window: its encoder state, which has seen its samples up to the device's pending
/// ones, and takes the pending ones from `from` on.
#[derive(Debug, Clone)]
struct Open {
    state: WindowState,
    start: String,
    /// First pending sample its state has not seen (0 for a window opened before them).
    from: usize,
}

impl Open {
    /// Samples in the window when the device has `pending` samples queued.
    fn samples(&self, pending: usize) -> usize {
        self.state.steps() as usize + (pending - self.from)
    }
}

/// A window that has all its samples but whose state has not seen pending samples
/// `from..to` yet; then it is scored as result `seq`.
#[derive(Debug, Clone)]
struct Closing {
    open: Open,
    end: String,
    to: usize,
    seq: u64,
}

/// A finished window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Timestamp text of its first sample.
    pub start: String,
    /// Timestamp text of its last sample.
    pub end: String,
    /// Nearest cluster, distances, anomaly flag.
    pub cluster: usize,
    /// Distance to the nearest prototype.
    pub distance: f32,
    /// Distance to the nearest prototype of another cluster.
    pub second_distance: f32,
    /// Beyond the cluster's anomaly threshold.
    pub anomalous: bool,
}

impl Scored {
    fn new(start: String, end: String, a: Assignment) -> Self {
        Scored { start, end, cluster: a.cluster, distance: a.distance, second_distance: a.second_distance, anomalous: a.anomalous }
    }
}

/// What one sample did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Not after the device's last timestamp: a redelivered or out-of-order sample, skipped.
    Stale,
    /// Applied; `gap` when it restarted the stream; `completed` when it was a window's last
    /// sample (the window is scored, as result `seq`, when the pending samples are run).
    Applied {
        /// The sample came after a gap and restarted the windows.
        gap: bool,
        /// The result number of the window it completed, if any.
        completed: Option<u64>,
    },
}

/// The encoder states that take one pending sample in a round of [`DeviceStream::round`],
/// by state capacity (one model's windows all have the same).
#[derive(Default)]
pub struct Round<'a> {
    small: Vec<(&'a mut State<128, 1>, &'a [f32])>,
    medium: Vec<(&'a mut State<256, 2>, &'a [f32])>,
    host: Vec<(&'a mut HostState, &'a [f32])>,
}

impl<'a> Round<'a> {
    fn add(&mut self, ws: &'a mut WindowState, x: &'a [f32]) {
        match ws {
            WindowState::Small(s) => self.small.push((&mut **s, x)),
            WindowState::Medium(s) => self.medium.push((&mut **s, x)),
            WindowState::Host(s) => self.host.push((&mut **s, x)),
        }
    }

    /// Pushes every state's sample, several states per weight load ([`push_each`]).
    pub fn run(mut self, model: &Model) -> Result<(), EncodeError> {
        let enc = model.encoder();
        push_each(enc, &mut self.small)?;
        push_each(enc, &mut self.medium)?;
        push_each(enc, &mut self.host)
    }
}

/// A device's stream: its open windows and where it stands.
///
/// Samples are counted, windowed and checked for redelivery when they arrive, but they reach
/// the encoder later, in [`DeviceStream::round`]s that the gateway runs for all its devices
/// together before results are needed (a flush, a snapshot, an eviction): stepping many
/// devices' windows by one sample each through the multi-window kernel reads each weight once
/// for several windows, where one window per sample is bound by reading the weights.
#[derive(Debug, Clone)]
pub struct DeviceStream {
    last_t: f64,
    /// Samples since the stream (re)started.
    since_start: u64,
    open: VecDeque<Open>,
    closing: Vec<Closing>,
    /// Values of the samples the encoder states have not all seen yet, oldest first.
    pending: Vec<f32>,
    /// Samples in `pending`.
    pending_n: usize,
    /// Samples applied in all.
    pub samples: u64,
    /// Windows completed in all.
    pub windows: u64,
}

/// A [`DeviceStream`] as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedStream {
    last_t: f64,
    since_start: u64,
    open: Vec<(String, Vec<u32>)>,
    samples: u64,
    windows: u64,
}

impl SavedStream {
    /// The same stream with its open windows dropped (as [`DeviceStream::restart`]).
    pub fn without_windows(self) -> Self {
        SavedStream { since_start: 0, open: Vec::new(), ..self }
    }
}

impl Default for DeviceStream {
    fn default() -> Self {
        DeviceStream {
            last_t: f64::NEG_INFINITY,
            since_start: 0,
            open: VecDeque::new(),
            closing: Vec::new(),
            pending: Vec::new(),
            pending_n: 0,
            samples: 0,
            windows: 0,
        }
    }
}

impl DeviceStream {
    /// Timestamp of the last applied sample.
    pub fn last_t(&self) -> f64 {
        self.last_t
    }

    /// Samples waiting for the encoder.
    pub fn pending(&self) -> usize {
        self.pending_n
    }

    /// Applies one sample (already checked for feature count and finiteness): windows it and
    /// queues it for the encoder. A window it completes gets result number `*next_seq` (then
    /// incremented).
    pub fn push(&mut self, model: &Model, w: &Windowing, s: &Sample, next_seq: &mut u64) -> Pushed {
        if s.t <= self.last_t {
            return Pushed::Stale;
        }
        let gap = w.max_gap.is_some_and(|g| self.since_start > 0 && s.t - self.last_t > g);
        if gap {
            self.open.clear();
            self.since_start = 0;
        }
        self.last_t = s.t;
        self.samples += 1;
        if self.since_start.is_multiple_of(w.stride as u64) {
            self.open.push_back(Open { state: WindowState::new(model), start: s.text.to_string(), from: self.pending_n });
        }
        self.since_start += 1;
        self.pending.extend_from_slice(&s.values);
        self.pending_n += 1;
        if self.open.front().is_none_or(|o| o.samples(self.pending_n) < w.window) {
            return Pushed::Applied { gap, completed: None };
        }
        let open = self.open.pop_front().expect("checked above");
        let seq = *next_seq;
        *next_seq += 1;
        self.windows += 1;
        self.closing.push(Closing { open, end: s.text.to_string(), to: self.pending_n, seq });
        Pushed::Applied { gap, completed: Some(seq) }
    }

    /// Adds to `round` the states that take pending sample `r` (`r < pending()`), each with
    /// the sample's values.
    pub fn round<'a>(&'a mut self, r: usize, features: usize, round: &mut Round<'a>) {
        let DeviceStream { open, closing, pending, .. } = self;
        let x: &'a [f32] = &pending[r * features..(r + 1) * features];
        for o in open.iter_mut().filter(|o| o.from <= r) {
            round.add(&mut o.state, x);
        }
        for c in closing.iter_mut().filter(|c| c.open.from <= r && r < c.to) {
            round.add(&mut c.open.state, x);
        }
    }

    /// After every pending sample went through [`DeviceStream::round`]s: scores the completed
    /// windows (result number and window, in completion order) and forgets the pending samples.
    pub fn settle(&mut self, model: &Model) -> Result<Vec<(u64, Scored)>, EncodeError> {
        let enc = model.encoder();
        let mut out = Vec::with_capacity(self.closing.len());
        for c in self.closing.drain(..) {
            let a = c.open.state.assign(enc)?;
            out.push((c.seq, Scored::new(c.open.start, c.end, a)));
        }
        self.pending.clear();
        self.pending_n = 0;
        for o in self.open.iter_mut() {
            o.from = 0;
        }
        Ok(out)
    }

    /// Drops the open windows (a new model cannot continue the old one's states); the stream
    /// restarts at the next sample, and the last timestamp still guards against redelivery.
    /// Returns how many windows were dropped. Pending samples must have been run.
    pub fn restart(&mut self) -> usize {
        debug_assert!(self.pending_n == 0 && self.closing.is_empty(), "restart with pending samples");
        let n = self.open.len();
        self.open.clear();
        self.since_start = 0;
        n
    }

    /// What is stored on disk. Pending samples must have been run.
    pub fn save(&self, model: &Model) -> SavedStream {
        debug_assert!(self.pending_n == 0 && self.closing.is_empty(), "save with pending samples");
        let open = self.open.iter().map(|o| (o.start.clone(), o.state.save(model))).collect();
        SavedStream { last_t: self.last_t, since_start: self.since_start, open, samples: self.samples, windows: self.windows }
    }

    /// The stream [`DeviceStream::save`] wrote; `None` if its states do not fit `model`.
    pub fn load(saved: SavedStream, model: &Model) -> Option<Self> {
        let mut open = VecDeque::with_capacity(saved.open.len());
        for (start, words) in saved.open {
            if words.len() != model.state_words() {
                return None;
            }
            open.push_back(Open { state: WindowState::load(model, words)?, start, from: 0 });
        }
        Some(DeviceStream {
            last_t: saved.last_t,
            since_start: saved.since_start,
            open,
            samples: saved.samples,
            windows: saved.windows,
            ..DeviceStream::default()
        })
    }
}
