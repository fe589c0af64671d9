//! Fused CPU kernels for a whole recurrent layer over a sequence, forward and backward
//! (backpropagation through time), as candle custom ops.
//!
//! Stepping candle tensor by tensor costs a dozen small ops, allocations and graph nodes per time
//! step; these kernels run the recurrence in plain loops over contiguous buffers, cache the gate
//! activations of the forward pass for the backward pass, and compute the recurrent weight
//! gradient as one large matmul over all steps. The math is the one documented in
//! [`super::rnn`]; the op-by-op path there stays the reference (and the path on non-CPU devices),
//! and the tests compare the two.
//!
//! The op takes the layer input `x` `[T, B, In]` (`In` may be 0: the decoder's first layer has no
//! input), all weights packed as `W = [W_ih | W_hh | b_ih | b_hh]` `[G*H, In+H+2]`, and `h0`
//! `[B, H]`, and returns every hidden state `[T, B, H]`. The input projection for all steps is
//! one matmul inside the op, and so are its gradients: large intermediate tensors never become
//! candle graph nodes.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use runtime::math::{sigmoid_inplace, tanh_inplace};

/// `C (m x n) (+)= A (m x k) · B (k x n)`, all row-major with the given row strides and unit
/// column strides, except where `*_t` marks the operand as stored transposed.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
) {
    matmul_par(m, n, k, c, accumulate, a, a_t, b, b_t, gemm::Parallelism::None)
}

/// [`matmul`] with a choice of threading (for the large whole-sequence products).
#[allow(clippy::too_many_arguments)]
fn matmul_par(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    par: gemm::Parallelism,
) {
    // Row-major strides of A (m x k) and B (k x n), or of their transposes as stored.
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n, "matmul operand too small");
    // SAFETY: the extents checked above cover every element the strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(candle_core::Error::Msg(format!("fused RNN: {what} must be f32")));
    };
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("fused RNN: {what} must be contiguous")))?;
    Ok(&v[a..b])
}

fn to_tensor(v: Vec<f32>, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())
}

/// Values saved by a forward pass for its backward pass.
struct Cache {
    /// Activated gates per step, `[T, B, G*H]`.
    gates: Vec<f32>,
    /// LSTM: cell state `c_t` `[T, B, H]`; GRU: the projected hidden part `h W_hn^T + b_hn`.
    aux: Vec<f32>,
    /// LSTM only: `tanh(c_t)` `[T, B, H]`.
    aux2: Vec<f32>,
    /// Hidden outputs `[T, B, H]`.
    y: Vec<f32>,
}

/// Which recurrence a [`SeqOp`] runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Lstm,
    Gru,
}

/// Dimensions of one call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    t: usize,
    b: usize,
    inp: usize,
    h: usize,
    g: usize,
}

impl Dims {
    fn gh(&self) -> usize {
        self.g * self.h
    }
    fn ld(&self) -> usize {
        self.inp + self.h + 2
    }
}

/// The packed weights split into contiguous blocks.
struct Weights {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

impl Weights {
    fn unpack(w: &[f32], d: Dims) -> Self {
        let (gh, ld, inp, h) = (d.gh(), d.ld(), d.inp, d.h);
        let mut out = Weights {
            w_ih: Vec::with_capacity(gh * inp),
            w_hh: Vec::with_capacity(gh * h),
            b_ih: Vec::with_capacity(gh),
            b_hh: Vec::with_capacity(gh),
        };
        for row in w.chunks_exact(ld) {
            out.w_ih.extend_from_slice(&row[..inp]);
            out.w_hh.extend_from_slice(&row[inp..inp + h]);
            out.b_ih.push(row[inp + h]);
            out.b_hh.push(row[inp + h + 1]);
        }
        out
    }
}

/// What the backward pass needs: per batch slice its cache, plus all hidden states.
struct OpCache {
    /// `(first row, rows, cache)` per batch slice.
    slices: Vec<(usize, usize, Cache)>,
    /// Hidden outputs `[T, B, H]`.
    y: Vec<f32>,
}

/// One recurrent layer over a whole sequence (see the module docs for the operands).
struct SeqOp {
    kind: Kind,
    cache: Mutex<Option<OpCache>>,
}

/// Batch rows never interact in a recurrence, so the batch is cut into one slice per thread and
/// each slice runs the whole sequence on its own: no synchronisation per time step.
fn batch_slices(b: usize) -> Vec<(usize, usize)> {
    let n = rayon::current_num_threads().min(b / 8).max(1);
    (0..n).map(|i| (i * b / n, (i + 1) * b / n - i * b / n)).collect()
}

/// Rows `b0..b0+bc` of every step of a `[T, B, width]` buffer, as `[T, bc, width]`.
fn gather(src: &[f32], t: usize, b: usize, width: usize, b0: usize, bc: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(t * bc * width);
    for s in 0..t {
        out.extend_from_slice(&src[(s * b + b0) * width..(s * b + b0 + bc) * width]);
    }
    out
}

/// Inverse of [`gather`].
fn scatter(dst: &mut [f32], src: &[f32], t: usize, b: usize, width: usize, b0: usize, bc: usize) {
    for s in 0..t {
        dst[(s * b + b0) * width..(s * b + b0 + bc) * width].copy_from_slice(&src[s * bc * width..(s + 1) * bc * width]);
    }
}

impl SeqOp {
    fn dims(&self, x: &Shape, w: &Shape, h0: &Shape) -> candle_core::Result<Dims> {
        let (t, b, inp) = x.dims3()?;
        let (b2, h) = h0.dims2()?;
        let g = match self.kind {
            Kind::Lstm => 4,
            Kind::Gru => 3,
        };
        let d = Dims { t, b, inp, h, g };
        if t == 0 || b == 0 || h == 0 || b2 != b || w.dims() != [d.gh(), d.ld()] {
            return Err(candle_core::Error::Msg(format!(
                "{}: shapes x {x:?}, w {w:?}, h0 {h0:?} do not fit (need non-empty x [T,B,In], w [G*H, In+H+2], h0 [B,H])",
                self.name()
            )));
        }
        Ok(d)
    }
}

impl CustomOp3 for SeqOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Lstm => "fused-lstm-seq",
            Kind::Gru => "fused-gru-seq",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l1.shape(), l2.shape(), l3.shape())?;
        let (x, w, h0) = (slice(s1, l1, "x")?, slice(s2, l2, "w")?, slice(s3, l3, "h0")?);
        let w = Weights::unpack(w, d);
        let xw = project(x, &w, d, self.kind);
        let (gh, h) = (d.gh(), d.h);
        let slices: Vec<(usize, usize, Cache)> = batch_slices(d.b)
            .into_par_iter()
            .map(|(b0, bc)| {
                let xs = gather(&xw, d.t, d.b, gh, b0, bc);
                let h0s = &h0[b0 * h..(b0 + bc) * h];
                let ds = Dims { b: bc, ..d };
                let c = match self.kind {
                    Kind::Lstm => lstm_forward(xs, &w.w_hh, h0s, ds),
                    Kind::Gru => gru_forward(xs, &w.w_hh, &w.b_hh, h0s, ds),
                };
                (b0, bc, c)
            })
            .collect();
        let mut y = vec![0f32; d.t * d.b * h];
        for (b0, bc, c) in &slices {
            scatter(&mut y, &c.y, d.t, d.b, h, *b0, *bc);
        }
        let out = y.clone();
        *self.cache.lock().map_err(|_| candle_core::Error::Msg("fused RNN cache poisoned".into()))? = Some(OpCache { slices, y });
        Ok((CpuStorage::F32(out), Shape::from((d.t, d.b, d.h))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        h0: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.cache.lock().map_err(|_| candle_core::Error::Msg("fused RNN cache poisoned".into()))?;
        let cache = guard.as_ref().ok_or_else(|| candle_core::Error::Msg("fused RNN: backward before forward".into()))?;
        let d = self.dims(x.shape(), w.shape(), h0.shape())?;
        let dy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let wv = Weights::unpack(&w.contiguous()?.flatten_all()?.to_vec1::<f32>()?, d);
        let h0v = h0.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (gh, h, inp, tb) = (d.gh(), d.h, d.inp, d.t * d.b);
        // da: gradient of the gate pre-activations' input part (x W_ih^T + b_ih);
        // dhh: of the recurrent part (h W_hh^T + b_hh); the same buffer for the LSTM.
        let parts: Vec<_> = cache
            .slices
            .par_iter()
            .map(|(b0, bc, c)| {
                let dys = gather(&dy, d.t, d.b, h, *b0, *bc);
                let ds = Dims { b: *bc, ..d };
                match self.kind {
                    Kind::Lstm => lstm_backward(c, &dys, &wv.w_hh, ds),
                    Kind::Gru => gru_backward(c, &dys, &wv.w_hh, &h0v[b0 * h..(b0 + bc) * h], ds),
                }
            })
            .collect();
        let mut da = vec![0f32; tb * gh];
        let mut dhh_full = if self.kind == Kind::Gru { vec![0f32; tb * gh] } else { Vec::new() };
        let mut dh0 = vec![0f32; d.b * h];
        for ((b0, bc, _), (a, hh, d0)) in cache.slices.iter().zip(&parts) {
            scatter(&mut da, a, d.t, d.b, gh, *b0, *bc);
            if let Some(hh) = hh {
                scatter(&mut dhh_full, hh, d.t, d.b, gh, *b0, *bc);
            }
            dh0[b0 * h..(b0 + bc) * h].copy_from_slice(d0);
        }
        let dhh = if self.kind == Kind::Gru { &dhh_full } else { &da };
        let dw_hh = recurrent_weight_grad(dhh, &cache.y, &h0v, d);
        let mut dw_ih = vec![0f32; gh * inp];
        let mut dx = vec![0f32; tb * inp];
        if inp > 0 {
            matmul_par(gh, inp, tb, &mut dw_ih, false, &da, true, &xv, false, threads());
            matmul_par(tb, inp, gh, &mut dx, false, &da, false, &wv.w_ih, false, threads());
        }
        let mut db_ih = vec![0f32; gh];
        let mut db_hh = vec![0f32; gh];
        for (row_a, row_h) in da.chunks_exact(gh).zip(dhh.chunks_exact(gh)) {
            for g in 0..gh {
                db_ih[g] += row_a[g];
                db_hh[g] += row_h[g];
            }
        }
        let ld = d.ld();
        let mut dw = vec![0f32; gh * ld];
        for g in 0..gh {
            let row = &mut dw[g * ld..(g + 1) * ld];
            row[..inp].copy_from_slice(&dw_ih[g * inp..(g + 1) * inp]);
            row[inp..inp + h].copy_from_slice(&dw_hh[g * h..(g + 1) * h]);
            row[inp + h] = db_ih[g];
            row[inp + h + 1] = db_hh[g];
        }
        Ok((Some(to_tensor(dx, x)?), Some(to_tensor(dw, w)?), Some(to_tensor(dh0, h0)?)))
    }
}

/// `x W_ih^T + b_ih` for every step, plus the biases that are simply added: all of `b_hh` for
/// the LSTM, the `r` and `z` blocks of `b_hh` for the GRU (its `n` block sits inside `r ⊙ ...`).
fn project(x: &[f32], w: &Weights, d: Dims, kind: Kind) -> Vec<f32> {
    let (gh, tb) = (d.gh(), d.t * d.b);
    let mut bias = w.b_ih.clone();
    let added = if kind == Kind::Lstm { gh } else { 2 * d.h };
    for g in 0..added {
        bias[g] += w.b_hh[g];
    }
    let mut xw = Vec::with_capacity(tb * gh);
    for _ in 0..tb {
        xw.extend_from_slice(&bias);
    }
    if d.inp > 0 {
        matmul_par(tb, gh, d.inp, &mut xw, true, x, false, &w.w_ih, true, threads());
    }
    xw
}

fn run(kind: Kind, x: &Tensor, w: &Tensor, h0: &Tensor) -> candle_core::Result<Tensor> {
    let op = SeqOp { kind, cache: Mutex::new(None) };
    x.contiguous()?.apply_op3_arc(&w.contiguous()?, &h0.contiguous()?, Arc::new(Box::new(op)))
}

/// LSTM layer over a sequence: `x` `[T,B,In]`, `w = [W_ih | W_hh | b_ih | b_hh]`
/// `[4H, In+H+2]`, `h0` `[B,H]`, `c0 = 0`. Returns every hidden state `[T,B,H]`.
pub fn lstm_seq(x: &Tensor, w: &Tensor, h0: &Tensor) -> candle_core::Result<Tensor> {
    run(Kind::Lstm, x, w, h0)
}

/// GRU layer over a sequence, operands as for [`lstm_seq`] with `3H` gate rows.
pub fn gru_seq(x: &Tensor, w: &Tensor, h0: &Tensor) -> candle_core::Result<Tensor> {
    run(Kind::Gru, x, w, h0)
}

/// Hidden state before step `t` (`h0` for the first step).
fn prev<'a>(y: &'a [f32], h0: &'a [f32], t: usize, bh: usize) -> &'a [f32] {
    if t == 0 {
        h0
    } else {
        &y[(t - 1) * bh..t * bh]
    }
}

fn lstm_forward(xw: Vec<f32>, w: &[f32], h0: &[f32], d: Dims) -> Cache {
    let (t, b, h) = (d.t, d.b, d.h);
    let (g4, bh) = (4 * h, b * h);
    let mut gates = xw;
    let mut cs = vec![0f32; t * bh];
    let mut tcs = vec![0f32; t * bh];
    let mut y = vec![0f32; t * bh];
    for s in 0..t {
        let (done, rest) = y.split_at_mut(s * bh);
        let hp = if s == 0 { h0 } else { &done[(s - 1) * bh..] };
        let a = &mut gates[s * b * g4..(s + 1) * b * g4];
        matmul(b, g4, h, a, true, hp, false, w, true);
        for r in 0..b {
            let row = &mut a[r * g4..(r + 1) * g4];
            let (sig1, rest_g) = row.split_at_mut(2 * h);
            sigmoid_inplace(sig1); // i, f
            let (gg, o) = rest_g.split_at_mut(h);
            tanh_inplace(gg);
            sigmoid_inplace(o);
        }
        let (cdone, crest) = cs.split_at_mut(s * bh);
        let c = &mut crest[..bh];
        let ys = &mut rest[..bh];
        let tc = &mut tcs[s * bh..(s + 1) * bh];
        let zeros = vec![0f32; bh];
        let cprev = if s == 0 { &zeros[..] } else { &cdone[(s - 1) * bh..] };
        for r in 0..b {
            let row = &a[r * g4..(r + 1) * g4];
            let (i, f, g) = (&row[..h], &row[h..2 * h], &row[2 * h..3 * h]);
            let (cr, cp) = (&mut c[r * h..(r + 1) * h], &cprev[r * h..(r + 1) * h]);
            for j in 0..h {
                cr[j] = f[j] * cp[j] + i[j] * g[j];
            }
        }
        tc.copy_from_slice(c);
        tanh_inplace(tc);
        for r in 0..b {
            let o = &a[r * g4 + 3 * h..(r + 1) * g4];
            let (yr, tr) = (&mut ys[r * h..(r + 1) * h], &tc[r * h..(r + 1) * h]);
            for j in 0..h {
                yr[j] = o[j] * tr[j];
            }
        }
    }
    Cache { gates, aux: cs, aux2: tcs, y }
}

/// Returns the gate pre-activation gradients `[T, B, 4H]` (input and recurrent parts are the
/// same for the LSTM) and `dh0`.
fn lstm_backward(c: &Cache, dy: &[f32], w: &[f32], d: Dims) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
    let (t, b, h) = (d.t, d.b, d.h);
    let (g4, bh) = (4 * h, b * h);
    let mut da = vec![0f32; t * b * g4];
    let mut dh_next = vec![0f32; bh];
    let mut dc_next = vec![0f32; bh];
    for s in (0..t).rev() {
        let gates = &c.gates[s * b * g4..(s + 1) * b * g4];
        let tc = &c.aux2[s * bh..(s + 1) * bh];
        let das = &mut da[s * b * g4..(s + 1) * b * g4];
        let zeros = vec![0f32; h];
        for r in 0..b {
            // Equal-length row slices let the compiler drop bounds checks and vectorise.
            let gr = &gates[r * g4..(r + 1) * g4];
            let (gi, rest) = gr.split_at(h);
            let (gf, rest) = rest.split_at(h);
            let (gg, go) = rest.split_at(h);
            let dr = &mut das[r * g4..(r + 1) * g4];
            let (di, rest) = dr.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dg, dout) = rest.split_at_mut(h);
            let row = r * h..(r + 1) * h;
            let dyr = &dy[s * bh..(s + 1) * bh][row.clone()];
            let dhn = &dh_next[row.clone()];
            let tcr = &tc[row.clone()];
            let cp = if s == 0 { &zeros[..] } else { &c.aux[(s - 1) * bh..s * bh][row.clone()] };
            let dcn = &mut dc_next[row];
            for j in 0..h {
                let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
                let dh = dyr[j] + dhn[j];
                let tck = tcr[j];
                let dc = dcn[j] + dh * o * (1.0 - tck * tck);
                di[j] = dc * g * i * (1.0 - i);
                df[j] = dc * cp[j] * f * (1.0 - f);
                dg[j] = dc * i * (1.0 - g * g);
                dout[j] = dh * tck * o * (1.0 - o);
                dcn[j] = dc * f;
            }
        }
        // dh_{t-1} = dA_t W_hh
        matmul(b, h, g4, &mut dh_next, false, das, false, w, false);
    }
    (da, None, dh_next)
}

/// `dW_hh = Σ_t dA_tᵀ h_{t-1}` as one `[G*H, T*B] x [T*B, H]` matmul.
fn recurrent_weight_grad(da: &[f32], y: &[f32], h0: &[f32], d: Dims) -> Vec<f32> {
    let bh = d.b * d.h;
    let mut hprev = Vec::with_capacity(d.t * bh);
    hprev.extend_from_slice(h0);
    hprev.extend_from_slice(&y[..(d.t - 1) * bh]);
    let mut dw = vec![0f32; d.gh() * d.h];
    matmul_par(d.gh(), d.h, d.t * d.b, &mut dw, false, da, true, &hprev, false, threads());
    dw
}

/// `xw` already holds `x W_ih^T + b_ih` plus the `r`, `z` blocks of `b_hh`.
fn gru_forward(xw: Vec<f32>, whh: &[f32], bhh: &[f32], h0: &[f32], d: Dims) -> Cache {
    let (t, b, h) = (d.t, d.b, d.h);
    let (g3, bh) = (3 * h, b * h);
    let mut gates = vec![0f32; t * b * g3]; // r, z, n
    let mut hn = vec![0f32; t * bh];
    let mut y = vec![0f32; t * bh];
    let mut hh = vec![0f32; b * g3];
    for s in 0..t {
        let (done, rest) = y.split_at_mut(s * bh);
        let hp = if s == 0 { h0 } else { &done[(s - 1) * bh..] };
        matmul(b, g3, h, &mut hh, false, hp, false, whh, true);
        let gs = &mut gates[s * b * g3..(s + 1) * b * g3];
        let x = &xw[s * b * g3..(s + 1) * b * g3];
        let hns = &mut hn[s * bh..(s + 1) * bh];
        for r in 0..b {
            let (gr, xr, hr) = (&mut gs[r * g3..(r + 1) * g3], &x[r * g3..(r + 1) * g3], &hh[r * g3..(r + 1) * g3]);
            for j in 0..2 * h {
                gr[j] = xr[j] + hr[j];
            }
            sigmoid_inplace(&mut gr[..2 * h]);
            for j in 0..h {
                let hnj = hr[2 * h + j] + bhh[2 * h + j];
                hns[r * h + j] = hnj;
                gr[2 * h + j] = xr[2 * h + j] + gr[j] * hnj;
            }
            tanh_inplace(&mut gr[2 * h..]);
        }
        let ys = &mut rest[..bh];
        for r in 0..b {
            let gr = &gs[r * g3..(r + 1) * g3];
            for j in 0..h {
                let (z, n) = (gr[h + j], gr[2 * h + j]);
                ys[r * h + j] = n + z * (hp[r * h + j] - n);
            }
        }
    }
    Cache { gates, aux: hn, aux2: Vec::new(), y }
}

/// Returns the gradients of the input part `[T, B, 3H]`, of the recurrent part
/// `h W_hh^T + b_hh` `[T, B, 3H]`, and `dh0`.
fn gru_backward(c: &Cache, dy: &[f32], whh: &[f32], h0: &[f32], d: Dims) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
    let (t, b, h) = (d.t, d.b, d.h);
    let (g3, bh) = (3 * h, b * h);
    let mut dxw = vec![0f32; t * b * g3];
    let mut dhh = vec![0f32; t * b * g3]; // gradient of h W_hh^T + b_hh
    let mut dh_next = vec![0f32; bh];
    let mut carry = vec![0f32; bh];
    for s in (0..t).rev() {
        let gs = &c.gates[s * b * g3..(s + 1) * b * g3];
        let hns = &c.aux[s * bh..(s + 1) * bh];
        let hp = prev(&c.y, h0, s, bh);
        let dx = &mut dxw[s * b * g3..(s + 1) * b * g3];
        let dhs = &mut dhh[s * b * g3..(s + 1) * b * g3];
        for r in 0..b {
            let gr = &gs[r * g3..(r + 1) * g3];
            for j in 0..h {
                let k = r * h + j;
                let (rr, z, n) = (gr[j], gr[h + j], gr[2 * h + j]);
                let dh = dy[s * bh + k] + dh_next[k];
                let dan = dh * (1.0 - z) * (1.0 - n * n);
                let dar = dan * hns[k] * rr * (1.0 - rr);
                let daz = dh * (hp[k] - n) * z * (1.0 - z);
                dx[r * g3 + j] = dar;
                dx[r * g3 + h + j] = daz;
                dx[r * g3 + 2 * h + j] = dan;
                dhs[r * g3 + j] = dar;
                dhs[r * g3 + h + j] = daz;
                dhs[r * g3 + 2 * h + j] = dan * rr;
                carry[k] = dh * z;
            }
        }
        // dh_{t-1} = dh ⊙ z + dHH_t W_hh
        matmul(b, h, g3, &mut carry, true, dhs, false, whh, false);
        std::mem::swap(&mut dh_next, &mut carry);
    }
    (dxw, Some(dhh), dh_next)
}
