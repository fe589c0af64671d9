//! UCR archive text files: one series per line, class label first, then the values, separated by
//! tabs (`.tsv`, 2018 archive), commas or whitespace (older `.txt`).
//!
//! Unequal-length UCR sets pad the end of short series with `NaN`; trailing `NaN`s therefore end
//! the series, while a `NaN` followed by a number is an error.

use std::path::Path;

use super::{parse_value, Dataset, Series};
use crate::error::{Error, Result};

pub(super) fn parse(path: &Path, text: &str) -> Result<Dataset> {
    let mut series = Vec::new();
    let mut labels = Vec::new();
    let mut columns: Option<(usize, usize)> = None; // (cell count, first line)
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let cells: Vec<&str> = if raw.contains('\t') {
            raw.split('\t').collect()
        } else if raw.contains(',') {
            raw.split(',').collect()
        } else {
            raw.split_whitespace().collect()
        };
        if cells.len() < 2 {
            return Err(Error::data(path, line, "expected a label followed by at least one value"));
        }
        match columns {
            None => columns = Some((cells.len(), line)),
            Some((n, first)) if n != cells.len() => {
                return Err(Error::data(path, line, format!("has {} columns but line {first} has {n} (ragged rows)", cells.len())))
            }
            _ => {}
        }
        labels.push(normalise_label(cells[0]));
        let body = &cells[1..];
        let len = body.iter().rposition(|c| !is_nan(c)).map_or(0, |p| p + 1);
        if len == 0 {
            return Err(Error::data(path, line, "series has no values (all NaN)"));
        }
        let values = body[..len].iter().enumerate().map(|(j, c)| parse_value(path, line, j + 2, c)).collect::<Result<Vec<f32>>>()?;
        series.push(Series { values, len });
    }
    Ok(Dataset { series, labels: Some(labels), n_features: 1, sources: vec![path.to_path_buf()] })
}

fn is_nan(cell: &str) -> bool {
    cell.trim().eq_ignore_ascii_case("nan")
}

/// Old UCR files write labels as floats (`1.0000000e+00`); map integral floats to `1`.
pub(crate) fn normalise_label(cell: &str) -> String {
    let cell = cell.trim();
    match cell.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        _ => cell.to_string(),
    }
}
