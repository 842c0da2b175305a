//! The CLI's error type: every failure is one clear line and a documented exit code.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 2 | bad input: arguments, files, shapes, a plan that does not fit in memory |
//! | 3 | numerical failure: a fit or solve that did not finish, or a non-finite result |
//!
//! A panic or an abort (code 101 or a signal) is a bug.

use std::path::PathBuf;

use thiserror::Error;

/// Exit code of a bad input.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of a numerical failure.
pub const EXIT_NUMERICAL: u8 = 3;

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
    /// The plan needs more memory than is allowed or available.
    #[error("{0}")]
    Memory(String),
    /// A result that should be a finite number is not.
    #[error("{0}")]
    NonFinite(String),
    /// The GP failed (bad noise, non-convergence, …).
    #[error(transparent)]
    Gp(#[from] ntk_gp::GpError),
    /// `--distributed`: this rank's own failure (rank 0's are reported unnamed).
    #[error("rank {rank}: {source}")]
    Rank {
        /// The rank that failed.
        rank: usize,
        /// Its error.
        source: Box<CliError>,
    },
    /// `--distributed`: this rank stopped because other ranks failed.
    #[error("stopped: rank(s) {} failed (their messages say why)", ranks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    OtherRanks {
        /// The ranks that failed.
        ranks: Vec<usize>,
        /// The largest of their exit codes.
        code: u8,
    },
}

impl CliError {
    /// The process exit code: [`EXIT_NUMERICAL`] for numerical failures, else
    /// [`EXIT_BAD_INPUT`].
    pub fn exit_code(&self) -> u8 {
        use ntk_gp::GpError as G;
        match self {
            Self::NonFinite(_) => EXIT_NUMERICAL,
            Self::Rank { source, .. } => source.exit_code(),
            Self::OtherRanks { code, .. } => *code,
            Self::Gp(
                G::NotPositiveDefinite { .. }
                | G::NonFiniteObjective { .. }
                | G::Budget { .. }
                | G::Krylov(_)
                | G::Solver { .. },
            ) => EXIT_NUMERICAL,
            _ => EXIT_BAD_INPUT,
        }
    }
}
