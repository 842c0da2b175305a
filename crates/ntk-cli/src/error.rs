//! The CLI's error type: every failure is one clear line and exit code 2.

use std::path::PathBuf;

use thiserror::Error;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A CSV file is malformed or does not fit the model.
    #[error("{}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        message: String,
    },
    /// The command line is inconsistent.
    #[error("{0}")]
    Usage(String),
    /// The weights do not fit the architecture, or cannot be read.
    #[error("{0}")]
    Model(String),
    /// The GP failed (bad noise, non-convergence, …).
    #[error(transparent)]
    Gp(#[from] ntk_gp::GpError),
}
