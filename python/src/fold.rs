//! `DeviceFold`: the device table from scored windows, for engines that score in one stage and
//! group by device in another (Spark). The fold is [`edge::devices::DeviceTable`], so the rows
//! equal `edge assign`'s device table when each device's windows arrive in order.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type};
use arrow_array::{Array, RecordBatch};
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use arrow_schema::DataType;
use edge::devices::DeviceTable;
use edge::fleet::Window;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use runtime::Assignment;

use crate::tables::device_table;

/// Folds scored windows into one row per device.
#[pyclass(module = "vrae_edge._native")]
pub struct DeviceFold {
    clusters: usize,
    table: DeviceTable,
}

/// A text column's values (`utf8` or `large_utf8`).
fn texts<'a>(b: &'a RecordBatch, name: &str) -> PyResult<Box<dyn Fn(usize) -> &'a str + Send + Sync + 'a>> {
    let c = column(b, name)?;
    Ok(match c.data_type() {
        DataType::Utf8 => {
            let a = c.as_string::<i32>();
            Box::new(move |i| a.value(i))
        }
        DataType::LargeUtf8 => {
            let a = c.as_string::<i64>();
            Box::new(move |i| a.value(i))
        }
        DataType::Utf8View => {
            let a = c.as_string_view();
            Box::new(move |i| a.value(i))
        }
        t => return Err(PyValueError::new_err(format!("column '{name}' is {t}; scored windows have it as a string"))),
    })
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> PyResult<&'a dyn Array> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("scored windows have a '{name}' column; this batch has none")))?;
    if c.null_count() > 0 {
        return Err(PyValueError::new_err(format!("column '{name}' has nulls; scored windows have none")));
    }
    Ok(c.as_ref())
}

fn typed<'a>(b: &'a RecordBatch, name: &str, t: DataType) -> PyResult<&'a dyn Array> {
    let c = column(b, name)?;
    if *c.data_type() != t {
        return Err(PyValueError::new_err(format!("column '{name}' is {}; scored windows have it as {t}", c.data_type())));
    }
    Ok(c)
}

#[pymethods]
impl DeviceFold {
    /// An empty fold for a model of `clusters` clusters.
    #[new]
    fn new(clusters: usize) -> PyResult<Self> {
        if clusters == 0 {
            return Err(PyValueError::new_err("clusters must be at least 1"));
        }
        Ok(DeviceFold { clusters, table: DeviceTable::new(clusters) })
    }

    /// Folds in a batch of scored windows (the columns `Scorer.push` returns; others are
    /// ignored). Each device's windows must come in time order.
    fn push(&mut self, py: Python<'_>, windows: &Bound<'_, PyAny>) -> PyResult<()> {
        let b = RecordBatch::from_pyarrow_bound(windows)
            .map_err(|e| PyTypeError::new_err(format!("push() takes a pyarrow.RecordBatch: {e}")))?;
        let (device, start, end) = (texts(&b, "device")?, texts(&b, "window_start")?, texts(&b, "window_end")?);
        let cluster = typed(&b, "cluster", DataType::Int32)?.as_primitive::<Int32Type>();
        let distance = typed(&b, "distance", DataType::Float32)?.as_primitive::<Float32Type>();
        let second = typed(&b, "second_distance", DataType::Float32)?.as_primitive::<Float32Type>();
        let anomalous = typed(&b, "anomalous", DataType::Boolean)?.as_boolean();
        if let Some(c) = cluster.values().iter().find(|&&c| c < 0 || c as usize >= self.clusters) {
            return Err(PyValueError::new_err(format!("cluster {c} is not one of this model's {} clusters", self.clusters)));
        }
        py.detach(|| {
            for i in 0..b.num_rows() {
                let w = Window { device: device(i).to_string(), start: start(i).to_string(), end: end(i).to_string(), session: None };
                let a = Assignment {
                    cluster: cluster.value(i) as usize,
                    distance: distance.value(i),
                    second_distance: second.value(i),
                    anomalous: anomalous.value(i),
                };
                self.table.add(&w, &a);
            }
        });
        Ok(())
    }

    /// The device table so far (one row per device, sorted by id), as `Scorer.finish` gives it.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        device_table(&self.table, self.clusters).map_err(|e| PyValueError::new_err(e.to_string()))?.to_pyarrow(py)
    }
}
