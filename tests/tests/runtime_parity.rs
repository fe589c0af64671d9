//! The shipped ECG5000 model on all 5000 series: the runtime's native kernels (batched and the
//! two-core one-window path), onnxruntime and tract give the same latents (within 1e-4 of the
//! largest latent magnitude) and the same cluster IDs; the candle model agrees too; streaming sample by sample equals the whole-window call on the real bundle.

use runtime::bundle::AlignedBytes;
use runtime::encoder::State;
use runtime::Encoder;
use tests::*;

/// Relative to the largest latent magnitude (at least 1): f32 rounding over 140 recurrent steps
/// grows with the values (the shipped latents reach |z| = 4.3, where engines differ by ~2e-4).
const TOL: f32 = 1e-4;

#[test]
fn native_duo_ort_tract_and_candle_agree_on_all_ecg5000_series() {
    let dir = shipped_model_dir();
    let m = trainer::artifacts::load_model(&dir, &candle_core::Device::Cpu).unwrap();
    let ds = trainer::data::bundled::ecg5000().unwrap();
    let (t, f, l) = (140, 1, m.config.model.latent_length);
    let native = m.native().unwrap();
    let z_native = native.embed(&ds.series).unwrap();
    let z_candle = candle_embed(&m, &ds.series).unwrap();

    let onnx = dir.join("encoder.onnx");
    let mut ort = OrtEncoder::load(&onnx, 2).unwrap();
    let mut z_ort = Vec::new();
    for chunk in ds.series.chunks(500) {
        z_ort.extend(ort.run(&time_major(chunk, t, f), t, chunk.len(), f).unwrap());
    }
    let tract = runtime::tract_engine::TractEncoder::load(&onnx, t, f).unwrap();
    let windows: Vec<f32> = ds.series.iter().flat_map(|s| s.values.iter().copied()).collect();
    let z_tract = tract.embed(&windows).unwrap();

    let bundle = AlignedBytes::new(&std::fs::read(dir.join("model.bundle")).unwrap());
    let mut duo = runtime::duo::DuoEncoder::new(Encoder::from_bytes(bundle.as_bytes()).unwrap()).unwrap();
    let mut z_duo = Vec::new();
    for s in &ds.series {
        z_duo.extend(duo.encode_window(&s.values).unwrap());
    }

    let pairs = [
        ("native-ort", &z_native, &z_ort),
        ("native-duo", &z_native, &z_duo),
        ("duo-ort", &z_duo, &z_ort),
        ("native-tract", &z_native, &z_tract),
        ("native-candle", &z_native, &z_candle),
        ("ort-tract", &z_ort, &z_tract),
    ];
    let scale = z_native.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (name, a, b) in pairs {
        let d = max_abs_diff(a, b);
        eprintln!("{name}: max abs diff {d:e} over {} latents (largest |z| {scale})", a.len());
        assert!(d <= TOL * scale, "{name}: max abs diff {d:e} > {TOL:e} x {scale}");
    }
    // Cluster IDs: the same decision tables (latent + window summary, prototypes) through the
    // shared decision code.
    let ids = |z: &[f32]| -> Vec<usize> { native.assign(&ds.series, z).unwrap().iter().map(|a| a.cluster).collect() };
    let (a, b, c, d) = (ids(&z_native), ids(&z_ort), ids(&z_tract), ids(&z_duo));
    let differ = |o: &[usize]| a.iter().zip(o).filter(|(x, y)| x != y).count();
    let (diff_ort, diff_tract, diff_duo) = (differ(&b), differ(&c), differ(&d));
    assert_eq!(
        (diff_ort, diff_tract, diff_duo),
        (0, 0, 0),
        "cluster IDs differ for {diff_ort} (ort) / {diff_tract} (tract) / {diff_duo} (two-core) of 5000 series"
    );
    assert_eq!(z_native.len(), 5000 * l);
}

#[test]
fn streaming_equals_whole_window_on_the_shipped_bundle() {
    let bytes = std::fs::read(shipped_model_dir().join("model.bundle")).unwrap();
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).unwrap();
    let ds = trainer::data::bundled::ecg5000().unwrap();
    for s in ds.series.iter().step_by(97) {
        let mut st = State::<128, 2>::default();
        for x in &s.values {
            enc.push(&mut st, std::slice::from_ref(x)).unwrap();
        }
        let streamed: heapless::Vec<f32, 64> = enc.finish(&st).unwrap();
        let mut whole_state = State::<128, 2>::default();
        let (whole, whole_decision) = enc.classify_window::<128, 2, 64>(&mut whole_state, &s.values).unwrap();
        assert_eq!(streamed, whole);
        // The decision from the state streamed sample by sample (its running summary) equals the
        // whole-window call's and the host batch path's.
        let decided = enc.decide(&st, &streamed).unwrap();
        assert_eq!(decided, whole_decision);
        assert_eq!(runtime::batch::assign_all(&enc, &s.values, s.values.len(), &streamed).unwrap(), vec![decided]);
    }
}

#[test]
fn shipped_bundle_matches_shipped_weights_and_centroids() {
    let dir = shipped_model_dir();
    let m = trainer::artifacts::load_model(&dir, &candle_core::Device::Cpu).unwrap();
    let rebuilt = m.native().unwrap();
    let shipped = std::fs::read(dir.join("model.bundle")).unwrap();
    assert_eq!(rebuilt.bytes(), &shipped[..], "models/ecg5000/model.bundle is stale: re-run `trainer export models/ecg5000 --bundle`");
}
