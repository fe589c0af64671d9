//! The trainer library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is malformed; `line` is 1-based (0 when the problem is not tied to a line).
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Data { path: PathBuf, line: usize, message: String },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A hyper-parameter is out of range.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// A saved model directory is missing a file or holds inconsistent content.
    #[error("model {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// Input data does not fit the model (feature count, length).
    #[error("{0}")]
    Mismatch(String),
    /// Training diverged or could not proceed.
    #[error("training: {0}")]
    Training(String),
    /// The loss or the gradient norm became NaN or infinite (1-based epoch and batch).
    #[error("training diverged: the {what} became {value} at epoch {epoch}, batch {batch}; lower --learning-rate or set --clip-norm")]
    Diverged { epoch: usize, batch: usize, what: &'static str, value: f64 },
    /// An error from candle (tensor shapes, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the trainer library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A data error at `line` of `path`.
    pub fn data(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Data { path: path.into(), line, message: message.into() }
    }
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// A model-directory error.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model { path: path.into(), message: message.into() }
    }
}
