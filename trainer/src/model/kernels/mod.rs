//! The training SIMD kernels the fused recurrent layers ([`super::fused`]) run: gate
//! activations over whole rows, weight matrices packed once per call for the per-step products,
//! and the weight-gradient accumulation (AVX-512 where it reproduces gemm's bits).

pub(super) mod activation;
pub(super) mod packed;
pub(super) mod weight_grad;
