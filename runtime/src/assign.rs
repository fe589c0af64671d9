//! Nearest-prototype assignment of a decision vector (the latent, or the latent beside the
//! window's summary; see [`crate::bundle`]).
//!
//! Distance is Euclidean, `d(x, p) = sqrt(sum_j (x_j - p_j)^2)`. Each prototype belongs to a
//! cluster; the nearest prototype names the cluster, and the runner-up distance is that of the
//! nearest prototype of any *other* cluster, so a small gap flags a window between two groups.
//! With one prototype per cluster this is nearest-centroid assignment, the rule k-means fits.

/// Result of assigning one latent vector to the stored centroid table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Cluster of the nearest prototype.
    pub cluster: usize,
    /// Euclidean distance to that prototype.
    pub distance: f32,
    /// Distance to the nearest prototype of another cluster (`f32::INFINITY` when there is
    /// one cluster); a small gap to `distance` flags an ambiguous assignment.
    pub second_distance: f32,
    /// `distance` exceeds the cluster's anomaly threshold (see [`crate::bundle`]); always false
    /// from [`assign`] / [`nearest`] alone, which know no thresholds.
    pub anomalous: bool,
}

/// Why a latent vector could not be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// The latent dimension is zero.
    #[error("latent dimension is zero")]
    ZeroDim,
    /// The centroid table is empty.
    #[error("the centroid table is empty")]
    NoCentroids,
    /// The centroid table length is not a multiple of the latent dimension.
    #[error("centroid table has {len} values, not a multiple of the latent dimension {dim}")]
    RaggedCentroids { len: usize, dim: usize },
    /// The latent vector has the wrong length.
    #[error("latent vector has {got} values, the centroids have {expected}")]
    DimMismatch { got: usize, expected: usize },
    /// The decision vector (latent, then the scaled window summary) contains NaN or infinity;
    /// finite samples near `f32::MAX` can overflow the window's statistics.
    #[error("decision vector (latent, then window summary) holds a non-finite value at index {index}")]
    NonFinite { index: usize },
}

/// Assigns `latent` to the nearest row of `centroids` (row-major, `k x dim`; row `i` is
/// cluster `i`).
pub fn assign(latent: &[f32], centroids: &[f32], dim: usize) -> Result<Assignment, AssignError> {
    if latent.len() != dim && dim != 0 {
        return Err(AssignError::DimMismatch { got: latent.len(), expected: dim });
    }
    nearest(|j| latent[j], dim, centroids, &[])
}

/// Nearest row of `prototypes` (row-major, `n x dim`) to the vector whose value `j` is
/// `value(j)`; row `i` belongs to cluster `clusters[i]` (or `i` when `clusters` is empty).
/// Computes each value once per prototype and needs no buffer.
pub fn nearest(value: impl Fn(usize) -> f32, dim: usize, prototypes: &[f32], clusters: &[f32]) -> Result<Assignment, AssignError> {
    if dim == 0 {
        return Err(AssignError::ZeroDim);
    }
    if !prototypes.len().is_multiple_of(dim) {
        return Err(AssignError::RaggedCentroids { len: prototypes.len(), dim });
    }
    nearest_of(value, dim, prototypes.chunks_exact(dim).map(|p| p.iter().copied()), clusters)
}

/// [`nearest`] over an int8 prototype table (row-major `n x dim` bytes; value `j` of a row is
/// `q · scales[j]`, see `crate::quant`).
pub fn nearest_int8(
    value: impl Fn(usize) -> f32,
    dim: usize,
    prototypes: &[i8],
    scales: &[f32],
    clusters: &[f32],
) -> Result<Assignment, AssignError> {
    if dim == 0 {
        return Err(AssignError::ZeroDim);
    }
    if !prototypes.len().is_multiple_of(dim) || scales.len() != dim {
        return Err(AssignError::RaggedCentroids { len: prototypes.len(), dim });
    }
    nearest_of(value, dim, prototypes.chunks_exact(dim).map(|p| p.iter().zip(scales).map(|(&q, &s)| q as f32 * s)), clusters)
}

/// The search both tables share: `rows` yields each prototype's `dim` values in order.
fn nearest_of<R: Iterator<Item = f32>>(
    value: impl Fn(usize) -> f32,
    dim: usize,
    rows: impl Iterator<Item = R>,
    clusters: &[f32],
) -> Result<Assignment, AssignError> {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return Err(AssignError::NoCentroids);
    }
    if let Some(index) = (0..dim).position(|j| !value(j).is_finite()) {
        return Err(AssignError::NonFinite { index });
    }
    let cluster_of = |i: usize| if clusters.is_empty() { i } else { clusters[i] as usize };
    // A new best of another cluster makes the old best the runner-up: every other cluster's
    // distance was already at least the old best.
    let mut best = (usize::MAX, f32::INFINITY);
    let mut second = f32::INFINITY;
    for (i, p) in rows.enumerate() {
        let mut d2 = 0f32;
        for (j, pj) in p.enumerate() {
            let e = value(j) - pj;
            d2 += e * e;
        }
        let c = cluster_of(i);
        if d2 < best.1 {
            if c != best.0 {
                second = best.1;
            }
            best = (c, d2);
        } else if c != best.0 && d2 < second {
            second = d2;
        }
    }
    // All distances infinite (values near f32::MAX): the first prototype, as with finite ones.
    let cluster = if best.0 == usize::MAX { cluster_of(0) } else { best.0 };
    Ok(Assignment { cluster, distance: sqrt(best.1), second_distance: sqrt(second), anomalous: false })
}

/// Correctly rounded square root from `libm` (pure Rust): `f32::sqrt` needs std, and a
/// hand-rolled iteration would differ from it in the last bit, so distances would differ between
/// hosts and microcontrollers.
fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_nearest_and_second() {
        let c = [0.0, 0.0, 3.0, 4.0, 10.0, 10.0];
        let a = assign(&[2.9, 4.0], &c, 2).unwrap();
        assert_eq!(a.cluster, 1);
        assert!((a.distance - 0.1).abs() < 1e-5);
        assert!((a.second_distance - (2.9f32 * 2.9 + 16.0).sqrt()).abs() < 1e-4);
    }

    #[test]
    fn runner_up_is_the_nearest_other_cluster() {
        // Prototypes 0 and 1 are cluster 0, prototype 2 is cluster 1.
        let p = [0.0, 1.0, 10.0];
        let a = nearest(|_| 0.2, 1, &p, &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!(a.cluster, 0);
        assert!((a.distance - 0.2).abs() < 1e-6);
        assert!((a.second_distance - 9.8).abs() < 1e-5, "{a:?}");
        let a = nearest(|_| 9.0, 1, &p, &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!((a.cluster, a.distance), (1, 1.0));
        assert_eq!(a.second_distance, 8.0);
    }

    #[test]
    fn single_centroid_has_infinite_second() {
        let a = assign(&[1.0], &[4.0], 1).unwrap();
        assert_eq!((a.cluster, a.distance), (0, 3.0));
        assert_eq!(a.second_distance, f32::INFINITY);
    }

    #[test]
    fn rejects_bad_shapes_and_values() {
        assert_eq!(assign(&[1.0], &[1.0], 0), Err(AssignError::ZeroDim));
        assert_eq!(assign(&[1.0], &[], 1), Err(AssignError::NoCentroids));
        assert_eq!(assign(&[1.0, 2.0], &[1.0, 2.0, 3.0], 2), Err(AssignError::RaggedCentroids { len: 3, dim: 2 }));
        assert_eq!(assign(&[1.0], &[1.0, 2.0], 2), Err(AssignError::DimMismatch { got: 1, expected: 2 }));
        assert_eq!(assign(&[f32::NAN, 0.0], &[1.0, 2.0], 2), Err(AssignError::NonFinite { index: 0 }));
    }
}
