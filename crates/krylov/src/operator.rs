//! The linear-operator abstraction: products with blocks of vectors.

use crate::block::Block;

/// A linear operator $A \in \mathbb{R}^{m \times n}$ known through products
/// $Y = A X$ with blocks $X \in \mathbb{R}^{n \times k}$.
///
/// The optional hooks ([`diagonal`](Self::diagonal), [`row`](Self::row)) let
/// preconditioners use what an operator can offer cheaply.
pub trait LinearOperator<B: Block> {
    /// Number of rows $m$.
    fn nrows(&self) -> usize;
    /// Number of columns $n$.
    fn ncols(&self) -> usize;
    /// $Y = A X$ for a block $X$ with [`ncols`](Self::ncols) rows.
    fn apply(&self, x: &B) -> B;
    /// The diagonal of $A$ on the host, if cheap to compute.
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        None
    }
    /// Row $i$ of $A$ on the host, if cheap to compute.
    fn row(&self, _i: usize) -> Option<Vec<B::Scalar>> {
        None
    }
}
