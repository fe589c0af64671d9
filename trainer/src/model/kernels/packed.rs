//! The small matrix product of one recurrent time step, `C (+)= A · B`, with `B` (a recurrent
//! weight matrix) packed once per sequence.
//!
//! A training step multiplies a `[batch, H]` hidden state by the same `[H, G·H]` weights at every
//! one of `T` steps, forward and backward. A general GEMM re-packs `B` on each of those `T` calls
//! and, for these sizes (`batch` 16-32, `H` 90), spends as long packing as multiplying. Here `B` is
//! packed once into 16-column panels stored k-major (`panel[kk][0..16]`, zero-padded past `n`),
//! and a register-tiled kernel streams the panels: an 8-row x 48-column tile of `C` lives in 24
//! AVX-512 registers while `kk` runs.
//!
//! Every output is summed in the same order on every path, `s = fma(A[i][kk], B[kk][j], s)` for
//! `kk = 0..k` from `s = 0`, then `C[i][j] + s` when accumulating (the order a GEMM microkernel
//! uses), so the AVX-512 kernel and the portable fallback give bit-identical results and training
//! is reproducible across hosts.

/// Columns per panel (one AVX-512 register of f32).
const NR: usize = 16;

/// The right-hand operand `B` (`k x n`), packed for [`Packed::matmul`].
#[derive(Debug, Clone)]
pub struct Packed {
    k: usize,
    n: usize,
    /// `ceil(n / 16)` panels of `k x 16`, from a 64-byte boundary so that no panel row straddles
    /// two cache lines (a split load costs two).
    data: Aligned,
}

impl Packed {
    /// Packs `B[kk][j]`, read from `src` as `src[kk * ld + j]`, or `src[j * ld + kk]` when
    /// `transposed` (e.g. `Wᵀ` for a weight matrix `W` stored `[n, k]` row-major).
    pub fn new(src: &[f32], k: usize, n: usize, ld: usize, transposed: bool) -> Self {
        let mut p = Packed::zeros(k, n);
        let panel_len = k * NR;
        for (pi, panel) in p.data.as_mut_slice().chunks_exact_mut(panel_len).enumerate() {
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (c, v) in row.iter_mut().enumerate().take(n.saturating_sub(pi * NR)) {
                    let j = pi * NR + c;
                    *v = if transposed { src[j * ld + kk] } else { src[kk * ld + j] };
                }
            }
        }
        p
    }

    fn zeros(k: usize, n: usize) -> Self {
        Packed { k, n, data: Aligned::zeros(n.div_ceil(NR) * k * NR) }
    }

    /// `C[i][j] (+)= Σ_kk A[i][kk] · B[kk][j]` for `i < m`, with `A` at `a[i * lda + kk]` and `C`
    /// at `c[i * ldc + j]`; `accumulate` adds to `C`, otherwise `C` is overwritten.
    pub fn matmul(&self, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(lda >= k && ldc >= n, "packed matmul: row strides {lda}, {ldc} below k {k}, n {n}");
        assert!(a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n, "packed matmul: operand too small");
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx512() {
            // SAFETY: AVX-512F is available (checked at run time) and the asserts above bound
            // every element the kernel addresses.
            return unsafe { x86::matmul(self, m, a, lda, c, ldc, accumulate) };
        }
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2_fma() {
            // SAFETY: AVX2 and FMA are available (checked at run time).
            return unsafe { x86::portable_avx2(self, m, a, lda, c, ldc, accumulate) };
        }
        portable(self, m, a, lda, c, ldc, accumulate)
    }
}

/// Zero-initialised f32 values starting at a 64-byte (cache-line) boundary.
#[derive(Debug, Clone)]
pub struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let buf = vec![0f32; len + 15];
        let start = buf.as_ptr().align_offset(64).min(15);
        Aligned { buf, start, len }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// The reference path: one output panel at a time, 16 sums in a local array.
#[inline(always)]
fn portable(p: &Packed, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (k, n) = (p.k, p.n);
    for (pi, panel) in p.data.as_slice().chunks_exact(k * NR).enumerate() {
        let j0 = pi * NR;
        let cols = (n - j0).min(NR);
        for i in 0..m {
            let mut s = [0f32; NR];
            for (kk, brow) in panel.chunks_exact(NR).enumerate() {
                let x = a[i * lda + kk];
                for (sv, &bv) in s.iter_mut().zip(brow) {
                    *sv = x.mul_add(bv, *sv);
                }
            }
            let crow = &mut c[i * ldc + j0..i * ldc + j0 + cols];
            for (cv, sv) in crow.iter_mut().zip(&s) {
                *cv = if accumulate { *cv + sv } else { *sv };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Packed, NR};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub use runtime::math::has_avx512;

    /// AVX2 and FMA are available (checked once).
    pub fn has_avx2_fma() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// The portable path compiled with FMA instructions (`mul_add` is a libm call without them).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn portable_avx2(p: &Packed, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        super::portable(p, m, a, lda, c, ldc, accumulate)
    }

    /// Rows per register tile.
    const MR: usize = 8;
    /// Panels (16-column registers) per register tile.
    const NV: usize = 3;

    /// One `R x (V·16)` tile of `C`: `R·V` accumulators stay in registers while `kk` runs.
    /// `b` points at the tile's first panel, `cols` is how many of its columns are real.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
        // CPU has the features it is compiled for.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            let pstride = k * NR;
            for kk in 0..k {
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(b.add(v * pstride + kk * NR));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * lda + kk));
                    for v in 0..V {
                        row[v] = _mm512_fmadd_ps(av, bv[v], row[v]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &s) in row.iter().enumerate() {
                    let col0 = v * NR;
                    if col0 >= cols {
                        break;
                    }
                    let valid = (cols - col0).min(NR);
                    let mask: __mmask16 = if valid == NR { 0xFFFF } else { (1u16 << valid) - 1 };
                    let dst = c.add(r * ldc + col0);
                    let out = if accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), s) } else { s };
                    _mm512_mask_storeu_ps(dst, mask, out);
                }
            }
        }
    }

    /// One column tile (`V` panels from panel `pi`) over every row tile, so the tile's panels
    /// stay in L1 while all rows of `A` pass over them.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn column<const V: usize>(p: &Packed, pi: usize, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
        // CPU has the features it is compiled for.
        unsafe {
            let (k, n) = (p.k, p.n);
            let (j0, b) = (pi * NR, p.data.as_slice().as_ptr().add(pi * k * NR));
            let cols = n - j0;
            let (a, c) = (a.as_ptr(), c.as_mut_ptr().add(j0));
            let mut i = 0;
            while i + MR <= m {
                tile::<MR, V>(k, a.add(i * lda), lda, b, c.add(i * ldc), ldc, cols, accumulate);
                i += MR;
            }
            let (a, c) = (a.add(i * lda), c.add(i * ldc));
            match m - i {
                0 => {}
                1 => tile::<1, V>(k, a, lda, b, c, ldc, cols, accumulate),
                2 => tile::<2, V>(k, a, lda, b, c, ldc, cols, accumulate),
                3 => tile::<3, V>(k, a, lda, b, c, ldc, cols, accumulate),
                4 => tile::<4, V>(k, a, lda, b, c, ldc, cols, accumulate),
                5 => tile::<5, V>(k, a, lda, b, c, ldc, cols, accumulate),
                6 => tile::<6, V>(k, a, lda, b, c, ldc, cols, accumulate),
                _ => tile::<7, V>(k, a, lda, b, c, ldc, cols, accumulate),
            }
        }
    }

    /// AVX-512 path of [`Packed::matmul`]; the caller checked the operand extents.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matmul(p: &Packed, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        // SAFETY: the caller upholds this function's contract (its docs: operand extents) and the
        // CPU has the features it is compiled for.
        unsafe {
            let panels = p.n.div_ceil(NR);
            let mut pi = 0;
            while pi < panels {
                match panels - pi {
                    1 => column::<1>(p, pi, m, a, lda, c, ldc, accumulate),
                    2 => column::<2>(p, pi, m, a, lda, c, ldc, accumulate),
                    _ => column::<NV>(p, pi, m, a, lda, c, ldc, accumulate),
                }
                pi += NV;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as f32 / u32::MAX as f32 - 0.5
            })
            .collect()
    }

    /// Every shape class (row remainders 1-7, panel remainders, ragged last panel, padded
    /// strides), `B` packed either way, overwrite and accumulate: within f32 rounding of an f64
    /// reference, and bit-identical to the portable path.
    #[test]
    fn matches_f64_reference_and_portable_path_bit_for_bit() {
        for &(m, k, n) in &[(1, 1, 1), (16, 90, 360), (32, 90, 270), (13, 360, 90), (7, 5, 33), (9, 17, 48), (3, 4, 100)] {
            for (b_t, accumulate) in (0..4).map(|bits| (bits & 1 == 1, bits & 2 == 2)) {
                let (lda, ldc, ldb) = (k + 3, n + 5, if b_t { k + 2 } else { n + 1 });
                let a = noise(m * lda, 1);
                let src = noise(if b_t { n * ldb } else { k * ldb }, 2);
                let c0 = noise(m * ldc, 3);
                let p = Packed::new(&src, k, n, ldb, b_t);
                let mut fast = c0.clone();
                p.matmul(m, &a, lda, &mut fast, ldc, accumulate);
                let mut slow = c0.clone();
                portable(&p, m, &a, lda, &mut slow, ldc, accumulate);
                let case = format!("({m},{k},{n}) b_t {b_t} acc {accumulate}");
                for i in 0..m {
                    for j in 0..ldc {
                        let (f, s) = (fast[i * ldc + j], slow[i * ldc + j]);
                        if j >= n {
                            assert_eq!(f, c0[i * ldc + j], "{case} wrote past column {n}");
                            continue;
                        }
                        let b = |kk: usize| if b_t { src[j * ldb + kk] } else { src[kk * ldb + j] };
                        let dot: f64 = (0..k).map(|kk| a[i * lda + kk] as f64 * b(kk) as f64).sum();
                        let want = dot + if accumulate { c0[i * ldc + j] as f64 } else { 0.0 };
                        assert!((f as f64 - want).abs() < 1e-5 * (k as f64).sqrt(), "{case} [{i}][{j}] = {f}, want {want}");
                        assert_eq!(f.to_bits(), s.to_bits(), "{case} [{i}][{j}]: kernel and portable path differ");
                    }
                }
            }
        }
    }
}
