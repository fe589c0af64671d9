//! Training behaviour on small synthetic data: the loss falls, no series is dropped, runs are
//! reproducible, saved models give identical latents, and every row is embedded.

use std::path::Path;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::artifacts::{load_model, save_model};
use trainer::data::prep::Normalization;
use trainer::data::{Dataset, Series};
use trainer::embed::NativeEncoder;
use trainer::fit::{fit, FitOptions};
use trainer::model::{ModelConfig, ParamStore, Vrae};
use trainer::params::{Cell, LossScaling, VraeParams};
use trainer::run_record::{DataInfo, RunRecord};
use trainer::train::{batch_tensor, train};

/// Two classes of noisy waves: a sine and a sawtooth-like ramp, `n` of each, `t` steps, `nf`
/// features (feature f is the wave shifted by f).
// The rounded constants are part of the test data (the generated waves), not approximations.
#[allow(clippy::approx_constant)]
fn waves(n: usize, t: usize, nf: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut series = Vec::new();
    let mut labels = Vec::new();
    for i in 0..2 * n {
        let class = i % 2;
        let phase: f32 = rng.gen_range(0.0..0.5);
        let mut values = Vec::with_capacity(t * nf);
        for s in 0..t {
            for f in 0..nf {
                let x = s as f32 / t as f32 * 6.28 + phase + f as f32;
                let v = if class == 0 { x.sin() } else { (x % 3.14) / 1.57 - 1.0 };
                values.push(v + rng.gen_range(-0.05..0.05));
            }
        }
        series.push(Series { values, len: t });
        labels.push(format!("c{class}"));
    }
    Dataset { series, labels: Some(labels), n_features: nf, sources: vec!["synthetic".into()] }
}

fn small(cell: Cell, epochs: usize) -> VraeParams {
    VraeParams {
        cell,
        hidden_size: 12,
        hidden_layer_depth: 2,
        latent_length: 3,
        batch_size: 8,
        learning_rate: 1e-2,
        epochs,
        kl_anneal_epochs: 0,
        early_stopping: false,
        ..VraeParams::default()
    }
}

fn cfg(p: &VraeParams, t: usize, nf: usize) -> ModelConfig {
    ModelConfig {
        cell: p.cell,
        n_features: nf,
        seq_len: t,
        hidden_size: p.hidden_size,
        hidden_layer_depth: p.hidden_layer_depth,
        latent_length: p.latent_length,
        dropout: p.dropout,
    }
}

fn flat(store: &ParamStore) -> Vec<f32> {
    store.iter().flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

#[test]
fn loss_goes_down_for_lstm_and_gru() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let ds = waves(12, 16, 2, 1);
        let p = small(cell, 25);
        let (_, log) = train(&p.clone().check().unwrap(), &cfg(&p, 16, 2), &ds.series, &Device::Cpu, &trainer::progress::quiet).unwrap();
        let (first, last) = (log[0].recon, log.last().unwrap().recon);
        assert!(last < 0.5 * first, "{cell:?}: reconstruction {first} -> {last} did not halve");
    }
}

#[test]
fn same_seed_gives_identical_weights_and_other_seed_does_not() {
    let ds = waves(5, 10, 1, 2);
    let p = small(Cell::Gru, 2);
    let run = |seed| {
        let p = VraeParams { seed, ..p.clone() };
        flat(&train(&p.clone().check().unwrap(), &cfg(&p, 10, 1), &ds.series, &Device::Cpu, &trainer::progress::quiet).unwrap().0)
    };
    let a = run(4);
    assert_eq!(a, run(4));
    assert_ne!(a, run(5));
}

#[test]
fn contrastive_term_trains_reproducibly_and_changes_the_weights() {
    let ds = waves(8, 16, 1, 5);
    let run = |weight: f64| {
        let p = VraeParams { contrastive_weight: weight, ..small(Cell::Gru, 4) };
        let (store, log) =
            train(&p.clone().check().unwrap(), &cfg(&p, 16, 1), &ds.series, &Device::Cpu, &trainer::progress::quiet).unwrap();
        (flat(&store), log)
    };
    let (off, log_off) = run(0.0);
    let (on, log_on) = run(1.0);
    assert!(log_off.iter().all(|e| e.contrastive.is_none()));
    let c: Vec<f64> = log_on.iter().map(|e| e.contrastive.expect("logged when on")).collect();
    assert!(c.iter().all(|v| v.is_finite() && *v >= 0.0), "{c:?}");
    // The term is in the optimised loss: the weights differ, and again equal for the same seed.
    assert_ne!(on, off);
    assert_eq!(on, run(1.0).0);
}

#[test]
fn every_series_including_the_last_partial_batch_is_trained_on() {
    // 11 series with batch 4: batches of 4, 4, 3. If any series were skipped, changing it would
    // leave the weights unchanged.
    let ds = waves(6, 8, 1, 3);
    let series = &ds.series[..11];
    let p = VraeParams { batch_size: 4, dropout: 0.0, ..small(Cell::Lstm, 1) };
    let c = cfg(&p, 8, 1);
    let vp = p.clone().check().unwrap();
    let base = flat(&train(&vp, &c, series, &Device::Cpu, &trainer::progress::quiet).unwrap().0);
    for i in 0..series.len() {
        let mut changed = series.to_vec();
        changed[i].values[3] += 0.5;
        let w = flat(&train(&vp, &c, &changed, &Device::Cpu, &trainer::progress::quiet).unwrap().0);
        assert_ne!(w, base, "series {i} did not influence training");
    }
}

fn config_for(c: &ModelConfig, p: &VraeParams) -> RunRecord {
    RunRecord {
        trainer_version: "test".into(),
        ..RunRecord::new(
            *c,
            p.clone(),
            DataInfo {
                sources: vec![],
                n_series: 0,
                n_train: 0,
                n_holdout: 0,
                holdout: 0.0,
                length_range: (c.seq_len, c.seq_len),
                resampled: false,
                length: trainer::data::prep::LengthMode::Native,
                min_length: None,
                cut: 0,
                normalization: Normalization::None,
                labels: None,
                fingerprint: None,
            },
        )
    }
}

#[test]
fn save_load_gives_identical_latents_and_every_row_is_embedded() {
    let ds = waves(300, 12, 2, 4); // 600 series: more than one inference batch of 512
    let p = small(Cell::Lstm, 1);
    let c = cfg(&p, 12, 2);
    let (store, _) = train(&p.clone().check().unwrap(), &c, &ds.series[..40], &Device::Cpu, &trainer::progress::quiet).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_model(dir.path(), &config_for(&c, &p), &store).unwrap();
    let loaded = load_model(dir.path(), &Device::Cpu).unwrap();
    let stand_in = trainer::cluster::decision::Decision::placeholder(3, 2, &trainer::cluster::decision::SummaryLayout::NONE, Vec::new());
    let a = NativeEncoder::new(&c, Normalization::None, &store, &stand_in).unwrap().embed(&ds.series).unwrap();
    let b = loaded.native().unwrap().embed(&ds.series).unwrap();
    assert_eq!(a.len(), 600 * 3);
    assert_eq!(a, b, "latents differ after save -> load");
    // One series alone embeds exactly as inside a batch.
    let one = loaded.native().unwrap().embed(&ds.series[599..]).unwrap();
    assert_eq!(one, a[599 * 3..]);
    // The runtime's native kernels agree with the candle model's own forward pass.
    let fresh = Vrae::bind(&c, &store, Path::new("mem")).unwrap();
    let refs: Vec<&Series> = ds.series.iter().collect();
    let x = batch_tensor(&refs, 12, 2, &Device::Cpu).unwrap();
    let candle: Vec<f32> = fresh.encode_mean(&x, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let worst = a.iter().zip(&candle).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "native vs candle max abs diff {worst}");
}

#[test]
fn fit_separates_two_clear_classes_and_writes_all_artifacts() {
    let ds = waves(40, 20, 1, 5);
    let p = VraeParams { loss_scaling: LossScaling::Mean, ..small(Cell::Gru, 15) };
    let opts = FitOptions {
        params: p.check().unwrap(),
        holdout: 0.25,
        normalization: Normalization::Zscore,
        clusters: None,
        n_init: 5,
        decision: trainer::cluster::decision::DecisionParams { choose_summary: true, ..Default::default() },
        ..FitOptions::new(small(Cell::Gru, 1).check().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let s = fit(ds, &opts, dir.path(), &Device::Cpu).unwrap();
    for f in ["model.safetensors", "config.json", "centroids.json", "metrics.json", "training_log.csv", "assignments.csv"] {
        assert!(dir.path().join(f).metadata().unwrap().len() > 0, "{f} missing or empty");
    }
    assert_eq!((s.n_train, s.n_holdout), (60, 20));
    assert_eq!(s.metrics.k, 2);
    let tr = s.metrics.vrae_train.unwrap();
    let ho = s.metrics.vrae_holdout.unwrap();
    assert!(tr.ari > 0.9 && ho.ari > 0.9, "train {tr:?} held-out {ho:?}");
    let rows = std::fs::read_to_string(dir.path().join("assignments.csv")).unwrap().lines().count();
    assert_eq!(rows, 1 + 80);
    let log = std::fs::read_to_string(dir.path().join("training_log.csv")).unwrap();
    assert_eq!(log.lines().count(), 1 + 15);
    let loaded = load_model(dir.path(), &Device::Cpu).unwrap();
    let c = loaded.centroids.unwrap();
    assert_eq!(c.k, 2);
    // Both decision vectors were weighed and the bundle holds the more stable one.
    let st = &s.metrics.stability;
    assert_eq!(st.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["latent+summary", "latent"]);
    let (with, alone) = (st[0].1.unwrap(), st[1].1.unwrap());
    assert!((0.0..=1.0).contains(&with.abs()) && (0.0..=1.0).contains(&alone.abs()), "{st:?}");
    let d = c.decision.unwrap();
    assert_eq!(d.segments > 0, with >= alone, "kept segments {} with stabilities {st:?}", d.segments);
    // Every training series is flagged or not by its cluster's threshold.
    assert_eq!(d.anomaly_thresholds.len(), 2);
    assert!(s.metrics.anomalous_train <= 60 / 50 + 1, "{} of 60 flagged at the 0.99 quantile", s.metrics.anomalous_train);
}

#[test]
fn unequal_lengths_in_resample_mode_are_resampled_to_the_longest_and_recorded() {
    let mut ds = waves(6, 16, 2, 6);
    for (i, s) in ds.series.iter_mut().enumerate() {
        if i % 3 == 0 {
            *s = trainer::data::prep::resample(s, 2, 11);
        }
    }
    let opts = FitOptions {
        params: small(Cell::Lstm, 1).check().unwrap(),
        holdout: 0.0,
        normalization: Normalization::None,
        length: trainer::data::prep::LengthMode::Resample,
        clusters: None,
        n_init: 2,
        ..FitOptions::new(small(Cell::Gru, 1).check().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let s = fit(ds, &opts, dir.path(), &Device::Cpu).unwrap();
    assert_eq!((s.n_train, s.n_holdout), (12, 0));
    assert!(s.metrics.vrae_holdout.is_none());
    let loaded = load_model(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config.model.seq_len, 16);
    assert!(loaded.config.data.resampled);
    assert_eq!(loaded.config.data.length_range, (11, 16));
}

/// Two classes that differ by the shape of a 12-step transient which sits anywhere in the
/// window, with the same height and the same total up and down movement: a triangle (rises over 6
/// steps, falls over 6) or a spike that decays linearly over 11; `n` of each, 64 steps.
fn moving_transients(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut series, mut labels) = (Vec::new(), Vec::new());
    for i in 0..2 * n {
        let class = i % 2;
        let at = rng.gen_range(0..48usize);
        let values: Vec<f32> = (0..64)
            .map(|t| {
                let inside = (at..at + 12).contains(&t);
                let k = t.wrapping_sub(at) as f32;
                let v = match (inside, class) {
                    (false, _) => 0.0,
                    (true, 0) => 2.0 * (1.0 - (k - 6.0).abs() / 6.0),
                    (true, _) => 2.0 * (1.0 - k / 11.0),
                };
                v + rng.gen_range(-0.1..0.1)
            })
            .collect();
        series.push(Series { values, len: 64 });
        labels.push(format!("c{class}"));
    }
    Dataset { series, labels: Some(labels), n_features: 1, sources: vec!["synthetic".into()] }
}

/// The spectra and step distribution see the transient's shape wherever it sits; without them
/// (segment blocks and a barely trained latent) the classes mix. The control shows the first
/// assertion can fail.
#[test]
fn shift_invariant_summary_separates_a_moving_transient() {
    use trainer::cluster::decision::DecisionParams;
    let run = |decision: DecisionParams| {
        let opts = FitOptions {
            holdout: 0.0,
            normalization: Normalization::Zscore,
            clusters: Some(2),
            n_init: 5,
            decision,
            ..FitOptions::new(small(Cell::Gru, 1).check().unwrap())
        };
        let dir = tempfile::tempdir().unwrap();
        let s = fit(moving_transients(40, 3), &opts, dir.path(), &Device::Cpu).unwrap();
        s.metrics.vrae_train.unwrap()
    };
    let with = run(DecisionParams::default());
    assert!(with.nmi > 0.8, "{with:?}");
    let without = run(DecisionParams { spectrum_freqs: 0, step_levels: 0, step_spectrum_freqs: 0, ..Default::default() });
    assert!(without.nmi < 0.3, "{without:?}");
}

/// The uploaded batches a GPU trains on (`Batches::on_device`) hold exactly what the packed CPU
/// batches hold, rows in the order asked for.
#[test]
fn device_batches_equal_packed_batches() {
    let ds = waves(5, 12, 2, 9);
    let rows = [7usize, 0, 3, 9, 3];
    let refs: Vec<&Series> = rows.iter().map(|&i| &ds.series[i]).collect();
    let packed: Vec<f32> = batch_tensor(&refs, 12, 2, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let up = trainer::train::Batches::on_device(&ds.series, 12, 2, &Device::Cpu).unwrap();
    let x = up.batch(&rows).unwrap();
    assert_eq!(x.x.dims(), [12, 5, 2]);
    assert!(x.lengths.is_none() && x.mask.is_none(), "equal lengths need no mask");
    assert_eq!(x.x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), packed);
    let other: Vec<f32> = up.batch(&[0, 7, 3, 9, 3]).unwrap().x.flatten_all().unwrap().to_vec1().unwrap();
    assert_ne!(other, packed, "row order matters");
}

/// A batch of series of unequal lengths, packed on the CPU and cut from the uploaded form, is
/// padded to its longest row (not the data set's) with zeros, and carries the rows' lengths and
/// the loss mask.
#[test]
fn ragged_batches_are_padded_to_their_longest_row() {
    let mut ds = waves(5, 12, 2, 9);
    for (i, s) in ds.series.iter_mut().enumerate() {
        let n = 3 + i % 9;
        s.values.truncate(n * 2);
        s.len = n;
    }
    let rows = [7usize, 0, 3, 2];
    let host = trainer::train::Batches::new(&ds.series, 12, 2, &Device::Cpu).unwrap().batch(&rows).unwrap();
    let up = trainer::train::Batches::on_device(&ds.series, 12, 2, &Device::Cpu).unwrap().batch(&rows).unwrap();
    let lengths = vec![10, 3, 6, 5];
    for b in [&host, &up] {
        assert_eq!(b.x.dims(), [10, 4, 2], "padded to the longest row, 10");
        assert_eq!(b.lengths.as_ref(), Some(&lengths));
        let m: Vec<f32> = b.mask.as_ref().unwrap().mask.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m.iter().sum::<f32>() as usize, 24);
        assert_eq!(b.mask.as_ref().unwrap().steps, 24);
        let x: Vec<Vec<Vec<f32>>> = b.x.to_vec3().unwrap();
        for (j, (&r, &n)) in rows.iter().zip(&lengths).enumerate() {
            for t in 0..10 {
                let want = if t < n { ds.series[r].values[t * 2..t * 2 + 2].to_vec() } else { vec![0.0, 0.0] };
                assert_eq!(x[t][j], want, "row {j} step {t}");
                assert_eq!(m[t * 4 + j], if t < n { 1.0 } else { 0.0 });
            }
        }
    }
}
