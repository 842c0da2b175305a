//! The error type of ntk-bench.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while running an experiment and writing its outputs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Reading or writing a file or folder failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Encoding or decoding JSON failed.
    #[error("JSON error on {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// Writing a CSV file failed (including rows whose length differs from the header's).
    #[error("CSV error on {}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
    /// Drawing a figure failed.
    #[error("plotting error on {}: {message}", path.display())]
    Plot {
        /// The figure file.
        path: PathBuf,
        /// What the plotting backend reported.
        message: String,
    },
    /// An output name that is not a plain file name (empty, or containing a path separator or `..`).
    #[error("invalid output name `{0}`: use a plain file name")]
    InvalidName(String),
    /// An invalid experiment configuration or input, caught before any computation.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which setting or input.
        what: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// Reading or preprocessing a data set failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A Gaussian-process computation failed.
    #[error(transparent)]
    Gp(#[from] ntk_gp::GpError),
    /// A Jacobian or NTK product failed.
    #[error(transparent)]
    Ops(#[from] ntk_ops::OpsError),
    /// The requested device cannot be used (unknown, not compiled in, or not available).
    #[error(transparent)]
    Device(#[from] ntk_ops::DeviceError),
}

impl BenchError {
    /// An [`BenchError::Invalid`] for `what`, with a reason.
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// An [`BenchError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
