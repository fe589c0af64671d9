//! `edge assign`'s output tables ([`edge::outputs`]: the same columns, names and kinds) as Arrow
//! record batches: text as UTF-8, cluster ids as int32, counts as int64, distances as
//! float32/float64, flags as bool, all non-nullable (as in the Parquet the CLI writes).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use edge::devices::DeviceTable;
use edge::outputs::{device_cells, device_columns};
use edge::table::{Cell, Kind};

/// One column being filled.
enum Column {
    Text(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

/// Rows of cells in, a record batch out.
pub struct TableBuilder {
    schema: Arc<Schema>,
    columns: Vec<Column>,
}

fn arrow_type(k: Kind) -> DataType {
    match k {
        Kind::Text => DataType::Utf8,
        Kind::I32 => DataType::Int32,
        Kind::I64 => DataType::Int64,
        Kind::F32 => DataType::Float32,
        Kind::F64 => DataType::Float64,
        Kind::Bool => DataType::Boolean,
    }
}

impl TableBuilder {
    /// An empty table with these columns.
    pub fn new(columns: &[(String, Kind)]) -> Self {
        let schema = Arc::new(Schema::new(columns.iter().map(|(n, k)| Field::new(n, arrow_type(*k), false)).collect::<Vec<_>>()));
        let columns = columns
            .iter()
            .map(|(_, k)| match k {
                Kind::Text => Column::Text(StringBuilder::new()),
                Kind::I32 => Column::I32(Int32Builder::new()),
                Kind::I64 => Column::I64(Int64Builder::new()),
                Kind::F32 => Column::F32(Float32Builder::new()),
                Kind::F64 => Column::F64(Float64Builder::new()),
                Kind::Bool => Column::Bool(BooleanBuilder::new()),
            })
            .collect();
        TableBuilder { schema, columns }
    }

    /// Appends one row; its cells come in column order with the columns' kinds (as
    /// [`edge::outputs`] makes them).
    pub fn push(&mut self, cells: &[Cell<'_>]) {
        debug_assert_eq!(cells.len(), self.columns.len());
        for (col, cell) in self.columns.iter_mut().zip(cells) {
            match (col, *cell) {
                (Column::Text(b), Cell::Text(v)) => b.append_value(v),
                (Column::I32(b), Cell::I32(v)) => b.append_value(v),
                (Column::I64(b), Cell::I64(v)) => b.append_value(v),
                (Column::F32(b), Cell::F32(v)) => b.append_value(v),
                (Column::F64(b), Cell::F64(v)) => b.append_value(v),
                (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
                _ => unreachable!("edge::outputs gives each column cells of its kind"),
            }
        }
    }

    /// The rows so far as a record batch.
    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Text(b) => Arc::new(b.finish()),
                    Column::I32(b) => Arc::new(b.finish()),
                    Column::I64(b) => Arc::new(b.finish()),
                    Column::F32(b) => Arc::new(b.finish()),
                    Column::F64(b) => Arc::new(b.finish()),
                    Column::Bool(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        RecordBatch::try_new(self.schema, arrays)
    }
}

/// The device table (`edge assign --devices`) of a model of `clusters` clusters.
pub fn device_table(table: &DeviceTable, clusters: usize) -> Result<RecordBatch, ArrowError> {
    let mut t = TableBuilder::new(&device_columns(clusters));
    for r in table.rows() {
        t.push(&device_cells(&r));
    }
    t.finish()
}
