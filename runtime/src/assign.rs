//! Nearest-centroid assignment of a latent vector.
//!
//! Distance is Euclidean, `d(z, c) = sqrt(sum_j (z_j - c_j)^2)`, the metric k-means minimises
//! (squared) when the centroids are fitted, so training-time clusters and device-time clusters
//! agree.

/// Result of assigning one latent vector to the stored centroid table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Index of the nearest centroid.
    pub cluster: usize,
    /// Euclidean distance to that centroid.
    pub distance: f32,
    /// Distance to the second-nearest centroid (`f32::INFINITY` when there is one centroid);
    /// a small gap to `distance` flags an ambiguous assignment.
    pub second_distance: f32,
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
    /// The latent vector contains NaN or infinity.
    #[error("latent vector holds a non-finite value at index {index}")]
    NonFinite { index: usize },
}

/// Assigns `latent` to the nearest row of `centroids` (row-major, `k x dim`).
pub fn assign(latent: &[f32], centroids: &[f32], dim: usize) -> Result<Assignment, AssignError> {
    if dim == 0 {
        return Err(AssignError::ZeroDim);
    }
    if centroids.is_empty() {
        return Err(AssignError::NoCentroids);
    }
    if centroids.len() % dim != 0 {
        return Err(AssignError::RaggedCentroids { len: centroids.len(), dim });
    }
    if latent.len() != dim {
        return Err(AssignError::DimMismatch { got: latent.len(), expected: dim });
    }
    if let Some(index) = latent.iter().position(|v| !v.is_finite()) {
        return Err(AssignError::NonFinite { index });
    }
    let mut best = (0usize, f32::INFINITY);
    let mut second = f32::INFINITY;
    for (k, c) in centroids.chunks_exact(dim).enumerate() {
        let d2: f32 = latent.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
        if d2 < best.1 {
            second = best.1;
            best = (k, d2);
        } else if d2 < second {
            second = d2;
        }
    }
    Ok(Assignment { cluster: best.0, distance: sqrt(best.1), second_distance: sqrt(second) })
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
    fn single_centroid_has_infinite_second() {
        let a = assign(&[1.0], &[4.0], 1).unwrap();
        assert_eq!((a.cluster, a.distance), (0, 3.0));
        assert_eq!(a.second_distance, f32::INFINITY);
    }

    #[test]
    fn rejects_bad_shapes_and_values() {
        assert_eq!(assign(&[1.0], &[1.0], 0), Err(AssignError::ZeroDim));
        assert_eq!(assign(&[1.0], &[], 1), Err(AssignError::NoCentroids));
        assert_eq!(
            assign(&[1.0, 2.0], &[1.0, 2.0, 3.0], 2),
            Err(AssignError::RaggedCentroids { len: 3, dim: 2 })
        );
        assert_eq!(assign(&[1.0], &[1.0, 2.0], 2), Err(AssignError::DimMismatch { got: 1, expected: 2 }));
        assert_eq!(assign(&[f32::NAN, 0.0], &[1.0, 2.0], 2), Err(AssignError::NonFinite { index: 0 }));
    }
}
