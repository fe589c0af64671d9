//! What `edge assign` writes: the columns of the window table (one row per scored window) and of
//! the device table (one row per device, see [`crate::devices`]).

use runtime::Assignment;

use crate::devices::DeviceRow;
use crate::fleet::Window;
use crate::table::{Cell, Kind};

/// Owned column names for a fixed list.
fn named(columns: &[(&str, Kind)]) -> Vec<(String, Kind)> {
    columns.iter().map(|&(n, k)| (n.to_string(), k)).collect()
}

/// Columns of the window table; with `session`, the session id follows the device.
pub fn window_columns(session: bool) -> Vec<(String, Kind)> {
    let mut cols = named(&[("device", Kind::Text)]);
    if session {
        cols.extend(named(&[("session", Kind::Text)]));
    }
    cols.extend(named(&[
        ("window_start", Kind::Text),
        ("window_end", Kind::Text),
        ("cluster", Kind::I32),
        ("distance", Kind::F32),
        ("second_distance", Kind::F32),
        ("anomalous", Kind::Bool),
    ]));
    cols
}

/// One window's row (its session id after the device when it has one; see [`window_columns`]).
pub fn window_cells<'a>(w: &'a Window, a: &Assignment) -> Vec<Cell<'a>> {
    let mut cells = vec![Cell::Text(&w.device)];
    if let Some(s) = &w.session {
        cells.push(Cell::Text(s));
    }
    cells.extend([
        Cell::Text(&w.start),
        Cell::Text(&w.end),
        Cell::I32(a.cluster as i32),
        Cell::F32(a.distance),
        Cell::F32(a.second_distance),
        Cell::Bool(a.anomalous),
    ]);
    cells
}

/// Columns of the device table for a model of `k` clusters (`windows_in_0` .. per cluster).
pub fn device_columns(k: usize) -> Vec<(String, Kind)> {
    let mut c = named(&[("device", Kind::Text), ("windows", Kind::I64), ("cluster", Kind::I32), ("cluster_share", Kind::F64)]);
    c.extend((0..k).map(|i| (format!("windows_in_{i}"), Kind::I64)));
    c.extend(named(&[
        ("mean_distance", Kind::F64),
        ("max_distance", Kind::F32),
        ("anomalous_windows", Kind::I64),
        ("first_timestamp", Kind::Text),
        ("last_timestamp", Kind::Text),
        ("latest_cluster", Kind::I32),
    ]));
    c
}

/// One device's row.
pub fn device_cells(r: &DeviceRow) -> Vec<Cell<'_>> {
    let mut c = vec![Cell::Text(&r.device), Cell::I64(r.windows as i64), Cell::I32(r.cluster as i32), Cell::F64(r.share)];
    c.extend(r.counts.iter().map(|&n| Cell::I64(n as i64)));
    c.extend([
        Cell::F64(r.mean_distance),
        Cell::F32(r.max_distance),
        Cell::I64(r.anomalous_windows as i64),
        Cell::Text(&r.first_timestamp),
        Cell::Text(&r.last_timestamp),
        Cell::I32(r.latest_cluster as i32),
    ]);
    c
}
