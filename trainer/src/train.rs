//! The training loop: shuffled mini-batches (the last partial batch included), Adam or SGD,
//! global gradient-norm clipping, KL annealing, a progress bar, and a per-epoch log.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, RngState, TrainState};
use crate::data::Series;
use crate::error::{Error, Result};
use crate::fault;
use crate::model::loss::{contrastive_loss, real_steps, vrae_loss, StepMask};
use crate::model::{ModelConfig, ParamStore, Vrae};
use crate::optim::Optimizer;
use crate::params::VraeValidParams;
use crate::progress::{OnProgress, Progress};
use crate::train_log::EpochLog;

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

/// How and when training ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// Why it stopped, in words.
    pub reason: String,
    /// Epochs run.
    pub epochs: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// The epoch whose weights were kept (the last one without early stopping).
    pub kept_epoch: usize,
    /// Training rows held out for the stopping rule.
    pub validation_rows: usize,
}

/// What training returns.
pub struct Trained {
    /// The kept weights.
    pub weights: ParamStore,
    /// Per-epoch log.
    pub log: Vec<EpochLog>,
    /// How it ended.
    pub stop: Stop,
}

/// Rows of `n` training series held out for the stopping rule (seeded, sorted); none when early
/// stopping is off or there are fewer than 10 series.
pub fn validation_rows(params: &VraeValidParams, n: usize) -> Vec<usize> {
    if !params.early_stopping || n < 10 {
        return Vec::new();
    }
    let k = ((params.validation * n as f64).round() as usize).clamp(1, n / 2);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed ^ 0x7a11_da7e));
    let mut v = idx[..k].to_vec();
    v.sort_unstable();
    v
}

/// Epoch bounds of a run on `fit_rows` rows of `seq_len` steps: `(most, fewest before the
/// stopping rule may act)`.
pub fn epoch_bounds(params: &VraeValidParams, fit_rows: usize, seq_len: usize) -> (usize, usize) {
    if !params.early_stopping {
        return (params.epochs, params.epochs);
    }
    let per_epoch = (fit_rows * seq_len).max(1) as f64;
    let budget = ((params.step_budget * 1e6 / per_epoch).floor() as usize).max(1);
    let most = params.epochs.min(budget).max(1);
    let batches = fit_rows.div_ceil(params.batch_size).max(1);
    (most, params.min_steps.div_ceil(batches).min(most))
}

/// Mean squared reconstruction error of `rows` of `train` (no dropout, no sampling), over
/// their real steps.
fn validation_recon(model: &Vrae, data: &Batches, rows: &[usize]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in rows.chunks(256) {
        let b = data.batch(chunk)?;
        let sq = (model.decode(&model.encode_mean(&b.x, b.lengths.as_deref())?, b.x.dim(0)?)? - &b.x)?.sqr()?;
        let (sq, real) = real_steps(&sq, b.mask.as_ref())?;
        sum += sq.sum_all()?.to_scalar::<f32>()? as f64;
        n += real;
    }
    Ok(sum / n.max(1) as f64)
}

/// Whether validation loss `v` is a new best over `best`. An improvement must be worth 0.1%, so
/// a loss creeping down by rounding-sized steps does not keep a converged run going.
fn improves(v: f64, best: Option<f64>) -> bool {
    best.is_none_or(|b| v < b * (1.0 - 1e-3))
}

/// The best epoch and its validation loss by the rule training applies ([`improves`]), replayed
/// over a checkpoint's log, so a resumed run keeps the epoch an uninterrupted one keeps.
fn best_in_log(log: &[EpochLog]) -> Option<(usize, f64)> {
    log.iter().filter_map(|e| e.val_recon.map(|v| (e.epoch, v))).fold(None, |best, (e, v)| {
        if improves(v, best.map(|b| b.1)) {
            Some((e, v))
        } else {
            best
        }
    })
}

fn snapshot(store: &ParamStore) -> Result<std::collections::BTreeMap<String, Tensor>> {
    store.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
}

/// One batch: its rows' values `[T, B, F]`, `T` the longest row, shorter rows padded with zeros;
/// where the rows' lengths differ, those lengths and the loss's [`StepMask`] (`None` when every
/// row has `T` steps, which is then exactly the equal-length computation).
pub struct Batch {
    /// Values `[T, B, F]`.
    pub x: Tensor,
    /// Each row's length, when they differ.
    pub lengths: Option<Vec<usize>>,
    /// The real steps, when the lengths differ.
    pub mask: Option<StepMask>,
}

impl Batch {
    fn new(x: Tensor, lengths: Vec<usize>) -> Result<Self> {
        let t = x.dim(0)?;
        if lengths.iter().all(|&n| n == t) {
            return Ok(Batch { x, lengths: None, mask: None });
        }
        let mask = StepMask::new(&lengths, t, x.device())?;
        Ok(Batch { x, lengths: Some(lengths), mask: Some(mask) })
    }
}

/// Where training batches come from. On the CPU each batch is packed from the series (no second
/// copy of the data set); on another device the series are uploaded once as `[N, T, F]` (padded
/// to the longest) and a batch is an `index_select` of its rows, so a step moves only the row
/// indices and the noise to the device, not the batch.
pub enum Batches<'a> {
    /// Packed per batch on the CPU.
    Host { series: &'a [Series], nf: usize, dev: Device },
    /// Every series on the device, and each one's length.
    Device(Tensor, Vec<usize>),
}

impl<'a> Batches<'a> {
    /// Batches of `series` (of at most `t` steps, `nf` features) on `dev`.
    pub fn new(series: &'a [Series], t: usize, nf: usize, dev: &Device) -> Result<Self> {
        if dev.is_cpu() {
            return Ok(Batches::Host { series, nf, dev: dev.clone() });
        }
        Self::on_device(series, t, nf, dev)
    }

    /// The uploaded form on any device (the CPU included, for tests).
    pub fn on_device(series: &[Series], t: usize, nf: usize, dev: &Device) -> Result<Self> {
        let mut flat = vec![0f32; series.len() * t * nf];
        for (dst, s) in flat.chunks_exact_mut(t * nf).zip(series) {
            dst[..s.values.len()].copy_from_slice(&s.values);
        }
        let lengths = series.iter().map(|s| s.len).collect();
        Ok(Batches::Device(Tensor::from_vec(flat, (series.len(), t, nf), dev)?, lengths))
    }

    /// Rows `rows` as a [`Batch`].
    pub fn batch(&self, rows: &[usize]) -> Result<Batch> {
        match self {
            Batches::Host { series, nf, dev } => {
                let batch: Vec<&Series> = rows.iter().map(|&i| &series[i]).collect();
                let lengths: Vec<usize> = batch.iter().map(|s| s.len).collect();
                let t = lengths.iter().copied().max().unwrap_or(0);
                Batch::new(batch_tensor(&batch, t, *nf, dev)?, lengths)
            }
            Batches::Device(all, len) => {
                let lengths: Vec<usize> = rows.iter().map(|&i| len[i]).collect();
                let t = lengths.iter().copied().max().unwrap_or(0);
                let idx = Tensor::from_vec(rows.iter().map(|&i| i as u32).collect::<Vec<u32>>(), rows.len(), all.device())?;
                let x = all.index_select(&idx, 0)?.transpose(0, 1)?;
                let x = if t < x.dim(0)? { x.narrow(0, 0, t)? } else { x };
                Batch::new(x.contiguous()?, lengths)
            }
        }
    }
}

/// Packs series (of at most `t` steps) into a `[T, B, F]` tensor, shorter ones padded with zeros.
pub fn batch_tensor(series: &[&Series], t: usize, nf: usize, dev: &Device) -> Result<Tensor> {
    let b = series.len();
    let mut data = vec![0f32; t * b * nf];
    for (j, s) in series.iter().enumerate() {
        for step in 0..t.min(s.len) {
            let src = &s.values[step * nf..(step + 1) * nf];
            data[(step * b + j) * nf..(step * b + j + 1) * nf].copy_from_slice(src);
        }
    }
    Ok(Tensor::from_vec(data, (t, b, nf), dev)?)
}

/// A random crop of every series of a batch. Series of one length `t`: one crop length `C` drawn
/// uniformly from `[ceil(min_share * t), t]`, an offset per series, a `[C, B, F]` tensor.
/// Series of unequal lengths: one share `u` drawn uniformly from `[min_share, 1]`, each series
/// cropped to `ceil(u * len)` steps at its own offset, a padded [`Batch`] with its lengths, so
/// every crop keeps the same share of its own series.
fn crop_batch(series: &[&Series], nf: usize, min_share: f64, rng: &mut ChaCha8Rng, dev: &Device) -> Result<Batch> {
    let b = series.len();
    let t = series.iter().map(|s| s.len).max().unwrap_or(0);
    let lengths: Vec<usize> = if series.iter().all(|s| s.len == t) {
        let shortest = ((min_share * t as f64).ceil() as usize).clamp(1, t);
        vec![rng.gen_range(shortest..=t); b]
    } else {
        let u = rng.gen_range(min_share.min(1.0)..=1.0);
        series.iter().map(|s| ((u * s.len as f64).ceil() as usize).clamp(1, s.len)).collect()
    };
    let c = lengths.iter().copied().max().unwrap_or(0);
    let mut data = vec![0f32; c * b * nf];
    for (j, (s, &n)) in series.iter().zip(&lengths).enumerate() {
        let start = rng.gen_range(0..=s.len - n);
        for step in 0..n {
            let src = &s.values[(start + step) * nf..(start + step + 1) * nf];
            data[(step * b + j) * nf..(step * b + j + 1) * nf].copy_from_slice(src);
        }
    }
    Batch::new(Tensor::from_vec(data, (c, b, nf), dev)?, lengths)
}

/// Batches of series of unequal lengths are padded to their longest row, so each stretch of
/// [`BUCKET_BATCHES`] batches of the shuffled order is sorted by length (stable) before it is cut
/// into batches: rows of similar length train together and little time goes to padding, while
/// which series meet in a batch still changes every epoch.
fn bucket_by_length(order: &mut [usize], series: &[Series], batch_size: usize) {
    for stretch in order.chunks_mut(BUCKET_BATCHES * batch_size.max(1)) {
        stretch.sort_by_key(|&i| series[i].len);
    }
}

/// Batches per stretch of the shuffled order sorted by length ([`bucket_by_length`]).
pub const BUCKET_BATCHES: usize = 8;

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
    /// The best epoch's weights so far (early stopping), which a checkpoint must keep too.
    pub best: Option<&'a std::collections::BTreeMap<String, Tensor>>,
}

/// Prefix of the best weights' tensors in a checkpoint.
pub const BEST_PREFIX: &str = "best.";

/// Trains a fresh model on `train` (all of length `cfg.seq_len`) and returns its weights and log.
pub fn train(
    params: &VraeValidParams,
    cfg: &ModelConfig,
    train: &[Series],
    dev: &Device,
    progress: OnProgress<'_>,
) -> Result<(ParamStore, Vec<EpochLog>)> {
    let t = train_resumable(params, cfg, train, dev, progress, None, &mut |_| Ok(()))?;
    Ok((t.weights, t.log))
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
/// as an uninterrupted one: weights, optimiser moments, RNG position, shuffle order and the
/// best weights so far are all restored. A non-finite loss or gradient norm stops with
/// [`Error::Diverged`] before the step that would poison the weights. With early stopping (see
/// [`crate::params::VraeParams::early_stopping`]) the validation rows never enter a batch.
pub fn train_resumable(
    params: &VraeValidParams,
    cfg: &ModelConfig,
    train: &[Series],
    dev: &Device,
    progress: OnProgress<'_>,
    resume: Option<Checkpoint>,
    on_epoch: &mut dyn FnMut(EpochEnd<'_>) -> Result<()>,
) -> Result<Trained> {
    if train.is_empty() {
        return Err(Error::Training("no training series".into()));
    }
    keep_freed_memory();
    let val_rows = validation_rows(params, train.len());
    let mut is_val = vec![false; train.len()];
    val_rows.iter().for_each(|&i| is_val[i] = true);
    let fit_rows = train.len() - val_rows.len();
    let fit_steps: usize = train.iter().zip(&is_val).filter(|(_, &v)| !v).map(|(s, _)| s.len).sum();
    let ragged = train.iter().any(|s| s.len != train[0].len);
    // The budget counts real steps: the mean length of the rows trained on.
    let (max_epochs, min_epochs) = epoch_bounds(params, fit_rows, fit_steps.div_ceil(fit_rows.max(1)));
    let mut best: Option<(usize, f64, std::collections::BTreeMap<String, Tensor>)> = None;
    let (store, mut rng, mut order, mut log, mut opt) = match resume {
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            let store = Vrae::init(cfg, &mut rng, dev)?;
            let opt = Optimizer::new(params.optimizer, params.learning_rate, named(&store))?;
            (store, rng, (0..train.len()).collect::<Vec<usize>>(), Vec::with_capacity(max_epochs), opt)
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
            let kept: std::collections::BTreeMap<String, Tensor> =
                ck.optimizer.iter().filter_map(|(k, t)| k.strip_prefix(BEST_PREFIX).map(|n| (n.to_string(), t.clone()))).collect();
            if let Some((epoch, v)) = best_in_log(&st.log) {
                if kept.is_empty() {
                    return Err(Error::Training("the checkpoint has validation losses but not the best epoch's weights".into()));
                }
                best = Some((epoch, v, kept));
            }
            (ck.weights, st.rng.restore()?, st.order, st.log, opt)
        }
    };
    let model = Vrae::bind(cfg, &store, std::path::Path::new("<checkpoint>"))?;
    let vars = store.vars();
    let first_epoch = log.len();

    let n_batches = fit_rows.div_ceil(params.batch_size);
    progress(Progress::Start { total: (max_epochs * n_batches) as u64, done: (first_epoch.min(max_epochs) * n_batches) as u64 });
    let mut reason = format!("fixed: {max_epochs} epochs");
    if params.early_stopping && max_epochs < params.epochs {
        reason = format!("step budget: {max_epochs} epochs ({} M time steps)", params.step_budget);
    } else if params.early_stopping {
        reason = format!("epoch cap: {max_epochs} epochs (--epochs)");
    }
    let stopped_early = |log: &[EpochLog], best: &Option<(usize, f64, std::collections::BTreeMap<String, Tensor>)>| -> Option<String> {
        let (done, (b, _, _)) = (log.len(), best.as_ref()?);
        (done >= min_epochs && done - b >= params.patience)
            .then(|| format!("converged: validation loss not improved for {} epochs (best at epoch {b})", done - b))
    };
    // On a GPU the series go to the device once, here, not batch by batch.
    let data = Batches::new(train, cfg.seq_len, cfg.n_features, dev)?;
    let mut ended_early = stopped_early(&log, &best);
    for epoch in first_epoch..max_epochs {
        if let Some(r) = ended_early.take() {
            reason = r;
            break;
        }
        let start = Instant::now();
        let klw = kl_weight_at(params.kl_weight, params.kl_anneal_epochs, epoch);
        order.shuffle(&mut rng);
        let mut fit_order: Vec<usize> = order.iter().copied().filter(|&i| !is_val[i]).collect();
        if ragged {
            bucket_by_length(&mut fit_order, train, params.batch_size);
        }
        let (mut sl, mut sr, mut sk, mut sc) = (0f64, 0f64, 0f64, 0f64);
        for (bi, chunk) in fit_order.chunks(params.batch_size).enumerate() {
            let batch: Vec<&Series> = chunk.iter().map(|&i| &train[i]).collect();
            let x = data.batch(chunk)?;
            let fw = model.forward_train(&x.x, x.lengths.as_deref(), &mut rng)?;
            let parts = vrae_loss(&x.x, &fw.recon, x.mask.as_ref(), &fw.mean, &fw.logvar, params.loss, params.loss_scaling, klw)?;
            let total = if params.contrastive_weight > 0.0 {
                let xc = crop_batch(&batch, cfg.n_features, params.contrastive_crop, &mut rng, dev)?;
                let zc = model.encode_mean_train(&xc.x, xc.lengths.as_deref(), &mut rng)?;
                let c = contrastive_loss(&fw.mean, &zc, params.contrastive_temperature)?;
                sc += c.to_scalar::<f32>()? as f64;
                (&parts.total + (c * params.contrastive_weight)?)?
            } else {
                parts.total.clone()
            };
            let mut loss = total.to_scalar::<f32>()? as f64;
            if fault::nan_loss_at(epoch + 1) {
                loss = f64::NAN;
            }
            if !loss.is_finite() {
                progress(Progress::Abandoned);
                return Err(diverged(epoch, bi, "loss", loss));
            }
            let mut grads = total.backward()?;
            let norm = clip_grad_norm(&vars, &mut grads, params.clip_norm)?;
            if !norm.is_finite() {
                progress(Progress::Abandoned);
                return Err(diverged(epoch, bi, "gradient norm", norm));
            }
            opt.step(&grads)?;
            sl += loss;
            sr += parts.recon.to_scalar::<f32>()? as f64;
            sk += parts.kl.to_scalar::<f32>()? as f64;
            let done = (bi + 1) as f64;
            let message = format!("epoch {}/{}  loss {:.4}  recon {:.4}  KL {:.4}", epoch + 1, max_epochs, sl / done, sr / done, sk / done);
            progress(Progress::Batch { message: &message });
        }
        let nb = n_batches as f64;
        let val_recon = if val_rows.is_empty() { None } else { Some(validation_recon(&model, &data, &val_rows)?) };
        if let Some(v) = val_recon {
            if !v.is_finite() {
                progress(Progress::Abandoned);
                return Err(diverged(epoch, 0, "validation loss", v));
            }
            if improves(v, best.as_ref().map(|b| b.1)) {
                best = Some((epoch + 1, v, snapshot(&store)?));
            }
        }
        let e = EpochLog {
            epoch: epoch + 1,
            loss: sl / nb,
            recon: sr / nb,
            kl: sk / nb,
            kl_weight: klw,
            seconds: start.elapsed().as_secs_f64(),
            val_recon,
            contrastive: (params.contrastive_weight > 0.0).then_some(sc / nb),
        };
        let mut val = e.contrastive.map_or(String::new(), |c| format!("  contrastive {c:.4}"));
        val += &val_recon.map_or(String::new(), |v| format!("  val {v:.5}"));
        let line = format!(
            "epoch {:>3}/{}  loss {:.5}  recon {:.5}  KL {:.5}{val}  ({:.1} s)",
            e.epoch, max_epochs, e.loss, e.recon, e.kl, e.seconds
        );
        progress(Progress::Epoch { line: &line });
        log.push(e);
        let state = TrainState {
            epochs_done: epoch + 1,
            optimizer_steps: opt.steps(),
            rng: RngState::capture(&rng),
            order: order.clone(),
            log: log.clone(),
        };
        on_epoch(EpochEnd { weights: &store, optimizer: &opt, state, best: best.as_ref().map(|b| &b.2) })?;
        if params.early_stopping && val_rows.is_empty() && log.len() >= min_epochs {
            reason = format!("minimum steps: {} epochs (too few series to hold out validation rows)", log.len());
            break;
        }
        ended_early = stopped_early(&log, &best);
    }
    if let Some(r) = ended_early {
        reason = r;
    }
    progress(Progress::Finished);
    let epochs = log.len();
    let (weights, kept_epoch) = match best {
        Some((e, _, w)) => (ParamStore::from_tensors(w)?, e),
        None => (store, epochs),
    };
    let stop = Stop { reason, epochs, steps: opt.steps(), kept_epoch, validation_rows: val_rows.len() };
    Ok(Trained { weights, log, stop })
}

fn named(store: &ParamStore) -> Vec<(String, Var)> {
    store.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(vals: &[f64]) -> Vec<EpochLog> {
        vals.iter()
            .enumerate()
            .map(|(i, &v)| EpochLog {
                epoch: i + 1,
                loss: 0.0,
                recon: 0.0,
                kl: 0.0,
                kl_weight: 0.0,
                seconds: 0.0,
                val_recon: Some(v),
                contrastive: None,
            })
            .collect()
    }

    /// A resumed run must name the best epoch training named: epoch 3 is only 0.05% below epoch
    /// 2, so it is not a new best (a plain minimum would pick it and disagree with the weights
    /// the checkpoint kept).
    #[test]
    fn best_epoch_from_a_log_follows_the_training_rule() {
        assert_eq!(best_in_log(&log(&[1.0, 0.5, 0.49975, 0.6])), Some((2, 0.5)));
        assert_eq!(best_in_log(&log(&[1.0, 0.5, 0.49, 0.6])), Some((3, 0.49)));
        assert_eq!(best_in_log(&[]), None);
        assert!(improves(1.0, None) && !improves(1.0, Some(1.0)));
    }
}
