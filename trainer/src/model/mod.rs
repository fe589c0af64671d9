//! The VRAE: recurrent layers, the autoencoder around them, its loss and its stored weights.

pub mod loss;
pub mod params;
pub mod rnn;
pub mod vrae;

pub use params::ParamStore;
pub use vrae::{ModelConfig, Vrae};

#[cfg(test)]
mod gradcheck;

mod fused;
mod kernels;
