//! The GRU's fused forward and backward walks over one thread's batch rows.

use rayon::prelude::*;

use super::pool::{give, take};
use super::{
    batch_parts, column_sums, held, matmul_par, recurrent_weight_grad, rows, split_parts, threads, Backward, BwdPart, Cache, Dims, Dy,
    FwdPart, Projection,
};
use crate::model::kernels::packed::Packed;
use runtime::math::{sigmoid_inplace, tanh_inplace};

/// The GRU backward pass: `(dx, dW, dh0)`. Each thread walks its batch rows back through time,
/// storing the gradients of the gates' input part (`da`, of `x W_ihᵀ + b_ih`) and recurrent part
/// (`dhh`, of `h W_hhᵀ + b_hh`) for every step; the weight gradients are then large products over
/// all steps ([`recurrent_weight_grad`], gemm), and the bias gradients column sums.
pub(super) fn backward(a: &Backward<'_>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Backward { c, dy, y, h0, x, w: wv, whh, want_dx, lengths, d } = *a;
    let (gh, h, inp, tb) = (d.gh(), d.h, d.inp, d.t * d.b);
    // da: gradient of the gate pre-activations' input part (x W_ih^T + b_ih);
    // dhh: of the recurrent part (h W_hh^T + b_hh). Every step writes all rows of both.
    let mut da = take(tb * gh);
    let mut dhh = take(tb * gh);
    let mut dh0 = vec![0f32; d.b * h];
    let parts = batch_parts(d.b);
    // `dh0` is one step of `[B, H]`: each part gets exactly one slice of it.
    let jobs: Vec<BwdPart> = parts
        .iter()
        .zip(split_parts(&mut da, d.b, gh, &parts))
        .zip(split_parts(&mut dhh, d.b, gh, &parts))
        .zip(split_parts(&mut dh0, d.b, h, &parts).into_iter().flatten())
        .map(|(((&part, da), dhh), dh0)| BwdPart { part, len: part.lengths(lengths), da, dhh, dh0 })
        .collect();
    jobs.into_par_iter().for_each(|mut j| gru_backward(c, y, dy, whh, h0, d, &mut j));
    let dw_hh = recurrent_weight_grad(&dhh, y, h0, d);
    let mut dw_ih = vec![0f32; gh * inp];
    // The gradient of data (the encoder's input) is never used: skip that pass over `da`.
    let mut dx = vec![0f32; if want_dx { tb * inp } else { 0 }];
    if inp > 0 {
        matmul_par(gh, inp, tb, &mut dw_ih, false, &da, true, x, false, threads());
        if want_dx {
            matmul_par(tb, inp, gh, &mut dx, false, &da, false, &wv.w_ih, false, threads());
        }
    }
    let db_ih = column_sums(&da, gh);
    let db_hh = column_sums(&dhh, gh);
    let ld = d.ld();
    let mut dw = vec![0f32; gh * ld];
    for g in 0..gh {
        let row = &mut dw[g * ld..(g + 1) * ld];
        row[..inp].copy_from_slice(&dw_ih[g * inp..(g + 1) * inp]);
        row[inp..inp + h].copy_from_slice(&dw_hh[g * h..(g + 1) * h]);
        row[inp + h] = db_ih[g];
        row[inp + h + 1] = db_hh[g];
    }
    give(da);
    give(dhh);
    (dx, dw, dh0)
}

avx512_or_baseline!(
    /// One part's GRU forward pass; each step writes its input projection into `j.gates`, which
    /// holds the activated gates `r, z, n` on exit.
    pub(super) fn forward / forward_avx512 => gru_forward_body(j: &mut FwdPart<'_>, proj: &Projection<'_>, whh: &Packed, bhh: &[f32], h0: &[f32], h: usize)
);
avx512_or_baseline!(
    /// One part's GRU backward pass: fills its rows of the gradients of the input part
    /// `[T, B, 3H]` (`j.da`), of the recurrent part `h W_hh^T + b_hh` (`j.dhh`), and of `dh0`.
    fn gru_backward / gru_backward_avx512 => gru_backward_body(c: &Cache, y: &[f32], dy: Dy<'_>, whh: &Packed, h0: &[f32], d: Dims, j: &mut BwdPart<'_>)
);

/// One row of the GRU cell's backward step: the gradients of the gates' input part (`dx`:
/// r, z, n) and recurrent part (`dhh`), and `dh ⊙ z` for the next step into `carry`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_cell_backward(
    gates: &[f32],
    hn: &[f32],
    hp: &[f32],
    dy: &[f32],
    dh_next: &[f32],
    dx: &mut [f32],
    dhh: &mut [f32],
    carry: &mut [f32],
) {
    let n = carry.len();
    let (gr, rest) = gates.split_at(n);
    let (gz, gn) = rest.split_at(n);
    let (gz, gn) = (&gz[..n], &gn[..n]);
    let (hn, hp, dy, dh_next) = (&hn[..n], &hp[..n], &dy[..n], &dh_next[..n]);
    let (dxr, rest) = dx.split_at_mut(n);
    let (dxz, dxn) = rest.split_at_mut(n);
    let (dxz, dxn) = (&mut dxz[..n], &mut dxn[..n]);
    let (dhr, rest) = dhh.split_at_mut(n);
    let (dhz, dhn) = rest.split_at_mut(n);
    let (dhz, dhn) = (&mut dhz[..n], &mut dhn[..n]);
    for k in 0..n {
        let (rr, z, nn) = (gr[k], gz[k], gn[k]);
        let dh = dy[k] + dh_next[k];
        let dan = dh * (1.0 - z) * (1.0 - nn * nn);
        let dar = dan * hn[k] * rr * (1.0 - rr);
        let daz = dh * (hp[k] - nn) * z * (1.0 - z);
        dxr[k] = dar;
        dxz[k] = daz;
        dxn[k] = dan;
        dhr[k] = dar;
        dhz[k] = daz;
        dhn[k] = dan * rr;
        carry[k] = dh * z;
    }
}

#[inline(always)]
fn gru_forward_body(j: &mut FwdPart, proj: &Projection, whh: &Packed, bhh: &[f32], h0: &[f32], h: usize) {
    let (bc, g3) = (j.part.bc, 3 * h);
    let mut hh = vec![0f32; bc * g3];
    for s in 0..j.gates.len() {
        let (ydone, yrest) = j.y.split_at_mut(s);
        let hp: &[f32] = if s == 0 { h0 } else { ydone[s - 1] };
        whh.matmul(bc, hp, h, &mut hh, g3, false);
        let gs = &mut *j.gates[s];
        proj.step(s, j.part, gs);
        let hns = &mut *j.aux[s];
        for r in 0..bc {
            let (gr, hr) = (&mut gs[r * g3..(r + 1) * g3], &hh[r * g3..(r + 1) * g3]);
            for k in 0..2 * h {
                gr[k] += hr[k];
            }
            sigmoid_inplace(&mut gr[..2 * h]);
            for k in 0..h {
                let hnk = hr[2 * h + k] + bhh[2 * h + k];
                hns[r * h + k] = hnk;
                gr[2 * h + k] += gr[k] * hnk;
            }
            tanh_inplace(&mut gr[2 * h..]);
        }
        let ys = &mut *yrest[0];
        for r in 0..bc {
            let gr = &gs[r * g3..(r + 1) * g3];
            for k in 0..h {
                let (z, n) = (gr[h + k], gr[2 * h + k]);
                ys[r * h + k] = n + z * (hp[r * h + k] - n);
            }
        }
        // Rows that have ended hold their state; their gates are never read back.
        for r in (0..bc).filter(|&r| held(j.len, r, s)) {
            ys[r * h..(r + 1) * h].copy_from_slice(&hp[r * h..(r + 1) * h]);
        }
    }
}

#[inline(always)]
fn gru_backward_body(c: &Cache, y: &[f32], dy: Dy<'_>, whh: &Packed, h0: &[f32], d: Dims, j: &mut BwdPart) {
    let (b, h, p) = (d.b, d.h, j.part);
    let (bc, g3) = (p.bc, 3 * h);
    let h0p = &h0[p.b0 * h..(p.b0 + p.bc) * h];
    let mut dh_next = vec![0f32; bc * h];
    let mut carry = vec![0f32; bc * h];
    for s in (0..d.t).rev() {
        let gs = rows(&c.gates, s, b, g3, p);
        let hns = rows(&c.aux, s, b, h, p);
        let hp = if s == 0 { h0p } else { rows(y, s - 1, b, h, p) };
        let dys = dy.rows(s, b, h, p);
        let dx = &mut *j.da[s];
        let dhs = &mut *j.dhh[s];
        for r in 0..bc {
            let (row, g) = (r * h..(r + 1) * h, r * g3..(r + 1) * g3);
            if held(j.len, r, s) {
                // `dh` passes to the step before unchanged: no gate gradient, so the product
                // below adds exactly zero to this row.
                for ((k, &a), &b) in carry[row.clone()].iter_mut().zip(&dys[row.clone()]).zip(&dh_next[row.clone()]) {
                    *k = a + b;
                }
                dx[g.clone()].fill(0.0);
                dhs[g].fill(0.0);
                continue;
            }
            gru_cell_backward(
                &gs[g.clone()],
                &hns[row.clone()],
                &hp[row.clone()],
                &dys[row.clone()],
                &dh_next[row.clone()],
                &mut dx[g.clone()],
                &mut dhs[g],
                &mut carry[row],
            );
        }
        // dh_{t-1} = dh ⊙ z + dHH_t W_hh
        whh.matmul(bc, dhs, g3, &mut carry, h, true);
        std::mem::swap(&mut dh_next, &mut carry);
    }
    j.dh0.copy_from_slice(&dh_next);
}
