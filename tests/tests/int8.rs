//! int8 weights on the shipped ECG5000 model: the trainer's export and the runtime's encoder
//! write the same bundle, and on all 5000 series its cluster IDs agree with the f32 bundle's on
//! at least 99% (its latents differ, so it must not be bit-identical), every host path (grouped
//! batch, two-core, streaming) giving the int8 bundle the same bits.

use runtime::bundle::{encode, AlignedBytes, Bundle, DecisionTables, Header};
use runtime::encoder::State;
use runtime::{Encoder, WeightFormat};
use tests::*;

#[test]
fn int8_bundle_agrees_with_f32_on_all_ecg5000_series() {
    let dir = shipped_model_dir();
    let m = trainer::artifacts::load_model(&dir, &candle_core::Device::Cpu).unwrap();
    let c = m.centroids.as_ref().unwrap();
    let exported =
        trainer::export::bundle_bytes_min(&m.config.model, m.config.data.normalization, &m.weights, &c.decision(), 1, WeightFormat::Int8)
            .unwrap();
    let shipped = AlignedBytes::new(&std::fs::read(dir.join("model.bundle")).unwrap());
    let fb = Bundle::parse(shipped.as_bytes()).unwrap();
    let by_runtime = encode(&Header { weight_format: WeightFormat::Int8, ..fb.header }, fb.weights, &DecisionTables::of(&fb)).unwrap();
    assert_eq!(exported, by_runtime, "the trainer's export and the runtime's encoder quantise differently");
    let qa = AlignedBytes::new(&exported);
    let (fe, qe) = (Encoder::new(fb), Encoder::from_bytes(qa.as_bytes()).unwrap());
    assert!(qe.bundle().is_int8());
    eprintln!("bundle bytes: f32 {}, int8 {}", shipped.as_bytes().len(), exported.len());

    let ds = trainer::data::bundled::ecg5000().unwrap();
    let windows: Vec<f32> = ds.series.iter().flat_map(|s| s.values.iter().copied()).collect();
    let (zf, zq) = (runtime::batch::embed_windows(&fe, &windows, 140).unwrap(), runtime::batch::embed_windows(&qe, &windows, 140).unwrap());
    let (af, aq) =
        (runtime::batch::assign_all(&fe, &windows, 140, &zf).unwrap(), runtime::batch::assign_all(&qe, &windows, 140, &zq).unwrap());
    let same = af.iter().zip(&aq).filter(|(a, b)| a.cluster == b.cluster).count();
    let worst = zf.iter().zip(&zq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("int8 vs f32 on 5000 ECG5000 series: {same} same cluster IDs, largest latent difference {worst}");
    assert!(same as f64 >= 0.99 * 5000.0, "only {same} of 5000 cluster IDs agree with f32");
    assert!(worst > 0.0, "int8 latents equal f32's bit for bit: the int8 kernels did not run");

    // Every host path gives the int8 bundle the same bits: streaming sample by sample, the
    // two-core encoder (which runs int8 on one core), and the grouped batch above.
    let mut duo = runtime::duo::DuoEncoder::new(qe).unwrap();
    let bits = |z: &[f32]| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (i, s) in ds.series.iter().enumerate().step_by(211) {
        let mut st = State::<128, 2>::default();
        for x in &s.values {
            qe.push(&mut st, std::slice::from_ref(x)).unwrap();
        }
        let streamed: heapless::Vec<f32, 64> = qe.finish(&st).unwrap();
        assert_eq!(bits(&streamed), bits(&zq[i * 20..(i + 1) * 20]), "series {i}: streaming vs batch");
        assert_eq!(bits(&duo.encode_window(&s.values).unwrap()), bits(&streamed), "series {i}: two-core vs streaming");
        assert_eq!(qe.decide(&st, &streamed).unwrap(), aq[i]);
    }
}
