//! Vectorisable `sigmoid` and `tanh` over slices for the fused kernels.
//!
//! `exp` uses the Cephes range reduction `e^x = 2^n · e^r`, `n = round(x / ln 2)`,
//! `|r| <= ln2 / 2`, with a degree-6 polynomial for `e^r` (relative error ~2e-7), written
//! branch-free so the compiler emits SIMD; on x86-64 the loops are compiled a second time with
//! AVX2+FMA and picked at run time.

#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.max(-87.0).min(88.0);
    // Round to nearest with the 1.5·2^23 trick: after adding `magic` the integer sits in the low
    // mantissa bits, so both `n` and its integer value come out of plain adds and bit operations
    // (a float-to-int `as` cast is saturating and would stop the loop from vectorising).
    let magic = 12_582_912.0f32;
    let shifted = x * std::f32::consts::LOG2_E + magic;
    let n = shifted - magic;
    let ni = shifted.to_bits().wrapping_sub(magic.to_bits()) as i32;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_452 + r * 0.001_388_949_4)))));
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

#[inline(always)]
fn sigmoid_loop(x: &mut [f32]) {
    for v in x {
        *v = 1.0 / (1.0 + exp_approx(-*v));
    }
}

#[inline(always)]
fn tanh_loop(x: &mut [f32]) {
    // tanh(x) = 2σ(2x) - 1; absolute error stays ~1e-7, which is what the gates need.
    for v in x {
        *v = 2.0 / (1.0 + exp_approx(-2.0 * *v)) - 1.0;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(x: &mut [f32]) {
    sigmoid_loop(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh_avx2(x: &mut [f32]) {
    tanh_loop(x)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `x ← 1 / (1 + e^-x)` element-wise.
pub fn sigmoid_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { sigmoid_avx2(x) };
    }
    sigmoid_loop(x)
}

/// `x ← tanh(x)` element-wise.
pub fn tanh_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { tanh_avx2(x) };
    }
    tanh_loop(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_std_over_the_useful_range() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).chain([-100.0, 100.0, -1e30, 1e30]).collect();
        let mut s = xs.clone();
        let mut t = xs.clone();
        sigmoid_inplace(&mut s);
        tanh_inplace(&mut t);
        for ((x, s), t) in xs.iter().zip(&s).zip(&t) {
            let rs = 1.0 / (1.0 + (-(*x as f64)).exp());
            assert!((*s as f64 - rs).abs() < 3e-7, "sigmoid({x}) = {s}, want {rs}");
            assert!((*t as f64 - (*x as f64).tanh()).abs() < 3e-7, "tanh({x}) = {t}");
        }
    }
}
