//! Matrix-free Krylov solvers for symmetric positive-definite operators.
//!
//! The crate touches a matrix $A$ only through products $A X$ with blocks of
//! vectors, so it serves kernel matrices, Fisher matrices and Laplacians alike.
//! It knows nothing about neural networks. The design follows GPyTorch's
//! blackbox matrix-matrix inference (Gardner et al., NeurIPS 2018) and faer's
//! matrix-free operators.
//!
//! - [`Block`]: the storage of a block of $k$ column vectors (nalgebra
//!   [`DMatrix`](nalgebra::DMatrix) `f32`/`f64` here; other crates adapt device
//!   tensors), and [`LinearOperator`]: an operator that multiplies blocks.
//! - [`ops`]: dense matrices, $K + \sigma^2 I$ ([`ops::Shifted`]), sums,
//!   scalings, $A A^\top$ ([`ops::Gram`]), closures ([`ops::FnOperator`]).
//! - [`cg`](mod@cg): preconditioned batched conjugate gradients (mBCG), optionally
//!   returning Lanczos tridiagonals from its coefficients.
//! - [`lanczos`](mod@lanczos): Lanczos with full reorthogonalization.
//! - [`slq`]: stochastic Lanczos quadrature for $\log\lvert A \rvert$ and
//!   $\operatorname{tr} f(A)$, and [`slq::inv_quad_logdet`].
//! - [`precond`]: preconditioners, including partial pivoted Cholesky (from rows of $K$),
//!   and [`nystrom`]: the Nyström preconditioner (from a sketch $A_0\Omega$).
//! - [`root`]: low-rank (inverse) root decompositions for LOVE.
//! - [`KrylovError`]: every way these can fail; nothing panics on bad numbers.
//!
//! Non-convergence is not an error of [`cg()`]/[`pcg`]: they return the last
//! iterate with per-column [`CgInfo::converged`] flags and true residuals;
//! [`CgOutcome::check`] and [`solve`] turn it into
//! [`KrylovError::NoConvergence`], which carries the iterate and residuals.
//!
//! ```
//! use krylov::cg::{pcg, CgParams};
//! use krylov::ops::Shifted;
//! use krylov::precond::PivotedCholesky;
//! use nalgebra::DMatrix;
//!
//! // A kernel matrix K (here RBF on a grid) and A = K + σ² I.
//! let n = 100;
//! let k = DMatrix::<f64>::from_fn(n, n, |i, j| (-((i as f64 - j as f64) / 10.0).powi(2)).exp());
//! let a = Shifted::new(&k, 1e-2).unwrap();
//! let b = DMatrix::<f64>::from_fn(n, 2, |i, j| ((i + j) as f64).sin());
//! let p = PivotedCholesky::new(&k, 1e-2, 10, &b).unwrap();
//! let out = pcg(&a, &p, &b, None, &CgParams::default()).unwrap();
//! assert!(out.info.all_converged());
//! let k_sigma = &k + DMatrix::identity(n, n) * 1e-2;
//! assert!((&k_sigma * &out.solution - &b).norm() <= 1e-6 * b.norm());
//! ```

#![warn(missing_docs)]
// Per-column recurrences read best as index loops over the columns.
#![allow(clippy::needless_range_loop)]

pub mod block;
pub mod cg;
pub mod error;
pub mod lanczos;
pub mod nystrom;
pub mod operator;
pub mod ops;
pub mod precond;
pub mod root;
pub mod slq;
#[cfg(test)]
mod testing;

pub use block::{Block, Scalar};
pub use cg::{CgInfo, CgOutcome, CgParams, cg, pcg, solve};
pub use error::KrylovError;
pub use lanczos::{LanczosDecomposition, LanczosParams, SymTridiagonal, lanczos};
pub use nystrom::Nystrom;
pub use operator::LinearOperator;
pub use precond::{Identity, PivotedCholesky, Preconditioner};
pub use root::{RootDecomposition, inv_root_decomposition, root_decomposition};
pub use slq::{
    InvQuadLogdet, InvQuadLogdetParams, Probes, SlqEstimate, SlqParams, inv_quad_logdet,
};
