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
