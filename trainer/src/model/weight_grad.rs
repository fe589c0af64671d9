//! The recurrent weight gradient `dW_hh = Σ_t dA_tᵀ h_{t-1}`: one `[G·H, T·B] x [T·B, H]` product
//! per layer and training step, the largest single product of a step (a quarter of an LSTM step
//! through the gemm crate, whose AVX2 kernels are what it picks without its `x86-v4` feature).
//!
//! Summation order, which is what keeps training results unchanged: the gemm crate cuts the inner
//! dimension `T·B` into `kc`-long blocks (`kc` from `gemm_common::cache::kernel_params`, which
//! depends on this CPU's caches); within a block every output is `s = fma(a, b, s)` from `s = 0`
//! in `t·b` order; the first block's sum is stored and each later block's sum `s` becomes
//! `fma(1, s, dW) = dW + s`. [`avx512`] does exactly that with an AVX-512 register tile (32
//! gate rows x 12 hidden columns in 24 registers), so it returns gemm's bits at about three times
//! the speed. Loop order is for the caches, not the sums: a block of rows (~1.6 MB of `dA` and
//! `h`) is finished for every 32-row panel while it sits in L2, and within it each 64-row
//! sub-block for every column tile while it sits in L1, the panel's sums waiting in a small
//! buffer in between (a stored and reloaded sum is not rounded). A test compares the two bit
//! for bit on the training shapes. Shapes gemm sends down other paths (tiny products) are left
//! to gemm.

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

/// Gate rows per task and register tile.
const GT: usize = 32;
/// Hidden columns per register tile.
const JT: usize = 12;
/// Rows of `da`/`hp` per sub-block: small enough that a sub-block of both stays in L1 while
/// every column tile of the panel runs over it.
const SB: usize = 64;

/// Rows `0..k` of `[k, n]` stored as two row-major pieces: `head` holds the first
/// `head.len() / n` rows, `tail` the rest (so `[h0; h_1 .. h_{T-1}]` needs no copy).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    /// The first rows.
    pub head: &'a [f32],
    /// The rows after them.
    pub tail: &'a [f32],
}

/// `dW[g][j] = Σ_r da[r][g] · hp[r][j]` (`da` `[k, m]`, `hp` `[k, n]`, `dW` `[m, n]`, all
/// row-major), in gemm's order (module docs). Only where [`avx512_applies`].
#[cfg(target_arch = "x86_64")]
pub fn avx512(da: &[f32], hp: Rows<'_>, m: usize, n: usize, k: usize, threads: usize) -> Vec<f32> {
    assert!(avx512_applies(m, n, k), "weight gradient: AVX-512 path used where it does not apply");
    assert!(
        da.len() >= k * m && hp.head.len() % n == 0 && hp.head.len() + hp.tail.len() >= k * n,
        "weight gradient: operands too small"
    );
    let kc = gemm_kc(m, n, k);
    let mut dw = vec![0f32; m * n];
    // Each thread takes a contiguous run of 32-row panels.
    let panels = m.div_ceil(GT);
    let per = panels.div_ceil(threads.max(1));
    let task = |(gi, rows): (usize, &mut [f32])| {
        // SAFETY: AVX-512F and FMA are available (asserted above); `rows` holds gate rows
        // `gi·per·GT ..` of `dW`, and the kernel reads `da`/`hp` only inside the bounds asserted above.
        unsafe { panels_task(da, hp, m, n, k, kc, gi * per * GT, rows) }
    };
    if threads > 1 {
        dw.par_chunks_mut(per * GT * n).enumerate().for_each(task);
    } else {
        task((0, &mut dw));
    }
    dw
}

/// Gate rows `g0 .. g0 + rows.len() / n` of `dW`: block by block (a block of `da` and `hp`,
/// ~1.6 MB at the training shapes, stays in L2 while every panel runs over it), and within a
/// block panel by panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_task(da: &[f32], hp: Rows<'_>, m: usize, n: usize, k: usize, kc: usize, g0: usize, rows: &mut [f32]) {
    use std::arch::x86_64::__mmask16;
    let mask = |lanes: usize| -> __mmask16 { if lanes >= 16 { 0xffff } else { ((1u32 << lanes) - 1) as __mmask16 } };
    // Sums of one panel over one block (32 gate rows x n columns), kept in L1 between
    // sub-blocks so each sub-block's rows of `da` and `hp` come from L2 once and are then reused
    // from L1 by every column tile; storing and reloading a sum does not round, so the bits are
    // gemm's.
    let mut acc = vec![[0f32; GT]; n];
    let split = hp.head.len() / n;
    let mut k0 = 0;
    while k0 < k {
        let kb = kc.min(k - k0);
        for (pi, panel) in rows.chunks_mut(GT * n).enumerate() {
            let gr = panel.len() / n;
            let (m0, m1) = (mask(gr), mask(gr.saturating_sub(16)));
            acc.iter_mut().for_each(|c| *c = [0.0; GT]);
            let mut s0 = 0;
            while s0 < kb {
                let r0 = k0 + s0;
                // A sub-block never straddles the two pieces of `hp` (where it ends does not
                // change the sums).
                let (sb, b0) = if r0 < split {
                    (SB.min(kb - s0).min(split - r0), hp.head.as_ptr().add(r0 * n))
                } else {
                    (SB.min(kb - s0), hp.tail.as_ptr().add((r0 - split) * n))
                };
                let a = da.as_ptr().add(r0 * m + g0 + pi * GT);
                for j0 in (0..n).step_by(JT) {
                    let b = b0.add(j0);
                    let jw = JT.min(n - j0);
                    let tile = &mut acc[j0..j0 + jw];
                    macro_rules! widths {
                        ($($w:literal)*) => {
                            match jw {
                                $($w => sums::<$w>(a, m, b, n, sb, m0, m1, tile),)*
                                _ => unreachable!("tile width {jw} above {JT}"),
                            }
                        };
                    }
                    widths!(1 2 3 4 5 6 7 8 9 10 11 12);
                }
                s0 += sb;
            }
            for (j, col) in acc.iter().enumerate() {
                for (g, &s) in col.iter().enumerate().take(gr) {
                    let d = &mut panel[g * n + j];
                    // gemm: the first block's sum is stored (`1 · s`), later ones `fma(1, s, d)`.
                    *d = if k0 == 0 { s } else { s + *d };
                }
            }
        }
        k0 += kb;
    }
}

/// One register tile over rows `0..kb` of a sub-block, continuing the sums in `tile`:
/// `tile[j][g] += Σ_r a[r·lda + g] · b[r·ldb + j]` for `g < 32` (lanes past the masks read
/// nothing) and `j < J`, by fused multiply-adds in `r` order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn sums<const J: usize>(a: *const f32, lda: usize, b: *const f32, ldb: usize, kb: usize, m0: std::arch::x86_64::__mmask16, m1: std::arch::x86_64::__mmask16, tile: &mut [[f32; GT]]) {
    use std::arch::x86_64::*;
    debug_assert!(tile.len() >= J);
    let mut lo = [_mm512_setzero_ps(); J];
    let mut hi = [_mm512_setzero_ps(); J];
    for j in 0..J {
        lo[j] = _mm512_loadu_ps(tile[j].as_ptr());
        hi[j] = _mm512_loadu_ps(tile[j].as_ptr().add(16));
    }
    for r in 0..kb {
        let ar = a.add(r * lda);
        let (a0, a1) = (_mm512_maskz_loadu_ps(m0, ar), _mm512_maskz_loadu_ps(m1, ar.add(16)));
        let br = b.add(r * ldb);
        for j in 0..J {
            let bj = _mm512_set1_ps(*br.add(j));
            lo[j] = _mm512_fmadd_ps(a0, bj, lo[j]);
            hi[j] = _mm512_fmadd_ps(a1, bj, hi[j]);
        }
    }
    for j in 0..J {
        _mm512_storeu_ps(tile[j].as_mut_ptr(), lo[j]);
        _mm512_storeu_ps(tile[j].as_mut_ptr().add(16), hi[j]);
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
            gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, da.as_ptr(), m as isize, 1, hp.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, par);
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
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
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
                    assert_eq!(diff, 0, "{m}x{n}x{k}, {threads} thread(s), head {head}: {diff} of {} outputs differ from gemm (kc {})", m * n, gemm_kc(m, n, k));
                }
            }
            let par = gemm_ref(&da, &hp, m, n, k, gemm::Parallelism::Rayon(2));
            assert!(par.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "gemm itself differs with 2 threads at {m}x{n}x{k}");
        }
    }
}
