//! Fault injection for the crash-safety tests, driven by the `TRAINER_FAULT` environment variable.
//! Only in builds with the `fault-injection` feature, which the trainer's own tests turn on (a
//! dev-dependency on itself); in every other build every check here is `false` and the
//! variable is never read:
//!
//! - `nan-loss-at-epoch=N`: the loss of epoch N's first batch reads as NaN (divergence path).
//! - `abort-writing=NAME`: the process aborts half-way through writing the artifact file NAME,
//!   like a crash or `kill -9` mid-write.

use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq)]
enum Fault {
    NanLossAt(usize),
    AbortWriting(String),
}

fn fault() -> Option<&'static Fault> {
    if !cfg!(feature = "fault-injection") {
        return None;
    }
    static F: OnceLock<Option<Fault>> = OnceLock::new();
    F.get_or_init(|| {
        let v = std::env::var("TRAINER_FAULT").ok()?;
        let (k, arg) = v.split_once('=')?;
        match k {
            "nan-loss-at-epoch" => arg.parse().ok().map(Fault::NanLossAt),
            "abort-writing" => Some(Fault::AbortWriting(arg.to_string())),
            _ => None,
        }
    })
    .as_ref()
}

/// Whether the loss of 1-based `epoch` should read as NaN.
pub(crate) fn nan_loss_at(epoch: usize) -> bool {
    fault() == Some(&Fault::NanLossAt(epoch))
}

/// Whether writing the file called `name` should abort the process half-way.
pub(crate) fn abort_writing(name: &str) -> bool {
    matches!(fault(), Some(Fault::AbortWriting(n)) if n == name)
}
