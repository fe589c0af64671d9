//! Parquet readings: the same long format as the CSV input, as flat columns in this order:
//! device id (string, surrounding whitespace trimmed as in CSV, or integer), timestamp (integer, float or a Parquet TIMESTAMP/DATE, used as
//! its stored number), with a session column a session id (string or integer), then one numeric
//! column per feature. Column names are free.
//!
//! Rows stream row group by row group (memory: one row group's pages, not the file). A row with a
//! null cell is malformed like a non-numeric CSV cell: skipped and counted, or an error with
//! `--strict`. A file that is not Parquet, is truncated or corrupt, or whose columns do not fit the
//! model is an error naming what is wrong, before any output is written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use parquet::basic::Type as Physical;
use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row as PqRow};

use crate::fleet::{Number, Row};

/// Why a Parquet file cannot be read as fleet readings.
#[derive(Debug, thiserror::Error)]
pub enum ParquetInputError {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The Parquet decoder rejected the file (truncated, corrupt, unsupported).
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] ParquetError),
    /// Wrong number of columns for the model.
    #[error("expected {expected} columns ({layout}, {features} value column(s)), found {found}: {names}")]
    Columns {
        /// 2 + features, plus 1 with a session column.
        expected: usize,
        /// The leading columns expected.
        layout: &'static str,
        /// The model's feature count.
        features: usize,
        /// Columns in the file.
        found: usize,
        /// Their names, comma-separated.
        names: String,
    },
    /// A column of the wrong kind.
    #[error("column {index} ('{name}') is {found}; the {role} column must be {allowed}")]
    ColumnType {
        /// 1-based column position.
        index: usize,
        /// Column name.
        name: String,
        /// Its type as stored.
        found: String,
        /// Device id, timestamp or value.
        role: &'static str,
        /// What is accepted there.
        allowed: &'static str,
    },
}

/// Whether the file at `path` should be read as Parquet: a `.parquet`/`.pq` name, or Parquet's
/// magic "PAR1" at the start and either at the end too or binary bytes after it (a truncated
/// Parquet file then gets Parquet's error, not thousands of "malformed" CSV lines; a CSV whose
/// first device id happens to start with "PAR1" stays CSV).
pub fn is_parquet(path: &Path) -> std::io::Result<bool> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("parquet" | "pq")) {
        return Ok(true);
    }
    // A pipe or FIFO cannot be sniffed without consuming what the reader needs: CSV unless named.
    if !std::fs::metadata(path)?.is_file() {
        return Ok(false);
    }
    let mut f = File::open(path)?;
    let mut head = Vec::with_capacity(4096);
    (&mut f).take(4096).read_to_end(&mut head)?;
    if !head.starts_with(b"PAR1") {
        return Ok(false);
    }
    let mut tail = [0u8; 4];
    let len = f.metadata()?.len();
    if len >= 8 {
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut tail)?;
        if &tail == b"PAR1" {
            return Ok(true);
        }
    }
    Ok(std::str::from_utf8(&head).is_err() || head.contains(&0))
}

/// An opened Parquet readings file whose columns fit a model with `features` values per sample.
pub struct ParquetReadings {
    reader: SerializedFileReader<File>,
    features: usize,
    session: bool,
}

impl ParquetReadings {
    /// Opens `path` and checks its footer and columns (a session id column third when `session`).
    pub fn open(path: &Path, features: usize, session: bool) -> Result<Self, ParquetInputError> {
        let reader = SerializedFileReader::new(File::open(path)?)?;
        let schema = reader.metadata().file_metadata().schema_descr();
        let cols = schema.columns();
        let names = || cols.iter().map(|c| c.path().string()).collect::<Vec<_>>().join(", ");
        let flat = schema.root_schema().get_fields().len() == cols.len();
        let s = usize::from(session);
        if cols.len() != 2 + s + features || !flat {
            return Err(ParquetInputError::Columns {
                expected: 2 + s + features,
                layout: crate::fleet::key_columns(session),
                features,
                found: schema.root_schema().get_fields().len(),
                names: names(),
            });
        }
        for (i, c) in cols.iter().enumerate() {
            let (role, allowed, ok) = match i {
                0 => (
                    "device id",
                    "a string or an integer",
                    matches!(c.physical_type(), Physical::BYTE_ARRAY | Physical::INT32 | Physical::INT64),
                ),
                1 => (
                    "timestamp",
                    "numeric (integer, float, TIMESTAMP or DATE)",
                    matches!(c.physical_type(), Physical::INT32 | Physical::INT64 | Physical::FLOAT | Physical::DOUBLE),
                ),
                2 if session => (
                    "session id",
                    "a string or an integer",
                    matches!(c.physical_type(), Physical::BYTE_ARRAY | Physical::INT32 | Physical::INT64),
                ),
                _ => (
                    "value",
                    "numeric (float or integer)",
                    matches!(c.physical_type(), Physical::INT32 | Physical::INT64 | Physical::FLOAT | Physical::DOUBLE),
                ),
            };
            if !ok || c.max_rep_level() > 0 {
                let found = if c.max_rep_level() > 0 { "a repeated (list) column".to_string() } else { format!("{:?}", c.physical_type()) };
                return Err(ParquetInputError::ColumnType { index: i + 1, name: c.path().string(), found, role, allowed });
            }
        }
        Ok(ParquetReadings { reader, features, session })
    }

    /// Rows in the file (from its footer).
    pub fn rows(&self) -> u64 {
        self.reader.metadata().file_metadata().num_rows().max(0) as u64
    }

    /// Calls `each` with every row in file order: the fields, or why the row is malformed. A
    /// decoding error mid-file (a corrupt page) ends the walk with that error.
    pub fn for_each<E: From<ParquetInputError>>(self, mut each: impl FnMut(Result<Row<'_>, String>) -> Result<(), E>) -> Result<(), E> {
        let mut values = vec![0f32; self.features];
        let (mut device, mut time, mut session) = (String::new(), String::new(), String::new());
        let with_session = self.session;
        let iter = self.reader.get_row_iter(None).map_err(ParquetInputError::from)?;
        for row in iter {
            let row = row.map_err(ParquetInputError::from)?;
            let texts = Texts { device: &mut device, time: &mut time, session: with_session.then_some(&mut session) };
            each(split(&row, &mut values, texts))?;
        }
        Ok(())
    }
}

/// Text buffers reused from row to row for the cells written as text: integer ids, timestamps,
/// and the session id when the file has one.
struct Texts<'a> {
    device: &'a mut String,
    time: &'a mut String,
    session: Option<&'a mut String>,
}

/// A string cell (trimmed like a CSV cell, so one id is one id whatever the input format), or an
/// integer written into `text`.
fn id_cell<'a>(cell: Option<&'a Field>, what: &str, text: &'a mut String) -> Result<&'a str, String> {
    match cell {
        Some(Field::Str(s)) => Ok(s.trim()),
        Some(Field::Null) | None => Err(format!("missing {what}")),
        Some(f) => {
            let id = number(f).ok_or_else(|| format!("{what} {f} is not a string or an integer"))?;
            id.write_text(text);
            Ok(text)
        }
    }
}

/// The device, timestamp, session id (with a session column) and values of one record (column
/// order checked at open).
fn split<'a>(row: &'a PqRow, values: &'a mut [f32], texts: Texts<'a>) -> Result<Row<'a>, String> {
    let Texts { device: device_text, time: time_text, session: session_text } = texts;
    let mut cells = row.get_column_iter().map(|(_, f)| f);
    let device = id_cell(cells.next(), "device id", device_text)?;
    let time = match cells.next() {
        Some(Field::Null) | None => return Err("missing timestamp".into()),
        Some(f) => {
            let t = number(f).ok_or_else(|| format!("timestamp {f} is not a number"))?;
            t.write_text(time_text);
            t.value()
        }
    };
    let session = match session_text {
        Some(text) => Some(id_cell(cells.next(), "session id", text)?),
        None => None,
    };
    for (v, f) in values.iter_mut().zip(cells) {
        *v = match f {
            Field::Null => return Err("missing value".into()),
            f => number(f).ok_or_else(|| format!("value {f} is not a number"))?.value() as f32,
        };
    }
    Ok(Row { device, time, time_text, session, values })
}

/// A numeric cell, or `None` for strings, bytes, decimals and nested values.
fn number(f: &Field) -> Option<Number> {
    Some(match *f {
        Field::Byte(v) => Number::Int(v.into()),
        Field::Short(v) => Number::Int(v.into()),
        Field::Int(v) | Field::Date(v) | Field::TimeMillis(v) => Number::Int(v.into()),
        Field::Long(v) | Field::TimestampMillis(v) | Field::TimestampMicros(v) | Field::TimeMicros(v) => Number::Int(v.into()),
        Field::UByte(v) => Number::Int(v.into()),
        Field::UShort(v) => Number::Int(v.into()),
        Field::UInt(v) => Number::Int(v.into()),
        Field::ULong(v) => Number::Int(v.into()),
        Field::Float(v) => Number::F32(v),
        Field::Double(v) => Number::F64(v),
        _ => return None,
    })
}
