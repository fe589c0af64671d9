//! Inference core that goes onto devices.
//!
//! `no_std` and allocation-free: a [`bundle`] (weights + centroids, checksummed) is parsed in
//! place, the [`encoder`] consumes one sample at a time into a fixed-size [`encoder::State`] (its
//! arithmetic, shared by every path, is in `kernel`), and
//! [`assign`] picks the nearest centroid. With `std`, [`batch`] runs many windows on all cores
//! and [`duo`] runs one window's steps on two cores (lowest latency), and [`atomic_file`] writes files that appear whole or not at all (every artifact of the tool chain); with `tract`, [`tract_engine`] runs the exported ONNX file instead of the native kernels.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod assign;
pub mod bundle;
mod crc;
pub mod encoder;
mod kernel;
pub mod math;
pub mod summary;

#[cfg(feature = "std")]
pub mod atomic_file;
#[cfg(feature = "std")]
pub mod batch;
#[cfg(feature = "std")]
pub mod duo;
#[cfg(all(test, feature = "std"))]
mod testutil;
#[cfg(feature = "tract")]
pub mod tract_engine;

pub use assign::{assign, AssignError, Assignment};
pub use bundle::{Bundle, BundleError, Header};
pub use crc::crc32;
pub use encoder::{EncodeError, Encoder, State};
