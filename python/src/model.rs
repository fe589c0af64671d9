//! The model a scorer runs: a model directory (its `model.bundle`), a bundle file, or the
//! bundle's bytes (how Spark ships it to executors), checked once when the scorer is made.

use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};
use runtime::bundle::AlignedBytes;
use runtime::Encoder;

/// Reads and checks the model named by `model`: `bytes`/`bytearray`/`memoryview` of a bundle,
/// or a path (`str` or `os.PathLike`) to a model directory or a bundle file. Errors name the
/// path and say what is wrong, as `edge assign` does.
pub fn load(model: &Bound<'_, PyAny>) -> PyResult<AlignedBytes> {
    let (bytes, what) = if let Ok(b) = model.cast::<PyBytes>() {
        (b.as_bytes().to_vec(), "the model bytes".to_string())
    } else if let Ok(b) = model.cast::<PyByteArray>() {
        (b.to_vec(), "the model bytes".to_string())
    } else if let Ok(path) = model.extract::<PathBuf>() {
        let file = if path.is_dir() { path.join("model.bundle") } else { path };
        let bytes =
            std::fs::read(&file).map_err(|e| PyValueError::new_err(format!("{}: cannot read the model bundle: {e}", file.display())))?;
        (bytes, file.display().to_string())
    } else if let Ok(b) = model.call_method0("tobytes").and_then(|b| b.extract::<Vec<u8>>()) {
        (b, "the model bytes".to_string())
    } else {
        let t = model.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!("model must be a model directory, a model.bundle path or the bundle's bytes, not {t}")));
    };
    let aligned = AlignedBytes::new(&bytes);
    Encoder::from_bytes(aligned.as_bytes()).map_err(|e| PyValueError::new_err(format!("{what}: invalid model bundle: {e}")))?;
    Ok(aligned)
}

/// The encoder over checked bundle bytes. Re-parsing per call is a header walk (the bytes were
/// checked in [`load`]); it spares the scorer a self-referential struct.
pub fn encoder(bundle: &AlignedBytes) -> Encoder<'_> {
    Encoder::from_bytes(bundle.as_bytes()).expect("checked when the scorer was made")
}

/// The checked bundle bytes of a model directory, a `model.bundle` path or bytes: what Spark
/// broadcasts to executors (one loader for Python and the scorer, one set of messages).
#[pyfunction]
pub fn bundle_bytes<'py>(py: Python<'py>, model: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let bundle = load(model)?;
    Ok(PyBytes::new(py, bundle.as_bytes()))
}
