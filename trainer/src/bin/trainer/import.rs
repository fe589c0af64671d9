//! `trainer import`: a PyTorch-trained encoder from ONNX (feature `onnx-import`).

use anyhow::Result;

use crate::args::ImportArgs;

#[cfg(not(feature = "onnx-import"))]
pub(crate) fn run_import(_: ImportArgs) -> Result<()> {
    anyhow::bail!("this trainer was built without ONNX import; rebuild with `cargo build --release -p trainer --features onnx-import` (needs protoc: Debian's protobuf-compiler)")
}

#[cfg(feature = "onnx-import")]
pub(crate) fn run_import(a: ImportArgs) -> Result<()> {
    use crate::args::Clusters;
    use trainer::cluster::decision::DecisionParams;
    use trainer::cluster::metrics::encode_labels;
    use trainer::data::{load_files, CsvOptions};
    use trainer::import::{import, CentroidSource, ImportOptions};
    let centroids = match a.centroids {
        Some(p) => CentroidSource::File(p),
        None => {
            let data = load_files(&a.fit_centroids, &CsvOptions { label: a.csv_label })?;
            // As in `fit`: k defaults to the number of labels; `auto` (or no labels) is the eigengap.
            let k = match a.clusters {
                Some(Clusters::Fixed(k)) => Some(k),
                Some(Clusters::Auto) => None,
                None => data.labels.as_ref().map(|l| encode_labels(l).1.len()),
            };
            CentroidSource::Fit { data, k, decision: Box::new(a.decision.apply(DecisionParams::default())), n_init: a.n_init, seed: a.seed }
        }
    };
    let s =
        import(ImportOptions { onnx: a.encoder.clone(), out: a.out.clone(), centroids, seq_len: a.seq_len, normalization: a.normalize })?;
    let c = &s.config;
    println!(
        "imported {} ({}): {:?}, {} feature(s), {} layer(s) of {} hidden, latent {}, windows of {} steps",
        a.encoder.display(),
        if s.producer.is_empty() { "unknown producer" } else { &s.producer },
        c.cell,
        c.n_features,
        c.hidden_layer_depth,
        c.hidden_size,
        c.latent_length,
        c.seq_len
    );
    println!("{} clusters{}", s.k, if s.sizes.is_empty() { String::new() } else { format!(", sizes {:?}", s.sizes) });
    if let Some(sc) = s.scores {
        println!("device decision vs labels: ARI {:.3} NMI {:.3} purity {:.3}", sc.ari, sc.nmi, sc.purity);
    }
    println!("wrote {} (bundle {} bytes)", a.out.display(), s.bundle_bytes);
    Ok(())
}
