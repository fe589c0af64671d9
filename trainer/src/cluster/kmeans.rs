//! Lloyd's k-means with k-means++ seeding and `n_init` restarts (the lowest inertia wins).
//!
//! Minimises the inertia `Σ_i min_k ||x_i - c_k||²`. Assignment of new points goes through the
//! runtime's [`runtime::assign`], the same code a device runs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// k-means settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Independent k-means++ restarts; the run with the lowest inertia is kept.
    pub n_init: usize,
    /// Lloyd iterations per restart at most.
    pub max_iter: usize,
    /// Stop when the squared centroid shift is below `tol` times the mean per-dimension variance.
    pub tol: f64,
    /// RNG seed for the seeding.
    pub seed: u64,
}

/// k-means restarts by default (scikit-learn's), here and for `--n-init`.
pub const N_INIT: usize = 10;

impl KMeansParams {
    /// `k` clusters with scikit-learn's defaults ([`N_INIT`] restarts, 300 iterations, tol 1e-4).
    pub fn new(k: usize, seed: u64) -> Self {
        KMeansParams { k, n_init: N_INIT, max_iter: 300, tol: 1e-4, seed }
    }
}

/// A fitted k-means model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KMeans {
    /// Centroids, row-major `k x dim`.
    pub centroids: Vec<f32>,
    /// Dimension of a point.
    pub dim: usize,
    /// Sum of squared distances of the training points to their centroid.
    pub inertia: f64,
    /// Cluster of each training point.
    pub labels: Vec<usize>,
}

fn d2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

impl KMeans {
    /// Fits on `data` (row-major `n x dim`).
    pub fn fit(data: &[f32], dim: usize, p: &KMeansParams) -> Result<KMeans> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::Param(format!("k-means: {} values do not form rows of {dim}", data.len())));
        }
        let n = data.len() / dim;
        if p.k == 0 || p.k > n {
            return Err(Error::Param(format!("k-means: k = {} but there are {n} points", p.k)));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Param(format!("k-means: non-finite value in row {}", i / dim)));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
        let mean_var = {
            let mut v = 0f64;
            for j in 0..dim {
                let m = rows.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64;
                v += rows.iter().map(|r| (r[j] as f64 - m).powi(2)).sum::<f64>() / n as f64;
            }
            v / dim as f64
        };
        let mut best: Option<KMeans> = None;
        for _ in 0..p.n_init.max(1) {
            let run = lloyd(&rows, dim, p, plus_plus(&rows, dim, p.k, &mut rng), p.tol * mean_var);
            if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
                best = Some(run);
            }
        }
        Ok(best.expect("n_init >= 1"))
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// Nearest centroid of every row of `data`, via the runtime's assignment.
    pub fn predict(&self, data: &[f32]) -> Result<Vec<runtime::Assignment>> {
        data.chunks(self.dim)
            .enumerate()
            .map(|(i, row)| runtime::assign(row, &self.centroids, self.dim).map_err(|e| Error::Mismatch(format!("row {i}: {e}"))))
            .collect()
    }
}

/// k-means++ seeding: first centre uniform, then each next point with probability ∝ D(x)², the
/// squared distance to the nearest centre chosen so far.
fn plus_plus(rows: &[&[f32]], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = rows.len();
    let mut c = Vec::with_capacity(k * dim);
    c.extend_from_slice(rows[rng.gen_range(0..n)]);
    let mut dist: Vec<f64> = rows.iter().map(|r| d2(r, &c[..dim])).collect();
    while c.len() < k * dim {
        let total: f64 = dist.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.gen::<f64>() * total;
            dist.iter()
                .position(|&d| {
                    u -= d;
                    u <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.gen_range(0..n) // every point coincides with a centre
        };
        let start = c.len();
        c.extend_from_slice(rows[pick]);
        for (d, r) in dist.iter_mut().zip(rows) {
            *d = d.min(d2(r, &c[start..start + dim]));
        }
    }
    c
}

/// Index of the centroid in `c` (row-major, `dim` wide) nearest to `r`, and its squared distance.
fn nearest(r: &[f32], c: &[f32], dim: usize) -> (usize, f64) {
    c.chunks_exact(dim).map(|cc| d2(r, cc)).enumerate().fold((0, f64::INFINITY), |acc, (j, d)| if d < acc.1 { (j, d) } else { acc })
}

fn lloyd(rows: &[&[f32]], dim: usize, p: &KMeansParams, mut c: Vec<f32>, tol: f64) -> KMeans {
    let k = p.k;
    let mut labels = vec![0usize; rows.len()];
    let mut dists = vec![0f64; rows.len()];
    for _ in 0..p.max_iter.max(1) {
        for (i, r) in rows.iter().enumerate() {
            (labels[i], dists[i]) = nearest(r, &c, dim);
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (r, &l) in rows.iter().zip(&labels) {
            counts[l] += 1;
            for (s, v) in sums[l * dim..(l + 1) * dim].iter_mut().zip(*r) {
                *s += *v as f64;
            }
        }
        let mut new = vec![0f32; k * dim];
        for j in 0..k {
            if counts[j] == 0 {
                // Empty cluster: restart it at the point currently worst served.
                let far = (0..rows.len()).max_by(|&a, &b| dists[a].total_cmp(&dists[b])).unwrap_or(0);
                new[j * dim..(j + 1) * dim].copy_from_slice(rows[far]);
                dists[far] = 0.0;
            } else {
                for d in 0..dim {
                    new[j * dim + d] = (sums[j * dim + d] / counts[j] as f64) as f32;
                }
            }
        }
        let shift = d2(&new, &c);
        c = new;
        if shift <= tol {
            break;
        }
    }
    // Final assignment against the final centroids so labels and inertia agree with them.
    let mut inertia = 0f64;
    for (i, r) in rows.iter().enumerate() {
        let (best, bd) = nearest(r, &c, dim);
        labels[i] = best;
        inertia += bd;
    }
    KMeans { centroids: c, dim, inertia, labels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hand_computed_centroids() {
        // Two obvious groups in 2-D; the centroids are the group means, inertia the hand sum.
        let data = [0.0, 0.0, 0.0, 2.0, 10.0, 10.0, 12.0, 10.0];
        let km = KMeans::fit(&data, 2, &KMeansParams::new(2, 0)).unwrap();
        let mut cs: Vec<(f32, f32)> = km.centroids.chunks(2).map(|c| (c[0], c[1])).collect();
        cs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(cs, vec![(0.0, 1.0), (11.0, 10.0)]);
        assert!((km.inertia - 4.0).abs() < 1e-9, "{}", km.inertia);
        assert_eq!(km.labels[0], km.labels[1]);
        assert_eq!(km.labels[2], km.labels[3]);
        assert_ne!(km.labels[0], km.labels[2]);
        let p = km.predict(&[1.0, 1.0, 11.0, 9.0]).unwrap();
        assert_eq!((p[0].cluster, p[1].cluster), (km.labels[0], km.labels[2]));
    }

    #[test]
    fn rejects_bad_k_and_values() {
        assert!(KMeans::fit(&[1.0, 2.0], 1, &KMeansParams::new(3, 0)).is_err());
        assert!(KMeans::fit(&[1.0, f32::NAN], 1, &KMeansParams::new(1, 0)).is_err());
        assert!(KMeans::fit(&[1.0, 2.0, 3.0], 2, &KMeansParams::new(1, 0)).is_err());
    }

    #[test]
    fn same_seed_same_result_with_duplicates() {
        let data: Vec<f32> = (0..60).map(|i| ((i % 3) * 5) as f32).collect();
        let a = KMeans::fit(&data, 1, &KMeansParams::new(3, 7)).unwrap();
        assert_eq!(a, KMeans::fit(&data, 1, &KMeansParams::new(3, 7)).unwrap());
        assert!(a.inertia < 1e-9);
    }
}
