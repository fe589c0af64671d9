//! The per-epoch training log: what each epoch's losses and time were (`training_log.csv`, the
//! checkpoint's log, the report's loss curve).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::write_atomic;

/// Mean losses of one epoch (averaged over its batches) and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean total loss.
    pub loss: f64,
    /// Mean reconstruction term.
    pub recon: f64,
    /// Mean KL term (weighted).
    pub kl: f64,
    /// KL weight used this epoch (after annealing).
    pub kl_weight: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Mean reconstruction loss on the validation rows (early stopping only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_recon: Option<f64>,
    /// Mean contrastive term before its weight (when it is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<f64>,
}

/// Writes `training_log.csv` (one row per epoch).
pub fn write_training_log(path: &Path, log: &[EpochLog]) -> Result<()> {
    use std::fmt::Write as _;
    let mut s = String::from("epoch,loss,recon,kl,kl_weight,seconds,val_recon\n");
    for e in log {
        let val = e.val_recon.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(s, "{},{},{},{},{},{},{val}", e.epoch, e.loss, e.recon, e.kl, e.kl_weight, e.seconds);
    }
    write_atomic(path, s.as_bytes())
}

/// Reads a `training_log.csv` written by [`write_training_log`].
pub fn read_training_log(path: &Path) -> Result<Vec<EpochLog>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::data(path, i + 1, why);
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 && f.len() != 7 {
            return Err(bad(format!("expected 6 or 7 fields (epoch,loss,recon,kl,kl_weight,seconds[,val_recon]), found {}", f.len())));
        }
        let num = |j: usize| f[j].trim().parse::<f64>().map_err(|_| bad(format!("'{}' is not a number", f[j])));
        let epoch = f[0].trim().parse::<usize>().map_err(|_| bad(format!("epoch '{}' is not a whole number", f[0])))?;
        let val_recon = match f.get(6).map(|v| v.trim()) {
            None | Some("") => None,
            Some(_) => Some(num(6)?),
        };
        out.push(EpochLog {
            epoch,
            loss: num(1)?,
            recon: num(2)?,
            kl: num(3)?,
            kl_weight: num(4)?,
            seconds: num(5)?,
            val_recon,
            contrastive: None,
        });
    }
    Ok(out)
}
