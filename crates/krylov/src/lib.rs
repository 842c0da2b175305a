//! Matrix-free Krylov solvers for symmetric positive-definite operators.
//!
//! The crate touches a matrix $A$ only through products $A X$ with blocks of
//! vectors, so it serves kernel matrices, Fisher matrices and Laplacians alike.
//! It knows nothing about neural networks.
//!
//! - [`Block`]: the storage of a block of $k$ column vectors (nalgebra on the
//!   host here; other crates adapt device tensors).
//! - [`LinearOperator`]: an operator that multiplies blocks.

// Per-column recurrences read best as index loops over the columns.
#![allow(clippy::needless_range_loop)]

pub mod block;
pub mod cg;
pub mod error;
pub mod lanczos;
pub mod operator;
pub mod ops;
pub mod precond;
pub mod root;
pub mod slq;
#[cfg(test)]
mod testing;

pub use block::{Block, Scalar};
pub use error::KrylovError;
pub use operator::LinearOperator;
