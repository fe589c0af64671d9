//! `trainer export`: the encoder to ONNX (and the bundle).

use anyhow::{bail, Result};

use crate::args::*;
use trainer::artifacts::load_model;
use trainer::export::{write_bundle, write_encoder_onnx_with, BatchLengths, ONNX_OPSET};

pub(crate) fn run_export(a: ExportArgs) -> Result<()> {
    let model = load_model(&a.model, &candle_core::Device::Cpu)?;
    if a.lengths && a.out.is_none() {
        bail!("--lengths writes a two-input graph: give it its own --out FILE (MODEL/encoder.onnx stays the one-input form)");
    }
    let out = a.out.unwrap_or_else(|| a.model.join(trainer::artifacts::ENCODER_ONNX));
    let lengths = if a.lengths { BatchLengths::Ragged } else { BatchLengths::Equal };
    let n = write_encoder_onnx_with(&model, &out, lengths)?;
    println!("wrote {} ({n} bytes, opset {ONNX_OPSET})", out.display());
    if let Some(path) = a.bundle {
        let path = path.unwrap_or_else(|| a.model.join(trainer::artifacts::BUNDLE));
        let Some(c) = &model.centroids else {
            bail!("{}: no centroids.json; a bundle carries the cluster decision", model.dir.display());
        };
        let min_len = model.config.data.min_length.unwrap_or(1);
        let n =
            write_bundle(&model.config.model, model.config.data.normalization, &model.weights, &c.decision(), min_len, a.weights, &path)?;
        println!("wrote {} ({n} bytes)", path.display());
    }
    Ok(())
}
