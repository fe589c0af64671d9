//! The CSV reader every CSV input goes through: RFC 4180 quoting (a device id may hold commas,
//! quotes and newlines), no header handling (the windower recognises the header itself), rows
//! of any width (the windower reports a wrong count per row), and bytes rather than text (one
//! undecodable row is skipped, it does not end the run).

use std::io::Read;

/// A `csv` reader over `input` with the settings above.
pub fn reader<R: Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(1 << 20).from_reader(input)
}
