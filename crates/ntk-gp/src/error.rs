//! The error type of ntk-gp.

use thiserror::Error;

/// Everything that can go wrong when building, fitting or querying a GP.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GpError {
    /// Two inputs that must agree in size do not.
    #[error("shape mismatch: {what} (expected {expected}, got {got})")]
    Shape {
        /// What was being compared.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A NaN or infinite value where a finite number is required.
    #[error("{what} contains a non-finite value at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// The first offending index.
        index: usize,
    },
    /// A quantity that must be strictly positive is not (e.g. $\sigma^2 \le 0$).
    #[error("{what} must be positive and finite, got {value}")]
    NonPositive {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// A task with no data points.
    #[error("the task has no data points")]
    EmptyTask,
    /// The kernel matrix plus noise was not numerically positive definite.
    #[error("{what} is not positive definite (Cholesky failed)")]
    NotPositiveDefinite {
        /// Which matrix.
        what: &'static str,
    },
    /// A Jacobian or NTK product failed (bad shapes, NaN inputs, …).
    #[error(transparent)]
    Ops(#[from] ntk_ops::OpsError),
    /// A Krylov solver failed (non-convergence carries its residuals).
    #[error(transparent)]
    Krylov(#[from] krylov::KrylovError),
    /// A strategy asked for something it does not provide.
    #[error("{what} is not available with the {strategy:?} strategy: {instead}")]
    NotSupported {
        /// The strategy.
        strategy: crate::strategy::Strategy,
        /// What was asked.
        what: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
    /// A parameter of a model's [`NtkGpParams`](crate::NtkGpParams) (or another parameter
    /// struct) is out of its range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter, as named in its struct.
        name: &'static str,
        /// Why, with the value.
        reason: String,
    },
    /// No task of that name.
    #[error("no task named `{0}`")]
    UnknownTask(String),
    /// A saved state cannot be restored.
    #[error("invalid saved state: {0}")]
    InvalidState(String),
    /// The objective of a fit is NaN or infinite where the fit starts (or ends), so no
    /// direction of improvement exists: targets of extreme scale, or a degenerate kernel.
    #[error(
        "the log marginal likelihood is not finite at {at} ({value}): the targets may be of \
         extreme scale (standardize them) or the kernel degenerate"
    )]
    NonFiniteObjective {
        /// The point, in words (`σ² = 1, s² = 1`).
        at: String,
        /// The value found there.
        value: f64,
    },
    /// An iterative routine used up its budget (evaluations or time) without finishing.
    #[error("{what} did not finish: {reason}")]
    Budget {
        /// Which routine.
        what: &'static str,
        /// Which budget ran out, with the numbers.
        reason: String,
    },
    /// The optimizer library failed (its message, which it gives only as text).
    #[error("the {solver} solver failed: {message}")]
    Solver {
        /// Which solver.
        solver: &'static str,
        /// Its message.
        message: String,
    },
}

/// Fails with [`GpError::NonFinite`] at the first NaN or infinity in `values`.
pub(crate) fn check_finite<'a>(
    what: &'static str,
    values: impl IntoIterator<Item = &'a f64>,
) -> Result<(), GpError> {
    match values.into_iter().position(|v| !v.is_finite()) {
        Some(index) => Err(GpError::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// Fails with [`GpError::NonPositive`] unless `value` is finite and $> 0$.
pub(crate) fn check_positive(what: &'static str, value: f64) -> Result<(), GpError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(GpError::NonPositive { what, value })
    }
}
