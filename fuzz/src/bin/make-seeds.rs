//! Writes the starting corpus `fuzz/seeds/<target>/` from the repo's own data and a tiny trained
//! model, so every seed is a valid input that the fuzzer then mutates. Deterministic; rerun after
//! a format change: `cargo run -p fuzz --bin make-seeds`.

use std::io::Write;
use std::path::{Path, PathBuf};

use runtime::bundle::{encode, Cell, DecisionTables, Header, Normalization, WeightFormat};

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

fn with_selector(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(body);
    v
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    let repo = root.parent().expect("fuzz/ sits in the repo");

    // bundle: tiny LSTM and GRU bundles, checksum as stored (mode 0) and re-sealed (mode 1).
    // The GRU one decides on the latent beside a window summary (2 segments, 2 frequencies, 1
    // step edge) and the segments' difference, with 5 prototypes, and a minimum window length of 3
    // (a version 7 bundle).
    // The int8 one stores its matrices quantised with a scale table (a version 8 bundle).
    for (name, cell, norm, segments, weight_format) in [
        ("lstm", Cell::Lstm, Normalization::None, 0u16, WeightFormat::F32),
        ("gru_z", Cell::Gru, Normalization::Zscore, 2, WeightFormat::F32),
        ("gru_int8", Cell::Gru, Normalization::None, 2, WeightFormat::Int8),
    ] {
        let prototypes = if segments > 0 { 5 } else { 3 };
        let mut hd = Header {
            cell,
            n_features: 2,
            hidden: 3,
            layers: 2,
            latent: 2,
            k: 3,
            seq_len: 8,
            normalization: norm,
            weights_len: 0,
            segments,
            stride: 4,
            prototypes,
            freqs: segments,
            step_edges: segments / 2,
            step_freqs: segments / 2,
            min_len: if segments > 0 { 3 } else { 1 },
            diffs: u8::from(segments > 1),
            weight_format,
        };
        hd.weights_len = hd.expected_weights() as u32;
        let w: Vec<f32> = (0..hd.weights_len).map(|i| ((i as f32) * 0.7).sin() * 0.5).collect();
        let d = hd.decision_dims();
        let tables = DecisionTables {
            offsets: vec![0.1; d],
            scales: vec![0.9; d],
            prototypes: (0..prototypes as usize * d).map(|i| i as f32 * 0.25 - 0.5).collect(),
            clusters: (0..prototypes as usize).map(|i| i % 3).collect(),
            anomaly_thresholds: vec![1.0, 2.0, 3.0],
            step_edges: (0..hd.step_edges_len()).map(|i| i as f32 * 0.1 - 0.05).collect(),
        };
        let b = encode(&hd, &w, &tables).expect("valid tiny bundle");
        put(&seeds.join("bundle"), &format!("{name}_sealed"), &with_selector(0, &b));
        put(&seeds.join("bundle"), &format!("{name}_reseal"), &with_selector(1, &b));
    }

    // encoder_stream: one real ECG beat as f32, and the same with a NaN and an infinity inside.
    let ecg = trainer::data::bundled::ecg5000().expect("bundled ECG5000");
    let beat: Vec<u8> = ecg.series[0].values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put(&seeds.join("encoder_stream"), "beat", &beat);
    let mut bad = beat.clone();
    bad[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    bad[80..84].copy_from_slice(&f32::INFINITY.to_le_bytes());
    put(&seeds.join("encoder_stream"), "beat_nan_inf", &bad);

    // data_loaders: the selector byte picks the file name (see `fuzz::data_loaders`).
    let tsv: String = ecg.series[..3]
        .iter()
        .zip(ecg.labels.as_ref().expect("labelled"))
        .map(|(s, l)| format!("{l}\t{}\n", s.values[..20].iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\t")))
        .collect();
    let ts = "# toy\n@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength true\n\
              @seriesLength 3\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8,9:10,11,12:b\n";
    let csv_wide = "label,t0,t1,t2\nx,1.5,2,3\ny,4,5,6e-1\n";
    let csv_long = "series_id,t,a,b\ns1,0,1,2\ns1,1,3,4\ns2,0,5,6\ns2,1,7,8\n";
    let dl = seeds.join("data_loaders");
    put(&dl, "ucr", &with_selector(0, tsv.as_bytes()));
    put(&dl, "ts", &with_selector(1, ts.as_bytes()));
    put(&dl, "csv_wide", &with_selector(2, csv_wide.as_bytes()));
    put(&dl, "csv_long", &with_selector(2 + 8 * 3, csv_long.as_bytes()));
    put(&dl, "ucr_gz", &with_selector(3, &gz(tsv.as_bytes())));
    put(&dl, "ts_gz", &with_selector(4, &gz(ts.as_bytes())));

    // model_files: a tiny model fitted on the first ECG beats, its three files joined by 0xFF.
    let tmp = std::env::temp_dir().join(format!("fuzz-seed-model-{}", std::process::id()));
    let params = trainer::params::VraeParams {
        hidden_size: 4,
        latent_length: 2,
        epochs: 1,
        early_stopping: false,
        batch_size: 8,
        ..Default::default()
    };
    let opts = trainer::fit::FitOptions {
        params: params.check().expect("valid tiny params"),
        holdout: 0.0,
        normalization: trainer::data::prep::Normalization::None,
        clusters: Some(2),
        n_init: 1,
        ..trainer::fit::FitOptions::new(trainer::params::VraeParams::default().check().expect("defaults are valid"))
    };
    let mut small = ecg.subset(&(0..16).collect::<Vec<_>>());
    for s in &mut small.series {
        s.values.truncate(12);
        s.len = 12;
    }
    trainer::fit::fit(small, &opts, &tmp, &candle_core::Device::Cpu).expect("tiny fit");
    let mut joined = std::fs::read(tmp.join("config.json")).expect("config");
    joined.push(0xFF);
    joined.extend(std::fs::read(tmp.join("model.safetensors")).expect("weights"));
    joined.push(0xFF);
    joined.extend(std::fs::read(tmp.join("centroids.json")).expect("centroids"));
    put(&seeds.join("model_files"), "tiny", &joined);
    put(&seeds.join("checkpoint"), "tiny", &std::fs::read(tmp.join("checkpoint.safetensors")).expect("checkpoint"));
    let _ = std::fs::remove_dir_all(&tmp);

    // fleet_rows: the head of the sample fleet file (1 feature, window 2, stride 1).
    let fleet = std::fs::read_to_string(repo.join("data/fleet/sample.csv")).expect("sample fleet");
    let head: String = fleet.lines().take(60).map(|l| format!("{l}\n")).collect();
    put(&seeds.join("fleet_rows"), "sample_head", &with_selector(3, head.as_bytes()));
    put(&seeds.join("fleet_rows"), "two_features", &with_selector(0x80 | 4, b"d,t,a,b\nx,1,1,2\nx,2,3,4\ny,1,0,0\nx,2.5,1,1\n"));
    println!("seeds written to {}", seeds.display());
}
