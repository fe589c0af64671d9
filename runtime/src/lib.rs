//! Inference core that goes onto devices.
//!
//! `no_std` and allocation-free: a [`bundle`] (weights + centroids, checksummed) is parsed in
//! place, the [`encoder`] consumes one sample at a time into a fixed-size [`encoder::State`] (its
//! arithmetic, shared by every path, is in `kernel`; a bundle with int8 weights runs the
//! [`quant`] kernels), and [`assign`] picks the nearest centroid: that is the whole device core
//! (no features). Host
//! parts are behind features: `std` (the bundle writer, std errors), `batch` (many windows on
//! all cores), `duo` (one window's steps on two cores, lowest latency) and `tract` (the exported
//! ONNX file through tract instead of the native kernels).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod assign;
pub mod bundle;
mod crc;
pub mod encoder;
mod kernel;
pub mod math;
pub mod quant;
pub mod summary;

#[cfg(feature = "batch")]
pub mod batch;
#[cfg(feature = "duo")]
pub mod duo;
#[cfg(all(test, feature = "std"))]
mod testutil;
#[cfg(feature = "tract")]
pub mod tract_engine;

pub use assign::{assign, AssignError, Assignment};
pub use bundle::{Bundle, BundleError, Header, WeightFormat};
pub use crc::crc32;
pub use encoder::{EncodeError, Encoder, State};
