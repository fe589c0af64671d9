//! Finite-difference checks of the hand-assembled recurrent cells and the VRAE loss: every
//! gradient that candle's autograd computes through our ops is compared with a central
//! difference `(L(θ+ε) - L(θ-ε)) / 2ε` in f64.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::loss::{vrae_loss, StepMask};
use super::params::ParamStore;
use super::rnn::{Rnn, StackShape};
use super::vrae::{standard_normal, ModelConfig, Vrae};
use crate::params::{Cell, LossScaling, ReconLoss};

fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(standard_normal(rng, n), shape, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap()
}

/// Compares autograd with central differences for every element of every variable in `vars`.
fn check(vars: &[(String, Var)], loss: &dyn Fn() -> Tensor) {
    let grads = loss().backward().unwrap();
    let eps = 1e-6;
    let mut worst = 0f64;
    for (name, var) in vars {
        let analytic: Vec<f64> =
            grads.get(var).unwrap_or_else(|| panic!("no gradient for {name}")).flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let err = (analytic[i] - numeric).abs() / analytic[i].abs().max(numeric.abs()).max(1.0);
            worst = worst.max(err);
            assert!(err < 1e-6, "{name}[{i}]: autograd {} vs finite difference {numeric}", analytic[i]);
        }
    }
    assert!(worst.is_finite());
}

fn rnn_case(kind: Cell, input: Option<usize>, lengths: Option<&[usize]>) {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (h, depth, b, t) = (3, 2, lengths.map_or(2, <[usize]>::len), 5);
    let mut store = ParamStore::default();
    Rnn::init(&mut store, "r", StackShape { kind, input, hidden: h, depth }, &mut rng, &dev).unwrap();
    let store = store.to_dtype(DType::F64).unwrap();
    let rnn = Rnn::bind(&store, "r", StackShape { kind, input, hidden: h, depth }, Path::new("test")).unwrap();
    let x = input.map(|i| randn(&mut rng, &[t, b, i]));
    let h0 = Var::from_tensor(&randn(&mut rng, &[b, h])).unwrap();
    let proj = randn(&mut rng, &[t, b, h]);
    let loss = || {
        let h0s = vec![h0.as_tensor().clone(); depth];
        let y = rnn.forward(x.as_ref(), t, &h0s, |x| Ok(x.clone()), super::fused::Output::Seq, lengths).unwrap();
        // Weighted sum of every output plus the squared final state, so all paths carry gradient.
        let l = (&y * &proj).unwrap().sum_all().unwrap();
        (l + y.get(t - 1).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap()
    };
    let mut vars: Vec<(String, Var)> = store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.push(("h0".into(), h0.clone()));
    check(&vars, &loss);
}

#[test]
fn lstm_gradients_match_finite_differences() {
    rnn_case(Cell::Lstm, Some(2), None);
}

#[test]
fn gru_gradients_match_finite_differences() {
    rnn_case(Cell::Gru, Some(2), None);
}

#[test]
fn input_free_layers_match_finite_differences() {
    rnn_case(Cell::Lstm, None, None);
    rnn_case(Cell::Gru, None, None);
}

/// Rows of unequal lengths (one of length 1, all different) hold their state after their end.
#[test]
fn ragged_batches_match_finite_differences() {
    for cell in [Cell::Lstm, Cell::Gru] {
        rnn_case(cell, Some(2), Some(&[5, 1, 3]));
        rnn_case(cell, None, Some(&[2, 5, 1]));
    }
}

fn vrae_case(cell: Cell, loss_kind: ReconLoss, scaling: LossScaling, lengths: Option<&[usize]>) {
    let dev = Device::Cpu;
    let cfg = ModelConfig { cell, n_features: 2, seq_len: 4, hidden_size: 3, hidden_layer_depth: 2, latent_length: 2, dropout: 0.0 };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let store = Vrae::init(&cfg, &mut rng, &dev).unwrap().to_dtype(DType::F64).unwrap();
    let model = Vrae::bind(&cfg, &store, Path::new("test")).unwrap();
    let x = (randn(&mut rng, &[4, 3, 2]) * 1.5).unwrap();
    let mask = lengths.map(|l| StepMask::new(l, 4, &dev).unwrap());
    let loss = || {
        // Same reparameterisation noise on every evaluation.
        let mut r = ChaCha8Rng::seed_from_u64(9);
        let fw = model.forward_train(&x, lengths, &mut r).unwrap();
        vrae_loss(&x, &fw.recon, mask.as_ref(), &fw.mean, &fw.logvar, loss_kind, scaling, 0.7).unwrap().total
    };
    let vars: Vec<(String, Var)> = store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    check(&vars, &loss);
}

#[test]
fn vrae_loss_gradients_match_finite_differences() {
    vrae_case(Cell::Lstm, ReconLoss::Mse, LossScaling::Seed, None);
    vrae_case(Cell::Gru, ReconLoss::SmoothL1, LossScaling::Mean, None);
    // The masked loss of a ragged batch.
    vrae_case(Cell::Lstm, ReconLoss::Mse, LossScaling::Mean, Some(&[4, 1, 2]));
    vrae_case(Cell::Gru, ReconLoss::SmoothL1, LossScaling::Seed, Some(&[3, 4, 1]));
}

/// The fused CPU kernels give the same loss and gradients as the op-by-op reference path (which
/// the tests above check against finite differences), including dropout between layers.
fn fused_case(cell: Cell, n_features: usize, lengths: Option<&[usize]>) {
    let dev = Device::Cpu;
    let cfg = ModelConfig { cell, n_features, seq_len: 9, hidden_size: 7, hidden_layer_depth: 2, latent_length: 4, dropout: 0.3 };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let store = Vrae::init(&cfg, &mut rng, &dev).unwrap();
    // Batch 24 on 3 threads: the fused kernels cut it into 3 slices of 8 rows.
    let b = lengths.map_or(24, <[usize]>::len);
    let x = Tensor::from_vec(standard_normal(&mut rng, 9 * b * n_features), (9, b, n_features), &dev).unwrap();
    let mask = lengths.map(|l| StepMask::new(l, 9, &dev).unwrap());
    let run = |reference: bool| {
        let mut model = Vrae::bind(&cfg, &store, Path::new("test")).unwrap();
        model.set_reference_kernels(reference);
        let mut r = ChaCha8Rng::seed_from_u64(2);
        let fw = model.forward_train(&x, lengths, &mut r).unwrap();
        let loss = vrae_loss(&x, &fw.recon, mask.as_ref(), &fw.mean, &fw.logvar, ReconLoss::Mse, LossScaling::Mean, 0.5).unwrap().total;
        let grads = loss.backward().unwrap();
        let mut out = vec![("loss".to_string(), vec![loss.to_scalar::<f32>().unwrap()])];
        let mean = model.encode_mean(&x, lengths).unwrap();
        if let Some(l) = lengths {
            // Each row's latent is the one of its series alone, unpadded.
            let mean: Vec<Vec<f32>> = mean.to_vec2().unwrap();
            for (row, &n) in l.iter().enumerate() {
                let alone = x.narrow(0, 0, n).unwrap().narrow(1, row, 1).unwrap().contiguous().unwrap();
                let want: Vec<f32> = model.encode_mean(&alone, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (a, w) in mean[row].iter().zip(&want) {
                    assert!((a - w).abs() <= 1e-5, "{cell:?} reference={reference}: row {row} (length {n}) {a} vs alone {w}");
                }
            }
        }
        out.push(("mean".into(), mean.flatten_all().unwrap().to_vec1().unwrap()));
        for (k, v) in store.iter() {
            out.push((k.clone(), grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap()));
        }
        out
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    // Recycled buffers full of NaN: every value the kernels read from them must be written first.
    let (t, h, g) = (9, 7, if cell == Cell::Lstm { 4 } else { 3 });
    super::fused::poison_pool(&[[t * b * g * h; 8].as_slice(), &[t * b * h; 16]].concat());
    let (reference, fused) = (run(true), pool.install(|| run(false)));
    for ((name, a), (_, b)) in reference.iter().zip(&fused) {
        let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 2e-5 * scale.max(1.0), "{cell:?}, {n_features} features, {name}[{i}]: reference {x} vs fused {y}");
        }
    }
}

#[test]
fn fused_lstm_matches_reference() {
    // One feature takes the projection's shortcut, three the gemm call.
    fused_case(Cell::Lstm, 1, None);
    fused_case(Cell::Lstm, 3, None);
}

#[test]
fn fused_gru_matches_reference() {
    fused_case(Cell::Gru, 1, None);
    fused_case(Cell::Gru, 3, None);
}

/// Ragged batches: 24 rows of lengths 1..=9 (three thread slices), and 5 rows that all differ.
#[test]
fn fused_ragged_batches_match_reference() {
    let mixed: Vec<usize> = (0..24).map(|i| (i * 7) % 9 + 1).collect();
    for cell in [Cell::Lstm, Cell::Gru] {
        fused_case(cell, 1, Some(&mixed));
        fused_case(cell, 3, Some(&[9, 1, 4, 7, 2]));
    }
}

/// The fused kernels' loss and gradients do not depend on the number of threads: the LSTM keeps
/// one weight-gradient sum per fixed group of batch rows, whichever thread computes it.
#[test]
fn fused_gradients_are_the_same_bits_on_any_thread_count() {
    for cell in [Cell::Lstm, Cell::Gru] {
        let dev = Device::Cpu;
        let cfg = ModelConfig { cell, n_features: 2, seq_len: 11, hidden_size: 9, hidden_layer_depth: 2, latent_length: 3, dropout: 0.2 };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let store = Vrae::init(&cfg, &mut rng, &dev).unwrap();
        // Batch 50: three groups of 16-17 rows.
        let x = Tensor::from_vec(standard_normal(&mut rng, 11 * 50 * 2), (11, 50, 2), &dev).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let model = Vrae::bind(&cfg, &store, Path::new("test")).unwrap();
                let mut r = ChaCha8Rng::seed_from_u64(3);
                let fw = model.forward_train(&x, None, &mut r).unwrap();
                let loss = vrae_loss(&x, &fw.recon, None, &fw.mean, &fw.logvar, ReconLoss::Mse, LossScaling::Mean, 0.5).unwrap().total;
                let grads = loss.backward().unwrap();
                let mut bits = vec![loss.to_scalar::<f32>().unwrap().to_bits()];
                for (_, v) in store.iter() {
                    bits.extend(grads.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|g| g.to_bits()));
                }
                bits
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(one == run(threads), "{cell:?}: {threads} threads give other bits than 1");
        }
    }
}
