//! Bundle parsing rejects every damaged input without panicking; the streaming encoder matches an
//! independent f64 implementation of the equations and its own whole-window call.

use runtime::bundle::{encode, AlignedBytes, Bundle, BundleError, Cell, DecisionTables, Header, Normalization, FORMAT_VERSION};
use runtime::encoder::{EncodeError, Encoder, State};

/// Deterministic pseudo-random values in [-a, a].
fn values(n: usize, seed: u32, a: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

fn header(cell: Cell, f: u16, h: u16, layers: u8, latent: u16, k: u16, norm: Normalization) -> Header {
    let mut hd = Header {
        cell,
        n_features: f,
        hidden: h,
        layers,
        latent,
        k,
        seq_len: 20,
        normalization: norm,
        weights_len: 0,
        segments: 0,
        stride: 0,
        prototypes: k,
        freqs: 0,
        step_edges: 0,
        step_freqs: 0,
        min_len: 1,
        diffs: 0,
        weight_format: runtime::WeightFormat::F32,
    };
    hd.weights_len = hd.expected_weights() as u32;
    hd
}

/// Random weights; prototypes random, assigned to clusters round-robin; offsets and scales
/// random too when the decision uses the summary.
fn bundle(hd: &Header, seed: u32) -> Vec<u8> {
    let w = values(hd.weights_len as usize, seed, 0.4);
    let d = hd.decision_dims();
    let p = hd.prototypes as usize;
    let tables = DecisionTables {
        offsets: values(d, seed + 2, 0.5),
        scales: values(d, seed + 3, 0.5).iter().map(|v| 1.0 + v).collect(),
        prototypes: values(p * d, seed + 1, 1.0),
        clusters: (0..p).map(|i| i % hd.k as usize).collect(),
        anomaly_thresholds: (0..hd.k).map(|c| 0.5 + c as f32).collect(),
        // Ascending per feature, around the steps of the test windows.
        step_edges: (0..hd.step_edges_len()).map(|i| (i / hd.n_features as usize) as f32 - 0.5).collect(),
    };
    encode(hd, &w, &tables).unwrap()
}

#[test]
fn round_trip() {
    let hd = header(Cell::Gru, 2, 5, 2, 3, 4, Normalization::None);
    let bytes = AlignedBytes::new(&bundle(&hd, 1));
    let b = Bundle::parse(bytes.as_bytes()).unwrap();
    assert_eq!(b.header, hd);
    assert_eq!(b.weights, &values(hd.weights_len as usize, 1, 0.4)[..]);
    assert_eq!(b.prototypes.len(), 12);
    assert_eq!(b.prototype_clusters, &[0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn every_bit_flip_and_truncation_is_rejected() {
    let hd = header(Cell::Lstm, 1, 3, 1, 2, 2, Normalization::None);
    let good = bundle(&hd, 2);
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            let a = AlignedBytes::new(&bad);
            let e = Bundle::parse(a.as_bytes()).expect_err("a flipped bit must be detected");
            match i {
                0..=7 => assert_eq!(e, BundleError::BadMagic, "byte {i}"),
                // A flip to another readable version still fails the checksum.
                8..=11 => assert!(matches!(e, BundleError::UnsupportedVersion { .. } | BundleError::BadChecksum { .. }), "byte {i}: {e:?}"),
                _ => assert!(matches!(e, BundleError::BadChecksum { .. }), "byte {i}: {e:?}"),
            }
        }
    }
    for n in 0..good.len() {
        let a = AlignedBytes::new(&good[..n]);
        assert!(Bundle::parse(a.as_bytes()).is_err(), "truncated to {n} bytes");
    }
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    assert!(Bundle::parse(AlignedBytes::new(&long).as_bytes()).is_err());
}

/// Re-seals `bytes` with a fresh checksum, so only the semantic check can object.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len() - 4;
    let crc = runtime::crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn semantic_errors_are_distinct() {
    let hd = header(Cell::Gru, 1, 4, 1, 2, 2, Normalization::None);
    let good = bundle(&hd, 3);
    let mut v = good.clone();
    v[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(Bundle::parse(AlignedBytes::new(&v).as_bytes()).unwrap_err(), BundleError::UnsupportedVersion { found: FORMAT_VERSION + 1 });
    // A header claiming more hidden units than the weights hold.
    let mut wrong = hd;
    wrong.hidden = 5;
    let head = postcard::to_allocvec(&wrong).unwrap();
    let mut v = good.clone();
    v[16..16 + head.len()].copy_from_slice(&head);
    let e = Bundle::parse(AlignedBytes::new(&reseal(v)).as_bytes()).unwrap_err();
    assert_eq!(e, BundleError::BadDims("weight count does not match the dimensions"));
    // A NaN weight.
    let mut v = good.clone();
    let at = good.len() - 12;
    v[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(Bundle::parse(AlignedBytes::new(&reseal(v)).as_bytes()).unwrap_err(), BundleError::NonFinite);
    // Not aligned in memory.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&good);
    let a = AlignedBytes::new(&shifted);
    assert_eq!(Bundle::parse(&a.as_bytes()[1..]).unwrap_err(), BundleError::Misaligned);
    // Too large for the compiled capacity.
    let big = AlignedBytes::new(&bundle(&header(Cell::Lstm, 1, 16, 1, 2, 2, Normalization::None), 4));
    let enc = Encoder::from_bytes(big.as_bytes()).unwrap();
    let mut s = State::<8, 1>::default();
    assert_eq!(
        enc.push(&mut s, &[0.5]).unwrap_err(),
        EncodeError::Bundle(BundleError::Capacity { what: "hidden units", need: 16, have: 8 })
    );
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Independent f64 implementation of the encoder equations (PyTorch gate order).
fn reference(b: &Bundle<'_>, window: &[f32]) -> Vec<f64> {
    let hd = b.header;
    let (hid, f) = (hd.hidden as usize, hd.n_features as usize);
    let mut h = vec![vec![0f64; hid]; hd.layers as usize];
    let mut c = h.clone();
    let gh = hd.cell.gates() * hid;
    // Bundle weights are transposed: element (row r, column i) of W sits at i * G*H + r.
    let row = |w: &[f32], r: usize, v: &[f64]| -> f64 { v.iter().enumerate().map(|(i, x)| w[i * gh + r] as f64 * x).sum() };
    let head_row = |w: &[f32], r: usize, v: &[f64]| -> f64 { v.iter().enumerate().map(|(i, x)| w[r * v.len() + i] as f64 * x).sum() };
    for x in window.chunks(f) {
        let mut input: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        for l in 0..hd.layers as usize {
            let (w_ih, w_hh, b_ih, b_hh) = b.layer(l);
            let hp = h[l].clone();
            let pre = |r: usize| row(w_ih, r, &input) + b_ih[r] as f64;
            let rec = |r: usize| row(w_hh, r, &hp) + b_hh[r] as f64;
            for j in 0..hid {
                match hd.cell {
                    Cell::Lstm => {
                        let i = sig(pre(j) + rec(j));
                        let fg = sig(pre(hid + j) + rec(hid + j));
                        let g = (pre(2 * hid + j) + rec(2 * hid + j)).tanh();
                        let o = sig(pre(3 * hid + j) + rec(3 * hid + j));
                        c[l][j] = fg * c[l][j] + i * g;
                        h[l][j] = o * c[l][j].tanh();
                    }
                    Cell::Gru => {
                        let r = sig(pre(j) + rec(j));
                        let z = sig(pre(hid + j) + rec(hid + j));
                        let n = (pre(2 * hid + j) + r * rec(2 * hid + j)).tanh();
                        h[l][j] = (1.0 - z) * n + z * hp[j];
                    }
                }
            }
            input = h[l].clone();
        }
    }
    let (w, bm) = b.head();
    let top = &h[hd.layers as usize - 1];
    (0..hd.latent as usize).map(|j| head_row(w, j, top) + bm[j] as f64).collect()
}

#[test]
fn streaming_matches_reference_and_whole_window() {
    for cell in [Cell::Lstm, Cell::Gru] {
        for (f, layers) in [(1u16, 1u8), (3, 2)] {
            let hd = header(cell, f, 11, layers, 4, 3, Normalization::None);
            let bytes = AlignedBytes::new(&bundle(&hd, 7));
            let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
            let window = values(20 * f as usize, 9, 2.0);
            let mut s = State::<16, 2>::default();
            for x in window.chunks(f as usize) {
                enc.push(&mut s, x).unwrap();
            }
            assert_eq!(s.steps(), 20);
            let streamed: heapless::Vec<f32, 8> = enc.finish(&s).unwrap();
            let whole: heapless::Vec<f32, 8> = enc.encode_window(&mut State::<16, 2>::default(), &window).unwrap();
            assert_eq!(streamed, whole, "{cell:?}: push-by-push differs from the whole window");
            let want = reference(enc.bundle(), &window);
            for (a, b) in streamed.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{cell:?} F{f} L{layers}: {a} vs reference {b}");
            }
            let a = enc.assign(&streamed).unwrap();
            assert!(a.cluster < 3 && a.distance <= a.second_distance);
        }
    }
}

#[test]
fn bad_samples_are_errors_and_zscore_needs_windows() {
    let hd = header(Cell::Lstm, 2, 4, 1, 2, 2, Normalization::None);
    let bytes = AlignedBytes::new(&bundle(&hd, 5));
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let mut s = State::<8, 1>::default();
    assert_eq!(enc.push(&mut s, &[1.0]).unwrap_err(), EncodeError::FeatureCount { got: 1, expected: 2 });
    assert_eq!(enc.push(&mut s, &[1.0, f32::NAN]).unwrap_err(), EncodeError::NonFinite { index: 1 });
    assert_eq!(enc.finish::<8, 1, 4>(&s).unwrap_err(), EncodeError::Empty);
    assert!(matches!(enc.encode_window::<8, 1, 4>(&mut s, &[1.0, 2.0, 3.0]), Err(EncodeError::WindowShape { .. })));
    assert!(matches!(enc.encode_window::<8, 1, 1>(&mut s, &[1.0, 2.0]), Err(EncodeError::Bundle(BundleError::Capacity { .. }))));

    // z-normalising model: streaming is refused; a window equals the same window z-normalised by
    // hand through the plain model.
    let hz = header(Cell::Lstm, 2, 4, 1, 2, 2, Normalization::Zscore);
    let bz = AlignedBytes::new(&bundle(&hz, 5));
    let zenc = Encoder::from_bytes(bz.as_bytes()).unwrap();
    assert_eq!(zenc.push(&mut s, &[1.0, 2.0]).unwrap_err(), EncodeError::NeedsWindow);
    let window = values(30, 3, 5.0);
    let got: heapless::Vec<f32, 4> = zenc.encode_window(&mut s, &window).unwrap();
    let mut norm = window.clone();
    for k in 0..2 {
        let col: Vec<f64> = window.iter().skip(k).step_by(2).map(|v| *v as f64).collect();
        let m = col.iter().sum::<f64>() / 15.0;
        let sd = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 15.0).sqrt();
        for (i, v) in norm.iter_mut().skip(k).step_by(2).enumerate() {
            *v = ((col[i] - m) / sd) as f32;
        }
    }
    let want: heapless::Vec<f32, 4> = enc.encode_window(&mut s, &norm).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// Summary-aware model: 5 segments of 4 samples (and their differences), 3 frequencies, 2 step
/// edges, 2 features, 9 prototypes over 3 clusters.
fn summary_header(norm: Normalization) -> Header {
    let mut hd = header(Cell::Gru, 2, 6, 1, 3, 3, norm);
    hd.segments = 5;
    hd.stride = 4;
    hd.freqs = 3;
    hd.step_edges = 2;
    hd.step_freqs = 2;
    hd.diffs = 1;
    hd.prototypes = 9;
    hd
}

/// The decision by hand in f64: latent, per-segment means and mean absolute steps of the
/// (normalised) window, its DFT magnitudes, step distribution and its steps' DFT magnitudes, offsets and scales, nearest
/// prototype, nearest other cluster.
fn reference_decision(b: &Bundle<'_>, latent: &[f32], window: &[f32]) -> (usize, f64, f64) {
    let hd = b.header;
    let (f, p, st) = (hd.n_features as usize, hd.segments as usize, hd.stride as usize);
    let n = window.len() / f;
    let mut raw: Vec<f64> = latent.iter().map(|v| *v as f64).collect();
    let seg_of = |t: usize| (t / st).min(p - 1);
    let mut means = vec![0f64; p * f];
    let mut steps = vec![0f64; p * f];
    let mut counts = vec![0usize; p];
    for t in 0..n {
        counts[seg_of(t)] += 1;
        for k in 0..f {
            means[seg_of(t) * f + k] += window[t * f + k] as f64;
            if t > 0 {
                steps[seg_of(t) * f + k] += (window[t * f + k] as f64 - window[(t - 1) * f + k] as f64).abs();
            }
        }
    }
    for (i, v) in means.iter_mut().chain(steps.iter_mut()).enumerate() {
        let c = counts[(i % (p * f)) / f];
        *v = if c == 0 { 0.0 } else { *v / c as f64 };
    }
    let seg_means = means.clone();
    raw.extend(means);
    raw.extend(steps);
    let period = hd.seq_len as f64;
    for fr in 1..=hd.freqs as usize {
        for k in 0..f {
            let (mut re, mut im) = (0f64, 0f64);
            for t in 0..n {
                let a = std::f64::consts::TAU * fr as f64 * (t as f64 % period) / period;
                re += window[t * f + k] as f64 * a.cos();
                im -= window[t * f + k] as f64 * a.sin();
            }
            raw.push((re * re + im * im).sqrt() / n as f64);
        }
    }
    for j in 0..hd.step_edges as usize {
        for k in 0..f {
            let e = b.step_edges[j * f + k] as f64;
            let below = (1..n).filter(|&t| (window[t * f + k] as f64 - window[(t - 1) * f + k] as f64) < e).count();
            raw.push(if n > 1 { below as f64 / (n - 1) as f64 } else { 0.0 });
        }
    }
    for fr in 1..=hd.step_freqs as usize {
        for k in 0..f {
            let (mut re, mut im) = (0f64, 0f64);
            for t in 1..n {
                let a = std::f64::consts::TAU * fr as f64 * (t as f64 % period) / period;
                let dx = window[t * f + k] as f64 - window[(t - 1) * f + k] as f64;
                re += dx * a.cos();
                im -= dx * a.sin();
            }
            raw.push(if n > 1 { (re * re + im * im).sqrt() / (n - 1) as f64 } else { 0.0 });
        }
    }
    if hd.diffs == 1 {
        for j in 0..p - 1 {
            for k in 0..f {
                raw.push(if counts[j + 1] == 0 { 0.0 } else { seg_means[(j + 1) * f + k] - seg_means[j * f + k] });
            }
        }
    }
    let d = raw.len();
    let x: Vec<f64> = (0..d).map(|j| (raw[j] - b.offsets[j] as f64) * b.scales[j] as f64).collect();
    let dist: Vec<f64> =
        b.prototypes.chunks(d).map(|pr| pr.iter().zip(&x).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt()).collect();
    let best = (0..dist.len()).min_by(|&a, &b| dist[a].total_cmp(&dist[b])).unwrap();
    let c = b.prototype_clusters[best] as usize;
    let second = (0..dist.len()).filter(|&i| b.prototype_clusters[i] as usize != c).map(|i| dist[i]).fold(f64::INFINITY, f64::min);
    (c, dist[best], second)
}

#[test]
fn summary_decision_streams_and_matches_reference() {
    let hd = summary_header(Normalization::None);
    let bytes = AlignedBytes::new(&bundle(&hd, 11));
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    assert_eq!(enc.bundle().header.decision_dims(), 3 + (2 * 5 + 3 + 2 + 2 + 4) * 2);
    let mut agree = 0;
    // 20 samples fill the segments exactly; 13 leave the last segments short or empty; 26 spill
    // into the last segment.
    for (i, n) in [20usize, 13, 26, 1].iter().enumerate() {
        let window = values(n * 2, 40 + i as u32, 2.0);
        let mut s = State::<8, 1>::default();
        for x in window.chunks(2) {
            enc.push(&mut s, x).unwrap();
        }
        let z: heapless::Vec<f32, 4> = enc.finish(&s).unwrap();
        let a = enc.decide(&s, &z).unwrap();
        let (c, d, second) = reference_decision(enc.bundle(), &z, &window);
        assert_eq!(a.cluster, c, "{n} samples");
        assert!((a.distance as f64 - d).abs() < 1e-4 && (a.second_distance as f64 - second).abs() < 1e-4, "{n}: {a:?} vs {d} {second}");
        agree += 1;
        // The whole-window path and the host batch path decide the same, bit for bit.
        let (zw, aw) = enc.classify_window::<8, 1, 4>(&mut State::<8, 1>::default(), &window).unwrap();
        assert_eq!((zw, aw), (z.clone(), a));
        let batch = runtime::batch::assign_all(&enc, &window, window.len(), &z).unwrap();
        assert_eq!(batch, vec![a]);
    }
    assert_eq!(agree, 4);
    // The latent alone is not enough for this model.
    assert_eq!(enc.assign(&[0.0, 0.0, 0.0]).unwrap_err(), EncodeError::NeedsSummary);
}

#[test]
fn summary_of_a_zscore_model_uses_the_normalised_window() {
    let hz = summary_header(Normalization::Zscore);
    let bz = AlignedBytes::new(&bundle(&hz, 12));
    let zenc = Encoder::from_bytes(bz.as_bytes()).unwrap();
    let window = values(40, 5, 7.0);
    let (z, a) = zenc.classify_window::<8, 1, 4>(&mut State::<8, 1>::default(), &window).unwrap();
    // Normalise by hand, then the reference decision on the normalised values.
    let mut norm = window.clone();
    for k in 0..2 {
        let col: Vec<f64> = window.iter().skip(k).step_by(2).map(|v| *v as f64).collect();
        let m = col.iter().sum::<f64>() / 20.0;
        let sd = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 20.0).sqrt();
        for (i, v) in norm.iter_mut().skip(k).step_by(2).enumerate() {
            *v = ((col[i] - m) / sd) as f32;
        }
    }
    let (c, d, _) = reference_decision(zenc.bundle(), &z, &norm);
    assert_eq!(a.cluster, c);
    assert!((a.distance as f64 - d).abs() < 1e-3, "{} vs {d}", a.distance);
}

#[test]
fn bad_prototype_clusters_and_old_versions() {
    let hd = summary_header(Normalization::None);
    let good = bundle(&hd, 13);
    // The last prototype's cluster (just before the k = 3 thresholds, the step edges and the
    // checksum) set to k, then to 1.5.
    let edges = 4 * hd.step_edges_len();
    for bad_value in [3.0f32, 1.5, -1.0] {
        let mut v = good.clone();
        let at = good.len() - 4 - edges - 12 - 4;
        v[at..at + 4].copy_from_slice(&bad_value.to_le_bytes());
        assert_eq!(
            Bundle::parse(AlignedBytes::new(&reseal(v)).as_bytes()).unwrap_err(),
            BundleError::BadPrototypeCluster { index: 8, k: 3 }
        );
    }
    // A negative anomaly threshold (the last cluster's).
    let mut v = good.clone();
    let at = good.len() - 4 - edges - 4;
    v[at..at + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
    assert_eq!(Bundle::parse(AlignedBytes::new(&reseal(v)).as_bytes()).unwrap_err(), BundleError::BadThreshold { cluster: 2 });
    let mut v = good.clone();
    v[8..12].copy_from_slice(&0u32.to_le_bytes());
    let e = Bundle::parse(AlignedBytes::new(&reseal(v)).as_bytes()).unwrap_err();
    assert_eq!(e, BundleError::UnsupportedVersion { found: 0 });
    assert!(e.to_string().contains("version 0") && e.to_string().contains("trainer export"), "{e}");
}

/// The version 1 bundle shipped before the decision tables (ECG5000, GRU 90, latent 20, 5
/// centroids) still loads and assigns by nearest centroid.
#[test]
fn version_1_bundle_still_loads() {
    let bytes = AlignedBytes::new(include_bytes!("fixtures/ecg5000-v1.bundle"));
    assert_eq!(u32::from_le_bytes(bytes.as_bytes()[8..12].try_into().unwrap()), 1);
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let hd = enc.bundle().header;
    assert_eq!((hd.k, hd.prototypes, hd.segments, hd.latent), (5, 5, 0, 20));
    assert!(enc.bundle().offsets.is_empty() && enc.bundle().prototype_clusters.is_empty());
    let window = values(140, 1, 2.0);
    let (z, a) = enc.classify_window::<96, 1, 32>(&mut State::<96, 1>::default(), &window).unwrap();
    let c = enc.bundle().prototypes;
    let d: Vec<f32> = c.chunks(20).map(|r| r.iter().zip(&z).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()).collect();
    let want = (0..5).min_by(|&i, &j| d[i].total_cmp(&d[j])).unwrap();
    assert_eq!(a.cluster, want);
    assert_eq!(enc.assign(&z).unwrap(), a);
}

/// A window is anomalous exactly when its distance exceeds its cluster's threshold.
#[test]
fn anomaly_flag_follows_the_cluster_threshold() {
    let hd = summary_header(Normalization::None);
    let windows: Vec<Vec<f32>> =
        (0..40).map(|s| values(hd.seq_len as usize * hd.n_features as usize, 100 + s, 0.5 + s as f32 * 0.1)).collect();
    let decide = |thresholds: Vec<f32>| -> Vec<runtime::Assignment> {
        let d = hd.decision_dims();
        let p = hd.prototypes as usize;
        let tables = DecisionTables {
            offsets: values(d, 15, 0.5),
            scales: vec![1.0; d],
            prototypes: values(p * d, 14, 1.0),
            clusters: (0..p).map(|i| i % hd.k as usize).collect(),
            anomaly_thresholds: thresholds.clone(),
            step_edges: (0..hd.step_edges_len()).map(|i| i as f32 * 0.1).collect(),
        };
        let bytes = AlignedBytes::new(&encode(&hd, &values(hd.weights_len as usize, 13, 0.4), &tables).unwrap());
        let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
        // All thresholds at f32::MAX (what a model without them is exported with) flag nothing.
        assert_eq!(enc.bundle().has_anomaly_thresholds(), thresholds.iter().any(|&t| t < f32::MAX));
        windows.iter().map(|w| enc.classify_window::<8, 1, 4>(&mut State::<8, 1>::default(), w).unwrap().1).collect()
    };
    let never = decide(vec![f32::MAX; 3]);
    assert!(never.iter().all(|a| !a.anomalous));
    let mut dist: Vec<f32> = never.iter().map(|a| a.distance).collect();
    dist.sort_by(f32::total_cmp);
    let t = [dist[10], dist[20], dist[30]];
    let flagged = decide(t.to_vec());
    for (a, b) in never.iter().zip(&flagged) {
        assert_eq!((a.cluster, a.distance, a.second_distance), (b.cluster, b.distance, b.second_distance));
        assert_eq!(b.anomalous, b.distance > t[b.cluster], "{b:?} vs thresholds {t:?}");
    }
    let n = flagged.iter().filter(|a| a.anomalous).count();
    // Both outcomes occur, so the check above could fail either way.
    assert!(n > 0 && n < flagged.len(), "{n} of {} flagged", flagged.len());
}

/// The tables a parsed bundle carries re-encode it byte for byte, and with another minimum
/// window length into a bundle that decides the same (the shipped model has segment
/// differences, so both are version 7).
#[test]
fn decision_tables_of_a_parsed_bundle_re_encode_it() {
    let shipped = AlignedBytes::new(include_bytes!("../../models/ecg5000/model.bundle"));
    let b = Bundle::parse(shipped.as_bytes()).unwrap();
    assert_eq!((b.version, b.header.diffs, b.header.min_len), (7, 1, 1));
    assert_eq!(encode(&b.header, b.weights, &DecisionTables::of(&b)).unwrap(), shipped.as_bytes());
    let v6 = AlignedBytes::new(&encode(&Header { min_len: 120, ..b.header }, b.weights, &DecisionTables::of(&b)).unwrap());
    let b6 = Bundle::parse(v6.as_bytes()).unwrap();
    assert_eq!((b6.version, b6.header.min_len), (7, 120));
    assert_eq!(DecisionTables::of(&b6), DecisionTables::of(&b));
    // A version 1 bundle predates the tables: they come back empty and cannot be encoded.
    let v1 = AlignedBytes::new(include_bytes!("fixtures/ecg5000-v1.bundle"));
    let b1 = Bundle::parse(v1.as_bytes()).unwrap();
    assert!(matches!(encode(&b1.header, b1.weights, &DecisionTables::of(&b1)), Err(BundleError::BadDims(_))));
}

/// The version 2 bundle shipped before the anomaly thresholds (ECG5000 with the window summary
/// and 8 prototypes per cluster) still loads, decides as before and flags nothing.
#[test]
fn version_2_bundle_loads_and_flags_nothing() {
    let bytes = AlignedBytes::new(include_bytes!("fixtures/ecg5000-v2.bundle"));
    assert_eq!(u32::from_le_bytes(bytes.as_bytes()[8..12].try_into().unwrap()), 2);
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    assert_eq!(enc.bundle().version, 2);
    assert!(!enc.bundle().has_anomaly_thresholds());
    assert!(enc.bundle().header.segments > 0 && enc.bundle().header.prototypes > enc.bundle().header.k);
    for seed in 0..5 {
        // Far from every prototype: a version 3 bundle would flag these.
        let window = values(140, 200 + seed, 50.0);
        let (_, a) = enc.classify_window::<96, 1, 32>(&mut State::<96, 1>::default(), &window).unwrap();
        assert!(!a.anomalous && a.cluster < 5);
    }
}

/// The version 3 bundle shipped before the spectrum and step distribution (ECG5000, summary of
/// segment means and steps, anomaly thresholds) still loads, with no spectrum, and still flags.
#[test]
fn version_3_bundle_loads_without_the_new_summary_blocks() {
    let bytes = AlignedBytes::new(include_bytes!("fixtures/ecg5000-v3.bundle"));
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let hd = enc.bundle().header;
    assert_eq!(enc.bundle().version, 3);
    assert_eq!((hd.freqs, hd.step_edges, enc.bundle().step_edges.len()), (0, 0, 0));
    assert_eq!(hd.decision_dims(), hd.latent as usize + 2 * hd.segments as usize);
    assert!(enc.bundle().has_anomaly_thresholds());
    let flagged = (0..5)
        .filter(|&seed| {
            let window = values(140, 200 + seed, 50.0);
            enc.classify_window::<96, 1, 32>(&mut State::<96, 1>::default(), &window).unwrap().1.anomalous
        })
        .count();
    assert_eq!(flagged, 5, "windows far from every prototype are anomalous");
}

/// The version 4 bundle shipped before the steps' spectrum (ECG5000: latent, segment blocks,
/// spectrum, step distribution) still loads, with no steps' spectrum, and decides as the f64
/// reference does on the blocks it has.
#[test]
fn version_4_bundle_loads_without_the_steps_spectrum() {
    let bytes = AlignedBytes::new(include_bytes!("fixtures/ecg5000-v4.bundle"));
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let hd = enc.bundle().header;
    assert_eq!(enc.bundle().version, 4);
    assert_eq!(hd.step_freqs, 0);
    assert!(hd.freqs > 0 && hd.step_edges > 0);
    assert_eq!(hd.decision_dims(), hd.latent as usize + 2 * hd.segments as usize + hd.freqs as usize + hd.step_edges as usize);
    for seed in 0..5 {
        let window = values(140, 300 + seed, 1.0);
        let (z, a) = enc.classify_window::<96, 1, 32>(&mut State::<96, 1>::default(), &window).unwrap();
        let (c, d, _) = reference_decision(enc.bundle(), &z, &window);
        assert_eq!(a.cluster, c);
        assert!((a.distance as f64 - d).abs() < 1e-3 * d.max(1.0), "{} vs {d}", a.distance);
    }
}

/// A minimum window length travels in a version-6 header and `finish` (one window or a batch)
/// refuses shorter windows; a model without one is written as version 5, byte for byte what the
/// encoder wrote before the field existed.
#[test]
fn minimum_length_is_version_6_and_enforced_by_finish() {
    let mut hd = header(Cell::Gru, 2, 5, 1, 3, 2, Normalization::None);
    let plain = bundle(&hd, 4);
    assert_eq!(u32::from_le_bytes(plain[8..12].try_into().unwrap()), 5, "no minimum: version 5");
    hd.min_len = 6;
    let bytes = AlignedBytes::new(&bundle(&hd, 4));
    assert_eq!(u32::from_le_bytes(bytes.as_bytes()[8..12].try_into().unwrap()), 6);
    assert_eq!(FORMAT_VERSION, 8);
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    assert_eq!(enc.bundle().header.min_len, 6);
    let mut s: State<8, 2> = State::default();
    let window = values(2 * 6, 9, 1.0);
    let z = enc.encode_window::<8, 2, 4>(&mut s, &window).unwrap();
    // The same weights without the minimum give the same latent: the field only gates.
    let plain_bytes = AlignedBytes::new(&plain);
    let old = Encoder::from_bytes(plain_bytes.as_bytes()).unwrap();
    assert_eq!(old.encode_window::<8, 2, 4>(&mut s, &window).unwrap(), z);
    assert_eq!(
        enc.encode_window::<8, 2, 4>(&mut s, &window[..2 * 5]).unwrap_err(),
        EncodeError::TooShort { steps: 5, min: 6 },
        "one sample short"
    );
    assert!(old.encode_window::<8, 2, 4>(&mut s, &window[..2 * 5]).is_ok(), "control: no minimum, no error");
    let batch = values(2 * 5 * 3, 10, 1.0);
    let e = runtime::batch::embed_windows(&enc, &batch, 10).unwrap_err();
    assert_eq!(e, EncodeError::TooShort { steps: 5, min: 6 });
    assert!(e.to_string().contains("minimum length 6"), "{e}");
    // A zero minimum is not a bundle.
    hd.min_len = 0;
    let w = values(hd.weights_len as usize, 4, 0.4);
    let d = hd.decision_dims();
    let tables = DecisionTables {
        offsets: vec![0.0; d],
        scales: vec![1.0; d],
        prototypes: vec![0.0; 2 * d],
        clusters: vec![0, 1],
        anomaly_thresholds: vec![1.0; 2],
        step_edges: vec![],
    };
    assert!(encode(&hd, &w, &tables).is_err());
}

/// Segment differences travel in a version-7 header; the same model without them is written
/// as version 6 or 5 as before; a header with a differences flag other than 0/1, or with fewer
/// than 2 segments, is refused by `encode` and by `parse`.
#[test]
fn segment_differences_are_version_7_and_checked() {
    let hd = summary_header(Normalization::None);
    let with = bundle(&hd, 21);
    assert_eq!(u32::from_le_bytes(with[8..12].try_into().unwrap()), 7);
    let parsed = AlignedBytes::new(&with);
    let b = Bundle::parse(parsed.as_bytes()).unwrap();
    assert_eq!((b.version, b.header.diffs, b.header.diff_count()), (7, 1, 4));
    assert_eq!(b.summary_shape().len(), (2 * 5 + 3 + 2 + 2 + 4) * 2);
    let without = Header { diffs: 0, ..hd };
    let plain = bundle(&without, 21);
    assert_eq!(u32::from_le_bytes(plain[8..12].try_into().unwrap()), 5, "no differences, no minimum: version 5");
    let pb = AlignedBytes::new(&plain);
    let p = Bundle::parse(pb.as_bytes()).unwrap();
    assert_eq!((p.header.diffs, p.header.decision_dims()), (0, hd.decision_dims() - 8));
    let v6 = bundle(&Header { min_len: 3, ..without }, 21);
    let b6 = AlignedBytes::new(&v6);
    assert_eq!(Bundle::parse(b6.as_bytes()).unwrap().version, 6);
    let w = values(hd.weights_len as usize, 4, 0.4);
    for bad in [Header { diffs: 2, ..hd }, Header { diffs: 1, segments: 1, stride: 20, ..hd }] {
        let d = bad.decision_dims();
        let tables = DecisionTables {
            offsets: vec![0.0; d],
            scales: vec![1.0; d],
            prototypes: vec![0.0; 9 * d],
            clusters: (0..9).map(|i| i % 3).collect(),
            anomaly_thresholds: vec![1.0; 3],
            step_edges: vec![0.0; bad.step_edges_len()],
        };
        assert!(matches!(encode(&bad, &w, &tables), Err(BundleError::BadDims(_))), "{bad:?}");
    }
    // A stored flag of 2 (the header's last byte):
    // refused on parse, after resealing the checksum.
    let mut bytes = with.clone();
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    assert_eq!(bytes[16 + hlen - 1], 1);
    bytes[16 + hlen - 1] = 2;
    let end = bytes.len() - 4;
    let crc = runtime::crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    let a = AlignedBytes::new(&bytes);
    assert!(matches!(Bundle::parse(a.as_bytes()), Err(BundleError::BadDims(_))));
}

/// int8 weights travel in a version 8 bundle about a quarter of the f32 one's weight bytes;
/// streaming, whole-window and batched encoding give the same bits; the latents track the f32
/// model's; the dequantised weights re-encode to the same bytes; a negative scale (resealed) and
/// a model too wide for the i32 sums are refused.
#[test]
fn int8_weights_are_version_8_and_checked() {
    use runtime::WeightFormat;
    for cell in [Cell::Lstm, Cell::Gru] {
        let mut hd = Header { cell, layers: 2, n_features: 3, hidden: 33, ..summary_header(Normalization::None) };
        hd.weights_len = hd.expected_weights() as u32;
        let q = Header { weight_format: WeightFormat::Int8, ..hd };
        let (f32_bytes, q_bytes) = (bundle(&hd, 31), bundle(&q, 31));
        assert_eq!(u32::from_le_bytes(q_bytes[8..12].try_into().unwrap()), 8);
        assert_eq!(u32::from_le_bytes(f32_bytes[8..12].try_into().unwrap()), 7, "f32 weights keep version 7");
        // The matrices and the prototypes shrink to a byte a value (plus pair padding); the
        // weights' scales and biases and the prototypes' scales stay f32.
        let (p, d) = (q.prototypes as usize, q.decision_dims());
        let saved = 4 * hd.weights_len as usize - 4 * q.f32_weights_len() + 4 * p * d - 4 * d - q.int8_bytes().div_ceil(4) * 4;
        let head = |b: &[u8]| (16 + u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize).div_ceil(4) * 4;
        assert_eq!(f32_bytes.len() + head(&q_bytes), q_bytes.len() + head(&f32_bytes) + saved, "{cell:?}");
        let (fa, qa) = (AlignedBytes::new(&f32_bytes), AlignedBytes::new(&q_bytes));
        let (fe, qe) = (Encoder::from_bytes(fa.as_bytes()).unwrap(), Encoder::from_bytes(qa.as_bytes()).unwrap());
        assert!(qe.bundle().is_int8() && !fe.bundle().is_int8());
        assert_eq!(qe.bundle().header, q);
        let window = values(3 * 20, 41, 1.5);
        let mut s: State<64, 2> = State::default();
        let zf = fe.encode_window::<64, 2, 4>(&mut s, &window).unwrap();
        let zq = qe.encode_window::<64, 2, 4>(&mut s, &window).unwrap();
        let scale = zf.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = zf.iter().zip(&zq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 0.05 * scale && err > 0.0, "{cell:?}: int8 latent off by {err} (scale {scale})");
        let mut streamed: State<64, 2> = State::default();
        window.chunks(3).for_each(|x| qe.push(&mut streamed, x).unwrap());
        let zs = qe.finish::<64, 2, 4>(&streamed).unwrap();
        let batch = runtime::batch::embed_windows(&qe, &window.repeat(5), window.len()).unwrap();
        let bits = |z: &[f32]| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&zs), bits(&zq));
        for row in batch.chunks(q.latent as usize) {
            assert_eq!(bits(row), bits(&zq), "{cell:?}: grouped int8 encoding differs");
        }
        let b = qe.bundle();
        let again = encode(&b.header, &b.float_weights(), &DecisionTables::of(b)).unwrap();
        assert_eq!(again, q_bytes, "{cell:?}: dequantised weights re-quantise to other bytes");
        // The first scale of layer 0's W_ih made negative, checksum resealed.
        let mut bad = q_bytes.clone();
        let hlen = u32::from_le_bytes(bad[12..16].try_into().unwrap()) as usize;
        let at = (16 + hlen).div_ceil(4) * 4;
        bad[at..at + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
        let e = Bundle::parse(AlignedBytes::new(&reseal(bad.clone())).as_bytes()).unwrap_err();
        assert_eq!(e, BundleError::BadScale { index: 0 });
        assert!(e.to_string().contains("scale 0 is negative"), "{e}");
        // Control: the same position in the f32 bundle is a weight, and may be negative.
        let mut f = f32_bytes.clone();
        f[at..at + 4].copy_from_slice(&(-0.5f32).to_le_bytes());
        assert!(Bundle::parse(AlignedBytes::new(&reseal(f)).as_bytes()).is_ok());
        // A negative prototype scale (the third table after the weights section), resealed.
        let mut badp = q_bytes.clone();
        let pat = at + 4 * (q.f32_weights_len() + 2 * d + 1);
        badp[pat..pat + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
        let e = Bundle::parse(AlignedBytes::new(&reseal(badp)).as_bytes()).unwrap_err();
        assert_eq!(e, BundleError::BadPrototypeScale { dim: 1 });
        // The int8 prototypes decide as the dequantised table does.
        let qb = qe.bundle();
        let (mut st, mut sq) = (State::<64, 2>::default(), State::<64, 2>::default());
        let z = qe.encode_window::<64, 2, 4>(&mut sq, &window).unwrap();
        let deq = encode(&Header { weight_format: WeightFormat::F32, ..q }, &qb.float_weights(), &DecisionTables::of(qb)).unwrap();
        let da = AlignedBytes::new(&deq);
        let de = Encoder::from_bytes(da.as_bytes()).unwrap();
        let zd = de.encode_window::<64, 2, 4>(&mut st, &window).unwrap();
        let (aq, ad) = (qe.decide(&sq, &z).unwrap(), de.decide(&st, &zd).unwrap());
        assert_eq!(aq.cluster, ad.cluster, "{cell:?}");
        assert!((aq.distance - ad.distance).abs() <= 1e-3 * ad.distance.max(1.0), "{cell:?}: {} vs {}", aq.distance, ad.distance);
        // A NaN scale is non-finite, as a NaN weight is.
        bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Bundle::parse(AlignedBytes::new(&reseal(bad)).as_bytes()).unwrap_err(), BundleError::NonFinite);
        // Every truncation of the int8 bundle is refused.
        for n in [q_bytes.len() - 1, q_bytes.len() - 5, q_bytes.len() / 2] {
            assert!(Bundle::parse(AlignedBytes::new(&reseal(q_bytes[..n].to_vec())).as_bytes()).is_err());
        }
    }
    let wide = header(Cell::Gru, 1, 513, 1, 2, 2, Normalization::None);
    let w = values(wide.weights_len as usize, 4, 0.4);
    let tables = DecisionTables::centroids(&[0.0; 4], 2);
    assert!(encode(&wide, &w, &tables).is_ok(), "control: 513 hidden units as f32");
    let e = encode(&Header { weight_format: runtime::WeightFormat::Int8, ..wide }, &w, &tables).unwrap_err();
    assert!(matches!(e, BundleError::BadDims(m) if m.contains("512 inputs")), "{e}");
}
