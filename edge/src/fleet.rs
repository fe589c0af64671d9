//! Turning a long-format fleet file into per-device windows.
//!
//! Input rows are `device_id,timestamp,value[,value...]`: CSV records (RFC 4180 quoting, read
//! by the `csv` crate, so a device id may hold commas, quotes or newlines) through
//! [`Windower::feed_record`], or rows already split into typed fields (Parquet, see
//! [`crate::parquet_input`]) through [`Windower::feed_row`].
//!
//! The first CSV record must be a header with this model's columns (`device`, `timestamp`, one
//! column per feature; recognised by a second field that is not a number) or a valid reading;
//! anything else is an error naming the line, so a wrong file stops at once instead of scoring
//! nothing. Devices come interleaved in any order; each device's rows must come in increasing
//! timestamp order.
//! Memory is bounded by devices x window (one ring buffer per device), not by file size.
//!
//! A row that is not UTF-8, has the wrong field count, a missing, non-numeric or non-finite cell,
//! or is out of time order for its device is skipped and counted ([`WindowerParams::strict`]
//! makes it an error instead). A gap larger than `max_gap` between two samples of a device
//! restarts that device's window.
//!
//! With [`WindowerParams::sessions`] a device's stream is cut into sessions instead: at every
//! gap larger than `max_gap`, a session becomes one window of its own length (at least
//! [`SessionLimits::min`] samples, else it is counted as short and dropped; one longer than
//! [`SessionLimits::max`] is cut there and goes on as a new session), and [`Windower::finish`]
//! closes the sessions still open at the end of the input. With
//! [`WindowerParams::session_column`] every row carries a session id after its timestamp
//! (`device_id,timestamp,session,value...`): a row whose id differs from the device's previous
//! row's starts a new session (an id that comes back later starts another one), and gaps cut
//! sessions too when `max_gap` is given.

use std::collections::HashMap;

/// How rows become windows.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowerParams {
    /// Values per sample (the model's feature count).
    pub features: usize,
    /// Samples per window.
    pub window: usize,
    /// Samples between window starts (`window` = no overlap).
    pub stride: usize,
    /// Largest timestamp step inside a window; a larger gap restarts the device's window.
    pub max_gap: Option<f64>,
    /// Fail on the first bad row instead of skipping it.
    pub strict: bool,
    /// Sessions (cut at gaps) instead of fixed windows; `window` and `stride` are then unused.
    pub sessions: Option<SessionLimits>,
    /// Rows carry a session id after the timestamp, and a new id starts a new session
    /// (sessions only).
    pub session_column: bool,
}

/// The lengths a session may have, in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Shorter sessions are counted ([`Summary::short_sessions`]) and not scored.
    pub min: usize,
    /// A session reaching this length is closed, and the next sample starts a new one
    /// ([`Summary::cut_sessions`]).
    pub max: usize,
}

/// A row that was rejected: its 1-based line (CSV) or row (Parquet) number and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{unit} {line}: {why}")]
pub struct RowError {
    /// "line" or "row".
    pub unit: &'static str,
    /// 1-based line (CSV) or row (Parquet) number in the input.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

/// One reading split into fields: the device, its timestamp (value, and text as it is written
/// to the output), and the sample's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'a> {
    /// Device id.
    pub device: &'a str,
    /// Timestamp, for ordering and gaps.
    pub time: f64,
    /// Timestamp as written in the output.
    pub time_text: &'a str,
    /// Session id, when the input has a session column.
    pub session: Option<&'a str>,
    /// One value per feature.
    pub values: &'a [f32],
}

/// The window and stride a model is scored with when none is given: the model's training length
/// `seq_len`, and a stride of one window (no overlap).
pub fn window_and_stride(window: Option<usize>, stride: Option<usize>, seq_len: usize) -> (usize, usize) {
    let window = window.unwrap_or(seq_len);
    (window, stride.unwrap_or(window))
}

/// A numeric cell of a typed source (Parquet, Arrow) as stored: integers (incl. DATE/TIME/
/// TIMESTAMP, as their stored count) or floats of either width, so its text is the stored
/// number, not a calendar rendering, and every typed source writes one timestamp the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Any integer type.
    Int(i128),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
}

impl Number {
    /// The value as f64 (for timestamps and gaps).
    pub fn value(self) -> f64 {
        match self {
            Number::Int(v) => v as f64,
            Number::F32(v) => v as f64,
            Number::F64(v) => v,
        }
    }

    /// `text` = the number as written in the output (no allocation once `text` has grown).
    pub fn write_text(self, text: &mut String) {
        use std::fmt::Write;
        text.clear();
        let _ = match self {
            Number::Int(v) => write!(text, "{v}"),
            Number::F32(v) => write!(text, "{v}"),
            Number::F64(v) => write!(text, "{v}"),
        };
    }
}

/// Invalid windowing parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A size of zero.
    #[error("window, stride and features must all be at least 1 (got window {window}, stride {stride}, features {features})")]
    Sizes {
        /// Requested window.
        window: usize,
        /// Requested stride.
        stride: usize,
        /// Requested features.
        features: usize,
    },
    /// Sessions are cut at gaps or session ids, so they need one of them.
    #[error("sessions end at a gap or where the session id changes: give --max-gap or --session-column")]
    SessionsNeedGap,
    /// A session id column only makes sense when scoring sessions.
    #[error("--session-column needs --sessions")]
    SessionColumnNeedsSessions,
    /// Impossible session lengths.
    #[error(
        "session lengths: --min-session must be at least 1 and --max-session at least 2 and at least --min-session (got {min} and {max})"
    )]
    SessionLimits {
        /// Requested minimum.
        min: usize,
        /// Requested maximum.
        max: usize,
    },
}

/// Counts over everything fed so far.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Data rows seen (header and blank lines excluded).
    pub rows: usize,
    /// Rows skipped as malformed.
    pub malformed: usize,
    /// Rows skipped for going back in time.
    pub out_of_order: usize,
    /// Windows restarted because of a gap.
    pub gaps: usize,
    /// Windows (or sessions) emitted.
    pub windows: usize,
    /// Sessions dropped for having fewer than [`SessionLimits::min`] samples.
    pub short_sessions: usize,
    /// Sessions closed at [`SessionLimits::max`] samples.
    pub cut_sessions: usize,
    /// Sessions ended by a new session id ([`WindowerParams::session_column`]).
    pub session_ids: usize,
    /// The first row skipped, and why (to explain a file where no row is valid).
    pub first_skipped: Option<RowError>,
}

/// A complete window: which device, and the timestamps (as written) of its first and last sample.
/// Its values were appended to the caller's buffer, oldest sample first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Device id.
    pub device: String,
    /// Timestamp of the first sample.
    pub start: String,
    /// Timestamp of the last sample.
    pub end: String,
    /// The session id, when the rows carry one ([`WindowerParams::session_column`]).
    pub session: Option<String>,
}

/// Per-device ring buffer of the last `window` samples.
#[derive(Debug)]
struct Device {
    buf: Vec<f32>,
    times: Vec<String>,
    /// The session id of the device's last row ([`WindowerParams::session_column`]).
    session: String,
    filled: usize,
    since_emit: usize,
    last_t: f64,
    windows: usize,
    samples: usize,
}

/// Streams rows in, windows out.
#[derive(Debug)]
pub struct Windower {
    p: WindowerParams,
    devices: HashMap<String, Device>,
    summary: Summary,
    lines: usize,
    /// What `lines` counts in errors: "line" after [`Self::feed_record`], "row" after [`Self::feed_row`].
    unit: &'static str,
    vals: Vec<f32>,
    /// Whether a CSV record was seen (the first one may be the header).
    started: bool,
}

impl Windower {
    /// A windower with no devices yet.
    pub fn new(p: WindowerParams) -> Result<Self, ParamsError> {
        if p.window == 0 || p.stride == 0 || p.features == 0 {
            return Err(ParamsError::Sizes { window: p.window, stride: p.stride, features: p.features });
        }
        if p.session_column && p.sessions.is_none() {
            return Err(ParamsError::SessionColumnNeedsSessions);
        }
        if let Some(s) = p.sessions {
            if p.max_gap.is_none() && !p.session_column {
                return Err(ParamsError::SessionsNeedGap);
            }
            if s.min == 0 || s.max < s.min.max(2) {
                return Err(ParamsError::SessionLimits { min: s.min, max: s.max });
            }
        }
        let vals = vec![0.0; p.features];
        Ok(Windower { p, devices: HashMap::new(), summary: Summary::default(), lines: 0, unit: "line", vals, started: false })
    }

    /// Counts so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Whether a non-blank CSV record was fed (the next one is no longer the first).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Devices seen so far.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Devices that have not yet filled one window.
    pub fn short_devices(&self) -> usize {
        self.devices.values().filter(|d| d.windows == 0).count()
    }

    /// Samples accepted so far.
    pub fn samples(&self) -> usize {
        self.devices.values().map(|d| d.samples).sum()
    }

    /// Feeds the next CSV record, which starts on 1-based `line`. When it completes a window, the
    /// window's values are appended to `values` and its description returned. Bad rows are
    /// counted and skipped, or returned as errors in strict mode; a first record that is neither
    /// this model's header nor a reading is always an error.
    pub fn feed_record(&mut self, line: usize, record: &csv::ByteRecord, values: &mut Vec<f32>) -> Result<Option<Window>, RowError> {
        self.unit = "line";
        self.lines = line;
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            return Ok(None);
        }
        let first = !std::mem::replace(&mut self.started, true);
        let f = self.p.features;
        let fields: Result<Vec<&str>, _> = record.iter().map(|b| std::str::from_utf8(b).map(str::trim)).collect();
        let Ok(fields) = fields else {
            if first {
                return Err(RowError { unit: "line", line, why: "is not UTF-8 text: not a CSV file of readings".into() });
            }
            self.summary.rows += 1;
            return self.reject(line, "not valid UTF-8".into(), false);
        };
        let sc = self.p.session_column;
        let layout = key_columns(sc);
        if first && fields.len() >= 2 && fields[1].parse::<f64>().is_err() {
            if fields.len() != 2 + usize::from(sc) + f {
                let shown: Vec<String> = fields.iter().take(8).map(|c| format!("{c:?}")).collect();
                let more = if fields.len() > 8 { ", ..." } else { "" };
                return Err(RowError {
                    unit: "line",
                    line,
                    why: format!(
                        "the header has {} column(s) ({}{more}); this model reads {layout} and {f} value column(s)",
                        fields.len(),
                        shown.join(", ")
                    ),
                });
            }
            return Ok(None);
        }
        self.summary.rows += 1;
        let mut vals = std::mem::take(&mut self.vals);
        let r = match parse_row(&fields, sc, &mut vals) {
            Ok(row) => self.accept(line, row, values),
            Err(why) if first => Err(RowError {
                unit: "line",
                line,
                why: format!("is neither a header ({layout}, {f} value column(s)) nor a reading: {why}"),
            }),
            Err(why) => self.reject(line, why, false),
        };
        self.vals = vals;
        r
    }

    /// Feeds the next row of a typed source (rows numbered from 1), or the reason it could not
    /// be read (counted as malformed, or an error in strict mode); otherwise as [`Self::feed_record`].
    pub fn feed_row(&mut self, row: Result<Row<'_>, String>, values: &mut Vec<f32>) -> Result<Option<Window>, RowError> {
        self.lines += 1;
        self.unit = "row";
        self.summary.rows += 1;
        let line = self.lines;
        let row = row.and_then(|r| {
            if r.values.len() != self.p.features {
                return Err(format!("expected {} value(s), found {}", self.p.features, r.values.len()));
            }
            if r.session.is_some() != self.p.session_column {
                return Err(if self.p.session_column { "missing session id".into() } else { "unexpected session id".into() });
            }
            check_row(&r)?;
            Ok(r)
        });
        match row {
            Ok(r) => self.accept(line, r, values),
            Err(why) => self.reject(line, why, false),
        }
    }

    /// Windows a validated row.
    fn accept(&mut self, line: usize, row: Row<'_>, values: &mut Vec<f32>) -> Result<Option<Window>, RowError> {
        let (t, device) = (row.time, row.device);
        let p = &self.p;
        let f = p.features;
        // Fixed windows: a ring of `window` samples and their times. Sessions: a growing buffer,
        // and the session's first and last time.
        let (ring, times) = if p.sessions.is_some() { (0, 2) } else { (p.window, p.window) };
        let dev = self.devices.entry(device.to_string()).or_insert_with(|| Device {
            buf: vec![0.0; ring * f],
            times: vec![String::new(); times],
            session: String::new(),
            filled: 0,
            since_emit: 0,
            last_t: f64::NEG_INFINITY,
            windows: 0,
            samples: 0,
        });
        if t <= dev.last_t {
            let why = format!("device '{device}' time {t} is not after {}", dev.last_t);
            return self.reject(line, why, true);
        }
        let gap = p.max_gap.is_some_and(|g| dev.filled > 0 && t - dev.last_t > g);
        if let Some(limits) = p.sessions {
            let sc = p.session_column;
            let new_id = sc && dev.filled > 0 && row.session != Some(dev.session.as_str());
            // The session a gap or a new id ends goes out now; this sample starts the next one.
            let ended = if gap || new_id {
                if gap {
                    self.summary.gaps += 1;
                } else {
                    self.summary.session_ids += 1;
                }
                close_session(dev, &mut self.summary, device, limits.min, sc, values)
            } else {
                None
            };
            if let Some(id) = row.session.filter(|id| *id != dev.session) {
                dev.session.clear();
                dev.session.push_str(id);
            }
            dev.last_t = t;
            dev.samples += 1;
            if dev.filled == 0 {
                dev.times[0] = row.time_text.to_string();
            }
            dev.times[1] = row.time_text.to_string();
            dev.buf.extend_from_slice(row.values);
            dev.filled += 1;
            if dev.filled == limits.max {
                // `ended` is None here: a gap leaves a one-sample session, and `max` >= 2.
                self.summary.cut_sessions += 1;
                return Ok(close_session(dev, &mut self.summary, device, limits.min, sc, values));
            }
            return Ok(ended);
        }
        if gap {
            self.summary.gaps += 1;
            dev.filled = 0;
            dev.since_emit = 0;
        }
        dev.last_t = t;
        dev.samples += 1;
        let w = p.window;
        let slot = dev.filled % w;
        dev.buf[slot * f..(slot + 1) * f].copy_from_slice(row.values);
        dev.times[slot] = row.time_text.to_string();
        dev.filled += 1;
        dev.since_emit += 1;
        if dev.filled < w || (dev.filled != w && dev.since_emit < p.stride) {
            return Ok(None);
        }
        dev.since_emit = 0;
        dev.windows += 1;
        self.summary.windows += 1;
        // The ring's oldest sample sits right after the newest one.
        let first = dev.filled % w;
        for k in 0..w {
            let i = (first + k) % w;
            values.extend_from_slice(&dev.buf[i * f..(i + 1) * f]);
        }
        Ok(Some(Window { device: device.to_string(), start: dev.times[first].clone(), end: row.time_text.to_string(), session: None }))
    }

    /// Closes every open session at the end of the input (in device id order), appending their
    /// values to `values`: each window with the number of values it appended. Nothing in
    /// fixed-window mode (a partial window is not scored).
    pub fn finish(&mut self, values: &mut Vec<f32>) -> Vec<(Window, usize)> {
        let Some(limits) = self.p.sessions else { return Vec::new() };
        let mut ids: Vec<&String> = self.devices.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            let dev = self.devices.get_mut(&id).expect("listed above");
            let before = values.len();
            if let Some(w) = close_session(dev, &mut self.summary, &id, limits.min, self.p.session_column, values) {
                out.push((w, values.len() - before));
            }
        }
        out
    }

    fn reject(&mut self, line: usize, why: String, out_of_order: bool) -> Result<Option<Window>, RowError> {
        let e = RowError { unit: self.unit, line, why };
        if self.p.strict {
            return Err(e);
        }
        self.summary.first_skipped.get_or_insert(e);
        if out_of_order {
            self.summary.out_of_order += 1;
        } else {
            self.summary.malformed += 1;
        }
        Ok(None)
    }
}

/// Ends `dev`'s open session: a window if it has at least `min` samples (values appended to
/// `values`; with its session id when `with_id`), else counted as short; the device then has no
/// open session.
fn close_session(
    dev: &mut Device,
    summary: &mut Summary,
    device: &str,
    min: usize,
    with_id: bool,
    values: &mut Vec<f32>,
) -> Option<Window> {
    let n = std::mem::take(&mut dev.filled);
    let out = if n >= min {
        values.extend_from_slice(&dev.buf);
        dev.windows += 1;
        summary.windows += 1;
        let session = with_id.then(|| dev.session.clone());
        Some(Window { device: device.to_string(), start: dev.times[0].clone(), end: dev.times[1].clone(), session })
    } else {
        summary.short_sessions += usize::from(n > 0);
        None
    };
    dev.buf.clear();
    out
}

/// The columns before the values, as errors name them: `device id, timestamp[, session id]`.
pub fn key_columns(session: bool) -> &'static str {
    if session {
        "device id, timestamp, session id"
    } else {
        "device id, timestamp"
    }
}

/// Parses timestamp and values of a row (after a session id when `session`) into `vals`;
/// returns the checked row.
fn parse_row<'a>(fields: &[&'a str], session: bool, vals: &'a mut [f32]) -> Result<Row<'a>, String> {
    let f = vals.len();
    let s = usize::from(session);
    if fields.len() != 2 + s + f {
        return Err(format!("expected {} fields ({}, {f} value(s)), found {}", 2 + s + f, key_columns(session), fields.len()));
    }
    let t: f64 = fields[1].parse().map_err(|_| format!("timestamp '{}' is not a number", fields[1]))?;
    for (v, cell) in vals.iter_mut().zip(&fields[2 + s..]) {
        *v = cell.parse().map_err(|_| format!("value '{cell}' is not a number"))?;
    }
    let row = Row { device: fields[0], time: t, time_text: fields[1], session: session.then(|| fields[2]), values: vals };
    check_row(&row)?;
    Ok(row)
}

/// The checks every source shares: a device id, a finite timestamp, finite values.
fn check_row(r: &Row<'_>) -> Result<(), String> {
    if r.device.is_empty() {
        return Err("empty device id".into());
    }
    if r.session == Some("") {
        return Err("empty session id".into());
    }
    if !r.time.is_finite() {
        return Err(format!("timestamp '{}' is not finite", r.time_text));
    }
    if let Some(v) = r.values.iter().find(|v| !v.is_finite()) {
        return Err(format!("value '{v}' is not finite"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: usize, stride: usize) -> WindowerParams {
        WindowerParams { features: 1, window, stride, max_gap: None, strict: false, sessions: None, session_column: false }
    }

    fn records(text: &[u8]) -> Vec<(usize, csv::ByteRecord)> {
        let mut r = crate::csv_input::reader(text);
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while r.read_byte_record(&mut rec).unwrap() {
            out.push((rec.position().map_or(0, |p| p.line() as usize), rec.clone()));
        }
        out
    }

    fn feed_all(w: &mut Windower, text: &[u8]) -> (Vec<Window>, Vec<f32>) {
        let mut vals = Vec::new();
        let mut out = Vec::new();
        for (line, rec) in records(text) {
            if let Some(win) = w.feed_record(line, &rec, &mut vals).expect("lenient mode never fails") {
                out.push(win);
            }
        }
        (out, vals)
    }

    fn feed(w: &mut Windower, text: &[u8], vals: &mut Vec<f32>) -> Result<Option<Window>, RowError> {
        let (line, rec) = records(text).pop().unwrap();
        w.feed_record(line + w.lines, &rec, vals)
    }

    /// A session id column: a new id ends the device's session (also without --max-gap), a gap
    /// still does when given, the ids travel with the windows, and rows without the column or
    /// with an empty id are malformed.
    #[test]
    fn session_ids_cut_sessions() {
        let p = WindowerParams { sessions: Some(SessionLimits { min: 2, max: 9 }), session_column: true, ..params(99, 99) };
        let mut w = Windower::new(p.clone()).unwrap();
        let text = b"device,t,session,v\na,1,x,1\nb,1,7,5\na,2,x,2\na,3,y,3\nb,2,7,6\na,4,y,4\na,5,y,5\na,6,x,6\na,7,x,7\nb,3,,9\nb,4,8\n";
        let (wins, vals) = feed_all(&mut w, text);
        let mut tail = Vec::new();
        let last: Vec<Window> = w.finish(&mut tail).into_iter().map(|(w, _)| w).collect();
        let win = |d: &str, a: &str, b: &str, s: &str| Window { device: d.into(), start: a.into(), end: b.into(), session: Some(s.into()) };
        assert_eq!(wins, vec![win("a", "1", "2", "x"), win("a", "3", "5", "y")]);
        assert_eq!(vals, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        // `x` comes back: another session.
        assert_eq!(last, vec![win("a", "6", "7", "x"), win("b", "1", "2", "7")]);
        assert_eq!(tail, vec![6.0, 7.0, 5.0, 6.0]);
        let s = w.summary();
        assert_eq!((s.session_ids, s.gaps, s.malformed), (2, 0, 2), "{s:?}");
        // With a gap as well.
        let mut w = Windower::new(WindowerParams { max_gap: Some(5.0), ..p.clone() }).unwrap();
        let (wins, _) = feed_all(&mut w, b"a,1,x,1\na,2,x,2\na,20,x,3\na,21,x,4\n");
        assert_eq!(wins, vec![win("a", "1", "2", "x")]);
        assert_eq!(w.summary().gaps, 1);
        // A header of the wrong width names the session column.
        let mut w = Windower::new(p).unwrap();
        let e = feed(&mut w, b"device,t,v\n", &mut Vec::new()).unwrap_err();
        assert!(e.why.contains("device id, timestamp, session id"), "{e}");
        // Without sessions the column means nothing.
        let e = Windower::new(WindowerParams { session_column: true, ..params(3, 3) }).unwrap_err();
        assert_eq!(e, ParamsError::SessionColumnNeedsSessions);
    }

    #[test]
    fn bad_rows_are_counted_and_never_take_a_good_row_with_them() {
        let mut w = Windower::new(params(3, 3)).unwrap();
        let text = b"device,t,v\na,1,10\na,2,x\nb,1,5\n\xff\xfe,3,1\na,2,11\na,2,99\na,3,12\nb,2,nan\n";
        let (wins, vals) = feed_all(&mut w, text);
        assert_eq!(wins, vec![Window { device: "a".into(), start: "1".into(), end: "3".into(), session: None }]);
        assert_eq!(vals, vec![10.0, 11.0, 12.0]);
        let s = w.summary();
        assert_eq!((s.rows, s.malformed, s.out_of_order, s.windows), (8, 3, 1, 1));
        assert_eq!((w.devices(), w.short_devices(), w.samples()), (2, 1, 4));
    }

    /// Sessions: a gap closes one (its values go out when the next sample arrives), a short one
    /// is counted and dropped, one at the maximum is cut and the stream goes on as a new
    /// session, and `finish` closes the open ones in device order; bad limits are refused.
    #[test]
    fn sessions_cut_at_gaps_and_limits() {
        let p = WindowerParams { max_gap: Some(5.0), sessions: Some(SessionLimits { min: 2, max: 4 }), ..params(99, 99) };
        let mut w = Windower::new(p.clone()).unwrap();
        // b: 1,2,3 | gap | 20 (short) | gap | 40..45 (cut after 4, then 2 more); a: 1,2 open at the end.
        let text = b"b,1,1\nb,2,2\nb,3,3\na,1,7\na,2,8\nb,20,9\nb,40,4\nb,41,5\nb,42,6\nb,43,7\nb,44,8\nb,45,9\n";
        let (wins, mut vals) = feed_all(&mut w, text);
        let win = |d: &str, a: &str, b: &str| Window { device: d.into(), start: a.into(), end: b.into(), session: None };
        assert_eq!(wins, vec![win("b", "1", "3"), win("b", "40", "43")]);
        assert_eq!(vals, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        let rest = w.finish(&mut vals);
        assert_eq!(rest, vec![(win("a", "1", "2"), 2), (win("b", "44", "45"), 2)]);
        assert_eq!(vals[7..], [7.0, 8.0, 8.0, 9.0]);
        let s = w.summary();
        assert_eq!((s.windows, s.short_sessions, s.cut_sessions, s.gaps), (4, 1, 1, 2));
        assert!(w.finish(&mut vals).is_empty(), "finish closes each session once");
        // Fixed windows: finish scores nothing.
        assert!(Windower::new(params(2, 2)).unwrap().finish(&mut vals).is_empty());
        for (gap, min, max) in [(None, 2, 4), (Some(1.0), 0, 4), (Some(1.0), 3, 2), (Some(1.0), 1, 1)] {
            let bad = WindowerParams { max_gap: gap, sessions: Some(SessionLimits { min, max }), ..params(9, 9) };
            assert!(Windower::new(bad).is_err(), "{gap:?} {min} {max}");
        }
    }

    #[test]
    fn strict_mode_names_the_line() {
        let mut w = Windower::new(WindowerParams { strict: true, ..params(2, 2) }).unwrap();
        let mut v = Vec::new();
        assert!(feed(&mut w, b"a,1,1\n", &mut v).unwrap().is_none());
        let e = feed(&mut w, b"a,1,2\n", &mut v).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.why.contains("not after"), "{e}");
        let e = feed(&mut w, b"a,3\n", &mut v).unwrap_err();
        assert!(e.to_string().starts_with("line 3: expected 3 fields"), "{e}");
    }

    #[test]
    fn overlapping_windows_and_gaps() {
        let mut w = Windower::new(WindowerParams { max_gap: Some(1.5), ..params(3, 1) }).unwrap();
        let (wins, vals) = feed_all(&mut w, b"d,1,1\nd,2,2\nd,3,3\nd,4,4\nd,10,5\nd,11,6\nd,12,7\n");
        let ends: Vec<&str> = wins.iter().map(|w| w.end.as_str()).collect();
        assert_eq!(ends, ["3", "4", "12"]);
        assert_eq!(vals, vec![1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(w.summary().gaps, 1);
    }

    #[test]
    fn quoted_ids_and_a_wrong_first_line() {
        let mut w = Windower::new(params(2, 2)).unwrap();
        let (wins, _) = feed_all(&mut w, "device,t,v\n\"a,\"\"b\"\"\nc ü\",1,1\n\"a,\"\"b\"\"\nc ü\",2,2\n".as_bytes());
        assert_eq!(wins.len(), 1);
        assert_eq!(wins[0].device, "a,\"b\"\nc ü");
        for (text, want) in [
            (&b"a,b\n1,2\n"[..], "the header has 2 column(s) (\"a\", \"b\"); this model reads device id, timestamp and 1 value column(s)"),
            (b"\xff\xfe\x00garbage,1\n", "is not UTF-8 text"),
            (b"d,1\nd,2,3\n", "is neither a header"),
        ] {
            let mut w = Windower::new(params(2, 2)).unwrap();
            let (line, rec) = records(text).remove(0);
            let e = w.feed_record(line, &rec, &mut Vec::new()).unwrap_err();
            assert!(e.to_string().starts_with("line 1: ") && e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert!(Windower::new(params(0, 1)).is_err());
        assert!(Windower::new(params(1, 0)).is_err());
    }
}
