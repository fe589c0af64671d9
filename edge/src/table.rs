//! Output tables (the window table and the device table) as CSV or Parquet, written atomically
//! through [`atomic_file::AtomicFile`]: a failed or killed run leaves any previous file
//! at the path as it was.
//!
//! CSV goes through the `csv` crate, so text cells (device ids, timestamps as written in the
//! input) round-trip whatever they hold: commas, quotes, newlines, any Unicode. Parquet columns
//! are flat and required: text as UTF-8 byte arrays, counts as INT64, cluster ids as INT32,
//! distances as FLOAT/DOUBLE, flags as BOOLEAN; snappy pages; row groups of
//! [`ROW_GROUP`] rows, so memory stays bounded by one row group.

use std::path::Path;
use std::sync::Arc;

use atomic_file::AtomicFile;
use parquet::basic::{Compression, ConvertedType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::Type;

/// Rows per Parquet row group.
pub const ROW_GROUP: usize = 65_536;

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The table's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The CSV writer failed.
    #[error("{path}: {source}")]
    Csv {
        /// The table's path.
        path: String,
        /// The error.
        source: csv::Error,
    },
    /// The Parquet writer failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The table's path.
        path: String,
        /// The error.
        source: parquet::errors::ParquetError,
    },
}

/// File format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated text with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl TableFormat {
    /// Parquet for a `.parquet` or `.pq` name, CSV otherwise.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("parquet" | "pq") => TableFormat::Parquet,
            _ => TableFormat::Csv,
        }
    }
}

/// Type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// 32-bit integer (cluster ids).
    I32,
    /// 64-bit integer (counts).
    I64,
    /// 32-bit float (what the runtime computes).
    F32,
    /// 64-bit float (means and shares).
    F64,
    /// Boolean.
    Bool,
}

/// One value of a row, of its column's kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// Text.
    Text(&'a str),
    /// 32-bit integer.
    I32(i32),
    /// 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
    /// Boolean.
    Bool(bool),
}

/// Writes one column's buffered values into the row group and empties the buffer (its
/// capacity is kept for the next group).
fn write_and_clear<T: DataType>(col: &mut SerializedColumnWriter<'_>, values: &mut Vec<T::T>) -> parquet::errors::Result<usize> {
    let written = col.typed::<T>().write_batch(values, None, None);
    values.clear();
    written
}

/// Buffered values of one Parquet column.
enum Buffer {
    Text(Vec<ByteArray>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
}

enum Sink {
    Csv(csv::Writer<AtomicFile>),
    Parquet { writer: SerializedFileWriter<AtomicFile>, buffers: Vec<Buffer>, rows: usize },
}

/// A table being written; nothing appears at its path before [`TableWriter::commit`].
pub struct TableWriter {
    path: String,
    kinds: Vec<Kind>,
    sink: Sink,
}

impl TableWriter {
    /// Starts the table at `path` with these columns, in `format`.
    pub fn create(path: &Path, format: TableFormat, columns: &[(String, Kind)]) -> Result<Self, TableError> {
        let name = path.display().to_string();
        let io = |source| TableError::Io { path: name.clone(), source };
        let pq = |source| TableError::Parquet { path: name.clone(), source };
        let file = AtomicFile::create(path).map_err(io)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| c.1).collect();
        let sink = match format {
            TableFormat::Csv => {
                let mut w = csv::WriterBuilder::new().from_writer(file);
                w.write_record(columns.iter().map(|c| c.0.as_str())).map_err(|source| TableError::Csv { path: name.clone(), source })?;
                Sink::Csv(w)
            }
            TableFormat::Parquet => {
                let fields = columns
                    .iter()
                    .map(|(n, k)| {
                        let (physical, converted) = match k {
                            Kind::Text => (Physical::BYTE_ARRAY, ConvertedType::UTF8),
                            Kind::I32 => (Physical::INT32, ConvertedType::NONE),
                            Kind::I64 => (Physical::INT64, ConvertedType::NONE),
                            Kind::F32 => (Physical::FLOAT, ConvertedType::NONE),
                            Kind::F64 => (Physical::DOUBLE, ConvertedType::NONE),
                            Kind::Bool => (Physical::BOOLEAN, ConvertedType::NONE),
                        };
                        Type::primitive_type_builder(n, physical)
                            .with_repetition(Repetition::REQUIRED)
                            .with_converted_type(converted)
                            .build()
                            .map(Arc::new)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(pq)?;
                let schema = Arc::new(Type::group_type_builder("schema").with_fields(fields).build().map_err(pq)?);
                let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
                let writer = SerializedFileWriter::new(file, schema, props).map_err(pq)?;
                let buffers = kinds
                    .iter()
                    .map(|k| match k {
                        Kind::Text => Buffer::Text(Vec::new()),
                        Kind::I32 => Buffer::I32(Vec::new()),
                        Kind::I64 => Buffer::I64(Vec::new()),
                        Kind::F32 => Buffer::F32(Vec::new()),
                        Kind::F64 => Buffer::F64(Vec::new()),
                        Kind::Bool => Buffer::Bool(Vec::new()),
                    })
                    .collect();
                Sink::Parquet { writer, buffers, rows: 0 }
            }
        };
        Ok(TableWriter { path: name, kinds, sink })
    }

    /// Appends one row; its cells must match the columns' kinds (a programming error otherwise).
    pub fn write(&mut self, row: &[Cell<'_>]) -> Result<(), TableError> {
        assert_eq!(row.len(), self.kinds.len(), "a row has one cell per column");
        match &mut self.sink {
            Sink::Csv(w) => {
                for cell in row {
                    let r = match *cell {
                        Cell::Text(s) => w.write_field(s),
                        Cell::I32(v) => w.write_field(v.to_string()),
                        Cell::I64(v) => w.write_field(v.to_string()),
                        Cell::F32(v) => w.write_field(v.to_string()),
                        Cell::F64(v) => w.write_field(v.to_string()),
                        Cell::Bool(v) => w.write_field(if v { "true" } else { "false" }),
                    };
                    r.map_err(|source| TableError::Csv { path: self.path.clone(), source })?;
                }
                w.write_record(None::<&[u8]>).map_err(|source| TableError::Csv { path: self.path.clone(), source })?;
            }
            Sink::Parquet { buffers, rows, .. } => {
                for (b, cell) in buffers.iter_mut().zip(row) {
                    match (b, *cell) {
                        (Buffer::Text(v), Cell::Text(s)) => v.push(ByteArray::from(s)),
                        (Buffer::I32(v), Cell::I32(x)) => v.push(x),
                        (Buffer::I64(v), Cell::I64(x)) => v.push(x),
                        (Buffer::F32(v), Cell::F32(x)) => v.push(x),
                        (Buffer::F64(v), Cell::F64(x)) => v.push(x),
                        (Buffer::Bool(v), Cell::Bool(x)) => v.push(x),
                        _ => panic!("cell {cell:?} does not match its column's kind"),
                    }
                }
                *rows += 1;
                if *rows >= ROW_GROUP {
                    self.flush_group()?;
                }
            }
        }
        Ok(())
    }

    /// Writes the buffered Parquet rows as one row group.
    fn flush_group(&mut self) -> Result<(), TableError> {
        let Sink::Parquet { writer, buffers, rows } = &mut self.sink else { return Ok(()) };
        if *rows == 0 {
            return Ok(());
        }
        let path = self.path.clone();
        let pq = |source| TableError::Parquet { path: path.clone(), source };
        let mut rg = writer.next_row_group().map_err(pq)?;
        for b in buffers.iter_mut() {
            let mut col = rg.next_column().map_err(pq)?.expect("one column writer per schema column");
            let written = match b {
                Buffer::Text(v) => write_and_clear::<ByteArrayType>(&mut col, v),
                Buffer::I32(v) => write_and_clear::<Int32Type>(&mut col, v),
                Buffer::I64(v) => write_and_clear::<Int64Type>(&mut col, v),
                Buffer::F32(v) => write_and_clear::<FloatType>(&mut col, v),
                Buffer::F64(v) => write_and_clear::<DoubleType>(&mut col, v),
                Buffer::Bool(v) => write_and_clear::<BoolType>(&mut col, v),
            };
            written.map_err(pq)?;
            col.close().map_err(pq)?;
        }
        rg.close().map_err(pq)?;
        *rows = 0;
        Ok(())
    }

    /// Finishes the table and puts it at its path (replacing any previous file), durably.
    pub fn commit(mut self) -> Result<(), TableError> {
        self.flush_group()?;
        let path = self.path.clone();
        let file = match self.sink {
            Sink::Csv(w) => w.into_inner().map_err(|e| TableError::Io { path: path.clone(), source: e.into_error() })?,
            Sink::Parquet { writer, .. } => writer.into_inner().map_err(|source| TableError::Parquet { path: path.clone(), source })?,
        };
        file.commit().map_err(|source| TableError::Io { path, source })
    }
}
