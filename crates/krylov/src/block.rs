//! Storage of blocks of vectors: the one small trait the solvers compute with.

use nalgebra::{DMatrix, RealField};

/// A real floating-point scalar the solvers work in (`f32` or `f64`).
pub trait Scalar: RealField + Copy + Send + Sync + 'static {
    /// Converts from `f64` (constants in the algorithms).
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64` (reports and accumulations).
    fn to_f64(self) -> f64;
}

impl Scalar for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Scalar for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// A block $X \in \mathbb{R}^{n \times k}$ of $k$ column vectors, wherever it is
/// stored (host memory, a GPU).
///
/// Solvers only combine blocks column by column and read back small $k \times k$
/// matrices of inner products, so a device implementation keeps the vectors on
/// the device and sends only $O(k^2)$ scalars per iteration to the host.
pub trait Block: Clone {
    /// The scalar type of the entries.
    type Scalar: Scalar;

    /// Length $n$ of each column.
    fn nrows(&self) -> usize;
    /// Number $k$ of columns.
    fn ncols(&self) -> usize;
    /// A zero block with the same rows (and device) and `ncols` columns.
    fn zeros_like(&self, ncols: usize) -> Self;
    /// Column-wise inner products: $d_j = x_j^\top y_j$.
    fn col_dots(&self, other: &Self) -> Vec<Self::Scalar>;
    /// The small matrix $X^\top Y$ ($k_x \times k_y$), on the host.
    fn t_mul(&self, other: &Self) -> DMatrix<Self::Scalar>;
    /// Column-wise $x_j \leftarrow x_j + \alpha_j y_j$.
    fn axpy_cols(&mut self, alpha: &[Self::Scalar], y: &Self);
    /// Column-wise $x_j \leftarrow s_j x_j$.
    fn scale_cols(&mut self, s: &[Self::Scalar]);
    /// $X \leftarrow X + Y C$ with a small host matrix $C$ ($k_y \times k_x$).
    fn add_mul(&mut self, y: &Self, c: &DMatrix<Self::Scalar>);
    /// The columns `start..start + len` as a new block.
    fn columns(&self, start: usize, len: usize) -> Self;
    /// The columns of `self` followed by those of `other`.
    fn hcat(&self, other: &Self) -> Self;
    /// A copy on the host.
    fn to_host(&self) -> DMatrix<Self::Scalar>;
    /// A block on the same device as `self` holding `m`.
    fn from_host_like(&self, m: &DMatrix<Self::Scalar>) -> Self;
}
