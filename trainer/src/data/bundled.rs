//! The UCR ECG5000 set compiled into the binary, so `trainer fit` works with no download.
//! 5000 heartbeats of 140 samples, 5 classes, already z-normalised per series by the UCR archive.

use std::path::{Path, PathBuf};

use super::{parse_bytes, CsvOptions, Dataset};
use crate::error::Result;

const TRAIN: &[u8] = include_bytes!("../../../data/ecg5000/ECG5000_TRAIN.tsv.gz");
const TEST: &[u8] = include_bytes!("../../../data/ecg5000/ECG5000_TEST.tsv.gz");

/// Name recorded as the data source of the bundled set.
pub const NAME: &str = "bundled:ECG5000";

/// ECG5000 TRAIN (500 rows) followed by TEST (4500 rows), as the seed notebook concatenates them.
pub fn ecg5000() -> Result<Dataset> {
    let opts = CsvOptions::default();
    let mut ds = parse_bytes(Path::new("data/ecg5000/ECG5000_TRAIN.tsv.gz"), TRAIN, &opts)?;
    let test = parse_bytes(Path::new("data/ecg5000/ECG5000_TEST.tsv.gz"), TEST, &opts)?;
    ds.series.extend(test.series);
    if let (Some(a), Some(b)) = (&mut ds.labels, test.labels) {
        a.extend(b);
    }
    ds.sources = vec![PathBuf::from(NAME)];
    Ok(ds)
}
