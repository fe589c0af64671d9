//! Hyper-parameters: one struct with documented defaults, validated into [`VraeValidParams`]
//! before anything trains (the linfa `*Params` / `*ValidParams` split).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flags::{flag_name, params_with_flags};

/// Recurrent block used by the encoder and the decoder: the runtime's, so a model's cell has
/// one name from training to the device.
pub use runtime::bundle::Cell;

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam (beta1 0.9, beta2 0.999, eps 1e-8, no weight decay).
    Adam,
    /// Plain stochastic gradient descent.
    Sgd,
}

/// Element-wise reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReconLoss {
    /// Squared error `(x - x')^2`.
    Mse,
    /// Huber with beta 1: `0.5 d^2` for `|d| < 1`, else `|d| - 0.5`.
    SmoothL1,
}

/// How the reconstruction and KL terms are scaled into one loss.
///
/// With `r` the element-wise reconstruction loss over batch `B`, time `T`, features `F` and
/// `k = 1 + logvar - mean^2 - exp(logvar)` over batch and latent `L`:
/// * `seed`: `sum(r) + kl_weight * (-0.5 * mean(k))` — the seed code's scaling: the KL term is
///   divided by `B*L` while the reconstruction is summed, so KL weighs almost nothing.
/// * `mean`: `(sum(r) + kl_weight * (-0.5 * sum(k))) / (B*T*F)` — the negative ELBO per element
///   (for `kl_weight` 1), so the loss does not scale with batch size or series length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossScaling {
    /// The seed code's scaling (sum reconstruction, mean KL).
    Seed,
    /// Per-element negative ELBO.
    Mean,
}

/// Named starting points for the hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Our defaults (see [`VraeParams::default`]).
    Default,
    /// The seed notebook's settings and loss scaling, for comparison.
    Seed,
}

params_with_flags! {
    /// VRAE hyper-parameters. Every field has a `trainer fit` flag of the same name
    /// ([`VraeFlags`]); a field missing from a record written before it existed reads as the
    /// seed preset's value (what such a run trained with).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default = "VraeParams::seed")]
    pub struct VraeParams;
    /// One flag per field of [`VraeParams`]; unset flags keep the preset's value.
    pub struct VraeFlags;
    {
        /// Recurrent cell of encoder and decoder [default gru, seed lstm].
        cell: Cell,
        /// Hidden units per recurrent layer [90].
        hidden_size: usize,
        /// Stacked recurrent layers in encoder and decoder, at least 1 [1].
        hidden_layer_depth: usize,
        /// Latent dimension [20].
        latent_length: usize,
        /// Series per training batch (the last, partial batch is used too) [32].
        batch_size: usize,
        /// Optimiser learning rate [default 2e-3, seed 5e-4].
        learning_rate: f64,
        /// Training epochs: fixes the count and turns early stopping off [default: stop on
        /// convergence, at most 300; seed: 40]. On --resume: the new upper bound.
        epochs: usize,
        /// Stop on convergence (true/false) [default true, seed false]: train on all but a seeded
        /// `validation` share of the training part, stop when the validation reconstruction loss
        /// has not improved for `patience` epochs (after at least `min_steps` optimiser steps) or
        /// the `step_budget` is spent, and keep the weights of the best epoch. Off: exactly
        /// `epochs` epochs on all training series.
        early_stopping: bool,
        /// Share of the training part held out for the stopping rule, in (0, 0.5] [0.1].
        validation: f64,
        /// Epochs without a validation improvement before stopping [10].
        patience: usize,
        /// Optimiser steps before the stopping rule may stop (small sets train enough) [600].
        min_steps: usize,
        /// Most time steps of training series to process, in millions (rows x length x epochs)
        /// [10]: the bound that keeps large sets affordable (ECG5000's seed protocol: 4050 rows x
        /// 140 steps, 17 epochs at 10).
        step_budget: f64,
        /// Dropout between stacked encoder layers (no effect with depth 1), in [0, 1) [0.2].
        dropout: f32,
        /// Optimiser [adam].
        optimizer: OptimizerKind,
        /// Maximum global gradient L2 norm, 0 = off [5].
        clip_norm: f64,
        /// Reconstruction loss [mse].
        loss: ReconLoss,
        /// Scaling of the loss terms [default mean, seed seed].
        loss_scaling: LossScaling,
        /// Weight of the KL term after annealing [default 0.1, seed 1].
        kl_weight: f64,
        /// Epochs over which the KL weight ramps linearly from 0 (0: no annealing) [default 5,
        /// seed 0].
        kl_anneal_epochs: usize,
        /// Weight of the contrastive term on the encoder, 0 = off [default 1, seed 0]: each
        /// batch's series and a random crop of each are encoded, and the crop must be nearer its
        /// own series than the batch's other series (`model::loss::contrastive_loss`).
        contrastive_weight: f64,
        /// Temperature of the contrastive softmax over cosine similarities, > 0 [0.2].
        contrastive_temperature: f64,
        /// Shortest contrastive crop as a share of the series length, in (0, 1] [0.5]; each batch
        /// draws one crop length uniformly between it and the whole series, and an offset per
        /// series.
        contrastive_crop: f64,
        /// Seed of every random choice: initialisation, split, shuffling, dropout, sampling,
        /// k-means [0].
        seed: u64,
    }
}

/// Flags a resumed run may change (the rest would make it a different run).
const CHANGE_ON_RESUME: [&str; 3] = ["epochs", "learning_rate", "clip_norm"];

impl VraeFlags {
    /// A fresh run: `--epochs N` alone fixes the epoch count (early stopping off unless asked).
    pub fn apply_fresh(&self, p: VraeParams) -> VraeParams {
        let mut p = self.apply(p);
        if self.epochs.is_some() && self.early_stopping.is_none() {
            p.early_stopping = false;
        }
        p
    }

    /// The flags given that a resumed run may not change, as `--flag-name`.
    pub fn fixed_on_resume(&self) -> Vec<String> {
        self.given().into_iter().filter(|f| !CHANGE_ON_RESUME.contains(f)).map(flag_name).collect()
    }
}

impl Default for VraeParams {
    /// Our defaults: the seed architecture with a GRU, a per-element loss, a light KL weight and
    /// a faster learning rate (measured on ECG5000 over three seeds, see README "Results"), and
    /// the contrastive term at weight 1: beside the window summary's spectrum and step
    /// distribution it lifted the dev suite's mean NMI over three seeds (0.688 -> 0.694) and
    /// ECG5000's seed protocol (held-out NMI 0.621 -> 0.667), for about half again the epoch time
    /// (README "Clustering quality").
    fn default() -> Self {
        VraeParams {
            cell: Cell::Gru,
            contrastive_weight: 1.0,
            loss_scaling: LossScaling::Mean,
            kl_weight: 0.1,
            kl_anneal_epochs: 5,
            learning_rate: 2e-3,
            epochs: 300,
            early_stopping: true,
            ..Self::seed()
        }
    }
}

impl VraeParams {
    /// The seed notebook: hidden 90, depth 1, latent 20, batch 32, lr 5e-4, 40 epochs,
    /// dropout 0.2, Adam, clip 5, LSTM, MSE with the seed's loss scaling.
    pub fn seed() -> Self {
        VraeParams {
            cell: Cell::Lstm,
            hidden_size: 90,
            hidden_layer_depth: 1,
            latent_length: 20,
            batch_size: 32,
            learning_rate: 5e-4,
            epochs: 40,
            early_stopping: false,
            validation: 0.1,
            patience: 10,
            min_steps: 600,
            step_budget: 10.0,
            dropout: 0.2,
            optimizer: OptimizerKind::Adam,
            clip_norm: 5.0,
            loss: ReconLoss::Mse,
            loss_scaling: LossScaling::Seed,
            kl_weight: 1.0,
            kl_anneal_epochs: 0,
            contrastive_weight: 0.0,
            contrastive_temperature: 0.2,
            contrastive_crop: 0.5,
            seed: 0,
        }
    }

    /// The parameters of a preset.
    pub fn preset(p: Preset) -> Self {
        match p {
            Preset::Default => Self::default(),
            Preset::Seed => Self::seed(),
        }
    }

    /// Checks every range; the only way to obtain [`VraeValidParams`].
    pub fn check(self) -> Result<VraeValidParams> {
        let bad = |m: String| Err(Error::Param(m));
        if self.hidden_size == 0 {
            return bad("hidden_size must be >= 1".into());
        }
        if self.hidden_layer_depth == 0 {
            return bad("hidden_layer_depth must be >= 1".into());
        }
        if self.latent_length == 0 {
            return bad("latent_length must be >= 1".into());
        }
        // Checked before training: the runtime (the one inference path) holds no more.
        use runtime::batch::{HOST_MAX_HIDDEN, HOST_MAX_LATENT, HOST_MAX_LAYERS};
        for (what, v, max) in [
            ("hidden_size", self.hidden_size, HOST_MAX_HIDDEN),
            ("hidden_layer_depth", self.hidden_layer_depth, HOST_MAX_LAYERS),
            ("latent_length", self.latent_length, HOST_MAX_LATENT),
        ] {
            if v > max {
                return bad(format!("{what} = {v} is more than the runtime holds ({max})"));
            }
        }
        if self.batch_size == 0 {
            return bad("batch_size must be >= 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!("learning_rate must be a positive number, got {}", self.learning_rate));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return bad(format!("clip_norm must be >= 0 (0 disables), got {}", self.clip_norm));
        }
        if !(self.kl_weight.is_finite() && self.kl_weight >= 0.0) {
            return bad(format!("kl_weight must be >= 0, got {}", self.kl_weight));
        }
        if !(self.validation > 0.0 && self.validation <= 0.5) {
            return bad(format!("validation must be in (0, 0.5], got {}", self.validation));
        }
        if !(self.step_budget.is_finite() && self.step_budget > 0.0) {
            return bad(format!("step_budget must be a positive number of million steps, got {}", self.step_budget));
        }
        if !(self.contrastive_weight.is_finite() && self.contrastive_weight >= 0.0) {
            return bad(format!("contrastive_weight must be >= 0 (0 disables), got {}", self.contrastive_weight));
        }
        if !(self.contrastive_temperature.is_finite() && self.contrastive_temperature > 0.0) {
            return bad(format!("contrastive_temperature must be > 0, got {}", self.contrastive_temperature));
        }
        if !(self.contrastive_crop > 0.0 && self.contrastive_crop <= 1.0) {
            return bad(format!("contrastive_crop must be in (0, 1], got {}", self.contrastive_crop));
        }
        if self.patience == 0 {
            return bad("patience must be >= 1".into());
        }
        Ok(VraeValidParams(self))
    }
}

/// Hyper-parameters that passed [`VraeParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct VraeValidParams(VraeParams);

impl std::ops::Deref for VraeValidParams {
    type Target = VraeParams;
    fn deref(&self) -> &VraeParams {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_seed_matches_notebook() {
        assert!(VraeParams::default().check().is_ok());
        let s = VraeParams::seed();
        assert_eq!((s.hidden_size, s.hidden_layer_depth, s.latent_length, s.batch_size, s.epochs), (90, 1, 20, 32, 40));
        assert_eq!((s.learning_rate, s.dropout, s.clip_norm), (5e-4, 0.2, 5.0));
    }

    #[test]
    fn rejects_out_of_range() {
        for p in [
            VraeParams { hidden_size: 0, ..Default::default() },
            VraeParams { hidden_layer_depth: 0, ..Default::default() },
            VraeParams { dropout: 1.0, ..Default::default() },
            VraeParams { learning_rate: f64::NAN, ..Default::default() },
            VraeParams { clip_norm: -1.0, ..Default::default() },
            VraeParams { batch_size: 0, ..Default::default() },
            VraeParams { contrastive_weight: -1.0, ..Default::default() },
            VraeParams { contrastive_temperature: 0.0, ..Default::default() },
            VraeParams { contrastive_crop: 1.5, ..Default::default() },
        ] {
            assert!(matches!(p.check(), Err(Error::Param(_))));
        }
    }
}
