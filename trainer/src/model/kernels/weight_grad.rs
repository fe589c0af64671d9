//! Weight gradients of the fused recurrent layers, `dW = Σ_t dA_tᵀ h_{t-1}`, the largest products
//! of a training step after the per-step ones. Two kernels:
//!
//! - [`accumulate`] (the LSTM): adds a few steps' rows at a time to running sums while the
//!   backward walk still has them in cache; see its docs.
//! - [`avx512`] (the GRU): one `[G·H, T·B] x [T·B, H]` product after the walk, in the gemm crate's
//!   summation order, which keeps the GRU's results (and the shipped model) those of the gemm
//!   call it replaced (gemm picks AVX2 kernels without its `x86-v4` feature).
//!
//! Summation order of [`avx512`]: the gemm crate cuts the inner
//! dimension `T·B` into `kc`-long blocks (`kc` from `gemm_common::cache::kernel_params`, which
//! depends on this CPU's caches); within a block every output is `s = fma(a, b, s)` from `s = 0`
//! in `t·b` order; the first block's sum is stored and each later block's sum `s` becomes
//! `fma(1, s, dW) = dW + s`. [`avx512`] does exactly that with AVX-512 register tiles (4 gate
//! rows x 96 hidden columns in 24 registers: per row of `dA` four broadcasts and six loads of the
//! contiguous `h` row feed 24 multiply-adds), so it returns gemm's bits at about three times the
//! speed. Loop order is for the caches, not the sums: a block of rows (~1.6 MB of `dA` and `h`)
//! is finished while it sits in L2, and within it each 64-row sub-block of `h` runs under every
//! gate-row tile while it sits in L1, each tile's sums waiting in a buffer in between (a stored
//! and reloaded sum is not rounded). A test compares the two bit for bit on the training shapes.
//! Shapes gemm sends down other paths (tiny products) are left to gemm.

#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// gemm's register tile for f32 with AVX2+FMA (`MR = 2 x 8` rows, `NR = 6` columns), which its
/// block size depends on.
const GEMM_MR: usize = 16;
const GEMM_NR: usize = 6;

/// The inner-dimension block gemm uses for `C[m][n] = A[m][k]·B[k][n]` stored row-major; gemm
/// transposes a row-major product first, so its own `(m, n)` are `(n, m)`.
fn gemm_kc(m: usize, n: usize, k: usize) -> usize {
    let (gm, gn) = (n, m);
    if gm <= 64 && gn <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(gm, gn, k, GEMM_MR, GEMM_NR, std::mem::size_of::<f32>()).kc
    }
}

/// Whether gemm computes `[m, k] x [k, n]` through its blocked microkernel path (the one
/// [`avx512`] reproduces) rather than its small-product special cases.
pub fn avx512_applies(m: usize, n: usize, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        runtime::math::has_avx512() && std::is_x86_feature_detected!("fma") && k > 2 && m > 1 && n > 1 && m * n > 16 * 16
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k);
        false
    }
}

/// Rows `0..k` of `[k, n]` stored as two row-major pieces: `head` holds the first
/// `head.len() / n` rows, `tail` the rest (so `[h0; h_1 .. h_{T-1}]` needs no copy).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    /// The first rows.
    pub head: &'a [f32],
    /// The rows after them.
    pub tail: &'a [f32],
}

/// Gate rows of `dW` per register tile (each broadcast from `da`).
const GR: usize = 4;
/// Hidden columns per register tile: six 16-lane vectors of an `hp` row, 24 accumulators.
const NV: usize = 6;
/// Hidden columns per pass over a block (`NV` vectors).
const JC: usize = NV * 16;
/// Rows of `da`/`hp` per sub-block: small enough that the sub-block's `hp` rows stay in L1 while
/// every gate-row tile runs over them.
const SB: usize = 64;

/// `dW[g][j] = Σ_r da[r][g] · hp[r][j]` (`da` `[k, m]`, `hp` `[k, n]`, `dW` `[m, n]`, all
/// row-major), in gemm's order (module docs). Only where [`avx512_applies`].
#[cfg(target_arch = "x86_64")]
pub fn avx512(da: &[f32], hp: Rows<'_>, m: usize, n: usize, k: usize, threads: usize) -> Vec<f32> {
    assert!(avx512_applies(m, n, k), "weight gradient: AVX-512 path used where it does not apply");
    assert!(
        da.len() >= k * m && hp.head.len().is_multiple_of(n) && hp.head.len() + hp.tail.len() >= k * n,
        "weight gradient: operands too small"
    );
    let kc = gemm_kc(m, n, k);
    let mut dw = vec![0f32; m * n];
    // Each thread takes a contiguous run of gate rows (whole register tiles).
    let per = m.div_ceil(threads.max(1)).div_ceil(GR) * GR;
    let task = |(ti, rows): (usize, &mut [f32])| {
        // SAFETY: AVX-512F and FMA are available (asserted above); `rows` holds gate rows
        // `ti·per ..` of `dW`, and the kernel reads `da`/`hp` only inside the bounds asserted above.
        unsafe { rows_task(da, hp, m, n, k, kc, ti * per, rows) }
    };
    if threads > 1 {
        dw.par_chunks_mut(per * n).enumerate().for_each(task);
    } else {
        task((0, &mut dw));
    }
    dw
}

/// Gate rows `g0 .. g0 + rows.len() / n` of `dW`, block by block (a block of `da` and `hp`,
/// ~1.6 MB at the training shapes, stays in L2 meanwhile); within a block 96 columns at a time,
/// and within those one 64-row sub-block at a time for every 4-row tile, whose sums wait in
/// `acc` in between (a stored and reloaded sum is not rounded, so the bits are gemm's).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_task(da: &[f32], hp: Rows<'_>, m: usize, n: usize, k: usize, kc: usize, g0: usize, rows: &mut [f32]) {
    // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
    // CPU has the features it is compiled for.
    unsafe {
        use std::arch::x86_64::{__mmask16, _mm_prefetch, _MM_HINT_T1};
        let gn = rows.len() / n;
        // Cache lines one row of this thread's `da` columns can touch.
        let row_lines = gn.div_ceil(16) + 1;
        let mut acc = vec![0f32; gn * JC];
        let split = hp.head.len() / n;
        let mut k0 = 0;
        while k0 < k {
            let kb = kc.min(k - k0);
            for j0 in (0..n).step_by(JC) {
                let jw = JC.min(n - j0);
                let nv = jw.div_ceil(16);
                let tail = jw - (nv - 1) * 16;
                let last: __mmask16 = if tail == 16 { 0xffff } else { ((1u32 << tail) - 1) as __mmask16 };
                acc.iter_mut().for_each(|v| *v = 0.0);
                let mut s0 = 0;
                while s0 < kb {
                    let r0 = k0 + s0;
                    // A sub-block never straddles the two pieces of `hp` (where it ends does not
                    // change the sums).
                    let (sb, b) = if r0 < split {
                        (SB.min(kb - s0).min(split - r0), hp.head.as_ptr().add(r0 * n + j0))
                    } else {
                        (SB.min(kb - s0), hp.tail.as_ptr().add((r0 - split) * n + j0))
                    };
                    // The next sub-block's `da` rows are one short segment per 1,440-byte row, a
                    // pattern the hardware prefetchers do not follow: request them into L2 a few
                    // lines per tile while this sub-block runs.
                    let next = r0 + sb;
                    let pf_rows = SB.min(k.saturating_sub(next));
                    let pf_total = pf_rows * row_lines;
                    let pf_per_tile = pf_total.div_ceil(gn.div_ceil(GR));
                    let mut pf = 0;
                    for gt in (0..gn).step_by(GR) {
                        for _ in 0..pf_per_tile.min(pf_total - pf) {
                            let at = (next + pf / row_lines) * m + g0 + (pf % row_lines) * 16;
                            _mm_prefetch::<_MM_HINT_T1>(da.as_ptr().wrapping_add(at) as *const i8);
                            pf += 1;
                        }
                        let a = da.as_ptr().add(r0 * m + g0 + gt);
                        let out = acc.as_mut_ptr().add(gt * JC);
                        macro_rules! shapes {
                        ($($g:literal: $($v:literal)*;)*) => {
                            match (GR.min(gn - gt), nv) {
                                $($(($g, $v) => step_tile::<$g, $v>(a, (0, m), b, (0, n), 1, sb, last, out, JC),)*)*
                                (g, v) => unreachable!("tile {g} x {v} outside {GR} x {NV}"),
                            }
                        };
                    }
                        shapes!(1: 1 2 3 4 5 6; 2: 1 2 3 4 5 6; 3: 1 2 3 4 5 6; 4: 1 2 3 4 5 6;);
                    }
                    s0 += sb;
                }
                for g in 0..gn {
                    let (src, dst) = (&acc[g * JC..g * JC + jw], &mut rows[g * n + j0..g * n + j0 + jw]);
                    for (d, &s) in dst.iter_mut().zip(src) {
                        // gemm: the first block's sum is stored (`1 · s`), later ones `fma(1, s, d)`.
                        *d = if k0 == 0 { s } else { s + *d };
                    }
                }
            }
            k0 += kb;
        }
    }
}

/// Deterministic test values in [-0.5, 0.5) (xorshift64).
#[cfg(test)]
fn test_noise(mut state: u64) -> impl FnMut() -> f32 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// gemm's result for the same product, as the trainer called it before this kernel.
    fn gemm_ref(da: &[f32], hp: &[f32], m: usize, n: usize, k: usize, par: gemm::Parallelism) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        // SAFETY: the strides address `da` as `[k, m]` transposed and `hp` as `[k, n]`, both in bounds.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                da.as_ptr(),
                m as isize,
                1,
                hp.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        c
    }

    /// The LSTM and GRU training shapes (4·90 and 3·90 gate rows, 140 steps x batch 32), a
    /// short sequence, ragged tiles, and gemm's small-matrix block rule: bit-identical to gemm,
    /// single- and multi-threaded.
    #[test]
    fn matches_gemm_bit_for_bit() {
        if !avx512_applies(360, 90, 4480) {
            eprintln!("no AVX-512 here: gemm runs itself, nothing to compare");
            return;
        }
        let mut next = test_noise(0x2545_f491_4f6c_dd1d);
        for (m, n, k) in [(360, 90, 4480), (270, 90, 4480), (360, 90, 640), (64, 16, 700), (45, 17, 1500), (33, 13, 3)] {
            let da: Vec<f32> = (0..k * m).map(|_| next() * 0.01).collect();
            let hp: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let want = gemm_ref(&da, &hp, m, n, k, gemm::Parallelism::None);
            for threads in [1, 2] {
                // Split as the trainer calls it (h0, then the outputs) and in one piece.
                for head in [k.min(32), k.min(100), 0] {
                    let rows = Rows { head: &hp[..head * n], tail: &hp[head * n..] };
                    let got = avx512(&da, rows, m, n, k, threads);
                    let diff = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    assert_eq!(
                        diff,
                        0,
                        "{m}x{n}x{k}, {threads} thread(s), head {head}: {diff} of {} outputs differ from gemm (kc {})",
                        m * n,
                        gemm_kc(m, n, k)
                    );
                }
            }
            let par = gemm_ref(&da, &hp, m, n, k, gemm::Parallelism::Rayon(2));
            assert!(par.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "gemm itself differs with 2 threads at {m}x{n}x{k}");
        }
    }
}

/// Rows of a product's operand taken step by step: `steps` steps of `rows` rows each, row `r` of
/// step `st` at `data[st * step + r * width ..][..width]`.
#[derive(Clone, Copy)]
pub struct StepRows<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Distance between the first values of consecutive steps.
    pub step: usize,
    /// Values per row (and distance between consecutive rows of a step).
    pub width: usize,
}

impl StepRows<'_> {
    fn check(&self, steps: usize, rows: usize, what: &str) {
        let need = if steps == 0 || rows == 0 { 0 } else { (steps - 1) * self.step + rows * self.width };
        assert!(self.data.len() >= need, "weight gradient: {what} holds {} values, needs {need}", self.data.len());
    }
}

/// `dw[g][j] += Σ_(st, r) da[st][r][g] · x[st][r][j]` for `g < da.width`, `j < x.width` (`dw`
/// row-major `[da.width, x.width]`): each output one fused multiply-add chain continuing from its
/// value in `dw`, over the rows in (step, row) order. The trainer's LSTM backward pass calls it
/// on a few steps at a time while their `dA` rows are in cache, with `x` the rows
/// `[input, h_{t-1}, 1, 1]`, which yields the input weight, recurrent weight and both bias
/// gradients at once. AVX-512 where the CPU has it; the same bits on every path.
pub fn accumulate(dw: &mut [f32], da: StepRows<'_>, x: StepRows<'_>, steps: usize, rows: usize) {
    let (m, n) = (da.width, x.width);
    assert_eq!(dw.len(), m * n, "weight gradient: dw is not [{m}, {n}]");
    da.check(steps, rows, "dA");
    x.check(steps, rows, "x");
    #[cfg(target_arch = "x86_64")]
    if runtime::math::has_avx512() && std::is_x86_feature_detected!("fma") {
        // SAFETY: AVX-512F and FMA are available (checked at run time); the checks above bound
        // every row the kernel reads and `dw` is `[m, n]`.
        return unsafe { accumulate_avx512(dw, da, x, steps, rows) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: FMA is available (checked at run time).
        return unsafe { accumulate_fma(dw, da, x, steps, rows) };
    }
    accumulate_portable(dw, da, x, steps, rows)
}

/// The reference order: one `mul_add` per term, rows in (step, row) order.
#[inline(always)]
fn accumulate_portable(dw: &mut [f32], da: StepRows<'_>, x: StepRows<'_>, steps: usize, rows: usize) {
    let (m, n) = (da.width, x.width);
    for st in 0..steps {
        for r in 0..rows {
            let a = &da.data[st * da.step + r * m..][..m];
            let xr = &x.data[st * x.step + r * n..][..n];
            for (row, &av) in dw.chunks_exact_mut(n).zip(a) {
                for (d, &xv) in row.iter_mut().zip(xr) {
                    *d = av.mul_add(xv, *d);
                }
            }
        }
    }
}

/// [`accumulate_portable`] with hardware FMA (`mul_add` is a libm call without it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn accumulate_fma(dw: &mut [f32], da: StepRows<'_>, x: StepRows<'_>, steps: usize, rows: usize) {
    accumulate_portable(dw, da, x, steps, rows)
}

/// Register tiles of up to 4 gate rows x 96 columns, as [`avx512`]'s, over all rows of the call:
/// its `x` rows (a few steps' worth) stay in L1 while every gate-row tile passes over them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn accumulate_avx512(dw: &mut [f32], da: StepRows<'_>, x: StepRows<'_>, steps: usize, rows: usize) {
    // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
    // CPU has the features it is compiled for.
    unsafe {
        use std::arch::x86_64::*;
        let (m, n) = (da.width, x.width);
        for j0 in (0..n).step_by(JC) {
            let jw = JC.min(n - j0);
            let nv = jw.div_ceil(16);
            let tail = jw - (nv - 1) * 16;
            let last: __mmask16 = if tail == 16 { 0xffff } else { ((1u32 << tail) - 1) as __mmask16 };
            for g0 in (0..m).step_by(GR) {
                let out = dw.as_mut_ptr().add(g0 * n + j0);
                let (a, b) = (da.data.as_ptr().add(g0), x.data.as_ptr().add(j0));
                macro_rules! shapes {
                ($($g:literal: $($v:literal)*;)*) => {
                    match (GR.min(m - g0), nv) {
                        $($(($g, $v) => step_tile::<$g, $v>(a, (da.step, m), b, (x.step, n), steps, rows, last, out, n),)*)*
                        (g, v) => unreachable!("tile {g} x {v} outside {GR} x {NV}"),
                    }
                };
            }
                shapes!(1: 1 2 3 4 5 6; 2: 1 2 3 4 5 6; 3: 1 2 3 4 5 6; 4: 1 2 3 4 5 6;);
            }
        }
    }
}

/// One register tile: `G` gate rows (from `a`) x `V` vectors of columns (from `b`; lanes of the
/// last one past `last` are neither read nor written), over `rows` rows of each of `steps` steps
/// (row `r` of step `st` at `a + st·a_at.0 + r·a_at.1`, likewise `b`), continuing the sums at
/// `out` (row stride `ldo`) by fused multiply-adds in (step, row) order. Both weight-gradient
/// kernels run on it ([`avx512`] with one step per call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn step_tile<const G: usize, const V: usize>(
    a: *const f32,
    a_at: (usize, usize),
    b: *const f32,
    b_at: (usize, usize),
    steps: usize,
    rows: usize,
    last: std::arch::x86_64::__mmask16,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
    // CPU has the features it is compiled for.
    unsafe {
        use std::arch::x86_64::*;
        let mask = |v: usize| if v + 1 == V { last } else { 0xffff };
        let mut s = [[_mm512_setzero_ps(); V]; G];
        for (g, row) in s.iter_mut().enumerate() {
            for (v, acc) in row.iter_mut().enumerate() {
                *acc = _mm512_maskz_loadu_ps(mask(v), out.add(g * ldo + v * 16));
            }
        }
        for st in 0..steps {
            let (ast, bst) = (a.add(st * a_at.0), b.add(st * b_at.0));
            for r in 0..rows {
                let br = bst.add(r * b_at.1);
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, xv) in bv.iter_mut().enumerate() {
                    *xv = _mm512_maskz_loadu_ps(mask(v), br.add(v * 16));
                }
                let ar = ast.add(r * a_at.1);
                for (g, row) in s.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ar.add(g));
                    for v in 0..V {
                        row[v] = _mm512_fmadd_ps(av, bv[v], row[v]);
                    }
                }
            }
        }
        for (g, row) in s.iter().enumerate() {
            for (v, &acc) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(g * ldo + v * 16), mask(v), acc);
            }
        }
    }
}

#[cfg(test)]
mod accumulate_tests {
    use super::*;

    /// The kernel continues the portable path's chains bit for bit (LSTM training shapes with the
    /// `[input, h, 1, 1]` columns, ragged tiles, one row), and both stay within f32 rounding of
    /// an f64 sum.
    #[test]
    fn matches_portable_path_bit_for_bit() {
        let mut next = test_noise(0x9e37_79b9_7f4a_7c15);
        for (m, n, steps, rows) in [(360, 93, 4, 16), (360, 92, 8, 8), (28, 10, 3, 5), (7, 17, 2, 3), (5, 100, 1, 1), (4, 16, 5, 2)] {
            // Steps are further apart than their rows (as in the trainer's ring of a part's rows).
            let (da_step, x_step) = (rows * m + 3 * m, rows * n + 5);
            let da: Vec<f32> = (0..steps * da_step).map(|_| next() * 0.01).collect();
            let xs: Vec<f32> = (0..steps * x_step).map(|_| next()).collect();
            let start: Vec<f32> = (0..m * n).map(|_| next()).collect();
            let (a, x) = (StepRows { data: &da, step: da_step, width: m }, StepRows { data: &xs, step: x_step, width: n });
            let mut fast = start.clone();
            accumulate(&mut fast, a, x, steps, rows);
            let mut slow = start.clone();
            accumulate_portable(&mut slow, a, x, steps, rows);
            for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
                assert_eq!(f.to_bits(), s.to_bits(), "{m}x{n}, {steps}x{rows}: output {i} differs from the portable path");
                let (g, j) = (i / n, i % n);
                let want: f64 = start[i] as f64
                    + (0..steps)
                        .flat_map(|st| (0..rows).map(move |r| (st, r)))
                        .map(|(st, r)| da[st * da_step + r * m + g] as f64 * xs[st * x_step + r * n + j] as f64)
                        .sum::<f64>();
                assert!((*f as f64 - want).abs() < 1e-5, "{m}x{n}: output {i} = {f}, f64 sum {want}");
            }
        }
    }
}
