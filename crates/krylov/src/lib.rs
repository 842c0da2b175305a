//! Matrix-free Krylov solvers for symmetric positive-definite operators.
//!
//! The crate touches a matrix $A$ only through products $A X$ with blocks of
//! vectors, so it serves kernel matrices, Fisher matrices and Laplacians alike.
//! It knows nothing about neural networks.
//!
//! - [`Block`]: the storage of a block of $k$ column vectors (nalgebra on the
//!   host here; other crates adapt device tensors).
//! - [`LinearOperator`]: an operator that multiplies blocks.

pub mod block;
pub mod operator;

pub use block::{Block, Scalar};
pub use operator::LinearOperator;
