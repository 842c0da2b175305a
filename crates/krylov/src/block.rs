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
    #[allow(clippy::wrong_self_convention)] // `self` names the device, not the source
    fn from_host_like(&self, m: &DMatrix<Self::Scalar>) -> Self;
}

/// Host storage: an $n \times k$ column-major nalgebra matrix.
///
/// Built for tall, skinny blocks ($n \gg k$, as every solver here has): the small products
/// $X^\top Y$ and $X + YC$ run over chunks of rows that stay in cache, so each column is read
/// from memory once; column operations work on contiguous column slices.
impl<S: Scalar> Block for DMatrix<S> {
    type Scalar = S;

    fn nrows(&self) -> usize {
        self.nrows()
    }

    fn ncols(&self) -> usize {
        self.ncols()
    }

    fn zeros_like(&self, ncols: usize) -> Self {
        DMatrix::zeros(self.nrows(), ncols)
    }

    fn col_dots(&self, other: &Self) -> Vec<S> {
        assert_eq!(self.shape(), other.shape(), "col_dots: shape mismatch");
        self.column_iter()
            .zip(other.column_iter())
            .map(|(x, y)| x.dot(&y))
            .collect()
    }

    fn t_mul(&self, other: &Self) -> DMatrix<S> {
        let (n, kx, ky) = (self.nrows(), self.ncols(), other.nrows());
        assert_eq!(ky, n, "t_mul: row mismatch");
        let ky = other.ncols();
        let mut out = DMatrix::zeros(kx, ky);
        // Row chunks that stay in cache: every column is read from memory once (nalgebra's
        // gemm falls back to a plain loop for k ≤ 5, and a transposed copy costs a pass).
        let (xs, ys) = (self.as_slice(), other.as_slice());
        for r0 in (0..n).step_by(ROWS_PER_CHUNK) {
            let rows = r0..(r0 + ROWS_PER_CHUNK).min(n);
            for j in 0..ky {
                let yj = &ys[j * n..(j + 1) * n][rows.clone()];
                for i in 0..kx {
                    out[(i, j)] += dot(&xs[i * n..(i + 1) * n][rows.clone()], yj);
                }
            }
        }
        out
    }

    fn axpy_cols(&mut self, alpha: &[S], y: &Self) {
        assert_eq!(alpha.len(), self.ncols(), "axpy_cols: one alpha per column");
        for ((mut x, y), &a) in self.column_iter_mut().zip(y.column_iter()).zip(alpha) {
            if a != S::zero() {
                x.axpy(a, &y, S::one());
            }
        }
    }

    fn scale_cols(&mut self, s: &[S]) {
        assert_eq!(s.len(), self.ncols(), "scale_cols: one factor per column");
        for (mut x, &a) in self.column_iter_mut().zip(s) {
            if a == S::zero() {
                x.fill(S::zero());
            } else if a != S::one() {
                x.scale_mut(a);
            }
        }
    }

    fn add_mul(&mut self, y: &Self, c: &DMatrix<S>) {
        let (n, kx, ky) = (self.nrows(), self.ncols(), y.ncols());
        assert_eq!(
            (y.nrows(), c.shape()),
            (n, (ky, kx)),
            "add_mul: shapes do not chain"
        );
        // By row chunks, as `t_mul`: each column of `y` is read from memory once.
        let ys = y.as_slice();
        let xs = self.as_mut_slice();
        for r0 in (0..n).step_by(ROWS_PER_CHUNK) {
            let rows = r0..(r0 + ROWS_PER_CHUNK).min(n);
            for j in 0..kx {
                let xj = &mut xs[j * n..(j + 1) * n][rows.clone()];
                for l in 0..ky {
                    let a = c[(l, j)];
                    if a != S::zero() {
                        let yl = &ys[l * n..(l + 1) * n][rows.clone()];
                        xj.iter_mut().zip(yl).for_each(|(x, y)| *x += a * *y);
                    }
                }
            }
        }
    }

    fn columns(&self, start: usize, len: usize) -> Self {
        self.columns_range(start..start + len).into_owned()
    }

    fn hcat(&self, other: &Self) -> Self {
        assert_eq!(self.nrows(), other.nrows(), "hcat: row mismatch");
        let mut out = DMatrix::zeros(self.nrows(), self.ncols() + other.ncols());
        out.columns_range_mut(0..self.ncols()).copy_from(self);
        out.columns_range_mut(self.ncols()..).copy_from(other);
        out
    }

    fn to_host(&self) -> DMatrix<S> {
        self.clone()
    }

    fn from_host_like(&self, m: &DMatrix<S>) -> Self {
        m.clone()
    }
}

/// Rows per chunk of the host block products (a chunk of 40 `f64` columns fits in L2).
const ROWS_PER_CHUNK: usize = 1024;

/// $x^\top y$ with eight independent partial sums (which the compiler keeps in vector
/// lanes; one running sum would serialize every addition).
fn dot<S: Scalar>(x: &[S], y: &[S]) -> S {
    let mut acc = [S::zero(); 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .fold(S::zero(), |s, (a, b)| s + *a * *b);
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().fold(tail, |s, a| s + *a)
}

/// Concatenates blocks column-wise by pairwise merging ($O(nk \log m)$ copies
/// rather than $O(nkm)$ for a running `hcat`).
pub(crate) fn hcat_all<B: Block>(mut blocks: Vec<B>) -> Option<B> {
    while blocks.len() > 1 {
        let mut next = Vec::with_capacity(blocks.len().div_ceil(2));
        let mut it = blocks.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(a.hcat(&b)),
                None => next.push(a),
            }
        }
        blocks = next;
    }
    blocks.pop()
}

/// Machine epsilon of the scalar type, in `f64`.
pub(crate) fn scalar_eps<S: Scalar>() -> f64 {
    if std::any::TypeId::of::<S>() == std::any::TypeId::of::<f32>() {
        f64::from(f32::EPSILON)
    } else {
        f64::EPSILON
    }
}

/// Converts host `f64` values to the block's scalar type.
pub(crate) fn to_scalars<S: Scalar>(v: &[f64]) -> Vec<S> {
    v.iter().map(|&x| <S as Scalar>::from_f64(x)).collect()
}

/// Converts a host `f64` matrix to the block's scalar type.
pub(crate) fn to_scalar_matrix<S: Scalar>(m: &DMatrix<f64>) -> DMatrix<S> {
    m.map(<S as Scalar>::from_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked products across chunk boundaries and dot-product tails (n = 2503), f64 and
    /// f32, against nalgebra's.
    #[test]
    fn chunked_products_match_nalgebra() {
        let n = 2 * ROWS_PER_CHUNK + 455;
        let x = DMatrix::<f64>::from_fn(n, 11, |i, j| ((i * 11 + j) as f64 * 0.37).sin());
        let y = DMatrix::<f64>::from_fn(n, 6, |i, j| ((i * 5 + j * 3) as f64 * 0.21).cos());
        let want = x.transpose() * &y;
        assert!((x.t_mul(&y) - &want).norm() < 1e-12 * want.norm());
        let c = DMatrix::<f64>::from_fn(6, 11, |l, j| {
            if l == j {
                0.0
            } else {
                (l + 2 * j) as f64 * 0.1 - 0.7
            }
        });
        let mut z = x.clone();
        z.add_mul(&y, &c);
        let want = &x + &y * &c;
        assert!((z - &want).norm() < 1e-12 * want.norm());
        let (x32, y32) = (x.map(|v| v as f32), y.map(|v| v as f32));
        let want = (x32.transpose() * &y32).map(f64::from);
        assert!((x32.t_mul(&y32).map(f64::from) - &want).norm() < 1e-5 * want.norm());
    }

    #[test]
    fn dmatrix_block_ops_match_dense_algebra() {
        let x = DMatrix::<f64>::from_fn(5, 3, |i, j| (i * 3 + j) as f64 * 0.1 - 0.4);
        let y = DMatrix::<f64>::from_fn(5, 3, |i, j| ((i + 2 * j) % 4) as f64 - 1.5);
        let d = x.col_dots(&y);
        for j in 0..3 {
            assert!((d[j] - x.column(j).dot(&y.column(j))).abs() < 1e-14);
        }
        assert!((x.t_mul(&y) - x.transpose() * &y).norm() < 1e-13);
        let mut z = x.clone();
        z.axpy_cols(&[1.0, 0.0, -2.0], &y);
        assert_eq!(z.column(1), x.column(1));
        assert!((z.column(2) - (x.column(2) - 2.0 * y.column(2))).norm() < 1e-14);
        let mut w = x.clone();
        w.scale_cols(&[0.0, 1.0, 3.0]);
        assert_eq!(w.column(0).norm(), 0.0);
        let c = DMatrix::<f64>::from_fn(3, 3, |i, j| (i as f64) - (j as f64));
        let mut u = x.clone();
        u.add_mul(&y, &c);
        assert!((u - (&x + &y * &c)).norm() < 1e-13);
        let h = x.hcat(&y);
        assert_eq!(Block::columns(&h, 3, 3), y);
        let all = hcat_all(vec![
            Block::columns(&x, 0, 1),
            Block::columns(&x, 1, 1),
            Block::columns(&x, 2, 1),
        ])
        .unwrap();
        assert_eq!(all, x);
        let f = DMatrix::<f32>::from_element(4, 2, 1.0);
        assert_eq!(f.col_dots(&f), vec![4.0, 4.0]);
    }
}
