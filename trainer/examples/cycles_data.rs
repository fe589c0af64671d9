//! Writes the synthetic "cycles" data set of unequal lengths ([`trainer::data::synthetic`]) as
//! `DIR/Cycles_TRAIN.ts` and `DIR/Cycles_TEST.ts` (two draws of the same classes), for the
//! quality harness's variable-length row.
//!
//!     cargo run --release -p trainer --example cycles_data -- DIR

use std::path::PathBuf;

use trainer::data::synthetic::{cycles, to_ts, CyclesParams};
use trainer::files::write_atomic;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: cycles_data DIR"))?);
    std::fs::create_dir_all(&dir)?;
    for (part, seed) in [("TRAIN", 0), ("TEST", 1)] {
        let ds = cycles(&CyclesParams { seed, ..CyclesParams::default() });
        let path = dir.join(format!("Cycles_{part}.ts"));
        write_atomic(&path, to_ts(&ds, "Cycles").as_bytes())?;
        println!(
            "{}: {} series, lengths {}..{}",
            path.display(),
            ds.len(),
            ds.series.iter().map(|s| s.len).min().unwrap_or(0),
            ds.max_len()
        );
    }
    Ok(())
}
