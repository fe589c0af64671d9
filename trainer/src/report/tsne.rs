//! t-SNE of the latent means through the `bhtsne` crate: exact for small sets, Barnes-Hut
//! (θ = 0.5, vantage-point tree over Euclidean distances) above [`EXACT_MAX`] points.
//!
//! t-SNE matches neighbourhood probabilities: `p_{j|i} ∝ exp(−‖xᵢ−xⱼ‖² / 2σᵢ²)` with σᵢ set so
//! the perplexity `2^H(P_i)` equals the requested one, and `q_ij ∝ (1 + ‖yᵢ−yⱼ‖²)⁻¹` in 2-D; it
//! minimises KL(P‖Q) by gradient descent. The start is drawn from our seeded RNG (N(0, 10⁻⁴)), so
//! a plot is reproducible.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::vrae::standard_normal;

/// Above this many points the Barnes-Hut approximation is used.
pub const EXACT_MAX: usize = 1000;

/// t-SNE settings (`trainer plot --perplexity --tsne-iterations`).
#[derive(Debug, Clone, PartialEq)]
pub struct TsneParams {
    /// Effective number of neighbours [30]; lowered to (n−1)/3 for small sets.
    pub perplexity: f32,
    /// Gradient-descent iterations [1000].
    pub iterations: usize,
    /// Seed of the initial layout.
    pub seed: u64,
}

impl TsneParams {
    /// The defaults (also those of the CLI's flags).
    pub const DEFAULT: TsneParams = TsneParams { perplexity: 30.0, iterations: 1000, seed: 0 };
}

impl Default for TsneParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A 2-D layout and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Tsne {
    /// One point per input row.
    pub points: Vec<[f64; 2]>,
    /// Perplexity actually used.
    pub perplexity: f32,
    /// Whether Barnes-Hut was used.
    pub barnes_hut: bool,
}

/// Embeds `data` (`n` rows of `dim` values) in 2-D.
pub fn tsne(data: &[f32], dim: usize, p: &TsneParams) -> Result<Tsne> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(Error::Param(format!("t-SNE input of {} values is not rows of {dim}", data.len())));
    }
    let n = data.len() / dim;
    if n < 4 {
        return Err(Error::Param(format!("t-SNE needs at least 4 points, got {n}")));
    }
    if p.perplexity.is_nan() || p.perplexity <= 0.0 || p.iterations == 0 {
        return Err(Error::Param(format!("t-SNE needs perplexity > 0 and iterations >= 1 (got {} and {})", p.perplexity, p.iterations)));
    }
    // bhtsne requires n − 1 ≥ 3·perplexity (it looks at 3·perplexity neighbours).
    let perplexity = p.perplexity.min(((n - 1) / 3) as f32).max(1.0);
    let rows: Vec<&[f32]> = data.chunks(dim).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let init: Vec<f32> = standard_normal(&mut rng, 2 * n).iter().map(|v| v * 1e-2).collect();
    let mut t: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&rows);
    t.perplexity(perplexity).epochs(p.iterations).initial_embedding(init);
    let barnes_hut = n > EXACT_MAX;
    if barnes_hut {
        t.barnes_hut(0.5, |a, b| sq_dist(a, b).sqrt());
    } else {
        t.exact(|a, b| sq_dist(a, b));
    }
    let e = t.embedding();
    let points: Vec<[f64; 2]> = e.chunks(2).map(|c| [c[0] as f64, c[1] as f64]).collect();
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::Training("t-SNE produced non-finite coordinates".into()));
    }
    Ok(Tsne { points, perplexity, barnes_hut })
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Three tight, far-apart blobs in 10-D stay three separated groups in 2-D: every point's
    /// nearest neighbour in the layout is from its own blob, and the blobs' spreads are small
    /// next to the distances between their centres.
    fn check_separated(n_per: usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (dim, mut data, mut label) = (10, Vec::new(), Vec::new());
        for c in 0..3 {
            for _ in 0..n_per {
                for d in 0..dim {
                    let centre = if d == c { 20.0 } else { 0.0 };
                    data.push(centre + rng.gen_range(-1.0..1.0));
                }
                label.push(c);
            }
        }
        let t = tsne(&data, dim, &TsneParams { iterations: 500, ..Default::default() }).unwrap();
        assert_eq!(t.barnes_hut, 3 * n_per > EXACT_MAX);
        let p = &t.points;
        let d = |i: usize, j: usize| ((p[i][0] - p[j][0]).powi(2) + (p[i][1] - p[j][1]).powi(2)).sqrt();
        for i in 0..p.len() {
            let nn = (0..p.len()).filter(|&j| j != i).min_by(|&a, &b| d(i, a).total_cmp(&d(i, b))).unwrap();
            assert_eq!(label[nn], label[i], "point {i}'s nearest neighbour is in another blob");
        }
        let centre = |c: usize| {
            let idx: Vec<usize> = (0..p.len()).filter(|&i| label[i] == c).collect();
            let m = idx.iter().fold([0.0, 0.0], |a, &i| [a[0] + p[i][0], a[1] + p[i][1]]);
            let m = [m[0] / idx.len() as f64, m[1] / idx.len() as f64];
            let spread = idx.iter().map(|&i| ((p[i][0] - m[0]).powi(2) + (p[i][1] - m[1]).powi(2)).sqrt()).fold(0.0, f64::max);
            (m, spread)
        };
        let cs: Vec<_> = (0..3).map(centre).collect();
        for a in 0..3 {
            for b in a + 1..3 {
                let gap = ((cs[a].0[0] - cs[b].0[0]).powi(2) + (cs[a].0[1] - cs[b].0[1]).powi(2)).sqrt();
                assert!(gap > cs[a].1 + cs[b].1, "blobs {a} and {b} overlap: gap {gap}, spreads {} {}", cs[a].1, cs[b].1);
            }
        }
    }

    #[test]
    fn exact_keeps_separated_clusters_separated() {
        check_separated(40);
    }

    #[test]
    fn barnes_hut_keeps_separated_clusters_separated() {
        check_separated(400);
    }

    #[test]
    fn small_and_bad_inputs() {
        assert!(tsne(&[0.0; 6], 2, &TsneParams::default()).is_err());
        let t = tsne(&(0..20).map(|i| i as f32).collect::<Vec<_>>(), 2, &TsneParams::default()).unwrap();
        assert_eq!((t.points.len(), t.perplexity), (10, 3.0));
        assert!(tsne(&[0.0; 20], 2, &TsneParams { perplexity: f32::NAN, ..Default::default() }).is_err());
    }
}
