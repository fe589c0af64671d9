//! The streaming encoder: one sample in, state updated in place, no buffer of past samples and
//! no allocation. Same math as the trainer (see `trainer::model::rnn` for the equations),
//! computed one hidden unit at a time so the only scratch is the next hidden vector.

use crate::assign::{nearest, nearest_int8, AssignError, Assignment};
use crate::bundle::{Bundle, BundleError, Normalization};
use crate::kernel::{self, BLOCK};
use crate::summary::Summary;

/// Summary slots of every [`State`]: 32 segments, 32 frequencies and 16 step edges of one
/// feature, or 16 segments, 21 frequencies and 10 edges of three (see
/// [`crate::summary::Shape::slots`]); the trainer sizes its summary to fit. A crate constant rather
/// than a third capacity parameter, so the summary costs no caller a change of types.
pub const SUMMARY_SLOTS: usize = 256;

/// Largest feature count a z-normalised window may have (stack scratch of `encode_window`).
pub const MAX_ZSCORE_FEATURES: usize = 64;

/// Decision vectors up to this length are computed once per window into stack scratch (1 KiB)
/// before the prototype search; longer ones value by value per prototype, as small devices did
/// before. Same values either way, so the same bits.
const DECISION_STACK: usize = 256;

/// State of one device's window: `h` and `c` for up to `L` layers of up to `H` units, and the
/// window's streaming summary in [`SUMMARY_SLOTS`] slots. `size_of::<State<H, L>>()` is what a
/// device stores per stream.
#[derive(Debug, Clone, PartialEq)]
pub struct State<const H: usize, const L: usize> {
    h: [[f32; H]; L],
    c: [[f32; H]; L],
    steps: u32,
    summary: Summary<SUMMARY_SLOTS>,
}

impl<const H: usize, const L: usize> Default for State<H, L> {
    fn default() -> Self {
        State { h: [[0.0; H]; L], c: [[0.0; H]; L], steps: 0, summary: Summary::default() }
    }
}

impl<const H: usize, const L: usize> State<H, L> {
    /// Back to the start of a window (all zeros).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Samples pushed since the last reset.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The window's streaming summary.
    pub fn summary(&self) -> &Summary<SUMMARY_SLOTS> {
        &self.summary
    }

    /// Adds `sample` to the window summary: the part of a step outside the recurrent layers.
    pub(crate) fn summarize(&mut self, sample: &[f32], shape: &crate::summary::Shape) {
        if !shape.is_empty() {
            self.summary.push(sample, shape);
        }
    }

    /// `h` and `c` of layer `l`, for the host's multi-window step ([`crate::batch::push_each`]).
    #[cfg(feature = "batch")]
    pub(crate) fn layer_mut(&mut self, l: usize) -> (&mut [f32; H], &mut [f32; H]) {
        (&mut self.h[l], &mut self.c[l])
    }

    /// Counts a step the multi-window kernel took for this state.
    #[cfg(feature = "batch")]
    pub(crate) fn count_step(&mut self) {
        self.steps += 1;
    }

    /// 32-bit words [`State::save`] writes for a model of `hidden` units and `layers` layers.
    pub const fn saved_words(hidden: usize, layers: usize) -> usize {
        2 * hidden * layers + 2 + SUMMARY_SLOTS
    }

    /// Writes the part a model of `hidden` units and `layers` layers uses (`h` and `c` of each
    /// layer, the step count, the summary) as [`State::saved_words`] words, so a gateway can keep
    /// a device's half-finished window across a restart. `None` if the model exceeds `H`/`L`.
    pub fn save(&self, hidden: usize, layers: usize, mut put: impl FnMut(u32)) -> Option<()> {
        if hidden > H || layers > L {
            return None;
        }
        for l in 0..layers {
            self.h[l][..hidden].iter().chain(&self.c[l][..hidden]).for_each(|v| put(v.to_bits()));
        }
        put(self.steps);
        self.summary.save(&mut put);
        Some(())
    }

    /// The state [`State::save`] wrote, from its words in order; `None` if `get` runs out first
    /// or the model exceeds `H`/`L`. Units and layers the model does not use stay zero.
    pub fn load(hidden: usize, layers: usize, mut get: impl FnMut() -> Option<u32>) -> Option<Self> {
        if hidden > H || layers > L {
            return None;
        }
        let mut s = Self::default();
        for l in 0..layers {
            for v in s.h[l][..hidden].iter_mut() {
                *v = f32::from_bits(get()?);
            }
            for v in s.c[l][..hidden].iter_mut() {
                *v = f32::from_bits(get()?);
            }
        }
        s.steps = get()?;
        s.summary = Summary::load(&mut get)?;
        Some(s)
    }
}

/// Why a sample or window could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The model does not fit the compile-time capacity.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The sample has the wrong number of features.
    #[error("sample has {got} values, the model expects {expected} features")]
    FeatureCount {
        /// Values given.
        got: usize,
        /// Model features.
        expected: usize,
    },
    /// A NaN or infinite input value.
    #[error("input value {index} is not finite")]
    NonFinite {
        /// Position in the sample or window.
        index: usize,
    },
    /// The model z-normalises whole windows, so samples cannot be streamed one by one.
    #[error("this model z-normalises each window: use encode_window, not push")]
    NeedsWindow,
    /// A window that is empty or not a whole number of samples.
    #[error("window of {len} values is not a non-empty whole number of {features}-feature samples")]
    WindowShape {
        /// Values given.
        len: usize,
        /// Model features.
        features: usize,
    },
    /// `finish` before any sample.
    #[error("no samples pushed since the last reset")]
    Empty,
    /// `finish` after fewer samples than the model's minimum window length.
    #[error("window of {steps} samples is shorter than the model's minimum length {min}")]
    TooShort {
        /// Samples pushed.
        steps: u32,
        /// The bundle's `min_len`.
        min: u32,
    },
    /// Assignment failed.
    #[error(transparent)]
    Assign(#[from] AssignError),
    /// The model decides on the latent and the window's summary: use `decide` with the state.
    #[error("this model's cluster decision needs the window summary: use decide(state, latent), not assign(latent)")]
    NeedsSummary,
}

/// The encoder of a bundle, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Encoder<'a> {
    bundle: Bundle<'a>,
}

impl<'a> Encoder<'a> {
    /// Wraps a parsed bundle.
    pub fn new(bundle: Bundle<'a>) -> Self {
        Encoder { bundle }
    }

    /// Parses `bytes` and wraps the bundle.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, BundleError> {
        Ok(Encoder { bundle: Bundle::parse(bytes)? })
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle<'a> {
        &self.bundle
    }

    /// Checks that the model fits `State<H, L>` and `LAT` latent values.
    pub fn check_capacity<const H: usize, const L: usize, const LAT: usize>(&self) -> Result<(), BundleError> {
        let h = &self.bundle.header;
        for (what, need, have) in
            [("hidden units", h.hidden as usize, H), ("layers", h.layers as usize, L), ("latent length", h.latent as usize, LAT)]
        {
            if need > have {
                return Err(BundleError::Capacity { what, need, have });
            }
        }
        Ok(())
    }

    /// Checks that the model's window summary fits `S` slots.
    pub fn check_summary_capacity<const S: usize>(&self) -> Result<(), BundleError> {
        let need = self.bundle.summary_shape().slots();
        if need > S {
            return Err(BundleError::Capacity { what: "summary slots", need, have: S });
        }
        Ok(())
    }

    /// Feeds one sample (`n_features` values) through every layer and into the window summary.
    /// O(weights), no allocation.
    pub fn push<const H: usize, const L: usize>(&self, s: &mut State<H, L>, sample: &[f32]) -> Result<(), EncodeError> {
        if self.bundle.header.normalization != Normalization::None {
            return Err(EncodeError::NeedsWindow);
        }
        self.push_raw(s, sample)
    }

    /// What [`Encoder::push`] checks before it changes a state of capacity `H` x `L`.
    pub(crate) fn check_push<const H: usize, const L: usize>(&self, sample: &[f32]) -> Result<(), EncodeError> {
        let hd = &self.bundle.header;
        if hd.hidden as usize > H || hd.layers as usize > L {
            self.check_capacity::<H, L, { usize::MAX }>()?;
        }
        self.check_summary_capacity::<SUMMARY_SLOTS>()?;
        let f = hd.n_features as usize;
        if sample.len() != f {
            return Err(EncodeError::FeatureCount { got: sample.len(), expected: f });
        }
        if let Some(index) = sample.iter().position(|v| !v.is_finite()) {
            return Err(EncodeError::NonFinite { index });
        }
        Ok(())
    }

    fn push_raw<const H: usize, const L: usize>(&self, s: &mut State<H, L>, sample: &[f32]) -> Result<(), EncodeError> {
        self.check_push::<H, L>(sample)?;
        s.summarize(sample, &self.bundle.summary_shape());
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if crate::math::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            unsafe { step_avx2(&self.bundle, s, sample) };
            return Ok(());
        }
        step::<H, L, BLOCK>(&self.bundle, s, sample);
        Ok(())
    }

    /// Latent mean of the window pushed so far: `W_mean h_top + b_mean`.
    pub fn finish<const H: usize, const L: usize, const LAT: usize>(
        &self,
        s: &State<H, L>,
    ) -> Result<heapless::Vec<f32, LAT>, EncodeError> {
        self.check_capacity::<H, L, LAT>()?;
        if s.steps == 0 {
            return Err(EncodeError::Empty);
        }
        let hd = &self.bundle.header;
        if s.steps < hd.min_len {
            return Err(EncodeError::TooShort { steps: s.steps, min: hd.min_len });
        }
        let (hid, top) = (hd.hidden as usize, hd.layers as usize - 1);
        let mut out = heapless::Vec::new();
        // Capacity was checked above, so the resize cannot fail.
        let _ = out.resize(hd.latent as usize, 0.0);
        kernel::head(&self.bundle, &s.h[top][..hid], &mut out);
        Ok(out)
    }

    /// Raw decision value `j`: the latent, then the summary (see [`crate::bundle`]).
    fn raw_value<const S: usize>(&self, latent: &[f32], summary: Option<&Summary<S>>, j: usize) -> f32 {
        match (j.checked_sub(latent.len()), summary) {
            (None, _) => latent[j],
            (Some(i), Some(sm)) => sm.value(i, &self.bundle.summary_shape()),
            (Some(_), None) => 0.0,
        }
    }

    /// Decision value `j` as the prototypes see it: `(raw_j - offset_j) * scale_j`.
    fn value<const S: usize>(&self, latent: &[f32], summary: Option<&Summary<S>>, j: usize) -> f32 {
        let b = &self.bundle;
        let raw = self.raw_value(latent, summary, j);
        let off = b.offsets.get(j).copied().unwrap_or(0.0);
        let scale = b.scales.get(j).copied().unwrap_or(1.0);
        (raw - off) * scale
    }

    fn decide_with<const S: usize>(&self, latent: &[f32], summary: Option<&Summary<S>>) -> Result<Assignment, AssignError> {
        let hd = &self.bundle.header;
        let l = hd.latent as usize;
        if latent.len() != l {
            return Err(AssignError::DimMismatch { got: latent.len(), expected: l });
        }
        let b = &self.bundle;
        let d = hd.decision_dims();
        let mut a = if d <= DECISION_STACK {
            // Each value once, not once per prototype (a summary value costs a division, a
            // spectrum one a square root too).
            let mut x = [0f32; DECISION_STACK];
            for (j, v) in x[..d].iter_mut().enumerate() {
                *v = self.value(latent, summary, j);
            }
            self.nearest(|j| x[j], d)?
        } else {
            self.nearest(|j| self.value(latent, summary, j), d)?
        };
        a.anomalous = b.is_anomalous(a.cluster, a.distance);
        Ok(a)
    }

    /// The nearest prototype of the bundle's table, f32 or int8.
    fn nearest(&self, value: impl Fn(usize) -> f32, d: usize) -> Result<Assignment, AssignError> {
        let b = &self.bundle;
        if b.is_int8() {
            return nearest_int8(value, d, b.qprototypes, b.prototype_scales, b.prototype_clusters);
        }
        nearest(value, d, b.prototypes, b.prototype_clusters)
    }

    /// Cluster of a window from its latent and the summary its state streamed: the nearest
    /// prototype of the decision vector (see [`crate::assign`]).
    pub fn decide<const H: usize, const L: usize>(&self, s: &State<H, L>, latent: &[f32]) -> Result<Assignment, EncodeError> {
        self.decide_summary(s.summary(), latent)
    }

    /// [`Encoder::decide`] from a summary kept apart from the recurrent state.
    pub fn decide_summary<const S: usize>(&self, summary: &Summary<S>, latent: &[f32]) -> Result<Assignment, EncodeError> {
        self.check_summary_capacity::<S>()?;
        Ok(self.decide_with(latent, Some(summary))?)
    }

    /// Cluster of a latent alone, for models whose decision does not use the window summary
    /// (else [`EncodeError::NeedsSummary`]).
    pub fn assign(&self, latent: &[f32]) -> Result<Assignment, EncodeError> {
        if self.bundle.header.summary_len() > 0 {
            return Err(EncodeError::NeedsSummary);
        }
        Ok(self.decide_with::<0>(latent, None)?)
    }

    /// Summary of a whole time-major window, z-normalised first when the model expects it: what
    /// streaming the window through [`Encoder::push`] leaves in the state's summary.
    pub fn summarize_window<const S: usize>(&self, summary: &mut Summary<S>, window: &[f32]) -> Result<(), EncodeError> {
        self.check_summary_capacity::<S>()?;
        self.check_window(window)?;
        summary.reset();
        let shape = self.bundle.summary_shape();
        if shape.is_empty() {
            return Ok(());
        }
        self.for_each_input(window, |x| {
            summary.push(x, &shape);
            Ok(())
        })
    }

    /// A whole window must be a non-empty whole number of samples, every value finite.
    fn check_window(&self, window: &[f32]) -> Result<(), EncodeError> {
        let f = self.bundle.header.n_features as usize;
        if window.is_empty() || !window.len().is_multiple_of(f) {
            return Err(EncodeError::WindowShape { len: window.len(), features: f });
        }
        if let Some(index) = window.iter().position(|v| !v.is_finite()) {
            return Err(EncodeError::NonFinite { index });
        }
        Ok(())
    }

    /// Calls `f` with every sample of a checked, time-major window as the model sees it:
    /// z-normalised with the window's statistics when the model expects it.
    fn for_each_input(&self, window: &[f32], mut f: impl FnMut(&[f32]) -> Result<(), EncodeError>) -> Result<(), EncodeError> {
        let nf = self.bundle.header.n_features as usize;
        match self.bundle.header.normalization {
            Normalization::None => window.chunks_exact(nf).try_for_each(f),
            Normalization::Zscore => {
                if nf > MAX_ZSCORE_FEATURES {
                    return Err(BundleError::Capacity { what: "z-normalised features", need: nf, have: MAX_ZSCORE_FEATURES }.into());
                }
                let z = Zscore::of(window, nf);
                let mut buf = [0f32; MAX_ZSCORE_FEATURES];
                for sample in window.chunks_exact(nf) {
                    z.apply(sample, &mut buf[..nf]);
                    f(&buf[..nf])?;
                }
                Ok(())
            }
        }
    }

    /// The raw decision vector (latent, then summary), before offsets and scales: what the
    /// trainer fits the decision tables on.
    #[cfg(feature = "std")]
    pub fn raw_decision<const S: usize>(&self, latent: &[f32], summary: &Summary<S>) -> Vec<f32> {
        (0..self.bundle.header.decision_dims()).map(|j| self.raw_value(latent, Some(summary), j)).collect()
    }

    /// Resets `s`, encodes a whole time-major window (`len * n_features` values, z-normalised
    /// first when the model expects it) and returns its latent mean.
    pub fn encode_window<const H: usize, const L: usize, const LAT: usize>(
        &self,
        s: &mut State<H, L>,
        window: &[f32],
    ) -> Result<heapless::Vec<f32, LAT>, EncodeError> {
        self.check_capacity::<H, L, LAT>()?;
        self.check_window(window)?;
        s.reset();
        self.for_each_input(window, |x| self.push_raw(s, x))?;
        self.finish(s)
    }

    /// Encodes a window and decides its cluster: `(latent, assignment)`.
    pub fn classify_window<const H: usize, const L: usize, const LAT: usize>(
        &self,
        s: &mut State<H, L>,
        window: &[f32],
    ) -> Result<(heapless::Vec<f32, LAT>, Assignment), EncodeError> {
        let z = self.encode_window::<H, L, LAT>(s, window)?;
        let a = self.decide(s, &z)?;
        Ok((z, a))
    }
}

fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
}

/// Per-feature mean and `1 / std` of one window: the z-normalisation every encoding path
/// applies, so they all feed the step the same bits.
pub(crate) struct Zscore {
    mean: [f32; MAX_ZSCORE_FEATURES],
    scale: [f32; MAX_ZSCORE_FEATURES],
}

/// Mean and inverse standard deviation of feature `k` of a time-major window of `f` features; a
/// constant feature only loses its mean (scale 1).
fn zscore_stats(window: &[f32], f: usize, k: usize) -> (f32, f32) {
    let n = (window.len() / f) as f32;
    let m = window.iter().skip(k).step_by(f).sum::<f32>() / n;
    let var = window.iter().skip(k).step_by(f).map(|v| (v - m) * (v - m)).sum::<f32>() / n;
    (m, if var > 1e-24 { 1.0 / sqrt(var) } else { 1.0 })
}

/// Z-normalises a time-major window of `f` features in place, with the arithmetic the encoder
/// applies on the device (the trainer prepares its training series with this, so both see the
/// same bits).
pub fn zscore_in_place(window: &mut [f32], f: usize) {
    if f == 0 {
        return;
    }
    for k in 0..f {
        let (m, scale) = zscore_stats(window, f, k);
        window.iter_mut().skip(k).step_by(f).for_each(|v| *v = (*v - m) * scale);
    }
}

impl Zscore {
    /// Statistics of a time-major window of `f <= MAX_ZSCORE_FEATURES` features.
    pub(crate) fn of(window: &[f32], f: usize) -> Self {
        let (mut mean, mut scale) = ([0f32; MAX_ZSCORE_FEATURES], [1f32; MAX_ZSCORE_FEATURES]);
        for k in 0..f {
            (mean[k], scale[k]) = zscore_stats(window, f, k);
        }
        Zscore { mean, scale }
    }

    /// `out[k] = (sample[k] - mean[k]) * scale[k]`.
    pub(crate) fn apply(&self, sample: &[f32], out: &mut [f32]) {
        for (k, (o, v)) in out.iter_mut().zip(sample).enumerate() {
            *o = (v - self.mean[k]) * self.scale[k];
        }
    }
}

/// Whether `encode_window` would accept these values without an error (all finite, and a
/// z-normalised model's features fit its scratch): the host's grouped and two-core paths take
/// exactly these and leave every other window to `encode_window` and its errors.
#[cfg(feature = "batch")]
pub(crate) fn encodes_cleanly(normalization: Normalization, n_features: usize, values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite()) && (normalization == Normalization::None || n_features <= MAX_ZSCORE_FEATURES)
}

/// The same step compiled for AVX2 (8-wide). Deliberately without FMA: a fused multiply-add
/// rounds once where every other target rounds twice, and latents must be bit-identical on
/// hosts, gateways and microcontrollers.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn step_avx2<const H: usize, const L: usize>(b: &Bundle<'_>, s: &mut State<H, L>, x: &[f32]) {
    step::<H, L, BLOCK>(b, s, x)
}

/// One time step of one window through every layer ([`kernel::step`] with `N = 1`), `B`
/// outputs per register block.
#[inline(always)]
fn step<const H: usize, const L: usize, const B: usize>(b: &Bundle<'_>, s: &mut State<H, L>, x: &[f32]) {
    let mut gates = [[0f32; H]; 4];
    let mut rec = [[0f32; H]; 4];
    kernel::step::<1, B>(b, s.h.as_flattened_mut(), s.c.as_flattened_mut(), H, x, gates.as_flattened_mut(), rec.as_flattened_mut());
    s.steps += 1;
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::bundle::Cell;
    use crate::testutil::{random_bundle, Noise};

    /// Every step variant (the dispatched SIMD one, 64-, 8- and 128-wide blocks) leaves
    /// bit-identical states, so the host's latents equal the microcontroller's.
    #[test]
    fn all_step_variants_are_bit_identical() {
        let mut noise = Noise::new(12345);
        for cell in [Cell::Lstm, Cell::Gru] {
            for hidden in [5u16, 90, 130] {
                let bytes = random_bundle(cell, 3, hidden, 2, 4, Normalization::None, &mut noise);
                let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                let mut a = State::<130, 2>::default();
                let (mut b, mut c, mut d) = (a.clone(), a.clone(), a.clone());
                for _ in 0..20 {
                    let x = [noise.next() * 4.0, noise.next(), noise.next() * 10.0];
                    enc.push(&mut a, &x).unwrap();
                    step::<130, 2, 64>(enc.bundle(), &mut b, &x);
                    step::<130, 2, 8>(enc.bundle(), &mut c, &x);
                    step::<130, 2, 128>(enc.bundle(), &mut d, &x);
                }
                let bits = |s: &State<130, 2>| -> Vec<u32> { s.h.iter().chain(&s.c).flatten().map(|v| v.to_bits()).collect() };
                assert_eq!(bits(&a), bits(&b), "{cell:?} hidden {hidden}: dispatched vs 64-wide");
                assert_eq!(bits(&a), bits(&c), "{cell:?} hidden {hidden}: dispatched vs 8-wide");
                assert_eq!(bits(&a), bits(&d), "{cell:?} hidden {hidden}: dispatched vs 128-wide");
            }
        }
    }

    /// A state saved halfway through a window and loaded (into another capacity) finishes the
    /// window with the same latent and decision bits as one that never stopped; a cut-short
    /// word stream is refused.
    #[test]
    fn saved_state_resumes_bit_identically() {
        let mut noise = Noise::new(77);
        for cell in [Cell::Lstm, Cell::Gru] {
            let bytes = random_bundle(cell, 2, 40, 2, 4, Normalization::None, &mut noise);
            let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
            let xs: Vec<[f32; 2]> = (0..30).map(|_| [noise.next() * 3.0, noise.next()]).collect();
            let mut whole = State::<64, 2>::default();
            xs.iter().for_each(|x| enc.push(&mut whole, x).unwrap());
            let mut first = State::<64, 2>::default();
            xs[..13].iter().for_each(|x| enc.push(&mut first, x).unwrap());
            let mut words = Vec::new();
            first.save(40, 2, |w| words.push(w)).unwrap();
            assert_eq!(words.len(), State::<64, 2>::saved_words(40, 2));
            let mut it = words.iter().copied();
            let mut resumed = State::<40, 2>::load(40, 2, || it.next()).unwrap();
            xs[13..].iter().for_each(|x| enc.push(&mut resumed, x).unwrap());
            let (za, zb) = (enc.finish::<64, 2, 4>(&whole).unwrap(), enc.finish::<40, 2, 4>(&resumed).unwrap());
            assert_eq!(za.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), zb.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            assert_eq!(whole.summary(), resumed.summary());
            let mut short = words[..words.len() - 1].iter().copied();
            assert!(State::<40, 2>::load(40, 2, || short.next()).is_none());
            assert!(State::<32, 2>::load(40, 2, || None).is_none() && first.save(65, 2, |_| ()).is_none());
        }
    }
}
