//! Fused CPU kernels for a whole recurrent layer over a sequence, forward and backward
//! (backpropagation through time), as candle custom ops.
//!
//! Stepping candle tensor by tensor costs a dozen small ops, allocations and graph nodes per time
//! step; these kernels run the recurrence in plain loops over contiguous buffers, cache the gate
//! activations of the forward pass for the backward pass, and compute the weight gradients in
//! large products: the GRU's as one matmul over all steps after the backward walk, the LSTM's
//! every few steps during it, from the gate gradients still in cache (see [`lstm::backward`]). The
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
//!
//! Files: this one is the candle op glue (shapes, batch parts, the input projection, the weight
//! gradient products); [`lstm`] and [`gru`] hold each cell's forward and backward walks; [`pool`]
//! recycles the large step buffers.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::params::Cell;

use super::kernels::packed::Packed;
use pool::{give, take};

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
    /// Each batch row's own length (see [`lstm_seq`]); `None`: every row runs all `T` steps.
    lengths: Option<Vec<usize>>,
    cache: Mutex<Option<Cache>>,
}

/// Whether row `r` of `len` has ended before step `s`, so the step holds its state.
#[inline(always)]
fn held(len: Option<&[usize]>, r: usize, s: usize) -> bool {
    len.is_some_and(|l| l[r] <= s)
}

/// Batch rows `b0..b0 + bc`: the share of one thread.
#[derive(Clone, Copy, Debug)]
struct Part {
    b0: usize,
    bc: usize,
}

impl Part {
    /// The part's rows of the batch's row lengths.
    fn lengths(self, lengths: Option<&[usize]>) -> Option<&[usize]> {
        lengths.map(|l| &l[self.b0..self.b0 + self.bc])
    }
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
        if let Some(l) = &self.lengths {
            if l.len() != b || l.iter().any(|&n| n == 0 || n > t) {
                return Err(candle_core::Error::Msg(format!(
                    "{}: {} row lengths for {b} rows of {t} steps (each must be 1..={t})",
                    self.name(),
                    l.len()
                )));
            }
        }
        Ok(d)
    }
}

/// What one part's forward pass writes: its rows of each cached buffer, per step.
struct FwdPart<'a> {
    part: Part,
    /// The part's row lengths (`None`: all run every step); an ended row holds its state.
    len: Option<&'a [usize]>,
    gates: Vec<&'a mut [f32]>,
    y: Vec<&'a mut [f32]>,
    aux: Vec<&'a mut [f32]>,
    aux2: Vec<&'a mut [f32]>,
}

/// What one part's GRU backward pass writes: its rows of the gate gradients per step, and of `dh0`.
struct BwdPart<'a> {
    part: Part,
    len: Option<&'a [usize]>,
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
            .map(|((((&part, gates), y), aux), aux2)| FwdPart { part, len: part.lengths(self.lengths.as_deref()), gates, y, aux, aux2 })
            .collect();
        jobs.into_par_iter().for_each(|mut j| {
            let h0p = &h0[j.part.b0 * h..(j.part.b0 + j.part.bc) * h];
            match self.kind {
                Cell::Lstm => lstm::forward(&mut j, &proj, &whh_t, h0p, h),
                Cell::Gru => gru::forward(&mut j, &proj, &whh_t, &w.b_hh, h0p, h),
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
        let (gh, h) = (d.gh(), d.h);
        // dA_t W_hh at every step: B = W_hh, [G·H, H].
        let whh = Packed::new(&wv.w_hh, gh, h, h, false);
        let want_dx = x.track_op();
        let args = Backward { c: cache, dy, y: yv, h0: h0v, x: xv, w: &wv, whh: &whh, want_dx, lengths: self.lengths.as_deref(), d };
        let (dx, dw, dh0) = match self.kind {
            Cell::Lstm => lstm::backward(&args),
            Cell::Gru => gru::backward(&args),
        };
        let dx = if want_dx { Some(to_tensor(dx, x)?) } else { None };
        Ok((dx, Some(to_tensor(dw, w)?), Some(to_tensor(dh0, h0)?)))
    }
}

/// What either cell's backward pass reads: the forward pass's cache, the output's gradient, the
/// op's operands (`y`: every hidden state), `W_hh` packed for `dA_t W_hh`, and whether the
/// input's gradient is wanted.
#[derive(Clone, Copy)]
struct Backward<'a> {
    c: &'a Cache,
    dy: Dy<'a>,
    y: &'a [f32],
    h0: &'a [f32],
    x: &'a [f32],
    w: &'a Weights,
    whh: &'a Packed,
    want_dx: bool,
    /// Row lengths, as the forward pass had them.
    lengths: Option<&'a [usize]>,
    d: Dims,
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

fn run(kind: Cell, out: Output, x: &Tensor, w: &Tensor, h0: &Tensor, lengths: Option<&[usize]>) -> candle_core::Result<Tensor> {
    let op = SeqOp { kind, out, lengths: lengths.map(<[usize]>::to_vec), cache: Mutex::new(None) };
    x.contiguous()?.apply_op3_arc(&w.contiguous()?, &h0.contiguous()?, Arc::new(Box::new(op)))
}

/// LSTM layer over a sequence: `x` `[T,B,In]`, `w = [W_ih | W_hh | b_ih | b_hh]`
/// `[4H, In+H+2]`, `h0` `[B,H]`, `c0 = 0`. Returns the hidden states as `out` says.
///
/// `lengths` (one per batch row, each in `1..=T`) makes a padded batch of unequal series: from
/// step `lengths[b]` on, row `b` holds its state (`h_t = h_{t-1}`, `c_t = c_{t-1}`), so its last
/// hidden state is the one at its own last step and its padding steps get no gradient; the
/// gradient reaching a held step passes to the step before it unchanged.
pub fn lstm_seq(x: &Tensor, w: &Tensor, h0: &Tensor, out: Output, lengths: Option<&[usize]>) -> candle_core::Result<Tensor> {
    run(Cell::Lstm, out, x, w, h0, lengths)
}

/// GRU layer over a sequence, operands (and `lengths`) as for [`lstm_seq`] with `3H` gate rows.
pub fn gru_seq(x: &Tensor, w: &Tensor, h0: &Tensor, out: Output, lengths: Option<&[usize]>) -> candle_core::Result<Tensor> {
    run(Cell::Gru, out, x, w, h0, lengths)
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

/// The GRU's `dW_hh = Σ_t dA_tᵀ h_{t-1}` as one `[G*H, T*B] x [T*B, H]` matmul ([`super::kernels::weight_grad`]'s
/// AVX-512 kernel where it reproduces gemm's bits, gemm otherwise).
fn recurrent_weight_grad(da: &[f32], y: &[f32], h0: &[f32], d: Dims) -> Vec<f32> {
    let bh = d.b * d.h;
    let (m, n, k) = (d.gh(), d.h, d.t * d.b);
    #[cfg(target_arch = "x86_64")]
    if super::kernels::weight_grad::avx512_applies(m, n, k) {
        let hprev = super::kernels::weight_grad::Rows { head: h0, tail: &y[..(d.t - 1) * bh] };
        return super::kernels::weight_grad::avx512(da, hprev, m, n, k, rayon::current_num_threads());
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
    ($(#[$m:meta])* $vis:vis fn $name:ident / $fast:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
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

mod gru;
mod lstm;
mod pool;

#[cfg(test)]
pub(super) use pool::poison_pool;
