//! The variational recurrent autoencoder.
//!
//! ```text
//! x [T,B,F] -> encoder RNN -> h_T (top layer) -> mean = h_T W_m^T + b_m, logvar = h_T W_v^T + b_v
//! z = mean + exp(logvar / 2) ⊙ ε,  ε ~ N(0, I)        (training; inference uses z = mean)
//! h0 = z W_lh^T + b_lh for every decoder layer, c0 = 0
//! decoder RNN over T steps with zero input -> x̂_t = h_t W_o^T + b_o
//! ```

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::fused::Output;
use super::params::ParamStore;
use super::rnn::{Rnn, StackShape};
use crate::error::{Error, Result};
use crate::params::Cell;

/// Architecture of a VRAE: what is needed to rebuild it from its weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Recurrent cell.
    pub cell: Cell,
    /// Values per time step.
    pub n_features: usize,
    /// Series length the decoder reproduces.
    pub seq_len: usize,
    /// Hidden units per layer.
    pub hidden_size: usize,
    /// Stacked layers.
    pub hidden_layer_depth: usize,
    /// Latent dimension.
    pub latent_length: usize,
    /// Dropout between encoder layers during training.
    pub dropout: f32,
}

/// Outputs of a training forward pass.
#[derive(Debug)]
pub struct Forward {
    /// Latent mean `[B, L]`.
    pub mean: Tensor,
    /// Latent log-variance `[B, L]`.
    pub logvar: Tensor,
    /// Reconstruction `[T, B, F]`.
    pub recon: Tensor,
}

/// A bound VRAE (weights shared with its [`ParamStore`], so optimiser steps are seen here).
#[derive(Debug, Clone)]
pub struct Vrae {
    cfg: ModelConfig,
    encoder: Rnn,
    to_mean: Linear,
    /// `None` for an encoder imported from ONNX (`trainer import`): it embeds, it cannot train
    /// or decode.
    rest: Option<DecoderSide>,
}

/// The parts of a VRAE that only training and decoding use.
#[derive(Debug, Clone)]
struct DecoderSide {
    decoder: Rnn,
    to_logvar: Linear,
    latent_to_hidden: Linear,
    to_output: Linear,
}

/// `y = x W^T + b`; `w` is the variable's own tensor (see the note on `rnn::Layer`).
#[derive(Debug, Clone)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn bind(store: &ParamStore, name: &str, out: usize, inp: usize, origin: &Path) -> Result<Self> {
        Ok(Linear { w: store.get(&format!("{name}.weight"), &[out, inp], origin)?, b: store.get(&format!("{name}.bias"), &[out], origin)? })
    }

    /// Xavier-uniform weight (as the seed initialises every linear layer), PyTorch's default bias
    /// `U(-1/sqrt(in), 1/sqrt(in))`.
    fn init(store: &mut ParamStore, name: &str, out: usize, inp: usize, rng: &mut ChaCha8Rng, dev: &Device) -> Result<()> {
        store.xavier(&format!("{name}.weight"), out, inp, rng, dev)?;
        store.uniform(&format!("{name}.bias"), &[out], 1.0 / (inp as f64).sqrt(), rng, dev)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
    }
}

impl Vrae {
    /// Fresh, seeded weights for `cfg`.
    pub fn init(cfg: &ModelConfig, rng: &mut ChaCha8Rng, dev: &Device) -> Result<ParamStore> {
        let mut s = ParamStore::default();
        let (h, l, f, d) = (cfg.hidden_size, cfg.latent_length, cfg.n_features, cfg.hidden_layer_depth);
        Rnn::init(&mut s, "encoder", StackShape { kind: cfg.cell, input: Some(f), hidden: h, depth: d }, rng, dev)?;
        Linear::init(&mut s, "hidden_to_mean", l, h, rng, dev)?;
        Linear::init(&mut s, "hidden_to_logvar", l, h, rng, dev)?;
        Linear::init(&mut s, "latent_to_hidden", h, l, rng, dev)?;
        Rnn::init(&mut s, "decoder", StackShape { kind: cfg.cell, input: None, hidden: h, depth: d }, rng, dev)?;
        Linear::init(&mut s, "hidden_to_output", f, h, rng, dev)?;
        Ok(s)
    }

    /// Binds `store` to the architecture `cfg`; `origin` names the weights file in errors.
    pub fn bind(cfg: &ModelConfig, store: &ParamStore, origin: &Path) -> Result<Self> {
        let (h, l, f, d) = (cfg.hidden_size, cfg.latent_length, cfg.n_features, cfg.hidden_layer_depth);
        let mut v = Self::bind_encoder(cfg, store, origin)?;
        v.rest = Some(DecoderSide {
            to_logvar: Linear::bind(store, "hidden_to_logvar", l, h, origin)?,
            latent_to_hidden: Linear::bind(store, "latent_to_hidden", h, l, origin)?,
            decoder: Rnn::bind(store, "decoder", StackShape { kind: cfg.cell, input: None, hidden: h, depth: d }, origin)?,
            to_output: Linear::bind(store, "hidden_to_output", f, h, origin)?,
        });
        Ok(v)
    }

    /// Binds only the encoder and the latent-mean head (what an imported ONNX encoder has).
    pub fn bind_encoder(cfg: &ModelConfig, store: &ParamStore, origin: &Path) -> Result<Self> {
        let (h, l, f, d) = (cfg.hidden_size, cfg.latent_length, cfg.n_features, cfg.hidden_layer_depth);
        Ok(Vrae {
            cfg: *cfg,
            encoder: Rnn::bind(store, "encoder", StackShape { kind: cfg.cell, input: Some(f), hidden: h, depth: d }, origin)?,
            to_mean: Linear::bind(store, "hidden_to_mean", l, h, origin)?,
            rest: None,
        })
    }

    /// True when the decoder is there (a model `trainer fit` trained).
    pub fn has_decoder(&self) -> bool {
        self.rest.is_some()
    }

    fn rest(&self) -> Result<&DecoderSide> {
        self.rest
            .as_ref()
            .ok_or_else(|| Error::Mismatch("this model is an imported encoder: it has no decoder to decode or train with".into()))
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Final top-layer hidden state of the encoder for `x` `[T, B, F]` (each row's at its own
    /// last step when `lengths` are given); `rng` enables dropout.
    fn encode_hidden(&self, x: &Tensor, lengths: Option<&[usize]>, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (t, b, _) = x.dims3()?;
        let h = self.cfg.hidden_size;
        let h0 = vec![Tensor::zeros((b, h), x.dtype(), x.device())?; self.encoder.depth()];
        let p = self.cfg.dropout;
        Ok(match rng {
            Some(rng) if p > 0.0 => self.encoder.forward(Some(x), t, &h0, |h| dropout(h, p, rng), Output::Last, lengths)?,
            _ => self.encoder.forward(Some(x), t, &h0, |h| Ok(h.clone()), Output::Last, lengths)?,
        })
    }

    /// Latent means `[B, L]` for `x` `[T, B, F]` (inference: no dropout, no sampling); with
    /// `lengths`, row `b` is a series of `lengths[b]` steps padded to `T`.
    pub fn encode_mean(&self, x: &Tensor, lengths: Option<&[usize]>) -> Result<Tensor> {
        self.to_mean.forward(&self.encode_hidden(x, lengths, None)?)
    }

    /// Latent means `[B, L]` with dropout from `rng` (a training view for the contrastive term).
    pub fn encode_mean_train(&self, x: &Tensor, lengths: Option<&[usize]>, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        self.to_mean.forward(&self.encode_hidden(x, lengths, Some(rng))?)
    }

    /// Decodes latents `z` `[B, L]` into `[T, B, F]` for `steps` time steps.
    pub fn decode(&self, z: &Tensor, steps: usize) -> Result<Tensor> {
        let b = z.dim(0)?;
        let rest = self.rest()?;
        let h0 = vec![rest.latent_to_hidden.forward(z)?; rest.decoder.depth()];
        // All steps' rows at once: one matmul for all steps instead of one per step.
        let hs = rest.decoder.forward(None, steps, &h0, |h| Ok(h.clone()), Output::Flat, None)?;
        Ok(rest.to_output.forward(&hs)?.reshape((steps, b, self.cfg.n_features))?)
    }

    /// Runs the recurrent layers op by op instead of with the fused CPU kernels (for tests).
    pub fn set_reference_kernels(&mut self, yes: bool) {
        self.encoder.set_reference(yes);
        if let Some(rest) = &mut self.rest {
            rest.decoder.set_reference(yes);
        }
    }

    /// Training pass: dropout and the reparameterisation sample both come from `rng`. With
    /// `lengths` the latent is each row's at its own last step and the reconstruction runs all
    /// `T` steps; the loss masks the padding ([`super::loss::vrae_loss`]).
    pub fn forward_train(&self, x: &Tensor, lengths: Option<&[usize]>, rng: &mut ChaCha8Rng) -> Result<Forward> {
        let (t, b, _) = x.dims3()?;
        let h = self.encode_hidden(x, lengths, Some(rng))?;
        let mean = self.to_mean.forward(&h)?;
        let logvar = self.rest()?.to_logvar.forward(&h)?;
        let l = self.cfg.latent_length;
        let eps = Tensor::from_vec(standard_normal(rng, b * l), (b, l), x.device())?.to_dtype(x.dtype())?;
        let z = (&mean + ((&logvar * 0.5)?.exp()? * eps)?)?;
        let recon = self.decode(&z, t)?;
        Ok(Forward { mean, logvar, recon })
    }
}

/// Inverted dropout with a mask from our seeded RNG: kept units are scaled by `1 / (1 - p)`.
fn dropout(h: &Tensor, p: f32, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..h.elem_count()).map(|_| if rng.gen::<f32>() < p { 0.0 } else { scale }).collect();
    Ok((h * Tensor::from_vec(mask, h.shape(), h.device())?.to_dtype(h.dtype())?)?)
}

/// `n` draws from N(0, 1) (Box-Muller), from our seeded RNG.
pub fn standard_normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1], keeps ln finite
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.truncate(n);
    out
}
