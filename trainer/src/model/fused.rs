//! Fused CPU kernels for a whole recurrent layer over a sequence, forward and backward
//! (backpropagation through time), as candle custom ops.
//!
//! Stepping candle tensor by tensor costs a dozen small ops, allocations and graph nodes per time
//! step; these kernels run the recurrence in plain loops over contiguous buffers, cache the gate
//! activations of the forward pass for the backward pass, and compute the weight gradients in
//! large products: the GRU's as one matmul over all steps after the backward walk, the LSTM's
//! every few steps during it, from the gate gradients still in cache (see [`lstm_bwd`]). The
//! per-step products `h W_hhᵀ` and `dA W_hh`
//! use [`Packed`] weights, packed once per call instead of once per step. The math is the one documented in
//! [`super::rnn`]; the op-by-op path there stays the reference (and the path on non-CPU devices),
//! and the tests compare the two.
//!
//! The op takes the layer input `x` `[T, B, In]` (`In` may be 0: the decoder's first layer has no
//! input), all weights packed as `W = [W_ih | W_hh | b_ih | b_hh]` `[G*H, In+H+2]`, and `h0`
//! `[B, H]`, and returns every hidden state `[T, B, H]`. The input projection is computed inside
//! the op (each step's rows just before its recurrent product), and so are its gradients: large
//! intermediate tensors never become candle graph nodes.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::params::Cell;
use runtime::math::{sigmoid_inplace, tanh_inplace};

use super::activation::GateActivations;
use super::packed::{Aligned, Packed};
use super::weight_grad::{self, StepRows};

/// `C (m x n) (+)= A (m x k) · B (k x n)`, all row-major with unit column strides, except where
/// `*_t` marks the operand as stored transposed; for the large whole-sequence products (the
/// per-step products use [`Packed`]).
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
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("fused RNN: {what} must be contiguous")))?;
    Ok(&v[a..b])
}

fn to_tensor(v: Vec<f32>, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())
}

/// A tensor's f32 values, borrowed from its CPU storage (no copy).
fn borrow<'a>(storage: &'a candle_core::Storage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match storage {
        candle_core::Storage::Cpu(s) => slice(s, l, what),
        _ => Err(candle_core::Error::Msg(format!("fused RNN: {what} must be on the CPU"))),
    }
}

/// Buffers of the last batches, handed out again instead of fresh zero-filled ones: every
/// training step allocates the same multi-megabyte `[T, B, ·]` buffers, and filling them with zeros that
/// the kernels then overwrite was ~6% of a training step. A recycled buffer holds the previous
/// batch's values, so only buffers that are written in full before they are read come from here.
/// It holds at most [`POOL_MAX`] buffers, about one batch's working set, for the life of the
/// process.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Enough for the buffers of a two-layer encoder and decoder; past it the oldest buffer is freed,
/// so sizes that stop recurring (an epoch's last, shorter batch) age out.
const POOL_MAX: usize = 24;

/// A buffer of `len` values that the caller overwrites in full (contents unspecified).
fn take(len: usize) -> Vec<f32> {
    let recycled = POOL.lock().ok().and_then(|mut pool| {
        let i = pool.iter().rposition(|v| v.len() == len)?;
        Some(pool.remove(i))
    });
    recycled.unwrap_or_else(|| vec![0f32; len])
}

/// Returns a buffer to the pool.
fn give(v: Vec<f32>) {
    if v.is_empty() {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() >= POOL_MAX {
            pool.remove(0);
        }
        pool.push(v);
    }
}

/// Fills the buffer pool with NaN buffers of these lengths, so that a kernel reading a value of a
/// recycled buffer that it did not write first shows up as NaN in a test.
#[cfg(test)]
pub(super) fn poison_pool(lens: &[usize]) {
    for &n in lens {
        give(vec![f32::NAN; n]);
    }
}

/// Values saved by a forward pass for its backward pass, each `[T, B, ·]`. The hidden outputs
/// are the op's result, which candle hands back to the backward pass.
struct Cache {
    /// Activated gates `[T, B, G*H]`.
    gates: Vec<f32>,
    /// LSTM: cell state `c_t`; GRU: the projected hidden part `h W_hn^T + b_hn`. `[T, B, H]`.
    aux: Vec<f32>,
    /// LSTM: `tanh(c_t)` `[T, B, H]`; GRU: empty.
    aux2: Vec<f32>,
    /// The hidden states `[T, B, H]` where the op returns only the last step's; else empty.
    y: Vec<f32>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for v in [&mut self.gates, &mut self.aux, &mut self.aux2, &mut self.y] {
            give(std::mem::take(v));
        }
    }
}

/// What a recurrent stack returns ([`super::rnn::Rnn::forward`], these kernels). On the fused path the top layer returns exactly this, because
/// candle zero-fills and adds a gradient of the full size of every tensor in the graph: an
/// encoder that needs only the last state or a linear layer over every step's rows then never
/// makes candle build `[T, B, H]` gradients for a reshape or a slice.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Output {
    /// Every hidden state `[T, B, H]`.
    Seq,
    /// Every hidden state as rows `[T·B, H]`.
    Flat,
    /// The last hidden state `[B, H]`.
    Last,
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

/// One recurrent layer over a whole sequence (see the module docs for the operands).
struct SeqOp {
    kind: Cell,
    /// What the op returns.
    out: Output,
    cache: Mutex<Option<Cache>>,
}

/// Batch rows `b0..b0 + bc`: the share of one thread.
#[derive(Clone, Copy, Debug)]
struct Part {
    b0: usize,
    bc: usize,
}

/// Batch rows never interact in a recurrence, so the batch is cut into one part per thread and
/// each part runs the whole sequence on its own: no synchronisation per time step.
fn batch_parts(b: usize) -> Vec<Part> {
    let n = (b / 16).max(1);
    (0..n).map(|i| Part { b0: i * b / n, bc: (i + 1) * b / n - i * b / n }).collect()
}

/// A `[T, B, width]` buffer cut into each part's rows at every step: `out[part][step]`, disjoint
/// mutable slices, so the parts can fill one shared buffer in parallel without copies. An empty
/// buffer gives every part no steps.
fn split_parts<'a>(buf: &'a mut [f32], b: usize, width: usize, parts: &[Part]) -> Vec<Vec<&'a mut [f32]>> {
    let mut out: Vec<Vec<&mut [f32]>> = parts.iter().map(|_| Vec::new()).collect();
    if buf.is_empty() {
        return out;
    }
    for step in buf.chunks_exact_mut(b * width) {
        let mut rest = step;
        for (o, p) in out.iter_mut().zip(parts) {
            let (mine, tail) = rest.split_at_mut(p.bc * width);
            o.push(mine);
            rest = tail;
        }
    }
    out
}

/// The rows of part `p` at step `s` of a `[T, B, width]` buffer.
fn rows(buf: &[f32], s: usize, b: usize, width: usize, p: Part) -> &[f32] {
    &buf[(s * b + p.b0) * width..(s * b + p.b0 + p.bc) * width]
}

impl SeqOp {
    fn dims(&self, x: &Shape, w: &Shape, h0: &Shape) -> candle_core::Result<Dims> {
        let (t, b, inp) = x.dims3()?;
        let (b2, h) = h0.dims2()?;
        let g = self.kind.gates();
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

/// What one part's forward pass writes: its rows of each cached buffer, per step.
struct FwdPart<'a> {
    part: Part,
    gates: Vec<&'a mut [f32]>,
    y: Vec<&'a mut [f32]>,
    aux: Vec<&'a mut [f32]>,
    aux2: Vec<&'a mut [f32]>,
}

/// What one part's GRU backward pass writes: its rows of the gate gradients per step, and of `dh0`.
struct BwdPart<'a> {
    part: Part,
    da: Vec<&'a mut [f32]>,
    dhh: Vec<&'a mut [f32]>,
    dh0: &'a mut [f32],
}

impl CustomOp3 for SeqOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Cell::Lstm => "fused-lstm-seq",
            Cell::Gru => "fused-gru-seq",
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
        let (t, b, h, gh) = (d.t, d.b, d.h, d.gh());
        // Each step writes its input projection into its gate rows and activates them in place.
        let proj = Projection::new(x, &w, d, self.kind);
        let mut gates = take(t * b * gh);
        // h_{t-1} W_hhᵀ at every step: B = W_hhᵀ, [H, G·H].
        let whh_t = Packed::new(&w.w_hh, h, gh, h, true);
        // Every step writes all rows of these.
        let mut y = take(t * b * h);
        let mut aux = take(t * b * h);
        let mut aux2 = if self.kind == Cell::Lstm { take(t * b * h) } else { Vec::new() };
        let parts = batch_parts(b);
        let jobs: Vec<FwdPart> = parts
            .iter()
            .zip(split_parts(&mut gates, b, gh, &parts))
            .zip(split_parts(&mut y, b, h, &parts))
            .zip(split_parts(&mut aux, b, h, &parts))
            .zip(split_parts(&mut aux2, b, h, &parts))
            .map(|((((&part, gates), y), aux), aux2)| FwdPart { part, gates, y, aux, aux2 })
            .collect();
        jobs.into_par_iter().for_each(|mut j| {
            let h0p = &h0[j.part.b0 * h..(j.part.b0 + j.part.bc) * h];
            match self.kind {
                Cell::Lstm => lstm_forward(&mut j, &proj, &whh_t, h0p, h),
                Cell::Gru => gru_forward(&mut j, &proj, &whh_t, &w.b_hh, h0p, h),
            }
        });
        let (out, shape, y) = match self.out {
            Output::Last => (y[(t - 1) * b * h..].to_vec(), Shape::from((b, h)), y),
            Output::Seq => (y, Shape::from((t, b, h)), Vec::new()),
            Output::Flat => (y, Shape::from((t * b, h)), Vec::new()),
        };
        *self.cache.lock().map_err(|_| candle_core::Error::Msg("fused RNN cache poisoned".into()))? = Some(Cache { gates, aux, aux2, y });
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        h0: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.cache.lock().map_err(|_| candle_core::Error::Msg("fused RNN cache poisoned".into()))?;
        let cache = guard.as_ref().ok_or_else(|| candle_core::Error::Msg("fused RNN: backward before forward".into()))?;
        let d = self.dims(x.shape(), w.shape(), h0.shape())?;
        let (grad, w_c, h0_c, x_c, y_c) = (grad.contiguous()?, w.contiguous()?, h0.contiguous()?, x.contiguous()?, res.contiguous()?);
        let ((dy_s, dy_l), (w_s, w_l), (h0_s, h0_l), (x_s, x_l), (y_s, y_l)) = (
            grad.storage_and_layout(),
            w_c.storage_and_layout(),
            h0_c.storage_and_layout(),
            x_c.storage_and_layout(),
            y_c.storage_and_layout(),
        );
        let dy = borrow(&dy_s, dy_l, "gradient")?;
        let last_only = self.out == Output::Last;
        let yv = if last_only { &cache.y[..] } else { borrow(&y_s, y_l, "output")? };
        let zeros = if last_only { vec![0f32; d.b * d.h] } else { Vec::new() };
        let dy = Dy { data: dy, last_only, t: d.t, zeros: &zeros };
        if dy.data.len() != if last_only { d.b * d.h } else { d.t * d.b * d.h } {
            return Err(candle_core::Error::Msg(format!("{}: output gradient has {} values", self.name(), dy.data.len())));
        }
        if yv.len() != d.t * d.b * d.h {
            return Err(candle_core::Error::Msg(format!("{}: output has {} values, not T·B·H", self.name(), yv.len())));
        }
        let wv = Weights::unpack(borrow(&w_s, w_l, "w")?, d);
        let h0v = borrow(&h0_s, h0_l, "h0")?;
        let xv = borrow(&x_s, x_l, "x")?;
        let (gh, h, inp, tb) = (d.gh(), d.h, d.inp, d.t * d.b);
        // dA_t W_hh at every step: B = W_hh, [G·H, H].
        let whh = Packed::new(&wv.w_hh, gh, h, h, false);
        let want_dx = x.track_op();
        if self.kind == Cell::Lstm {
            let (dx, dw, dh0) = lstm_bwd(cache, dy, yv, h0v, xv, &wv, &whh, want_dx, d);
            let dx = if want_dx { Some(to_tensor(dx, x)?) } else { None };
            return Ok((dx, Some(to_tensor(dw, w)?), Some(to_tensor(dh0, h0)?)));
        }
        // The GRU. da: gradient of the gate pre-activations' input part (x W_ih^T + b_ih);
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
            .map(|(((&part, da), dhh), dh0)| BwdPart { part, da, dhh, dh0 })
            .collect();
        jobs.into_par_iter().for_each(|mut j| gru_backward(cache, yv, dy, &whh, h0v, d, &mut j));
        let dw_hh = recurrent_weight_grad(&dhh, yv, h0v, d);
        let mut dw_ih = vec![0f32; gh * inp];
        // The gradient of data (the encoder's input) is never used: skip that pass over `da`.
        let mut dx = vec![0f32; if want_dx { tb * inp } else { 0 }];
        if inp > 0 {
            matmul_par(gh, inp, tb, &mut dw_ih, false, &da, true, xv, false, threads());
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
        let dx = if want_dx { Some(to_tensor(dx, x)?) } else { None };
        Ok((dx, Some(to_tensor(dw, w)?), Some(to_tensor(dh0, h0)?)))
    }
}

/// `Σ_r buf[r][g]` for every column `g` of a row-major `[·, width]` buffer, each sum in row
/// order; threads take disjoint column ranges, so the bits do not depend on the thread count.
fn column_sums(buf: &[f32], width: usize) -> Vec<f32> {
    let sums = |cols: std::ops::Range<usize>| {
        let mut acc = vec![0f32; cols.len()];
        for row in buf.chunks_exact(width) {
            for (a, &v) in acc.iter_mut().zip(&row[cols.clone()]) {
                *a += v;
            }
        }
        acc
    };
    let n = rayon::current_num_threads().min(width.div_ceil(64)).max(1);
    if n == 1 {
        return sums(0..width);
    }
    // Ranges of whole cache lines (16 values) so threads never share one.
    let per = width.div_ceil(n).div_ceil(16) * 16;
    (0..n).into_par_iter().map(|i| sums((i * per).min(width)..((i + 1) * per).min(width))).flatten_iter().collect()
}

/// The input part of the gate pre-activations, `x_t W_ih^T + b_ih` plus the biases that are
/// simply added (all of `b_hh` for the LSTM, the `r` and `z` blocks of `b_hh` for the GRU, whose
/// `n` block sits inside `r ⊙ ...`), written by each step into its own gate rows just before the
/// recurrent product adds to them: filled while they are in L1 instead of in a separate pass over
/// the whole `[T, B, G·H]` buffer. gemm gives each row the same bits either way (its sums run
/// along `In`, one block for input widths like these).
struct Projection<'a> {
    x: &'a [f32],
    w_ih: &'a [f32],
    bias: Vec<f32>,
    inp: usize,
    b: usize,
}

impl<'a> Projection<'a> {
    fn new(x: &'a [f32], w: &'a Weights, d: Dims, kind: Cell) -> Self {
        let mut bias = w.b_ih.clone();
        let added = if kind == Cell::Lstm { d.gh() } else { 2 * d.h };
        for (b, &r) in bias.iter_mut().zip(&w.b_hh).take(added) {
            *b += r;
        }
        Projection { x, w_ih: &w.w_ih, bias, inp: d.inp, b: d.b }
    }

    /// Part `p`'s rows of step `s` into `out` (`[bc, G·H]`).
    fn step(&self, s: usize, p: Part, out: &mut [f32]) {
        let gh = self.bias.len();
        if self.inp == 1 {
            // One input feature: `b + x·w` per value, which is what gemm computes for an inner
            // dimension of 1 (the product rounded, then added), without a gemm call per step.
            let xs = rows(self.x, s, self.b, 1, p);
            for (row, &xv) in out.chunks_exact_mut(gh).zip(xs) {
                for ((o, &b), &w) in row.iter_mut().zip(&self.bias).zip(self.w_ih) {
                    *o = b + xv * w;
                }
            }
            return;
        }
        for row in out.chunks_exact_mut(gh) {
            row.copy_from_slice(&self.bias);
        }
        if self.inp > 0 {
            let xs = rows(self.x, s, self.b, self.inp, p);
            matmul_par(p.bc, gh, self.inp, out, true, xs, false, self.w_ih, true, gemm::Parallelism::None);
        }
    }
}

fn run(kind: Cell, out: Output, x: &Tensor, w: &Tensor, h0: &Tensor) -> candle_core::Result<Tensor> {
    let op = SeqOp { kind, out, cache: Mutex::new(None) };
    x.contiguous()?.apply_op3_arc(&w.contiguous()?, &h0.contiguous()?, Arc::new(Box::new(op)))
}

/// LSTM layer over a sequence: `x` `[T,B,In]`, `w = [W_ih | W_hh | b_ih | b_hh]`
/// `[4H, In+H+2]`, `h0` `[B,H]`, `c0 = 0`. Returns the hidden states as `out` says.
pub fn lstm_seq(x: &Tensor, w: &Tensor, h0: &Tensor, out: Output) -> candle_core::Result<Tensor> {
    run(Cell::Lstm, out, x, w, h0)
}

/// GRU layer over a sequence, operands as for [`lstm_seq`] with `3H` gate rows.
pub fn gru_seq(x: &Tensor, w: &Tensor, h0: &Tensor, out: Output) -> candle_core::Result<Tensor> {
    run(Cell::Gru, out, x, w, h0)
}

/// The gradient of the op's output: every step's `[T, B, H]`, or only the last step's `[B, H]`
/// (the others are zero).
#[derive(Clone, Copy)]
struct Dy<'a> {
    data: &'a [f32],
    last_only: bool,
    t: usize,
    /// `[B, H]` zeros where `last_only`.
    zeros: &'a [f32],
}

impl<'a> Dy<'a> {
    /// Part `p`'s rows at step `s`.
    fn rows(&self, s: usize, b: usize, h: usize, p: Part) -> &'a [f32] {
        match (self.last_only, s + 1 == self.t) {
            (false, _) => rows(self.data, s, b, h, p),
            (true, true) => rows(self.data, 0, b, h, p),
            (true, false) => &self.zeros[..p.bc * h],
        }
    }
}

/// The GRU's `dW_hh = Σ_t dA_tᵀ h_{t-1}` as one `[G*H, T*B] x [T*B, H]` matmul ([`super::weight_grad`]'s
/// AVX-512 kernel where it reproduces gemm's bits, gemm otherwise).
fn recurrent_weight_grad(da: &[f32], y: &[f32], h0: &[f32], d: Dims) -> Vec<f32> {
    let bh = d.b * d.h;
    let (m, n, k) = (d.gh(), d.h, d.t * d.b);
    #[cfg(target_arch = "x86_64")]
    if super::weight_grad::avx512_applies(m, n, k) {
        let hprev = super::weight_grad::Rows { head: h0, tail: &y[..(d.t - 1) * bh] };
        return super::weight_grad::avx512(da, hprev, m, n, k, rayon::current_num_threads());
    }
    let mut hprev = Vec::with_capacity(d.t * bh);
    hprev.extend_from_slice(h0);
    hprev.extend_from_slice(&y[..(d.t - 1) * bh]);
    let mut dw = vec![0f32; m * n];
    matmul_par(m, n, k, &mut dw, false, da, true, &hprev, false, threads());
    dw
}

/// Defines `$name`, which runs `$body` compiled for AVX-512 when the CPU has it (the element-wise
/// loops then vectorise 16 wide instead of SSE2's 4) and as built otherwise. Rust never contracts
/// `a * b + c` into an FMA, so both versions compute the same bits.
macro_rules! avx512_or_baseline {
    ($(#[$m:meta])* fn $name:ident / $fast:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if runtime::math::has_avx512() {
                // SAFETY: the CPU supports AVX-512F (checked at run time).
                return unsafe { $fast($($arg),*) };
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $fast($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

avx512_or_baseline!(
    /// One part's LSTM forward pass.
    fn lstm_forward / lstm_forward_avx512 => lstm_forward_body(j: &mut FwdPart<'_>, proj: &Projection<'_>, w: &Packed, h0: &[f32], h: usize)
);
avx512_or_baseline!(
    /// One part's LSTM backward pass: its rows of `dx` (where wanted) and `dh0`, and the weight
    /// gradient sums of each of its groups into `j.dw`.
    fn lstm_backward / lstm_backward_avx512 => lstm_backward_body(c: &Cache, io: &LstmIo<'_>, w: &LstmBwdWeights<'_>, d: Dims, j: &mut LstmBwdPart<'_>)
);
avx512_or_baseline!(
    /// One part's GRU forward pass; each step writes its input projection into `j.gates`, which
    /// holds the activated gates `r, z, n` on exit.
    fn gru_forward / gru_forward_avx512 => gru_forward_body(j: &mut FwdPart<'_>, proj: &Projection<'_>, whh: &Packed, bhh: &[f32], h0: &[f32], h: usize)
);
avx512_or_baseline!(
    /// One part's GRU backward pass: fills its rows of the gradients of the input part
    /// `[T, B, 3H]` (`j.da`), of the recurrent part `h W_hh^T + b_hh` (`j.dhh`), and of `dh0`.
    fn gru_backward / gru_backward_avx512 => gru_backward_body(c: &Cache, y: &[f32], dy: Dy<'_>, whh: &Packed, h0: &[f32], d: Dims, j: &mut BwdPart<'_>)
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

/// The tensors an LSTM backward pass reads besides its cache, each `[T, B, ·]` except `h0`.
struct LstmIo<'a> {
    dy: Dy<'a>,
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
#[allow(clippy::too_many_arguments)]
fn lstm_bwd(
    c: &Cache,
    dy: Dy<'_>,
    y: &[f32],
    h0: &[f32],
    x: &[f32],
    wv: &Weights,
    whh: &Packed,
    want_dx: bool,
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, h, inp, gh) = (d.b, d.h, d.inp, d.gh());
    let want_dx = want_dx && inp > 0;
    let wih = want_dx.then(|| Packed::new(&wv.w_ih, gh, inp, inp, false));
    let weights = LstmBwdWeights { whh, wih: wih.as_ref() };
    let io = LstmIo { dy, y, h0, x };
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
