//! Exact principal component analysis of the latent means.
//!
//! With X the n×d data and μ its column means, the covariance is
//! `C = (X−μ)ᵀ(X−μ) / (n−1)`; its eigenvectors sorted by eigenvalue λ₁ ≥ λ₂ ≥ … are the
//! principal axes, `λᵢ / Σλ` the explained-variance ratios, and a point's scores are
//! `(x−μ)·vᵢ`. Latents have tens of dimensions, so the d×d symmetric eigenproblem
//! (nalgebra's `SymmetricEigen`) is exact and instant. Each axis's sign is fixed so that its
//! largest-magnitude coordinate is positive, which makes the plot independent of the solver.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::error::{Error, Result};

/// A fitted 2-component PCA.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Column means.
    pub mean: Vec<f64>,
    /// The two principal axes (unit vectors of length d; the second is zero when d = 1).
    pub axes: [Vec<f64>; 2],
    /// Variance along each axis (eigenvalues).
    pub variance: [f64; 2],
    /// Share of the total variance along each axis.
    pub ratio: [f64; 2],
}

impl Pca {
    /// Fits on `data`, `n` rows of `dim` values (row-major).
    pub fn fit(data: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) || data.len() < 2 * dim {
            return Err(Error::Param(format!("PCA needs at least 2 rows of {dim} values, got {} values", data.len())));
        }
        let n = data.len() / dim;
        let mut mean = vec![0f64; dim];
        for row in data.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 / n as f64;
            }
        }
        let mut cov = DMatrix::<f64>::zeros(dim, dim);
        for row in data.chunks(dim) {
            for i in 0..dim {
                let di = row[i] as f64 - mean[i];
                for j in i..dim {
                    cov[(i, j)] += di * (row[j] as f64 - mean[j]);
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[(i, j)] / (n - 1) as f64;
                cov[(i, j)] = v;
                cov[(j, i)] = v;
            }
        }
        let eig = SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        let axis = |k: usize| -> (Vec<f64>, f64) {
            let Some(&c) = order.get(k) else { return (vec![0.0; dim], 0.0) };
            let mut v: Vec<f64> = eig.eigenvectors.column(c).iter().copied().collect();
            let big = v.iter().copied().fold(0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            (v, eig.eigenvalues[c].max(0.0))
        };
        let ((a0, v0), (a1, v1)) = (axis(0), axis(1));
        let ratio = if total > 0.0 { [v0 / total, v1 / total] } else { [0.0, 0.0] };
        Ok(Pca { mean, axes: [a0, a1], variance: [v0, v1], ratio })
    }

    /// Scores of every row on the two axes.
    pub fn transform(&self, data: &[f32]) -> Vec<[f64; 2]> {
        let d = self.mean.len();
        data.chunks(d)
            .map(|row| {
                let mut s = [0f64; 2];
                for (k, axis) in self.axes.iter().enumerate() {
                    s[k] = row.iter().zip(&self.mean).zip(axis).map(|((&x, m), a)| (x as f64 - m) * a).sum();
                }
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_aligned_case_by_hand() {
        // Mean 0; var(x) = 4·4/3 = 16/3, var(y) = 4/3, cov(x, y) = 0.
        let pts = [-2.0, -1.0, 2.0, 1.0, -2.0, 1.0, 2.0, -1.0];
        let p = Pca::fit(&pts, 2).unwrap();
        assert!((p.variance[0] - 16.0 / 3.0).abs() < 1e-12 && (p.variance[1] - 4.0 / 3.0).abs() < 1e-12, "{p:?}");
        assert!((p.ratio[0] - 0.8).abs() < 1e-12);
        assert!((p.axes[0][0] - 1.0).abs() < 1e-12 && p.axes[0][1].abs() < 1e-12);
        let s = p.transform(&pts);
        assert!((s[1][0] - 2.0).abs() < 1e-12 && (s[1][1] - 1.0).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn diagonal_case_by_hand() {
        // Points on y = x (offset by 1) plus a small orthogonal pair: the first axis is
        // (1, 1)/√2, and (3, 3) scores √2·2 on it (after removing the mean (1, 1)).
        let pts = [2.0, 2.0, 0.0, 0.0, 3.0, 3.0, -1.0, -1.0, 1.1, 0.9, 0.9, 1.1];
        let p = Pca::fit(&pts, 2).unwrap();
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((p.axes[0][0] - r).abs() < 1e-6 && (p.axes[0][1] - r).abs() < 1e-6, "{p:?}");
        assert!((p.mean[0] - 1.0).abs() < 1e-6);
        let s = p.transform(&pts);
        assert!((s[2][0] - 2.0 * 2f64.sqrt()).abs() < 1e-6 && s[2][1].abs() < 1e-6, "{s:?}");
        // Variances: along the line (1+1+4+4)·2/5 = 4, across 2·0.02/5 = 0.008.
        assert!((p.variance[0] - 4.0).abs() < 1e-6 && (p.variance[1] - 0.008).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn one_dimension_and_bad_shapes() {
        let p = Pca::fit(&[1.0, 2.0, 3.0], 1).unwrap();
        assert_eq!(p.axes[1], vec![0.0]);
        assert!(Pca::fit(&[1.0, 2.0], 2).is_err());
        assert!(Pca::fit(&[1.0, 2.0, 3.0], 2).is_err());
    }
}
