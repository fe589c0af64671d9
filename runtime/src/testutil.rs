//! Shared test fixtures: reproducible noise and bundles with random weights.

use crate::bundle::{encode, AlignedBytes, Cell, DecisionTables, Header, Normalization};

/// Xorshift noise in `[-0.4, 0.4)`, reproducible from its seed.
pub(crate) struct Noise(u32);

impl Noise {
    pub(crate) fn new(seed: u32) -> Self {
        Noise(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> f32 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        (*s as f32 / u32::MAX as f32 - 0.5) * 0.8
    }
}

/// A bundle of the given shape (k = 2, zero centroids) with weights drawn from `noise`.
pub(crate) fn random_bundle(
    cell: Cell,
    n_features: u16,
    hidden: u16,
    layers: u8,
    latent: u16,
    normalization: Normalization,
    noise: &mut Noise,
) -> AlignedBytes {
    let mut hd = Header {
        cell,
        n_features,
        hidden,
        layers,
        latent,
        k: 2,
        seq_len: 20,
        normalization,
        weights_len: 0,
        segments: 0,
        stride: 0,
        prototypes: 2,
        freqs: 0,
        step_edges: 0,
        step_freqs: 0,
        min_len: 1,
        diffs: 0,
        weight_format: crate::bundle::WeightFormat::F32,
    };
    hd.weights_len = hd.expected_weights() as u32;
    let w: Vec<f32> = (0..hd.weights_len).map(|_| noise.next()).collect();
    AlignedBytes::new(
        &encode(&hd, &w, &DecisionTables::centroids(&vec![0.0; 2 * latent as usize], latent as usize)).expect("valid test bundle"),
    )
}
