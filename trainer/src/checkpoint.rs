//! Training checkpoints: everything needed to continue a run bit-for-bit — weights, optimiser
//! moments and step, the RNG position, the shuffle order, the epoch log — plus the settings and
//! a fingerprint of the data, so `trainer fit --resume DIR` can refuse a mismatched restart.
//!
//! One file, `checkpoint.safetensors`: tensors `w.<name>` (weights), `m.<name>` / `v.<name>` (Adam
//! moments), and a JSON [`CheckpointMeta`] under the metadata key `vrae.checkpoint`. One file so
//! that a single atomic rename replaces the whole state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::prep::Normalization;
use crate::data::Series;
use crate::error::{Error, Result};
use crate::model::params::{tensors_from_safetensors, tensors_to_safetensors};
use crate::model::{ModelConfig, ParamStore};
use crate::params::VraeParams;
use crate::train_log::EpochLog;

/// File name of the checkpoint inside a model directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Version of the checkpoint layout.
pub const CHECKPOINT_VERSION: u32 = 1;
const META_KEY: &str = "vrae.checkpoint";

/// Exact position of the ChaCha8 generator (seed, stream, 128-bit word position as a string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    /// Stream number.
    pub stream: u64,
    /// Word position (u128, decimal, since JSON numbers cannot hold it).
    pub word_pos: String,
}

impl RngState {
    /// Captures `rng`'s position.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// A generator at exactly the captured position.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let bad = || Error::Training(format!("checkpoint RNG state is corrupt: {self:?}"));
        if self.seed.len() != 64 || !self.seed.is_ascii() {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().map_err(|_| bad())?);
        Ok(rng)
    }
}

/// Where training stands after a completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub optimizer_steps: usize,
    /// RNG position after the last completed epoch.
    pub rng: RngState,
    /// Current shuffle order of the training series (each epoch shuffles it further).
    pub order: Vec<usize>,
    /// Per-epoch log so far.
    pub log: Vec<EpochLog>,
}

/// The settings a run was started with, checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Hyper-parameters.
    pub params: VraeParams,
    /// Model shape.
    pub model: ModelConfig,
    /// Held-out fraction.
    pub holdout: f64,
    /// Per-series normalisation.
    pub normalization: Normalization,
    /// Requested clusters (`None`: number of labels).
    pub clusters: Option<usize>,
    /// k-means restarts.
    pub n_init: usize,
    /// How the cluster decision was built (absent in older checkpoints); may change on resume.
    #[serde(default)]
    pub decision: Option<crate::cluster::decision::DecisionParams>,
    /// Training series.
    pub n_train: usize,
    /// FNV-1a 64 of the training series after preparation, hex.
    pub data_fingerprint: String,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version ([`CHECKPOINT_VERSION`]).
    pub version: u32,
    /// How the run was started.
    pub settings: RunSettings,
    /// Where it stands.
    pub state: TrainState,
}

/// A loaded or captured checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Settings and progress.
    pub meta: CheckpointMeta,
    /// Model weights.
    pub weights: ParamStore,
    /// Optimiser tensors (`m.<name>`, `v.<name>`; empty for SGD).
    pub optimizer: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Serialises into the single-file layout described in the module docs.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        encode(&self.meta, &self.weights, &self.optimizer)
    }

    /// Reads `dir/checkpoint.safetensors`.
    pub fn load(dir: &Path, dev: &Device) -> Result<Self> {
        let path = dir.join(CHECKPOINT);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_bytes(&bytes, &path, dev)
    }

    /// Parses checkpoint bytes; `path` names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, dev: &Device) -> Result<Self> {
        let (tensors, meta) = tensors_from_safetensors(bytes, path, dev)?;
        let json = meta
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| Error::model(path, "not a training checkpoint (no vrae.checkpoint metadata)"))?;
        let meta: CheckpointMeta =
            serde_json::from_str(json).map_err(|e| Error::model(path, format!("checkpoint metadata is corrupt: {e}")))?;
        if meta.version != CHECKPOINT_VERSION {
            return Err(Error::model(
                path,
                format!("checkpoint version {} is not supported (this trainer reads {CHECKPOINT_VERSION})", meta.version),
            ));
        }
        let s = &meta.state;
        if s.log.len() != s.epochs_done || s.order.len() != meta.settings.n_train {
            return Err(Error::model(path, "checkpoint state is inconsistent (log or shuffle order has the wrong length)"));
        }
        let mut sorted = s.order.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &v)| i != v) {
            return Err(Error::model(path, "checkpoint shuffle order is not a permutation"));
        }
        let mut weights = BTreeMap::new();
        let mut optimizer = BTreeMap::new();
        for (k, t) in tensors {
            match k.strip_prefix("w.") {
                Some(name) => {
                    weights.insert(name.to_string(), t);
                }
                None => {
                    optimizer.insert(k, t);
                }
            }
        }
        Ok(Checkpoint { meta, weights: ParamStore::from_tensors(weights)?, optimizer })
    }
}

/// Serialises a checkpoint from borrowed parts (see [`Checkpoint::to_bytes`]).
pub fn encode(meta: &CheckpointMeta, weights: &ParamStore, optimizer: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut t: BTreeMap<String, Tensor> = weights.iter().map(|(k, v)| (format!("w.{k}"), v.as_tensor().clone())).collect();
    t.extend(optimizer.iter().map(|(k, v)| (k.clone(), v.clone())));
    let json = serde_json::to_string(meta).map_err(|e| Error::Training(format!("checkpoint metadata: {e}")))?;
    tensors_to_safetensors(&t, Some(HashMap::from([(META_KEY.to_string(), json)])))
}

impl RunSettings {
    /// Differences that make `other` (a checkpoint's settings) unusable for this run; the epoch
    /// count, learning rate and clipping may change on resume.
    pub fn mismatches(&self, other: &RunSettings) -> Vec<String> {
        let mut a = self.clone();
        let b = other;
        a.params.epochs = b.params.epochs;
        a.params.learning_rate = b.params.learning_rate;
        a.params.clip_norm = b.params.clip_norm;
        a.decision = b.decision;
        let mut out = Vec::new();
        if a.data_fingerprint != b.data_fingerprint || a.n_train != b.n_train {
            out.push(format!(
                "the training data differ ({} series, fingerprint {} now; {} series, fingerprint {} in the checkpoint)",
                a.n_train, a.data_fingerprint, b.n_train, b.data_fingerprint
            ));
        }
        if a.params != b.params {
            out.push(format!("hyper-parameters differ: now {:?}, checkpoint {:?}", a.params, b.params));
        }
        if a.model != b.model {
            out.push(format!("model shape differs: now {:?}, checkpoint {:?}", a.model, b.model));
        }
        if a.holdout != b.holdout || a.normalization != b.normalization || a.clusters != b.clusters || a.n_init != b.n_init {
            out.push("holdout, normalisation, clusters or n_init differ".into());
        }
        out
    }
}

/// FNV-1a 64 over the feature count and every value of every series, as hex: cheap, and any
/// changed, added, removed or reordered value changes it.
pub fn fingerprint(series: &[Series], n_features: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&(n_features as u64).to_le_bytes());
    for s in series {
        eat(&(s.values.len() as u64).to_le_bytes());
        for v in &s.values {
            eat(&v.to_le_bytes());
        }
    }
    format!("{h:016x}")
}
