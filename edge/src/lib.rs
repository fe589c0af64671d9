//! Offline fleet scoring: long-format readings -> per-device windows -> the runtime's engines ->
//! a window table and a device table.
//!
//! The `edge` binary wires [`fleet::Windower`] to the runtime; the library part exists so the row
//! handling, the per-device totals and the output tables can be tested and fuzzed on their own.

pub mod csv_input;
pub mod devices;
pub mod fleet;
pub mod outputs;
pub mod parquet_input;
pub mod score;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sessions;
pub mod table;
