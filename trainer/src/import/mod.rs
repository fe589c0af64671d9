//! `trainer import`: a VRAE encoder trained elsewhere (PyTorch, exported with
//! `torch.onnx.export`) as a model directory the rest of the tool chain uses: the runtime bundle
//! (devices, firmware, `edge`), the ONNX file as given, `config.json`, `model.safetensors` (the
//! encoder and head in our names) and `centroids.json`.
//!
//! The graph is read with `candle-onnx`'s ONNX types and recognised by [`graph::recognise`]; the
//! clusters come from a centroid table (`--centroids`, nearest centroid on the latent) or are
//! fitted on data with the same decision `trainer fit` builds (`--fit-centroids`).
//! The directory is built under a staging name and swapped in whole, as `fit` does.

pub mod graph;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prost::Message;

use crate::artifacts::{self, Centroids, Staging};
use crate::cluster::decision::{ClusterParams, Decision, DecisionParams};
use crate::cluster::metrics::encode_labels;
use crate::cluster::{ClusterScores, Contingency};
use crate::data::prep::{normalize, resample_all, Normalization};
use crate::data::Dataset;
use crate::decide::{check_clusters, fit_decision, latent_means};
use crate::embed::NativeEncoder;
use crate::error::{Error, Result};
use crate::export::write_bundle;
use crate::files::{write_atomic, write_json};
use crate::model::{ModelConfig, ParamStore};
use crate::params::VraeParams;
use crate::run_record::{fingerprint, ClusterRequest, DataInfo, ImportInfo, RunRecord};
pub use graph::{recognise, Recognised};

/// Where the clusters of an imported encoder come from.
#[derive(Debug, Clone)]
pub enum CentroidSource {
    /// A `k x latent` table: `centroids.json` (ours, or a bare JSON array of rows) or `.npy`.
    File(PathBuf),
    /// Fitted on these series with `trainer fit`'s decision (labels, when the data has them,
    /// only score it).
    Fit {
        /// The series (any normalisation is applied by the import).
        data: Dataset,
        /// Number of clusters; `None` picks it by the eigengap.
        k: Option<usize>,
        /// How the decision is built (boxed: it dwarfs the other variant).
        decision: Box<DecisionParams>,
        /// k-means restarts.
        n_init: usize,
        /// Seed of the clustering.
        seed: u64,
    },
}

/// Everything `import` needs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The ONNX encoder.
    pub onnx: PathBuf,
    /// The model directory to write (absent, empty or an earlier model directory).
    pub out: PathBuf,
    /// The clusters.
    pub centroids: CentroidSource,
    /// Window length devices encode; default: the graph's fixed length, else the data's.
    pub seq_len: Option<usize>,
    /// Per-series normalisation the encoder was trained with (applied on the device too).
    pub normalization: Normalization,
}

/// What `import` wrote.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The encoder the graph holds.
    pub config: ModelConfig,
    /// Producer of the graph.
    pub producer: String,
    /// Number of clusters.
    pub k: usize,
    /// Series per cluster (fitted centroids only).
    pub sizes: Vec<usize>,
    /// The device's decision against the data's labels (fitted on labelled data only).
    pub scores: Option<ClusterScores>,
    /// Bundle size in bytes.
    pub bundle_bytes: usize,
}

/// Reads and recognises an ONNX encoder file.
pub fn read_encoder(path: &Path) -> Result<(Vec<u8>, Recognised)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let model = candle_onnx::onnx::ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::model(path, format!("not a readable ONNX model ({e}); is the file complete?")))?;
    let rec = recognise(&model).map_err(|e| Error::model(path, e))?;
    Ok((bytes, rec))
}

/// The recognised weights under the names `trainer fit` gives them (`encoder.weight_ih_l0`,
/// `hidden_to_mean.weight`, ...).
pub fn param_store(rec: &Recognised) -> Result<ParamStore> {
    let dev = Device::Cpu;
    let (g, h) = (rec.cell.gates(), rec.hidden);
    let mut t = BTreeMap::new();
    for (i, layer) in rec.layers.iter().enumerate() {
        let input = if i == 0 { rec.n_features } else { h };
        t.insert(format!("encoder.weight_ih_l{i}"), Tensor::from_vec(layer.weight_ih.clone(), (g * h, input), &dev)?);
        t.insert(format!("encoder.weight_hh_l{i}"), Tensor::from_vec(layer.weight_hh.clone(), (g * h, h), &dev)?);
        t.insert(format!("encoder.bias_ih_l{i}"), Tensor::from_vec(layer.bias_ih.clone(), g * h, &dev)?);
        t.insert(format!("encoder.bias_hh_l{i}"), Tensor::from_vec(layer.bias_hh.clone(), g * h, &dev)?);
    }
    t.insert("hidden_to_mean.weight".into(), Tensor::from_vec(rec.head_weight.clone(), (rec.latent, h), &dev)?);
    t.insert("hidden_to_mean.bias".into(), Tensor::from_vec(rec.head_bias.clone(), rec.latent, &dev)?);
    ParamStore::from_tensors(t)
}

/// Imports `opts.onnx` into `opts.out`.
pub fn import(opts: ImportOptions) -> Result<ImportSummary> {
    let (onnx_bytes, rec) = read_encoder(&opts.onnx)?;
    let weights = param_store(&rec)?;
    let data_len = match &opts.centroids {
        CentroidSource::Fit { data, .. } => Some(data.max_len()),
        CentroidSource::File(_) => None,
    };
    let seq_len = match (opts.seq_len, rec.seq_len, data_len) {
        (Some(a), Some(b), _) if a != b => {
            return Err(Error::Param(format!("--seq-len {a} differs from the length {b} the graph's input fixes")));
        }
        (Some(n), _, _) | (None, Some(n), _) | (None, None, Some(n)) => n,
        (None, None, None) => {
            return Err(Error::Param(format!(
                "{}: the graph's sequence length is symbolic; pass --seq-len N (the window length devices encode)",
                opts.onnx.display()
            )))
        }
    };
    if seq_len == 0 {
        return Err(Error::Param("--seq-len must be at least 1".into()));
    }
    let cfg = ModelConfig {
        cell: rec.cell,
        n_features: rec.n_features,
        seq_len,
        hidden_size: rec.hidden,
        hidden_layer_depth: rec.layers.len(),
        latent_length: rec.latent,
        dropout: 0.0,
    };
    let norm = opts.normalization;
    let l = rec.latent;
    let mut info = DataInfo {
        sources: Vec::new(),
        n_series: 0,
        n_train: 0,
        n_holdout: 0,
        holdout: 0.0,
        length_range: (seq_len, seq_len),
        resampled: false,
        // An imported encoder gets new data the way its centroids were fitted: on its length.
        length: crate::data::prep::LengthMode::Resample,
        min_length: None,
        cut: 0,
        normalization: norm,
        labels: None,
        fingerprint: None,
    };
    let mut clustering = None;
    let (centroids, decision, scores) = match opts.centroids {
        CentroidSource::Fit { data: mut ds, k, decision: dp, n_init, seed } => {
            if ds.is_empty() {
                return Err(Error::Param("--fit-centroids: the data holds no series".into()));
            }
            if ds.n_features != rec.n_features {
                return Err(Error::Mismatch(format!(
                    "--fit-centroids: the data has {} features per time step, the encoder takes {}",
                    ds.n_features, rec.n_features
                )));
            }
            let dp = *dp;
            dp.check()?;
            info.sources = ds.sources.iter().map(|s| s.display().to_string()).collect();
            info.n_series = ds.len();
            info.n_train = ds.len();
            info.length_range = (ds.series.iter().map(|s| s.len).min().unwrap_or(0), ds.max_len());
            normalize(&mut ds, norm);
            info.resampled = ds.series.iter().any(|s| s.len != seq_len);
            resample_all(&mut ds, seq_len);
            let truth = ds.labels.as_ref().map(|l| encode_labels(l));
            info.labels = truth.as_ref().map(|t| t.1.clone());
            check_clusters(k, ds.len())?;
            info.fingerprint = Some(fingerprint(&ds.series, ds.n_features));
            clustering = Some(ClusterRequest { clusters: k, auto: k.is_none(), n_init, decision: dp });
            let fitted = fit_decision(&cfg, norm, &weights, &ds.series, &dp, &ClusterParams::of(&dp, k, n_init, seed))?;
            let native = NativeEncoder::new(&cfg, norm, &weights, &fitted.decision)?;
            let pred: Vec<usize> = native.assign(&ds.series, &fitted.z_train)?.iter().map(|a| a.cluster).collect();
            let k = fitted.decision.k;
            let (means, sizes) = latent_means(&fitted.z_train, l, &pred, k);
            let scores = truth.map(|(t, _)| Contingency::new(&t, &pred).scores());
            let c = Centroids {
                k,
                latent_length: l,
                centroids: means.chunks(l).map(<[f32]>::to_vec).collect(),
                sizes,
                inertia: 0.0,
                decision: Some(fitted.decision.clone()),
            };
            (c, fitted.decision, scores)
        }
        CentroidSource::File(path) => {
            let rows = read_centroids(&path, l)?;
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let c = Centroids { k: rows.len(), latent_length: l, centroids: rows, sizes: Vec::new(), inertia: 0.0, decision: None };
            (c, Decision::centroids(&flat, l), None)
        }
    };

    let staging = Staging::begin(&opts.out)?;
    let stage = staging.path().to_path_buf();
    let params = VraeParams {
        cell: cfg.cell,
        hidden_size: cfg.hidden_size,
        hidden_layer_depth: cfg.hidden_layer_depth,
        latent_length: cfg.latent_length,
        dropout: 0.0,
        ..VraeParams::default()
    };
    let config = RunRecord {
        clustering,
        imported: Some(ImportInfo { source: opts.onnx.display().to_string(), producer: rec.producer.clone(), opset: rec.opset }),
        ..RunRecord::new(cfg, params, info)
    };
    artifacts::save_model(&stage, &config, &weights)?;
    write_json(&stage.join(artifacts::CENTROIDS), &centroids)?;
    let bundle_bytes = write_bundle(&cfg, norm, &weights, &decision, 1, runtime::WeightFormat::F32, &stage.join(artifacts::BUNDLE))?;
    write_atomic(&stage.join(artifacts::ENCODER_ONNX), &onnx_bytes)?;
    staging.commit()?;
    Ok(ImportSummary { config: cfg, producer: rec.producer, k: centroids.k, sizes: centroids.sizes, scores, bundle_bytes })
}

/// A centroid table of rows of `latent` values: `.npy` (f4 or f8, 2-D, C order), or JSON
/// (`centroids.json` as `trainer fit` writes it, or a bare array of rows).
pub fn read_centroids(path: &Path, latent: usize) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let rows: Vec<Vec<f32>> = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let (data, rows, cols) = crate::npy::read_matrix(&bytes).map_err(|e| Error::model(path, e))?;
        data.chunks(cols.max(1)).take(rows).map(<[f32]>::to_vec).collect()
    } else {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Table {
            Ours { centroids: Vec<Vec<f32>> },
            Bare(Vec<Vec<f32>>),
        }
        match serde_json::from_slice::<Table>(&bytes) {
            Ok(Table::Ours { centroids }) | Ok(Table::Bare(centroids)) => centroids,
            Err(e) => return Err(Error::model(path, format!("expected a JSON array of centroid rows or a centroids.json ({e})"))),
        }
    };
    if rows.is_empty() {
        return Err(Error::model(path, "holds no centroids"));
    }
    if let Some(i) = rows.iter().position(|r| r.len() != latent) {
        return Err(Error::model(path, format!("centroid {i} has {} values; the encoder's latent has {latent}", rows[i].len())));
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::model(path, "a centroid value is not finite"));
    }
    Ok(rows)
}
