//! One function per fuzz target. Each takes arbitrary bytes and must return normally: every
//! rejection is an `Err` the function inspects, never a panic, a hang or an out-of-bounds access.
//! `fuzz/libfuzzer` wraps them for `cargo fuzz`; `tests/replay.rs` runs the committed seeds and
//! every crasher ever found (`fuzz/regressions/<target>/`) through them on stable Rust.

use std::path::Path;

use runtime::bundle::{AlignedBytes, BundleError};
use runtime::{Encoder, State};

/// Capacity of the fuzzed encoder state: large enough for the shipped models, small enough that a
/// mutated header claiming more is rejected by the capacity check.
const H: usize = 128;
const LAYERS: usize = 3;
const LAT: usize = 64;

/// Names of all targets, as used by `fuzz/run.sh` and the replay test.
pub const TARGETS: [&str; 6] = ["bundle", "encoder_stream", "data_loaders", "model_files", "checkpoint", "fleet_rows"];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "bundle" => bundle(data),
        "encoder_stream" => encoder_stream(data),
        "data_loaders" => data_loaders(data),
        "model_files" => model_files(data),
        "checkpoint" => checkpoint(data),
        "fleet_rows" => fleet_rows(data),
        _ => return false,
    }
    true
}

/// The runtime's bundle parser (the no_std code path) and, when it accepts, one window through
/// the encoder. The first byte chooses whether the checksum is re-sealed after the mutation, so
/// the fuzzer also reaches the header and dimension checks behind the CRC.
pub fn bundle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 20 {
        let n = bytes.len() - 4;
        let crc = runtime::crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
    let aligned = AlignedBytes::new(&bytes);
    let Ok(enc) = Encoder::from_bytes(aligned.as_bytes()) else { return };
    let hd = enc.bundle().header;
    assert_eq!(enc.bundle().weights.len(), hd.f32_weights_len(), "accepted bundle with a wrong weight count");
    assert_eq!(enc.bundle().qweights.len() + enc.bundle().qprototypes.len(), hd.int8_bytes(), "accepted bundle with a wrong int8 section");
    if enc.bundle().is_int8() {
        // The scale table, biases and int8 matrices dequantise to a whole f32 model.
        assert_eq!(enc.bundle().float_weights().len(), hd.expected_weights());
    }
    let table = if enc.bundle().is_int8() { enc.bundle().qprototypes.len() } else { enc.bundle().prototypes.len() };
    assert_eq!(table, hd.prototypes as usize * hd.decision_dims());
    let mut s = State::<H, LAYERS>::default();
    let f = hd.n_features as usize;
    if f > 4096 {
        return; // a window of such samples would only test the allocator
    }
    let window: Vec<f32> = (0..3 * f).map(|i| (i as f32 * 0.37).sin()).collect();
    match enc.classify_window::<H, LAYERS, LAT>(&mut s, &window) {
        Ok((z, a)) => {
            assert!(z.iter().all(|v| v.is_finite()), "finite weights and inputs gave a non-finite latent");
            assert!(a.cluster < hd.k as usize);
        }
        Err(runtime::EncodeError::Bundle(BundleError::Capacity { .. })) => {}
        // Extreme (finite) decision scales can overflow a decision value: an error, not a cluster.
        Err(runtime::EncodeError::Assign(runtime::AssignError::NonFinite { .. })) => {}
        Err(e) => panic!("a valid bundle failed on a finite window: {e}"),
    }
}

/// The shipped model's streaming encoder fed arbitrary f32 bit patterns (NaN, inf, subnormal,
/// huge), one sample at a time and as whole windows.
pub fn encoder_stream(data: &[u8]) {
    static BUNDLE: &[u8] = include_bytes!("../../models/ecg5000/model.bundle");
    let aligned = AlignedBytes::new(BUNDLE);
    let enc = Encoder::from_bytes(aligned.as_bytes()).expect("the shipped bundle parses");
    let values: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut s = State::<H, LAYERS>::default();
    let f = enc.bundle().header.n_features as usize;
    for sample in values.chunks(f) {
        match enc.push(&mut s, sample) {
            Ok(()) => {}
            Err(runtime::EncodeError::NonFinite { .. } | runtime::EncodeError::FeatureCount { .. }) => {
                assert!(sample.len() != f || sample.iter().any(|v| !v.is_finite()));
            }
            Err(runtime::EncodeError::NeedsWindow) => break,
            Err(e) => panic!("unexpected streaming error: {e}"),
        }
    }
    if s.steps() > 0 {
        let z = enc.finish::<H, LAYERS, LAT>(&s).expect("a pushed state finishes");
        assert!(z.iter().all(|v| v.is_finite()), "finite samples gave a non-finite latent");
        // The window summary of finite but huge samples can overflow to infinity: an error, not
        // a wrong cluster.
        match enc.decide(&s, &z) {
            Ok(a) => assert!(a.cluster < enc.bundle().header.k as usize),
            Err(runtime::EncodeError::Assign(runtime::AssignError::NonFinite { .. })) => {}
            Err(e) => panic!("a finite latent could not be decided: {e}"),
        }
    }
    match enc.classify_window::<H, LAYERS, LAT>(&mut s, &values) {
        Ok((z, _)) => assert!(z.iter().all(|v| v.is_finite())),
        // As above: huge finite samples may overflow the summary; the decision refuses them.
        Err(runtime::EncodeError::Assign(runtime::AssignError::NonFinite { index })) => {
            assert!(index >= enc.bundle().header.latent as usize, "non-finite latent at {index}")
        }
        Err(e) => {
            let finite = values.iter().all(|v| v.is_finite());
            assert!(!finite || values.is_empty() || matches!(e, runtime::EncodeError::NonFinite { .. }), "{e}");
        }
    }
}

/// The trainer's data loaders; the first byte picks the format (UCR, aeon .ts, CSV, gzip of each).
pub fn data_loaders(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let name = ["f.tsv", "f.ts", "f.csv", "f.tsv.gz", "f.ts.gz", "f.csv.gz", "f.txt", "f.bin"][sel as usize % 8];
    use trainer::data::CsvLabel;
    let label = [CsvLabel::Auto, CsvLabel::First, CsvLabel::Last, CsvLabel::None][(sel as usize / 8) % 4];
    let opts = trainer::data::CsvOptions { label };
    if let Ok(ds) = trainer::data::parse_bytes(Path::new(name), rest, &opts) {
        assert!(!ds.is_empty());
        assert!(ds.n_features >= 1);
        for s in &ds.series {
            assert_eq!(s.values.len(), s.len * ds.n_features, "series values disagree with its length");
            assert!(s.values.iter().all(|v| v.is_finite()), "a loader let a non-finite value through");
        }
        if let Some(l) = &ds.labels {
            assert_eq!(l.len(), ds.len());
        }
    }
}

/// Reading a model directory back: `config.json`, `model.safetensors` and `centroids.json`, split
/// from the input at the first two `0xFF` bytes (which never occur in valid JSON).
pub fn model_files(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let config = parts.next().unwrap_or_default();
    let weights = parts.next().unwrap_or_default();
    let centroids = parts.next();
    let dev = candle_core::Device::Cpu;
    if let Ok(m) = trainer::artifacts::parse_model(Path::new("fuzz"), config, weights, centroids, &dev) {
        // An accepted model must also convert to the runtime's form without panicking.
        let _ = m.native();
    }
}

/// A training checkpoint read back for `fit --resume` (safetensors + JSON metadata).
pub fn checkpoint(data: &[u8]) {
    let dev = candle_core::Device::Cpu;
    if let Ok(ck) = trainer::checkpoint::Checkpoint::from_bytes(data, Path::new("fuzz/checkpoint.safetensors"), &dev) {
        let s = &ck.meta.state;
        assert_eq!(s.log.len(), s.epochs_done);
        assert_eq!(s.order.len(), ck.meta.run.data.n_train);
        // Restoring the RNG must not panic either.
        let _ = s.rng.restore();
    }
}

/// `edge`'s long-format fleet rows into windows, lenient and strict.
pub fn fleet_rows(data: &[u8]) {
    use edge::fleet::{SessionLimits, Windower, WindowerParams};
    let Some((&sel, rest)) = data.split_first() else { return };
    for strict in [false, true] {
        let p = WindowerParams {
            features: 1 + (sel as usize % 3),
            window: 1 + (sel as usize / 3) % 5,
            stride: 1 + (sel as usize / 15) % 3,
            max_gap: if sel & 0x80 != 0 { Some(2.0) } else { None },
            strict,
            // Sessions (cut at gaps) for some selectors that have a gap.
            sessions: (sel & 0xc0 == 0xc0).then_some(SessionLimits { min: 1 + (sel as usize / 3) % 3, max: 3 + (sel as usize / 3) % 5 }),
            // A session id column for half of those.
            session_column: sel & 0xc1 == 0xc1,
        };
        let sessions = p.sessions.is_some();
        let (f, w) = (p.features, p.window);
        let mut win = Windower::new(p).expect("sizes are >= 1");
        let mut vals = Vec::new();
        let mut emitted = 0;
        let mut reader = edge::csv_input::reader(rest);
        let mut record = csv::ByteRecord::new();
        let mut stopped = false;
        while reader.read_byte_record(&mut record).expect("reading from memory cannot fail") {
            let line = record.position().map_or(0, |p| p.line() as usize);
            let first = !win.started();
            match win.feed_record(line, &record, &mut vals) {
                Ok(Some(_)) => emitted += 1,
                Ok(None) => {}
                Err(_) if strict => {
                    stopped = true;
                    break;
                }
                // Lenient mode stops only on a first record that is neither header nor reading.
                Err(e) if first => {
                    assert!(e.line == line, "{e}");
                    stopped = true;
                    break;
                }
                Err(e) => panic!("lenient mode returned an error after the first record: {e}"),
            }
        }
        if sessions {
            // Sessions vary in length; closing the open ones accounts for every value.
            let closed = win.finish(&mut vals);
            emitted += closed.len();
            assert!(vals.len().is_multiple_of(f) && vals.len() >= emitted * f);
        } else {
            assert_eq!(vals.len(), emitted * w * f);
        }
        let s = win.summary();
        assert_eq!(s.windows, emitted);
        if !strict && !stopped {
            assert_eq!(s.rows, s.malformed + s.out_of_order + win.samples(), "a row was neither used nor counted");
        }
    }
}
