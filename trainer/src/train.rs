//! The training loop: shuffled mini-batches (the last partial batch included), Adam or SGD,
//! global gradient-norm clipping, KL annealing, a progress bar, and a per-epoch log.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, SGD};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Series;
use crate::error::{Error, Result};
use crate::model::loss::vrae_loss;
use crate::model::{ModelConfig, ParamStore, Vrae};
use crate::params::{OptimizerKind, VraeValidParams};

/// Mean losses of one epoch (averaged over its batches) and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean total loss.
    pub loss: f64,
    /// Mean reconstruction term.
    pub recon: f64,
    /// Mean KL term (weighted).
    pub kl: f64,
    /// KL weight used this epoch (after annealing).
    pub kl_weight: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Packs series (all of length `t`) into a `[T, B, F]` tensor.
pub fn batch_tensor(series: &[&Series], t: usize, nf: usize, dev: &Device) -> Result<Tensor> {
    let b = series.len();
    let mut data = vec![0f32; t * b * nf];
    for (j, s) in series.iter().enumerate() {
        for step in 0..t {
            let src = &s.values[step * nf..(step + 1) * nf];
            data[(step * b + j) * nf..(step * b + j + 1) * nf].copy_from_slice(src);
        }
    }
    Ok(Tensor::from_vec(data, (t, b, nf), dev)?)
}

enum Opt {
    Adam(AdamW),
    Sgd(SGD),
}

impl Opt {
    fn new(kind: OptimizerKind, vars: Vec<Var>, lr: f64) -> Result<Self> {
        Ok(match kind {
            OptimizerKind::Adam => {
                let p = ParamsAdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
                Opt::Adam(AdamW::new(vars, p)?)
            }
            OptimizerKind::Sgd => Opt::Sgd(SGD::new(vars, lr)?),
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Opt::Adam(o) => o.step(grads)?,
            Opt::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when that is below 1). Returns the norm
/// before clipping.
pub fn clip_grad_norm(vars: &[Var], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for v in vars {
                if let Some(g) = grads.remove(v) {
                    grads.insert(v, (g * coef)?);
                }
            }
        }
    }
    Ok(norm)
}

/// KL weight at 0-based `epoch`: linear warm-up over `anneal` epochs, then `weight`.
pub fn kl_weight_at(weight: f64, anneal: usize, epoch: usize) -> f64 {
    if anneal == 0 {
        weight
    } else {
        weight * ((epoch + 1) as f64 / anneal as f64).min(1.0)
    }
}

/// Trains a fresh model on `train` (all of length `cfg.seq_len`) and returns its weights and log.
pub fn train(
    params: &VraeValidParams,
    cfg: &ModelConfig,
    train: &[Series],
    dev: &Device,
    show_progress: bool,
) -> Result<(ParamStore, Vec<EpochLog>)> {
    if train.is_empty() {
        return Err(Error::Training("no training series".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let store = Vrae::init(cfg, &mut rng, dev)?;
    let model = Vrae::bind(cfg, &store, std::path::Path::new("<new model>"))?;
    let vars = store.vars();
    let mut opt = Opt::new(params.optimizer, vars.clone(), params.learning_rate)?;

    let n_batches = train.len().div_ceil(params.batch_size);
    let pb = if show_progress { ProgressBar::new((params.epochs * n_batches) as u64) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} batches  {msg}  ETA {eta}")
            .map_err(|e| Error::Training(e.to_string()))?,
    );
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut log = Vec::with_capacity(params.epochs);
    for epoch in 0..params.epochs {
        let start = Instant::now();
        let klw = kl_weight_at(params.kl_weight, params.kl_anneal_epochs, epoch);
        order.shuffle(&mut rng);
        let (mut sl, mut sr, mut sk) = (0f64, 0f64, 0f64);
        for (bi, chunk) in order.chunks(params.batch_size).enumerate() {
            let batch: Vec<&Series> = chunk.iter().map(|&i| &train[i]).collect();
            let x = batch_tensor(&batch, cfg.seq_len, cfg.n_features, dev)?;
            let fw = model.forward_train(&x, &mut rng)?;
            let parts = vrae_loss(&x, &fw.recon, &fw.mean, &fw.logvar, params.loss, params.loss_scaling, klw)?;
            let loss = parts.total.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                pb.abandon();
                return Err(Error::Training(format!(
                    "loss became {loss} at epoch {} batch {}; lower --learning-rate or set --clip-norm",
                    epoch + 1,
                    bi + 1
                )));
            }
            let mut grads = parts.total.backward()?;
            clip_grad_norm(&vars, &mut grads, params.clip_norm)?;
            opt.step(&grads)?;
            sl += loss;
            sr += parts.recon.to_scalar::<f32>()? as f64;
            sk += parts.kl.to_scalar::<f32>()? as f64;
            let done = (bi + 1) as f64;
            pb.set_message(format!(
                "epoch {}/{}  loss {:.4}  recon {:.4}  KL {:.4}",
                epoch + 1,
                params.epochs,
                sl / done,
                sr / done,
                sk / done
            ));
            pb.inc(1);
        }
        let nb = n_batches as f64;
        let e = EpochLog {
            epoch: epoch + 1,
            loss: sl / nb,
            recon: sr / nb,
            kl: sk / nb,
            kl_weight: klw,
            seconds: start.elapsed().as_secs_f64(),
        };
        let line = format!(
            "epoch {:>3}/{}  loss {:.5}  recon {:.5}  KL {:.5}  ({:.1} s)",
            e.epoch, params.epochs, e.loss, e.recon, e.kl, e.seconds
        );
        if show_progress {
            if pb.is_hidden() {
                eprintln!("{line}");
            } else {
                pb.println(line);
            }
        }
        log.push(e);
    }
    pb.finish_and_clear();
    Ok((store, log))
}
