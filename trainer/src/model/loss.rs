//! The VRAE loss: reconstruction plus KL divergence of `N(mean, exp(logvar))` from `N(0, I)`.
//!
//! `KL = -0.5 * Σ (1 + logvar - mean² - exp(logvar))`; the scaling of both terms is described on
//! [`LossScaling`]. Beside it, an optional contrastive term on the encoder ([`contrastive_loss`]).

use candle_core::{Device, Tensor};

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

/// Which steps of a padded `[T, B, ·]` batch of unequal series are real: `mask` is `[T, B, 1]`,
/// 1 at step `t` of row `b` when `t < lengths[b]`, else 0.
#[derive(Debug, Clone)]
pub struct StepMask {
    /// The 0/1 mask `[T, B, 1]` (f32, broadcast over features).
    pub mask: Tensor,
    /// Real steps in the batch, `Σ_b lengths[b]`.
    pub steps: usize,
}

impl StepMask {
    /// The mask of rows of `lengths` steps padded to `t`.
    pub fn new(lengths: &[usize], t: usize, dev: &Device) -> Result<Self> {
        let b = lengths.len();
        let m: Vec<f32> = (0..t * b).map(|i| f32::from(u8::from(i / b < lengths[i % b]))).collect();
        Ok(StepMask { mask: Tensor::from_vec(m, (t, b, 1), dev)?, steps: lengths.iter().map(|&n| n.min(t)).sum() })
    }
}

/// Per-element terms `r` `[T, B, F]` with the padding steps of `mask` zeroed, and how many
/// elements are real (all of them without a mask): what a mean over real steps divides by.
pub fn real_steps(r: &Tensor, mask: Option<&StepMask>) -> Result<(Tensor, usize)> {
    Ok(match mask {
        Some(m) => (r.broadcast_mul(&m.mask.to_dtype(r.dtype())?)?, m.steps * r.dim(2)?),
        None => (r.clone(), r.elem_count()),
    })
}

/// Computes the loss of a reconstruction `recon` of `x` (both `[T, B, F]`). With `mask`, padding
/// steps contribute nothing to the loss or its gradients, and [`LossScaling::Mean`] averages over
/// the real steps only.
#[allow(clippy::too_many_arguments)]
pub fn vrae_loss(
    x: &Tensor,
    recon: &Tensor,
    mask: Option<&StepMask>,
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
    let (r, n) = real_steps(&r, mask)?;
    let n = n as f64;
    let k = ((logvar + 1.0)? - mean.sqr()? - logvar.exp()?)?;
    let (recon, kl) = match scaling {
        LossScaling::Seed => (r.sum_all()?, (k.mean_all()? * (-0.5 * kl_weight))?),
        LossScaling::Mean => ((r.sum_all()? / n)?, (k.sum_all()? * (-0.5 * kl_weight / n))?),
    };
    Ok(LossParts { total: (&recon + &kl)?, recon, kl })
}

/// Symmetric InfoNCE between two views of the same `B` series (`[B, L]` latent means): row `i` of
/// `anchor` and row `i` of `positive` come from one series, every other row is a negative.
///
/// With `a`, `p` the rows scaled to unit length and `S = a pᵀ / τ`:
/// `loss = ½ mean_i (logsumexp_j S_ij - S_ii) + ½ mean_j (logsumexp_i S_ij - S_jj)`.
/// Reconstruction alone rewards encoding the shape every series shares; this term asks the latent
/// to tell series apart and to keep a series' crop near the series (T-Loss, SimCLR), with the
/// same recurrent encoder, so the device's streaming state is unchanged.
pub fn contrastive_loss(anchor: &Tensor, positive: &Tensor, temperature: f64) -> Result<Tensor> {
    let unit = |t: &Tensor| -> Result<Tensor> {
        let n = (t.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        Ok(t.broadcast_div(&n)?)
    };
    let (a, p) = (unit(anchor)?, unit(positive)?);
    let s = (a.matmul(&p.t()?)? / temperature)?;
    let diag = (&a * &p)?.sum(1)? / temperature;
    let diag = diag?;
    let rows = (s.log_sum_exp(1)? - &diag)?.mean_all()?;
    let cols = (s.log_sum_exp(0)? - &diag)?.mean_all()?;
    Ok(((rows + cols)? * 0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn contrastive_loss_rewards_matching_views() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], &dev).unwrap();
        let near = Tensor::new(&[[0.9f32, 0.1, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]], &dev).unwrap();
        let swapped = Tensor::new(&[[0.0f32, 0.9, 0.1], [0.1, 0.0, 0.9], [0.9, 0.1, 0.0]], &dev).unwrap();
        let good = contrastive_loss(&a, &near, 0.2).unwrap().to_scalar::<f32>().unwrap();
        let bad = contrastive_loss(&a, &swapped, 0.2).unwrap().to_scalar::<f32>().unwrap();
        // By hand: S_ii = cos / 0.2 ≈ 4.94, S_ij ≈ 0.55 or 0; loss ≈ log(e^4.94 + e^0.55 + 1) - 4.94.
        let cos = 0.9 / (0.82f32).sqrt();
        let other = 0.1 / (0.82f32).sqrt();
        let want = ((cos / 0.2).exp() + (other / 0.2).exp() + 1.0).ln() - cos / 0.2;
        assert!((good - want).abs() < 1e-4, "{good} vs {want}");
        assert!(bad > good + 3.0, "mismatched views {bad} vs matched {good}");
        // One row: nothing to tell apart, the term is zero.
        let one = contrastive_loss(&a.narrow(0, 0, 1).unwrap(), &near.narrow(0, 0, 1).unwrap(), 0.2).unwrap();
        assert!(one.to_scalar::<f32>().unwrap().abs() < 1e-6);
    }
}
