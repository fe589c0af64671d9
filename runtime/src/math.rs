//! Vectorisable kernels shared by the device encoder and the trainer's fused training kernels:
//! `exp`, `sigmoid`, `tanh` and the dot product, in f32, without `libm`.
//!
//! `exp` uses the Cephes range reduction `e^x = 2^n · e^r`, `n = round(x / ln 2)`,
//! `|r| <= ln2 / 2`, with a degree-6 polynomial for `e^r` (relative error ~2e-7), written
//! branch-free so the compiler emits SIMD.

/// `e^x` for f32 (inputs clamped to [-87, 88], so the result is always finite and normal).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Not `clamp`: max/min send NaN to a bound (a finite result), clamp would keep the NaN.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    // Round to nearest with the 1.5·2^23 trick: after adding `magic` the integer sits in the low
    // mantissa bits, so both `n` and its integer value come out of plain adds and bit operations
    // (a float-to-int `as` cast is saturating and would stop loops from vectorising).
    let magic = 12_582_912.0f32;
    let shifted = x * core::f32::consts::LOG2_E + magic;
    let n = shifted - magic;
    let ni = shifted.to_bits().wrapping_sub(magic.to_bits()) as i32;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_452 + r * 0.001_388_949_4)))));
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x) = 2σ(2x) - 1`; absolute error ~1e-7, which is what gate activations need.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// Dot product over the common length, with 8 independent accumulators so the loop vectorises
/// (a single running sum is a dependency chain the compiler may not reorder).
/// `a·b + c` rounded once. With `std` it is the hardware instruction where the caller's target
/// features have one (only the host's two-core path asks for it); without, libm's.
#[inline(always)]
pub(crate) fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    return a.mul_add(b, c);
    #[cfg(not(feature = "std"))]
    return libm::fmaf(a, b, c);
}

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn sigmoid_loop(x: &mut [f32]) {
    for v in x {
        *v = sigmoid(*v);
    }
}

#[inline(always)]
fn tanh_loop(x: &mut [f32]) {
    for v in x {
        *v = tanh(*v);
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86 {
    #[target_feature(enable = "avx2")]
    pub unsafe fn sigmoid(x: &mut [f32]) {
        super::sigmoid_loop(x)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn tanh(x: &mut [f32]) {
        super::tanh_loop(x)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn sigmoid512(x: &mut [f32]) {
        super::sigmoid_loop(x)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn tanh512(x: &mut [f32]) {
        super::tanh_loop(x)
    }

    /// AVX-512F is available (checked once).
    pub fn has_avx512() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }

    /// AVX2 is available (checked once).
    pub fn has_avx2() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2"))
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) use x86::has_avx2;
/// Whether this host has AVX-512F (checked once; std, x86-64 only).
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub use x86::has_avx512;

/// `x ← σ(x)` element-wise (AVX-512 or AVX2 on x86-64 hosts that have them; the same IEEE
/// operations in the same order at every width, so the same results).
pub fn sigmoid_inplace(x: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if x86::has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked at run time).
        return unsafe { x86::sigmoid512(x) };
    }
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if x86::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { x86::sigmoid(x) };
    }
    sigmoid_loop(x)
}

/// `x ← tanh(x)` element-wise (AVX-512 or AVX2 on x86-64 hosts that have them).
pub fn tanh_inplace(x: &mut [f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if x86::has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked at run time).
        return unsafe { x86::tanh512(x) };
    }
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if x86::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { x86::tanh(x) };
    }
    tanh_loop(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn activations_match_f64_reference() {
        let mut xs = [0f32; 8005];
        for (i, x) in xs.iter_mut().enumerate().take(8001) {
            *x = (i as f32 - 4000.0) * 0.005;
        }
        xs[8001..].copy_from_slice(&[-100.0, 100.0, -1e30, 1e30]);
        let (mut s, mut t) = (xs, xs);
        sigmoid_inplace(&mut s);
        tanh_inplace(&mut t);
        for i in 0..xs.len() {
            let x = xs[i] as f64;
            let rs = 1.0 / (1.0 + (-x).exp());
            assert!((s[i] as f64 - rs).abs() < 3e-7, "sigmoid({x}) = {}, want {rs}", s[i]);
            assert!((t[i] as f64 - x.tanh()).abs() < 3e-7, "tanh({x}) = {}", t[i]);
            assert_eq!(sigmoid(xs[i]).to_bits(), s[i].to_bits(), "sigmoid({x}): SIMD and scalar differ");
            assert_eq!(tanh(xs[i]).to_bits(), t[i].to_bits(), "tanh({x}): SIMD and scalar differ");
        }
    }

    /// The SIMD paths (vector loops and their shorter tails) give the scalar bits for every
    /// length and for special values, which the device builds compute with the scalar code.
    #[test]
    fn activations_simd_match_scalar_bits_for_every_length() {
        let specials = [0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 87.5, -87.5, 88.7, -103.0, 44.0, -44.0];
        let mut state = 0x9e37_79b9u32;
        for len in 0..=70 {
            let xs: Vec<f32> = (0..len)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    if i % 7 == 3 {
                        specials[(state as usize) % specials.len()]
                    } else {
                        (state as f32 / u32::MAX as f32 - 0.5) * 60.0
                    }
                })
                .collect();
            let (mut s, mut t) = (xs.clone(), xs.clone());
            sigmoid_inplace(&mut s);
            tanh_inplace(&mut t);
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(sigmoid(x).to_bits(), s[i].to_bits(), "sigmoid({x}) at {i} of {len}");
                assert_eq!(tanh(x).to_bits(), t[i].to_bits(), "tanh({x}) at {i} of {len}");
            }
        }
        // A dense sweep: one-ulp differences (a fused multiply-add anywhere) are rare per value.
        let xs: Vec<f32> = (0..2_000_003).map(|i| (i as f32 - 1_000_000.0) * 9e-5).collect();
        let (mut s, mut t) = (xs.clone(), xs.clone());
        sigmoid_inplace(&mut s);
        tanh_inplace(&mut t);
        let bad =
            xs.iter().enumerate().filter(|&(i, &x)| sigmoid(x).to_bits() != s[i].to_bits() || tanh(x).to_bits() != t[i].to_bits()).count();
        assert_eq!(bad, 0, "{bad} of {} values differ between SIMD and scalar", xs.len());
    }

    #[test]
    fn dot_handles_remainders() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b: [f32; 19] = core::array::from_fn(|i| 1.0 - 0.5 * i as f32);
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-3);
        assert_eq!(dot(&a[..3], &b), 0.0 * 1.0 + 1.0 * 0.5 + 2.0 * 0.0);
    }
}
