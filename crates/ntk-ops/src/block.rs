//! [`krylov::Block`] for burn tensors: the vectors stay on the device, only
//! $k$ or $k \times k$ scalars cross to the host.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use krylov::{Block, Scalar};
use nalgebra::DMatrix;

use crate::convert::{from_dmatrix_elems, tensor_from_elems, to_vec_elem, zeros};

/// A block $X \in \mathbb{R}^{n \times k}$ of $k$ column vectors held as a burn
/// tensor of shape `[n, k]` on any backend.
#[derive(Clone, Debug)]
pub struct TensorBlock<B: Backend> {
    tensor: Tensor<B, 2>,
}

impl<B: Backend> TensorBlock<B> {
    /// Wraps a `[n, k]` tensor.
    pub fn new(tensor: Tensor<B, 2>) -> Self {
        Self { tensor }
    }

    /// The tensor.
    pub fn tensor(&self) -> &Tensor<B, 2> {
        &self.tensor
    }

    /// The tensor, by value.
    pub fn into_tensor(self) -> Tensor<B, 2> {
        self.tensor
    }

    fn row_tensor(&self, s: &[B::FloatElem]) -> Tensor<B, 2> {
        tensor_from_elems::<B, 2>(s.to_vec(), [1, s.len()], &self.tensor.device())
    }
}

impl<B: Backend> Block for TensorBlock<B>
where
    B::FloatElem: Scalar,
{
    type Scalar = B::FloatElem;

    fn nrows(&self) -> usize {
        self.tensor.dims()[0]
    }

    fn ncols(&self) -> usize {
        self.tensor.dims()[1]
    }

    fn zeros_like(&self, ncols: usize) -> Self {
        Self::new(zeros([self.nrows(), ncols], &self.tensor.device()))
    }

    fn col_dots(&self, other: &Self) -> Vec<Self::Scalar> {
        to_vec_elem((self.tensor.clone() * other.tensor.clone()).sum_dim(0))
    }

    fn t_mul(&self, other: &Self) -> DMatrix<Self::Scalar> {
        let m = self.tensor.clone().transpose().matmul(other.tensor.clone());
        let [r, c] = m.dims();
        DMatrix::from_row_slice(r, c, &to_vec_elem(m))
    }

    fn axpy_cols(&mut self, alpha: &[Self::Scalar], y: &Self) {
        let a = self.row_tensor(alpha);
        self.tensor = self.tensor.clone() + y.tensor.clone() * a;
    }

    fn scale_cols(&mut self, s: &[Self::Scalar]) {
        let s = self.row_tensor(s);
        self.tensor = self.tensor.clone() * s;
    }

    fn add_mul(&mut self, y: &Self, c: &DMatrix<Self::Scalar>) {
        let ct = from_dmatrix_elems::<B>(c, &self.tensor.device());
        self.tensor = self.tensor.clone() + y.tensor.clone().matmul(ct);
    }

    fn columns(&self, start: usize, len: usize) -> Self {
        Self::new(self.tensor.clone().narrow(1, start, len))
    }

    fn hcat(&self, other: &Self) -> Self {
        Self::new(Tensor::cat(
            vec![self.tensor.clone(), other.tensor.clone()],
            1,
        ))
    }

    fn to_host(&self) -> DMatrix<Self::Scalar> {
        let [r, c] = self.tensor.dims();
        DMatrix::from_row_slice(r, c, &to_vec_elem(self.tensor.clone()))
    }

    fn from_host_like(&self, m: &DMatrix<Self::Scalar>) -> Self {
        Self::new(from_dmatrix_elems::<B>(m, &self.tensor.device()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestBackend;

    #[test]
    fn block_ops_match_nalgebra() {
        let dev = Default::default();
        let xm = DMatrix::from_fn(5, 3, |i, j| (i as f64 + 1.0) * 0.3 - j as f64);
        let ym = DMatrix::from_fn(5, 2, |i, j| (i * j) as f64 * 0.1 + 1.0);
        let zero = TensorBlock::<TestBackend>::new(zeros([5, 1], &dev));
        let x = zero.from_host_like(&xm);
        let y = zero.from_host_like(&ym);
        assert_eq!((x.nrows(), x.ncols()), (5, 3));
        assert_eq!(x.to_host(), xm);
        assert!((x.t_mul(&y) - xm.transpose() * &ym).abs().max() < 1e-12);
        let dots = x.columns(0, 2).col_dots(&y);
        for (j, d) in dots.iter().enumerate() {
            assert!((d - xm.column(j).dot(&ym.column(j))).abs() < 1e-12);
        }
        let mut a = x.columns(1, 2);
        a.axpy_cols(&[2.0, -1.0], &y);
        let mut want = xm.columns(1, 2).into_owned();
        want.column_mut(0).axpy(2.0, &ym.column(0), 1.0);
        want.column_mut(1).axpy(-1.0, &ym.column(1), 1.0);
        assert!((a.to_host() - &want).abs().max() < 1e-12);
        a.scale_cols(&[0.5, 3.0]);
        want.column_mut(0).scale_mut(0.5);
        want.column_mut(1).scale_mut(3.0);
        assert!((a.to_host() - &want).abs().max() < 1e-12);
        let c = DMatrix::from_fn(2, 3, |i, j| (i + 2 * j) as f64);
        let mut xx = x.clone();
        xx.add_mul(&y, &c);
        assert!((xx.to_host() - (&xm + &ym * &c)).abs().max() < 1e-12);
        assert_eq!(x.hcat(&y).ncols(), 5);
        assert_eq!(x.zeros_like(4).to_host(), DMatrix::zeros(5, 4));
    }
}
