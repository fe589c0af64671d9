//! Spectral clustering on a k-nearest-neighbour graph (Ng, Jordan & Weiss 2001), with the
//! eigengap heuristic for choosing the number of clusters.
//!
//! 1. Graph: every point links to its `n_neighbors` nearest points (Euclidean, itself
//!    included, as scikit-learn's `kneighbors_graph`); `W = (A + Aᵀ) / 2`.
//! 2. `M = D^{-1/2} W D^{-1/2}` (`D` the degrees). Its largest eigenvalues `1 = λ_1 >= λ_2 ...`
//!    are `1 - μ` for the smallest eigenvalues `μ` of the normalised Laplacian; a graph with `c`
//!    well-separated groups has `c` eigenvalues near 1, then a gap.
//! 3. The top `k` eigenvectors, each row scaled to unit length, are clustered with k-means.
//!
//! Eigenvectors come from subspace iteration on the sparse `M` (a block of `k + 8` vectors, 300
//! products, then the small Rayleigh-Ritz problem with nalgebra): O(300 · b · (nnz + n·b)),
//! about a second for 5000 points, where a dense eigendecomposition would be O(n³). Written here
//! because no kept crate offers a sparse symmetric eigensolver without a BLAS/LAPACK system
//! dependency. The start block is seeded and no step is parallel, so results do not depend on
//! the thread count.
//!
//! Why: k-means on the latents assumes round clusters of equal spread; the kNN graph follows
//! the shape the data lies on (measured on the dev suite: see the README's results).

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::kmeans::{KMeans, KMeansParams};
use crate::error::{Error, Result};

/// Spectral clustering settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectralParams {
    /// Neighbours per point in the graph.
    pub n_neighbors: usize,
    /// k-means restarts on the spectral embedding.
    pub n_init: usize,
    /// Seed of the Lanczos start vector and of k-means.
    pub seed: u64,
}

/// The sparse symmetric graph `M = D^{-1/2} W D^{-1/2}` as rows of `(column, weight)`.
#[derive(Debug, Clone)]
pub struct Graph {
    rows: Vec<Vec<(usize, f64)>>,
    /// Degrees of `W`, so `W_ij = M_ij sqrt(d_i d_j)` (for [`Graph::modularity`]).
    deg: Vec<f64>,
}

fn d2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Indices of the `k` rows nearest `q` (squared Euclidean, ties broken by index, so the result is
/// deterministic), in no particular order; `1 <= k <= rows.len()`.
pub(crate) fn nearest_rows(rows: &[&[f32]], q: &[f32], k: usize) -> Vec<usize> {
    let mut d: Vec<(f32, usize)> = rows.iter().enumerate().map(|(j, r)| (d2(r, q), j)).collect();
    d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.truncate(k);
    d.into_iter().map(|(_, j)| j).collect()
}

impl Graph {
    /// The normalised kNN graph of `data` (row-major `n x dim`). Exact neighbours by brute force
    /// (ties broken by index, so the graph is deterministic).
    pub fn knn(data: &[f32], dim: usize, n_neighbors: usize) -> Result<Graph> {
        if dim == 0 || !data.len().is_multiple_of(dim) || data.is_empty() {
            return Err(Error::Param(format!("spectral: {} values do not form rows of {dim}", data.len())));
        }
        let n = data.len() / dim;
        let kk = n_neighbors.clamp(1, n);
        let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
        let nbrs: Vec<Vec<usize>> = (0..n).into_par_iter().map(|i| nearest_rows(&rows, rows[i], kk)).collect();
        let mut w: Vec<std::collections::BTreeMap<usize, f64>> = vec![Default::default(); n];
        for (i, ns) in nbrs.iter().enumerate() {
            for &j in ns {
                *w[i].entry(j).or_insert(0.0) += 0.5;
                *w[j].entry(i).or_insert(0.0) += 0.5;
            }
        }
        let deg: Vec<f64> = w.iter().map(|r| r.values().sum::<f64>()).collect();
        let rows =
            w.into_iter().enumerate().map(|(i, r)| r.into_iter().map(|(j, v)| (j, v / (deg[i] * deg[j]).sqrt())).collect()).collect();
        Ok(Graph { rows, deg })
    }

    /// Newman's modularity of the partition `labels` on `W`:
    /// `Q = Σ_c [ W(c, c) / W(V, V) - (vol(c) / W(V, V))² ]`, the share of edge weight inside
    /// the clusters minus what a random graph with the same degrees would put there. A
    /// representation whose kNN graph falls apart along its clusters scores high; labels of
    /// the data play no part. `labels` has one entry per point, values below `k`.
    pub fn modularity(&self, labels: &[usize], k: usize) -> f64 {
        let total: f64 = self.deg.iter().sum();
        if total <= 0.0 || labels.len() != self.rows.len() {
            return f64::NAN;
        }
        let mut inside = vec![0f64; k];
        let mut vol = vec![0f64; k];
        for (i, r) in self.rows.iter().enumerate() {
            let c = labels[i];
            vol[c] += self.deg[i];
            for &(j, m) in r {
                if labels[j] == c {
                    inside[c] += m * (self.deg[i] * self.deg[j]).sqrt();
                }
            }
        }
        inside.iter().zip(&vol).map(|(w, v)| w / total - (v / total).powi(2)).sum()
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the graph has no points.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn mul(&self, x: &[f64], y: &mut [f64]) {
        for (yi, r) in y.iter_mut().zip(&self.rows) {
            *yi = r.iter().map(|&(j, v)| v * x[j]).sum();
        }
    }

    /// The `count` largest eigenvalues of `M` (descending) and their eigenvectors (column `c` of
    /// the row-major `n x count` matrix is eigenvector `c`).
    ///
    /// Subspace iteration on `(M + I) / 2` (positive semi-definite, same eigenvectors) with a
    /// block of `count + 8` vectors, re-orthonormalised every step, then Rayleigh-Ritz: unlike
    /// single-vector Lanczos it finds repeated and clustered eigenvalues (a graph of `c`
    /// well-separated groups has `c` eigenvalues at or near 1), and converges for eigenvalue `i`
    /// like `((1 + λ_{b+1}) / (1 + λ_i))^iterations`.
    pub fn top_eigen(&self, count: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let n = self.len();
        let count = count.min(n);
        let b = (count + 8).min(n);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1a2c);
        // Column-major block: x[c] is column c.
        let mut x: Vec<Vec<f64>> = (0..b).map(|_| (0..n).map(|_| rng.gen::<f64>() - 0.5).collect()).collect();
        orthonormalize(&mut x, &mut rng);
        let mut y = vec![0f64; n];
        for _ in 0..SUBSPACE_ITERATIONS {
            for col in x.iter_mut() {
                self.mul(col, &mut y);
                col.iter_mut().zip(&y).for_each(|(c, m)| *c = 0.5 * (*c + m));
            }
            orthonormalize(&mut x, &mut rng);
        }
        // Rayleigh-Ritz on the block.
        let mx: Vec<Vec<f64>> = x
            .iter()
            .map(|col| {
                let mut out = vec![0f64; n];
                self.mul(col, &mut out);
                out
            })
            .collect();
        let t = DMatrix::<f64>::from_fn(b, b, |i, j| 0.5 * (dot(&x[i], &mx[j]) + dot(&x[j], &mx[i])));
        let eig = SymmetricEigen::new(t);
        let mut order: Vec<usize> = (0..b).collect();
        order.sort_by(|&a, &c| eig.eigenvalues[c].total_cmp(&eig.eigenvalues[a]).then(a.cmp(&c)));
        let values: Vec<f64> = order[..count].iter().map(|&i| eig.eigenvalues[i]).collect();
        let mut vectors = vec![0f64; n * count];
        for (c, &i) in order[..count].iter().enumerate() {
            let yv = eig.eigenvectors.column(i);
            let mut col = vec![0f64; n];
            for (xj, yj) in x.iter().zip(yv.iter()) {
                col.iter_mut().zip(xj).for_each(|(v, xv)| *v += yj * xv);
            }
            // Fixed sign (largest entry positive), so the embedding is reproducible.
            let big = col.iter().copied().fold(0f64, |m, v| if v.abs() > m.abs() { v } else { m });
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            for (r, v) in col.iter().enumerate() {
                vectors[r * count + c] = sign * v;
            }
        }
        (values, vectors)
    }
}

/// Subspace iterations of [`Graph::top_eigen`]: enough for eigenvalues down to ~0.9 of the top
/// to converge to 1e-8 when the block's next eigenvalue is 0.2 lower.
const SUBSPACE_ITERATIONS: usize = 300;

/// Removes from column `c` its components along columns `0..c` (one Gram-Schmidt pass).
fn project_out(x: &mut [Vec<f64>], c: usize) {
    for prev in 0..c {
        let (done, rest) = x.split_at_mut(c);
        let d = dot(&rest[0], &done[prev]);
        rest[0].iter_mut().zip(&done[prev]).for_each(|(v, p)| *v -= d * p);
    }
}

/// Modified Gram-Schmidt, twice for accuracy; a column that vanishes (rank loss) is replaced by a
/// fresh random one and orthonormalised too.
fn orthonormalize(x: &mut [Vec<f64>], rng: &mut ChaCha8Rng) {
    for c in 0..x.len() {
        for _pass in 0..2 {
            project_out(x, c);
        }
        let norm = dot(&x[c], &x[c]).sqrt();
        if norm < 1e-12 {
            x[c].iter_mut().for_each(|v| *v = rng.gen::<f64>() - 0.5);
            project_out(x, c);
            normalize(&mut x[c]);
        } else {
            x[c].iter_mut().for_each(|v| *v /= norm);
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f64]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Spectral clusters of `data` (row-major `n x dim`) into `k` groups. Returns the labels.
pub fn spectral(data: &[f32], dim: usize, k: usize, p: &SpectralParams) -> Result<Vec<usize>> {
    let g = Graph::knn(data, dim, p.n_neighbors)?;
    spectral_on(&g, k, p)
}

/// Spectral clusters on a graph already built.
pub fn spectral_on(g: &Graph, k: usize, p: &SpectralParams) -> Result<Vec<usize>> {
    let n = g.len();
    if k == 0 || k > n {
        return Err(Error::Param(format!("spectral: cannot make {k} clusters of {n} points")));
    }
    let (_, vecs) = g.top_eigen(k, p.seed);
    let kk = vecs.len() / n;
    let mut emb = vec![0f32; n * kk];
    for i in 0..n {
        let row = &vecs[i * kk..(i + 1) * kk];
        let norm = dot(row, row).sqrt().max(1e-12);
        for c in 0..kk {
            emb[i * kk + c] = (row[c] / norm) as f32;
        }
    }
    let km = KMeans::fit(&emb, kk, &KMeansParams { n_init: p.n_init, ..KMeansParams::new(k, p.seed) })?;
    Ok(km.labels)
}

/// The eigengap choice of k in `2..=k_max`: the largest drop `λ_k - λ_{k+1}` among the graph's
/// top eigenvalues. Returns `(k, eigenvalues λ_1..λ_{k_max+1})`.
pub fn eigengap_k(g: &Graph, k_max: usize, seed: u64) -> (usize, Vec<f64>) {
    let k_max = k_max.clamp(2, g.len().saturating_sub(1).max(2));
    let (vals, _) = g.top_eigen(k_max + 1, seed);
    let mut best = (2usize, f64::NEG_INFINITY);
    for k in 2..=k_max.min(vals.len().saturating_sub(1)) {
        let gap = vals[k - 1] - vals[k];
        if gap > best.1 {
            best = (k, gap);
        }
    }
    (best.0, vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `c` blobs of 40 points in 5-D, centres 6 apart, spread 1.
    fn blobs(c: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..c * 40 {
            let g = i % c;
            for j in 0..5 {
                let centre = if j == g % 5 { 6.0 * (1 + g / 5) as f32 } else { 0.0 };
                x.push(centre + (rng.gen::<f32>() - 0.5) * 2.0);
            }
            y.push(g);
        }
        (x, y)
    }

    #[test]
    fn subspace_iteration_matches_dense_eigenvalues() {
        let (x, _) = blobs(3, 1);
        let g = Graph::knn(&x, 5, 8).unwrap();
        let n = g.len();
        let mut dense = DMatrix::<f64>::zeros(n, n);
        for (i, r) in g.rows.iter().enumerate() {
            for &(j, v) in r {
                dense[(i, j)] = v;
            }
        }
        let mut want: Vec<f64> = SymmetricEigen::new(dense).eigenvalues.iter().copied().collect();
        want.sort_by(|a, b| b.total_cmp(a));
        let (got, vecs) = g.top_eigen(5, 0);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-8, "{got:?} vs {:?}", &want[..5]);
        }
        assert!((got[0] - 1.0).abs() < 1e-9);
        // Eigenvectors: M v = λ v.
        let mut mv = vec![0f64; n];
        let v: Vec<f64> = (0..n).map(|r| vecs[r * 5 + 1]).collect();
        g.mul(&v, &mut mv);
        assert!(mv.iter().zip(&v).all(|(a, b)| (a - got[1] * b).abs() < 1e-7));
    }

    #[test]
    fn recovers_blobs_and_their_number() {
        for c in [2usize, 4, 7] {
            let (x, y) = blobs(c, c as u64);
            let g = Graph::knn(&x, 5, 10).unwrap();
            let (k, vals) = eigengap_k(&g, 12, 0);
            assert_eq!(k, c, "eigengap picked {k} for {c} blobs: {vals:?}");
            let p = SpectralParams { n_neighbors: 10, n_init: 5, seed: 0 };
            let labels = spectral_on(&g, c, &p).unwrap();
            let s = crate::cluster::Contingency::new(&y, &labels).scores();
            assert!(s.ari > 0.99, "{c} blobs: ARI {}", s.ari);
        }
    }

    #[test]
    fn follows_shape_where_kmeans_cannot() {
        // Two concentric rings: k-means splits them down the middle, the graph keeps each ring.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let r = if i % 2 == 0 { 1.0 } else { 4.0 };
            let a = rng.gen::<f32>() * std::f32::consts::TAU;
            x.extend([r * a.cos() + (rng.gen::<f32>() - 0.5) * 0.2, r * a.sin() + (rng.gen::<f32>() - 0.5) * 0.2]);
            y.push(i % 2);
        }
        let labels = spectral(&x, 2, 2, &SpectralParams { n_neighbors: 10, n_init: 5, seed: 0 }).unwrap();
        let s = crate::cluster::Contingency::new(&y, &labels).scores();
        assert!(s.ari > 0.99, "rings: ARI {}", s.ari);
        let km = KMeans::fit(&x, 2, &KMeansParams::new(2, 0)).unwrap();
        assert!(crate::cluster::Contingency::new(&y, &km.labels).scores().ari < 0.2);
    }

    #[test]
    fn same_labels_on_one_and_two_threads() {
        let (x, _) = blobs(4, 9);
        let p = SpectralParams { n_neighbors: 10, n_init: 5, seed: 4 };
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| spectral(&x, 5, 4, &p).unwrap());
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| spectral(&x, 5, 4, &p).unwrap());
        assert_eq!(one, two);
    }
}
