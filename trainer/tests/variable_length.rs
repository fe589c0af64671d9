//! Series of unequal lengths at their own length (`--length native`): what the model records, how
//! new data is prepared for it, that each series is embedded over exactly its own steps, and
//! that on data whose classes differ by cycle period it clusters what resampling mixes.

use candle_core::Device;
use trainer::artifacts::load_model;
use trainer::data::prep::{LengthMode, Normalization};
use trainer::data::synthetic::{cycles, CyclesParams};
use trainer::data::{Dataset, Series};
use trainer::embed::prepare;
use trainer::fit::{fit, FitOptions};
use trainer::params::{Cell, VraeParams};

fn small(cell: Cell, epochs: usize) -> VraeParams {
    VraeParams {
        cell,
        hidden_size: 16,
        hidden_layer_depth: 1,
        latent_length: 4,
        batch_size: 16,
        learning_rate: 5e-3,
        epochs,
        kl_anneal_epochs: 0,
        early_stopping: false,
        ..VraeParams::default()
    }
}

fn opts(length: LengthMode, params: VraeParams) -> FitOptions {
    FitOptions { holdout: 0.0, length, n_init: 5, plots: false, ..FitOptions::new(params.check().unwrap()) }
}

#[test]
fn native_lengths_are_recorded_embedded_alone_and_checked_on_new_data() {
    let ds = cycles(&CyclesParams { per_class: 6, lengths: (20, 50), ..CyclesParams::default() });
    let shortest = ds.series.iter().map(|s| s.len).min().unwrap();
    let dir = tempfile::tempdir().unwrap();
    fit(ds.clone(), &opts(LengthMode::Native, small(Cell::Lstm, 2)), dir.path(), &Device::Cpu).unwrap();
    let m = load_model(dir.path(), &Device::Cpu).unwrap();
    let d = &m.config.data;
    assert_eq!((d.length, d.resampled, d.cut), (LengthMode::Native, false, 0));
    assert_eq!(m.config.model.seq_len, ds.max_len());
    assert_eq!(d.min_length, Some(shortest / 2));

    // Each series' latent is the runtime's over exactly its own steps.
    let native = m.native().unwrap();
    let z = native.embed(&ds.series).unwrap();
    let enc = runtime::Encoder::from_bytes(native.bytes()).unwrap();
    let mut state = runtime::batch::HostState::default();
    for (i, s) in ds.series.iter().enumerate() {
        let alone = enc.encode_window::<512, 4, 256>(&mut state, &s.values).unwrap();
        assert_eq!(&z[i * 4..(i + 1) * 4], alone.as_slice(), "series {i} ({} steps)", s.len);
    }
    // A series encoded at another length (a control) gives another latent.
    let stretched = trainer::data::prep::resample(&ds.series[0], 1, ds.max_len());
    assert_ne!(native.embed(&[stretched]).unwrap(), z[..4].to_vec());

    // New data: longer series are cut to the model's length, shorter than the minimum refused.
    let long = Series { values: (0..80).map(|t| (t as f32 * 0.3).sin()).collect(), len: 80 };
    let mut new = Dataset { series: vec![ds.series[1].clone(), long], labels: None, n_features: 1, sources: vec!["new.ts".into()] };
    let p = prepare(&mut new, &m.config).unwrap();
    assert_eq!((p.cut, p.resampled), (1, 0));
    assert_eq!(new.series[1].len, ds.max_len());
    assert_eq!(new.series[0], ds.series[1], "a series within the limits is untouched");
    let short = Series { values: vec![0.5; shortest / 2 - 1], len: shortest / 2 - 1 };
    let mut bad = Dataset { series: vec![ds.series[0].clone(), short], labels: None, n_features: 1, sources: vec!["new.ts".into()] };
    let e = prepare(&mut bad, &m.config).unwrap_err().to_string();
    assert!(e.contains("new.ts") && e.contains("series 1") && e.contains("minimum length"), "{e}");
}

#[test]
fn max_length_cuts_longer_series_and_is_recorded() {
    let ds = cycles(&CyclesParams { per_class: 4, lengths: (20, 50), ..CyclesParams::default() });
    let over = ds.series.iter().filter(|s| s.len > 30).count();
    assert!(over > 0);
    let dir = tempfile::tempdir().unwrap();
    let o = FitOptions { max_length: Some(30), ..opts(LengthMode::Native, small(Cell::Gru, 1)) };
    fit(ds, &o, dir.path(), &Device::Cpu).unwrap();
    let m = load_model(dir.path(), &Device::Cpu).unwrap();
    assert_eq!((m.config.model.seq_len, m.config.data.cut), (30, over));
    let zero = FitOptions { max_length: Some(0), ..o };
    let e = fit(cycles(&CyclesParams { per_class: 2, ..CyclesParams::default() }), &zero, dir.path(), &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("--max-length"), "{e}");
}

/// Equal-length data is trained identically in both modes (the same model bytes).
#[test]
fn equal_lengths_train_the_same_model_in_both_modes() {
    let ds = cycles(&CyclesParams { per_class: 4, lengths: (24, 24), ..CyclesParams::default() });
    let weights = |mode| {
        let dir = tempfile::tempdir().unwrap();
        fit(ds.clone(), &opts(mode, small(Cell::Lstm, 2)), dir.path(), &Device::Cpu).unwrap();
        std::fs::read(dir.path().join("model.bundle")).unwrap()
    };
    assert_eq!(weights(LengthMode::Native), weights(LengthMode::Resample));
}

/// Classes that differ only by cycle period, with lengths over a 4x range: at their own length
/// the periods stay apart; resampled onto one length the periods of each class spread over a 4x
/// range and overlap. Scored on the device's decision (latent and window summary, both over the
/// series' steps as given). The resample run is the control that the first assertion can fail.
/// The quality harness's Cycles row also scores the latent alone (bench/quality.sh).
#[test]
fn native_lengths_cluster_cycle_periods_that_resampling_mixes() {
    let ds = cycles(&CyclesParams { per_class: 30, lengths: (40, 160), ..CyclesParams::default() });
    let run = |mode| {
        let params = VraeParams { epochs: 20, early_stopping: false, ..VraeParams::default() };
        let o = FitOptions { normalization: Normalization::None, ..opts(mode, params) };
        let dir = tempfile::tempdir().unwrap();
        fit(ds.clone(), &o, dir.path(), &Device::Cpu).unwrap().metrics.vrae_train.unwrap()
    };
    let (native, resampled) = (run(LengthMode::Native), run(LengthMode::Resample));
    eprintln!("native {native:?}\nresample {resampled:?}");
    assert!(native.ari > 0.9, "native {native:?}");
    assert!(native.ari > resampled.ari + 0.5, "native {native:?} vs resample {resampled:?}");
}

/// Multivariate series of unequal lengths from an aeon `.ts` file and from a long CSV train at
/// native length through the CLI, and `embed` encodes a series of a length the training data
/// did not have.
#[test]
fn multivariate_unequal_ts_and_long_csv_train_natively_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let trainer = env!("CARGO_BIN_EXE_trainer");
    // Two classes: the two features in phase or in opposition, 12..=30 steps.
    let mut ts = String::from("@problemName Two\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n");
    let mut long = String::from("series_id,t,x,y,label\n");
    for i in 0..24 {
        let n = 12 + (i * 7) % 19;
        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
        let x: Vec<f32> = (0..n).map(|t| (t as f32 * 0.7 + i as f32).sin()).collect();
        let y: Vec<f32> = x.iter().map(|v| sign * v).collect();
        let join = |v: &[f32]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let label = if i % 2 == 0 { "a" } else { "b" };
        ts.push_str(&format!("{}:{}:{label}\n", join(&x), join(&y)));
        for t in 0..n {
            long.push_str(&format!("s{i},{t},{},{},{label}\n", x[t], y[t]));
        }
    }
    for (name, text) in [("two.ts", ts), ("two.csv", long)] {
        let data = dir.path().join(name);
        std::fs::write(&data, text).unwrap();
        let model = dir.path().join(format!("m-{name}"));
        let o = std::process::Command::new(trainer)
            .args([
                "fit",
                data.to_str().unwrap(),
                "--out",
                model.to_str().unwrap(),
                "--epochs",
                "2",
                "--holdout",
                "0",
                "--no-plots",
                "--quiet",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {err}");
        assert!(err.contains("--length native"), "{name}: {err}");
        let m = load_model(&model, &Device::Cpu).unwrap();
        assert_eq!((m.config.model.n_features, m.config.model.seq_len, m.config.data.length), (2, 30, LengthMode::Native), "{name}");
        assert_eq!(m.config.data.length_range, (12, 30));
        // A series of any length from the minimum (half of 12) to the cap embeds as it is; a
        // 3-step one is refused.
        let new = dir.path().join("new.csv");
        let rows: String = (0..20).map(|t| format!("n,{t},{},{}\n", t as f32 * 0.1, 0.5)).collect();
        std::fs::write(&new, format!("series_id,t,x,y\n{rows}")).unwrap();
        let o = std::process::Command::new(trainer).args(["embed", model.to_str().unwrap(), new.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
        let rows: String = (0..3).map(|t| format!("n,{t},{},{}\n", t, 0.5)).collect();
        std::fs::write(&new, format!("series_id,t,x,y\n{rows}")).unwrap();
        let o = std::process::Command::new(trainer).args(["embed", model.to_str().unwrap(), new.to_str().unwrap()]).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("new.csv") && e.contains("minimum length 6"), "{e}");
    }
}
