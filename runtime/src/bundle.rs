//! The model bundle: everything a device needs in one checksummed byte string.
//!
//! ```text
//! offset  size  content
//! 0       8     magic "VRAEBNDL"
//! 8       4     format version (u32 LE) = FORMAT_VERSION
//! 12      4     header length n (u32 LE)
//! 16      n     header, postcard-encoded `Header`
//! ...           zero padding to a multiple of 4
//! ...     4*W   weights, f32 LE, W = header.weights_len (layout below); with int8 weights
//!               (version 8) only their scales and the biases, 4*S, S = header.f32_weights_len()
//! ...     4*D   decision offsets, f32 LE, D = header.decision_dims()
//! ...     4*D   decision scales, f32 LE
//! ...     4*P*D prototypes, f32 LE, row-major P x D, P = header.prototypes (int8: their
//!               scales, 4*D)
//! ...     4*P   prototype clusters, f32 LE whole numbers in 0..k
//! ...     4*K   anomaly thresholds, f32 LE, one per cluster (version 3 on)
//! ...     4*E   step edges of the summary, f32 LE, E = step_edges * n_features (version 4 on)
//! ...     Q     int8 weight matrices and prototypes (version 8, `weight_format` int8 only),
//!               Q = header.int8_bytes(), then zero padding to a multiple of 4
//! end-4   4     CRC-32 of every byte before it (u32 LE)
//! ```
//!
//! Weights, per encoder layer `l` (input width `In` = features for layer 0, else hidden; `G` = 4
//! for LSTM, 3 for GRU; gate blocks in PyTorch order `i,f,g,o` / `r,z,n`):
//! `W_ihᵀ [In, G*H]`, `W_hhᵀ [H, G*H]`, `b_ih [G*H]`, `b_hh [G*H]`; then the latent-mean head
//! `W_mean [L, H]`, `b_mean [L]`. The recurrent weights are stored transposed so the step kernel
//! accumulates `gates += W_hhᵀ[k] · h_k` over contiguous rows of `G*H` outputs: a loop without
//! horizontal sums, which vectorises on hosts and streams flash linearly on microcontrollers.
//!
//! The cluster decision: the raw decision vector is the latent mean followed by the window's
//! streaming summary ([`crate::summary`]: `(2 * segments + freqs + step_edges + step_freqs
//! [+ segments - 1 with diffs]) * features` values, none when all are 0); its value `j` becomes `(raw_j - offset_j) * scale_j`, and the nearest
//! prototype (Euclidean) names the cluster. Several prototypes may share a cluster, so clusters
//! need not be round.
//!
//! Anomaly flag: a window whose distance to its nearest prototype exceeds its cluster's
//! threshold (the trainer sets it at a quantile of the training series' distances in that
//! cluster) is anomalous.
//!
//! int8 weights (`weight_format` [`WeightFormat::Int8`], version 8; scheme and matrix layout in
//! [`crate::quant`]): the f32 section holds, per layer, the scales of `W_ihᵀ` and `W_hhᵀ` (one
//! per gate output, `G*H` each), `b_ih`, `b_hh`, then the head's scales `[L]` and `b_mean [L]`;
//! the int8 section, per layer, `W_ihᵀ` and `W_hhᵀ`, then the head as `W_meanᵀ [H, L]`, each in
//! the pair layout, then the prototype table, row-major `P x D` bytes. Every input count must be
//! at most [`crate::quant::MAX_INPUTS`]. In the decision tables the prototypes' place holds
//! their per-value scales `[D]` (value `j` of a row is `q · scale_j`, `scale_j = max |p_j| / 127`
//! over the rows).
//!
//! A model with int8 weights is written as version 8, and every f32 model as the version
//! below, byte for byte what it was before the field existed.
//! A model with segment differences in its summary (`diffs` 1) is written as version 7; one
//! without them but with a minimum window length (`min_len` above 1) as version 6; every other
//! model as version 5, byte for byte what it was before those fields existed, so older runtimes
//! still read it. Version 6 reads as `diffs` 0, version 5 also as `min_len` 1.
//!
//! Older bundles still load. Version 4 (no spectrum of the steps) reads as `step_freqs` 0. Version 3 (summary of segment means and steps only) reads as
//! `freqs` 0 and no step edges, and decides as it did. Version 2 (no anomaly thresholds) flags nothing
//! ([`Bundle::has_anomaly_thresholds`] is false so a host can say so); version 1 (latent only,
//! one centroid per cluster, no decision tables) reads as offsets 0, scales 1 and prototype `i`
//! = cluster `i`, and flags nothing either.
//!
//! Parsing never panics and never allocates: a short, corrupted or foreign buffer is an `Err`
//! naming the problem. The weights are read in place (zero-copy) from a 4-byte-aligned buffer,
//! e.g. flash.

use serde::{Deserialize, Serialize};

use crate::crc::crc32;

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"VRAEBNDL";
/// Bundle format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 8;
/// Oldest bundle format version this crate still reads.
pub const OLDEST_VERSION: u32 = 1;
/// The anomaly threshold that never flags: a model fitted before the flag existed is exported
/// with it.
pub const NO_THRESHOLD: f32 = f32::MAX;
/// Largest header accepted (a real one is ~30 bytes).
const MAX_HEADER: usize = 256;

/// Recurrent cell: the one definition the trainer, the bundle and the runtime share. Names are
/// lowercase in JSON (`config.json`) and on the command line; the bundle stores the variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Cell {
    /// Long short-term memory (PyTorch gate order i, f, g, o).
    Lstm,
    /// Gated recurrent unit (PyTorch gate order r, z, n; reset applied after the hidden matmul).
    Gru,
}

impl Cell {
    /// Gate blocks per layer.
    pub const fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// How the encoder's weight matrices are stored: the one definition the trainer's export flag,
/// the bundle and the runtime's kernels share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    /// 32-bit floats, as trained.
    #[default]
    F32,
    /// Per-channel symmetric int8 with f32 scales ([`crate::quant`]): a quarter of the flash.
    Int8,
}

/// Per-series (per-window) normalisation the model was trained with and the device applies: the
/// one definition the trainer shares ([`crate::encoder::zscore_in_place`] is its arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Use values as they are (UCR sets are already z-normalised per series).
    #[default]
    None,
    /// Per series and feature: `(x - mean) / std` (mean only when `std` is 0; needs the whole
    /// window).
    Zscore,
}

/// Shape and settings of a bundled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Encoder cell.
    pub cell: Cell,
    /// Values per time step.
    pub n_features: u16,
    /// Hidden units per layer.
    pub hidden: u16,
    /// Encoder layers.
    pub layers: u8,
    /// Latent dimension.
    pub latent: u16,
    /// Number of clusters.
    pub k: u16,
    /// Window length the model was trained on.
    pub seq_len: u32,
    /// Expected input normalisation.
    pub normalization: Normalization,
    /// Number of f32 weights.
    pub weights_len: u32,
    /// Segments of the streaming summary in the decision vector (0 = latent only).
    pub segments: u16,
    /// Samples per summary segment (at least 1 when `segments` > 0).
    pub stride: u32,
    /// Rows of the prototype table.
    pub prototypes: u16,
    /// Spectrum frequencies per feature in the summary (0 = none; version 4 on).
    pub freqs: u16,
    /// Step-distribution edges per feature in the summary (0 = none; version 4 on).
    pub step_edges: u16,
    /// Frequencies per feature of the steps' spectrum in the summary (0 = none; version 5 on).
    pub step_freqs: u16,
    /// Fewest samples a window may have ([`crate::Encoder::finish`] refuses fewer): a model
    /// trained on series of their own lengths learnt nothing from shorter ones (1 = any;
    /// version 6 on).
    pub min_len: u32,
    /// 1: the summary ends with the segment differences (`crate::summary`, block 6; needs at
    /// least 2 segments); 0: it does not (version 7 on).
    pub diffs: u8,
    /// How the weight matrices are stored (version 8 on; older versions read as f32).
    pub weight_format: WeightFormat,
}

/// A version 6 header is the current header's encoding with `diffs` 0 minus its last byte, and
/// a version 5 header that with `min_len` 1 minus its last byte too: postcard writes a struct's
/// fields in order with no framing, `diffs` and `min_len` are the last fields, and the varints
/// of 0 and 1 are the single bytes `V6_DIFFS` and `V5_MIN_LEN`.
const V5_MIN_LEN: u8 = 1;
/// See [`V5_MIN_LEN`].
const V6_DIFFS: u8 = 0;
/// The varint of [`WeightFormat::F32`]: a version 7 header is a version 8 one without it.
const V7_WEIGHTS: u8 = 0;

/// The version 4 header (no spectrum of the steps): the version 3 fields, then these.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct HeaderV4 {
    v3: HeaderV3,
    freqs: u16,
    step_edges: u16,
}

impl HeaderV4 {
    /// The current header with no spectrum of the steps.
    fn upgrade(self) -> Header {
        Header { freqs: self.freqs, step_edges: self.step_edges, ..self.v3.upgrade() }
    }
}

/// The version 2-3 header (summary of segment means and steps only). postcard writes a nested
/// struct's fields in order with no framing, so this is the version 1 fields, then these.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct HeaderV3 {
    v1: HeaderV1,
    segments: u16,
    stride: u32,
    prototypes: u16,
}

/// The version 1 header (no summary, one centroid per cluster).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct HeaderV1 {
    cell: Cell,
    n_features: u16,
    hidden: u16,
    layers: u8,
    latent: u16,
    k: u16,
    seq_len: u32,
    normalization: Normalization,
    weights_len: u32,
}

impl HeaderV3 {
    /// The current header with no spectrum and no step distribution.
    fn upgrade(self) -> Header {
        let v = self.v1;
        Header {
            cell: v.cell,
            n_features: v.n_features,
            hidden: v.hidden,
            layers: v.layers,
            latent: v.latent,
            k: v.k,
            seq_len: v.seq_len,
            normalization: v.normalization,
            weights_len: v.weights_len,
            segments: self.segments,
            stride: self.stride,
            prototypes: self.prototypes,
            freqs: 0,
            step_edges: 0,
            step_freqs: 0,
            min_len: 1,
            diffs: 0,
            weight_format: WeightFormat::F32,
        }
    }
}

impl Header {
    /// f32 weights that the dimensions imply.
    pub fn expected_weights(&self) -> usize {
        let (g, h, f) = (self.cell.gates(), self.hidden as usize, self.n_features as usize);
        let mut n = 0;
        for l in 0..self.layers as usize {
            let inp = if l == 0 { f } else { h };
            n += g * h * (inp + h + 2);
        }
        n + self.latent as usize * (h + 1)
    }

    /// Input count of each matrix `(W_ih of layer l, W_hh)` and the head's (hidden).
    fn max_inputs(&self) -> usize {
        (self.n_features as usize).max(self.hidden as usize)
    }

    /// f32 values of the weights section: every weight, or with int8 weights only the biases
    /// and the per-output scales (`4 * G * H` per layer, `2 * latent` for the head).
    pub fn f32_weights_len(&self) -> usize {
        match self.weight_format {
            WeightFormat::F32 => self.weights_len as usize,
            WeightFormat::Int8 => {
                let gh = self.cell.gates() * self.hidden as usize;
                4 * gh * self.layers as usize + 2 * self.latent as usize
            }
        }
    }

    /// Bytes of the int8 section before its padding: the weight matrices, then the prototype
    /// table (0 with f32 weights).
    pub fn int8_bytes(&self) -> usize {
        usize::try_from(self.int8_bytes_u64()).unwrap_or(usize::MAX)
    }

    /// Bytes of the int8 weight matrices.
    fn int8_matrix_bytes(&self) -> u64 {
        // In u64: a corrupted header's sizes must not wrap on 32-bit targets.
        let (gh, hid, f) = (self.cell.gates() as u64 * self.hidden as u64, self.hidden as u64, self.n_features as u64);
        let m = |kd: u64, n: u64| 4 * kd.div_ceil(2) * n.div_ceil(2);
        let layers: u64 = (0..self.layers as u64).map(|l| m(if l == 0 { f } else { hid }, gh) + m(hid, gh)).sum();
        layers + m(hid, self.latent as u64)
    }

    /// [`Header::int8_bytes`] in u64.
    fn int8_bytes_u64(&self) -> u64 {
        if self.weight_format == WeightFormat::F32 {
            return 0;
        }
        self.int8_matrix_bytes() + self.prototypes as u64 * self.decision_dims() as u64
    }

    /// int8 weights fit the kernel's i32 sums (what `parse` and `encode` both require).
    fn check_weight_format(&self) -> Result<(), BundleError> {
        if self.weight_format == WeightFormat::Int8 && self.max_inputs() > crate::quant::MAX_INPUTS {
            return Err(BundleError::BadDims("int8 weights allow at most 512 inputs per matrix (features and hidden units)"));
        }
        Ok(())
    }

    /// Values of the streaming summary: `(2 * segments + freqs + step_edges + step_freqs
    /// [+ segments - 1 with diffs]) * n_features`.
    pub fn summary_len(&self) -> usize {
        // Saturating: a corrupted header must not wrap on 32-bit targets (it fails the length check).
        let per_feature =
            2 * self.segments as usize + self.freqs as usize + self.step_edges as usize + self.step_freqs as usize + self.diff_count();
        per_feature.saturating_mul(self.n_features as usize)
    }

    /// Segment differences per feature ([`crate::summary::diff_count`]).
    pub fn diff_count(&self) -> usize {
        crate::summary::diff_count(self.segments as usize, self.diffs != 0)
    }

    /// The differences flag is 0 or 1, and 1 only with at least 2 segments (what `parse` and
    /// `encode` both require).
    fn check_diffs(&self) -> Result<(), BundleError> {
        if self.diffs > 1 || (self.diffs == 1 && self.segments < 2) {
            return Err(BundleError::BadDims("segment differences are 0 or 1, and need at least 2 segments"));
        }
        Ok(())
    }

    /// Step edges in the bundle's table: `step_edges * n_features`.
    pub fn step_edges_len(&self) -> usize {
        (self.step_edges as usize).saturating_mul(self.n_features as usize)
    }

    /// Length of the decision vector: latent plus summary.
    pub fn decision_dims(&self) -> usize {
        (self.latent as usize).saturating_add(self.summary_len())
    }
}

/// Why a bundle was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Fewer bytes than the fixed prefix and checksum.
    #[error("bundle is {0} bytes, too short to hold a header")]
    TooShort(usize),
    /// The magic bytes are wrong (not a bundle).
    #[error("not a model bundle (bad magic bytes)")]
    BadMagic,
    /// A format version this build cannot read.
    #[error("bundle format version {found} is not supported (this runtime reads versions {OLDEST_VERSION} to {FORMAT_VERSION}); re-export it with `trainer export MODEL --bundle`")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (bundle damaged)")]
    BadChecksum {
        /// CRC stored in the bundle.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The header does not decode.
    #[error("header is corrupt")]
    BadHeader,
    /// The dimensions are impossible (zero, or inconsistent with the weight count).
    #[error("inconsistent dimensions: {0}")]
    BadDims(&'static str),
    /// The byte length does not match what the header describes.
    #[error("bundle is {got} bytes but its header describes {expected}")]
    Length {
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// The weights section is not 4-byte aligned in memory (place the bundle in an aligned buffer).
    #[error("weights are not 4-byte aligned in memory; store the bundle in an aligned buffer")]
    Misaligned,
    /// A weight or decision-table value is NaN or infinite.
    #[error("weights or decision tables contain a non-finite value")]
    NonFinite,
    /// A prototype's cluster is not a whole number below `k`.
    #[error("prototype {index} does not name a cluster in 0..{k}")]
    BadPrototypeCluster {
        /// Prototype row.
        index: usize,
        /// Number of clusters.
        k: u16,
    },
    /// A weight scale of an int8 bundle is negative.
    #[error("int8 weight scale {index} is negative")]
    BadScale {
        /// Position in the f32 weights section.
        index: usize,
    },
    /// A prototype scale of an int8 bundle is negative.
    #[error("int8 prototype scale of decision value {dim} is negative")]
    BadPrototypeScale {
        /// Decision value whose scale is wrong.
        dim: usize,
    },
    /// An anomaly threshold is negative.
    #[error("anomaly threshold of cluster {cluster} is negative")]
    BadThreshold {
        /// Cluster whose threshold is wrong.
        cluster: usize,
    },
    /// The model exceeds a compile-time capacity of this build.
    #[error("model needs {what} = {need} but this build's capacity is {have}")]
    Capacity {
        /// Which dimension.
        what: &'static str,
        /// Model's value.
        need: usize,
        /// Compiled capacity.
        have: usize,
    },
}

/// A parsed bundle borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bundle<'a> {
    /// Dimensions and settings.
    pub header: Header,
    /// The f32 weights section (layout in the module docs): every weight, or with int8
    /// weights the scales and biases.
    pub weights: &'a [f32],
    /// The int8 weight matrices (empty with f32 weights).
    pub qweights: &'a [i8],
    /// Per decision value, what is subtracted (empty in a version 1 bundle: 0).
    pub offsets: &'a [f32],
    /// Per decision value, the factor applied after (empty in a version 1 bundle: 1).
    pub scales: &'a [f32],
    /// Prototypes, row-major `prototypes x decision_dims` (empty with int8 weights).
    pub prototypes: &'a [f32],
    /// int8 bundles: the prototypes quantised, row-major; value `j` of a row stands for
    /// `q · prototype_scales[j]` (empty with f32 weights).
    pub qprototypes: &'a [i8],
    /// int8 bundles: one scale per decision value, `max |prototype_j| / 127`.
    pub prototype_scales: &'a [f32],
    /// Cluster of each prototype (empty in a version 1 bundle: prototype `i` is cluster `i`).
    pub prototype_clusters: &'a [f32],
    /// Per cluster, the distance above which a window is anomalous (empty before version 3).
    pub anomaly_thresholds: &'a [f32],
    /// The summary's step edges, edge-major then feature (empty before version 4).
    pub step_edges: &'a [f32],
    /// Format version the bytes were written in.
    pub version: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn padded(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Reinterprets little-endian f32 bytes in place. Requires 4-byte alignment.
fn f32s(bytes: &[u8]) -> Result<&[f32], BundleError> {
    if !cfg!(target_endian = "little") {
        // Big-endian targets would need a byte swap (a copy); none is supported yet.
        return Err(BundleError::Misaligned);
    }
    if bytes.as_ptr().align_offset(core::mem::align_of::<f32>()) != 0 || !bytes.len().is_multiple_of(4) {
        return Err(BundleError::Misaligned);
    }
    // SAFETY: alignment and length are checked above, every bit pattern is a valid f32, and the
    // target is little-endian, so the bytes are the f32 values in place for the borrow's life.
    Ok(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) })
}

impl<'a> Bundle<'a> {
    /// Validates and parses `bytes` (prefix, version, checksum, header, sizes, values).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < 20 {
            return Err(BundleError::TooShort(bytes.len()));
        }
        if bytes[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(BundleError::UnsupportedVersion { found: version });
        }
        let body = bytes.len() - 4;
        let stored = u32_at(bytes, body);
        let computed = crc32(&bytes[..body]);
        if stored != computed {
            return Err(BundleError::BadChecksum { stored, computed });
        }
        let hlen = u32_at(bytes, 12) as usize;
        if hlen == 0 || hlen > MAX_HEADER || 16 + hlen > body {
            return Err(BundleError::BadHeader);
        }
        let raw = &bytes[16..16 + hlen];
        fn exact<'de, T: Deserialize<'de>>(raw: &'de [u8]) -> Result<T, BundleError> {
            match postcard::take_from_bytes::<T>(raw) {
                Ok((v, [])) => Ok(v),
                _ => Err(BundleError::BadHeader),
            }
        }
        let header = match version {
            1 => {
                let v1: HeaderV1 = exact(raw)?;
                HeaderV3 { v1, segments: 0, stride: 0, prototypes: v1.k }.upgrade()
            }
            2 | 3 => exact::<HeaderV3>(raw)?.upgrade(),
            4 => exact::<HeaderV4>(raw)?.upgrade(),
            5..=7 => {
                // The version 5 bytes plus `min_len` 1, the version 6 ones plus `diffs` 0, the
                // version 7 ones plus f32 weights (no allocation: headers are small).
                let mut full = [0u8; MAX_HEADER + 3];
                full[..hlen].copy_from_slice(raw);
                let mut end = hlen;
                if version == 5 {
                    full[end] = V5_MIN_LEN;
                    end += 1;
                }
                if version <= 6 {
                    full[end] = V6_DIFFS;
                    end += 1;
                }
                full[end] = V7_WEIGHTS;
                exact::<Header>(&full[..=end])?
            }
            _ => exact::<Header>(raw)?,
        };
        let h = header;
        if h.n_features == 0 || h.hidden == 0 || h.layers == 0 || h.latent == 0 || h.k == 0 || h.seq_len == 0 || h.min_len == 0 {
            return Err(BundleError::BadDims("every dimension must be at least 1"));
        }
        if h.prototypes < h.k {
            return Err(BundleError::BadDims("fewer prototypes than clusters"));
        }
        if h.segments > 0 && h.stride == 0 {
            return Err(BundleError::BadDims("summary stride must be at least 1"));
        }
        h.check_diffs()?;
        h.check_weight_format()?;
        if h.weights_len as usize != h.expected_weights() {
            return Err(BundleError::BadDims("weight count does not match the dimensions"));
        }
        let w_start = padded(16 + hlen);
        let (d, p) = (h.decision_dims(), h.prototypes as usize);
        // In u64: a corrupted header's product must not wrap on 32-bit targets into a length that
        // happens to match.
        let (d64, p64) = (d as u64, p as u64);
        let k64 = h.k as u64;
        let e64 = h.step_edges_len() as u64;
        let int8 = h.weight_format == WeightFormat::Int8;
        let tables = match version {
            1 => p64 * d64,
            2 => 2 * d64 + p64 * d64 + p64,
            3 => 2 * d64 + p64 * d64 + p64 + k64,
            // int8: the prototype table is in the int8 section, its per-value scales here.
            _ if int8 => 3 * d64 + p64 + k64 + e64,
            _ => 2 * d64 + p64 * d64 + p64 + k64 + e64,
        };
        let (fw, qb) = (h.f32_weights_len() as u64, h.int8_bytes_u64().div_ceil(4) * 4);
        let expected = w_start as u64 + 4 * (fw + tables) + qb + 4;
        if expected != bytes.len() as u64 {
            return Err(BundleError::Length { expected: usize::try_from(expected).unwrap_or(usize::MAX), got: bytes.len() });
        }
        let q_start = body - qb as usize;
        let all = f32s(&bytes[w_start..q_start])?;
        if all.iter().any(|v| !v.is_finite()) {
            return Err(BundleError::NonFinite);
        }
        let (weights, rest) = all.split_at(fw as usize);
        // SAFETY: i8 has the size and alignment of u8 and every bit pattern is valid.
        let int8_all = unsafe { core::slice::from_raw_parts(bytes[q_start..].as_ptr().cast::<i8>(), h.int8_bytes()) };
        let (qweights, qprototypes) = int8_all.split_at(h.int8_matrix_bytes().min(int8_all.len() as u64) as usize);
        if h.weight_format == WeightFormat::Int8 {
            if let Some(index) = (0..weights.len()).find(|&i| h.is_scale(i) && weights[i] < 0.0) {
                return Err(BundleError::BadScale { index });
            }
        }
        let (offsets, scales, prototypes, prototype_clusters, anomaly_thresholds, step_edges) = if version == 1 {
            (&rest[..0], &rest[..0], rest, &rest[..0], &rest[..0], &rest[..0])
        } else {
            let (o, rest) = rest.split_at(d);
            let (s, rest) = rest.split_at(d);
            let (pr, rest) = rest.split_at(if int8 { d } else { p * d });
            let (c, rest) = rest.split_at(p);
            let (t, e) = rest.split_at(if version >= 3 { h.k as usize } else { 0 });
            (o, s, pr, c, t, e)
        };
        for (index, &value) in prototype_clusters.iter().enumerate() {
            if value < 0.0 || value >= h.k as f32 || value != (value as u32) as f32 {
                return Err(BundleError::BadPrototypeCluster { index, k: h.k });
            }
        }
        if let Some(cluster) = anomaly_thresholds.iter().position(|&t| t < 0.0) {
            return Err(BundleError::BadThreshold { cluster });
        }
        let (prototypes, prototype_scales) = if int8 { (&rest[..0], prototypes) } else { (prototypes, &rest[..0]) };
        if let Some(dim) = prototype_scales.iter().position(|&s| s < 0.0) {
            return Err(BundleError::BadPrototypeScale { dim });
        }
        Ok(Bundle {
            header,
            weights,
            qweights,
            offsets,
            scales,
            prototypes,
            qprototypes,
            prototype_scales,
            prototype_clusters,
            anomaly_thresholds,
            step_edges,
            version,
        })
    }

    /// Layout of the window summary the decision uses.
    pub fn summary_shape(&self) -> crate::summary::Shape<'a> {
        let h = &self.header;
        crate::summary::Shape {
            features: h.n_features as usize,
            segments: h.segments as usize,
            stride: h.stride as usize,
            freqs: h.freqs as usize,
            step_freqs: h.step_freqs as usize,
            period: h.seq_len as usize,
            edges: self.step_edges,
            diffs: h.diffs != 0,
        }
    }

    /// Whether the bundle can flag a window anomalous: version 3 on, with a threshold below
    /// [`NO_THRESHOLD`].
    pub fn has_anomaly_thresholds(&self) -> bool {
        self.anomaly_thresholds.iter().any(|&t| t < NO_THRESHOLD)
    }

    /// Whether a window at `distance` from its nearest prototype of `cluster` is anomalous:
    /// beyond that cluster's threshold (never, without thresholds).
    pub fn is_anomalous(&self, cluster: usize, distance: f32) -> bool {
        self.anomaly_thresholds.get(cluster).is_some_and(|&t| distance > t)
    }

    /// Weights of encoder layer `l` of an f32 bundle: `(W_ihᵀ [In, G*H], W_hhᵀ [H, G*H], b_ih,
    /// b_hh)` (empty slices with int8 weights: see [`Bundle::layer_q`]).
    pub fn layer(&self, l: usize) -> (&'a [f32], &'a [f32], &'a [f32], &'a [f32]) {
        let h = &self.header;
        if h.weight_format != WeightFormat::F32 {
            return (&[], &[], &[], &[]);
        }
        let (g, hid, f) = (h.cell.gates(), h.hidden as usize, h.n_features as usize);
        let gh = g * hid;
        let mut off = 0;
        for i in 0..l {
            let inp = if i == 0 { f } else { hid };
            off += gh * (inp + hid + 2);
        }
        let inp = if l == 0 { f } else { hid };
        let w = self.weights;
        let (w_ih, rest) = w[off..].split_at(gh * inp);
        let (w_hh, rest) = rest.split_at(gh * hid);
        let (b_ih, rest) = rest.split_at(gh);
        (w_ih, w_hh, b_ih, &rest[..gh])
    }

    /// Latent-mean head of an f32 bundle `(W_mean [L, H], b_mean [L])` (empty slices with int8
    /// weights: see [`Bundle::head_q`]).
    pub fn head(&self) -> (&'a [f32], &'a [f32]) {
        if self.header.weight_format != WeightFormat::F32 {
            return (&[], &[]);
        }
        let (l, h) = (self.header.latent as usize, self.header.hidden as usize);
        let n = self.weights.len();
        let (w, b) = self.weights[n - l * (h + 1)..].split_at(l * h);
        (w, b)
    }
}

/// One layer's int8 weights: `W_ihᵀ`, `W_hhᵀ` and the f32 biases.
#[derive(Debug, Clone, Copy)]
pub struct QLayer<'a> {
    /// Input-to-hidden matrix.
    pub w_ih: crate::quant::QMatrix<'a>,
    /// Hidden-to-hidden matrix.
    pub w_hh: crate::quant::QMatrix<'a>,
    /// Input bias `[G*H]`.
    pub b_ih: &'a [f32],
    /// Hidden bias `[G*H]`.
    pub b_hh: &'a [f32],
}

impl Header {
    /// Whether value `i` of an int8 bundle's f32 weights section is a scale (else a bias).
    fn is_scale(&self, i: usize) -> bool {
        let per_layer = 4 * self.cell.gates() * self.hidden as usize;
        let layers = per_layer * self.layers as usize;
        if i < layers {
            i % per_layer < per_layer / 2
        } else {
            i - layers < self.latent as usize
        }
    }
}

impl<'a> Bundle<'a> {
    /// Whether the weight matrices are int8.
    pub fn is_int8(&self) -> bool {
        self.header.weight_format == WeightFormat::Int8
    }

    /// Layer `l` of an int8 bundle (`None` with f32 weights).
    pub fn layer_q(&self, l: usize) -> Option<QLayer<'a>> {
        if !self.is_int8() {
            return None;
        }
        let h = &self.header;
        let (gh, hid, f) = (h.cell.gates() * h.hidden as usize, h.hidden as usize, h.n_features as usize);
        let input = |i: usize| if i == 0 { f } else { hid };
        let size = |i: usize| crate::quant::matrix_bytes(input(i), gh) + crate::quant::matrix_bytes(hid, gh);
        let qoff: usize = (0..l).map(size).sum();
        let (q_ih, rest) = self.qweights[qoff..].split_at(crate::quant::matrix_bytes(input(l), gh));
        let q_hh = &rest[..crate::quant::matrix_bytes(hid, gh)];
        let f32s = &self.weights[4 * gh * l..][..4 * gh];
        let (s_ih, rest) = f32s.split_at(gh);
        let (s_hh, rest) = rest.split_at(gh);
        let (b_ih, b_hh) = rest.split_at(gh);
        Some(QLayer {
            w_ih: crate::quant::QMatrix { q: q_ih, scales: s_ih, inputs: input(l) },
            w_hh: crate::quant::QMatrix { q: q_hh, scales: s_hh, inputs: hid },
            b_ih,
            b_hh,
        })
    }

    /// Head of an int8 bundle: `W_meanᵀ [H, L]` and `b_mean [L]` (`None` with f32 weights).
    pub fn head_q(&self) -> Option<(crate::quant::QMatrix<'a>, &'a [f32])> {
        if !self.is_int8() {
            return None;
        }
        let (l, hid) = (self.header.latent as usize, self.header.hidden as usize);
        let q = &self.qweights[self.qweights.len() - crate::quant::matrix_bytes(hid, l)..];
        let (scales, bias) = self.weights[self.weights.len() - 2 * l..].split_at(l);
        Some((crate::quant::QMatrix { q, scales, inputs: hid }, bias))
    }

    /// The prototype table as f32 (int8 ones dequantised), row-major.
    #[cfg(feature = "std")]
    pub fn float_prototypes(&self) -> Vec<f32> {
        if !self.is_int8() {
            return self.prototypes.to_vec();
        }
        let d = self.prototype_scales.len().max(1);
        self.qprototypes.iter().enumerate().map(|(i, &q)| q as f32 * self.prototype_scales[i % d]).collect()
    }

    /// Every weight as f32 in the f32 layout (int8 ones dequantised), e.g. to re-encode a bundle
    /// with another header field.
    #[cfg(feature = "std")]
    pub fn float_weights(&self) -> Vec<f32> {
        if !self.is_int8() {
            return self.weights.to_vec();
        }
        let h = &self.header;
        let (gh, hid, lat) = (h.cell.gates() * h.hidden as usize, h.hidden as usize, h.latent as usize);
        let mut out = Vec::with_capacity(h.expected_weights());
        for l in 0..h.layers as usize {
            let q = self.layer_q(l).expect("int8 bundle");
            out.extend(crate::quant::dequantize_matrix(&q.w_ih, gh));
            out.extend(crate::quant::dequantize_matrix(&q.w_hh, gh));
            out.extend_from_slice(q.b_ih);
            out.extend_from_slice(q.b_hh);
        }
        let (m, bias) = self.head_q().expect("int8 bundle");
        let wt = crate::quant::dequantize_matrix(&m, lat);
        // Back from `W_meanᵀ [H, L]` to `W_mean [L, H]`.
        out.extend((0..lat).flat_map(|j| (0..hid).map(move |k| (j, k))).map(|(j, k)| wt[k * lat + j]));
        out.extend_from_slice(bias);
        out
    }
}

/// The f32 section and int8 section of `weights` (f32 layout) stored as `header` says.
#[cfg(feature = "std")]
fn stored_weights(header: &Header, weights: &[f32]) -> (Vec<f32>, Vec<i8>) {
    if header.weight_format == WeightFormat::F32 {
        return (weights.to_vec(), Vec::new());
    }
    let (g, hid, f, lat) = (header.cell.gates(), header.hidden as usize, header.n_features as usize, header.latent as usize);
    let gh = g * hid;
    let (mut fs, mut qs) = (Vec::new(), Vec::new());
    let mut off = 0;
    let mut take = |n: usize| {
        let s = &weights[off..off + n];
        off += n;
        s
    };
    for l in 0..header.layers as usize {
        let inp = if l == 0 { f } else { hid };
        let (q_ih, s_ih) = crate::quant::quantize_matrix(take(inp * gh), inp, gh);
        let (q_hh, s_hh) = crate::quant::quantize_matrix(take(hid * gh), hid, gh);
        qs.extend(q_ih);
        qs.extend(q_hh);
        fs.extend(s_ih);
        fs.extend(s_hh);
        fs.extend_from_slice(take(gh));
        fs.extend_from_slice(take(gh));
    }
    let w_mean = take(lat * hid);
    let wt: Vec<f32> = (0..hid).flat_map(|k| (0..lat).map(move |j| w_mean[j * hid + k])).collect();
    let (q_mean, s_mean) = crate::quant::quantize_matrix(&wt, hid, lat);
    qs.extend(q_mean);
    fs.extend(s_mean);
    fs.extend_from_slice(take(lat));
    (fs, qs)
}

/// The cluster decision of a bundle being written: per-value offsets and scales of the
/// decision vector, prototypes (`n x decision_dims`) and their clusters.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionTables {
    /// Subtracted from each raw decision value.
    pub offsets: Vec<f32>,
    /// Applied after the offset.
    pub scales: Vec<f32>,
    /// Prototype rows, row-major.
    pub prototypes: Vec<f32>,
    /// Cluster of each prototype row.
    pub clusters: Vec<usize>,
    /// Per cluster, the distance above which a window is anomalous; [`NO_THRESHOLD`] never flags.
    pub anomaly_thresholds: Vec<f32>,
    /// The summary's step edges, edge-major then feature (`header.step_edges * n_features`).
    pub step_edges: Vec<f32>,
}

#[cfg(feature = "std")]
impl DecisionTables {
    /// The tables `bundle` carries, as stored (e.g. to re-encode it with another header field);
    /// tables a bundle's version predates are empty, which [`encode`] refuses.
    pub fn of(bundle: &Bundle<'_>) -> Self {
        DecisionTables {
            offsets: bundle.offsets.to_vec(),
            scales: bundle.scales.to_vec(),
            prototypes: bundle.float_prototypes(),
            clusters: bundle.prototype_clusters.iter().map(|&c| c as usize).collect(),
            anomaly_thresholds: bundle.anomaly_thresholds.to_vec(),
            step_edges: bundle.step_edges.to_vec(),
        }
    }

    /// One prototype per cluster on the latent as it is (offset 0, scale 1): nearest centroid.
    pub fn centroids(centroids: &[f32], latent: usize) -> Self {
        let k = centroids.len().checked_div(latent).unwrap_or(0);
        DecisionTables {
            offsets: vec![0.0; latent],
            scales: vec![1.0; latent],
            prototypes: centroids.to_vec(),
            clusters: (0..k).collect(),
            anomaly_thresholds: vec![NO_THRESHOLD; k],
            step_edges: Vec::new(),
        }
    }
}

/// Serialises a bundle (host side; the trainer writes one next to the ONNX file). The header's
/// `prototypes` must equal the table's rows.
#[cfg(feature = "std")]
pub fn encode(header: &Header, weights: &[f32], decision: &DecisionTables) -> Result<Vec<u8>, BundleError> {
    if weights.len() != header.weights_len as usize || weights.len() != header.expected_weights() {
        return Err(BundleError::BadDims("weight count does not match the dimensions"));
    }
    let d = header.decision_dims();
    let p = header.prototypes as usize;
    if decision.offsets.len() != d || decision.scales.len() != d {
        return Err(BundleError::BadDims("decision offsets/scales are not one per decision value"));
    }
    if decision.prototypes.len() != p * d || decision.clusters.len() != p {
        return Err(BundleError::BadDims("prototype table is not prototypes x decision values"));
    }
    if let Some(index) = decision.clusters.iter().position(|&c| c >= header.k as usize) {
        return Err(BundleError::BadPrototypeCluster { index, k: header.k });
    }
    if decision.anomaly_thresholds.len() != header.k as usize {
        return Err(BundleError::BadDims("anomaly thresholds are not one per cluster"));
    }
    if let Some(cluster) = decision.anomaly_thresholds.iter().position(|&t| t.is_nan() || t < 0.0) {
        return Err(BundleError::BadThreshold { cluster });
    }
    if decision.step_edges.len() != header.step_edges_len() {
        return Err(BundleError::BadDims("step edges are not step_edges x features"));
    }
    if decision.step_edges.iter().any(|v| !v.is_finite()) {
        return Err(BundleError::NonFinite);
    }
    if header.min_len == 0 {
        return Err(BundleError::BadDims("min_len must be at least 1"));
    }
    header.check_diffs()?;
    header.check_weight_format()?;
    if weights.iter().any(|v| !v.is_finite()) {
        return Err(BundleError::NonFinite);
    }
    let mut head = postcard::to_allocvec(header).map_err(|_| BundleError::BadHeader)?;
    // The oldest version that says everything: version 7 with f32 weights, version 6 without
    // differences either, version 5 without a minimum length either.
    let mut version = FORMAT_VERSION;
    if header.weight_format == WeightFormat::F32 {
        debug_assert_eq!(head.last(), Some(&V7_WEIGHTS));
        head.pop();
        version = 7;
    }
    if version == 7 && header.diffs == 0 {
        debug_assert_eq!(head.last(), Some(&V6_DIFFS));
        head.pop();
        version = 6;
        if header.min_len == 1 {
            debug_assert_eq!(head.last(), Some(&V5_MIN_LEN));
            head.pop();
            version = 5;
        }
    }
    let (fweights, mut qweights) = stored_weights(header, weights);
    let prototypes = if header.weight_format == WeightFormat::Int8 {
        // Per decision value over all rows: the value's column is one channel.
        let (q, scales) = crate::quant::quantize_rows(&decision.prototypes, p, d);
        qweights.extend(q);
        scales
    } else {
        decision.prototypes.clone()
    };
    let n = fweights.len() + 2 * d + prototypes.len() + p + header.k as usize + decision.step_edges.len();
    let mut out = Vec::with_capacity(padded(16 + head.len()) + 4 * n + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.resize(padded(out.len()), 0);
    let clusters = decision.clusters.iter().map(|&c| c as f32);
    let tables = decision.offsets.iter().chain(&decision.scales).chain(&prototypes).copied();
    for v in fweights
        .iter()
        .copied()
        .chain(tables)
        .chain(clusters)
        .chain(decision.anomaly_thresholds.iter().copied())
        .chain(decision.step_edges.iter().copied())
    {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend(qweights.iter().map(|&q| q as u8));
    out.resize(padded(out.len()), 0);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A 4-byte-aligned copy of bundle bytes (for bundles read from files or `include_bytes!`).
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct AlignedBytes(Vec<u32>, usize);

#[cfg(feature = "std")]
impl AlignedBytes {
    /// Copies `bytes` into an aligned buffer.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        for (w, c) in words.iter_mut().zip(bytes.chunks(4)) {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            *w = u32::from_ne_bytes(b);
        }
        AlignedBytes(words, bytes.len())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the Vec<u32> owns at least `self.1` initialised bytes; u8 has no alignment needs.
        unsafe { core::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
    }
}
