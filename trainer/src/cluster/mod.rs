//! Clustering latent vectors (k-means) and scoring clusters against known labels.

pub mod kmeans;
pub mod metrics;

pub use kmeans::{KMeans, KMeansParams};
pub use metrics::{ClusterScores, Contingency};
