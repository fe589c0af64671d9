//! Exporting the trained encoder for inference engines.

pub mod onnx;
pub mod onnx_pb;

pub use onnx::{encoder_onnx, encoder_onnx_with_gate_blocks, write_encoder_onnx, ONNX_OPSET};
