//! A synthetic data set of unequal lengths whose classes only native-length handling keeps apart
//! (the evidence for `--length native`, in a test and in the quality harness).
//!
//! **Cycles**: each class is an oscillation of its own period (in samples, as a machine cycle or
//! a vibration is), every series of one class has a random length, phase and amplitude:
//!
//! ```text
//! x_t = a · sin(2π t / p_c + φ) + ε_t,   t = 0..n,   n ~ U[min_len, max_len],
//! a ~ U[0.8, 1.2],  φ ~ U[0, phase),  ε_t ~ N(0, noise²)
//! ```
//!
//! Each series starts near the start of a cycle (`phase` 0.5 rad by default), as a recorded
//! machine cycle or trip does.
//!
//! Resampling a series of `n` steps onto `N` multiplies its period by `N / n`: with lengths over a
//! 4x range, class `c`'s periods spread over `[p_c, 4 p_c]` and the classes overlap, while at each
//! series' own length the periods stay distinct. Written as an aeon `.ts` file
//! ([`to_ts`]) so `trainer fit` reads it like any other set.

use std::fmt::Write as _;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Dataset, Series};
use crate::model::vrae::standard_normal;

/// Settings of [`cycles`].
#[derive(Debug, Clone, PartialEq)]
pub struct CyclesParams {
    /// Period in samples of each class (one class per entry).
    pub periods: Vec<f64>,
    /// Series per class.
    pub per_class: usize,
    /// Shortest and longest series (inclusive).
    pub lengths: (usize, usize),
    /// Standard deviation of the added noise.
    pub noise: f32,
    /// Largest starting phase in radians (`2π`: anywhere in the cycle).
    pub phase: f64,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for CyclesParams {
    /// Three classes of periods 6, 10 and 16 samples, 40 series each, lengths 40..160, noise 0.1,
    /// starting phase below 0.5 rad.
    fn default() -> Self {
        CyclesParams { periods: vec![6.0, 10.0, 16.0], per_class: 40, lengths: (40, 160), noise: 0.1, phase: 0.5, seed: 0 }
    }
}

/// The cycles data set (see the module docs), classes interleaved, labels `1..=classes`.
pub fn cycles(p: &CyclesParams) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let (lo, hi) = (p.lengths.0.max(1), p.lengths.1.max(p.lengths.0.max(1)));
    let mut series = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..p.per_class {
        for (c, &period) in p.periods.iter().enumerate() {
            let n = rng.gen_range(lo..=hi);
            let a = rng.gen_range(0.8f64..1.2);
            let phase = rng.gen_range(0.0..p.phase.max(1e-9));
            let eps = standard_normal(&mut rng, n);
            let values =
                (0..n).map(|t| (a * (std::f64::consts::TAU * t as f64 / period + phase).sin()) as f32 + p.noise * eps[t]).collect();
            series.push(Series { values, len: n });
            labels.push((c + 1).to_string());
        }
    }
    Dataset { series, labels: Some(labels), n_features: 1, sources: vec![] }
}

/// `ds` (univariate, labelled) as an aeon `.ts` file of unequal lengths named `name`.
pub fn to_ts(ds: &Dataset, name: &str) -> String {
    let labels = ds.labels.clone().unwrap_or_default();
    let mut classes: Vec<&String> = labels.iter().collect();
    classes.sort();
    classes.dedup();
    let mut s = format!("@problemName {name}\n@timeStamps false\n@missing false\n@univariate true\n@equalLength false\n");
    let _ = writeln!(s, "@classLabel true {}", classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" "));
    s.push_str("@data\n");
    for (i, x) in ds.series.iter().enumerate() {
        let vals: Vec<String> = x.values.iter().map(|v| v.to_string()).collect();
        let _ = writeln!(s, "{}:{}", vals.join(","), labels.get(i).map_or("", |l| l.as_str()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_reproducible_labelled_and_read_back_from_ts() {
        let p = CyclesParams { per_class: 3, ..CyclesParams::default() };
        let ds = cycles(&p);
        assert_eq!(ds, cycles(&p));
        assert_eq!(ds.len(), 9);
        assert!(ds.series.iter().all(|s| (40..=160).contains(&s.len) && s.values.len() == s.len));
        assert!(ds.equal_length().is_none());
        let text = to_ts(&ds, "Cycles");
        let back = crate::data::parse_bytes(std::path::Path::new("c.ts"), text.as_bytes(), &Default::default()).unwrap();
        assert_eq!(back.labels, ds.labels);
        assert_eq!(back.series.iter().map(|s| s.len).collect::<Vec<_>>(), ds.series.iter().map(|s| s.len).collect::<Vec<_>>());
        assert_eq!(back.series[4].values, ds.series[4].values);
    }
}
