//! Time-series datasets: loading (UCR `.tsv`, aeon `.ts`, CSV), normalisation and splitting.
//!
//! A series is stored time-major: `values[t * n_features + f]`.

pub mod bundled;
mod csv;
pub mod prep;
pub mod synthetic;
mod ts;
mod ucr;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use self::csv::{CsvLabel, CsvOptions};

/// One multivariate series, time-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `len * n_features` values, `values[t * n_features + f]`.
    pub values: Vec<f32>,
    /// Number of time steps.
    pub len: usize,
}

/// A set of series with a common feature count and optional class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Series in file order.
    pub series: Vec<Series>,
    /// One label per series, or `None` when the files carry no labels.
    pub labels: Option<Vec<String>>,
    /// Values per time step (`number_of_features`).
    pub n_features: usize,
    /// Files the data came from, in order.
    pub sources: Vec<PathBuf>,
}

impl Dataset {
    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The common length of all series, or `None` when lengths differ.
    pub fn equal_length(&self) -> Option<usize> {
        let first = self.series.first()?.len;
        self.series.iter().all(|s| s.len == first).then_some(first)
    }

    /// Longest series length.
    pub fn max_len(&self) -> usize {
        self.series.iter().map(|s| s.len).max().unwrap_or(0)
    }

    /// Keeps the series at `idx` (in that order).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            series: idx.iter().map(|&i| self.series[i].clone()).collect(),
            labels: self.labels.as_ref().map(|l| idx.iter().map(|&i| l[i].clone()).collect()),
            n_features: self.n_features,
            sources: self.sources.clone(),
        }
    }

    /// Appends `other`, which must have the same feature count and the same labelling.
    fn append(&mut self, other: Dataset) -> Result<()> {
        let path = other.sources.first().cloned().unwrap_or_default();
        if other.n_features != self.n_features {
            return Err(Error::data(
                path,
                0,
                format!(
                    "has {} features per time step but {} has {}",
                    other.n_features,
                    self.sources.first().map(|p| p.display().to_string()).unwrap_or_default(),
                    self.n_features
                ),
            ));
        }
        match (&mut self.labels, other.labels) {
            (Some(a), Some(b)) => a.extend(b),
            (None, None) => {}
            (Some(_), None) => return Err(Error::data(path, 0, "has no labels but the previous files do")),
            (None, Some(_)) => return Err(Error::data(path, 0, "has labels but the previous files do not")),
        }
        self.series.extend(other.series);
        self.sources.extend(other.sources);
        Ok(())
    }
}

/// Loads and concatenates several files (e.g. a UCR TRAIN and TEST file); formats are chosen by
/// extension: `.tsv`/`.txt` (UCR), `.ts` (aeon/sktime), `.csv`; a trailing `.gz` is decompressed.
pub fn load_files(paths: &[PathBuf], csv: &CsvOptions) -> Result<Dataset> {
    let mut out: Option<Dataset> = None;
    for p in paths {
        let ds = load_file(p, csv)?;
        match &mut out {
            None => out = Some(ds),
            Some(acc) => acc.append(ds)?,
        }
    }
    out.ok_or_else(|| Error::Param("no data files given".into()))
}

/// Loads one file; see [`load_files`] for the formats.
pub fn load_file(path: &Path, csv: &CsvOptions) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_bytes(path, &bytes, csv)
}

/// Parses file content already in memory; `path` names it in errors and picks the format.
pub fn parse_bytes(path: &Path, bytes: &[u8], csv: &CsvOptions) -> Result<Dataset> {
    let text = decode_text(path, bytes)?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let ds = if stem.ends_with(".tsv") || stem.ends_with(".txt") {
        ucr::parse(path, &text)?
    } else if stem.ends_with(".ts") {
        ts::parse(path, &text)?
    } else if stem.ends_with(".csv") {
        csv::parse(path, &text, csv)?
    } else {
        return Err(Error::data(path, 0, "unknown format: expected a .tsv, .txt, .ts or .csv file (optionally .gz)"));
    };
    if ds.is_empty() {
        return Err(Error::data(path, 0, "contains no series"));
    }
    Ok(ds)
}

/// Decodes file content as UTF-8, gunzipping `.gz`.
fn decode_text(path: &Path, bytes: &[u8]) -> Result<String> {
    let bytes = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, 0, format!("not a valid gzip file: {e}")))?;
        out
    } else {
        bytes.to_vec()
    };
    String::from_utf8(bytes).map_err(|e| Error::data(path, 0, format!("not UTF-8 text: {e}")))
}

/// Parses one numeric cell; NaN and infinity are rejected because they would poison training.
pub(crate) fn parse_value(path: &Path, line: usize, col: usize, cell: &str) -> Result<f32> {
    let cell = cell.trim();
    let v: f32 = cell.parse().map_err(|_| Error::data(path, line, format!("column {col}: '{cell}' is not a number")))?;
    if !v.is_finite() {
        return Err(Error::data(path, line, format!("column {col}: non-finite value '{cell}'")));
    }
    Ok(v)
}
