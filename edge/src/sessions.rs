//! Scoring sessions: windows of unequal lengths (cut by [`crate::fleet::Windower`] in sessions
//! mode), each encoded and decided at its own length, and the default session limits for a
//! model. Shared by `edge assign --sessions` and the Python package's `Scorer(sessions=True)`.

use rayon::prelude::*;
use runtime::batch::{HostState, HOST_MAX_HIDDEN, HOST_MAX_LATENT, HOST_MAX_LAYERS};
use runtime::{Assignment, EncodeError, Encoder};

use crate::fleet::SessionLimits;

/// The limits a model's sessions get when none are given: at least a quarter of its training
/// length `seq_len`, or its minimum window length `min_len` when that is more; at most four
/// times `seq_len`. `min` / `max` override each.
pub fn limits_for(seq_len: usize, min_len: usize, min: Option<usize>, max: Option<usize>) -> SessionLimits {
    SessionLimits { min: min.unwrap_or((seq_len / 4).max(min_len).max(1)), max: max.unwrap_or(4 * seq_len.max(1)) }
}

/// Refuses `n` samples (a fixed window, or the fewest a session may have; `what` names the
/// setting as the caller spells it) below the model's minimum window length `min_len`: a model
/// trained at native lengths learnt nothing from shorter series, and its encoder refuses them.
/// 0 passes, for the setting's own check to refuse.
pub fn check_min_len(what: &str, n: usize, min_len: usize) -> Result<(), String> {
    if n > 0 && n < min_len {
        return Err(format!("{what} {n} is shorter than the model's minimum length {min_len}"));
    }
    Ok(())
}

/// Cluster of every session, in parallel: session `i` is `values[ends[i-1]..ends[i]]` (from 0
/// for the first), time-major, encoded alone at its own length as a device streams it.
pub fn score_sessions(enc: &Encoder<'_>, values: &[f32], ends: &[usize]) -> Result<Vec<Assignment>, EncodeError> {
    let starts = std::iter::once(0).chain(ends.iter().copied());
    let spans: Vec<(usize, usize)> = starts.zip(ends.iter().copied()).collect();
    spans
        .par_iter()
        .map_init(
            || Box::new(HostState::default()),
            |s, &(a, b)| enc.classify_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(s, &values[a..b]).map(|(_, asg)| asg),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_below_the_models_minimum_are_refused() {
        assert_eq!(check_min_len("--window", 50, 80).unwrap_err(), "--window 50 is shorter than the model's minimum length 80");
        assert_eq!(check_min_len("--window", 80, 80), Ok(()));
        assert_eq!(check_min_len("--window", 0, 80), Ok(()));
        assert_eq!(check_min_len("--window", 1, 1), Ok(()));
    }
}
