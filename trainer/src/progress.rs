//! Progress of long work (training, the report's figures), reported through a callback the
//! binary supplies: library code never prints. [`quiet`] ignores everything.

/// One thing worth telling the user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// Training starts: at most `total` batches, `done` of them already (a resumed run).
    Start {
        /// Batches of the whole run at most.
        total: u64,
        /// Batches done before this process.
        done: u64,
    },
    /// One more batch; `message` holds the epoch's running losses.
    Batch {
        /// E.g. `epoch 3/300  loss 0.41  recon 0.39  KL 0.02`.
        message: &'a str,
    },
    /// An epoch ended; `line` sums it up.
    Epoch {
        /// E.g. `epoch   3/300  loss 0.41 ...  (1.2 s)`.
        line: &'a str,
    },
    /// Training ended normally.
    Finished,
    /// Training stopped on an error (the error itself is returned).
    Abandoned,
    /// A note: data resampled, figures being drawn, a figure that could not be drawn.
    Note(&'a str),
}

/// The callback type.
pub type OnProgress<'a> = &'a (dyn Fn(Progress<'_>) + Sync);

/// A callback that shows nothing.
pub fn quiet(_: Progress<'_>) {}

/// A shareable callback, for option structs (`FitOptions`); the default is [`quiet`].
#[derive(Clone)]
pub struct Reporter(std::sync::Arc<dyn Fn(Progress<'_>) + Send + Sync>);

impl Reporter {
    /// Reports through `f`.
    pub fn new(f: impl Fn(Progress<'_>) + Send + Sync + 'static) -> Self {
        Reporter(std::sync::Arc::new(f))
    }

    /// Passes `p` on.
    pub fn report(&self, p: Progress<'_>) {
        (self.0)(p)
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new(quiet)
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}
