//! Preparing loaded series for the model: normalisation, common length, train/held-out split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
