//! Host low-latency path (`std`): one window's steps split over two cores.
//!
//! One window has no other window to share weights with, so the one-window step streams every
//! recurrent weight from L2 once per sample and is bound by that. Here each of two threads owns
//! half of every gate's outputs, with its own packed copy of those weight columns (half the bytes
//! per core). `h` is double-buffered: in a layer-step, threads read the current buffer whole and
//! write their halves of the next, and each publishes a phase counter when its half is written
//! (release) and waits for the other's previous phase before reading the other half (acquire);
//! the two threads are never more than one phase apart, so two buffers suffice. Every output is
//! summed in the same order, with the same separate multiply and add, as
//! [`Encoder::encode_window`], so the latents are bit-identical to a device's.
//!
//! The helper thread spins briefly between windows, then parks; it is joined on drop.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::batch::{HostState, HOST_MAX_HIDDEN, HOST_MAX_LATENT, HOST_MAX_LAYERS};
use crate::bundle::{Cell, Normalization};
use crate::encoder::{encodes_cleanly, gru_cell, lstm_cell, EncodeError, Encoder, Zscore};
use crate::math::dot;

/// Smallest hidden size worth splitting (below it the barrier costs more than it saves).
pub const MIN_SPLIT_HIDDEN: usize = 16;

/// `go` value that tells the helper to exit.
const EXIT: u64 = u64::MAX;

/// A block of packed weight columns: outputs `s..s + w` of a thread's share, stored `[k][w]` at
/// `off` so the block streams contiguously.
#[derive(Debug, Clone, Copy)]
struct Block {
    s: usize,
    w: usize,
    off: usize,
    /// Rows (the product's inner dimension).
    k: usize,
}

/// Column blocks over `width` (a multiple of 16) outputs, each as wide as the registers allow:
/// every block's sums stay in registers, and one block per pass keeps as many independent add
/// chains going as possible (a narrow tail block would be bound by one chain's add latency).
/// Block widths do not change any output's summation order.
fn blocks(width: usize, wide: usize, k: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let (mut s, mut off) = (0, 0);
    while s < width {
        let w = wide.min(width - s);
        out.push(Block { s, w, off, k });
        off += w * k;
        s += w;
    }
    out
}

/// Units per thread are padded to this many, with zero weights, so the cell math runs in whole
/// SIMD vectors (a scalar tail of sigmoid/tanh cost as much as a fifth of a step).
const UNIT_PAD: usize = 16;

/// One thread's share of one layer: its columns of every gate (`g * hid + j0 .. + hw` for each
/// gate `g`, each gate padded to `hwp` columns), packed block by block.
struct LayerPart {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    ih_blocks: Vec<Block>,
    hh_blocks: Vec<Block>,
}

impl LayerPart {
    /// `layer` as [`crate::Bundle::layer`] returns it; `(j0, hw)`: the thread's hidden units.
    fn pack(layer: (&[f32], &[f32], &[f32], &[f32]), inp: usize, hid: usize, gates: usize, (j0, hw): (usize, usize), wide: usize) -> Self {
        let (src_ih, src_hh, b_ih, b_hh) = layer;
        let hwp = hw.next_multiple_of(UNIT_PAD);
        // Source column of each packed column; `None` for padding.
        let cols: Vec<Option<usize>> = (0..gates).flat_map(|g| (0..hwp).map(move |j| (j < hw).then_some(g * hid + j0 + j))).collect();
        let n = gates * hid;
        let width = cols.len();
        let pack = |src: &[f32], k: usize, bl: &[Block]| -> Vec<f32> {
            let mut out = Vec::with_capacity(bl.iter().map(|b| b.w * k).sum());
            for b in bl {
                for kk in 0..k {
                    out.extend(cols[b.s..b.s + b.w].iter().map(|c| c.map_or(0.0, |c| src[kk * n + c])));
                }
            }
            out
        };
        let (ih_blocks, hh_blocks) = (blocks(width, wide, inp), blocks(width, wide, hid));
        LayerPart {
            w_ih: pack(src_ih, inp, &ih_blocks),
            w_hh: pack(src_hh, hid, &hh_blocks),
            b_ih: cols.iter().map(|c| c.map_or(0.0, |c| b_ih[c])).collect(),
            b_hh: cols.iter().map(|c| c.map_or(0.0, |c| b_hh[c])).collect(),
            ih_blocks,
            hh_blocks,
        }
    }
}

/// `out[s..s+B] = start + Σ_i v[i] · panel[k0 + i][..B]`, with `start` = `init[s..s+B]`, or the
/// sums already in `out` when `init` is `None` (a product resumed at row `k0`: storing and
/// reloading the partial sums rounds nothing, so a split product equals a whole one).
#[inline(always)]
fn block<const B: usize>(out: &mut [f32], init: Option<&[f32]>, panel: &[f32], v: &[f32], k0: usize, s: usize) {
    let mut acc = [0f32; B];
    acc.copy_from_slice(&init.unwrap_or(&*out)[s..s + B]);
    for (i, &x) in v.iter().enumerate() {
        let k = k0 + i;
        let row: &[f32; B] = panel[k * B..k * B + B].try_into().expect("block in bounds");
        for j in 0..B {
            acc[j] += row[j] * x;
        }
    }
    out[s..s + B].copy_from_slice(&acc);
}

/// Rows `k0..k0 + v.len()` of the product `v · W` over the packed blocks of `w`, starting from
/// `init` or continuing the sums in `out`.
#[inline(always)]
fn matvec_rows(out: &mut [f32], init: Option<&[f32]>, w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    for b in bl {
        let panel = &w[b.off..b.off + b.w * b.k];
        macro_rules! widths {
            ($($w:literal)*) => {
                match b.w {
                    $($w => block::<$w>(out, init, panel, v, k0, b.s),)*
                    w => unreachable!("block width {w} is not a multiple of 8 up to 192"),
                }
            };
        }
        widths!(8 16 24 32 40 48 56 64 72 80 88 96 104 112 120 128 136 144 152 160 168 176 184 192)
    }
}

/// `out = init + Σ_{i} v[i] · W[k0 + i]`: the first rows of a product.
#[inline(always)]
fn matvec_from(out: &mut [f32], init: &[f32], w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    matvec_rows(out, Some(init), w, bl, v, k0)
}

/// `out += Σ_{i} v[i] · W[k0 + i]`: the product continued from row `k0`.
#[inline(always)]
fn matvec_on(out: &mut [f32], w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    matvec_rows(out, None, w, bl, v, k0)
}

/// A cache line of its own, so the two barrier counters do not share one.
#[repr(align(128))]
struct Padded(AtomicU64);

/// Everything both threads touch. `h` and `x` are written only under the protocol in the module
/// docs: `x` and the reset of `h` while the helper is idle (published by `go`), `h`'s halves by
/// their owners between barriers.
struct Shared {
    cell: Cell,
    hid: usize,
    layers: usize,
    f: usize,
    /// `[thread][layer]`.
    parts: [Vec<LayerPart>; 2],
    /// `(j0, hw)` per thread.
    split: [(usize, usize); 2],
    /// `h` as `[layer][buffer 0|1][hid]`, behind a raw pointer so both threads can address
    /// their own halves without forming overlapping references.
    h: *mut f32,
    h_len: usize,
    /// The normalised window, time-major.
    x: UnsafeCell<Vec<f32>>,
    go: AtomicU64,
    done: [Padded; 2],
    dead: AtomicBool,
}

// SAFETY: the raw `h` buffer and `x` are only accessed under the barrier protocol above.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: `h` came from a boxed slice of `h_len` values in `DuoEncoder::new`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.h, self.h_len)) });
    }
}

/// Per-thread scratch, over the padded units: gate pre-activations and the recurrent part, the
/// new `h`, and `c` for every layer.
struct Scratch {
    gates: Vec<f32>,
    rec: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
}

impl Scratch {
    fn new(sh: &Shared, t: usize) -> Self {
        let hwp = sh.split[t].1.next_multiple_of(UNIT_PAD);
        let width = sh.cell.gates() * hwp;
        Scratch { gates: vec![0.0; width], rec: vec![0.0; width], h: vec![0.0; hwp], c: vec![0.0; sh.layers * hwp] }
    }
}

/// Waits until the other thread has finished phase `target`; `false` if it died.
#[inline(always)]
fn wait(other: &AtomicU64, dead: &AtomicBool, target: u64) -> bool {
    let mut spins = 0u32;
    while other.load(Ordering::Acquire) < target {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            if dead.load(Ordering::Relaxed) {
                return false;
            }
            // Only reached if the other core is descheduled; yield rather than burn its slot.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    true
}

/// Thread `t`'s half of every step of the window in `sh.x`; phases (one per layer-step) are
/// numbered from `base`. Returns the last phase, or `None` if the other thread died.
///
/// Every output sums `k = 0..hid` in order, and hidden units `0..k0` belong to thread 0, so
/// thread 0 starts each phase on its own units (finished by itself) and waits for thread 1's
/// previous phase only before the rest; thread 1 waits for thread 0's previous phase first. This
/// hides the cross-core hand-over behind half of thread 0's product.
///
/// # Safety
/// Only under the protocol in the module docs, with both threads given the same `base`.
#[inline(always)]
unsafe fn run(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    let (hid, f, layers) = (sh.hid, sh.f, sh.layers);
    let (j0, hw) = sh.split[t];
    let k0 = sh.split[0].1;
    let hwp = sc.h.len();
    let x = &*sh.x.get();
    sc.c.fill(0.0);
    let (me, other) = (&sh.done[t].0, &sh.done[1 - t].0);
    let mut phase = base;
    let buf = |l: usize, b: usize| l * 2 * hid + b * hid;
    // Units `0..k0` and `k0..hid` of a state vector, as separate slices: thread 0 may read the
    // first while thread 1 still writes the second.
    let lo = |p: *const f32| std::slice::from_raw_parts(p, k0);
    let hi = |p: *const f32| std::slice::from_raw_parts(p.add(k0), hid - k0);
    for (s, sample) in x.chunks_exact(f).enumerate() {
        let (cur, nxt) = (s % 2, (s + 1) % 2);
        for l in 0..layers {
            let p = &sh.parts[t][l];
            let h_cur = sh.h.add(buf(l, cur)) as *const f32;
            let below = (l > 0).then(|| sh.h.add(buf(l - 1, nxt)) as *const f32);
            let mine = std::slice::from_raw_parts_mut(sh.h.add(buf(l, nxt) + j0), hw);
            // Thread 1 needs thread 0's units from the start; thread 0 waits further down.
            let mut ready = t == 1;
            if ready && !wait(other, &sh.dead, phase) {
                return None;
            }
            macro_rules! make_ready {
                () => {
                    if !ready {
                        if !wait(other, &sh.dead, phase) {
                            return None;
                        }
                        ready = true;
                    }
                };
            }
            match below {
                None => matvec_from(&mut sc.gates, &p.b_ih, &p.w_ih, &p.ih_blocks, sample, 0),
                Some(v) => {
                    matvec_from(&mut sc.gates, &p.b_ih, &p.w_ih, &p.ih_blocks, lo(v), 0);
                    make_ready!();
                    matvec_on(&mut sc.gates, &p.w_ih, &p.ih_blocks, hi(v), k0);
                }
            }
            match sh.cell {
                Cell::Lstm => {
                    sc.rec.copy_from_slice(&sc.gates);
                    matvec_from(&mut sc.gates, &sc.rec, &p.w_hh, &p.hh_blocks, lo(h_cur), 0);
                    make_ready!();
                    matvec_on(&mut sc.gates, &p.w_hh, &p.hh_blocks, hi(h_cur), k0);
                    for (g, bh) in sc.gates.iter_mut().zip(&p.b_hh) {
                        *g += bh;
                    }
                    lstm_cell(&sc.gates, &mut sc.c[l * hwp..(l + 1) * hwp], &mut sc.h);
                }
                Cell::Gru => {
                    matvec_from(&mut sc.rec, &p.b_hh, &p.w_hh, &p.hh_blocks, lo(h_cur), 0);
                    make_ready!();
                    matvec_on(&mut sc.rec, &p.w_hh, &p.hh_blocks, hi(h_cur), k0);
                    sc.h[..hw].copy_from_slice(&std::slice::from_raw_parts(h_cur, hid)[j0..j0 + hw]);
                    gru_cell(&sc.gates, &sc.rec, &mut sc.h);
                }
            }
            debug_assert!(ready);
            mine.copy_from_slice(&sc.h[..hw]);
            phase += 1;
            me.store(phase, Ordering::Release);
        }
    }
    // Thread 0's caller reads thread 1's half of the final state next.
    if t == 0 && !wait(other, &sh.dead, phase) {
        return None;
    }
    Some(phase)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    run(sh, t, base, sc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    run(sh, t, base, sc)
}

/// [`run`] compiled for the widest SIMD the CPU has (the block widths were chosen to match).
unsafe fn run_dispatch(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::math::has_avx512() {
            return run_avx512(sh, t, base, sc);
        }
        if crate::math::has_avx2() {
            return run_avx2(sh, t, base, sc);
        }
    }
    run(sh, t, base, sc)
}

/// Widest column block for this CPU: 12 of AVX-512's 32 registers, or 8 of AVX2's 16, of sums.
fn wide_block() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::math::has_avx512() {
            return 192;
        }
        if crate::math::has_avx2() {
            return 64;
        }
    }
    8
}

/// Marks the helper dead if it unwinds, so the caller stops waiting for it.
struct DeathNotice(Arc<Shared>);

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.dead.store(true, Ordering::Relaxed);
        }
    }
}

fn helper(sh: Arc<Shared>) {
    let _notice = DeathNotice(sh.clone());
    let mut sc = Scratch::new(&sh, 1);
    let (mut seen, mut base) = (0u64, 0u64);
    loop {
        let mut spins = 0u32;
        let go = loop {
            let g = sh.go.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                // Idle between windows: stop burning the core until the next `unpark`.
                std::thread::park();
            }
        };
        if go == EXIT {
            return;
        }
        seen = go;
        // SAFETY: a new job was published by `go` (Acquire above); the protocol holds.
        match unsafe { run_dispatch(&sh, 1, base, &mut sc) } {
            Some(last) => base = last,
            None => return,
        }
    }
}

/// An encoder whose windows each run on two cores (see the module docs). Falls back to the
/// one-window path for models too small to split, single-core hosts, and windows the one-window
/// path must report an error for.
pub struct DuoEncoder<'a> {
    enc: Encoder<'a>,
    /// `None` when the model is not split.
    duo: Option<(Arc<Shared>, JoinHandle<()>)>,
    base: u64,
    sc: Option<Scratch>,
    state: Box<HostState>,
}

impl<'a> DuoEncoder<'a> {
    /// Packs each thread's weight columns and starts the helper thread (if the model and host
    /// are big enough to gain from it).
    pub fn new(enc: Encoder<'a>) -> Result<Self, EncodeError> {
        enc.check_capacity::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>()?;
        let hd = enc.bundle().header;
        let (hid, layers, f) = (hd.hidden as usize, hd.layers as usize, hd.n_features as usize);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut out = DuoEncoder { enc, duo: None, base: 0, sc: None, state: Box::default() };
        if hid < MIN_SPLIT_HIDDEN || cores < 2 {
            return Ok(out);
        }
        let g = hd.cell.gates();
        let half = hid / 2;
        let split = [(0, half), (half, hid - half)];
        let wide = wide_block();
        let parts = split.map(|part| {
            (0..layers)
                .map(|l| {
                    let inp = if l == 0 { f } else { hid };
                    LayerPart::pack(enc.bundle().layer(l), inp, hid, g, part, wide)
                })
                .collect::<Vec<_>>()
        });
        let h_len = layers * 2 * hid;
        let h = Box::into_raw(vec![0f32; h_len].into_boxed_slice()) as *mut f32;
        let sh = Arc::new(Shared {
            cell: hd.cell,
            hid,
            layers,
            f,
            parts,
            split,
            h,
            h_len,
            x: UnsafeCell::new(Vec::new()),
            go: AtomicU64::new(0),
            done: [Padded(AtomicU64::new(0)), Padded(AtomicU64::new(0))],
            dead: AtomicBool::new(false),
        });
        let for_helper = sh.clone();
        let handle = std::thread::Builder::new()
            .name("runtime-duo".into())
            .spawn(move || helper(for_helper))
            .ok();
        if let Some(handle) = handle {
            out.sc = Some(Scratch::new(&sh, 0));
            out.duo = Some((sh, handle));
        }
        Ok(out)
    }

    /// Whether windows run on two cores.
    pub fn is_split(&self) -> bool {
        self.duo.as_ref().is_some_and(|(sh, _)| !sh.dead.load(Ordering::Relaxed))
    }

    /// The wrapped encoder.
    pub fn encoder(&self) -> &Encoder<'a> {
        &self.enc
    }

    /// Latent mean of one time-major window, bit-identical to [`Encoder::encode_window`].
    pub fn encode_window(&mut self, window: &[f32]) -> Result<Vec<f32>, EncodeError> {
        let hd = self.enc.bundle().header;
        let f = hd.n_features as usize;
        let splittable = self.is_split()
            && !window.is_empty()
            && window.len().is_multiple_of(f)
            && encodes_cleanly(hd.normalization, f, window);
        if splittable {
            if let Some(z) = self.encode_split(window) {
                return Ok(z);
            }
        }
        let z = self.enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(&mut self.state, window)?;
        Ok(z.to_vec())
    }

    /// The two-core path; `None` if the helper has died (the caller falls back).
    fn encode_split(&mut self, window: &[f32]) -> Option<Vec<f32>> {
        let (sh, handle) = self.duo.as_ref()?;
        let sc = self.sc.as_mut()?;
        let hd = self.enc.bundle().header;
        let f = sh.f;
        // SAFETY: the helper is idle (it finished the previous window: our last barrier saw its
        // final phase), so nothing else touches `x` or `h` until `go` publishes them.
        unsafe {
            let x = &mut *sh.x.get();
            x.clear();
            match hd.normalization {
                Normalization::None => x.extend_from_slice(window),
                Normalization::Zscore => {
                    let z = Zscore::of(window, f);
                    x.resize(window.len(), 0.0);
                    for (xs, sample) in x.chunks_exact_mut(f).zip(window.chunks_exact(f)) {
                        z.apply(sample, xs);
                    }
                }
            }
            std::slice::from_raw_parts_mut(sh.h, sh.h_len).fill(0.0);
        }
        sh.go.fetch_add(1, Ordering::Release);
        handle.thread().unpark();
        // SAFETY: the job is published; both threads use the same `base`.
        let last = unsafe { run_dispatch(sh, 0, self.base, sc) }?;
        self.base = last;
        let (hid, top, steps) = (sh.hid, sh.layers - 1, window.len() / f);
        // SAFETY: both threads passed the final barrier; the helper no longer touches `h`.
        let h_top = unsafe { std::slice::from_raw_parts(sh.h.add(top * 2 * hid + (steps % 2) * hid), hid) };
        let (w, b) = self.enc.bundle().head();
        Some(b.iter().enumerate().map(|(j, bj)| bj + dot(&w[j * hid..(j + 1) * hid], h_top)).collect())
    }
}

impl Drop for DuoEncoder<'_> {
    fn drop(&mut self) {
        if let Some((sh, handle)) = self.duo.take() {
            sh.go.store(EXIT, Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{random_bundle, Noise};

    /// Both cells, 1 and 2 layers, even and odd hidden sizes (odd: unequal halves; 130: blocks
    /// of every width), 1 and 3 features, raw and z-normalised: every latent of a sequence of
    /// windows through one `DuoEncoder` equals the one-window path bit for bit, and bad windows
    /// get the one-window path's errors.
    #[test]
    fn two_core_windows_equal_one_window_path_bit_for_bit() {
        let mut noise = Noise::new(4242);
        for cell in [Cell::Lstm, Cell::Gru] {
            for (hidden, layers, features) in [(17u16, 2u8, 3u16), (90, 1, 1), (91, 2, 1), (130, 1, 3), (5, 1, 1)] {
                for normalization in [Normalization::None, Normalization::Zscore] {
                    let bytes = random_bundle(cell, features, hidden, layers, 6, normalization, &mut noise);
                    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                    let mut duo = DuoEncoder::new(enc).unwrap();
                    let case = format!("{cell:?} hidden {hidden} layers {layers} features {features} {normalization:?}");
                    assert_eq!(duo.is_split(), hidden as usize >= MIN_SPLIT_HIDDEN && std::thread::available_parallelism().unwrap().get() >= 2, "{case}");
                    for i in 0..6 {
                        let len = (20 + 3 * i) * features as usize;
                        let window: Vec<f32> = (0..len).map(|_| noise.next() * 4.0).collect();
                        let got = duo.encode_window(&window).unwrap();
                        let mut s = HostState::default();
                        let want = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(&mut s, &window).unwrap();
                        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{case}: window {i}");
                    }
                    let mut bad = vec![0.5f32; 10 * features as usize];
                    bad[3] = f32::INFINITY;
                    assert!(matches!(duo.encode_window(&bad), Err(EncodeError::NonFinite { index: 3 })), "{case}");
                    assert!(matches!(duo.encode_window(&[]), Err(EncodeError::WindowShape { .. })), "{case}");
                    if features > 1 {
                        assert!(matches!(duo.encode_window(&[1.0; 4]), Err(EncodeError::WindowShape { .. })), "{case}");
                    }
                }
            }
        }
    }
}
