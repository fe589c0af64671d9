//! One module per `edge` command: its arguments and what it runs.

pub mod assign;
pub mod serve;

/// How a device's samples become windows: the same flags and meaning in `assign` and `serve`.
#[derive(clap::Args, Debug)]
pub struct WindowArgs {
    /// Samples per window [default: the model's training length].
    #[arg(long)]
    pub window: Option<usize>,
    /// Samples between window starts [default: --window, i.e. no overlap].
    #[arg(long)]
    pub stride: Option<usize>,
    /// Largest timestamp step inside a window; a larger gap restarts the device's windows.
    #[arg(long)]
    pub max_gap: Option<f64>,
}

impl WindowArgs {
    /// Window and stride with their defaults filled in: the model's training length `seq_len`,
    /// and a stride of one window.
    pub fn window_and_stride(&self, seq_len: usize) -> (usize, usize) {
        edge::fleet::window_and_stride(self.window, self.stride, seq_len)
    }
}

/// Refuses a window shorter than the model's minimum length (the bundle's `min_len`: a model
/// trained at native lengths learnt nothing from shorter series), before any data is read.
pub fn check_window_len(window: usize, min_len: u32) -> anyhow::Result<()> {
    // A zero window gets the windower's own error.
    if window > 0 && window < min_len as usize {
        anyhow::bail!("--window {window} is shorter than the model's minimum length {min_len}");
    }
    Ok(())
}
