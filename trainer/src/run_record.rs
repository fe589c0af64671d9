//! What one run is: the record `trainer fit` (or `trainer import`) fills once and writes whole
//! into `config.json`, the training checkpoint and `report.json`, so the three never disagree
//! about the hyper-parameters, the model's shape or the data it saw.

use serde::{Deserialize, Serialize};

use crate::cluster::decision::DecisionParams;
use crate::data::prep::{LengthMode, Normalization};
use crate::data::Series;
use crate::model::ModelConfig;
use crate::params::VraeParams;

/// Version of the model-directory layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// The run: architecture, hyper-parameters, data, how clusters were asked for, and where an
/// imported encoder came from. `config.json` is this record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Trainer version that wrote it.
    pub trainer_version: String,
    /// Architecture.
    pub model: ModelConfig,
    /// Hyper-parameters of the run.
    pub params: VraeParams,
    /// Training data.
    pub data: DataInfo,
    /// How the cluster decision was asked for (absent in directories written before it was
    /// recorded, and for imports with a given centroid table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustering: Option<ClusterRequest>,
    /// Set when the encoder was imported from ONNX (`trainer import`) rather than trained here:
    /// then `params` are defaults that record only the architecture, and there is no decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportInfo>,
}

/// Shape and preparation of the training data, stored so new data can be prepared the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// Files the model was trained on.
    pub sources: Vec<String>,
    /// Series loaded.
    pub n_series: usize,
    /// Series used for training.
    pub n_train: usize,
    /// Series held out.
    pub n_holdout: usize,
    /// Held-out fraction.
    pub holdout: f64,
    /// Shortest and longest series before resampling.
    pub length_range: (usize, usize),
    /// True when series were resampled to `seq_len` because lengths differed.
    pub resampled: bool,
    /// How new data reaches the model: `native` for a model trained at native lengths on series
    /// of several lengths; `resample` (onto `seq_len`) for one trained on one length, or
    /// resampled, and for directories written before the choice.
    #[serde(default = "LengthMode::recorded_before")]
    pub length: LengthMode,
    /// Native lengths: the shortest series `embed` and `cluster` accept
    /// ([`crate::data::prep::native_min_length`]); absent when series are resampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// Series cut to the model's length (`--max-length`), their first `seq_len` steps kept.
    #[serde(default)]
    pub cut: usize,
    /// Normalisation applied per series before the model.
    pub normalization: Normalization,
    /// Distinct labels in order of first appearance, when the data had labels.
    pub labels: Option<Vec<String>>,
    /// FNV-1a 64 of the prepared training series ([`fingerprint`]), hex;
    /// absent in directories written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The cluster settings a run was started with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterRequest {
    /// Requested clusters (`None`: the number of labels, or the eigengap's choice).
    pub clusters: Option<usize>,
    /// k chosen by the eigengap even though the data had labels.
    pub auto: bool,
    /// k-means restarts.
    pub n_init: usize,
    /// Representation and clustering of the decision; may change on resume.
    pub decision: DecisionParams,
}

/// Where an imported encoder came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportInfo {
    /// The ONNX file given to `trainer import`.
    pub source: String,
    /// The graph's producer and its version (e.g. `pytorch 2.15.0`).
    pub producer: String,
    /// The default-domain opset the graph declares.
    pub opset: i64,
}

impl RunRecord {
    /// A record of this trainer version.
    pub fn new(model: ModelConfig, params: VraeParams, data: DataInfo) -> Self {
        RunRecord {
            format_version: FORMAT_VERSION,
            trainer_version: env!("CARGO_PKG_VERSION").to_string(),
            model,
            params,
            data,
            clustering: None,
            imported: None,
        }
    }

    /// Differences that make `other` (a checkpoint's record) unusable for continuing this run;
    /// the epoch count, learning rate, clipping and the decision may change on resume, and the
    /// source paths may move.
    pub fn mismatches(&self, other: &RunRecord) -> Vec<String> {
        let (a, b) = (self, other);
        let mut params = a.params.clone();
        params.epochs = b.params.epochs;
        params.learning_rate = b.params.learning_rate;
        params.clip_norm = b.params.clip_norm;
        let mut out = Vec::new();
        if a.data.fingerprint != b.data.fingerprint || a.data.n_train != b.data.n_train {
            let fp = |d: &DataInfo| d.fingerprint.clone().unwrap_or_else(|| "none".into());
            out.push(format!(
                "the training data differ ({} series, fingerprint {} now; {} series, fingerprint {} in the checkpoint)",
                a.data.n_train,
                fp(&a.data),
                b.data.n_train,
                fp(&b.data)
            ));
        }
        if params != b.params {
            out.push(format!("hyper-parameters differ: now {:?}, checkpoint {:?}", params, b.params));
        }
        if a.model != b.model {
            out.push(format!("model shape differs: now {:?}, checkpoint {:?}", a.model, b.model));
        }
        let asked = |r: &RunRecord| r.clustering.map(|c| (c.clusters, c.n_init));
        if a.data.holdout != b.data.holdout
            || a.data.normalization != b.data.normalization
            || a.data.length != b.data.length
            || asked(a) != asked(b)
        {
            out.push("holdout, normalisation, length mode, clusters or n_init differ".into());
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
