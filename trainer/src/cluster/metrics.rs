//! External cluster-quality scores against known labels.
//!
//! With `n_ij` the contingency table (true class `i`, cluster `j`), `a_i`, `b_j` its row and
//! column sums and `n` the total:
//! * ARI (Hubert & Arabie): `(Σ C(n_ij,2) - E) / (½(Σ C(a_i,2) + Σ C(b_j,2)) - E)` with
//!   `E = Σ C(a_i,2) Σ C(b_j,2) / C(n,2)`; 1 for identical partitions, ~0 for random ones.
//! * NMI (arithmetic normalisation, scikit-learn's default): `I(U;V) / ((H(U) + H(V)) / 2)`.
//! * Purity: `Σ_j max_i n_ij / n`.

use serde::{Deserialize, Serialize};

/// Scores of one clustering against labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterScores {
    /// Adjusted Rand index.
    pub ari: f64,
    /// Normalised mutual information.
    pub nmi: f64,
    /// Purity.
    pub purity: f64,
}

/// Contingency table between true classes (rows) and clusters (columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Contingency {
    counts: Vec<Vec<u64>>,
    n: u64,
}

impl Contingency {
    /// Counts pairs; `truth` and `pred` are dense indices of equal length.
    pub fn new(truth: &[usize], pred: &[usize]) -> Self {
        assert_eq!(truth.len(), pred.len(), "one prediction per label");
        let r = truth.iter().max().map_or(0, |m| m + 1);
        let c = pred.iter().max().map_or(0, |m| m + 1);
        let mut counts = vec![vec![0u64; c]; r];
        for (&t, &p) in truth.iter().zip(pred) {
            counts[t][p] += 1;
        }
        Contingency { counts, n: truth.len() as u64 }
    }

    fn rows(&self) -> Vec<u64> {
        self.counts.iter().map(|r| r.iter().sum()).collect()
    }

    fn cols(&self) -> Vec<u64> {
        let c = self.counts.first().map_or(0, |r| r.len());
        (0..c).map(|j| self.counts.iter().map(|r| r[j]).sum()).collect()
    }

    /// Adjusted Rand index.
    pub fn ari(&self) -> f64 {
        let c2 = |x: u64| (x as f64) * (x as f64 - 1.0) / 2.0;
        let sum_ij: f64 = self.counts.iter().flatten().map(|&x| c2(x)).sum();
        let sa: f64 = self.rows().into_iter().map(c2).sum();
        let sb: f64 = self.cols().into_iter().map(c2).sum();
        let total = c2(self.n);
        if total == 0.0 {
            return 1.0;
        }
        let expected = sa * sb / total;
        let max = 0.5 * (sa + sb);
        if max == expected {
            return 1.0; // both partitions trivial (all one cluster or all singletons) and equal
        }
        (sum_ij - expected) / (max - expected)
    }

    /// Normalised mutual information (arithmetic mean of the entropies).
    pub fn nmi(&self) -> f64 {
        let n = self.n as f64;
        let h = |v: Vec<u64>| -> f64 { v.into_iter().filter(|&x| x > 0).map(|x| x as f64 / n).map(|p| -p * p.ln()).sum() };
        let (rows, cols) = (self.rows(), self.cols());
        let (hu, hv) = (h(rows.clone()), h(cols.clone()));
        if hu == 0.0 && hv == 0.0 {
            return 1.0;
        }
        let mut mi = 0.0;
        for (i, r) in self.counts.iter().enumerate() {
            for (j, &x) in r.iter().enumerate() {
                if x > 0 {
                    let pij = x as f64 / n;
                    mi += pij * (pij * n * n / (rows[i] as f64 * cols[j] as f64)).ln();
                }
            }
        }
        let denom = (hu + hv) / 2.0;
        if denom == 0.0 {
            0.0
        } else {
            (mi / denom).clamp(0.0, 1.0)
        }
    }

    /// Purity.
    pub fn purity(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let cols = self.counts.first().map_or(0, |r| r.len());
        let hit: u64 = (0..cols).map(|j| self.counts.iter().map(|r| r[j]).max().unwrap_or(0)).sum();
        hit as f64 / self.n as f64
    }

    /// All three scores.
    pub fn scores(&self) -> ClusterScores {
        ClusterScores { ari: self.ari(), nmi: self.nmi(), purity: self.purity() }
    }
}

/// Maps string labels to dense indices in order of first appearance; returns the indices and the
/// distinct labels.
pub fn encode_labels(labels: &[String]) -> (Vec<usize>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let idx = labels
        .iter()
        .map(|l| match names.iter().position(|n| n == l) {
            Some(i) => i,
            None => {
                names.push(l.clone());
                names.len() - 1
            }
        })
        .collect();
    (idx, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-computed: truth [0,0,1,1], pred [0,0,1,2].
    // ARI: Σ C(n_ij,2) = 1, Σ C(a,2) = 2, Σ C(b,2) = 1, C(4,2) = 6 -> E = 1/3, max = 3/2,
    //      (1 - 1/3) / (3/2 - 1/3) = 4/7.
    // NMI: H(U) = ln 2, H(V) = 1.5 ln 2, I = ln 2 -> ln 2 / (1.25 ln 2) = 0.8.
    // Purity: clusters {0,0}, {1}, {1} -> 4/4.
    #[test]
    fn hand_computed_case() {
        let c = Contingency::new(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((c.ari() - 4.0 / 7.0).abs() < 1e-12, "{}", c.ari());
        assert!((c.nmi() - 0.8).abs() < 1e-12, "{}", c.nmi());
        assert_eq!(c.purity(), 1.0);
    }

    #[test]
    fn purity_and_ari_of_imperfect_clusters() {
        // truth [0,0,1,1], pred [0,0,0,1]: purity (2 + 1) / 4.
        // ARI: Σ C(n_ij,2) = 1, Σ C(a,2) = 2, Σ C(b,2) = 3, E = 1, max = 2.5 -> 0 / 1.5 = 0.
        let c = Contingency::new(&[0, 0, 1, 1], &[0, 0, 0, 1]);
        assert_eq!(c.purity(), 0.75);
        assert!(c.ari().abs() < 1e-12, "{}", c.ari());
    }

    #[test]
    fn identical_partitions_score_one_regardless_of_names() {
        let c = Contingency::new(&[0, 0, 1, 1, 2], &[2, 2, 0, 0, 1]);
        assert!((c.ari() - 1.0).abs() < 1e-12);
        assert!((c.nmi() - 1.0).abs() < 1e-12);
        assert_eq!(c.purity(), 1.0);
    }

    #[test]
    fn independent_partitions_have_zero_nmi() {
        // Every class spread evenly over every cluster: I(U;V) = 0.
        let c = Contingency::new(&[0, 0, 1, 1], &[0, 1, 0, 1]);
        assert!(c.nmi().abs() < 1e-12);
        assert!(c.ari() < 0.0);
    }

    #[test]
    fn encodes_labels_by_first_appearance() {
        let l: Vec<String> = ["b", "a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(encode_labels(&l), (vec![0, 1, 0, 2], vec!["b".into(), "a".into(), "c".into()]));
    }
}
