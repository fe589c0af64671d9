//! Exporting the trained encoder: the runtime's bundle and standard ONNX.

pub mod bundle;
pub mod onnx;
pub mod onnx_pb;

pub use bundle::{bundle_bytes, bundle_bytes_min, write_bundle};
pub use onnx::{encoder_onnx, encoder_onnx_with, write_encoder_onnx, write_encoder_onnx_with, BatchLengths, ONNX_OPSET};
