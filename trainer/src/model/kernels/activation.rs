//! The LSTM's activations in training: σ on the input, forget and output gates and tanh on the
//! candidate, in one pass over a step's `[rows, 4H]` gate block, and tanh of the cell state.
//!
//! `tanh(x) = 2σ(2x) - 1`, so one uniform loop covers every gate with a per-column scale
//! `k` (1 or 2) and shift (0 or -1): `k·σ(k·x) + shift`. The loop runs over a period of whole
//! rows that is a multiple of 16 values, so it is whole AVX-512 vectors without scalar tails.
//!
//! σ is computed as in [`runtime::math`] (Cephes range reduction `e^t = 2^n e^r`,
//! `n = round(t / ln 2)`, `|r| <= ln2 / 2`, the same degree-6 polynomial for `e^r`, relative
//! error ~2e-7) but with fused multiply-adds, a hardware rounding and `scalef` for `2^n`: about
//! half the instructions of the device version, whose plain multiply-then-add order is kept there
//! so that every device computes the same bits without FMA. The portable path here uses
//! `mul_add` in the same order, so both paths give the same bits (a test compares them). The
//! GRU keeps the device functions.

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` in two parts, so that `t - n·ln2` is exact to ~1e-13 for the `n` that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Taylor coefficients of `e^r` from `r^6` down to `r^2` (those of `r` and 1 are 1).
const POLY: [f32; 5] = [0.001_388_949_4, 0.008_333_452, 0.041_666_668, 0.166_666_67, 0.5];

/// `1 / (1 + e^-x)` in the order [`sigmoid_lanes`] uses (the reference for it).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    // Not `clamp`: `max` turns NaN into -87 as the device functions and `maxps` do.
    #[allow(clippy::manual_clamp)]
    let t = (-x).max(-87.0).min(88.0);
    let n = (t * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, t));
    let mut p = POLY[0];
    for c in &POLY[1..] {
        p = p.mul_add(r, *c);
    }
    p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    // `n` is an integer in [-126, 127] after the clamp, so `2^n` is a normal float.
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    1.0 / (1.0 + e)
}

/// The activations of an LSTM step's gate rows (see the module docs).
pub struct GateActivations {
    /// Per column over one period (whole rows, a multiple of 16 values): 1 (σ) or 2 (tanh).
    scale: Vec<f32>,
    /// 0 (σ) or -1 (tanh).
    shift: Vec<f32>,
}

impl GateActivations {
    /// `sigmoid[g]` says whether gate block `g` (each `h` wide) takes σ (else tanh).
    pub fn new(h: usize, sigmoid: &[bool]) -> Self {
        let width = sigmoid.len() * h;
        let rows = if width == 0 { 1 } else { 16 / gcd(width, 16) };
        let (mut scale, mut shift) = (Vec::with_capacity(rows * width), Vec::with_capacity(rows * width));
        for _ in 0..rows {
            for &sig in sigmoid {
                scale.extend(std::iter::repeat_n(if sig { 1.0 } else { 2.0 }, h));
                shift.extend(std::iter::repeat_n(if sig { 0.0 } else { -1.0 }, h));
            }
        }
        GateActivations { scale, shift }
    }

    /// Activates `a` (whole rows) in place.
    pub fn apply(&self, a: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if runtime::math::has_avx512() && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX-512F and FMA are available (checked at run time); source and
            // destination are the same slice.
            return unsafe { self.apply_avx512(a.as_ptr(), a.as_mut_ptr(), a.len()) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are available (checked at run time).
            return unsafe { self.apply_avx2(a) };
        }
        self.apply_portable(a)
    }

    /// Activates `src` (whole rows) into `dst`: the activation's stores, spread over its
    /// arithmetic, take the misses on a `dst` that is not in cache.
    pub fn apply_into(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "activation: source and destination lengths differ");
        #[cfg(target_arch = "x86_64")]
        if runtime::math::has_avx512() && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX-512F and FMA are available (checked at run time); the lengths match.
            return unsafe { self.apply_avx512(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
        }
        dst.copy_from_slice(src);
        self.apply(dst)
    }

    #[inline(always)]
    fn apply_portable(&self, a: &mut [f32]) {
        for chunk in a.chunks_mut(self.scale.len().max(1)) {
            for ((v, &k), &t) in chunk.iter_mut().zip(&self.scale).zip(&self.shift) {
                *v = sigmoid(*v * k).mul_add(k, t);
            }
        }
    }

    /// The portable loop with hardware FMA and rounding (`mul_add` is a libm call without them).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_avx2(&self, a: &mut [f32]) {
        self.apply_portable(a)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    /// `len` values from `src` activated into `dst` (the same pointer to work in place).
    unsafe fn apply_avx512(&self, src: *const f32, dst: *mut f32, len: usize) {
        // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
        // CPU has the features it is compiled for.
        unsafe {
            use std::arch::x86_64::*;
            let period = self.scale.len().max(1);
            for c0 in (0..len).step_by(period) {
                let n = period.min(len - c0);
                let (u, v, k, t) = (src.add(c0), dst.add(c0), self.scale.as_ptr(), self.shift.as_ptr());
                let mut i = 0;
                // Four independent vectors per iteration: one vector's chain of ~20 dependent
                // operations is too long for the out-of-order window to overlap enough of them.
                while i + 64 <= n {
                    let x: [__m512; 4] =
                        std::array::from_fn(|q| _mm512_mul_ps(_mm512_loadu_ps(u.add(i + 16 * q)), _mm512_loadu_ps(k.add(i + 16 * q))));
                    let y = sigmoid_lanes4(x);
                    for (q, yq) in y.into_iter().enumerate() {
                        let (kv, tv) = (_mm512_loadu_ps(k.add(i + 16 * q)), _mm512_loadu_ps(t.add(i + 16 * q)));
                        _mm512_storeu_ps(v.add(i + 16 * q), _mm512_fmadd_ps(yq, kv, tv));
                    }
                    i += 64;
                }
                while i < n {
                    let m: __mmask16 = if n - i >= 16 { 0xffff } else { ((1u32 << (n - i)) - 1) as __mmask16 };
                    let (kv, tv) = (_mm512_maskz_loadu_ps(m, k.add(i)), _mm512_maskz_loadu_ps(m, t.add(i)));
                    let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, u.add(i)), kv);
                    let y = _mm512_fmadd_ps(sigmoid_lanes(x), kv, tv);
                    _mm512_mask_storeu_ps(v.add(i), m, y);
                    i += 16;
                }
            }
        }
    }
}

/// [`sigmoid`] on 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn sigmoid_lanes(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let sign = _mm512_set1_epi32(i32::MIN);
    let neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign));
    // `maxps` returns its second operand when either is NaN, as `f32::max` returns the non-NaN one.
    let t = _mm512_min_ps(_mm512_max_ps(neg, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(t, _mm512_set1_ps(LOG2E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), t);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(POLY[0]);
    for c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let one = _mm512_set1_ps(1.0);
    p = _mm512_fmadd_ps(_mm512_fmadd_ps(p, r, one), r, one);
    let e = _mm512_scalef_ps(p, n);
    _mm512_div_ps(one, _mm512_add_ps(one, e))
}

/// [`sigmoid_lanes`] on four vectors, step by step across them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn sigmoid_lanes4(x: [std::arch::x86_64::__m512; 4]) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let sign = _mm512_set1_epi32(i32::MIN);
    let each = |f: &dyn Fn(__m512) -> __m512, a: [__m512; 4]| [f(a[0]), f(a[1]), f(a[2]), f(a[3])];
    let t = each(
        &|x| {
            _mm512_min_ps(
                _mm512_max_ps(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign)), _mm512_set1_ps(-87.0)),
                _mm512_set1_ps(88.0),
            )
        },
        x,
    );
    let n =
        each(&|t| _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(t, _mm512_set1_ps(LOG2E))), t);
    let r: [__m512; 4] =
        std::array::from_fn(|q| _mm512_fnmadd_ps(n[q], _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n[q], _mm512_set1_ps(LN2_HI), t[q])));
    let mut p = [_mm512_set1_ps(POLY[0]); 4];
    for c in &POLY[1..] {
        p = std::array::from_fn(|q| _mm512_fmadd_ps(p[q], r[q], _mm512_set1_ps(*c)));
    }
    let one = _mm512_set1_ps(1.0);
    std::array::from_fn(|q| {
        let p = _mm512_fmadd_ps(_mm512_fmadd_ps(p[q], r[q], one), r[q], one);
        _mm512_div_ps(one, _mm512_add_ps(one, _mm512_scalef_ps(p, n[q])))
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs: a dense sweep over [-100, 100], rounding boundaries of `n`, the clamp edges and
    /// special values.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (-2_000_000..=2_000_000).map(|i| i as f32 * 5e-5).collect();
        for n in -130..130 {
            let edge = (n as f32 + 0.5) / LOG2E;
            v.extend([edge, f32::from_bits(edge.to_bits() + 1), f32::from_bits(edge.to_bits().wrapping_sub(1))]);
        }
        v.extend([
            0.0,
            -0.0,
            87.0,
            -87.0,
            88.0,
            -88.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -1e-40,
            f32::MIN_POSITIVE,
        ]);
        v
    }

    /// Every path gives the portable path's bits for σ and tanh gates, at every length of a
    /// ragged last chunk; σ and tanh are within 3e-7 of f64.
    #[test]
    fn paths_agree_bit_for_bit_and_match_f64() {
        let x = inputs();
        for h in [1, 3, 90] {
            let act = GateActivations::new(h, &[true, true, false, true]);
            let width = 4 * h;
            // Whole rows; the last chunk is shorter than the period where the row count is not
            // a multiple of the period's.
            let rows = x.len() / width;
            let mut fast = x[..rows * width].to_vec();
            act.apply(&mut fast);
            let mut slow = x[..rows * width].to_vec();
            act.apply_portable(&mut slow);
            for (i, ((f, s), &xi)) in fast.iter().zip(&slow).zip(&x).enumerate() {
                assert_eq!(f.to_bits(), s.to_bits(), "h {h}: value {i} (x = {xi}) differs between paths: {f} vs {s}");
                if !xi.is_finite() || h != 90 {
                    continue;
                }
                let want = if (i % width) / h == 2 { (xi as f64).tanh() } else { 1.0 / (1.0 + (-(xi as f64)).exp()) };
                assert!((*f as f64 - want).abs() <= 3e-7, "x = {xi}: {f}, f64 {want}");
            }
        }
        // NaN is clamped like -inf's negation (to e^-87), as in the device functions.
        for (x, want) in [(f32::NAN, 1.0), (f32::INFINITY, 1.0), (f32::NEG_INFINITY, 0.0)] {
            let got = sigmoid(x);
            assert!((got - want).abs() <= 1e-7, "sigmoid({x}) = {got}, want ~{want}");
        }
    }
}
