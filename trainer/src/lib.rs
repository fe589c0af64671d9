//! Host-side trainer of the VRAE time-series clustering pipeline.
//!
//! Data flows top to bottom through the modules: [`data`] (load, normalise, split) ->
//! [`model`] (VRAE, loss) -> [`train`] (with [`optim`], [`checkpoint`]) -> [`embed`] ->
//! [`cluster`] (k-means, spectral, scores) -> [`decide`] (an encoder's cluster decision) -> [`artifacts`] (the model directory) -> [`export`] (ONNX);
//! [`report`] (plots, report.json/html); [`run_record`] is what one run was, written into
//! config.json, the checkpoint and report.json; [`fit`] strings them together.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod artifacts;
pub mod checkpoint;
pub mod cluster;
pub mod data;
pub mod decide;
pub mod embed;
pub mod error;
pub mod export;
mod fault;
pub mod files;
pub mod fit;
pub mod flags;
#[cfg(feature = "onnx-import")]
pub mod import;
pub mod model;
pub mod npy;
pub mod optim;
pub mod params;
pub mod progress;
pub mod report;
pub mod run_record;
pub mod train;
pub mod train_log;

pub use error::{Error, Result};
