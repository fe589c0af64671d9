//! The VRAE loss: reconstruction plus KL divergence of `N(mean, exp(logvar))` from `N(0, I)`.
//!
//! `KL = -0.5 * Σ (1 + logvar - mean² - exp(logvar))`; the scaling of both terms is described on
//! [`LossScaling`].

use candle_core::Tensor;

use crate::error::Result;
use crate::params::{LossScaling, ReconLoss};

/// The loss and its two weighted parts (all scalars).
#[derive(Debug)]
pub struct LossParts {
    /// `recon + kl`, the optimised objective.
    pub total: Tensor,
    /// Reconstruction term as it enters `total`.
    pub recon: Tensor,
    /// KL term as it enters `total` (after `kl_weight`).
    pub kl: Tensor,
}

/// Computes the loss of a reconstruction `recon` of `x` (both `[T, B, F]`).
pub fn vrae_loss(
    x: &Tensor,
    recon: &Tensor,
    mean: &Tensor,
    logvar: &Tensor,
    kind: ReconLoss,
    scaling: LossScaling,
    kl_weight: f64,
) -> Result<LossParts> {
    let d = (recon - x)?;
    let r = match kind {
        ReconLoss::Mse => d.sqr()?,
        ReconLoss::SmoothL1 => {
            // Huber(beta=1) = 0.5 m² + (|d| - m) with m = min(|d|, 1).
            let a = d.abs()?;
            let m = a.clamp(0f32, 1f32)?;
            ((m.sqr()? * 0.5)? + (a - m)?)?
        }
    };
    let k = ((logvar + 1.0)? - mean.sqr()? - logvar.exp()?)?;
    let (recon, kl) = match scaling {
        LossScaling::Seed => (r.sum_all()?, (k.mean_all()? * (-0.5 * kl_weight))?),
        LossScaling::Mean => {
            let n = r.elem_count() as f64;
            ((r.sum_all()? / n)?, (k.sum_all()? * (-0.5 * kl_weight / n))?)
        }
    };
    Ok(LossParts { total: (&recon + &kl)?, recon, kl })
}
