//! The crate's one error type.

use nalgebra::DMatrix;

/// How a Krylov method failed. Solvers never panic on bad numbers; they return
/// one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KrylovError {
    /// Two sizes that must agree do not.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What was being checked.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// The right-hand side (or start block) holds NaN or infinity.
    #[error("non-finite value in the input, column {column}")]
    NonFiniteInput {
        /// First offending column.
        column: usize,
    },
    /// The operator (or preconditioner) returned NaN or infinity, detected
    /// through the inner products the solver computes anyway.
    #[error("non-finite operator output at iteration {iteration}, column {column}")]
    NonFiniteOperatorOutput {
        /// Iteration at which it was seen.
        iteration: usize,
        /// First offending column.
        column: usize,
    },
    /// Non-positive curvature $p^\top A p \le 0$ (or a non-positive Ritz
    /// value where a logarithm or square root is needed): $A$ is not SPD.
    #[error(
        "operator is not positive definite: curvature {curvature:e} at iteration {iteration}, column {column}"
    )]
    NotPositiveDefinite {
        /// Iteration at which it was seen.
        iteration: usize,
        /// First offending column.
        column: usize,
        /// The offending value of $p^\top A p$ (or Ritz value).
        curvature: f64,
    },
    /// The preconditioner is not positive definite: $r^\top P^{-1} r \le 0$.
    #[error(
        "preconditioner is not positive definite: r'P^-1 r = {value:e} at iteration {iteration}, column {column}"
    )]
    NotPositiveDefinitePreconditioner {
        /// Iteration at which it was seen.
        iteration: usize,
        /// First offending column.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// CG stopped at its iteration limit before every column met its tolerance.
    /// Carries the best iterate (the last one: CG minimizes the $A$-norm of the
    /// error over the Krylov space) copied to the host in `f64`.
    #[error(
        "no convergence after {iterations} iterations (max residual {max_residual:e}, columns {unconverged:?})"
    )]
    NoConvergence {
        /// Iterations performed.
        iterations: usize,
        /// Largest final residual norm $\lVert b_j - A x_j \rVert$ over the columns that failed.
        max_residual: f64,
        /// Final residual norm of every column.
        residuals: Vec<f64>,
        /// Indices of the columns that failed.
        unconverged: Vec<usize>,
        /// The best iterate, $n \times k$, on the host.
        best: Box<DMatrix<f64>>,
    },
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The operator lacks an optional hook a method needs (e.g. a pivoted
    /// Cholesky preconditioner needs [`diagonal`](crate::LinearOperator::diagonal)
    /// and [`row`](crate::LinearOperator::row)).
    #[error("operator does not provide `{hook}`")]
    MissingHook {
        /// The hook's name.
        hook: &'static str,
    },
}
