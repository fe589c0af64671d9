//! The window and device tables of `edge assign` on fleets built for the purpose: devices made
//! of real ECG5000 beats of a known class, noisy devices, odd device ids, a killed run.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge")).args(args).output().expect("run edge")
}

fn assign(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = root().join("models/ecg5000");
    let mut args =
        vec!["assign", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    args.extend(extra);
    edge(&args)
}

/// ECG5000 TEST beats by class label (1..=5).
fn beats() -> BTreeMap<u32, Vec<Vec<f32>>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(root().join("data/ecg5000/ECG5000_TEST.tsv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut m: BTreeMap<u32, Vec<Vec<f32>>> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split('\t');
        let label: f32 = f.next().unwrap().trim().parse().unwrap();
        m.entry(label as u32).or_default().push(f.map(|v| v.trim().parse().unwrap()).collect());
    }
    m
}

/// Readings `(device, timestamp, value)`, one beat per 140 samples, devices interleaved sample
/// by sample (each device's own rows stay in time order).
fn interleave(devices: &[(String, Vec<Vec<f32>>)]) -> Vec<(String, i64, f32)> {
    let series: Vec<(String, Vec<f32>)> = devices.iter().map(|(d, b)| (d.clone(), b.concat())).collect();
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0);
    let mut rows = Vec::new();
    for t in 0..n {
        for (d, v) in &series {
            if let Some(&x) = v.get(t) {
                rows.push((d.clone(), 1_700_000_000 + t as i64, x));
            }
        }
    }
    rows
}

fn write_csv(path: &Path, rows: &[(String, i64, f32)]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["device", "timestamp", "value"]).unwrap();
    for (d, t, v) in rows {
        w.write_record([d.as_str(), &t.to_string(), &v.to_string()]).unwrap();
    }
    w.flush().unwrap();
}

fn write_parquet(path: &Path, rows: &[(String, i64, f32)]) {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message readings { required binary device (UTF8); required int64 timestamp; required double value; }",
        )
        .unwrap(),
    );
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, Arc::new(WriterProperties::builder().build())).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let ids: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.0.as_str())).collect();
    col.typed::<ByteArrayType>().write_batch(&ids, None, None).unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int64Type>().write_batch(&rows.iter().map(|r| r.1).collect::<Vec<_>>(), None, None).unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    // Through f32 first, so the Parquet values equal the CSV's shortest f32 text exactly.
    col.typed::<DoubleType>().write_batch(&rows.iter().map(|r| r.2 as f64).collect::<Vec<_>>(), None, None).unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
}

/// A table as text cells, header first, from CSV or Parquet.
fn read_table(path: &Path) -> Vec<Vec<String>> {
    if path.extension().is_some_and(|e| e == "parquet") {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let header: Vec<String> = r.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_string()).collect();
        let mut out = vec![header];
        for row in r.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            out.push(
                row.get_column_iter()
                    .map(|(_, f)| match f {
                        parquet::record::Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            );
        }
        out
    } else {
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_path(path).unwrap();
        r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()).collect()
    }
}

/// Rows of a table keyed by column name.
fn by_name(t: &[Vec<String>]) -> Vec<BTreeMap<String, String>> {
    t[1..].iter().map(|r| t[0].iter().cloned().zip(r.iter().cloned()).collect()).collect()
}

/// Share of devices whose true class is the majority class of their predicted cluster.
fn purity(cluster_of: &BTreeMap<String, usize>, class_of: &BTreeMap<String, u32>) -> f64 {
    let mut counts: BTreeMap<usize, BTreeMap<u32, usize>> = BTreeMap::new();
    for (d, c) in cluster_of {
        *counts.entry(*c).or_default().entry(class_of[d]).or_default() += 1;
    }
    counts.values().map(|m| m.values().max().copied().unwrap_or(0)).sum::<usize>() as f64 / cluster_of.len() as f64
}

#[test]
fn device_table_groups_devices_by_class_and_flags_noisy_ones() {
    let b = beats();
    let (normal, r_on_t) = (&b[&1], &b[&2]);
    let mut devices = Vec::new();
    let mut class_of = BTreeMap::new();
    // 10 devices of each of the two classes the model separates best: 8 beats of the class and,
    // in the middle, one beat of the other class.
    for i in 0..20 {
        let (own, other, class) = if i % 2 == 0 { (normal, r_on_t, 1) } else { (r_on_t, normal, 2) };
        let mut beats: Vec<Vec<f32>> = (0..8).map(|j| own[(i * 8 + j) % own.len()].clone()).collect();
        beats.insert(4, other[i].clone());
        let id = format!("dev{i:02}");
        class_of.insert(id.clone(), class);
        devices.push((id, beats));
    }
    // 3 devices whose beats are buried in noise.
    let mut x = 99u32;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as f32 / u32::MAX as f32 - 0.5) * 6.0
    };
    for i in 0..3 {
        let beats: Vec<Vec<f32>> = (0..6).map(|j| normal[100 + 6 * i + j].iter().map(|v| v + noise()).collect()).collect();
        devices.push((format!("noisy{i}"), beats));
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fleet.csv");
    write_csv(&input, &interleave(&devices));
    let out = dir.path().join("ids.csv");
    let o = assign(&input, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = by_name(&read_table(&dir.path().join("ids.devices.csv")));
    assert_eq!(table.len(), 23);
    let num = |r: &BTreeMap<String, String>, c: &str| r[c].parse::<f64>().unwrap();
    let mut cluster_of = BTreeMap::new();
    for r in &table {
        let d = &r["device"];
        if d.starts_with("noisy") {
            assert!(num(r, "anomalous_windows") >= num(r, "windows") / 2.0, "noisy device not flagged: {r:?}");
        } else {
            assert_eq!(num(r, "windows"), 9.0, "{r:?}");
            let counts: f64 = (0..5).map(|c| num(r, &format!("windows_in_{c}"))).sum();
            assert_eq!(counts, 9.0, "{r:?}");
            assert!(num(r, "cluster_share") * 9.0 >= (0..5).map(|c| num(r, &format!("windows_in_{c}"))).fold(0.0, f64::max) - 1e-9);
            cluster_of.insert(d.clone(), r["cluster"].parse::<usize>().unwrap());
        }
    }
    let clean_flags: f64 = table.iter().filter(|r| !r["device"].starts_with("noisy")).map(|r| num(r, "anomalous_windows")).sum();
    assert!(clean_flags <= 0.05 * 180.0, "{clean_flags} of 180 clean windows flagged");
    let p = purity(&cluster_of, &class_of);
    assert!(p >= 0.9, "device clusters do not follow the devices' classes: purity {p}");
    // Negative control: half of each class's devices relabelled, purity must fall.
    let shuffled: BTreeMap<String, u32> =
        class_of.iter().map(|(d, &c)| (d.clone(), if d.ends_with(['0', '1', '4', '5', '8', '9']) { c } else { 3 - c })).collect();
    let q = purity(&cluster_of, &shuffled);
    assert!(q < 0.8, "purity {q} with shuffled classes: the check cannot fail");
    // The window table agrees with the device table's counts.
    let windows = by_name(&read_table(&out));
    assert_eq!(windows.len(), 20 * 9 + 3 * 6);
    let flagged = windows.iter().filter(|w| w["anomalous"] == "true").count() as f64;
    assert_eq!(flagged, table.iter().map(|r| num(r, "anomalous_windows")).sum::<f64>());
}

#[test]
fn odd_device_ids_round_trip_through_csv_and_parquet() {
    let b = beats();
    let ids = ["plain", "a,b", "say \"hi\"", "two\nlines", "Zürich-東京 ☃", " padded "];
    let devices: Vec<(String, Vec<Vec<f32>>)> =
        ids.iter().enumerate().map(|(i, d)| (d.to_string(), vec![b[&1][i].clone(), b[&2][i].clone()])).collect();
    let rows = interleave(&devices);
    let dir = tempfile::tempdir().unwrap();
    let (csv_in, pq_in) = (dir.path().join("in.csv"), dir.path().join("in.parquet"));
    write_csv(&csv_in, &rows);
    write_parquet(&pq_in, &rows);
    let mut tables = Vec::new();
    for (input, out) in [(&csv_in, "a.csv"), (&csv_in, "b.parquet"), (&pq_in, "c.csv"), (&pq_in, "d.parquet")] {
        let out = dir.path().join(out);
        let o = assign(input, &out, &[]);
        assert!(o.status.success(), "{}: {}", out.display(), String::from_utf8_lossy(&o.stderr));
        let devices = out.with_file_name(format!(
            "{}.devices.{}",
            out.file_stem().unwrap().to_str().unwrap(),
            out.extension().unwrap().to_str().unwrap()
        ));
        tables.push((read_table(&out), read_table(&devices)));
    }
    // Ids are trimmed (like every CSV cell, and so in Parquet too): " padded " reads as "padded".
    let want: std::collections::BTreeSet<String> = ids.iter().map(|d| d.trim().to_string()).collect();
    for (windows, devices) in &tables {
        let got: std::collections::BTreeSet<String> = devices[1..].iter().map(|r| r[0].clone()).collect();
        assert_eq!(got, want);
        assert_eq!(windows.len(), 1 + 2 * ids.len());
        assert_eq!(devices.len(), 1 + ids.len());
    }
    // Same cells whatever the input and output formats (floats compared as numbers).
    let norm = |t: &Vec<Vec<String>>| -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> =
            t.iter().map(|r| r.iter().map(|c| c.parse::<f64>().map_or(c.clone(), |v| format!("{v:.5}"))).collect()).collect();
        rows.sort();
        rows
    };
    for t in &tables[1..] {
        assert_eq!(norm(&t.0), norm(&tables[0].0));
        assert_eq!(norm(&t.1), norm(&tables[0].1));
    }
}

#[test]
fn wrong_files_are_errors_and_leave_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    let devices = dir.path().join("ids.devices.csv");
    std::fs::write(&out, "previous\n").unwrap();
    std::fs::write(&devices, "previous devices\n").unwrap();
    let mut x = 7u64;
    let random: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    let cases: [(&str, &[u8], &str); 4] = [
        ("random.bin", &random, "line 1: is not UTF-8 text"),
        (
            "ab.csv",
            b"a,b\n1,2\n3,4\n",
            "the header has 2 column(s) (\"a\", \"b\"); this model reads device id, timestamp and 1 value column(s)",
        ),
        ("allbad.csv", b"device,t,v\nd,x,1\nd,y,2\n", "no valid reading (2 row(s): 2 malformed"),
        ("empty.csv", b"device,timestamp,value\n", "no valid reading (0 row(s)"),
    ];
    for (name, bytes, want) in cases {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let o = assign(&input, &out, &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
    }
    // Both tables at one path would overwrite each other.
    let o = assign(&root().join("data/fleet/sample.csv"), &out, &["--devices", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && e.contains("--devices and --out name the same file"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous\n");
    assert_eq!(std::fs::read_to_string(&devices).unwrap(), "previous devices\n");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp")).count(),
        0
    );
}

#[test]
fn a_killed_run_leaves_previous_outputs_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.csv");
    let devices = dir.path().join("ids.devices.csv");
    std::fs::write(&out, "previous\n").unwrap();
    std::fs::write(&devices, "previous devices\n").unwrap();
    // A FIFO as input: edge reads what was written and waits for more; then it is killed.
    let fifo = dir.path().join("live.csv");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let model = root().join("models/ecg5000");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args([
            "assign",
            "--model",
            model.to_str().unwrap(),
            "--input",
            fifo.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--batch",
            "1",
            "--format",
            "csv",
        ])
        .spawn()
        .unwrap();
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    use std::io::Write;
    let beat = &beats()[&1][0];
    for round in 0..3 {
        for (t, v) in beat.iter().enumerate() {
            writeln!(w, "d{round},{t},{v}").unwrap();
        }
    }
    w.flush().unwrap();
    // Wait until edge has started its output under a temporary name.
    let tmp = || std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().ends_with(".tmp"));
    let start = std::time::Instant::now();
    while tmp().is_none() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(tmp().is_some(), "edge never started writing");
    // Time to read and score the rows written so far (its output is still buffered or partial).
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "edge ended before it was killed");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(w);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous\n", "a killed run replaced the window table");
    assert_eq!(std::fs::read_to_string(&devices).unwrap(), "previous devices\n");
    // What it left is a hidden temporary file, never a file at a real output name.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(
        names
            .iter()
            .all(|n| ["ids.csv", "ids.devices.csv", "live.csv"].contains(&n.as_str()) || (n.starts_with('.') && n.ends_with(".tmp"))),
        "{names:?}"
    );
}
