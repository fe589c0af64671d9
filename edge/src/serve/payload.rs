//! Message payloads: the samples one MQTT message carries.
//!
//! Three forms, told apart by the first non-blank byte:
//! - JSON object, one sample: `{"t": 1700000000, "v": [0.1, 0.2]}` (`v` may be a bare number for
//!   a one-feature model);
//! - JSON, many samples: `[{"t": ..., "v": ...}, ...]` or `{"samples": [...]}`;
//! - CSV lines, one sample each: `t,v1[,v2...]` (blank lines ignored).
//!
//! A timestamp is a number (seconds, milliseconds, a counter: anything increasing); its text as
//! written is what the results report, as `edge assign` reports the file's text. A payload is
//! accepted whole or rejected whole: one bad sample rejects the message, so a device's stream
//! never silently loses a sample from the middle of a message.

use compact_str::{CompactString, ToCompactString};
use serde::Deserialize;
use smallvec::SmallVec;

/// A sample's values, inline up to four features.
pub type Values = SmallVec<[f32; 4]>;

/// One sample of a device's stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Timestamp, for ordering, gaps and duplicate detection.
    pub t: f64,
    /// Timestamp as written in the payload (reported as window start/end).
    pub text: CompactString,
    /// One value per feature.
    pub values: Values,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Not UTF-8 text.
    #[error("payload is not UTF-8 text")]
    NotText,
    /// No sample in it.
    #[error("payload holds no sample")]
    Empty,
    /// JSON that does not have the expected shape.
    #[error(
        "invalid JSON sample payload: {0} (expected {{\"t\": NUMBER, \"v\": [NUMBER, ...]}}, a list of them, or {{\"samples\": [...]}})"
    )]
    Json(String),
    /// A CSV line that is not `t,v1[,v2...]`.
    #[error("CSV line {line}: {why}")]
    Csv {
        /// 1-based line in the payload.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// A sample with the wrong number of values.
    #[error("sample {index}: {got} value(s), the model expects {expected}")]
    FeatureCount {
        /// 0-based sample in the payload.
        index: usize,
        /// Values given.
        got: usize,
        /// Model features.
        expected: usize,
    },
    /// A timestamp or value that is NaN or infinite.
    #[error("sample {index}: {what} is not finite")]
    NonFinite {
        /// 0-based sample in the payload.
        index: usize,
        /// "the timestamp" or "value N".
        what: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonValues {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSample {
    t: serde_json::Number,
    v: JsonValues,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonPayload {
    One(JsonSample),
    List(Vec<JsonSample>),
    Wrapped { samples: Vec<JsonSample> },
}

/// The samples of a payload for a model of `features` values per sample.
pub fn parse(payload: &[u8], features: usize) -> Result<Vec<Sample>, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotText)?;
    let trimmed = text.trim_start();
    let samples = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let parsed: JsonPayload = serde_json::from_str(trimmed).map_err(|e| PayloadError::Json(e.to_string()))?;
        let list = match parsed {
            JsonPayload::One(s) => vec![s],
            JsonPayload::List(l) | JsonPayload::Wrapped { samples: l } => l,
        };
        list.into_iter()
            .map(|s| {
                let t = s.t.as_f64().unwrap_or(f64::NAN);
                let values = match s.v {
                    JsonValues::One(v) => Values::from_elem(v as f32, 1),
                    JsonValues::Many(v) => v.into_iter().map(|x| x as f32).collect(),
                };
                Sample { t, text: s.t.to_compact_string(), values }
            })
            .collect()
    } else {
        parse_csv(text)?
    };
    if samples.is_empty() {
        return Err(PayloadError::Empty);
    }
    for (index, s) in samples.iter().enumerate() {
        if s.values.len() != features {
            return Err(PayloadError::FeatureCount { index, got: s.values.len(), expected: features });
        }
        if !s.t.is_finite() {
            return Err(PayloadError::NonFinite { index, what: "the timestamp".into() });
        }
        if let Some(i) = s.values.iter().position(|v| !v.is_finite()) {
            return Err(PayloadError::NonFinite { index, what: format!("value {}", i + 1) });
        }
    }
    Ok(samples)
}

fn parse_csv(text: &str) -> Result<Vec<Sample>, PayloadError> {
    let mut out = Vec::with_capacity(text.bytes().filter(|&b| b == b'\n').count() + 1);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |why: String| PayloadError::Csv { line: i + 1, why };
        let mut fields = line.split(',').map(str::trim);
        let ts = fields.next().unwrap_or_default();
        let t: f64 = ts.parse().map_err(|_| err(format!("timestamp '{ts}' is not a number")))?;
        let values =
            fields.map(|c| c.parse::<f32>().map_err(|_| err(format!("value '{c}' is not a number")))).collect::<Result<Values, _>>()?;
        out.push(Sample { t, text: ts.into(), values });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        let one = parse(br#"{"t": 1700000000, "v": [0.5, -1]}"#, 2).unwrap();
        assert_eq!(one, vec![Sample { t: 1.7e9, text: "1700000000".into(), values: vec![0.5, -1.0].into() }]);
        let bare = parse(br#"{"t": 2.5, "v": 3}"#, 1).unwrap();
        assert_eq!((bare[0].text.as_str(), bare[0].values.as_slice()), ("2.5", &[3.0f32][..]));
        let list = parse(br#"[{"t": 1, "v": [1]}, {"t": 2, "v": [2]}]"#, 1).unwrap();
        let wrapped = parse(br#" {"samples": [{"t": 1, "v": [1]}, {"t": 2, "v": [2]}]}"#, 1).unwrap();
        assert_eq!(list, wrapped);
        let csv = parse(b"1,1\n\n2, 2\n", 1).unwrap();
        assert_eq!(csv, list);
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        for (payload, f, want) in [
            (&b"\xff\xfe"[..], 1, "not UTF-8"),
            (b"", 1, "no sample"),
            (b"{\"t\": 1}", 1, "invalid JSON"),
            (b"{\"t\": \"noon\", \"v\": 1}", 1, "invalid JSON"),
            (b"{\"t\": 1, \"v\": [1, 2]}", 1, "sample 0: 2 value(s), the model expects 1"),
            (b"1,1\n2,x\n", 1, "CSV line 2: value 'x' is not a number"),
            (b"a,1\n", 1, "CSV line 1: timestamp 'a'"),
            (b"1,nan\n", 1, "sample 0: value 1 is not finite"),
            (b"[{\"t\": 1, \"v\": 1}, {\"t\": 2, \"v\": 1e999}]", 1, "invalid JSON"),
        ] {
            let e = parse(payload, f).unwrap_err().to_string();
            assert!(e.contains(want), "{payload:?}: {e}");
        }
    }
}
