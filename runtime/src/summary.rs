//! A streaming summary of a window, kept beside the recurrent state. Five blocks, each per
//! feature:
//!
//! 1. **Segment means**: per segment of `stride` consecutive samples, the mean value
//!    (piecewise aggregate approximation).
//! 2. **Segment mean absolute steps**: per segment, the mean of `|x_t - x_{t-1}|` (0 for the
//!    window's first sample).
//! 3. **Spectrum**: for frequencies `f = 1..=freqs`, `|Σ_t x_t e^{-2πi f t / P}| / n` over the
//!    `n` samples seen, `P` the model's window length: the magnitude of the window's discrete
//!    Fourier transform at its `freqs` lowest frequencies.
//! 4. **Step distribution**: for each edge `e_j` of the bundle's step-edge table, the share of
//!    steps `x_t - x_{t-1}` below `e_j` (the empirical CDF of the first differences at fixed
//!    levels the trainer took from the training data's quantiles).
//! 5. **Steps' spectrum**: for `f = 1..=step_freqs`, `|Σ_{t>=1} (x_t - x_{t-1}) e^{-2πi f t / P}| /
//!    (n - 1)`: the DFT magnitudes of the first differences. A step or a spike puts the same
//!    magnitudes here wherever it sits in the window, where the values' spectrum of a window
//!    that does not wrap around (a level shift at time `p`) changes with `p`; measured on the
//!    dev suite (README, "Clustering quality").
//!
//! 6. **Segment differences** (when `diffs`): `mean_{j+1} - mean_j` of consecutive segment
//!    means (block 1), per feature: the series' first differences at the summary's resolution.
//!    Derived from block 1 when the window is read, so it needs no state of its own. Why: on
//!    short z-normalised sets the classes differ in the shape of the curve, which the levels
//!    (dominated by the common profile) and the phase-free blocks do not separate; measured on
//!    the quality suite (ItalyPowerDemand: NMI 0.42 on segment means, 0.83 on their
//!    differences; README, "Clustering quality").
//!
//! Why: the VRAE latent is trained to reconstruct, which rewards encoding the shape every series
//! shares. What tells groups apart is often the level in a part of the window or how busy the
//! signal is there (blocks 1-2: position-bound), or which shape occurs wherever it occurs
//! (blocks 3-4: unchanged when the pattern moves in time; measured on the dev suite, the
//! position-bound blocks alone tie raw k-means on Trace, whose classes differ by a transient
//! that moves, while the spectrum and step distribution separate them). All five stream in
//! O(features x (segments + freqs + edges + step_freqs)) memory with a few operations per sample, so the
//! device computes them while it runs the encoder and the cluster decision uses them beside the
//! latent.
//!
//! Segment `j` holds steps `j*stride .. (j+1)*stride`; steps at or past `(segments-1)*stride` go
//! to the last segment, so a window longer than the model's never overflows. A segment that saw
//! no sample reads 0. The spectrum's phase `2π (t mod P) / P` is computed afresh each sample
//! ([`sincos_turn`]), its harmonics by complex multiplication, so no error builds up over a long
//! window.

/// Layout of one model's summary: the bundle header's numbers and its step-edge table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape<'a> {
    /// Values per sample.
    pub features: usize,
    /// Segments of blocks 1-2 (0: none).
    pub segments: usize,
    /// Samples per segment (at least 1 when `segments` > 0).
    pub stride: usize,
    /// Frequencies of the spectrum (0: none).
    pub freqs: usize,
    /// Frequencies of the steps' spectrum (0: none).
    pub step_freqs: usize,
    /// Period `P` of the spectrum's frequencies: the model's window length (at least 1).
    pub period: usize,
    /// Step edges, edge-major then feature (`edges.len()` a multiple of `features`; empty: none).
    pub edges: &'a [f32],
    /// Whether the segment differences (block 6) follow: `(segments - 1) x features` values.
    pub diffs: bool,
}

impl Shape<'_> {
    /// No summary at all.
    pub const NONE: Shape<'static> =
        Shape { features: 1, segments: 0, stride: 0, freqs: 0, step_freqs: 0, period: 1, edges: &[], diffs: false };

    /// Step edges per feature.
    pub fn edges_per_feature(&self) -> usize {
        self.edges.len().checked_div(self.features).unwrap_or(0)
    }

    /// Whether the summary has any value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values of the summary: `features x (2 segments + freqs + edges + step_freqs [+ segments - 1])`.
    pub fn len(&self) -> usize {
        self.block_lens().iter().fold(0usize, |a, &b| a.saturating_add(b))
    }

    /// Lengths of the summary's blocks: see [`block_lens`].
    pub fn block_lens(&self) -> [usize; 6] {
        block_lens(self.features, self.segments, self.freqs, self.edges.len(), self.step_freqs, self.diffs)
    }

    /// Segment differences per feature (block 6): see [`diff_count`].
    pub fn diff_count(&self) -> usize {
        diff_count(self.segments, self.diffs)
    }

    /// Slots a summary of this shape needs (sums, step sums, previous sample, spectrum real and
    /// imaginary parts, step counts, steps' spectrum real and imaginary parts).
    pub fn slots(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let f = self.features;
        let per_feature = (2 * self.segments).saturating_add(2 * self.freqs).saturating_add(2 * self.step_freqs).saturating_add(1);
        per_feature.saturating_mul(f).saturating_add(self.edges.len())
    }
}

/// Lengths of the six blocks of a summary in the order [`Summary::value`] writes them: segment
/// means and segment mean absolute steps (`segments x features` each), spectrum (`freqs x
/// features`), step distribution (`edges` in all), steps' spectrum (`step_freqs x features`),
/// segment differences ([`diff_count`]` x features`). The one definition of the summary's
/// size: [`Shape::len`] and the trainer's layout both read it.
pub const fn block_lens(features: usize, segments: usize, freqs: usize, edges: usize, step_freqs: usize, diffs: bool) -> [usize; 6] {
    let seg = segments.saturating_mul(features);
    [
        seg,
        seg,
        freqs.saturating_mul(features),
        edges,
        step_freqs.saturating_mul(features),
        diff_count(segments, diffs).saturating_mul(features),
    ]
}

/// Segment differences per feature of a summary with `segments` segments: `segments - 1` when
/// `diffs`, else 0 (the one definition the bundle header and the trainer's layout use).
pub const fn diff_count(segments: usize, diffs: bool) -> usize {
    if diffs {
        segments.saturating_sub(1)
    } else {
        0
    }
}

/// Running sums of one window, for up to `S` f32 slots (see [`Shape::slots`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<const S: usize> {
    acc: [f32; S],
    steps: u32,
}

impl<const S: usize> Default for Summary<S> {
    fn default() -> Self {
        Summary { acc: [0.0; S], steps: 0 }
    }
}

impl<const S: usize> Summary<S> {
    /// Back to an empty window.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Samples added since the last reset.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Writes the slots and the step count as `S + 1` words (see `State::save`).
    pub(crate) fn save(&self, put: &mut impl FnMut(u32)) {
        self.acc.iter().for_each(|v| put(v.to_bits()));
        put(self.steps);
    }

    /// The summary [`Summary::save`] wrote; `None` if `get` runs out first.
    pub(crate) fn load(get: &mut impl FnMut() -> Option<u32>) -> Option<Self> {
        let mut s = Self::default();
        for v in s.acc.iter_mut() {
            *v = f32::from_bits(get()?);
        }
        s.steps = get()?;
        Some(s)
    }

    /// Adds one sample (`shape.features` values). The caller checked `shape.slots() <= S`,
    /// `shape.stride >= 1` when there are segments and `shape.period >= 1`.
    pub(crate) fn push(&mut self, sample: &[f32], shape: &Shape) {
        let f = sample.len();
        let (p, m, ms) = (shape.segments, shape.freqs, shape.step_freqs);
        let t = self.steps as usize;
        let (sums, rest) = self.acc.split_at_mut(p * f);
        let (steps, rest) = rest.split_at_mut(p * f);
        let (prev, rest) = rest.split_at_mut(f);
        let (re, rest) = rest.split_at_mut(m * f);
        let (im, rest) = rest.split_at_mut(m * f);
        let (counts, rest) = rest.split_at_mut(shape.edges.len());
        let (step_re, rest) = rest.split_at_mut(ms * f);
        let step_im = &mut rest[..ms * f];
        if p > 0 {
            let seg = (t / shape.stride).min(p - 1);
            for (k, &v) in sample.iter().enumerate() {
                sums[seg * f + k] += v;
                if t > 0 {
                    steps[seg * f + k] += abs(v - prev[k]);
                }
            }
        }
        let with_steps = if t > 0 { ms } else { 0 };
        if m > 0 || with_steps > 0 {
            let (s, c) = sincos_turn(t % shape.period, shape.period);
            // e^{-iθ} and its powers e^{-i f θ}, f = 1..=max(m, ms), shared by both spectra.
            let (br, bi) = (c, -s);
            let (mut wr, mut wi) = (br, bi);
            for j in 0..m.max(with_steps) {
                if j < m {
                    for (k, &v) in sample.iter().enumerate() {
                        re[j * f + k] += v * wr;
                        im[j * f + k] += v * wi;
                    }
                }
                if j < with_steps {
                    for (k, &v) in sample.iter().enumerate() {
                        let dv = v - prev[k];
                        step_re[j * f + k] += dv * wr;
                        step_im[j * f + k] += dv * wi;
                    }
                }
                (wr, wi) = (wr * br - wi * bi, wr * bi + wi * br);
            }
        }
        if t > 0 {
            for (j, edge) in shape.edges.chunks_exact(f).enumerate() {
                for (k, (&v, &e)) in sample.iter().zip(edge).enumerate() {
                    if v - prev[k] < e {
                        counts[j * f + k] += 1.0;
                    }
                }
            }
        }
        prev.copy_from_slice(sample);
        self.steps += 1;
    }

    /// Samples that fell into segment `j` of a window of `n` samples.
    fn count(n: usize, j: usize, segments: usize, stride: usize) -> usize {
        let start = j * stride;
        if n <= start {
            0
        } else if j + 1 == segments {
            n - start
        } else {
            (n - start).min(stride)
        }
    }

    /// Mean of segment `j`, feature `k` (0 for a segment that saw no sample).
    fn segment_mean(&self, j: usize, k: usize, shape: &Shape) -> f32 {
        let c = Self::count(self.steps as usize, j, shape.segments, shape.stride);
        if c == 0 {
            0.0
        } else {
            self.acc[j * shape.features + k] / c as f32
        }
    }

    /// Value `i` of the summary (`0 <= i < shape.len()`): the segment means (segment-major,
    /// then feature), the mean absolute steps in the same order, the spectrum (frequency-major,
    /// then feature), the step distribution (edge-major, then feature), the steps' spectrum
    /// (frequency-major, then feature), then the segment differences (segment-major, then
    /// feature).
    pub(crate) fn value(&self, i: usize, shape: &Shape) -> f32 {
        let n = self.steps as usize;
        let f = shape.features;
        let pf = shape.segments * f;
        let mf = shape.freqs * f;
        if i < 2 * pf {
            let j = (i % pf) / f;
            let c = Self::count(n, j, shape.segments, shape.stride);
            return if c == 0 { 0.0 } else { self.acc[i] / c as f32 };
        }
        let base = 2 * pf + f;
        if i < 2 * pf + mf {
            let j = i - 2 * pf;
            if n == 0 {
                return 0.0;
            }
            let (re, im) = (self.acc[base + j], self.acc[base + mf + j]);
            return libm::sqrtf(re * re + im * im) / n as f32;
        }
        let j = i - 2 * pf - mf;
        let e = shape.edges.len();
        let sf = shape.step_freqs * f;
        if j >= e + sf {
            // A difference with a segment that saw no sample reads 0, like the empty segment.
            let (seg, k) = ((j - e - sf) / f, (j - e - sf) % f);
            if Self::count(n, seg + 1, shape.segments, shape.stride) == 0 {
                return 0.0;
            }
            return self.segment_mean(seg + 1, k, shape) - self.segment_mean(seg, k, shape);
        }
        if n <= 1 {
            return 0.0;
        }
        if j < e {
            return self.acc[base + 2 * mf + j] / (n - 1) as f32;
        }
        let j = j - e;
        let at = base + 2 * mf + e;
        let (re, im) = (self.acc[at + j], self.acc[at + sf + j]);
        libm::sqrtf(re * re + im * im) / (n - 1) as f32
    }
}

/// `(sin θ, cos θ)` of `θ = 2π r / p` for `0 <= r < p`. Why not `libm::sincosf`: its reduction
/// of arbitrary arguments costs ~15 KB of flash, and this angle is a known fraction of a turn.
/// The quadrant `q` is the nearest quarter turn, found in integers, so the remaining angle
/// `x = (π / 2) (4r - qp) / p` lies in `[-π/4, π/4]` with no rounding of the reduction; there
/// the Cephes `sinf`/`cosf` polynomials are accurate to about 1e-7.
pub(crate) fn sincos_turn(r: usize, p: usize) -> (f32, f32) {
    let (r, p) = (r as u64, p.max(1) as u64);
    let q = (8 * r + p) / (2 * p); // round(4r / p), in 0..=4
    let x = (4 * r) as f32 - (q * p) as f32;
    let x = x * (core::f32::consts::FRAC_PI_2 / p as f32);
    let z = x * x;
    let sin = x + x * z * (-1.666_665_5e-1 + z * (8.332_161e-3 + z * -1.951_529_6e-4));
    let cos = 1.0 - 0.5 * z + z * z * (4.166_664_6e-2 + z * (-1.388_731_6e-3 + z * 2.443_315_7e-5));
    match q % 4 {
        0 => (sin, cos),
        1 => (cos, -sin),
        2 => (-sin, -cos),
        _ => (-cos, sin),
    }
}

fn abs(x: f32) -> f32 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn shape(features: usize, segments: usize, stride: usize) -> Shape<'static> {
        Shape { features, segments, stride, freqs: 0, step_freqs: 0, period: 1, edges: &[], diffs: false }
    }

    #[test]
    fn means_and_steps_per_segment() {
        // 7 samples, stride 3, 2 segments: segment 0 = steps 0..3, segment 1 = steps 3..7.
        let x = [1.0f32, 3.0, 2.0, 10.0, 10.0, 12.0, 8.0];
        let sh = shape(1, 2, 3);
        let mut s = Summary::<16>::default();
        for v in x {
            s.push(&[v], &sh);
        }
        let v: Vec<f32> = (0..4).map(|i| s.value(i, &sh)).collect();
        assert_eq!(v[0], 2.0);
        assert_eq!(v[1], 10.0);
        // Steps: |3-1| + |2-3| = 3 over 3 samples (the first has no step); |10-2| + 0 + 2 + 4 = 14 over 4.
        assert_eq!(v[2], 1.0);
        assert_eq!(v[3], 3.5);
    }

    #[test]
    fn segment_differences_follow_the_other_blocks() {
        // Two features, 3 segments of stride 2; feature 1 is feature 0 negated. Means
        // (1.5, 5.5, 9) -> differences 4, 3.5; only 4 samples: the last segment is empty and
        // its difference reads 0.
        let sh = Shape { diffs: true, ..shape(2, 3, 2) };
        assert_eq!((sh.len(), sh.slots(), sh.diff_count()), (16, 14, 2));
        let run = |x: &[f32]| -> Vec<f32> {
            let mut s = Summary::<32>::default();
            x.iter().for_each(|&v| s.push(&[v, -v], &sh));
            (12..16).map(|i| s.value(i, &sh)).collect()
        };
        assert_eq!(run(&[1.0, 2.0, 5.0, 6.0, 9.0]), [4.0, -4.0, 3.5, -3.5]);
        assert_eq!(run(&[1.0, 2.0, 5.0, 6.0]), [4.0, -4.0, 0.0, 0.0]);
        // Without the flag the block is absent and the rest reads the same.
        assert_eq!(shape(2, 3, 2).len(), 12);
    }

    #[test]
    fn two_features_and_an_empty_segment() {
        let sh = shape(2, 3, 2);
        let mut s = Summary::<32>::default();
        for t in 0..2 {
            s.push(&[t as f32, -(t as f32)], &sh);
        }
        // Only segment 0 saw samples.
        assert_eq!((s.value(0, &sh), s.value(1, &sh)), (0.5, -0.5));
        assert_eq!(s.value(2, &sh), 0.0);
        assert_eq!((s.value(6, &sh), s.value(7, &sh)), (0.5, 0.5));
        assert_eq!(sh.slots(), 14);
        assert_eq!(Shape::NONE.slots(), 0);
    }

    fn spectrum(x: &[f32], freqs: usize) -> Vec<f32> {
        let sh = Shape { features: 1, segments: 0, stride: 0, freqs, step_freqs: 0, period: x.len(), edges: &[], diffs: false };
        let mut s = Summary::<64>::default();
        x.iter().for_each(|&v| s.push(&[v], &sh));
        (0..freqs).map(|i| s.value(i, &sh)).collect()
    }

    #[test]
    fn spectrum_finds_the_frequency_wherever_the_pattern_sits() {
        // cos(2π 3 t / P): magnitude 1/2 at f = 3, ~0 elsewhere.
        let p = 140;
        let x: Vec<f32> = (0..p).map(|t| libm::cosf(core::f32::consts::TAU * 3.0 * t as f32 / p as f32)).collect();
        let m = spectrum(&x, 8);
        for (f, v) in m.iter().enumerate() {
            let want = if f + 1 == 3 { 0.5 } else { 0.0 };
            assert!((v - want).abs() < 1e-4, "frequency {}: {v}", f + 1);
        }
        // A transient and the same transient 40 steps later: equal magnitudes (it moved, its
        // shape did not), unlike the segment means.
        let bump = |at: usize| -> Vec<f32> { (0..p).map(|t| if (at..at + 20).contains(&t) { 1.0 } else { 0.0 }).collect() };
        let (a, b) = (spectrum(&bump(10), 16), spectrum(&bump(50), 16));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
        assert!(a.iter().any(|v| *v > 0.05));
    }

    #[test]
    fn sincos_of_a_fraction_of_a_turn_is_accurate() {
        for p in [1usize, 2, 3, 7, 140, 286, 1460, 2000, 65_536] {
            for r in (0..p).step_by((p / 97).max(1)).chain([p - 1]) {
                let (s, c) = sincos_turn(r, p);
                let a = core::f64::consts::TAU * r as f64 / p as f64;
                assert!((s as f64 - libm::sin(a)).abs() < 3e-7 && (c as f64 - libm::cos(a)).abs() < 3e-7, "{r}/{p}: {s} {c}");
            }
        }
    }

    #[test]
    fn step_distribution_counts_steps_below_each_edge() {
        // Steps: +1, -2, +0.5, 0; edges per feature -1 and 0.25 (edge-major, two features).
        let edges = [-1.0f32, -1.0, 0.25, 0.25];
        let sh = Shape { features: 2, segments: 0, stride: 0, freqs: 0, step_freqs: 0, period: 5, edges: &edges, diffs: false };
        let mut s = Summary::<16>::default();
        for v in [0.0f32, 1.0, -1.0, -0.5, -0.5] {
            s.push(&[v, 0.0], &sh);
        }
        assert_eq!(sh.len(), 4);
        let v: Vec<f32> = (0..4).map(|i| s.value(i, &sh)).collect();
        // Feature 0: below -1: one of four steps; below 0.25: -2 and 0 -> 2 of 4. Feature 1
        // (all steps 0): none below -1, all below 0.25.
        assert_eq!(v, [0.25, 0.0, 0.5, 1.0]);
        let mut one = Summary::<16>::default();
        one.push(&[3.0, 3.0], &sh);
        assert_eq!(one.value(0, &sh), 0.0, "one sample has no step");
    }

    #[test]
    fn steps_spectrum_of_a_level_shift_does_not_depend_on_where_it_sits() {
        // A level shift at time `at` in a window that does not wrap around: its steps are one
        // impulse, whose DFT magnitudes are flat, 1 / (n - 1), wherever it sits; the values'
        // spectrum changes with `at`.
        let p = 140;
        let edges = [0.0f32];
        let sh = Shape { features: 1, segments: 0, stride: 0, freqs: 4, step_freqs: 4, period: p, edges: &edges, diffs: false };
        assert_eq!((sh.len(), sh.slots()), (9, 18));
        let run = |at: usize| -> Vec<f32> {
            let mut s = Summary::<32>::default();
            (0..p).for_each(|t| s.push(&[if t >= at { 1.0 } else { 0.0 }], &sh));
            (0..sh.len()).map(|i| s.value(i, &sh)).collect()
        };
        let (a, b) = (run(30), run(90));
        for v in a[5..].iter().chain(&b[5..]) {
            assert!((v - 1.0 / (p - 1) as f32).abs() < 1e-6, "{a:?}");
        }
        assert!((a[0] - b[0]).abs() > 0.01, "the values' spectrum moves with the shift: {a:?} vs {b:?}");
        // The step distribution (one edge at 0) still reads between the spectra: no step below 0.
        assert_eq!(a[4], 0.0);
        // A cosine's steps: the spectrum of the differences peaks at the cosine's frequency.
        let mut s = Summary::<32>::default();
        (0..p).for_each(|t| s.push(&[libm::cosf(core::f32::consts::TAU * 3.0 * t as f32 / p as f32)], &sh));
        let steps: Vec<f32> = (5..9).map(|i| s.value(i, &sh)).collect();
        let top = (0..4).max_by(|&i, &j| steps[i].total_cmp(&steps[j])).unwrap();
        assert_eq!(top + 1, 3, "{steps:?}");
    }
}
