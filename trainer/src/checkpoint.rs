//! Training checkpoints: everything needed to continue a run bit-for-bit — weights, optimiser
//! moments and step, the RNG position, the shuffle order, the epoch log — plus the run's
//! [`RunRecord`] (with a fingerprint of the data), so `trainer fit --resume DIR` can refuse a mismatched restart.
//!
//! One file, `checkpoint.safetensors`: tensors `w.<name>` (weights), `m.<name>` / `v.<name>` (Adam
//! moments), and a JSON [`CheckpointMeta`] under the metadata key `vrae.checkpoint`. One file so
//! that a single atomic rename replaces the whole state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::params::{tensors_from_safetensors, tensors_to_safetensors};
use crate::model::ParamStore;
use crate::run_record::RunRecord;
use crate::train_log::EpochLog;

/// File name of the checkpoint inside a model directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Version of the checkpoint layout.
pub const CHECKPOINT_VERSION: u32 = 2;
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

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version ([`CHECKPOINT_VERSION`]).
    pub version: u32,
    /// The run, as `config.json` will record it; checked on resume.
    pub run: RunRecord,
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
        /// The layout version alone, read first so an old layout gets a clear error rather
        /// than a missing field.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| Error::model(path, format!("checkpoint metadata is corrupt: {e}"));
        let version = serde_json::from_str::<Version>(json).map_err(corrupt)?.version;
        if version != CHECKPOINT_VERSION {
            return Err(Error::model(
                path,
                format!(
                    "checkpoint version {version} is not supported (this trainer reads {CHECKPOINT_VERSION}); start the run afresh without --resume"
                ),
            ));
        }
        let meta: CheckpointMeta = serde_json::from_str(json).map_err(corrupt)?;
        let s = &meta.state;
        if s.log.len() != s.epochs_done || s.order.len() != meta.run.data.n_train {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed fuzz seed (a layout-2 checkpoint) reads back; the same bytes with an older
    /// layout, or with metadata that is not JSON, are refused with errors that say so and name
    /// the file.
    #[test]
    fn older_layouts_and_corrupt_metadata_are_named_errors() {
        let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/checkpoint/tiny");
        let bytes = std::fs::read(seed).unwrap();
        let path = Path::new("dir/checkpoint.safetensors");
        let ck = Checkpoint::from_bytes(&bytes, path, &Device::Cpu).unwrap();
        let mut old = ck.meta.clone();
        old.version = 1;
        let e = Checkpoint::from_bytes(&encode(&old, &ck.weights, &ck.optimizer).unwrap(), path, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("checkpoint.safetensors") && e.contains("version 1 is not supported") && e.contains("without --resume"), "{e}");
        // A layout-1 body (`settings`, no `run`) gets the version error, not a missing field.
        let t: BTreeMap<String, Tensor> = ck.weights.iter().map(|(k, v)| (format!("w.{k}"), v.as_tensor().clone())).collect();
        let v1 = tensors_to_safetensors(&t, Some(HashMap::from([(META_KEY.into(), r#"{"version":1,"settings":{}}"#.into())]))).unwrap();
        let e = Checkpoint::from_bytes(&v1, path, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("version 1 is not supported"), "{e}");
        let bad = tensors_to_safetensors(&t, Some(HashMap::from([(META_KEY.into(), "{not json".into())]))).unwrap();
        let e = Checkpoint::from_bytes(&bad, path, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("checkpoint.safetensors") && e.contains("metadata is corrupt"), "{e}");
    }
}
