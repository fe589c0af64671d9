//! Consensus of several partitions of the same points: evidence accumulation (Fred & Jain,
//! 2005). Two points' co-association is the share of partitions that put them together; the
//! consensus is the average-linkage (UPGMA) tree on `1 − co-association`, cut at `k` clusters.
//!
//! The co-association of two points depends only on their *signatures* (the tuple of their
//! labels across the partitions), so the tree is built on the distinct signatures, each weighted
//! by its points: average linkage on the points merges identical ones first at distance 0 and
//! then proceeds exactly as weighted UPGMA on the signatures. A handful of partitions of k
//! clusters has a few hundred signatures where the points number thousands, so the `O(U³)` loop
//! below needs no `n × n` matrix. Written here because it is this one cut of one tree over a
//! small weighted table; the clustering crates on crates.io (`kodama` and the like) take a
//! condensed `n × n` matrix of the points.

use std::collections::BTreeMap;

/// Largest number of distinct signatures clustered; rarer signatures beyond it join the
/// signature nearest to them (by co-association) before the tree is built.
pub const MAX_SIGNATURES: usize = 1500;

/// The consensus partition of `partitions` (each one label per point, all the same length) in at
/// most `k` clusters, labelled `0..` in order of first appearance. Empty input gives an empty
/// partition.
pub fn consensus(partitions: &[&[usize]], k: usize) -> Vec<usize> {
    let n = partitions.first().map_or(0, |p| p.len());
    if n == 0 || partitions.iter().any(|p| p.len() != n) {
        return Vec::new();
    }
    let m = partitions.len() as f64;
    // Distinct signatures, most frequent first (ties by signature: deterministic).
    let mut counts: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
    let sig = |i: usize| -> Vec<usize> { partitions.iter().map(|p| p[i]).collect() };
    for i in 0..n {
        *counts.entry(sig(i)).or_insert(0) += 1;
    }
    let mut cells: Vec<(Vec<usize>, usize)> = counts.into_iter().collect();
    cells.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let dist = |a: &[usize], b: &[usize]| 1.0 - a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / m;
    // Rare signatures beyond the cap are folded into their nearest kept one.
    let kept = cells.len().min(MAX_SIGNATURES);
    let mut of_sig: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
    let mut weight: Vec<f64> = cells[..kept].iter().map(|c| c.1 as f64).collect();
    for (u, c) in cells.iter().enumerate() {
        let to = if u < kept {
            u
        } else {
            let to = (0..kept).min_by(|&a, &b| dist(&c.0, &cells[a].0).total_cmp(&dist(&c.0, &cells[b].0))).unwrap_or(0);
            weight[to] += c.1 as f64;
            to
        };
        of_sig.insert(c.0.clone(), to);
    }
    let u = kept;
    let mut d: Vec<f64> = (0..u * u).map(|i| dist(&cells[i / u].0, &cells[i % u].0)).collect();
    // UPGMA: `group[c]` is the cluster cell `c` is in; `alive` the clusters left.
    let mut group: Vec<usize> = (0..u).collect();
    let mut alive: Vec<usize> = (0..u).collect();
    while alive.len() > k.max(1) {
        let (mut best, mut pair) = (f64::INFINITY, (0, 0));
        for (ai, &a) in alive.iter().enumerate() {
            for &b in &alive[ai + 1..] {
                if d[a * u + b] < best {
                    best = d[a * u + b];
                    pair = (a, b);
                }
            }
        }
        let (a, b) = pair;
        let (wa, wb) = (weight[a], weight[b]);
        for &c in &alive {
            if c != a && c != b {
                let v = (wa * d[a * u + c] + wb * d[b * u + c]) / (wa + wb);
                d[a * u + c] = v;
                d[c * u + a] = v;
            }
        }
        weight[a] = wa + wb;
        group.iter_mut().filter(|g| **g == b).for_each(|g| *g = a);
        alive.retain(|&c| c != b);
    }
    let mut name: BTreeMap<usize, usize> = BTreeMap::new();
    (0..n)
        .map(|i| {
            let g = group[of_sig[&sig(i)]];
            let next = name.len();
            *name.entry(g).or_insert(next)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Contingency;

    #[test]
    fn the_majority_partition_wins() {
        // Three partitions of 60 points agree on three blocks of 20; a fourth is unrelated.
        let truth: Vec<usize> = (0..60).map(|i| i / 20).collect();
        let noisy: Vec<usize> = (0..60).map(|i| if i % 7 == 0 { (i / 20 + 1) % 3 } else { i / 20 }).collect();
        let relabelled: Vec<usize> = truth.iter().map(|&c| 2 - c).collect();
        let other: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let c = consensus(&[&truth, &noisy, &relabelled, &other], 3);
        assert_eq!(c.len(), 60);
        assert!((Contingency::new(&truth, &c).ari() - 1.0).abs() < 1e-9, "{c:?}");
        // Negative control: the unrelated partition alone is not the truth.
        let alone = consensus(&[&other], 3);
        assert!(Contingency::new(&truth, &alone).ari() < 0.1);
    }

    #[test]
    fn labels_follow_first_appearance_and_k_bounds_them() {
        let a = [5, 5, 1, 1, 9, 9];
        let c = consensus(&[&a, &a], 3);
        assert_eq!(c, vec![0, 0, 1, 1, 2, 2]);
        let two = consensus(&[&a, &a], 2);
        assert_eq!(two.iter().max(), Some(&1));
        assert!(consensus(&[], 3).is_empty());
    }
}
