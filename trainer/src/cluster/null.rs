//! Null references for a clustering criterion: data like the decision vectors in every respect
//! but their cluster structure.
//!
//! The modularity of a spectral partition on a kNN graph is high for any data of low intrinsic
//! dimension, clustered or not (a kNN graph of a 2-d Gaussian cloud cut into k pieces scores
//! well), so comparing it across representations of different dimension rewards the
//! low-dimensional one. The same clustering run on a null sample measures that part, and
//! `Q(data) − Q(null)` keeps what the clusters add (the idea of Tibshirani et al.'s gap
//! statistic, 2001, and of SigClust's Gaussian null, Liu et al. 2008).
//!
//! * [`gaussian_like`]: a sample with the data's mean and covariance and nothing else. Each
//!   row is `μ + Σ_{j∈S} g_j (x_j − μ) / √|S|` over `|S|` = [`MIX_ROWS`] random rows with
//!   `g_j ~ N(0, 1)`: its covariance equals the data's in expectation, and a sum of 32 terms is
//!   close to Gaussian, without a `d × d` factorisation.
//! * [`columns_permuted`]: each column shuffled on its own: the marginals kept, every
//!   dependence between values gone.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows mixed into each row of [`gaussian_like`].
pub const MIX_ROWS: usize = 32;

/// A standard normal draw (Box–Muller; `rand_distr` is not a dependency for this one use).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Column means of row-major `x` (`dims` per row).
fn means(x: &[f32], dims: usize) -> Vec<f64> {
    let n = (x.len() / dims).max(1);
    let mut m = vec![0f64; dims];
    for row in x.chunks_exact(dims) {
        m.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    m.iter_mut().for_each(|a| *a /= n as f64);
    m
}

/// A Gaussian sample of as many rows as `x` with `x`'s mean and covariance (module docs).
pub fn gaussian_like(x: &[f32], dims: usize, seed: u64) -> Vec<f32> {
    let n = x.len() / dims.max(1);
    if n == 0 {
        return Vec::new();
    }
    let mu = means(x, dims);
    let m = MIX_ROWS.min(n);
    let norm = 1.0 / (m as f64).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a55_1a4e);
    let mut out = Vec::with_capacity(x.len());
    let mut acc = vec![0f64; dims];
    for _ in 0..n {
        acc.iter_mut().zip(&mu).for_each(|(a, &u)| *a = u);
        for _ in 0..m {
            let j = rng.gen_range(0..n);
            let g = normal(&mut rng) * norm;
            let row = &x[j * dims..(j + 1) * dims];
            acc.iter_mut().zip(row).zip(&mu).for_each(|((a, &v), &u)| *a += g * (v as f64 - u));
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// `x` with each column shuffled on its own (module docs).
pub fn columns_permuted(x: &[f32], dims: usize, seed: u64) -> Vec<f32> {
    let n = x.len() / dims.max(1);
    let mut out = x.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e3_77b9);
    let mut order: Vec<usize> = (0..n).collect();
    for c in 0..dims {
        order.shuffle(&mut rng);
        for (i, &j) in order.iter().enumerate() {
            out[i * dims + c] = x[j * dims + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(x: &[f32], dims: usize) -> Vec<f64> {
        let n = x.len() / dims;
        let mu = means(x, dims);
        let mut c = vec![0f64; dims * dims];
        for row in x.chunks_exact(dims) {
            for a in 0..dims {
                for b in 0..dims {
                    c[a * dims + b] += (row[a] as f64 - mu[a]) * (row[b] as f64 - mu[b]) / n as f64;
                }
            }
        }
        c
    }

    #[test]
    fn gaussian_null_keeps_mean_and_covariance() {
        // Two tight, correlated clusters in 3-d.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..4000)
            .flat_map(|i| {
                let c = if i % 2 == 0 { 3.0 } else { -3.0 };
                let e: f64 = normal(&mut rng) * 0.1;
                [c + 1.0 + e, 0.5 * c + e, normal(&mut rng) * 0.2 + 2.0].map(|v| v as f32)
            })
            .collect();
        let y = gaussian_like(&x, 3, 7);
        assert_eq!(y.len(), x.len());
        let (mx, my) = (means(&x, 3), means(&y, 3));
        let (cx, cy) = (cov(&x, 3), cov(&y, 3));
        for a in 0..3 {
            assert!((mx[a] - my[a]).abs() < 0.15, "mean {a}: {} vs {}", mx[a], my[a]);
        }
        for (a, b) in cx.iter().zip(&cy) {
            assert!((a - b).abs() < 0.1 * cx[0], "covariance {a} vs {b}");
        }
        // The clusters are gone: the first coordinate is no longer two spikes at ±3 (+1).
        let near = |v: &[f32]| v.chunks_exact(3).filter(|r| (r[0] - 4.0).abs() < 0.3 || (r[0] + 2.0).abs() < 0.3).count();
        assert!(near(&x) > 3900, "{} of the data rows at their centres", near(&x));
        assert!(near(&y) < 1000, "{} rows still at the cluster centres", near(&y));
    }

    #[test]
    fn permuted_null_keeps_each_column_and_breaks_rows() {
        let x: Vec<f32> = (0..500).flat_map(|i| [i as f32, i as f32 * 2.0]).collect();
        let y = columns_permuted(&x, 2, 3);
        for c in 0..2 {
            let mut a: Vec<f32> = x.iter().skip(c).step_by(2).copied().collect();
            let mut b: Vec<f32> = y.iter().skip(c).step_by(2).copied().collect();
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            assert_eq!(a, b);
        }
        assert!(y.chunks_exact(2).filter(|r| r[1] == 2.0 * r[0]).count() < 10);
    }
}
