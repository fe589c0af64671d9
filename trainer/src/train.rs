//! The training loop: shuffled mini-batches (the last partial batch included), Adam or SGD,
//! global gradient-norm clipping, KL annealing, a progress bar, and a per-epoch log.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, RngState, TrainState};
use crate::data::Series;
use crate::error::{Error, Result};
use crate::fault;
use crate::model::loss::vrae_loss;
use crate::model::{ModelConfig, ParamStore, Vrae};
use crate::optim::Optimizer;
use crate::params::VraeValidParams;

/// Makes candle's element-wise worker threads sleep as soon as an op ends (unless
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` is already set). By default they spin for 25,000 pauses after
/// every parallel candle op, on the same cores the fused RNN kernels then want: ~5% of a
/// two-thread LSTM training step on a two-core machine. Call it at program start, before any
/// other thread exists (it sets an environment variable, which is not safe alongside threads
/// that read the environment).
pub fn park_idle_candle_workers() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

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

/// What a completed epoch hands to the caller, e.g. to write a checkpoint.
pub struct EpochEnd<'a> {
    /// Current weights.
    pub weights: &'a ParamStore,
    /// Current optimiser (moments and step).
    pub optimizer: &'a Optimizer,
    /// Progress, RNG position and log, enough to continue exactly from here.
    pub state: TrainState,
}

/// Trains a fresh model on `train` (all of length `cfg.seq_len`) and returns its weights and log.
pub fn train(
    params: &VraeValidParams,
    cfg: &ModelConfig,
    train: &[Series],
    dev: &Device,
    show_progress: bool,
) -> Result<(ParamStore, Vec<EpochLog>)> {
    train_resumable(params, cfg, train, dev, show_progress, None, &mut |_| Ok(()))
}

fn diverged(epoch: usize, batch: usize, what: &'static str, value: f64) -> Error {
    Error::Diverged { epoch: epoch + 1, batch: batch + 1, what, value }
}

/// Stops glibc from handing the multi-megabyte buffers of each batch (gate caches, gradients)
/// back to the kernel when they are freed: with its default, adaptive thresholds they were
/// unmapped or trimmed and page-faulted back in on the next batch, which cost 10-20% of a
/// training step in kernel time. Memory stays with the process, bounded by one batch's working
/// set.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tunables; 32 MiB is glibc's largest mmap
            // threshold on 64-bit, and a refused value leaves the default in place.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}

/// Trains from scratch, or from `resume` (a checkpoint of the same settings and data), calling
/// `on_epoch` after every completed epoch. A run resumed from epoch k ends with the same weights
/// as an uninterrupted one: weights, optimiser moments, RNG position and shuffle order are all
/// restored. A non-finite loss or gradient norm stops with [`Error::Diverged`] before the step
/// that would poison the weights.
pub fn train_resumable(
    params: &VraeValidParams,
    cfg: &ModelConfig,
    train: &[Series],
    dev: &Device,
    show_progress: bool,
    resume: Option<Checkpoint>,
    on_epoch: &mut dyn FnMut(EpochEnd<'_>) -> Result<()>,
) -> Result<(ParamStore, Vec<EpochLog>)> {
    if train.is_empty() {
        return Err(Error::Training("no training series".into()));
    }
    keep_freed_memory();
    let (store, mut rng, mut order, mut log, mut opt) = match resume {
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            let store = Vrae::init(cfg, &mut rng, dev)?;
            let opt = Optimizer::new(params.optimizer, params.learning_rate, named(&store))?;
            (store, rng, (0..train.len()).collect::<Vec<usize>>(), Vec::with_capacity(params.epochs), opt)
        }
        Some(ck) => {
            let st = ck.meta.state;
            if st.order.len() != train.len() {
                return Err(Error::Training(format!(
                    "checkpoint was taken with {} training series, this run has {}",
                    st.order.len(),
                    train.len()
                )));
            }
            let mut opt = Optimizer::new(params.optimizer, params.learning_rate, named(&ck.weights))?;
            opt.restore(st.optimizer_steps, &ck.optimizer)?;
            (ck.weights, st.rng.restore()?, st.order, st.log, opt)
        }
    };
    let model = Vrae::bind(cfg, &store, std::path::Path::new("<checkpoint>"))?;
    let vars = store.vars();
    let first_epoch = log.len();

    let n_batches = train.len().div_ceil(params.batch_size);
    let pb = if show_progress { ProgressBar::new((params.epochs * n_batches) as u64) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} batches  {msg}  ETA {eta}")
            .map_err(|e| Error::Training(e.to_string()))?,
    );
    pb.set_position((first_epoch.min(params.epochs) * n_batches) as u64);
    pb.reset_eta();
    for epoch in first_epoch..params.epochs {
        let start = Instant::now();
        let klw = kl_weight_at(params.kl_weight, params.kl_anneal_epochs, epoch);
        order.shuffle(&mut rng);
        let (mut sl, mut sr, mut sk) = (0f64, 0f64, 0f64);
        for (bi, chunk) in order.chunks(params.batch_size).enumerate() {
            let batch: Vec<&Series> = chunk.iter().map(|&i| &train[i]).collect();
            let x = batch_tensor(&batch, cfg.seq_len, cfg.n_features, dev)?;
            let fw = model.forward_train(&x, &mut rng)?;
            let parts = vrae_loss(&x, &fw.recon, &fw.mean, &fw.logvar, params.loss, params.loss_scaling, klw)?;
            let mut loss = parts.total.to_scalar::<f32>()? as f64;
            if fault::nan_loss_at(epoch + 1) {
                loss = f64::NAN;
            }
            if !loss.is_finite() {
                pb.abandon();
                return Err(diverged(epoch, bi, "loss", loss));
            }
            let mut grads = parts.total.backward()?;
            let norm = clip_grad_norm(&vars, &mut grads, params.clip_norm)?;
            if !norm.is_finite() {
                pb.abandon();
                return Err(diverged(epoch, bi, "gradient norm", norm));
            }
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
        let state = TrainState {
            epochs_done: epoch + 1,
            optimizer_steps: opt.steps(),
            rng: RngState::capture(&rng),
            order: order.clone(),
            log: log.clone(),
        };
        on_epoch(EpochEnd { weights: &store, optimizer: &opt, state })?;
    }
    pb.finish_and_clear();
    Ok((store, log))
}

fn named(store: &ParamStore) -> Vec<(String, Var)> {
    store.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
