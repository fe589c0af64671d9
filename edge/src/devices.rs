//! The per-device table: every scored window of a device folded into one row, in memory bounded
//! by the number of devices (one small record each, not one per window).
//!
//! A device's cluster is the majority of its windows' clusters. Ties go to the tied cluster
//! whose windows lie nearer their prototypes on average (the better-supported one), then to the
//! lowest cluster id.

use std::collections::HashMap;

use runtime::Assignment;

use crate::fleet::Window;

/// Running totals of one device.
#[derive(Debug, Clone)]
struct Totals {
    counts: Vec<u64>,
    distance_sums: Vec<f64>,
    max_distance: f32,
    anomalous: u64,
    first: String,
    last: String,
    latest_cluster: usize,
}

/// One device's row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// Windows scored.
    pub windows: u64,
    /// The device's cluster: the majority of its windows (tie rule in the module docs).
    pub cluster: usize,
    /// Share of its windows in that cluster.
    pub share: f64,
    /// Windows per cluster, `k` entries.
    pub counts: Vec<u64>,
    /// Mean distance of its windows to their nearest prototype.
    pub mean_distance: f64,
    /// Largest such distance.
    pub max_distance: f32,
    /// Windows flagged anomalous.
    pub anomalous_windows: u64,
    /// Timestamp of its first window's first sample.
    pub first_timestamp: String,
    /// Timestamp of its last window's last sample.
    pub last_timestamp: String,
    /// Cluster of its latest window (differs from `cluster` when the device drifted).
    pub latest_cluster: usize,
}

/// Per-device totals over the windows added so far.
#[derive(Debug, Clone)]
pub struct DeviceTable {
    k: usize,
    devices: HashMap<String, Totals>,
}

impl DeviceTable {
    /// An empty table for a model of `k` clusters.
    pub fn new(k: usize) -> Self {
        DeviceTable { k, devices: HashMap::new() }
    }

    /// Devices with at least one window.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no window was added.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Folds in one scored window (windows of a device come in time order).
    pub fn add(&mut self, w: &Window, a: &Assignment) {
        let k = self.k;
        let t = self.devices.entry(w.device.clone()).or_insert_with(|| Totals {
            counts: vec![0; k],
            distance_sums: vec![0.0; k],
            max_distance: 0.0,
            anomalous: 0,
            first: w.start.clone(),
            last: String::new(),
            latest_cluster: a.cluster,
        });
        let c = a.cluster.min(k - 1);
        t.counts[c] += 1;
        t.distance_sums[c] += a.distance as f64;
        t.max_distance = t.max_distance.max(a.distance);
        t.anomalous += a.anomalous as u64;
        t.last.clone_from(&w.end);
        t.latest_cluster = a.cluster;
    }

    /// One row per device, sorted by device id.
    pub fn rows(&self) -> Vec<DeviceRow> {
        let mut rows: Vec<DeviceRow> = self
            .devices
            .iter()
            .map(|(device, t)| {
                let windows: u64 = t.counts.iter().sum();
                let mean = |c: usize| t.distance_sums[c] / t.counts[c].max(1) as f64;
                let cluster = (0..self.k)
                    .max_by(|&a, &b| t.counts[a].cmp(&t.counts[b]).then(mean(b).total_cmp(&mean(a))).then(b.cmp(&a)))
                    .unwrap_or(0);
                DeviceRow {
                    device: device.clone(),
                    windows,
                    cluster,
                    share: t.counts[cluster] as f64 / windows.max(1) as f64,
                    counts: t.counts.clone(),
                    mean_distance: t.distance_sums.iter().sum::<f64>() / windows.max(1) as f64,
                    max_distance: t.max_distance,
                    anomalous_windows: t.anomalous,
                    first_timestamp: t.first.clone(),
                    last_timestamp: t.last.clone(),
                    latest_cluster: t.latest_cluster,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.device.cmp(&b.device));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(d: &str, s: &str, e: &str) -> Window {
        Window { device: d.into(), start: s.into(), end: e.into(), session: None }
    }

    fn asg(cluster: usize, distance: f32, anomalous: bool) -> Assignment {
        Assignment { cluster, distance, second_distance: distance + 1.0, anomalous }
    }

    #[test]
    fn majority_ties_and_drift() {
        let mut t = DeviceTable::new(3);
        // Device b: two windows each in clusters 0 and 2; cluster 2's are nearer, so it wins.
        for (c, d) in [(0, 2.0), (2, 1.0), (0, 2.0), (2, 1.0)] {
            t.add(&win("b", "1", "2"), &asg(c, d, false));
        }
        // Device a: mostly 1, latest window in 0 (drift), one anomalous window.
        t.add(&win("a", "10", "20"), &asg(1, 1.0, false));
        t.add(&win("a", "21", "30"), &asg(1, 3.0, true));
        t.add(&win("a", "31", "40"), &asg(0, 2.0, false));
        let rows = t.rows();
        assert_eq!(rows.iter().map(|r| r.device.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let a = &rows[0];
        assert_eq!((a.windows, a.cluster, a.latest_cluster, a.anomalous_windows), (3, 1, 0, 1));
        assert_eq!(a.counts, vec![1, 2, 0]);
        assert!((a.share - 2.0 / 3.0).abs() < 1e-12 && (a.mean_distance - 2.0).abs() < 1e-12);
        assert_eq!((a.max_distance, a.first_timestamp.as_str(), a.last_timestamp.as_str()), (3.0, "10", "40"));
        assert_eq!(rows[1].cluster, 2, "a tie goes to the nearer cluster");
    }
}
