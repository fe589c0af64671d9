//! Host low-latency path (`std`): one window's steps split over two cores.
//!
//! One window has no other window to share weights with, so the one-window step streams every
//! recurrent weight from L2 once per sample and is bound by that. Here each of two threads owns
//! half of every gate's outputs, with its own packed copy of those weight columns (half the bytes
//! per core). In a layer-step each thread first sums over its own hidden units (which it has),
//! then fetches the other thread's half of the state and sums over those, so the cross-core
//! hand-over overlaps half of the product on both threads. A half-state is published in cache
//! lines that carry their own phase number (one transfer brings values and "ready" together),
//! double-buffered; the two threads are never more than one phase apart.
//!
//! Numbers: each output is the same sum as [`Encoder::encode_window`]'s, in a different order
//! (thread 1 starts with its own units) and with fused multiply-adds where the CPU has them, so
//! latents agree with the device path to float rounding (~1e-6), not bit for bit; the device,
//! batch and trainer paths stay bit-identical to each other. Tests bound the difference and
//! check identical cluster IDs on all ECG5000 series.
//!
//! The helper thread spins briefly between windows, then parks; it is joined on drop.
//!
//! `scripts/miri.sh` (CI) runs the hand-over under Miri's data-race detector on a small model.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::batch::{HostState, HOST_MAX_HIDDEN, HOST_MAX_LATENT, HOST_MAX_LAYERS};
use crate::bundle::{Cell, Normalization};
use crate::encoder::{encodes_cleanly, EncodeError, Encoder, Zscore};
use crate::kernel::{self, gru_cell, lstm_cell};

/// Smallest hidden size worth splitting (below it the hand-over costs more than it saves).
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
/// gate `g`, each gate padded to `hwp` columns), packed block by block. Rows that multiply the
/// state (all of `w_hh`; `w_ih` above the first layer) are stored own units first, then the
/// other thread's, the order in which the thread has them.
struct LayerPart {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    ih_blocks: Vec<Block>,
    hh_blocks: Vec<Block>,
}

impl LayerPart {
    /// `layer` as [`crate::Bundle::layer`] returns it; `own`/`other`: the `(first unit, count)`
    /// of this thread's and the other thread's hidden units.
    fn pack(
        layer: (&[f32], &[f32], &[f32], &[f32]),
        first: bool,
        hid: usize,
        gates: usize,
        own: (usize, usize),
        other: (usize, usize),
        wide: usize,
    ) -> Self {
        let (src_ih, src_hh, b_ih, b_hh) = layer;
        let (j0, hw) = own;
        let hwp = hw.next_multiple_of(UNIT_PAD);
        // Source column of each packed column; `None` for padding.
        let cols: Vec<Option<usize>> = (0..gates).flat_map(|g| (0..hwp).map(move |j| (j < hw).then_some(g * hid + j0 + j))).collect();
        // Source row of each packed row of a product with the state.
        let state_rows: Vec<usize> = (own.0..own.0 + own.1).chain(other.0..other.0 + other.1).collect();
        let n = gates * hid;
        let width = cols.len();
        let pack = |src: &[f32], rows: &[usize], bl: &[Block]| -> Vec<f32> {
            let mut out = Vec::with_capacity(bl.iter().map(|b| b.w * rows.len()).sum());
            for b in bl {
                for &kk in rows {
                    out.extend(cols[b.s..b.s + b.w].iter().map(|c| c.map_or(0.0, |c| src[kk * n + c])));
                }
            }
            out
        };
        let ih_rows: Vec<usize> = if first { (0..src_ih.len() / n).collect() } else { state_rows.clone() };
        let (ih_blocks, hh_blocks) = (blocks(width, wide, ih_rows.len()), blocks(width, wide, hid));
        LayerPart {
            w_ih: pack(src_ih, &ih_rows, &ih_blocks),
            w_hh: pack(src_hh, &state_rows, &hh_blocks),
            b_ih: cols.iter().map(|c| c.map_or(0.0, |c| b_ih[c])).collect(),
            b_hh: cols.iter().map(|c| c.map_or(0.0, |c| b_hh[c])).collect(),
            ih_blocks,
            hh_blocks,
        }
    }
}

/// Panel rows loaded ahead of use. A thread's weights (51.8 KB for GRU hidden 90) are just over
/// L1 (48 KB), so each step finds part of them evicted; the hardware prefetcher does not run far
/// enough ahead, and fetching 16 rows ahead (wrapping to the panel's first rows, which the next
/// step reads first) took the two-core step from ~0.90 to ~0.76 µs. Distances 4-24 all helped,
/// 16 the most.
const PREFETCH_ROWS: usize = 16;

/// Starts loading `panel[at..at + len]` into L1 (x86-64; elsewhere the hardware prefetcher is
/// left to it).
#[inline(always)]
fn prefetch_row(panel: &[f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let row = panel.as_ptr().wrapping_add(at);
        for o in (0..len).step_by(16) {
            // SAFETY: a prefetch never faults and changes no data (the address is in the panel
            // anyway; no bounds check needed).
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(row.wrapping_add(o) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (panel, at, len);
}

/// `out[s..s+B] = start + Σ_i v[i] · panel[k0 + i][..B]`, with `start` = `init[s..s+B]`, or the
/// sums already in `out` when `init` is `None` (a product resumed at row `k0`: storing and
/// reloading the partial sums rounds nothing, so a split product equals a whole one).
/// [`kernel::block`] over the packed panel, prefetching [`PREFETCH_ROWS`] ahead; with `FMA`,
/// each term is one fused multiply-add (one rounding instead of two).
#[inline(always)]
fn block<const B: usize, const FMA: bool>(out: &mut [f32], init: Option<&[f32]>, panel: &[f32], v: &[f32], k0: usize, s: usize) {
    let rows = panel.len() / B;
    let [acc] = kernel::block::<B, 1, FMA>([&init.unwrap_or(&*out)[s..s + B]], panel, k0 * B, B, [v], |i| {
        prefetch_row(panel, (k0 + i + PREFETCH_ROWS) % rows * B, B)
    });
    out[s..s + B].copy_from_slice(&acc);
}

/// Rows `k0..k0 + v.len()` of the product `v · W` over the packed blocks of `w`, starting from
/// `init` or continuing the sums in `out`.
#[inline(always)]
fn matvec_rows<const FMA: bool>(out: &mut [f32], init: Option<&[f32]>, w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    for b in bl {
        let panel = &w[b.off..b.off + b.w * b.k];
        macro_rules! widths {
            ($($w:literal)*) => {
                match b.w {
                    $($w => block::<$w, FMA>(out, init, panel, v, k0, b.s),)*
                    w => unreachable!("block width {w} is not a multiple of 8 up to 192"),
                }
            };
        }
        widths!(8 16 24 32 40 48 56 64 72 80 88 96 104 112 120 128 136 144 152 160 168 176 184 192)
    }
}

/// `out = init + Σ_{i} v[i] · W[k0 + i]`: the first rows of a product.
#[inline(always)]
fn matvec_from<const FMA: bool>(out: &mut [f32], init: &[f32], w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    matvec_rows::<FMA>(out, Some(init), w, bl, v, k0)
}

/// `out += Σ_{i} v[i] · W[k0 + i]`: the product continued from row `k0`.
#[inline(always)]
fn matvec_on<const FMA: bool>(out: &mut [f32], w: &[f32], bl: &[Block], v: &[f32], k0: usize) {
    matvec_rows::<FMA>(out, None, w, bl, v, k0)
}

/// Values per hand-over line: 15 values and the phase that publishes them fill one cache line,
/// so a reader gets a half-state and its "ready" mark in the same cross-core transfer (a
/// separate flag line costs a second transfer, ~200 ns on this project's VM, every phase).
const LINE_VALS: usize = 15;

/// One cache line of a thread's published half-state.
#[repr(C, align(64))]
struct Line {
    vals: UnsafeCell<[f32; LINE_VALS]>,
    /// Phase (truncated to 32 bits) whose values `vals` holds.
    phase: AtomicU32,
}

/// Everything both threads touch. `x` is written only while the helper is idle (published by
/// `go`); each `Line` only by its owner, under the protocol in the module docs.
struct Shared {
    cell: Cell,
    hid: usize,
    layers: usize,
    f: usize,
    /// `[thread][layer]`.
    parts: [Vec<LayerPart>; 2],
    /// `(j0, hw)` per thread.
    split: [(usize, usize); 2],
    /// Published half-states, `[thread][layer][buffer 0|1][line]`, `per` lines each.
    lines: Vec<Line>,
    per: usize,
    /// The normalised window, time-major.
    x: UnsafeCell<Vec<f32>>,
    go: AtomicU64,
    dead: AtomicBool,
}

// SAFETY: `x` and the lines' values are only accessed under the protocol in the module docs.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Thread `t`'s lines for `layer`'s buffer `b`.
    fn lines(&self, t: usize, layer: usize, b: usize) -> &[Line] {
        let i = ((t * self.layers + layer) * 2 + b) * self.per;
        &self.lines[i..i + self.per]
    }

    /// Publishes `vals` (thread `t`'s new half of `layer`) in buffer `b` as `phase`.
    ///
    /// # Safety
    /// Only thread `t`, and only when the other thread has finished reading buffer `b`'s
    /// previous contents (it has published a later phase).
    unsafe fn publish(&self, t: usize, layer: usize, b: usize, phase: u64, vals: &[f32]) {
        for (line, chunk) in self.lines(t, layer, b).iter().zip(vals.chunks(LINE_VALS)) {
            // SAFETY: only thread `t` writes these lines, and the other thread has finished
            // reading their previous contents (the caller's contract), so no reference aliases.
            unsafe { (&mut *line.vals.get())[..chunk.len()].copy_from_slice(chunk) };
            line.phase.store(phase as u32, Ordering::Release);
        }
    }

    /// Waits until thread `t` has published `phase` in `layer`'s buffer `b` and copies its half
    /// into `dst`; `false` if the other thread died.
    ///
    /// # Safety
    /// Only the other thread, under the protocol (the owner cannot overwrite the buffer before
    /// this thread publishes a later phase).
    unsafe fn fetch(&self, t: usize, layer: usize, b: usize, phase: u64, dst: &mut [f32]) -> bool {
        let lines = &self.lines(t, layer, b)[..dst.len().div_ceil(LINE_VALS)];
        let mut spins = 0u32;
        // Load every line's phase each round (no short circuit), so their transfers overlap.
        while !lines.iter().fold(true, |ok, l| (l.phase.load(Ordering::Acquire) == phase as u32) & ok) {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                if self.dead.load(Ordering::Relaxed) {
                    return false;
                }
                // Only reached if the other core is descheduled; yield rather than burn its slot.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        for (line, chunk) in lines.iter().zip(dst.chunks_mut(LINE_VALS)) {
            // SAFETY: the owner published `phase` (Acquire above) and does not write these lines
            // again before this thread publishes a later phase (the caller's contract).
            chunk.copy_from_slice(unsafe { &(&*line.vals.get())[..chunk.len()] });
        }
        true
    }
}

/// Per-thread scratch, over the padded units: gate pre-activations and the recurrent part, the
/// new `h`, `c` for every layer, and the full `h` of every layer as this thread last assembled
/// it (own half current, other half fetched when first needed).
struct Scratch {
    gates: Vec<f32>,
    rec: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
    full: Vec<f32>,
}

impl Scratch {
    fn new(sh: &Shared, t: usize) -> Self {
        let hwp = sh.split[t].1.next_multiple_of(UNIT_PAD);
        let width = sh.cell.gates() * hwp;
        Scratch {
            gates: vec![0.0; width],
            rec: vec![0.0; width],
            h: vec![0.0; hwp],
            c: vec![0.0; sh.layers * hwp],
            full: vec![0.0; sh.layers * sh.hid],
        }
    }
}

/// Thread `t`'s half of every step of the window in `sh.x`; phases (one per layer-step) are
/// numbered from `base`. Returns the last phase, or `None` if the other thread died; thread 0's
/// `sc.full` then holds the final state of every layer.
///
/// Each thread keeps every layer's state own units first, and its weight rows in that order:
/// it starts each product on its own units, which it has, and fetches the other half only
/// before the rest, so the hand-over overlaps half of the product on both threads.
///
/// Hand-over: layer `l`'s state after step `s` is published as phase `base + s·layers + l + 1`
/// in buffer `(s + 1) % 2`. A thread overwrites a buffer only after fetching the other thread's
/// output of the step that read that buffer's previous contents, so two buffers suffice.
///
/// # Safety
/// Only under the protocol in the module docs, with both threads given the same `base`.
#[inline(always)]
unsafe fn run<const FMA: bool>(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    let (hid, f, layers) = (sh.hid, sh.f, sh.layers);
    let (hw, ow) = (sh.split[t].1, sh.split[1 - t].1);
    let hwp = sc.h.len();
    // SAFETY: the window is written before `go` is published and not again until the other
    // thread has fetched this thread's last phase, so it is only read in between. Its length is
    // read here, once: after this thread's last publish the caller may already be writing the
    // next window (Miri's race detector found a read of the length after the loop).
    let x: &[f32] = unsafe { &*sh.x.get() };
    let steps = x.len() / f;
    sc.c.fill(0.0);
    sc.full.fill(0.0);
    let top = layers - 1;
    let phase = |s: usize, l: usize| base + (s * layers + l) as u64 + 1;
    // Layer `l`'s state, own units then the other thread's. Slices of it are formed from this
    // pointer only while used (the halves are written and read at different points of a
    // layer-step), never kept across.
    let fullp = sc.full.as_mut_ptr();
    let own = |l: usize| {
        // SAFETY: `l < layers`, so the range lies inside `sc.full`; it does not overlap the other
        // half, and each slice is dropped before the next one is formed.
        unsafe { std::slice::from_raw_parts_mut(fullp.add(l * hid), hw) }
    };
    let other = |l: usize| {
        // SAFETY: as for `own`; `hw + ow = hid`.
        unsafe { std::slice::from_raw_parts_mut(fullp.add(l * hid + hw), ow) }
    };
    let fetch = |what: Option<(usize, usize, u64)>| -> bool {
        what.is_none_or(|(l, b, ph)| {
            // SAFETY: this thread reads thread `1 - t`'s buffers, under the protocol above.
            unsafe { sh.fetch(1 - t, l, b, ph, other(l)) }
        })
    };
    for (s, sample) in x.chunks_exact(f).enumerate() {
        let (cur, nxt) = (s % 2, (s + 1) % 2);
        for l in 0..layers {
            let p = &sh.parts[t][l];
            if l == 0 {
                matvec_from::<FMA>(&mut sc.gates, &p.b_ih, &p.w_ih, &p.ih_blocks, sample, 0);
            } else {
                matvec_from::<FMA>(&mut sc.gates, &p.b_ih, &p.w_ih, &p.ih_blocks, own(l - 1), 0);
                if !fetch(Some((l - 1, nxt, phase(s, l - 1)))) {
                    return None;
                }
                matvec_on::<FMA>(&mut sc.gates, &p.w_ih, &p.ih_blocks, other(l - 1), hw);
            }
            let (out, init) = match sh.cell {
                Cell::Lstm => (&mut sc.gates, None),
                Cell::Gru => (&mut sc.rec, Some(&p.b_hh[..])),
            };
            matvec_rows::<FMA>(out, init, &p.w_hh, &p.hh_blocks, own(l), 0);
            // This layer's previous state, unless the layer above fetched it last step.
            if !fetch((s > 0 && l == top).then(|| (l, cur, phase(s - 1, l)))) {
                return None;
            }
            matvec_on::<FMA>(out, &p.w_hh, &p.hh_blocks, other(l), hw);
            match sh.cell {
                Cell::Lstm => {
                    for (g, bh) in sc.gates.iter_mut().zip(&p.b_hh) {
                        *g += bh;
                    }
                    lstm_cell(&sc.gates, &mut sc.c[l * hwp..(l + 1) * hwp], &mut sc.h);
                }
                Cell::Gru => {
                    sc.h[..hw].copy_from_slice(own(l));
                    gru_cell(&sc.gates, &sc.rec, &mut sc.h);
                }
            }
            own(l).copy_from_slice(&sc.h[..hw]);
            // SAFETY: thread `t`'s own buffer `nxt`; the other thread fetched its previous
            // contents before publishing the phase this thread fetched above.
            unsafe { sh.publish(t, l, nxt, phase(s, l), own(l)) };
        }
    }
    // Thread 0's caller reads the final state next.
    if t == 0 && steps > 0 && !fetch(Some((top, steps % 2, phase(steps - 1, top)))) {
        return None;
    }
    Some(base + (steps * layers) as u64)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn run_avx512(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    // SAFETY: the caller keeps the protocol ([`run`]).
    unsafe { run::<true>(sh, t, base, sc) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    // SAFETY: the caller keeps the protocol ([`run`]).
    unsafe { run::<true>(sh, t, base, sc) }
}

/// [`run`] compiled for the widest SIMD the CPU has (the block widths were chosen to match).
unsafe fn run_dispatch(sh: &Shared, t: usize, base: u64, sc: &mut Scratch) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::math::has_avx512() {
            // SAFETY: the CPU has AVX-512 and FMA; the caller keeps the protocol.
            return unsafe { run_avx512(sh, t, base, sc) };
        }
        if crate::math::has_avx2() && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA; the caller keeps the protocol.
            return unsafe { run_avx2(sh, t, base, sc) };
        }
    }
    // Without hardware FMA (x86 before Haswell) `mul_add` would be a library call.
    // SAFETY: the caller keeps the protocol.
    unsafe { run::<{ cfg!(target_arch = "aarch64") }>(sh, t, base, sc) }
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
        // int8 weights run on one core: their sums are exact integers, and a split adds the
        // hand-over cost to a product that is already a quarter of the bytes.
        if hid < MIN_SPLIT_HIDDEN || cores < 2 || enc.bundle().is_int8() {
            return Ok(out);
        }
        let g = hd.cell.gates();
        let half = hid / 2;
        let split = [(0, half), (half, hid - half)];
        let wide = wide_block();
        let parts = [(split[0], split[1]), (split[1], split[0])].map(|part| {
            (0..layers).map(|l| LayerPart::pack(enc.bundle().layer(l), l == 0, hid, g, part.0, part.1, wide)).collect::<Vec<_>>()
        });
        let per = split.iter().map(|&(_, hw)| hw.div_ceil(LINE_VALS)).max().unwrap_or(0);
        let lines = (0..2 * layers * 2 * per).map(|_| Line { vals: UnsafeCell::new([0.0; LINE_VALS]), phase: AtomicU32::new(0) }).collect();
        let sh = Arc::new(Shared {
            cell: hd.cell,
            hid,
            layers,
            f,
            parts,
            split,
            lines,
            per,
            x: UnsafeCell::new(Vec::new()),
            go: AtomicU64::new(0),
            dead: AtomicBool::new(false),
        });
        let for_helper = sh.clone();
        let handle = std::thread::Builder::new().name("runtime-duo".into()).spawn(move || helper(for_helper)).ok();
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

    /// Latent mean of one time-major window: [`Encoder::encode_window`]'s result to float
    /// rounding (see the module docs), and its errors.
    pub fn encode_window(&mut self, window: &[f32]) -> Result<Vec<f32>, EncodeError> {
        let hd = self.enc.bundle().header;
        let f = hd.n_features as usize;
        let splittable =
            self.is_split() && !window.is_empty() && window.len().is_multiple_of(f) && encodes_cleanly(hd.normalization, f, window);
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
        // SAFETY: the helper is idle (it finished the previous window: our last fetch saw its
        // final phase), so nothing else touches `x` until `go` publishes it.
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
        }
        sh.go.fetch_add(1, Ordering::Release);
        handle.thread().unpark();
        // SAFETY: the job is published; both threads use the same `base`.
        let last = unsafe { run_dispatch(sh, 0, self.base, sc) }?;
        self.base = last;
        let (hid, top) = (sh.hid, sh.layers - 1);
        let h_top = &sc.full[top * hid..(top + 1) * hid];
        let mut z = vec![0f32; self.enc.bundle().header.latent as usize];
        crate::kernel::head(self.enc.bundle(), h_top, &mut z);
        Some(z)
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

    /// Largest accepted difference, relative to `max(1, |latent|)`: a reordered f32 sum of ~100
    /// terms through 20-38 recurrent steps stays around 1e-6; a wrong weight or state element
    /// moves latents by far more.
    const TOLERANCE: f32 = 2e-5;

    /// Both cells, 1 and 2 layers, even and odd hidden sizes (odd: unequal halves; 130: blocks
    /// of every width), 1 and 3 features, raw and z-normalised: every latent of a sequence of
    /// windows through one `DuoEncoder` matches the one-window path to float rounding, and bad windows
    /// get the one-window path's errors.
    #[test]
    fn two_core_windows_match_one_window_path() {
        let mut worst = 0f32;
        let mut noise = Noise::new(4242);
        for cell in [Cell::Lstm, Cell::Gru] {
            for (hidden, layers, features) in [(17u16, 2u8, 3u16), (90, 1, 1), (91, 2, 1), (130, 1, 3), (5, 1, 1)] {
                for normalization in [Normalization::None, Normalization::Zscore] {
                    let bytes = random_bundle(cell, features, hidden, layers, 6, normalization, &mut noise);
                    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                    let mut duo = DuoEncoder::new(enc).unwrap();
                    let case = format!("{cell:?} hidden {hidden} layers {layers} features {features} {normalization:?}");
                    assert_eq!(
                        duo.is_split(),
                        hidden as usize >= MIN_SPLIT_HIDDEN && std::thread::available_parallelism().unwrap().get() >= 2,
                        "{case}"
                    );
                    for i in 0..6 {
                        let len = (20 + 3 * i) * features as usize;
                        let window: Vec<f32> = (0..len).map(|_| noise.next() * 4.0).collect();
                        let got = duo.encode_window(&window).unwrap();
                        let mut s = HostState::default();
                        let want = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(&mut s, &window).unwrap();
                        assert_eq!(got.len(), want.len(), "{case}: window {i}");
                        for (g, w) in got.iter().zip(want.iter()) {
                            let err = (g - w).abs() / w.abs().max(1.0);
                            worst = worst.max(err);
                            assert!(err <= TOLERANCE, "{case}: window {i}: {g} vs {w}");
                        }
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
        eprintln!("largest relative difference: {worst:e}");
    }

    /// The hand-over protocol on a model just big enough to split (17 units: unequal halves,
    /// one hand-over line each), both cells, 1 and 2 layers, windows of 1, 2 and 5 steps back to
    /// back on one helper thread: small enough for Miri, which runs it with its data-race
    /// detector and weak-memory emulation (`scripts/miri.sh`; every read of a half-state must be
    /// ordered after its write by the phase's Release/Acquire pair, or Miri reports a race).
    #[test]
    fn handover_is_race_free() {
        let mut noise = Noise::new(99);
        let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        for cell in [Cell::Lstm, Cell::Gru] {
            for layers in [1u8, 2] {
                let bytes = random_bundle(cell, 1, MIN_SPLIT_HIDDEN as u16 + 1, layers, 2, Normalization::None, &mut noise);
                let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                let mut duo = DuoEncoder::new(enc).unwrap();
                assert_eq!(duo.is_split(), two_cores, "{cell:?} {layers} layers");
                for len in [1usize, 2, 5] {
                    let window: Vec<f32> = (0..len).map(|_| noise.next() * 2.0).collect();
                    let got = duo.encode_window(&window).unwrap();
                    let mut s = HostState::default();
                    let want = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(&mut s, &window).unwrap();
                    for (g, w) in got.iter().zip(want.iter()) {
                        assert!((g - w).abs() / w.abs().max(1.0) <= TOLERANCE, "{cell:?} {layers} layers, {len} steps: {g} vs {w}");
                    }
                }
            }
        }
    }
}
