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

/// Progress on stderr: a bar over the training batches with the running losses and a line per
/// epoch, notes as they come; `quiet` keeps only the notes.
pub(crate) fn progress_reporter(quiet: bool) -> trainer::progress::Reporter {
    use indicatif::{ProgressBar, ProgressStyle};
    use trainer::progress::{Progress, Reporter};
    let bar = std::sync::Mutex::new(ProgressBar::hidden());
    Reporter::new(move |p| {
        let mut pb = bar.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Note(text) if pb.is_hidden() => eprintln!("{text}"),
            Progress::Note(text) => pb.println(text),
            _ if quiet => {}
            Progress::Start { total, done } => {
                *pb = ProgressBar::new(total);
                if let Ok(style) =
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} batches  {msg}  ETA {eta}")
                {
                    pb.set_style(style);
                }
                pb.set_position(done);
                pb.reset_eta();
            }
            Progress::Batch { message } => {
                pb.set_message(message.to_string());
                pb.inc(1);
            }
            Progress::Epoch { line } if pb.is_hidden() => eprintln!("{line}"),
            Progress::Epoch { line } => pb.println(line),
            // Later notes go straight to stderr.
            Progress::Finished => {
                pb.finish_and_clear();
                *pb = ProgressBar::hidden();
            }
            Progress::Abandoned => {
                pb.abandon();
                *pb = ProgressBar::hidden();
            }
        }
    })
}

/// Prepares new data for `model` ([`trainer::embed::prepare`]) and notes on stderr what was
/// resampled or cut.
pub(crate) fn prepare_noted(ds: &mut trainer::data::Dataset, model: &trainer::artifacts::LoadedModel) -> Result<()> {
    let prep = trainer::embed::prepare(ds, &model.config)?;
    let t = model.config.model.seq_len;
    if prep.resampled > 0 {
        eprintln!("note: {} series resampled to the model's length {t}", prep.resampled);
    }
    if prep.cut > 0 {
        eprintln!("note: {} series longer than the model's length {t} keep their first {t} steps", prep.cut);
    }
    Ok(())
}
