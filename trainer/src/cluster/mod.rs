//! Clustering decision vectors (latent + window summary; spectral or k-means), the prototypes a
//! device decides with, and scoring clusters against known labels.

pub mod consensus;
pub mod decision;
pub mod kmeans;
pub mod metrics;
pub mod null;
pub mod spectral;

pub use kmeans::{KMeans, KMeansParams};
pub use metrics::{ClusterScores, Contingency};
