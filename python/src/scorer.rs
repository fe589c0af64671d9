//! `Scorer`: `edge assign` over a stream of Arrow record batches, state per device carried from
//! batch to batch, plus `embed` / `assign` on arrays of windows.

use arrow_array::RecordBatch;
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use edge::fleet::{Window, WindowerParams};
use edge::outputs::{window_cells, window_columns};
use edge::score::{BatchScorer, Model, ScoreError};
use edge::table::{Cell, Kind};
use numpy::{PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use runtime::batch::{assign_all, embed_windows};
use runtime::bundle::AlignedBytes;
use runtime::Assignment;

use crate::model;
use crate::readings::Readings;
use crate::tables::{device_table, TableBuilder};

/// Windows embedded per kernel call (as `edge assign --batch`): enough to fill every core.
const BATCH: usize = 4096;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// `obj` as a C-contiguous float32 array (numpy converts lists and other dtypes); `what` names
/// it in the error.
fn float32_array<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("ascontiguousarray", (obj, np.getattr("float32")?))?;
    arr.extract().map_err(|_| PyTypeError::new_err(format!("{what} must be a numeric array")))
}

/// Scores a fleet's readings with a trained model, exactly as `edge assign` does.
///
/// `Scorer(model, window=None, stride=None, max_gap=None, sessions=False, strict=False,
/// min_session=None, max_session=None)`: `model` is a model directory, a `model.bundle` path or
/// the bundle's bytes; `window` defaults to the model's training length, `stride` to `window`;
/// a timestamp step larger than `max_gap` restarts a device's window; `strict` makes a
/// malformed or out-of-order row an error instead of a counted skip. `sessions=True` is `edge
/// assign --sessions`: each device's stream is cut at gaps above `max_gap` (required) and each
/// session scored at its own length (`min_session`, `max_session` as the CLI's flags); the
/// sessions still open at the end come from `close()`.
#[pyclass(module = "vrae_edge._native")]
pub struct Scorer {
    bundle: AlignedBytes,
    window: usize,
    stride: usize,
    features: usize,
    clusters: usize,
    latent: usize,
    scorer: BatchScorer,
    /// Sessions mode (`close()` scores the sessions still open).
    sessions: bool,
    /// Why the scorer takes no more rows (`close` or `finish` called, or a strict-mode error).
    closed: Option<String>,
    /// `close()` has scored the sessions still open (`finish()` may follow).
    tail_taken: bool,
}

impl Scorer {
    fn check_open(&self) -> PyResult<()> {
        match &self.closed {
            Some(why) => Err(PyRuntimeError::new_err(format!("this Scorer takes no more readings: {why}"))),
            None => Ok(()),
        }
    }

    /// Scores the sessions still open (sessions mode; nothing with fixed windows).
    fn score_tail(&mut self) -> PyResult<RecordBatch> {
        let mut out = TableBuilder::new(&window_columns(false));
        let enc = model::encoder(&self.bundle);
        self.scorer
            .finish(&Model::native(&enc), &mut |job, a| {
                out.push(&window_cells(job, a));
                Ok(())
            })
            .map_err(runtime_error)?;
        out.finish().map_err(runtime_error)
    }

    /// Feeds every row of `batch`; returns the windows it completed, scored.
    fn score(&mut self, batch: &RecordBatch) -> PyResult<RecordBatch> {
        let readings = Readings::new(batch, self.features).map_err(value_error)?;
        let mut out = TableBuilder::new(&window_columns(false));
        let enc = model::encoder(&self.bundle);
        let model = Model::native(&enc);
        let mut sink = |job: &Window, a: &Assignment| {
            out.push(&window_cells(job, a));
            Ok(())
        };
        let mut values = vec![0f32; self.features];
        let (mut device, mut time) = (String::new(), String::new());
        for i in 0..readings.len() {
            let row = readings.row(i, &mut values, &mut device, &mut time);
            match self.scorer.feed_row(row, &model, &mut sink) {
                Ok(_) => {}
                Err(e @ ScoreError::Row(_)) => {
                    // Strict mode: like `edge assign`, the run stops at the first bad row.
                    self.closed = Some(format!("strict mode stopped at {e}"));
                    return Err(value_error(e));
                }
                Err(e) => return Err(runtime_error(e)),
            }
        }
        self.scorer.flush(&model, &mut sink).map_err(runtime_error)?;
        out.finish().map_err(runtime_error)
    }

    /// `(n, length, features)` float32 windows from a 2-D (one feature) or 3-D array-like.
    fn windows<'py>(&self, py: Python<'py>, windows: &Bound<'py, PyAny>) -> PyResult<(PyReadonlyArrayDyn<'py, f32>, usize, usize)> {
        let arr = float32_array(py, windows, "windows")?;
        let shape = arr.shape().to_vec();
        let (n, len, f) = match shape[..] {
            [n, len] => (n, len, 1),
            [n, len, f] => (n, len, f),
            _ => return Err(value_error(format!("windows must be 2-D (n, length) or 3-D (n, length, features), got shape {shape:?}"))),
        };
        if f != self.features {
            return Err(value_error(format!("windows have {f} feature(s) per sample; this model reads {}", self.features)));
        }
        if len == 0 {
            return Err(value_error("windows must hold at least one sample each"));
        }
        Ok((arr, n, len))
    }
}

#[pymethods]
impl Scorer {
    #[new]
    #[pyo3(signature = (model, window=None, stride=None, max_gap=None, sessions=false, strict=false, min_session=None, max_session=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Bound<'_, PyAny>,
        window: Option<usize>,
        stride: Option<usize>,
        max_gap: Option<f64>,
        sessions: bool,
        strict: bool,
        min_session: Option<usize>,
        max_session: Option<usize>,
    ) -> PyResult<Self> {
        if max_gap.is_some_and(|g| g.is_nan() || g < 0.0) {
            return Err(value_error(format!("max_gap must be a non-negative number, got {}", max_gap.unwrap_or_default())));
        }
        if sessions && (window.is_some() || stride.is_some()) {
            return Err(value_error("sessions=True scores each session at its own length: window and stride do not apply"));
        }
        if !sessions && (min_session.is_some() || max_session.is_some()) {
            return Err(value_error("min_session and max_session need sessions=True"));
        }
        let bundle = model::load(model)?;
        let hd = model::encoder(&bundle).bundle().header;
        let features = hd.n_features as usize;
        let (seq_len, min_len) = (hd.seq_len as usize, hd.min_len as usize);
        let (window, stride) = edge::fleet::window_and_stride(window, stride, seq_len);
        if !sessions {
            edge::sessions::check_min_len("window", window, min_len).map_err(value_error)?;
        }
        edge::sessions::check_min_len("min_session", min_session.unwrap_or(0), min_len).map_err(value_error)?;
        let limits = sessions.then(|| edge::sessions::limits_for(seq_len, min_len, min_session, max_session));
        let scorer = BatchScorer::new(
            WindowerParams { features, window, stride, max_gap, strict, sessions: limits, session_column: false },
            hd.k as usize,
            BATCH,
        )
        .map_err(value_error)?;
        Ok(Scorer {
            bundle,
            window,
            stride,
            features,
            clusters: hd.k as usize,
            latent: hd.latent as usize,
            scorer,
            sessions,
            closed: None,
            tail_taken: false,
        })
    }

    /// Feeds a `pyarrow.RecordBatch` of readings (device id, timestamp, one column per feature,
    /// by position; devices interleaved in any order, each device's rows in time order, within
    /// and across batches) and returns the windows it completed, scored: `device`,
    /// `window_start`, `window_end`, `cluster`, `distance`, `second_distance`, `anomalous`.
    fn push<'py>(&mut self, py: Python<'py>, batch: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.check_open()?;
        let batch = RecordBatch::from_pyarrow_bound(batch).map_err(|e| {
            let t = batch.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!("push() takes a pyarrow.RecordBatch (got {t}): {e}"))
        })?;
        let out = py.detach(|| self.score(&batch))?;
        out.to_pyarrow(py)
    }

    /// Ends the input: scores the sessions still open at its end (sessions mode; as `edge
    /// assign` closes them at the end of its file, in device id order) and returns them as
    /// `push` returns windows; an empty batch with fixed windows. Later pushes raise;
    /// `finish()` may follow.
    fn close<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_open()?;
        self.closed = Some("close() was called".into());
        self.tail_taken = true;
        py.detach(|| self.score_tail())?.to_pyarrow(py)
    }

    /// Ends the stream and returns the device table (one row per device with a window, sorted
    /// by id): `device`, `windows`, `cluster` (the majority), `cluster_share`, `windows_in_<c>`
    /// per cluster, `mean_distance`, `max_distance`, `anomalous_windows`, `first_timestamp`,
    /// `last_timestamp`, `latest_cluster`. Later pushes raise. In sessions mode, call `close()`
    /// first (it returns the sessions still open, which the table then counts); without it,
    /// `finish()` raises rather than drop them.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if !self.tail_taken {
            self.check_open()?;
            if self.sessions {
                return Err(PyRuntimeError::new_err(
                    "sessions=True: call close() before finish(); it returns the sessions still open at the end of the input",
                ));
            }
        }
        self.closed = Some("finish() was called".into());
        self.tail_taken = false;
        py.detach(|| device_table(self.scorer.table(), self.clusters)).map_err(runtime_error)?.to_pyarrow(py)
    }

    /// The counts `edge assign` prints, over everything pushed so far.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let w = self.scorer.windower();
        let s = w.summary();
        let d = PyDict::new(py);
        d.set_item("rows", s.rows)?;
        d.set_item("malformed", s.malformed)?;
        d.set_item("out_of_order", s.out_of_order)?;
        d.set_item("gaps", s.gaps)?;
        d.set_item("windows", s.windows)?;
        d.set_item("short_sessions", s.short_sessions)?;
        d.set_item("cut_sessions", s.cut_sessions)?;
        d.set_item("anomalous_windows", self.scorer.anomalous())?;
        d.set_item("devices", w.devices())?;
        d.set_item("short_devices", w.short_devices())?;
        d.set_item("samples", w.samples())?;
        d.set_item("first_skipped", s.first_skipped.as_ref().map(|e| e.to_string()))?;
        Ok(d)
    }

    /// Latent means of windows (`(n, length)` for one feature or `(n, length, features)`),
    /// as a float32 array `(n, latent)`: the device's encoder, bit for bit.
    fn embed<'py>(&self, py: Python<'py>, windows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (arr, n, len) = self.windows(py, windows)?;
        let values = arr.as_slice().map_err(runtime_error)?;
        let z = if n == 0 {
            Vec::new()
        } else {
            py.detach(|| embed_windows(&model::encoder(&self.bundle), values, len * self.features)).map_err(value_error)?
        };
        numpy::PyArray1::from_vec(py, z).reshape([n, self.latent])
    }

    /// The device's decision for windows and their latents (from [`Self::embed`]; computed when
    /// `None`): a record batch of `cluster`, `distance`, `second_distance`, `anomalous`. The
    /// windows are needed beside the latents: the decision vector holds the window's summary.
    #[pyo3(signature = (windows, latents=None))]
    fn assign<'py>(
        &self,
        py: Python<'py>,
        windows: &Bound<'py, PyAny>,
        latents: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (arr, n, len) = self.windows(py, windows)?;
        let values = arr.as_slice().map_err(runtime_error)?;
        let given: Option<PyReadonlyArrayDyn<'py, f32>> = match latents {
            Some(l) => {
                let l = float32_array(py, l, "latents")?;
                if l.shape() != [n, self.latent] {
                    return Err(value_error(format!("latents must have shape ({n}, {}), got {:?}", self.latent, l.shape())));
                }
                Some(l)
            }
            None => None,
        };
        let given = given.as_ref().map(|l| l.as_slice()).transpose().map_err(runtime_error)?;
        let enc = model::encoder(&self.bundle);
        let asg: Vec<Assignment> = py
            .detach(|| {
                let computed;
                let z = match given {
                    Some(z) => z,
                    None => {
                        computed = embed_windows(&enc, values, len * self.features)?;
                        &computed[..]
                    }
                };
                if n == 0 {
                    return Ok(Vec::new());
                }
                assign_all(&enc, values, len * self.features, z)
            })
            .map_err(value_error)?;
        let mut t = TableBuilder::new(&[
            ("cluster".into(), Kind::I32),
            ("distance".into(), Kind::F32),
            ("second_distance".into(), Kind::F32),
            ("anomalous".into(), Kind::Bool),
        ]);
        for a in &asg {
            t.push(&[Cell::I32(a.cluster as i32), Cell::F32(a.distance), Cell::F32(a.second_distance), Cell::Bool(a.anomalous)]);
        }
        t.finish().map_err(runtime_error)?.to_pyarrow(py)
    }

    /// Samples per window.
    #[getter]
    fn window(&self) -> usize {
        self.window
    }

    /// Samples between window starts.
    #[getter]
    fn stride(&self) -> usize {
        self.stride
    }

    /// Values per sample (value columns after device id and timestamp).
    #[getter]
    fn features(&self) -> usize {
        self.features
    }

    /// Number of clusters.
    #[getter]
    fn clusters(&self) -> usize {
        self.clusters
    }

    /// Latent dimension.
    #[getter]
    fn latent(&self) -> usize {
        self.latent
    }

    fn __repr__(&self) -> String {
        format!(
            "Scorer(window={}, stride={}, features={}, clusters={}, windows_scored={})",
            self.window,
            self.stride,
            self.features,
            self.clusters,
            self.scorer.windower().summary().windows
        )
    }
}
