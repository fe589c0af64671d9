//! Batch scoring of recorded readings, the one loop behind `edge assign` and the Python
//! `Scorer`: rows -> [`Windower`] -> batches of windows -> the runtime's engine -> each scored
//! window to a sink, and the per-device totals ([`DeviceTable`]).
//!
//! Windows are scored in batches of `capacity` (the runtime embeds a batch in parallel); a
//! caller that must see every completed window before it returns (a Python `push`) calls
//! [`BatchScorer::flush`]. In sessions mode every window is encoded at its own length with the
//! native engine; with fixed windows the latents come from the [`Model`]'s engine (native, or
//! `encoder.onnx` through tract) and the decision always from the native core.

use runtime::batch::{assign_all, embed_windows};
use runtime::{Assignment, EncodeError, Encoder};

use crate::devices::DeviceTable;
use crate::fleet::{ParamsError, Row, RowError, Window, Windower, WindowerParams};
use crate::table::TableError;

/// Errors of batch scoring.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Invalid windowing parameters.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// A batch of zero windows.
    #[error("the batch size must be at least 1")]
    Batch,
    /// A rejected row (strict mode).
    #[error(transparent)]
    Row(#[from] RowError),
    /// The native engine refused the windows.
    #[error("scoring: {0}")]
    Encode(#[from] EncodeError),
    /// tract could not embed the windows.
    #[cfg(feature = "tract")]
    #[error(transparent)]
    Tract(#[from] runtime::tract_engine::TractError),
    /// The sink could not write a scored window.
    #[error(transparent)]
    Output(#[from] TableError),
}

/// The model a batch is scored with: the native encoder (decisions, and latents by default)
/// and, where given, tract for the latents.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    /// The bundle's encoder.
    pub encoder: &'a Encoder<'a>,
    /// Latents from `encoder.onnx` through tract instead of the native kernels.
    #[cfg(feature = "tract")]
    pub tract: Option<&'a runtime::tract_engine::TractEncoder>,
}

impl<'a> Model<'a> {
    /// The native engine alone.
    pub fn native(encoder: &'a Encoder<'a>) -> Self {
        Model {
            encoder,
            #[cfg(feature = "tract")]
            tract: None,
        }
    }

    fn embed(&self, windows: &[f32], window_values: usize) -> Result<Vec<f32>, ScoreError> {
        #[cfg(feature = "tract")]
        if let Some(t) = self.tract {
            return Ok(t.embed(windows)?);
        }
        Ok(embed_windows(self.encoder, windows, window_values)?)
    }
}

/// Where each scored window goes (a table writer, an Arrow builder), in input order.
pub type Sink<'s> = dyn FnMut(&Window, &Assignment) -> Result<(), TableError> + 's;

/// Windows of a fleet's readings, batched and scored, with the device table kept as they go.
pub struct BatchScorer {
    windower: Windower,
    table: DeviceTable,
    capacity: usize,
    /// Values per fixed window (`window * features`); unused in sessions mode.
    window_values: usize,
    sessions: bool,
    jobs: Vec<Window>,
    /// The batch's values, window after window (time-major).
    pending: Vec<f32>,
    /// Where each window's values end in `pending` (sessions differ in length).
    ends: Vec<usize>,
    anomalous: u64,
}

impl BatchScorer {
    /// A scorer for windows cut by `params`, `clusters` columns in the device table, scoring
    /// `capacity` windows per batch.
    pub fn new(params: WindowerParams, clusters: usize, capacity: usize) -> Result<Self, ScoreError> {
        if capacity == 0 {
            return Err(ScoreError::Batch);
        }
        let window_values = params.window * params.features;
        let sessions = params.sessions.is_some();
        Ok(BatchScorer {
            windower: Windower::new(params)?,
            table: DeviceTable::new(clusters),
            capacity,
            window_values,
            sessions,
            jobs: Vec::new(),
            pending: Vec::new(),
            ends: Vec::new(),
            anomalous: 0,
        })
    }

    /// Feeds one CSV record (`line`: its 1-based line); true when it filled a batch, which was
    /// scored into `sink`.
    pub fn feed_record(
        &mut self,
        line: usize,
        record: &csv::ByteRecord,
        model: &Model<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<bool, ScoreError> {
        let job = self.windower.feed_record(line, record, &mut self.pending)?;
        self.take(job, model, sink)
    }

    /// Feeds one decoded row (or why it could not be decoded); as [`Self::feed_record`].
    pub fn feed_row(&mut self, row: Result<Row<'_>, String>, model: &Model<'_>, sink: &mut Sink<'_>) -> Result<bool, ScoreError> {
        let job = self.windower.feed_row(row, &mut self.pending)?;
        self.take(job, model, sink)
    }

    /// Ends the input: closes the sessions still open (sessions mode) and scores everything
    /// pending.
    pub fn finish(&mut self, model: &Model<'_>, sink: &mut Sink<'_>) -> Result<(), ScoreError> {
        // Fed one at a time, so a full batch is scored (and `pending` cleared) between them.
        let mut tail = Vec::new();
        let mut at = 0;
        for (job, n) in self.windower.finish(&mut tail) {
            self.pending.extend_from_slice(&tail[at..at + n]);
            at += n;
            self.take(Some(job), model, sink)?;
        }
        self.flush(model, sink)
    }

    /// Scores the windows completed so far into `sink`.
    pub fn flush(&mut self, model: &Model<'_>, sink: &mut Sink<'_>) -> Result<(), ScoreError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let asg = if self.sessions {
            crate::sessions::score_sessions(model.encoder, &self.pending, &self.ends)?
        } else {
            let z = model.embed(&self.pending, self.window_values)?;
            assign_all(model.encoder, &self.pending, self.window_values, &z)?
        };
        for (job, a) in self.jobs.iter().zip(&asg) {
            sink(job, a)?;
            self.table.add(job, a);
            self.anomalous += a.anomalous as u64;
        }
        self.jobs.clear();
        self.pending.clear();
        self.ends.clear();
        Ok(())
    }

    fn take(&mut self, job: Option<Window>, model: &Model<'_>, sink: &mut Sink<'_>) -> Result<bool, ScoreError> {
        let Some(job) = job else { return Ok(false) };
        self.jobs.push(job);
        self.ends.push(self.pending.len());
        if self.jobs.len() < self.capacity {
            return Ok(false);
        }
        self.flush(model, sink)?;
        Ok(true)
    }

    /// The windowing state and its counts.
    pub fn windower(&self) -> &Windower {
        &self.windower
    }

    /// Per-device totals of the windows scored so far.
    pub fn table(&self) -> &DeviceTable {
        &self.table
    }

    /// Windows scored so far that were flagged anomalous.
    pub fn anomalous(&self) -> u64 {
        self.anomalous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SessionLimits;
    use runtime::bundle::AlignedBytes;

    fn encoder_bytes() -> AlignedBytes {
        AlignedBytes::new(&std::fs::read(format!("{}/../models/ecg5000/model.bundle", env!("CARGO_MANIFEST_DIR"))).unwrap())
    }

    /// The shipped fleet file's CSV records with their line numbers.
    fn records() -> Vec<(usize, csv::ByteRecord)> {
        let text = std::fs::read(format!("{}/../data/fleet/sample.csv", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut r = crate::csv_input::reader(&text[..]);
        let mut out = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while r.read_byte_record(&mut rec).unwrap() {
            out.push((rec.position().unwrap().line() as usize, rec.clone()));
        }
        out
    }

    /// A scored window: device, start, end, cluster, distance bits.
    type Scored = (String, String, String, usize, u32);

    /// Every scored window, the batches that filled and the anomalous windows, for one batch
    /// size.
    fn score(capacity: usize, sessions: Option<SessionLimits>) -> (Vec<Scored>, usize, u64) {
        let bytes = encoder_bytes();
        let enc = Encoder::from_bytes(bytes.as_bytes()).unwrap();
        let hd = enc.bundle().header;
        let (window, max_gap) = if sessions.is_some() { (hd.seq_len as usize, Some(30.0)) } else { (50, None) };
        let p = WindowerParams { features: 1, window, stride: 20, max_gap, strict: false, sessions, session_column: false };
        let mut scorer = BatchScorer::new(p, hd.k as usize, capacity).unwrap();
        let model = Model::native(&enc);
        let mut out = Vec::new();
        let mut sink = |w: &Window, a: &Assignment| {
            out.push((w.device.clone(), w.start.clone(), w.end.clone(), a.cluster, a.distance.to_bits()));
            Ok(())
        };
        let mut filled = 0;
        for (line, rec) in records() {
            filled += scorer.feed_record(line, &rec, &model, &mut sink).unwrap() as usize;
        }
        scorer.finish(&model, &mut sink).unwrap();
        assert_eq!(scorer.table().rows().iter().map(|r| r.windows).sum::<u64>(), out.len() as u64);
        (out, filled, scorer.anomalous())
    }

    /// Batches only group the work: one window per batch and one batch for all give the same
    /// windows, in the same order, with the same device totals (fixed windows and sessions).
    #[test]
    fn batch_size_does_not_change_the_result() {
        for sessions in [None, Some(SessionLimits { min: 40, max: 100 })] {
            let (one, filled_one, anomalous_one) = score(1, sessions);
            let (all, filled_all, anomalous_all) = score(1 << 20, sessions);
            assert!(one.len() > 50, "{} windows", one.len());
            assert_eq!(one, all, "sessions {sessions:?}");
            assert_eq!(anomalous_one, anomalous_all);
            // Capacity 1 scores a batch per window (the tail in `finish` too).
            assert!(filled_one > 0 && filled_one <= one.len());
            assert_eq!(filled_all, 0, "a batch larger than the input never fills");
        }
    }

    #[test]
    fn a_batch_of_no_windows_is_refused() {
        let p = WindowerParams { features: 1, window: 10, stride: 10, max_gap: None, strict: false, sessions: None, session_column: false };
        assert!(matches!(BatchScorer::new(p, 3, 0), Err(ScoreError::Batch)));
    }
}
