//! `trainer export`: the encoder to ONNX (and the bundle).

use anyhow::{bail, Result};

use crate::args::*;
use trainer::artifacts::load_model;
use trainer::export::{write_bundle, write_encoder_onnx, ONNX_OPSET};

pub(crate) fn run_export(a: ExportArgs) -> Result<()> {
    let model = load_model(&a.model, &candle_core::Device::Cpu)?;
    let out = a.out.unwrap_or_else(|| a.model.join(trainer::artifacts::ENCODER_ONNX));
    let n = write_encoder_onnx(&model, &out)?;
    println!("wrote {} ({n} bytes, opset {ONNX_OPSET})", out.display());
    if let Some(path) = a.bundle {
        let path = path.unwrap_or_else(|| a.model.join(trainer::artifacts::BUNDLE));
        let Some(c) = &model.centroids else {
            bail!("{}: no centroids.json; a bundle carries the cluster decision", model.dir.display());
        };
        let n = write_bundle(&model.config.model, model.config.data.normalization, &model.weights, &c.decision(), &path)?;
        println!("wrote {} ({n} bytes)", path.display());
    }
    Ok(())
}
