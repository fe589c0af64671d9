//! The LSTM's fused forward and backward walks over one thread's batch rows.

use rayon::prelude::*;

use super::pool::take;
use super::{held, rows, split_parts, Backward, Cache, Dims, Dy, FwdPart, Part, Projection};
use crate::model::kernels::activation::GateActivations;
use crate::model::kernels::packed::{Aligned, Packed};
use crate::model::kernels::weight_grad::{self, StepRows};

avx512_or_baseline!(
    /// One part's LSTM forward pass.
    pub(super) fn forward / forward_avx512 => lstm_forward_body(j: &mut FwdPart<'_>, proj: &Projection<'_>, w: &Packed, h0: &[f32], h: usize)
);
avx512_or_baseline!(
    /// One part's LSTM backward pass: its rows of `dx` (where wanted) and `dh0`, and the weight
    /// gradient sums of each of its groups into `j.dw`.
    fn lstm_backward / lstm_backward_avx512 => lstm_backward_body(c: &Cache, io: &LstmIo<'_>, w: &LstmBwdWeights<'_>, d: Dims, j: &mut LstmBwdPart<'_>)
);
#[inline(always)]
fn lstm_forward_body(j: &mut FwdPart, proj: &Projection, w: &Packed, h0: &[f32], h: usize) {
    let (bc, g4) = (j.part.bc, 4 * h);
    let zeros = vec![0f32; bc * h];
    let act = GateActivations::new(h, &[true, true, false, true]);
    let cell_tanh = GateActivations::new(h, &[false]);
    // A step's pre-activations, computed in cache; the activation pass then writes the gate
    // cache rows (its stores, spread over its arithmetic, take the misses on them).
    let mut pre = vec![0f32; bc * g4];
    for s in 0..j.gates.len() {
        let (ydone, yrest) = j.y.split_at_mut(s);
        let hp: &[f32] = if s == 0 { h0 } else { ydone[s - 1] };
        let a = &mut *j.gates[s];
        proj.step(s, j.part, &mut pre);
        w.matmul(bc, hp, h, &mut pre, g4, true);
        act.apply_into(&pre, a);
        let (cdone, crest) = j.aux.split_at_mut(s);
        let c = &mut *crest[0];
        let cprev: &[f32] = if s == 0 { &zeros } else { cdone[s - 1] };
        for (r, row) in a.chunks_exact(g4).enumerate() {
            let (i, f, g) = (&row[..h], &row[h..2 * h], &row[2 * h..3 * h]);
            let (cr, cp) = (&mut c[r * h..(r + 1) * h], &cprev[r * h..(r + 1) * h]);
            for k in 0..h {
                cr[k] = f[k] * cp[k] + i[k] * g[k];
            }
        }
        let tc = &mut *j.aux2[s];
        tc.copy_from_slice(c);
        cell_tanh.apply(tc);
        let ys = &mut *yrest[0];
        for (r, row) in a.chunks_exact(g4).enumerate() {
            let o = &row[3 * h..];
            let (yr, tr) = (&mut ys[r * h..(r + 1) * h], &tc[r * h..(r + 1) * h]);
            for k in 0..h {
                yr[k] = o[k] * tr[k];
            }
        }
        // Rows that have ended hold their state; their gates are never read back.
        for r in (0..bc).filter(|&r| held(j.len, r, s)) {
            let row = r * h..(r + 1) * h;
            ys[row.clone()].copy_from_slice(&hp[row.clone()]);
            c[row.clone()].copy_from_slice(&cprev[row]);
        }
    }
}

/// One row of the LSTM cell's backward step. Slices as separate arguments tell the compiler
/// they do not overlap, so the loop vectorises.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_cell_backward(
    gates: &[f32],
    dy: &[f32],
    dh_next: &[f32],
    tc: &[f32],
    cp: &[f32],
    di: &mut [f32],
    df: &mut [f32],
    dg: &mut [f32],
    dout: &mut [f32],
    dc_next: &mut [f32],
) {
    let n = dc_next.len();
    let (gi, rest) = gates.split_at(n);
    let (gf, rest) = rest.split_at(n);
    let (gg, go) = rest.split_at(n);
    let (gf, gg, go) = (&gf[..n], &gg[..n], &go[..n]);
    let (dy, dh_next, tc, cp) = (&dy[..n], &dh_next[..n], &tc[..n], &cp[..n]);
    let (di, df, dg, dout) = (&mut di[..n], &mut df[..n], &mut dg[..n], &mut dout[..n]);
    for k in 0..n {
        let (i, f, g, o) = (gi[k], gf[k], gg[k], go[k]);
        let dh = dy[k] + dh_next[k];
        let tck = tc[k];
        let dc = dc_next[k] + dh * o * (1.0 - tck * tck);
        di[k] = dc * g * i * (1.0 - i);
        df[k] = dc * cp[k] * f * (1.0 - f);
        dg[k] = dc * i * (1.0 - g * g);
        dout[k] = dh * tck * o * (1.0 - o);
        dc_next[k] = dc * f;
    }
}

/// The tensors an LSTM backward pass reads besides its cache, each `[T, B, ·]` except `h0`.
struct LstmIo<'a> {
    dy: Dy<'a>,
    /// Row lengths of the whole batch (see [`super::lstm_seq`]).
    lengths: Option<&'a [usize]>,
    y: &'a [f32],
    h0: &'a [f32],
    x: &'a [f32],
}

/// The weights an LSTM backward step multiplies by: `W_hh` for `dh_{t-1}`, and `W_ih` for `dx`
/// when the input's gradient is wanted.
struct LstmBwdWeights<'a> {
    whh: &'a Packed,
    wih: Option<&'a Packed>,
}

/// One thread's share of an LSTM backward pass: batch rows `part` (whole groups, see
/// [`grad_groups`]), their rows of `dx` per step and of `dh0`, and one weight gradient sum per
/// group.
struct LstmBwdPart<'a> {
    part: Part,
    groups: &'a [Part],
    dx: Vec<&'a mut [f32]>,
    dh0: &'a mut [f32],
    dw: Vec<Vec<f32>>,
}

/// Batch rows whose weight-gradient sums are kept apart until the end of the backward pass,
/// fixed by the batch size alone: threads take whole groups, so the sums, and the bits of
/// training, do not depend on the thread count.
fn grad_groups(b: usize) -> Vec<Part> {
    let n = (b / 16).max(1);
    (0..n).map(|i| Part { b0: i * b / n, bc: (i + 1) * b / n - i * b / n }).collect()
}

/// Steps of `dA` kept in cache between weight-gradient passes: enough rows per pass (64 or more)
/// that loading and storing the sums is a small part of it.
fn flush_steps(groups: &[Part]) -> usize {
    let rows = groups.iter().map(|g| g.bc).min().unwrap_or(1).max(1);
    64usize.div_ceil(rows).min(16)
}

/// The LSTM backward pass: `(dx, dW, dh0)`. Each thread walks its batch rows back through time;
/// every few steps it adds their gate gradients to its groups' weight gradients while they are
/// in cache (one [`weight_grad::accumulate`] over the rows `[x_t, h_{t-1}, 1, 1]` gives
/// `dW = [dW_ih | dW_hh | db_ih | db_hh]` at once), instead of storing `dA` for all steps and
/// reading it back in three more passes. The groups' sums are added in group order at the end.
pub(super) fn backward(a: &Backward<'_>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Backward { c, dy, y, h0, x, w: wv, whh, want_dx, lengths, d } = *a;
    let (b, h, inp, gh) = (d.b, d.h, d.inp, d.gh());
    let want_dx = want_dx && inp > 0;
    let wih = want_dx.then(|| Packed::new(&wv.w_ih, gh, inp, inp, false));
    let weights = LstmBwdWeights { whh, wih: wih.as_ref() };
    let io = LstmIo { dy, lengths, y, h0, x };
    let groups = grad_groups(b);
    let n = rayon::current_num_threads().min(groups.len()).max(1);
    let shares: Vec<&[Part]> = (0..n).map(|i| &groups[i * groups.len() / n..(i + 1) * groups.len() / n]).collect();
    let parts: Vec<Part> = shares
        .iter()
        .map(|g| {
            let (first, last) = (g[0], g[g.len() - 1]);
            Part { b0: first.b0, bc: last.b0 + last.bc - first.b0 }
        })
        .collect();
    let mut dx = if want_dx { take(d.t * b * inp) } else { Vec::new() };
    let mut dh0 = vec![0f32; b * h];
    let jobs: Vec<LstmBwdPart> = parts
        .iter()
        .zip(shares)
        .zip(split_parts(&mut dx, b, inp, &parts))
        .zip(split_parts(&mut dh0, b, h, &parts).into_iter().flatten())
        .map(|(((&part, groups), dx), dh0)| LstmBwdPart { part, groups, dx, dh0, dw: Vec::new() })
        .collect();
    // Each group's sums, `[G·H, ld]` with `ld` padded as in `lstm_backward_body`.
    let sums: Vec<Vec<f32>> = jobs
        .into_par_iter()
        .map(|mut j| {
            lstm_backward(c, &io, &weights, d, &mut j);
            j.dw
        })
        .flatten_iter()
        .collect();
    let (ld, padded) = (d.ld(), d.ld().next_multiple_of(16));
    let mut dw = vec![0f32; gh * ld];
    for (g, row) in dw.chunks_exact_mut(ld).enumerate() {
        row.copy_from_slice(&sums[0][g * padded..g * padded + ld]);
        for sum in &sums[1..] {
            for (a, &v) in row.iter_mut().zip(&sum[g * padded..]) {
                *a += v;
            }
        }
    }
    (dx, dw, dh0)
}

#[inline(always)]
fn lstm_backward_body(c: &Cache, io: &LstmIo, w: &LstmBwdWeights, d: Dims, j: &mut LstmBwdPart) {
    let (b, h, inp, p) = (d.b, d.h, d.inp, j.part);
    let (bc, g4) = (p.bc, 4 * h);
    // Rows of `x` padded to whole vectors on cache-line boundaries, so the weight-gradient
    // kernel's loads never straddle two lines (5% faster in a probe); the padding columns are
    // zeros and their sums are dropped at the end.
    let ld = d.ld().next_multiple_of(16);
    let mut dh_next = vec![0f32; bc * h];
    let mut dc_next = vec![0f32; bc * h];
    let zeros = vec![0f32; bc * h];
    let len = p.lengths(io.lengths);
    // A held row's `dh`, which passes to the step before unchanged (its gates get nothing).
    let mut kept = if len.is_some() { vec![0f32; bc * h] } else { Vec::new() };
    // The last few steps' gate gradients and the rows they multiply in the weight gradient,
    // `[x_t, h_{t-1}, 1, 1]`, slot by slot.
    let ring = flush_steps(j.groups);
    let mut ring_da = vec![0f32; ring * bc * g4];
    let mut ring_x = Aligned::zeros(ring * bc * ld);
    for row in ring_x.as_mut_slice().chunks_exact_mut(ld) {
        row[inp + h..inp + h + 2].fill(1.0);
    }
    let ring_x = ring_x.as_mut_slice();
    j.dw = j.groups.iter().map(|_| vec![0f32; g4 * ld]).collect();
    let h0p = &io.h0[p.b0 * h..(p.b0 + bc) * h];
    let mut filled = 0;
    for s in (0..d.t).rev() {
        let gates = rows(&c.gates, s, b, g4, p);
        let tc = rows(&c.aux2, s, b, h, p);
        let cprev = if s == 0 { &zeros[..] } else { rows(&c.aux, s - 1, b, h, p) };
        let dys = io.dy.rows(s, b, h, p);
        let das = &mut ring_da[filled * bc * g4..(filled + 1) * bc * g4];
        for r in 0..bc {
            let dr = &mut das[r * g4..(r + 1) * g4];
            let (di, rest) = dr.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dg, dout) = rest.split_at_mut(h);
            let row = r * h..(r + 1) * h;
            if held(len, r, s) {
                for ((k, &a), &b) in kept[row.clone()].iter_mut().zip(&dys[row.clone()]).zip(&dh_next[row.clone()]) {
                    *k = a + b;
                }
                dr.fill(0.0);
                continue;
            }
            lstm_cell_backward(
                &gates[r * g4..(r + 1) * g4],
                &dys[row.clone()],
                &dh_next[row.clone()],
                &tc[row.clone()],
                &cprev[row.clone()],
                di,
                df,
                dg,
                dout,
                &mut dc_next[row],
            );
        }
        // dh_{t-1} = dA_t W_hh, dx_t = dA_t W_ih
        w.whh.matmul(bc, das, g4, &mut dh_next, h, false);
        for r in (0..bc).filter(|&r| held(len, r, s)) {
            dh_next[r * h..(r + 1) * h].copy_from_slice(&kept[r * h..(r + 1) * h]);
        }
        if let Some(wih) = w.wih {
            wih.matmul(bc, das, g4, j.dx[s], inp, false);
        }
        let xr = &mut ring_x[filled * bc * ld..(filled + 1) * bc * ld];
        let (xs, hp) = (rows(io.x, s, b, inp, p), if s == 0 { h0p } else { rows(io.y, s - 1, b, h, p) });
        for (r, row) in xr.chunks_exact_mut(ld).enumerate() {
            row[..inp].copy_from_slice(&xs[r * inp..(r + 1) * inp]);
            row[inp..inp + h].copy_from_slice(&hp[r * h..(r + 1) * h]);
        }
        filled += 1;
        if filled == ring || s == 0 {
            for (dw, g) in j.dw.iter_mut().zip(j.groups) {
                let off = g.b0 - p.b0;
                let da = StepRows { data: &ring_da[off * g4..], step: bc * g4, width: g4 };
                let xg = StepRows { data: &ring_x[off * ld..], step: bc * ld, width: ld };
                weight_grad::accumulate(dw, da, xg, filled, g.bc);
            }
            filled = 0;
        }
    }
    j.dh0.copy_from_slice(&dh_next);
}
