//! CSV input in two layouts.
//!
//! * **Wide**: one series per row (univariate). A header row is optional; a label column is taken
//!   from a header named `label`, `class`, `target` or `y`, or from `--csv-label first|last`.
//!   Empty trailing cells end a shorter series; a row with a different number of cells is an error.
//! * **Long**: header `series_id,t,value[,value...]` (first column named `series_id`, `id`,
//!   `series` or `device_id`; second `t`, `time`, `timestamp` or `step`), one time step per row in
//!   any order; every other column is a feature except an optional `label`/`class` column, which
//!   must be constant within a series. Series keep the order of their first appearance.

use std::collections::HashMap;
use std::path::Path;

use super::{parse_value, ucr::normalise_label, Dataset, Series};
use crate::error::{Error, Result};

/// Where the class label sits in a wide CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsvLabel {
    /// A header column named label/class/target/y, else none.
    #[default]
    Auto,
    /// No label column.
    None,
    /// The first column is the label.
    First,
    /// The last column is the label.
    Last,
}

/// Options for reading CSV files.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvOptions {
    /// Label column of a wide CSV.
    pub label: CsvLabel,
}

const LABEL_NAMES: [&str; 4] = ["label", "class", "target", "y"];
const ID_NAMES: [&str; 4] = ["series_id", "id", "series", "device_id"];
const TIME_NAMES: [&str; 4] = ["t", "time", "timestamp", "step"];

fn cells(line: &str) -> Vec<&str> {
    line.split(',').map(|c| c.trim().trim_matches('"').trim()).collect()
}

fn is_number(c: &str) -> bool {
    c.parse::<f64>().is_ok()
}

pub(super) fn parse(path: &Path, text: &str, opts: &CsvOptions) -> Result<Dataset> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Err(Error::data(path, 0, "file is empty"));
    };
    let head = cells(first);
    let lower: Vec<String> = head.iter().map(|c| c.to_ascii_lowercase()).collect();
    if head.len() >= 3 && ID_NAMES.contains(&lower[0].as_str()) && TIME_NAMES.contains(&lower[1].as_str()) {
        return parse_long(path, &lower, lines);
    }
    let label_pos = |n: usize| match opts.label {
        CsvLabel::First => Some(0),
        CsvLabel::Last => Some(n - 1),
        CsvLabel::None | CsvLabel::Auto => None,
    };
    let fixed = label_pos(head.len());
    let has_header = head.iter().enumerate().any(|(j, c)| Some(j) != fixed && !is_number(c));
    let label_col = match opts.label {
        CsvLabel::Auto if has_header => lower.iter().position(|c| LABEL_NAMES.contains(&c.as_str())),
        _ => fixed,
    };
    let ncols = head.len();
    let mut series = Vec::new();
    let mut labels = Vec::new();
    let rows = (!has_header).then_some((first_no, first)).into_iter().chain(lines);
    for (line, raw) in rows {
        let c = cells(raw);
        if c.len() != ncols {
            return Err(Error::data(path, line, format!("has {} columns but line {first_no} has {ncols} (ragged rows)", c.len())));
        }
        let mut values = Vec::with_capacity(ncols);
        let mut ended_at: Option<usize> = None;
        for (j, cell) in c.iter().enumerate() {
            if Some(j) == label_col {
                if cell.is_empty() {
                    return Err(Error::data(path, line, format!("column {}: empty label", j + 1)));
                }
                labels.push(normalise_label(cell));
            } else if cell.is_empty() {
                ended_at.get_or_insert(j);
            } else if let Some(e) = ended_at {
                return Err(Error::data(
                    path,
                    line,
                    format!("column {}: value after empty cell in column {} (only trailing cells may be empty)", j + 1, e + 1),
                ));
            } else {
                values.push(parse_value(path, line, j + 1, cell)?);
            }
        }
        if values.is_empty() {
            return Err(Error::data(path, line, "row has no values"));
        }
        let len = values.len();
        series.push(Series { values, len });
    }
    Ok(Dataset { series, labels: label_col.map(|_| labels), n_features: 1, sources: vec![path.to_path_buf()] })
}

fn parse_long<'a>(path: &Path, header: &[String], rows: impl Iterator<Item = (usize, &'a str)>) -> Result<Dataset> {
    let label_col = header.iter().position(|c| LABEL_NAMES.contains(&c.as_str()) && c != "y");
    let feature_cols: Vec<usize> = (2..header.len()).filter(|&j| Some(j) != label_col).collect();
    let nf = feature_cols.len();
    if nf == 0 {
        return Err(Error::data(path, 1, "long format needs at least one value column after series_id,t"));
    }
    struct Acc {
        steps: Vec<(f64, usize, Vec<f32>)>, // (t, line, values)
        label: Option<(String, usize)>,
    }
    let mut order: Vec<String> = Vec::new();
    let mut by_id: HashMap<String, Acc> = HashMap::new();
    for (line, raw) in rows {
        let c = cells(raw);
        if c.len() != header.len() {
            return Err(Error::data(path, line, format!("has {} columns but the header has {}", c.len(), header.len())));
        }
        let id = c[0].to_string();
        if id.is_empty() {
            return Err(Error::data(path, line, "empty series id"));
        }
        let t: f64 = c[1]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| Error::data(path, line, format!("column 2: time '{}' is not a finite number", c[1])))?;
        let vals = feature_cols.iter().map(|&j| parse_value(path, line, j + 1, c[j])).collect::<Result<Vec<f32>>>()?;
        let acc = by_id.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Acc { steps: Vec::new(), label: None }
        });
        if let Some(lc) = label_col {
            let l = normalise_label(c[lc]);
            match &acc.label {
                None => acc.label = Some((l, line)),
                Some((prev, pl)) if *prev != l => {
                    return Err(Error::data(path, line, format!("series '{id}' has label '{l}' but line {pl} gave '{prev}'")))
                }
                _ => {}
            }
        }
        acc.steps.push((t, line, vals));
    }
    if order.is_empty() {
        return Err(Error::data(path, 0, "no data rows after the header"));
    }
    let mut series = Vec::with_capacity(order.len());
    let mut labels = Vec::with_capacity(order.len());
    for id in &order {
        let mut acc = by_id.remove(id).expect("every id in `order` was inserted");
        acc.steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = acc.steps.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::data(path, w[1].1, format!("series '{id}' repeats time {} (also on line {})", w[1].0, w[0].1)));
        }
        let len = acc.steps.len();
        series.push(Series { values: acc.steps.into_iter().flat_map(|s| s.2).collect(), len });
        if let Some((l, _)) = acc.label {
            labels.push(l);
        }
    }
    Ok(Dataset { series, labels: label_col.map(|_| labels), n_features: nf, sources: vec![path.to_path_buf()] })
}
