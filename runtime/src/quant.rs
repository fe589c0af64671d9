//! int8 weights: per-channel symmetric quantisation of the encoder's weight matrices and the
//! matrix-vector product over them (`no_std`, no allocation).
//!
//! A matrix `W` with `kd` inputs and `n` outputs (the bundle's transposed `[kd, n]`) is stored as
//! `q[k][j] = round(W[k][j] / s_j)` in `-127..=127` with one scale per output (channel)
//! `s_j = max_k |W[k][j]| / 127` (0 for an all-zero channel). The input vector `v` of a product
//! is quantised on the fly to 16 bits with one scale for the whole vector,
//! `a = max_k |v_k| / 32767`, `v'_k = round(v_k / a)`, so
//!
//! ```text
//! out_j = init_j + (s_j · a) · Σ_k q[k][j] · v'_k
//! ```
//!
//! with the sum in i32: `|Σ| <= kd · 127 · 32767 < 2^31` for `kd <= MAX_INPUTS`. The sum is
//! exact, so every target (host, batch, Cortex-M) gets the same bits; the float arithmetic
//! around it is the same sequence of single roundings everywhere. Activations stay f32: the
//! hidden state is rescaled each step, which keeps the relative error of a small `h` as low as
//! a large one's (a fixed Q15 `h` would not).
//!
//! Layout of a quantised matrix, made for a Cortex-M4's `SXTB16`/`SMLAD` (two 16-bit products
//! per instruction): inputs go in pairs `p` (`2p, 2p + 1`) and outputs in pairs `o`
//! (`2o, 2o + 1`), and word `(p, o)` (4 bytes, `p`-major) is
//! `[q[2p][2o], q[2p][2o+1], q[2p+1][2o], q[2p+1][2o+1]]`: its even bytes are output `2o`'s two
//! weights, its odd bytes output `2o + 1`'s, each pair against the input pair
//! `(v'_{2p}, v'_{2p+1})`. An odd `kd` or `n` is padded with zero weights.

/// Largest input count of a quantised matrix: keeps the i32 sum from overflowing.
pub const MAX_INPUTS: usize = 512;

/// Outputs whose i32 sums stay in registers per pass: 64 (8 AVX2 registers) on 64-bit hosts, 4
/// on 32-bit Arm, whose 13 general registers must also hold the input pair, the weight word,
/// its two halves and the pointers (8 sums spilled to the stack: 2.8 instructions per
/// multiply-add on the Cortex-M4 instead of 1.4).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const BLOCK: usize = 64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) const BLOCK: usize = 4;

/// Bytes of a quantised `kd x n` matrix: `4 · ceil(kd/2) · ceil(n/2)`.
pub const fn matrix_bytes(kd: usize, n: usize) -> usize {
    4 * kd.div_ceil(2) * n.div_ceil(2)
}

/// A quantised matrix as the bundle stores it: its bytes and one scale per output.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    /// Weights in the pair layout of the module docs, [`matrix_bytes`] long.
    pub q: &'a [i8],
    /// Per-output scale `s_j`, `n` of them.
    pub scales: &'a [f32],
    /// Inputs `kd`.
    pub inputs: usize,
}

/// Quantises `v` into `out` (same length) and returns its scale `a` (0 for a vector of zeros or
/// subnormals, which then contributes nothing).
#[inline(always)]
pub(crate) fn quantize_vector(v: &[f32], out: &mut [i16]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max < f32::MIN_POSITIVE {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let inv = 32767.0 / max;
    for (o, x) in out.iter_mut().zip(v) {
        let y = x * inv;
        // Round half away from zero; `as` saturates, so rounding up past 32767 cannot wrap.
        *o = (y + if y >= 0.0 { 0.5 } else { -0.5 }) as i16;
    }
    max / 32767.0
}

/// `out[j] = init[j] + (m.scales[j] · a) · Σ_k q[k][j] · v'_k` for one vector `v`
/// (`m.inputs` values) and `out.len()` outputs, register blocks of `B` (even) outputs. Out of
/// line (it would cost the f32 step registers), and on x86-64 hosts compiled for AVX2 where
/// the CPU has it (exact integer sums: the same bits at any width).
#[inline(never)]
pub(crate) fn matvec<const B: usize>(out: &mut [f32], init: &[f32], m: &QMatrix<'_>, v: &[f32]) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if crate::math::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { matvec_avx2::<B>(out, init, m, v) };
    }
    matvec_body::<B>(out, init, m, v)
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn matvec_avx2<const B: usize>(out: &mut [f32], init: &[f32], m: &QMatrix<'_>, v: &[f32]) {
    matvec_body::<B>(out, init, m, v)
}

#[inline(always)]
fn matvec_body<const B: usize>(out: &mut [f32], init: &[f32], m: &QMatrix<'_>, v: &[f32]) {
    let kd = m.inputs;
    let mut vq = [0i16; MAX_INPUTS + 1];
    let a = quantize_vector(&v[..kd], &mut vq[..kd]);
    let n = out.len();
    let n2 = n.div_ceil(2);
    let pairs = kd.div_ceil(2);
    let q = &m.q[..4 * pairs * n2];
    let vq = &vq[..2 * pairs];
    let mut s = 0;
    while s + B <= n {
        let acc = block::<B>(q, n2, s / 2, vq);
        for i in 0..B {
            out[s + i] = init[s + i] + acc[i] as f32 * (m.scales[s + i] * a);
        }
        s += B;
    }
    while s < n {
        let acc = block::<2>(q, n2, s / 2, vq);
        for i in 0..2.min(n - s) {
            out[s + i] = init[s + i] + acc[i] as f32 * (m.scales[s + i] * a);
        }
        s += 2;
    }
}

/// The exact i32 sums of outputs `2·o0 .. 2·o0 + B` over every input pair.
#[inline(always)]
#[cfg(not(arm_dsp))]
fn block<const B: usize>(q: &[i8], n2: usize, o0: usize, vq: &[i16]) -> [i32; B] {
    let mut acc = [0i32; B];
    // Row `p` of words starts `4·n2` bytes after row `p - 1`; iterating rows (not indexing
    // `p·n2 + o0`) keeps the bounds checks out of the loop.
    for (row, v) in q[4 * o0..].chunks(4 * n2).zip(vq.chunks_exact(2)) {
        let (v0, v1) = (v[0] as i32, v[1] as i32);
        for (a, w) in acc.chunks_exact_mut(2).zip(row[..2 * B].chunks_exact(4)) {
            a[0] += w[0] as i32 * v0 + w[2] as i32 * v1;
            a[1] += w[1] as i32 * v0 + w[3] as i32 * v1;
        }
    }
    acc
}

/// The same sums on an Arm core with the DSP instructions: per input pair, one word load of
/// the pair, then per weight word one load, `SXTB16` twice (the even bytes, the odd bytes: the
/// two outputs' weight pairs as 16-bit halves) and `SMLAD` twice (both products of a pair added
/// in one instruction). Exact, so the same bits as the portable loop; raw pointers because the
/// slice version's per-row bounds checks and length clamps cost more than the arithmetic
/// (3 instructions per multiply-add instead of 1.9 on the Cortex-M4).
#[inline(always)]
#[cfg(arm_dsp)]
fn block<const B: usize>(q: &[i8], n2: usize, o0: usize, vq: &[i16]) -> [i32; B] {
    let pairs = vq.len() / 2;
    let mut acc = [0i32; B];
    if pairs == 0 {
        return acc;
    }
    // Once for the whole loop: the last row's words `o0 .. o0 + B/2` lie inside `q`.
    assert!(4 * ((pairs - 1) * n2 + o0) + 2 * B <= q.len(), "int8 block outside its matrix");
    let (mut w, mut v) = (q[4 * o0..].as_ptr(), vq.as_ptr());
    for _ in 0..pairs {
        // SAFETY: `v` stays within `vq` (`pairs` pairs) and `w`'s `B / 2` words within `q`
        // (asserted above); unaligned word loads are allowed on every `arm_dsp` target.
        let vp = unsafe { v.cast::<u32>().read_unaligned() };
        for i in 0..B / 2 {
            let word = unsafe { w.cast::<u32>().add(i).read_unaligned() };
            let (even, odd): (u32, u32);
            // SAFETY: register-only DSP instructions (no memory, no flags).
            unsafe {
                core::arch::asm!(
                    "sxtb16 {e}, {w}",
                    "sxtb16 {o}, {w}, ror #8",
                    "smlad {a0}, {e}, {v}, {a0}",
                    "smlad {a1}, {o}, {v}, {a1}",
                    w = in(reg) word, v = in(reg) vp, e = out(reg) even, o = out(reg) odd,
                    a0 = inout(reg) acc[2 * i], a1 = inout(reg) acc[2 * i + 1],
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            let _ = (even, odd);
        }
        // SAFETY: one row and one pair on; the last advance points at most one row past the
        // end, which `wrapping_add` allows without dereferencing.
        w = w.wrapping_add(4 * n2);
        v = v.wrapping_add(2);
    }
    acc
}

/// Quantises a `kd x n` row-major matrix `w` (row = input) into the pair layout: returns the
/// bytes ([`matrix_bytes`]) and the `n` per-output scales.
#[cfg(feature = "std")]
pub fn quantize_matrix(w: &[f32], kd: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = (0..n).map(|j| (0..kd).fold(0f32, |m, k| m.max(w[k * n + j].abs())) / 127.0).collect();
    let q = |k: usize, j: usize| -> i8 {
        if k >= kd || j >= n || scales[j] == 0.0 {
            return 0;
        }
        (w[k * n + j] / scales[j]).round().clamp(-127.0, 127.0) as i8
    };
    let mut out = Vec::with_capacity(matrix_bytes(kd, n));
    for p in 0..kd.div_ceil(2) {
        for o in 0..n.div_ceil(2) {
            out.extend([q(2 * p, 2 * o), q(2 * p, 2 * o + 1), q(2 * p + 1, 2 * o), q(2 * p + 1, 2 * o + 1)]);
        }
    }
    (out, scales)
}

/// Quantises a `rows x n` row-major table with one scale per column, row-major bytes (the
/// int8 prototype table): returns the bytes and the `n` scales.
#[cfg(feature = "std")]
pub fn quantize_rows(t: &[f32], rows: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = (0..n).map(|j| (0..rows).fold(0f32, |m, r| m.max(t[r * n + j].abs())) / 127.0).collect();
    let q = t
        .iter()
        .enumerate()
        .map(|(i, &v)| if scales[i % n] == 0.0 { 0 } else { (v / scales[i % n]).round().clamp(-127.0, 127.0) as i8 })
        .collect();
    (q, scales)
}

/// The `kd x n` row-major matrix a quantised one stands for: `q[k][j] · s_j`.
#[cfg(feature = "std")]
pub fn dequantize_matrix(m: &QMatrix<'_>, n: usize) -> Vec<f32> {
    let n2 = n.div_ceil(2);
    let mut w = vec![0f32; m.inputs * n];
    for k in 0..m.inputs {
        for j in 0..n {
            let byte = 4 * ((k / 2) * n2 + j / 2) + 2 * (k % 2) + j % 2;
            w[k * n + j] = m.q[byte] as f32 * m.scales[j];
        }
    }
    w
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::testutil::Noise;

    /// The quantised product is within the rounding bound of the float one, every block width
    /// gives the same bits, and quantising the dequantised matrix gives the same bytes.
    #[test]
    fn product_tracks_float_and_is_block_independent() {
        let mut noise = Noise::new(5);
        for (kd, n) in [(1usize, 3usize), (7, 5), (90, 270), (91, 20)] {
            let w: Vec<f32> = (0..kd * n).map(|_| noise.next()).collect();
            let v: Vec<f32> = (0..kd).map(|_| noise.next() * 3.0).collect();
            let init: Vec<f32> = (0..n).map(|_| noise.next()).collect();
            let (q, scales) = quantize_matrix(&w, kd, n);
            assert_eq!(q.len(), matrix_bytes(kd, n));
            let m = QMatrix { q: &q, scales: &scales, inputs: kd };
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            matvec::<8>(&mut a, &init, &m, &v);
            matvec::<64>(&mut b, &init, &m, &v);
            assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            let vmax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            for j in 0..n {
                let exact: f32 = init[j] + (0..kd).map(|k| w[k * n + j] * v[k]).sum::<f32>();
                // Each weight is off by at most s_j / 2, each input by a / 2.
                let bound = kd as f32 * (scales[j] / 2.0 * vmax + 127.0 * scales[j] * vmax / 32767.0) + 1e-5;
                assert!((a[j] - exact).abs() <= bound, "{kd}x{n} output {j}: {} vs {exact} (bound {bound})", a[j]);
            }
            let (q2, s2) = quantize_matrix(&dequantize_matrix(&m, n), kd, n);
            assert_eq!(q2, q);
            assert!(s2.iter().zip(&scales).all(|(x, y)| (x - y).abs() <= y * 1e-6));
        }
    }

    /// A zero vector contributes nothing (scale 0), and a zero channel has scale 0.
    #[test]
    fn zeros_stay_zero() {
        let w = vec![0.0, 1.0, 0.0, -2.0];
        let (q, s) = quantize_matrix(&w, 2, 2);
        assert_eq!(s[0], 0.0);
        let m = QMatrix { q: &q, scales: &s, inputs: 2 };
        let mut out = [0f32; 2];
        matvec::<2>(&mut out, &[1.0, 2.0], &m, &[0.0, 0.0]);
        assert_eq!(out, [1.0, 2.0]);
        matvec::<2>(&mut out, &[0.0, 0.0], &m, &[1.0, 1.0]);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - -1.0).abs() < 0.01, "{out:?}");
    }
}
