#![doc = include_str!("../README.md")]
//!
//! # Contents
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
//! - [`comm`] and [`sharded`]: the same solvers on vectors whose rows are split across
//!   processes ([`Sharded`] blocks, whose inner products a [`Communicator`] all-reduces), over
//!   threads ([`comm::LocalGroup`]) or MPI (`comm::MpiCommunicator`, cargo feature `mpi`).
//! - [`KrylovError`]: every way these can fail; nothing panics on bad numbers.
//!
//! Non-convergence is not an error of [`cg()`]/[`pcg`]: they return the last
//! iterate with per-column [`CgInfo::converged`] flags and true residuals;
//! [`CgOutcome::check`] and [`solve`] turn it into
//! [`KrylovError::NoConvergence`], which carries the iterate and residuals.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
// Per-column recurrences read best as index loops over the columns.
#![allow(clippy::needless_range_loop)]

pub mod block;
pub mod cg;
pub mod comm;
pub mod error;
pub mod lanczos;
pub mod nystrom;
pub mod operator;
pub mod ops;
pub mod precond;
pub mod root;
pub mod sharded;
pub mod slq;
#[cfg(test)]
mod testing;

pub use block::{Block, Scalar};
pub use cg::{CgInfo, CgOutcome, CgParams, cg, pcg, solve};
pub use comm::Communicator;
pub use error::KrylovError;
pub use lanczos::{LanczosDecomposition, LanczosParams, SymTridiagonal, lanczos};
pub use nystrom::Nystrom;
pub use operator::LinearOperator;
pub use precond::{Identity, PivotedCholesky, Preconditioner};
pub use root::{RootDecomposition, inv_root_decomposition, root_decomposition};
pub use sharded::Sharded;
pub use slq::{
    InvQuadLogdet, InvQuadLogdetParams, Probes, SlqEstimate, SlqParams, inv_quad_logdet,
};
