//! `edge assign` on the shipped sample fleet with the shipped ECG5000 model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runtime::bundle::AlignedBytes;
use runtime::encoder::State;
use runtime::Encoder;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge")).args(args).output().expect("run edge")
}

fn run_assign(extra: &[&str]) -> (Vec<Vec<String>>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    let (model, input) = (root().join("models/ecg5000"), root().join("data/fleet/sample.csv"));
    let mut args =
        vec!["assign", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    args.extend(extra);
    let o = edge(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "edge failed: {stderr}");
    let rows = std::fs::read_to_string(&out).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    (rows, stderr)
}

/// Per device, its readings in time order, read independently of `edge`.
fn readings() -> std::collections::BTreeMap<String, Vec<f32>> {
    let mut m: std::collections::BTreeMap<String, Vec<(i64, f32)>> = Default::default();
    for line in std::fs::read_to_string(root().join("data/fleet/sample.csv")).unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 3 {
            continue;
        }
        if let (Ok(t), Ok(v)) = (f[1].parse::<i64>(), f[2].parse::<f32>()) {
            if v.is_finite() {
                m.entry(f[0].to_string()).or_default().push((t, v));
            }
        }
    }
    m.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|p| p.0);
            (k, v.into_iter().map(|p| p.1).collect())
        })
        .collect()
}

#[test]
fn assigns_every_window_like_the_runtime_library() {
    let (rows, summary) = run_assign(&[]);
    assert_eq!(rows.len(), 24 * 3, "24 devices x 3 windows of 140");
    assert!(summary.contains("3 malformed"), "{summary}");
    assert!(summary.contains("25 (1 with fewer samples than a window of 140)"), "{summary}");
    let bytes = std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap();
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).unwrap();
    let data = readings();
    for r in &rows {
        let series = &data[&r[0]];
        let n = rows.iter().filter(|x| x[0] == r[0]).position(|x| x == r).unwrap();
        let window = &series[n * 140..(n + 1) * 140];
        let mut s = State::<128, 2>::default();
        let (_, want) = enc.classify_window::<128, 2, 64>(&mut s, window).unwrap();
        assert_eq!(r[3].parse::<usize>().unwrap(), want.cluster, "{r:?}");
        assert!((r[4].parse::<f32>().unwrap() - want.distance).abs() < 1e-6);
    }
}

/// The shipped model with int8 weights in a model directory of its own (and the f32
/// encoder.onnx for `--engine tract`).
fn int8_model(dir: &Path) -> Vec<u8> {
    let shipped = AlignedBytes::new(&std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap());
    let b = runtime::Bundle::parse(shipped.as_bytes()).unwrap();
    let header = runtime::Header { weight_format: runtime::WeightFormat::Int8, ..b.header };
    let bytes = runtime::bundle::encode(&header, b.weights, &runtime::bundle::DecisionTables::of(&b)).unwrap();
    std::fs::write(dir.join("model.bundle"), &bytes).unwrap();
    std::fs::copy(root().join("models/ecg5000/encoder.onnx"), dir.join("encoder.onnx")).unwrap();
    bytes
}

/// An int8 bundle: `edge assign` decides every window as the runtime's int8 encoder does.
#[test]
fn int8_bundle_assigns_like_the_runtime_library() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = int8_model(dir.path());
    let out = dir.path().join("ids.csv");
    let input = root().join("data/fleet/sample.csv");
    let (m, i, w) = (dir.path().to_str().unwrap(), input.to_str().unwrap(), out.to_str().unwrap());
    let o = edge(&["assign", "--model", m, "--input", i, "--out", w]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Vec<String>> =
        std::fs::read_to_string(&out).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 24 * 3);
    let aligned = AlignedBytes::new(&bytes);
    let enc = Encoder::from_bytes(aligned.as_bytes()).unwrap();
    assert!(enc.bundle().is_int8());
    let data = readings();
    for r in &rows {
        let n = rows.iter().filter(|x| x[0] == r[0]).position(|x| x == r).unwrap();
        let window = &data[&r[0]][n * 140..(n + 1) * 140];
        let (_, want) = enc.classify_window::<128, 2, 64>(&mut State::<128, 2>::default(), window).unwrap();
        assert_eq!((r[3].parse::<usize>().unwrap(), r[4].parse::<f32>().unwrap()), (want.cluster, want.distance), "{r:?}");
    }
    #[cfg(feature = "tract")]
    {
        // tract runs encoder.onnx's f32 weights, not the bundle's: said, not hidden.
        let o = edge(&["assign", "--model", m, "--input", i, "--out", w, "--engine", "tract"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && e.contains("int8 weights") && e.contains("--engine native"), "{e}");
    }
}

#[cfg(feature = "tract")]
#[test]
fn tract_engine_gives_the_same_clusters() {
    let (native, _) = run_assign(&[]);
    let (tract, _) = run_assign(&["--engine", "tract"]);
    assert_eq!(native.len(), tract.len());
    for (a, b) in native.iter().zip(&tract) {
        assert_eq!(a[..4], b[..4], "native {a:?} vs tract {b:?}");
        assert!((a[4].parse::<f32>().unwrap() - b[4].parse::<f32>().unwrap()).abs() < 1e-3);
    }
}

/// Without the feature, `--engine tract` says how to get it.
#[cfg(not(feature = "tract"))]
#[test]
fn tract_engine_needs_the_feature() {
    let (model, input) = (root().join("models/ecg5000"), root().join("data/fleet/sample.csv"));
    let o = edge(&[
        "assign",
        "--engine",
        "tract",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        "/dev/null",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("built without the `tract` feature"));
}

#[test]
fn overlapping_windows_and_strict_mode() {
    let (rows, _) = run_assign(&["--stride", "70"]);
    assert_eq!(rows.len(), 24 * 5, "(420 - 140) / 70 + 1 = 5 windows per device");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    let (model, input) = (root().join("models/ecg5000"), root().join("data/fleet/sample.csv"));
    let o = edge(&[
        "assign",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--strict",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("sample.csv:") && e.contains("not finite"), "{e}");
    assert!(!out.exists(), "a failed run must not leave a partial output");
    let o = edge(&["assign", "--model", dir.path().to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("model.bundle"), "{e}");
    std::fs::write(dir.path().join("model.bundle"), b"VRAEBNDL garbage").unwrap();
    let o = edge(&["assign", "--model", dir.path().to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("invalid model bundle"), "{e}");
}

/// The shipped sample fleet rewritten as Parquet (string ids, INT64 timestamps, DOUBLE values,
/// snappy pages, row groups of `group` rows); the CSV's malformed rows become a null timestamp
/// (missing field), a null value (non-numeric) and a NaN value.
fn sample_as_parquet(path: &Path, group: usize, value_columns: usize) {
    csv_as_parquet(&root().join("data/fleet/sample.csv"), path, group, value_columns)
}

/// The rows of a one-value `device,timestamp,value` CSV (header skipped) as Parquet.
fn csv_as_parquet(csv: &Path, path: &Path, group: usize, value_columns: usize) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let text = std::fs::read_to_string(csv).unwrap();
    let rows: Vec<(String, Option<i64>, Option<f64>)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f.get(1).and_then(|t| t.parse().ok()).filter(|_| f.len() == 3), f.get(2).and_then(|v| v.parse().ok()))
        })
        .collect();
    let values: String = (0..value_columns).map(|i| format!("optional double value{i};")).collect();
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(&format!(
            "message readings {{ required binary device_id (UTF8); optional int64 timestamp; {values} }}"
        ))
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut w = SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for chunk in rows.chunks(group) {
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let ids: Vec<ByteArray> = chunk.iter().map(|r| ByteArray::from(r.0.as_str())).collect();
        col.typed::<ByteArrayType>().write_batch(&ids, None, None).unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let (ts, def): (Vec<i64>, Vec<i16>) =
            (chunk.iter().filter_map(|r| r.1).collect(), chunk.iter().map(|r| r.1.is_some() as i16).collect());
        col.typed::<Int64Type>().write_batch(&ts, Some(&def), None).unwrap();
        col.close().unwrap();
        for _ in 0..value_columns {
            let mut col = rg.next_column().unwrap().unwrap();
            let (vs, def): (Vec<f64>, Vec<i16>) =
                (chunk.iter().filter_map(|r| r.2).collect(), chunk.iter().map(|r| r.2.is_some() as i16).collect());
            col.typed::<DoubleType>().write_batch(&vs, Some(&def), None).unwrap();
            col.close().unwrap();
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
}

fn assign_file(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = root().join("models/ecg5000");
    let mut args =
        vec!["assign", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    args.extend(extra);
    edge(&args)
}

/// `--sessions`: each device's stream is cut at every gap above --max-gap, and each session is
/// scored at its own length, exactly as the runtime encodes and decides that session alone;
/// sessions below --min-session (default: a quarter of the model's 140 steps) are counted and
/// dropped, one above --max-session (default 4 x 140) is cut there; CSV and Parquet give the
/// same table; bad settings are clear errors.
#[test]
fn sessions_are_scored_at_their_own_length() {
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(
        std::process::Command::new("gzip").args(["-dc"]).arg(root().join("data/ecg5000/ECG5000_TEST.tsv.gz")).output().unwrap().stdout,
    )
    .unwrap();
    let beats: Vec<Vec<f32>> = text.lines().take(16).map(|l| l.split('\t').skip(1).map(|v| v.trim().parse().unwrap()).collect()).collect();
    // Four devices, sessions of 140, 90, 20 and 600 (device 0) or 60 samples, 100 s apart.
    let mut rows: Vec<(String, u64, f32)> = Vec::new();
    let mut sessions: Vec<(String, u64, Vec<f32>)> = Vec::new();
    for d in 0..4 {
        let mut t = 0u64;
        for (i, len) in [140usize, 90, 20, if d == 0 { 600 } else { 60 }].into_iter().enumerate() {
            let vals: Vec<f32> = (0..len).map(|j| beats[d * 4 + i][j % 140]).collect();
            // What the service should score: cut at 560 samples, at least 35.
            for (k, piece) in vals.chunks(560).enumerate() {
                if piece.len() >= 35 {
                    sessions.push((format!("dev{d}"), t + 560 * k as u64, piece.to_vec()));
                }
            }
            rows.extend(vals.iter().enumerate().map(|(j, &v)| (format!("dev{d}"), t + j as u64, v)));
            t += len as u64 + 100;
        }
    }
    rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let csv = dir.path().join("sessions.csv");
    let body: String = rows.iter().map(|(d, t, v)| format!("{d},{t},{v}\n")).collect();
    std::fs::write(&csv, format!("device,timestamp,value\n{body}")).unwrap();
    let out = dir.path().join("out.csv");
    let o = assign_file(&csv, &out, &["--sessions", "--max-gap", "50"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("sessions too short    4") && stderr.contains("sessions cut          1"), "{stderr}");
    let table = std::fs::read_to_string(&out).unwrap();
    let got: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(got.len(), sessions.len(), "{table}");
    let bytes = AlignedBytes::new(&std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap());
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let mut s = Box::new(State::<512, 4>::default());
    for (device, start, vals) in &sessions {
        let row = got.iter().find(|r| r[0] == device && r[1] == start.to_string()).unwrap_or_else(|| panic!("{device} {start}: no row"));
        assert_eq!(row[2], (start + vals.len() as u64 - 1).to_string(), "{device} {start}: session end");
        let (_, a) = enc.classify_window::<512, 4, 256>(&mut s, vals).unwrap();
        assert_eq!(row[3], a.cluster.to_string(), "{device} {start}: cluster");
        assert_eq!(row[4].parse::<f32>().unwrap().to_bits(), a.distance.to_bits(), "{device} {start}: distance");
    }
    // Parquet input: the same table.
    let pq = dir.path().join("sessions.parquet");
    csv_as_parquet(&csv, &pq, 500, 1);
    let out2 = dir.path().join("out2.csv");
    assert!(assign_file(&pq, &out2, &["--sessions", "--max-gap", "50"]).status.success());
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), table);
    // Bad settings.
    let e = String::from_utf8_lossy(&assign_file(&csv, &out2, &["--sessions"]).stderr).into_owned();
    assert!(e.contains("--max-gap"), "{e}");
    let e = String::from_utf8_lossy(&assign_file(&csv, &out2, &["--sessions", "--max-gap", "5", "--min-session", "0"]).stderr).into_owned();
    assert!(e.contains("--min-session must be at least 1"), "{e}");
    // Sessions have no fixed window: --window or --stride beside --sessions is refused.
    let e = String::from_utf8_lossy(&assign_file(&csv, &out2, &["--sessions", "--max-gap", "5", "--window", "50"]).stderr).into_owned();
    assert!(e.contains("--window") && e.contains("cannot be used with"), "{e}");
}

/// `--session-column`: a session id after the timestamp cuts sessions without any gap (here
/// every sample is 1 s apart), the window table names each session, and each is scored exactly
/// as the runtime scores it alone; Parquet with integer ids gives the same table; a file without
/// the column is refused.
#[test]
fn a_session_id_column_cuts_sessions() {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(
        std::process::Command::new("gzip").args(["-dc"]).arg(root().join("data/ecg5000/ECG5000_TEST.tsv.gz")).output().unwrap().stdout,
    )
    .unwrap();
    let beats: Vec<Vec<f32>> = text.lines().take(6).map(|l| l.split('\t').skip(1).map(|v| v.trim().parse().unwrap()).collect()).collect();
    // Two devices, sessions 100, 140 and 70 samples long, back to back; ids 10, 11, 12 per device.
    let mut rows: Vec<(String, i64, i64, f32)> = Vec::new();
    let mut sessions = Vec::new();
    for d in 0..2 {
        let mut t = 0i64;
        for (i, len) in [100usize, 140, 70].into_iter().enumerate() {
            let vals: Vec<f32> = beats[d * 3 + i][..len].to_vec();
            sessions.push((format!("dev{d}"), (10 + i).to_string(), t, vals.clone()));
            rows.extend(vals.iter().enumerate().map(|(j, &v)| (format!("dev{d}"), t + j as i64, 10 + i as i64, v)));
            t += len as i64;
        }
    }
    rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let csv = dir.path().join("ids.csv");
    let body: String = rows.iter().map(|(d, t, s, v)| format!("{d},{t},{s},{v}\n")).collect();
    std::fs::write(&csv, format!("device,timestamp,session,value\n{body}")).unwrap();
    let out = dir.path().join("out.csv");
    let o = assign_file(&csv, &out, &["--sessions", "--session-column"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("sessions ended by id  4"), "{stderr}");
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(table.starts_with("device,session,window_start,window_end,cluster,"), "{table}");
    let got: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(got.len(), 6, "{table}");
    let bytes = AlignedBytes::new(&std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap());
    let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
    let mut st = Box::new(State::<512, 4>::default());
    for (device, id, start, vals) in &sessions {
        let row = got.iter().find(|r| r[0] == device && r[1] == id).unwrap_or_else(|| panic!("{device} {id}: no row"));
        assert_eq!((row[2], row[3]), (start.to_string().as_str(), (start + vals.len() as i64 - 1).to_string().as_str()));
        let (_, a) = enc.classify_window::<512, 4, 256>(&mut st, vals).unwrap();
        assert_eq!(row[4], a.cluster.to_string(), "{device} {id}: cluster");
        assert_eq!(row[5].parse::<f32>().unwrap().to_bits(), a.distance.to_bits(), "{device} {id}: distance");
    }
    // Parquet, integer session ids: the same table.
    let pq = dir.path().join("ids.parquet");
    {
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use std::sync::Arc;
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message r { required binary device (UTF8); required int64 ts; required int64 session; required double value; }",
            )
            .unwrap(),
        );
        let mut w =
            SerializedFileWriter::new(std::fs::File::create(&pq).unwrap(), schema, Arc::new(WriterProperties::builder().build())).unwrap();
        for chunk in rows.chunks(333) {
            let mut rg = w.next_row_group().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            let ids: Vec<ByteArray> = chunk.iter().map(|r| ByteArray::from(r.0.as_str())).collect();
            col.typed::<ByteArrayType>().write_batch(&ids, None, None).unwrap();
            col.close().unwrap();
            for pick in [|r: &(String, i64, i64, f32)| r.1, |r: &(String, i64, i64, f32)| r.2] {
                let mut col = rg.next_column().unwrap().unwrap();
                col.typed::<Int64Type>().write_batch(&chunk.iter().map(pick).collect::<Vec<_>>(), None, None).unwrap();
                col.close().unwrap();
            }
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<DoubleType>().write_batch(&chunk.iter().map(|r| r.3 as f64).collect::<Vec<_>>(), None, None).unwrap();
            col.close().unwrap();
            rg.close().unwrap();
        }
        w.close().unwrap();
    }
    let out2 = dir.path().join("out2.csv");
    let o = assign_file(&pq, &out2, &["--sessions", "--session-column"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), table);
    // Without the flag the file's extra column is a clear error (Parquet) or a bad header (CSV).
    let e = String::from_utf8_lossy(&assign_file(&pq, &out2, &["--sessions", "--max-gap", "5"]).stderr).into_owned();
    assert!(e.contains("expected 3 columns") && e.contains("found 4"), "{e}");
    let e = String::from_utf8_lossy(&assign_file(&csv, &out2, &["--sessions", "--max-gap", "5"]).stderr).into_owned();
    assert!(e.contains("4 column(s)"), "{e}");
    let plain = dir.path().join("plain.csv");
    std::fs::write(&plain, "device,timestamp,value\na,1,0.5\n").unwrap();
    let e = String::from_utf8_lossy(&assign_file(&plain, &out2, &["--sessions", "--session-column"]).stderr).into_owned();
    assert!(e.contains("device id, timestamp, session id"), "{e}");
}

#[test]
fn parquet_input_gives_the_same_output_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    // No .parquet extension: detected by its magic bytes. 1000-row groups: windows span groups.
    let pq = dir.path().join("readings.bin");
    sample_as_parquet(&pq, 1000, 1);
    let (csv_out, pq_out) = (dir.path().join("csv.csv"), dir.path().join("pq.csv"));
    let a = assign_file(&root().join("data/fleet/sample.csv"), &csv_out, &["--stride", "70"]);
    let b = assign_file(&pq, &pq_out, &["--stride", "70"]);
    let (ea, eb) = (String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    assert!(a.status.success() && b.status.success(), "csv: {ea}\nparquet: {eb}");
    let (want, got) = (std::fs::read_to_string(&csv_out).unwrap(), std::fs::read_to_string(&pq_out).unwrap());
    assert_eq!(got.lines().count(), 1 + 24 * 5);
    assert_eq!(got, want, "Parquet and CSV inputs must give the same ids file");
    assert!(eb.contains("3 malformed") && eb.contains("25 (1 with fewer samples"), "{eb}");

    // Strict mode names the row; nothing is written.
    let o = assign_file(&pq, &pq_out.with_extension("strict.csv"), &["--strict"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let why = ["missing timestamp", "not finite", "missing value"];
    assert!(e.contains("readings.bin: row ") && why.iter().any(|w| e.contains(w)), "{e}");
    assert!(!pq_out.with_extension("strict.csv").exists());
}

#[test]
fn bad_parquet_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    std::fs::write(&out, "previous run\n").unwrap();
    // Two value columns for a one-feature model.
    let wide = dir.path().join("wide.parquet");
    sample_as_parquet(&wide, 4096, 2);
    let o = assign_file(&wide, &out, &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("wide.parquet") && e.contains("expected 3 columns") && e.contains("value1"), "{e}");
    // Truncated (footer cut off), with and without the .parquet name.
    let good = dir.path().join("good.parquet");
    sample_as_parquet(&good, 4096, 1);
    let bytes = std::fs::read(&good).unwrap();
    for name in ["cut.parquet", "cut.dat"] {
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let o = assign_file(&cut, &out, &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(e.contains(name) && e.contains("not a readable Parquet file"), "{name}: {e}");
    }
    // Corrupted bytes anywhere (pages without checksums may still decode, to other values):
    // never a panic; a failure names the file.
    let corrupt = dir.path().join("corrupt.parquet");
    let mut failures = 0;
    for i in 1..24 {
        let mut bad = bytes.clone();
        let at = bad.len() * i / 24;
        for b in &mut bad[at..(at + 16).min(bytes.len())] {
            *b ^= 0x5a;
        }
        std::fs::write(&corrupt, &bad).unwrap();
        let o = assign_file(&corrupt, &out, &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("panicked") && matches!(o.status.code(), Some(0 | 1)), "corruption at {at}: {e}");
        if o.status.code() == Some(1) {
            assert!(e.contains("corrupt.parquet"), "corruption at {at}: {e}");
            failures += 1;
        } else {
            std::fs::write(&out, "previous run\n").unwrap();
        }
    }
    assert!(failures > 0, "no corruption was detected at all");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous run\n", "a failed run must leave the previous output alone");
}

/// `edge serve` refuses bad settings before it touches the state directory or the network,
/// each with a message naming what is wrong; a config file supplies flags and the command line
/// overrides it (the bad broker from the file is replaced by a bad one from the command line).
#[test]
fn serve_rejects_bad_settings_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let model = root().join("models/ecg5000");
    let (m, s) = (model.to_str().unwrap(), state.to_str().unwrap());
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, format!("model = {m:?}\nstate-dir = {s:?}\nbroker = \"tcp://x\"\n")).unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "model = [1, 2]\n").unwrap();
    let not_toml = dir.path().join("not.toml");
    std::fs::write(&not_toml, "model = \n").unwrap();
    let (c, b, n) = (config.to_str().unwrap(), bad_toml.to_str().unwrap(), not_toml.to_str().unwrap());
    // The example config in the repo parses (the bad port on the command line is the only error).
    let shipped = root().join("edge/deploy/edge-serve.toml");
    let shipped = shipped.to_str().unwrap();
    for (args, want) in [
        (vec!["serve", "--state-dir", s], "--model is required"),
        (vec!["serve", "--model", m, "--state-dir", s, "--broker", "http://h"], "--broker 'http://h': unknown scheme"),
        (vec!["serve", "--model", m, "--state-dir", s, "--subscribe", "a/b"], "has no '+' level"),
        (vec!["serve", "--model", m, "--state-dir", s, "--publish", "clusters"], "does not contain {device}"),
        (vec!["serve", "--model", m, "--state-dir", s, "--flush-messages", "0"], "must be at least 1"),
        (
            vec!["serve", "--model", m, "--state-dir", s, "--max-unacked-messages", "5"],
            "--max-unacked-messages (5) must be at least --flush-messages (20)",
        ),
        (vec!["serve", "--model", m, "--state-dir", s, "--ca-file", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        (vec!["serve", "--config", c], "--broker 'tcp://x': unknown scheme"),
        (vec!["serve", "--config", c, "--broker", "mqtt://h:x"], "--broker 'mqtt://h:x': the port is not a number"),
        (vec!["serve", "--config", b], "key 'model': expected a string, number or boolean, found array"),
        (vec!["serve", "--config", n], "not a valid TOML file"),
        (vec!["serve", "--config", shipped, "--model", m, "--state-dir", s, "--broker", "mqtt://h:x"], "the port is not a number"),
    ] {
        let o = edge(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!state.exists(), "{args:?} touched the state directory");
    }
    let o = edge(&["serve", "--model", dir.path().to_str().unwrap(), "--state-dir", s]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the model bundle"));
}

/// A model with a minimum window length (bundle version 6): `--window` below it is refused
/// before any data is read, an explicit `--min-session` below it too, and by default sessions
/// shorter than it are counted as too short rather than scored. The shipped model (no minimum)
/// scores the same sessions: the control.
#[test]
fn the_models_minimum_length_bounds_windows_and_sessions() {
    use runtime::bundle::{encode, Bundle, DecisionTables};
    let dir = tempfile::tempdir().unwrap();
    let shipped = AlignedBytes::new(&std::fs::read(root().join("models/ecg5000/model.bundle")).unwrap());
    let b = Bundle::parse(shipped.as_bytes()).unwrap();
    let tables = DecisionTables::of(&b);
    let model = dir.path().join("min80");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("model.bundle"), encode(&runtime::Header { min_len: 80, ..b.header }, b.weights, &tables).unwrap()).unwrap();
    // One device: sessions of 60 and 100 samples, 100 s apart.
    let rows: String = (0..60)
        .map(|t| format!("d,{t},{}\n", (t as f32 * 0.2).sin()))
        .chain((0..100).map(|t| format!("d,{},{}\n", 160 + t, (t as f32 * 0.1).cos())))
        .collect();
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, format!("device,timestamp,value\n{rows}")).unwrap();
    let out = dir.path().join("out.csv");
    let run = |model: &Path, extra: &[&str]| {
        let mut args =
            vec!["assign", "--model", model.to_str().unwrap(), "--input", csv.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
        args.extend(extra);
        edge(&args)
    };
    let e = String::from_utf8_lossy(&run(&model, &["--window", "50"]).stderr).into_owned();
    assert!(e.contains("--window 50") && e.contains("minimum length 80"), "{e}");
    let e = String::from_utf8_lossy(&run(&model, &["--sessions", "--max-gap", "10", "--min-session", "40"]).stderr).into_owned();
    assert!(e.contains("--min-session 40") && e.contains("minimum length 80"), "{e}");
    let o = run(&model, &["--sessions", "--max-gap", "10"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("sessions too short    1 (fewer than 80 samples)"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2, "the 100-sample session only");
    let o = run(&root().join("models/ecg5000"), &["--sessions", "--max-gap", "10"]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3, "no minimum: both sessions");
}
