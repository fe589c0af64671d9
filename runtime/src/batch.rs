//! Host-side batch inference (`std`): many windows on all cores with the same step kernels a
//! device runs, so training-time latents and device latents come from one code path.

use rayon::prelude::*;

use crate::assign::Assignment;
use crate::bundle::Normalization;
use crate::encoder::{encodes_cleanly, EncodeError, Encoder, State, Zscore, SUMMARY_SLOTS};
use crate::kernel::{self, BLOCK};
use crate::summary::Summary;

/// Hidden-unit capacity of host states.
pub const HOST_MAX_HIDDEN: usize = 512;
/// Layer capacity of host states.
pub const HOST_MAX_LAYERS: usize = 4;
/// Latent capacity on hosts.
pub const HOST_MAX_LATENT: usize = 256;

/// A state with the host capacities.
pub type HostState = State<HOST_MAX_HIDDEN, HOST_MAX_LAYERS>;

/// Windows encoded together: each block of weights read from L2 serves this many windows from
/// L1, which takes the L2 bandwidth bound off the one-window step.
pub const GROUP: usize = 4;

/// Latent means of `windows` (each `len * n_features` values, time-major; all windows are
/// concatenated), row-major `n x latent`, computed in parallel, [`GROUP`] windows at a time.
/// Bit for bit what [`Encoder::encode_window`] gives for each window: every output is summed in
/// the same order, with the same separate multiply and add.
pub fn embed_windows(enc: &Encoder<'_>, windows: &[f32], window_values: usize) -> Result<Vec<f32>, EncodeError> {
    let hd = enc.bundle().header;
    enc.check_capacity::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>()?;
    let f = hd.n_features as usize;
    if window_values == 0 || !window_values.is_multiple_of(f) || !windows.len().is_multiple_of(window_values) {
        return Err(EncodeError::WindowShape { len: window_values, features: f });
    }
    let steps = u32::try_from(window_values / f).unwrap_or(u32::MAX);
    if steps < hd.min_len && !windows.is_empty() {
        return Err(EncodeError::TooShort { steps, min: hd.min_len });
    }
    let l = hd.latent as usize;
    let mut out = vec![0f32; windows.len() / window_values * l];
    out.par_chunks_mut(l * GROUP).zip(windows.par_chunks(window_values * GROUP)).try_for_each_init(
        || Box::new(HostState::default()),
        |s, (dst, ws)| {
            let grouped = ws.len() == window_values * GROUP && encodes_cleanly(hd.normalization, f, ws);
            if grouped {
                encode_group(enc, ws, window_values, dst);
                return Ok(());
            }
            // A short last group, or a window the one-window path must report an error for.
            for (d, w) in dst.chunks_mut(l).zip(ws.chunks(window_values)) {
                let z = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(s, w)?;
                d.copy_from_slice(&z);
            }
            Ok::<(), EncodeError>(())
        },
    )?;
    Ok(out)
}

/// Encodes exactly [`GROUP`] finite windows into `dst` (`GROUP x latent`), dispatching to the
/// widest SIMD the CPU has (same bits at every width).
fn encode_group(enc: &Encoder<'_>, ws: &[f32], window_values: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::math::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked at run time).
            return unsafe { encode_group_avx512(enc, ws, window_values, dst) };
        }
        if crate::math::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            return unsafe { encode_group_avx2(enc, ws, window_values, dst) };
        }
    }
    encode_group_body::<GROUP>(enc, ws, window_values, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn encode_group_avx512(enc: &Encoder<'_>, ws: &[f32], window_values: usize, dst: &mut [f32]) {
    encode_group_body::<GROUP>(enc, ws, window_values, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_group_avx2(enc: &Encoder<'_>, ws: &[f32], window_values: usize, dst: &mut [f32]) {
    encode_group_body::<GROUP>(enc, ws, window_values, dst)
}

/// `N` windows through every step and layer side by side; the math of the encoder's `step`
/// and `finish`, with each weight block applied to all `N` windows once it is loaded.
#[inline(always)]
fn encode_group_body<const N: usize>(enc: &Encoder<'_>, ws: &[f32], window_values: usize, dst: &mut [f32]) {
    let b = enc.bundle();
    let hd = b.header;
    let (f, hid, layers, lat) = (hd.n_features as usize, hd.hidden as usize, hd.layers as usize, hd.latent as usize);
    let gh = hd.cell.gates() * hid;
    let steps = window_values / f;
    let norm: Vec<_> = ws
        .chunks_exact(window_values)
        .map(|w| match hd.normalization {
            Normalization::None => None,
            Normalization::Zscore => Some(Zscore::of(w, f)),
        })
        .collect();
    // Per layer, window-major: h[(l * N + n) * hid ..][..hid].
    let mut h = vec![0f32; layers * N * hid];
    let mut c = vec![0f32; layers * N * hid];
    let (mut gates, mut rec, mut x) = (vec![0f32; N * gh], vec![0f32; N * gh], vec![0f32; N * f]);
    for t in 0..steps {
        for (n, xs) in x.chunks_exact_mut(f).enumerate() {
            let sample = &ws[n * window_values + t * f..][..f];
            match &norm[n] {
                None => xs.copy_from_slice(sample),
                Some(z) => z.apply(sample, xs),
            }
        }
        step_group::<N>(enc, &mut h, &mut c, &x, &mut gates, &mut rec);
    }
    let top = &h[(layers - 1) * N * hid..];
    for (d, hn) in dst.chunks_exact_mut(lat).zip(top.chunks_exact(hid)) {
        kernel::head(b, hn, d);
    }
}

/// One time step of `N` windows through every layer, window-major (`h[(l * N + n) * hid ..]`).
#[inline(always)]
fn step_group<const N: usize>(enc: &Encoder<'_>, h: &mut [f32], c: &mut [f32], x: &[f32], gates: &mut [f32], rec: &mut [f32]) {
    let hid = enc.bundle().header.hidden as usize;
    kernel::step::<N, BLOCK>(enc.bundle(), h, c, hid, x, gates, rec);
}

/// Pushes one sample into each of several independent window states (e.g. the open windows of
/// many devices on a gateway): bit for bit what [`Encoder::push`] does to each, [`GROUP`] states
/// at a time through the multi-window step so each weight block read from L2 serves several
/// windows. Every item is checked first; on an error no state has changed.
pub fn push_each<const H: usize, const L: usize>(enc: &Encoder<'_>, items: &mut [(&mut State<H, L>, &[f32])]) -> Result<(), EncodeError> {
    let hd = enc.bundle().header;
    if hd.normalization != Normalization::None {
        return Err(EncodeError::NeedsWindow);
    }
    if items.is_empty() {
        return Ok(());
    }
    for (_, x) in items.iter() {
        enc.check_push::<H, L>(x)?;
    }
    let shape = enc.bundle().summary_shape();
    let mut scratch = GroupScratch::new(enc);
    let mut groups = items.chunks_exact_mut(GROUP);
    for g in groups.by_ref() {
        push_group(enc, g, &shape, &mut scratch);
    }
    for (s, x) in groups.into_remainder() {
        enc.push(s, x)?;
    }
    Ok(())
}

/// Window-major `h`, `c`, gate and input buffers of one [`GROUP`] step, allocated once per
/// [`push_each`] call.
struct GroupScratch {
    h: Vec<f32>,
    c: Vec<f32>,
    gates: Vec<f32>,
    rec: Vec<f32>,
    x: Vec<f32>,
}

impl GroupScratch {
    fn new(enc: &Encoder<'_>) -> Self {
        let hd = enc.bundle().header;
        let (f, hid, layers) = (hd.n_features as usize, hd.hidden as usize, hd.layers as usize);
        let gh = hd.cell.gates() * hid;
        let v = |n: usize| vec![0f32; n];
        GroupScratch { h: v(layers * GROUP * hid), c: v(layers * GROUP * hid), gates: v(GROUP * gh), rec: v(GROUP * gh), x: v(GROUP * f) }
    }
}

/// States with the sample each takes.
type Items<'s, 'x, const H: usize, const L: usize> = [(&'s mut State<H, L>, &'x [f32])];

/// Exactly [`GROUP`] checked items through one multi-window step (widest SIMD the CPU has).
fn push_group<const H: usize, const L: usize>(
    enc: &Encoder<'_>,
    items: &mut Items<H, L>,
    shape: &crate::summary::Shape,
    g: &mut GroupScratch,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::math::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked at run time).
            return unsafe { push_group_avx512(enc, items, shape, g) };
        }
        if crate::math::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            return unsafe { push_group_avx2(enc, items, shape, g) };
        }
    }
    push_group_body(enc, items, shape, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn push_group_avx512<const H: usize, const L: usize>(
    enc: &Encoder<'_>,
    items: &mut Items<H, L>,
    shape: &crate::summary::Shape,
    g: &mut GroupScratch,
) {
    push_group_body(enc, items, shape, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn push_group_avx2<const H: usize, const L: usize>(
    enc: &Encoder<'_>,
    items: &mut Items<H, L>,
    shape: &crate::summary::Shape,
    g: &mut GroupScratch,
) {
    push_group_body(enc, items, shape, g)
}

/// Gathers the states' `h`/`c` into the window-major scratch, steps, scatters back.
#[inline(always)]
fn push_group_body<const H: usize, const L: usize>(
    enc: &Encoder<'_>,
    items: &mut Items<H, L>,
    shape: &crate::summary::Shape,
    g: &mut GroupScratch,
) {
    const N: usize = GROUP;
    let hd = enc.bundle().header;
    let (f, hid, layers) = (hd.n_features as usize, hd.hidden as usize, hd.layers as usize);
    let GroupScratch { h, c, gates, rec, x } = g;
    for (n, (s, xs)) in items.iter_mut().enumerate() {
        x[n * f..(n + 1) * f].copy_from_slice(xs);
        s.summarize(xs, shape);
        for l in 0..layers {
            let (hs, cs) = s.layer_mut(l);
            h[(l * N + n) * hid..][..hid].copy_from_slice(&hs[..hid]);
            c[(l * N + n) * hid..][..hid].copy_from_slice(&cs[..hid]);
        }
    }
    step_group::<N>(enc, h, c, x, gates, rec);
    for (n, (s, _)) in items.iter_mut().enumerate() {
        s.count_step();
        for l in 0..layers {
            let (hs, cs) = s.layer_mut(l);
            hs[..hid].copy_from_slice(&h[(l * N + n) * hid..][..hid]);
            cs[..hid].copy_from_slice(&c[(l * N + n) * hid..][..hid]);
        }
    }
}

fn check_rows(enc: &Encoder<'_>, windows: &[f32], window_values: usize, latents: &[f32]) -> Result<usize, EncodeError> {
    let hd = enc.bundle().header;
    let (f, l) = (hd.n_features as usize, hd.latent as usize);
    if window_values == 0 || !window_values.is_multiple_of(f) || !windows.len().is_multiple_of(window_values) {
        return Err(EncodeError::WindowShape { len: window_values, features: f });
    }
    let n = windows.len() / window_values;
    if latents.len() != n * l {
        return Err(crate::AssignError::DimMismatch { got: latents.len(), expected: n * l }.into());
    }
    Ok(n)
}

/// `f(latent, summary)` for every window (time-major, concatenated, `window_values` each) and its
/// latent row, in parallel, with the window's summary computed from its values.
fn per_window<T: Send>(
    enc: &Encoder<'_>,
    windows: &[f32],
    window_values: usize,
    latents: &[f32],
    f: impl Fn(&[f32], &Summary<SUMMARY_SLOTS>) -> Result<T, EncodeError> + Sync,
) -> Result<Vec<T>, EncodeError> {
    check_rows(enc, windows, window_values, latents)?;
    let l = enc.bundle().header.latent as usize;
    latents
        .par_chunks(l)
        .zip(windows.par_chunks(window_values))
        .map_init(
            || Box::new(Summary::<SUMMARY_SLOTS>::default()),
            |sm, (z, w)| {
                enc.summarize_window(sm, w)?;
                f(z, sm)
            },
        )
        .collect()
}

/// Cluster of every window (time-major, concatenated, `window_values` each) from its latent row
/// (as [`embed_windows`] gives them): the window's summary is computed from its values, so this
/// is what a device that streamed the window decides.
pub fn assign_all(enc: &Encoder<'_>, windows: &[f32], window_values: usize, latents: &[f32]) -> Result<Vec<Assignment>, EncodeError> {
    per_window(enc, windows, window_values, latents, |z, sm| enc.decide_summary(sm, z))
}

/// Raw decision vectors (latent, then window summary; before the bundle's offsets and scales),
/// row-major `n x decision_dims`: what the trainer fits the decision tables on.
pub fn raw_decisions(enc: &Encoder<'_>, windows: &[f32], window_values: usize, latents: &[f32]) -> Result<Vec<f32>, EncodeError> {
    Ok(per_window(enc, windows, window_values, latents, |z, sm| Ok(enc.raw_decision(z, sm)))?.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Cell;
    use crate::testutil::{random_bundle, Noise};

    /// The grouped kernel gives every window exactly the latent the one-window streaming path
    /// gives it: both cells, 1 and 2 layers, hidden sizes with and without ragged blocks (2:
    /// fewer than 8 gate rows), 1 and 3 features, raw and z-normalised, a short last group, and
    /// a group holding a NaN (reported by the one-window path).
    #[test]
    fn grouped_windows_equal_one_window_path_bit_for_bit() {
        let mut noise = Noise::new(777);
        for cell in [Cell::Lstm, Cell::Gru] {
            for (hidden, layers, features) in [(2u16, 1u8, 1u16), (5, 2, 3), (90, 1, 1), (130, 2, 3)] {
                for normalization in [Normalization::None, Normalization::Zscore] {
                    let bytes = random_bundle(cell, features, hidden, layers, 4, normalization, &mut noise);
                    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                    let wv = 30 * features as usize;
                    let n_windows = 2 * GROUP + 1;
                    let windows: Vec<f32> = (0..n_windows * wv).map(|i| noise.next() * 3.0 + (i % 7) as f32 * 0.1).collect();
                    let got = embed_windows(&enc, &windows, wv).unwrap();
                    let case = format!("{cell:?} hidden {hidden} layers {layers} features {features} {normalization:?}");
                    for (i, w) in windows.chunks(wv).enumerate() {
                        let mut s = HostState::default();
                        let want = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(&mut s, w).unwrap();
                        let got_bits: Vec<u32> = got[i * 4..(i + 1) * 4].iter().map(|v| v.to_bits()).collect();
                        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got_bits, want_bits, "{case}: window {i}");
                    }
                    let mut bad = windows.clone();
                    bad[wv + 3] = f32::NAN;
                    assert!(matches!(embed_windows(&enc, &bad, wv), Err(EncodeError::NonFinite { .. })), "{case}: NaN");
                }
            }
        }
    }

    /// Pushing one sample into each of many states at once leaves every state (h, c, step
    /// count, summary) bit for bit as pushing it alone: both cells, 1 and 2 layers, ragged
    /// hidden sizes, 1 and 3 features, states at different points of their windows, a count of
    /// items that is not a multiple of GROUP; a bad sample changes nothing.
    #[test]
    fn push_each_equals_push_bit_for_bit() {
        use crate::bundle::{encode, AlignedBytes, DecisionTables, Header};
        let mut noise = Noise::new(4242);
        for cell in [Cell::Lstm, Cell::Gru] {
            for (hidden, layers, features) in [(2u16, 1u8, 1u16), (5, 2, 3), (90, 1, 1), (130, 2, 3)] {
                let mut hd = Header {
                    cell,
                    n_features: features,
                    hidden,
                    layers,
                    latent: 4,
                    k: 2,
                    seq_len: 20,
                    normalization: Normalization::None,
                    weights_len: 0,
                    segments: 3,
                    stride: 7,
                    prototypes: 2,
                    freqs: 3,
                    step_edges: 1,
                    step_freqs: 2,
                    min_len: 1,
                    diffs: 1,
                    weight_format: crate::bundle::WeightFormat::F32,
                };
                hd.weights_len = hd.expected_weights() as u32;
                let d = hd.decision_dims();
                let w: Vec<f32> = (0..hd.weights_len).map(|_| noise.next()).collect();
                let tables = DecisionTables {
                    offsets: vec![0.0; d],
                    scales: vec![1.0; d],
                    prototypes: vec![0.0; 2 * d],
                    clusters: vec![0, 1],
                    anomaly_thresholds: vec![f32::MAX; 2],
                    step_edges: vec![0.0; features as usize],
                };
                let bytes = AlignedBytes::new(&encode(&hd, &w, &tables).unwrap());
                let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
                let case = format!("{cell:?} hidden {hidden} layers {layers} features {features}");
                let f = features as usize;
                let n = 2 * GROUP + 3;
                // States at different points: state i has seen i samples.
                let mut states: Vec<State<130, 2>> = vec![State::default(); n];
                for (i, s) in states.iter_mut().enumerate() {
                    for _ in 0..i {
                        let x: Vec<f32> = (0..f).map(|_| noise.next() * 3.0).collect();
                        enc.push(s, &x).unwrap();
                    }
                }
                let mut alone = states.clone();
                for _round in 0..3 {
                    let xs: Vec<Vec<f32>> = (0..n).map(|_| (0..f).map(|_| noise.next() * 3.0).collect()).collect();
                    for (s, x) in alone.iter_mut().zip(&xs) {
                        enc.push(s, x).unwrap();
                    }
                    let mut items: Vec<(&mut State<130, 2>, &[f32])> = states.iter_mut().zip(&xs).map(|(s, x)| (s, x.as_slice())).collect();
                    push_each(&enc, &mut items).unwrap();
                    for (i, (a, b)) in alone.iter().zip(&states).enumerate() {
                        let bits = |s: &State<130, 2>| {
                            let mut v = Vec::new();
                            s.save(hidden as usize, layers as usize, |x| v.push(x)).unwrap();
                            v
                        };
                        assert_eq!(bits(a), bits(b), "{case}: state {i}");
                    }
                }
                let before = states.clone();
                let mut xs: Vec<Vec<f32>> = (0..n).map(|_| vec![0.5; f]).collect();
                xs[GROUP + 1][0] = f32::NAN;
                let mut items: Vec<(&mut State<130, 2>, &[f32])> = states.iter_mut().zip(&xs).map(|(s, x)| (s, x.as_slice())).collect();
                assert!(matches!(push_each(&enc, &mut items), Err(EncodeError::NonFinite { .. })), "{case}");
                assert_eq!(states, before, "{case}: an error changes no state");
            }
        }
    }
}
