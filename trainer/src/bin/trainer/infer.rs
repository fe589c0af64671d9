//! `trainer embed` and `trainer cluster`: latents or clusters of new data.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::args::*;
use crate::common::*;
use trainer::artifacts::load_model;
use trainer::data::{load_files, CsvOptions};
use trainer::embed::{latents_csv, write_latents};

pub(crate) fn run_infer(a: InferArgs, assign: bool) -> Result<()> {
    let dev = device(a.data_args.device)?;
    let model = load_model(&a.model, &dev)?;
    let mut ds = load_files(&a.data, &CsvOptions { label: a.data_args.csv_label })?;
    prepare_noted(&mut ds, &model)?;
    let l = model.config.model.latent_length;
    let native = model.native()?;
    let z = native.embed(&ds.series)?;
    let labels = ds.labels.as_deref();
    if !assign {
        return match &a.out {
            Some(p) => Ok(write_latents(p, &z, l, labels)?),
            None => emit(None, &latents_csv(&z, l, labels)),
        };
    }
    if model.centroids.is_none() {
        bail!("{}: no centroids.json; re-run `trainer fit` to produce one", model.dir.display());
    }
    let mut s = String::from("index,label,cluster,distance,second_distance\n");
    for (i, a) in native.assign(&ds.series, &z)?.iter().enumerate() {
        let _ = writeln!(s, "{i},{},{},{},{}", labels.map_or("", |lb| lb[i].as_str()), a.cluster, a.distance, a.second_distance);
    }
    emit(a.out.as_deref(), &s)
}
