//! `vrae_edge._native`: the runtime as a Python extension (PyO3, abi3).
//!
//! [`scorer::Scorer`] is `edge assign` for Arrow record batches: the same windowing
//! ([`edge::fleet::Windower`]), the same batch kernels ([`runtime::batch`]), the same device
//! table ([`edge::devices::DeviceTable`]) and the same output columns ([`edge::outputs`]), so a
//! fleet pushed through it in any batch sizes gives exactly the CLI's rows. The Spark
//! integration is Python (`vrae_edge/spark.py`) on top of it.
//!
//! Arrow crosses the boundary through the C data interface (`arrow-pyarrow`): no copy of the
//! readings on the way in. Every call that computes releases the GIL, so Spark's Python worker
//! threads (and the user's) keep running.

mod fold;
mod model;
mod readings;
mod scorer;
mod tables;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<scorer::Scorer>()?;
    m.add_class::<fold::DeviceFold>()?;
    m.add_function(wrap_pyfunction!(model::bundle_bytes, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
