//! Host-side batch inference (`std`): many windows on all cores with the same step kernels a
//! device runs, so training-time latents and device latents come from one code path.

use rayon::prelude::*;

use crate::assign::Assignment;
use crate::encoder::{EncodeError, Encoder, State};

/// Hidden-unit capacity of host states.
pub const HOST_MAX_HIDDEN: usize = 512;
/// Layer capacity of host states.
pub const HOST_MAX_LAYERS: usize = 4;
/// Latent capacity on hosts.
pub const HOST_MAX_LATENT: usize = 256;

/// A state with the host capacities.
pub type HostState = State<HOST_MAX_HIDDEN, HOST_MAX_LAYERS>;

/// Latent means of `windows` (each `len * n_features` values, time-major; all windows are
/// concatenated), row-major `n x latent`, computed in parallel.
pub fn embed_windows(enc: &Encoder<'_>, windows: &[f32], window_values: usize) -> Result<Vec<f32>, EncodeError> {
    let hd = enc.bundle().header;
    enc.check_capacity::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>()?;
    let f = hd.n_features as usize;
    if window_values == 0 || window_values % f != 0 || windows.len() % window_values != 0 {
        return Err(EncodeError::WindowShape { len: window_values, features: f });
    }
    let l = hd.latent as usize;
    let mut out = vec![0f32; windows.len() / window_values * l];
    out.par_chunks_mut(l).zip(windows.par_chunks(window_values)).try_for_each_init(
        || Box::new(HostState::default()),
        |s, (dst, w)| {
            let z = enc.encode_window::<HOST_MAX_HIDDEN, HOST_MAX_LAYERS, HOST_MAX_LATENT>(s, w)?;
            dst.copy_from_slice(&z);
            Ok::<(), EncodeError>(())
        },
    )?;
    Ok(out)
}

/// Nearest centroid of every latent row.
pub fn assign_all(enc: &Encoder<'_>, latents: &[f32]) -> Result<Vec<Assignment>, EncodeError> {
    let l = enc.bundle().header.latent as usize;
    latents.par_chunks(l).map(|z| enc.assign(z).map_err(EncodeError::from)).collect()
}
