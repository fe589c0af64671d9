//! Loaders on real formats, and every malformed-input case giving an error that names the file,
//! the line and the problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use trainer::data::{bundled, load_file, load_files, CsvLabel, CsvOptions, Dataset};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load(name: &str, text: &str) -> Result<Dataset, String> {
    load_opts(name, text, CsvLabel::Auto)
}

fn load_opts(name: &str, text: &str, label: CsvLabel) -> Result<Dataset, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), name, text);
    load_file(&p, &CsvOptions { label }).map_err(|e| e.to_string())
}

/// The error names the file and line and contains `what`.
fn assert_err(r: Result<Dataset, String>, name: &str, line: usize, what: &str) {
    let e = r.expect_err("malformed input must be an error");
    let loc = if line > 0 { format!("{name}:{line}") } else { name.to_string() };
    assert!(e.contains(&loc), "error should name {loc}: {e}");
    assert!(e.contains(what), "error should say '{what}': {e}");
}

#[test]
fn bundled_ecg5000_is_complete() {
    let ds = bundled::ecg5000().unwrap();
    assert_eq!(ds.len(), 5000);
    assert_eq!(ds.equal_length(), Some(140));
    assert_eq!(ds.n_features, 1);
    let labels = ds.labels.as_ref().unwrap();
    let count = |c: &str| labels.iter().filter(|l| *l == c).count();
    assert_eq!([count("1"), count("2"), count("3"), count("4"), count("5")], [2919, 1767, 96, 194, 24]);
}

#[test]
fn ucr_tsv_reads_labels_values_and_nan_padding() {
    let ds = load("a.tsv", "1\t0.5\t-1.25\t2\n2\t3\t4\tNaN\n").unwrap();
    assert_eq!(ds.labels.unwrap(), vec!["1", "2"]);
    assert_eq!(ds.series[0].values, vec![0.5, -1.25, 2.0]);
    assert_eq!((ds.series[1].len, ds.series[1].values.clone()), (2, vec![3.0, 4.0]));
    // Old-style float labels and whitespace separation.
    let ds = load("b.txt", "  1.0000000e+00  2.0 3.0\n").unwrap();
    assert_eq!(ds.labels.unwrap(), vec!["1"]);
}

#[test]
fn ucr_malformed_inputs() {
    assert_err(load("r.tsv", "1\t1\t2\n1\t1\n"), "r.tsv", 2, "ragged");
    assert_err(load("n.tsv", "1\t1\t2\n1\t1\tabc\n"), "n.tsv", 2, "'abc' is not a number");
    assert_err(load("m.tsv", "1\t1\tNaN\t2\n"), "m.tsv", 1, "non-finite");
    assert_err(load("i.tsv", "1\t1\tinf\n"), "i.tsv", 1, "non-finite");
    assert_err(load("e.tsv", ""), "e.tsv", 0, "no series");
    assert_err(load("x.parquet", "1"), "x.parquet", 0, "unknown format");
}

#[test]
fn gzip_input_and_corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.tsv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"3\t1\t2\n").unwrap();
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let ds = load_file(&p, &CsvOptions::default()).unwrap();
    assert_eq!(ds.series[0].values, vec![1.0, 2.0]);
    std::fs::write(&p, b"not gzip").unwrap();
    let e = load_file(&p, &CsvOptions::default()).unwrap_err().to_string();
    assert!(e.contains("g.tsv.gz") && e.contains("gzip"), "{e}");
}

const TS_MULTI: &str = "# comment\n@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n\
@equalLength true\n@seriesLength 3\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8,9:10,11,12:b\n";

#[test]
fn ts_multivariate_is_time_major() {
    let ds = load("m.ts", TS_MULTI).unwrap();
    assert_eq!(ds.n_features, 2);
    assert_eq!(ds.series[0].values, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(ds.labels.unwrap(), vec!["a", "b"]);
}

#[test]
fn ts_unequal_length_and_no_labels() {
    let ds = load("u.ts", "@univariate true\n@equalLength false\n@classLabel false\n@data\n1,2,3\n4,5\n").unwrap();
    assert_eq!((ds.series[0].len, ds.series[1].len), (3, 2));
    assert!(ds.labels.is_none());
    assert_eq!(ds.equal_length(), None);
}

#[test]
fn ts_malformed_inputs() {
    let head = "@dimensions 2\n@equalLength true\n@classLabel true a b\n@data\n";
    assert_err(load("d.ts", &format!("{head}1,2:3,4:a\n1,2:a\n")), "d.ts", 6, "1 dimensions but the header declares 2");
    assert_err(load("l.ts", &format!("{head}1,2:3,4:a\n1,2,3:4,5,6:a\n")), "l.ts", 6, "@equalLength true");
    assert_err(load("k.ts", &format!("{head}1,2:3:a\n")), "k.ts", 5, "dimension 2 has 1 values");
    assert_err(load("c.ts", &format!("{head}1,2:3,4:z\n")), "c.ts", 5, "'z' is not declared");
    assert_err(load("q.ts", &format!("{head}1,?:3,4:a\n")), "q.ts", 5, "missing value");
    assert_err(load("v.ts", &format!("{head}1,x:3,4:a\n")), "v.ts", 5, "'x' is not a number");
    assert_err(load("h.ts", "@univariate true\n1,2\n"), "h.ts", 2, "header line");
    assert_err(load("n.ts", "@univariate true\n"), "n.ts", 0, "no @data");
    assert_err(load("s.ts", "@seriesLength 3\n@data\n1,2\n"), "s.ts", 3, "@seriesLength is 3");
    assert_err(load("t.ts", "@timeStamps true\n@data\n"), "t.ts", 1, "time-stamped");
}

#[test]
fn csv_wide_with_header_label_and_padding() {
    let ds = load("w.csv", "id0,id1,label,id2\n1,2,x,3\n4,,y,5\n").unwrap_err();
    assert!(ds.contains("w.csv:3") && ds.contains("only trailing cells may be empty"), "{ds}");
    let ds = load("w.csv", "t0,t1,t2,class\n1,2,3,x\n4,5,,y\n").unwrap();
    assert_eq!(ds.labels.unwrap(), vec!["x", "y"]);
    assert_eq!(ds.series[1].values, vec![4.0, 5.0]);
    let ds = load("n.csv", "1,2,3\n4,5,6\n").unwrap();
    assert!(ds.labels.is_none());
    assert_eq!(ds.len(), 2);
    let ds = load_opts("f.csv", "7,2,3\n8,5,6\n", CsvLabel::First).unwrap();
    assert_eq!((ds.labels.unwrap(), ds.series[0].values.clone()), (vec!["7".to_string(), "8".into()], vec![2.0, 3.0]));
    let ds = load_opts("s.csv", "normal,2,3\n", CsvLabel::First).unwrap();
    assert_eq!(ds.labels.unwrap(), vec!["normal"]);
}

#[test]
fn csv_malformed_inputs() {
    assert_err(load("r.csv", "1,2,3\n1,2\n"), "r.csv", 2, "ragged");
    assert_err(load("n.csv", "1,2,3\n1,2,x\n"), "n.csv", 2, "'x' is not a number");
    assert_err(load("f.csv", "1,2,3\n1,nan,3\n"), "f.csv", 2, "non-finite");
    assert_err(load("e.csv", "\n\n"), "e.csv", 0, "empty");
    assert_err(load("h.csv", "a,b,c\n"), "h.csv", 0, "no series");
}

#[test]
fn csv_long_format_multivariate_unsorted() {
    let text = "series_id,t,x,y,label\nb,2,5,50,k\na,1,2,20,j\nb,1,4,40,k\na,0,1,10,j\n";
    let ds = load("long.csv", text).unwrap();
    assert_eq!(ds.n_features, 2);
    assert_eq!(ds.len(), 2);
    // Series in order of first appearance, time-sorted, time-major.
    assert_eq!(ds.series[0].values, vec![4.0, 40.0, 5.0, 50.0]);
    assert_eq!(ds.series[1].values, vec![1.0, 10.0, 2.0, 20.0]);
    assert_eq!(ds.labels.unwrap(), vec!["k", "j"]);
}

#[test]
fn csv_long_malformed_inputs() {
    assert_err(load("d.csv", "id,t,v\na,1,2\na,1,3\n"), "d.csv", 3, "repeats time 1");
    assert_err(load("l.csv", "id,t,v,class\na,1,2,x\na,2,3,y\n"), "l.csv", 3, "has label 'y'");
    assert_err(load("t.csv", "id,t,v\na,z,2\n"), "t.csv", 2, "time 'z'");
    assert_err(load("c.csv", "id,t,v\na,1\n"), "c.csv", 2, "columns but the header has 3");
    assert_err(load("v.csv", "id,t,v\na,1,inf\n"), "v.csv", 2, "non-finite");
    assert_err(load("o.csv", "id,t,v\n"), "o.csv", 0, "no data rows");
}

#[test]
fn files_with_different_feature_counts_or_labelling_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.tsv", "1\t1\t2\n");
    let b = write(dir.path(), "b.csv", "series_id,t,x,y\ns,0,1,2\n");
    let e = load_files(&[a.clone(), b], &CsvOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b.csv") && e.contains("2 features per time step") && e.contains("a.tsv"), "{e}");
    let c = write(dir.path(), "c.csv", "1,2\n");
    let e = load_files(&[a.clone(), c], &CsvOptions::default()).unwrap_err().to_string();
    assert!(e.contains("c.csv") && e.contains("no labels"), "{e}");
    let both = load_files(&[a.clone(), a], &CsvOptions::default()).unwrap();
    assert_eq!(both.len(), 2);
    let e = load_files(&[dir.path().join("missing.tsv")], &CsvOptions::default()).unwrap_err().to_string();
    assert!(e.contains("missing.tsv"), "{e}");
}
