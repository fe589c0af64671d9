//! Readings in an Arrow record batch: the long format of `edge assign`'s Parquet input, by
//! position: device id (string, or integer), timestamp (integer, float, TIMESTAMP or DATE, used
//! as its stored number), then one numeric column per feature. Column names are free, as in
//! Parquet, so a Spark or pandas frame keeps its own names.
//!
//! Each row becomes an [`edge::fleet::Row`] with the text the CLI would write for it (integer
//! ids and timestamps printed as their stored number, floats as Rust prints them), so scored
//! windows carry the same `window_start` / `window_end` as `edge assign` on the same data
//! written to Parquet. A null cell makes the row malformed (skipped and counted, like a missing
//! CSV cell).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use edge::fleet::{Number, Row};
use edge::parquet_input::ParquetInputError;

/// A numeric column, read as the stored number.
enum Numbers<'a> {
    Int(Box<dyn Fn(usize) -> i128 + 'a>),
    F32(&'a arrow_array::Float32Array),
    F64(&'a arrow_array::Float64Array),
}

impl Numbers<'_> {
    fn at(&self, i: usize) -> Number {
        match self {
            Numbers::Int(f) => Number::Int(f(i)),
            Numbers::F32(a) => Number::F32(a.value(i)),
            Numbers::F64(a) => Number::F64(a.value(i)),
        }
    }
}

/// An integer column of any width as a closure (`None`: not an integer column).
fn integers(a: &dyn Array) -> Option<Box<dyn Fn(usize) -> i128 + '_>> {
    macro_rules! int {
        ($t:ty) => {{
            let p = a.as_primitive::<$t>();
            Box::new(move |i| p.value(i) as i128)
        }};
    }
    Some(match a.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        _ => return None,
    })
}

/// A column of numbers: integers, floats, and (for timestamps) TIMESTAMP / DATE as their
/// stored count, as the Parquet reader takes them.
fn numbers(a: &dyn Array, timestamps: bool) -> Option<Numbers<'_>> {
    macro_rules! int {
        ($t:ty) => {{
            let p = a.as_primitive::<$t>();
            Numbers::Int(Box::new(move |i| p.value(i) as i128))
        }};
    }
    if let Some(f) = integers(a) {
        return Some(Numbers::Int(f));
    }
    Some(match a.data_type() {
        DataType::Float32 => Numbers::F32(a.as_primitive::<Float32Type>()),
        DataType::Float64 => Numbers::F64(a.as_primitive::<Float64Type>()),
        DataType::Timestamp(TimeUnit::Second, _) if timestamps => int!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) if timestamps => int!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) if timestamps => int!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) if timestamps => int!(TimestampNanosecondType),
        DataType::Date32 if timestamps => int!(Date32Type),
        DataType::Date64 if timestamps => int!(Date64Type),
        _ => return None,
    })
}

/// The device id column.
enum Devices<'a> {
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    Int(Box<dyn Fn(usize) -> i128 + 'a>),
}

/// A record batch checked against the model's feature count, read row by row.
pub struct Readings<'a> {
    batch: &'a RecordBatch,
    devices: Devices<'a>,
    times: Numbers<'a>,
    values: Vec<Numbers<'a>>,
}

impl<'a> Readings<'a> {
    /// Checks the columns of `batch` for a model of `features` values per sample; the error is
    /// the one the Parquet input gives for the same columns.
    pub fn new(batch: &'a RecordBatch, features: usize) -> Result<Self, ParquetInputError> {
        let schema = batch.schema_ref();
        if batch.num_columns() != 2 + features {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(ParquetInputError::Columns {
                expected: 2 + features,
                layout: edge::fleet::key_columns(false),
                features,
                found: batch.num_columns(),
                names: names.join(", "),
            });
        }
        let wrong = |i: usize, role: &'static str, allowed: &'static str| ParquetInputError::ColumnType {
            index: i + 1,
            name: schema.field(i).name().clone(),
            found: schema.field(i).data_type().to_string(),
            role,
            allowed,
        };
        let d = batch.column(0).as_ref();
        let devices = match d.data_type() {
            DataType::Utf8 => Devices::Utf8(d.as_string::<i32>()),
            DataType::LargeUtf8 => Devices::LargeUtf8(d.as_string::<i64>()),
            DataType::Utf8View => Devices::View(d.as_string_view()),
            _ => Devices::Int(integers(d).ok_or_else(|| wrong(0, "device id", "a string or an integer"))?),
        };
        let times =
            numbers(batch.column(1).as_ref(), true).ok_or_else(|| wrong(1, "timestamp", "numeric (integer, float, TIMESTAMP or DATE)"))?;
        let values = (2..2 + features)
            .map(|i| numbers(batch.column(i).as_ref(), false).ok_or_else(|| wrong(i, "value", "numeric (float or integer)")))
            .collect::<Result<_, _>>()?;
        Ok(Readings { batch, devices, times, values })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Row `i`: its fields (device and timestamp text written into the reused buffers), or why
    /// it is malformed, with the Parquet reader's words.
    pub fn row<'b>(
        &self,
        i: usize,
        values: &'b mut [f32],
        device_text: &'b mut String,
        time_text: &'b mut String,
    ) -> Result<Row<'b>, String>
    where
        'a: 'b,
    {
        let cols = self.batch.columns();
        if cols[0].is_null(i) {
            return Err("missing device id".into());
        }
        let device: &'b str = match &self.devices {
            // Trimmed like a CSV cell, so one device has one id whatever the input format.
            Devices::Utf8(a) => a.value(i).trim(),
            Devices::LargeUtf8(a) => a.value(i).trim(),
            Devices::View(a) => a.value(i).trim(),
            Devices::Int(f) => {
                Number::Int(f(i)).write_text(device_text);
                device_text
            }
        };
        if cols[1].is_null(i) {
            return Err("missing timestamp".into());
        }
        let t = self.times.at(i);
        t.write_text(time_text);
        for (j, (v, col)) in values.iter_mut().zip(&self.values).enumerate() {
            if cols[2 + j].is_null(i) {
                return Err("missing value".into());
            }
            *v = col.at(i).value() as f32;
        }
        Ok(Row { device, time: t.value(), time_text, session: None, values })
    }
}
