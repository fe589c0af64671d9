//! Atomic file writes: a temporary file in the same directory, fsynced, then renamed over the
//! target and the directory fsynced, so a crash leaves the old file or the new one, never a torn
//! one (`atomic_file`). Every artifact the trainer writes goes through here.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (|| {
        let mut f = atomic_file::AtomicFile::create(path)?;
        if crate::fault::abort_writing(&name) {
            f.write_all(&bytes[..bytes.len() / 2])?;
            f.flush()?;
            std::process::abort();
        }
        f.write_all(bytes)?;
        f.commit()
    })()
    .map_err(|e| Error::io(path, e))
}

/// Serialises `value` as pretty JSON into `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::model(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}
