//! Recycled step buffers of the fused kernels.

use std::sync::Mutex;

/// Buffers of the last batches, handed out again instead of fresh zero-filled ones: every
/// training step allocates the same multi-megabyte `[T, B, ·]` buffers, and filling them with zeros that
/// the kernels then overwrite was ~6% of a training step. A recycled buffer holds the previous
/// batch's values, so only buffers that are written in full before they are read come from here.
/// It holds at most [`POOL_MAX`] buffers, about one batch's working set, for the life of the
/// process.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Enough for the buffers of a two-layer encoder and decoder; past it the oldest buffer is freed,
/// so sizes that stop recurring (an epoch's last, shorter batch) age out.
const POOL_MAX: usize = 24;

/// A buffer of `len` values that the caller overwrites in full (contents unspecified).
pub(super) fn take(len: usize) -> Vec<f32> {
    let recycled = POOL.lock().ok().and_then(|mut pool| {
        let i = pool.iter().rposition(|v| v.len() == len)?;
        Some(pool.remove(i))
    });
    recycled.unwrap_or_else(|| vec![0f32; len])
}

/// Returns a buffer to the pool.
pub(super) fn give(v: Vec<f32>) {
    if v.is_empty() {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() >= POOL_MAX {
            pool.remove(0);
        }
        pool.push(v);
    }
}

/// Fills the buffer pool with NaN buffers of these lengths, so that a kernel reading a value of a
/// recycled buffer that it did not write first shows up as NaN in a test.
#[cfg(test)]
pub(in crate::model) fn poison_pool(lens: &[usize]) {
    for &n in lens {
        give(vec![f32::NAN; n]);
    }
}
