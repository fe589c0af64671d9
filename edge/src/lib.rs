//! Offline fleet scoring: long-format readings -> per-device windows -> the runtime's engines.
//!
//! The `edge` binary wires [`fleet::Windower`] to the runtime; the library part exists so the row
//! handling can be tested and fuzzed on its own.

pub mod fleet;
pub mod parquet_input;
