//! `trainer plot`: the report's figures for any data.

use std::path::Path;

use anyhow::{bail, Result};

use crate::args::*;
use crate::common::prepare_noted;
use trainer::artifacts::load_model;
use trainer::cluster::metrics::encode_labels;
use trainer::report::tsne::TsneParams;
use trainer::report::{decode_centroids, write_plots, PlotInput};
use trainer::train_log::read_training_log;

pub(crate) fn run_plot(a: PlotArgs) -> Result<()> {
    let dev = candle_core::Device::Cpu;
    let model = load_model(&a.model, &dev)?;
    let Some(centroids) = &model.centroids else {
        bail!("{}: no centroids.json; re-run `trainer fit` to produce one", model.dir.display());
    };
    let mut ds = load(&a.data, &a.data_args)?;
    prepare_noted(&mut ds, &model)?;
    let native = model.native()?;
    let z = native.embed(&ds.series)?;
    let clusters: Vec<(usize, f32)> = native.assign(&ds.series, &z)?.iter().map(|a| (a.cluster, a.distance)).collect();
    let labels = ds.labels.as_ref().map(|l| encode_labels(l));
    let log_path = a.model.join(trainer::artifacts::TRAINING_LOG);
    let log = if log_path.exists() { Some(read_training_log(&log_path)?) } else { None };
    // An imported encoder has no decoder: its clusters are drawn with their members' mean series.
    let centroid_series = if model.vrae.has_decoder() {
        decode_centroids(&model.vrae, &centroids.flat(), &dev)?
    } else {
        member_means(&ds.series, &clusters, centroids.k)
    };
    let out = a.out.unwrap_or_else(|| a.model.join(trainer::artifacts::PLOTS));
    let input = PlotInput {
        latents: &z,
        dim: model.config.model.latent_length,
        clusters: &clusters,
        k: centroids.k,
        labels: labels.as_ref().map(|(l, names)| (l.as_slice(), names.as_slice())),
        series: &ds.series,
        n_features: ds.n_features,
        centroid_series: &centroid_series,
        log: log.as_deref(),
        tsne: TsneParams {
            perplexity: a.tsne.perplexity,
            iterations: a.tsne.tsne_iterations,
            seed: a.seed.unwrap_or(model.config.params.seed),
        },
    };
    eprintln!("t-SNE of {} latents ({} iterations)...", clusters.len(), a.tsne.tsne_iterations);
    let info = write_plots(&out, Path::new(""), &input)?;
    for f in &info.files {
        println!("wrote {f}");
    }
    println!(
        "PCA axes hold {:.0}% + {:.0}% of the latent variance; t-SNE {:.1} s (perplexity {}{})",
        info.pca_variance_ratio[0] * 100.0,
        info.pca_variance_ratio[1] * 100.0,
        info.tsne_seconds,
        info.tsne_perplexity,
        if info.tsne_barnes_hut { ", Barnes-Hut" } else { ", exact" }
    );
    Ok(())
}

/// Per cluster, the mean of its members' values (zeros for an empty cluster).
fn member_means(series: &[trainer::data::Series], clusters: &[(usize, f32)], k: usize) -> Vec<Vec<f32>> {
    let width = series.first().map_or(0, |s| s.values.len());
    let mut sums = vec![vec![0f32; width]; k];
    let mut counts = vec![0usize; k];
    for (s, &(c, _)) in series.iter().zip(clusters) {
        counts[c] += 1;
        sums[c].iter_mut().zip(&s.values).for_each(|(m, v)| *m += v);
    }
    for (m, n) in sums.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= n.max(1) as f32);
    }
    sums
}
