//! The aeon/sktime `.ts` format: `@` header lines, then one series per line after `@data`;
//! dimensions are separated by `:`, values within a dimension by `,`, and the class label is the
//! last `:` field when `@classLabel true`. Equal and unequal length are both read; when the header
//! declares `@equalLength true` (or a `@seriesLength`) every series must match it.

use std::path::Path;

use super::{parse_value, ucr::normalise_label, Dataset, Series};
use crate::error::{Error, Result};

#[derive(Default)]
struct Header {
    dimensions: Option<usize>,
    equal_length: Option<bool>,
    series_length: Option<usize>,
    class_label: bool,
    class_values: Vec<String>,
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Dataset> {
    let mut h = Header::default();
    let mut in_data = false;
    let mut series = Vec::new();
    let mut labels = Vec::new();
    let mut n_features: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        if !in_data {
            if !raw.starts_with('@') {
                return Err(Error::data(path, line, "expected a header line starting with '@' before @data"));
            }
            let mut parts = raw.split_whitespace();
            let key = parts.next().unwrap_or("").to_ascii_lowercase();
            let arg = parts.next();
            let flag = |a: Option<&str>| -> Result<bool> {
                match a.map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    _ => Err(Error::data(path, line, format!("{key} needs true or false"))),
                }
            };
            let count = |a: Option<&str>| -> Result<usize> {
                a.and_then(|s| s.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| Error::data(path, line, format!("{key} needs a positive integer")))
            };
            match key.as_str() {
                "@data" => in_data = true,
                "@timestamps" if flag(arg)? => {
                    return Err(Error::data(path, line, "time-stamped .ts files are not supported"));
                }
                "@dimension" | "@dimensions" => h.dimensions = Some(count(arg)?),
                "@equallength" => h.equal_length = Some(flag(arg)?),
                "@serieslength" => h.series_length = Some(count(arg)?),
                "@univariate" if flag(arg)? => {
                    h.dimensions.get_or_insert(1);
                }
                "@classlabel" => {
                    h.class_label = flag(arg)?;
                    h.class_values = parts.map(normalise_label).collect();
                }
                _ => {} // @problemName, @missing, @targetlabel...: informational
            }
            continue;
        }
        let mut fields: Vec<&str> = raw.split(':').collect();
        let label = if h.class_label {
            let l = normalise_label(fields.pop().unwrap_or(""));
            if l.is_empty() {
                return Err(Error::data(path, line, "missing class label"));
            }
            if !h.class_values.is_empty() && !h.class_values.contains(&l) {
                return Err(Error::data(path, line, format!("class label '{l}' is not declared in @classLabel")));
            }
            Some(l)
        } else {
            None
        };
        let dims = fields.len();
        if dims == 0 || fields.iter().all(|f| f.trim().is_empty()) {
            return Err(Error::data(path, line, "series has no values"));
        }
        if let Some(d) = h.dimensions.filter(|&d| d != dims) {
            return Err(Error::data(path, line, format!("has {dims} dimensions but the header declares {d}")));
        }
        if let Some(f) = n_features.filter(|&f| f != dims) {
            return Err(Error::data(path, line, format!("has {dims} dimensions but earlier series have {f}")));
        }
        n_features = Some(dims);
        let mut per_dim: Vec<Vec<f32>> = Vec::with_capacity(dims);
        let mut col = 1;
        for (d, f) in fields.iter().enumerate() {
            let vals = f
                .split(',')
                .map(|c| {
                    let v = if c.trim() == "?" {
                        Err(Error::data(path, line, format!("dimension {}: missing value '?' (column {col})", d + 1)))
                    } else {
                        parse_value(path, line, col, c)
                    };
                    col += 1;
                    v
                })
                .collect::<Result<Vec<f32>>>()?;
            if let Some(first) = per_dim.first().filter(|p| p.len() != vals.len()) {
                return Err(Error::data(
                    path,
                    line,
                    format!("dimension {} has {} values but dimension 1 has {}", d + 1, vals.len(), first.len()),
                ));
            }
            per_dim.push(vals);
        }
        let len = per_dim[0].len();
        if let Some(sl) = h.series_length.filter(|&sl| sl != len) {
            return Err(Error::data(path, line, format!("series has {len} time steps but @seriesLength is {sl}")));
        }
        if h.equal_length == Some(true) {
            if let Some(first) = series.first().map(|s: &Series| s.len).filter(|&f| f != len) {
                return Err(Error::data(
                    path,
                    line,
                    format!("series has {len} time steps but @equalLength true and the first series has {first}"),
                ));
            }
        }
        let mut values = Vec::with_capacity(len * dims);
        for t in 0..len {
            values.extend(per_dim.iter().map(|d| d[t]));
        }
        series.push(Series { values, len });
        if let Some(l) = label {
            labels.push(l);
        }
    }
    if !in_data {
        return Err(Error::data(path, 0, "no @data section"));
    }
    Ok(Dataset {
        series,
        labels: h.class_label.then_some(labels),
        n_features: n_features.or(h.dimensions).unwrap_or(1),
        sources: vec![path.to_path_buf()],
    })
}
