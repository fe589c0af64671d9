//! Preparing loaded series for the model: normalisation, lengths (native or resampled, and the
//! cap), train/held-out split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Dataset, Series};

/// Per-series normalisation applied before training and before embedding: the runtime's, so
/// training series and device windows are normalised by the same definition and arithmetic.
pub use runtime::bundle::Normalization;

/// Applies `norm` to every series in place ([`runtime::encoder::zscore_in_place`]: the bits the
/// device computes for a window).
pub fn normalize(ds: &mut Dataset, norm: Normalization) {
    if norm == Normalization::None {
        return;
    }
    for s in &mut ds.series {
        runtime::encoder::zscore_in_place(&mut s.values, ds.n_features);
    }
}

/// How series of unequal lengths reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LengthMode {
    /// Each series at its own length: training masks the padding of a batch, and embedding runs
    /// the encoder over exactly the series' steps (as a device streams them).
    #[default]
    Native,
    /// Every series linearly interpolated onto the model's length (the seed's behaviour): a
    /// 1-second event stretched to 3 seconds becomes a slower one.
    Resample,
}

impl LengthMode {
    /// What directories written before the choice existed did.
    pub fn recorded_before() -> Self {
        LengthMode::Resample
    }
}

/// What [`shape_lengths`] did to a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPlan {
    /// The model's length: the cap, or the longest series when that is shorter.
    pub seq_len: usize,
    /// Series cut to the cap (their first `seq_len` steps kept).
    pub cut: usize,
    /// Series interpolated onto `seq_len` (resample mode only).
    pub resampled: usize,
    /// How new data reaches the model: native only for a model that learnt from series of
    /// several lengths; one trained on one length gets new data resampled onto it.
    pub length: LengthMode,
}

/// Keeps the first `cap` steps of every longer series: a cap bounds a batch's padding and the
/// decoder's length, and the start of an event-shaped series (a cycle, a trip) is where it is
/// aligned. Returns how many were cut.
pub fn cut_to(ds: &mut Dataset, cap: usize) -> usize {
    let nf = ds.n_features;
    let mut cut = 0;
    for s in ds.series.iter_mut().filter(|s| s.len > cap) {
        s.values.truncate(cap * nf);
        s.len = cap;
        cut += 1;
    }
    cut
}

/// Brings `ds` to what the model trains on: series longer than `max_length` (default: the
/// longest, so none) are cut to it ([`cut_to`]), then normalised, then, in resample mode only,
/// interpolated onto one length. In native mode series keep their own lengths.
pub fn shape_lengths(ds: &mut Dataset, mode: LengthMode, max_length: Option<usize>, norm: Normalization) -> LengthPlan {
    let cap = max_length.unwrap_or_else(|| ds.max_len()).max(1);
    let cut = cut_to(ds, cap);
    normalize(ds, norm);
    let seq_len = ds.max_len();
    let ragged = ds.equal_length().is_none();
    let mut resampled = 0;
    if mode == LengthMode::Resample && ragged {
        resampled = ds.series.iter().filter(|s| s.len != seq_len).count();
        resample_all(ds, seq_len);
    }
    let length = if mode == LengthMode::Native && ragged { LengthMode::Native } else { LengthMode::Resample };
    LengthPlan { seq_len, cut, resampled, length }
}

/// The shortest series a native-length model accepts: half its shortest training series (at
/// least 1). Shorter input is refused rather than encoded from fewer steps than the model ever
/// learnt from.
pub fn native_min_length(train: &[Series]) -> usize {
    (train.iter().map(|s| s.len).min().unwrap_or(1) / 2).max(1)
}

/// Linearly interpolates a series onto `target` equally spaced time steps (end points kept).
pub fn resample(s: &Series, nf: usize, target: usize) -> Series {
    if s.len == target {
        return s.clone();
    }
    let mut values = Vec::with_capacity(target * nf);
    for i in 0..target {
        let pos = if target == 1 { 0.0 } else { i as f64 * (s.len - 1) as f64 / (target - 1) as f64 };
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(s.len - 1);
        let w = (pos - lo as f64) as f32;
        for f in 0..nf {
            let a = s.values[lo * nf + f];
            let b = s.values[hi * nf + f];
            values.push(a + (b - a) * w);
        }
    }
    Series { values, len: target }
}

/// Brings every series to length `target` by linear interpolation.
pub fn resample_all(ds: &mut Dataset, target: usize) {
    let nf = ds.n_features;
    for s in &mut ds.series {
        if s.len != target {
            *s = resample(s, nf, target);
        }
    }
}

/// Indices of a reproducible split: all rows shuffled with `seed`, the first
/// `round(holdout * n)` held out (the seed notebook's protocol). Returns `(train, held_out)`.
pub fn split(n: usize, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_hold = ((holdout * n as f64).round() as usize).min(n.saturating_sub(1));
    let train = idx.split_off(n_hold);
    (train, idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_gives_zero_mean_unit_std_per_feature() {
        let mut ds = Dataset {
            series: vec![Series { values: vec![1.0, 10.0, 2.0, 10.0, 3.0, 10.0], len: 3 }],
            labels: None,
            n_features: 2,
            sources: vec![],
        };
        normalize(&mut ds, Normalization::Zscore);
        let v = &ds.series[0].values;
        let s = 1.5f32.sqrt();
        assert!((v[0] + 1.0 / (2.0f32 / 3.0).sqrt()).abs() < 1e-5, "{v:?} {s}");
        assert_eq!(v[2], 0.0);
        // Constant feature: mean removed, no division by zero.
        assert_eq!((v[1], v[3], v[5]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn resample_interpolates_linearly() {
        let s = Series { values: vec![0.0, 10.0, 20.0], len: 3 };
        assert_eq!(resample(&s, 1, 5).values, vec![0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(resample(&s, 1, 2).values, vec![0.0, 20.0]);
    }

    #[test]
    fn split_is_reproducible_and_partitions() {
        let (a, b) = split(5000, 0.1, 0);
        assert_eq!((a.len(), b.len()), (4500, 500));
        assert_eq!(split(5000, 0.1, 0), (a.clone(), b.clone()));
        assert_ne!(split(5000, 0.1, 1).1, b);
        let mut all: Vec<usize> = a.into_iter().chain(b).collect();
        all.sort();
        assert_eq!(all, (0..5000).collect::<Vec<_>>());
    }
}
