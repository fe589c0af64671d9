//! Output helpers the commands share.

use std::path::Path;

use anyhow::Result;

use trainer::artifacts::write_atomic;
use trainer::cluster::ClusterScores;

pub(crate) fn fmt_scores(s: Option<ClusterScores>) -> String {
    s.map_or("   -      -      -".into(), |s| format!("{:6.3} {:6.3} {:6.3}", s.ari, s.nmi, s.purity))
}

pub(crate) fn emit(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => Ok(write_atomic(p, text.as_bytes())?),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
