//! The arithmetic every inference path shares: one register-block multiply-accumulate, the
//! column-block matrix-vector product over the bundle's transposed weights, one recurrent time
//! step for `N` windows side by side, and the LSTM/GRU cell updates.
//!
//! The device's streaming step ([`crate::encoder`], `N = 1`), the host's grouped batch
//! ([`crate::batch`], `N = GROUP`) and the two-core path ([`crate::duo`], its own packed panels,
//! through [`block`]) all run these functions, so an output's sum has one definition: the
//! initial value, then `+ w·v` term by term in input order, each a separate multiply and add
//! (or, where a caller asks for `FMA`, one fused multiply-add). Block widths and how many
//! windows share a loaded row never change that order, which is why the device, batch and
//! trainer latents are bit-identical.
//!
//! Layouts: a weight matrix is row-major `[inputs, outputs]` (the transposed `W`, so a row is
//! the contribution of one input to every output); `N` windows' vectors sit `stride` values
//! apart.

use crate::bundle::{Bundle, Cell};
use crate::math::{mul_add, sigmoid, tanh};
use crate::quant;

/// Outputs kept in registers per pass of [`matvec`]: 8 AVX registers on 64-bit hosts (8
/// independent add chains hide the add latency), 8 scalars on microcontrollers (their FPU has
/// 32 single-precision registers and no SIMD). An AVX-512 variant (128 outputs in 8 zmm
/// registers) measured 4% slower on one window: the step is bound by reading W_hh from L2, not
/// by arithmetic.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const BLOCK: usize = 64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) const BLOCK: usize = 8;

/// `M` windows' sums over one block of `B` outputs, every sum in registers:
/// `acc[m][i] = start[m][i] + Σ_k v[m][k] · w[at + k·stride + i]`, `k` in order, each row
/// loaded once for all `M` windows. `ahead(k)` runs after row `k` is loaded (the two-core path
/// prefetches there; everyone else passes `|_| {}`). `FMA`: one fused multiply-add per term.
#[inline(always)]
// `k` indexes the row and every window's vector at once.
#[allow(clippy::needless_range_loop)]
pub(crate) fn block<const B: usize, const M: usize, const FMA: bool>(
    start: [&[f32]; M],
    w: &[f32],
    at: usize,
    stride: usize,
    v: [&[f32]; M],
    mut ahead: impl FnMut(usize),
) -> [[f32; B]; M] {
    let mut acc = [[0f32; B]; M];
    for (a, s) in acc.iter_mut().zip(start) {
        a.copy_from_slice(&s[..B]);
    }
    let kd = v[0].len();
    // Every vector cut to `kd` up front, so `v[m][k]` needs no bounds check.
    let v = v.map(|vm| &vm[..kd]);
    // Every row once, up front: whether LLVM proves the rows in bounds by itself hangs on
    // unrelated layout (one more header field put a check in every row: 6.2 M -> 7.4 M
    // instructions per window on the Cortex-M4).
    let end = kd.checked_sub(1).map(|last| last.checked_mul(stride).and_then(|o| o.checked_add(at + B)));
    assert!(end.is_none_or(|e| e.is_some_and(|e| e <= w.len())), "weight block outside its matrix");
    for k in 0..kd {
        // SAFETY: row `k` is `w[at + k·stride ..][..B]`, inside `w` for every `k < kd` (asserted
        // above without overflow), and `[f32; B]` has `f32`'s alignment.
        let row: &[f32; B] = unsafe { &*w.as_ptr().add(at + k * stride).cast::<[f32; B]>() };
        ahead(k);
        for m in 0..M {
            let x = v[m][k];
            for i in 0..B {
                acc[m][i] = if FMA { mul_add(row[i], x, acc[m][i]) } else { acc[m][i] + row[i] * x };
            }
        }
    }
    acc
}

/// Outputs `s..s + B` of all `N` windows, two windows per pass (each loaded row serves both,
/// and two independent add chains run), then a single one if `N` is odd.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn column_block<const B: usize, const N: usize>(
    out: &mut [f32],
    init: &[f32],
    is: usize,
    w: &[f32],
    v: &[f32],
    vs: usize,
    kd: usize,
    s: usize,
) {
    let n = out.len() / N;
    let row = |m: usize| &v[m * vs..m * vs + kd];
    let mut m = 0;
    while m + 2 <= N {
        let [a0, a1] = block::<B, 2, false>([&init[m * is + s..], &init[(m + 1) * is + s..]], w, s, n, [row(m), row(m + 1)], |_| {});
        out[m * n + s..m * n + s + B].copy_from_slice(&a0);
        out[(m + 1) * n + s..(m + 1) * n + s + B].copy_from_slice(&a1);
        m += 2;
    }
    if m < N {
        let [a] = block::<B, 1, false>([&init[m * is + s..]], w, s, n, [row(m)], |_| {});
        out[m * n + s..m * n + s + B].copy_from_slice(&a);
    }
}

/// `out[m·n + j] = init[m·is + j] + Σ_k v[m·vs + k] · w[k·n + j]` for the `N` windows `m`, with
/// `n = out.len() / N` outputs and `kd` inputs each (`is = 0`: a bias shared by all windows).
/// Outputs go in register blocks of `B`, then 8, while `k` runs, so each weight is loaded once
/// per block and no sum round-trips through memory; a ragged end is covered by one 8-wide block
/// that overlaps the previous one (each output's sum runs in the same order either way, so the
/// overlap rewrites identical values); fewer than 8 outputs are summed one by one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec<const N: usize, const B: usize>(out: &mut [f32], init: &[f32], is: usize, w: &[f32], v: &[f32], vs: usize, kd: usize) {
    let n = out.len() / N;
    let mut s = 0;
    while s + B <= n {
        column_block::<B, N>(out, init, is, w, v, vs, kd, s);
        s += B;
    }
    while s + 8 <= n {
        column_block::<8, N>(out, init, is, w, v, vs, kd, s);
        s += 8;
    }
    if s < n {
        if n >= 8 {
            column_block::<8, N>(out, init, is, w, v, vs, kd, n - 8);
        } else {
            for m in 0..N {
                let vm = &v[m * vs..m * vs + kd];
                for j in s..n {
                    out[m * n + j] = init[m * is + j] + vm.iter().enumerate().map(|(k, x)| w[k * n + j] * x).sum::<f32>();
                }
            }
        }
    }
}

/// One time step of `N` windows through every layer of `b`; layer `l > 0` reads layer `l - 1`'s
/// new `h`. Window `n`'s `h` and `c` of layer `l` start at `(l·N + n)·stride` (a device's
/// [`crate::State`]: `N = 1`, `stride = H`; the host's groups: `stride = hidden`); its sample
/// is `x[n·f..][..f]`; `gates` and `rec` hold `N` windows' pre-activations (`gates·hidden`
/// each). For the GRU, `rec` is the recurrent part `h W_hhᵀ + b_hh` alone, because the reset
/// gate scales its `n` block.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step<const N: usize, const B: usize>(
    b: &Bundle<'_>,
    h: &mut [f32],
    c: &mut [f32],
    stride: usize,
    x: &[f32],
    gates: &mut [f32],
    rec: &mut [f32],
) {
    let hd = &b.header;
    let (f, hid) = (hd.n_features as usize, hd.hidden as usize);
    let gh = hd.cell.gates() * hid;
    let (gates, rec) = (&mut gates[..N * gh], &mut rec[..N * gh]);
    if b.is_int8() {
        return step_q8::<N>(b, h, c, stride, x, gates, rec);
    }
    let span = (N - 1) * stride + hid;
    for l in 0..hd.layers as usize {
        let (w_ih, w_hh, b_ih, b_hh) = b.layer(l);
        let (below, here) = h.split_at_mut(l * N * stride);
        let (input, vs, kd): (&[f32], usize, usize) = if l == 0 { (x, f, f) } else { (&below[(l - 1) * N * stride..], stride, hid) };
        let hl = &mut here[..span];
        matvec::<N, B>(gates, b_ih, 0, w_ih, input, vs, kd);
        match hd.cell {
            Cell::Lstm => {
                rec.copy_from_slice(gates);
                matvec::<N, B>(gates, rec, gh, w_hh, hl, stride, hid);
                let cl = &mut c[l * N * stride..][..span];
                for (n, g) in gates.chunks_exact_mut(gh).enumerate() {
                    for (gv, bh) in g.iter_mut().zip(b_hh) {
                        *gv += bh;
                    }
                    lstm_cell(g, &mut cl[n * stride..][..hid], &mut hl[n * stride..][..hid]);
                }
            }
            Cell::Gru => {
                matvec::<N, B>(rec, b_hh, 0, w_hh, hl, stride, hid);
                for (n, (g, r)) in gates.chunks_exact(gh).zip(rec.chunks_exact(gh)).enumerate() {
                    gru_cell(g, r, &mut hl[n * stride..][..hid]);
                }
            }
        }
    }
}

/// [`step`] with int8 weights ([`crate::quant`]): the same products and cell updates, each
/// window's input vector quantised on its own. Kept out of line: inlined beside the f32 loop it
/// cost that loop registers (7.6 M instead of 6.2 M instructions per window on the Cortex-M4).
#[inline(never)]
fn step_q8<const N: usize>(b: &Bundle<'_>, h: &mut [f32], c: &mut [f32], stride: usize, x: &[f32], gates: &mut [f32], rec: &mut [f32]) {
    let cell = b.header.cell;
    for l in 0..b.header.layers as usize {
        let Some(q) = b.layer_q(l) else { return };
        step_layer_q8::<N>(cell, &q, h, c, stride, l, x, gates, rec);
    }
}

/// Layer `l` of [`step_q8`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_layer_q8<const N: usize>(
    cell: Cell,
    q: &crate::bundle::QLayer<'_>,
    h: &mut [f32],
    c: &mut [f32],
    stride: usize,
    l: usize,
    x: &[f32],
    gates: &mut [f32],
    rec: &mut [f32],
) {
    let (hid, gh, f) = (q.w_hh.inputs, q.b_ih.len(), q.w_ih.inputs);
    let (below, here) = h.split_at_mut(l * N * stride);
    for n in 0..N {
        let input = if l == 0 { &x[n * f..][..f] } else { &below[((l - 1) * N + n) * stride..][..hid] };
        let (g, r) = (&mut gates[n * gh..][..gh], &mut rec[n * gh..][..gh]);
        let hn = &mut here[n * stride..][..hid];
        quant::matvec::<{ quant::BLOCK }>(g, q.b_ih, &q.w_ih, input);
        match cell {
            Cell::Lstm => {
                r.copy_from_slice(g);
                quant::matvec::<{ quant::BLOCK }>(g, r, &q.w_hh, hn);
                for (gv, bh) in g.iter_mut().zip(q.b_hh) {
                    *gv += bh;
                }
                lstm_cell(g, &mut c[(l * N + n) * stride..][..hid], hn);
            }
            Cell::Gru => {
                quant::matvec::<{ quant::BLOCK }>(r, q.b_hh, &q.w_hh, hn);
                gru_cell(g, r, hn);
            }
        }
    }
}

/// The latent mean `W_mean h + b_mean` of one window's top hidden state `h`, with the bundle's
/// weights as stored (f32: one dot product per output; int8: [`crate::quant::matvec`]).
#[inline(always)]
pub(crate) fn head(b: &Bundle<'_>, h: &[f32], out: &mut [f32]) {
    if let Some((m, bias)) = b.head_q() {
        quant::matvec::<{ quant::BLOCK }>(out, bias, &m, h);
        return;
    }
    let (w, bm) = b.head();
    let hid = h.len();
    for (j, (o, bj)) in out.iter_mut().zip(bm).enumerate() {
        *o = bj + crate::math::dot(&w[j * hid..(j + 1) * hid], h);
    }
}

/// LSTM cell update from complete pre-activations `gates = [i | f | g | o]` (both biases in):
/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)`.
#[inline(always)]
pub(crate) fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let hid = h.len();
    // Equal-length slices up front: no bounds checks in the loop, so it vectorises.
    let (i, rest) = gates.split_at(hid);
    let (f, rest) = rest.split_at(hid);
    let (g, o) = rest.split_at(hid);
    let (f, g, o, c) = (&f[..hid], &g[..hid], &o[..hid], &mut c[..hid]);
    for j in 0..hid {
        c[j] = sigmoid(f[j]) * c[j] + sigmoid(i[j]) * tanh(g[j]);
        h[j] = sigmoid(o[j]) * tanh(c[j]);
    }
}

/// GRU cell update from the input part `gates` and the recurrent part `rec` (with `b_hh`) of
/// the pre-activations `[r | z | n]`: `r = σ(x_r + h_r)`, `z = σ(x_z + h_z)`,
/// `n = tanh(x_n + r·h_n)`, `h = n + z·(h - n)`.
#[inline(always)]
pub(crate) fn gru_cell(gates: &[f32], rec: &[f32], h: &mut [f32]) {
    let hid = h.len();
    // Equal-length slices up front: no bounds checks in the loop, so it vectorises.
    let (xr, rest) = gates.split_at(hid);
    let (xz, xn) = rest.split_at(hid);
    let (hr, rest) = rec.split_at(hid);
    let (hz, hn) = rest.split_at(hid);
    let (xz, xn, hz, hn) = (&xz[..hid], &xn[..hid], &hz[..hid], &hn[..hid]);
    for j in 0..hid {
        let r = sigmoid(xr[j] + hr[j]);
        let z = sigmoid(xz[j] + hz[j]);
        let n = tanh(xn[j] + r * hn[j]);
        h[j] = n + z * (h[j] - n);
    }
}
