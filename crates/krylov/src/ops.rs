//! Operators built from matrices, other operators and closures.
//!
//! - a dense [`DMatrix`] is an operator ($Y = A X$ by gemm);
//! - [`Shifted`]: $K + \sigma^2 I$;
//! - [`Sum`]: $A + B$;  [`Scaled`]: $c A$;
//! - [`Gram`]: $A A^\top$ from products with $A$ and $A^\top$;
//! - [`FnOperator`]: any closure $X \mapsto A X$.

use nalgebra::DMatrix;

use crate::block::{Block, Scalar};
use crate::error::KrylovError;
use crate::operator::LinearOperator;

/// A dense host matrix multiplies blocks by gemm.
impl<S: Scalar> LinearOperator<DMatrix<S>> for DMatrix<S> {
    fn nrows(&self) -> usize {
        self.nrows()
    }
    fn ncols(&self) -> usize {
        self.ncols()
    }
    fn apply(&self, x: &DMatrix<S>) -> DMatrix<S> {
        let mut y = DMatrix::zeros(self.nrows(), x.ncols());
        y.gemm(S::one(), self, x, S::zero());
        y
    }
    fn diagonal(&self) -> Option<Vec<S>> {
        Some(self.diagonal().iter().copied().collect())
    }
    fn row(&self, i: usize) -> Option<Vec<S>> {
        (i < self.nrows()).then(|| self.row(i).iter().copied().collect())
    }
}

/// A reference to an operator is an operator.
impl<B: Block, T: LinearOperator<B> + ?Sized> LinearOperator<B> for &T {
    fn nrows(&self) -> usize {
        (**self).nrows()
    }
    fn ncols(&self) -> usize {
        (**self).ncols()
    }
    fn apply(&self, x: &B) -> B {
        (**self).apply(x)
    }
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        (**self).diagonal()
    }
    fn row(&self, i: usize) -> Option<Vec<B::Scalar>> {
        (**self).row(i)
    }
}

/// A boxed operator is an operator (for `Box<dyn LinearOperator<B>>`).
impl<B: Block, T: LinearOperator<B> + ?Sized> LinearOperator<B> for Box<T> {
    fn nrows(&self) -> usize {
        (**self).nrows()
    }
    fn ncols(&self) -> usize {
        (**self).ncols()
    }
    fn apply(&self, x: &B) -> B {
        (**self).apply(x)
    }
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        (**self).diagonal()
    }
    fn row(&self, i: usize) -> Option<Vec<B::Scalar>> {
        (**self).row(i)
    }
}

fn require_square(what: &'static str, nrows: usize, ncols: usize) -> Result<(), KrylovError> {
    if nrows == ncols {
        Ok(())
    } else {
        Err(KrylovError::DimensionMismatch {
            what,
            expected: nrows,
            got: ncols,
        })
    }
}

/// $K + s I$ for a square operator $K$ and a shift $s$ (e.g. the noise
/// variance $\sigma^2$ of a Gaussian process).
#[derive(Debug, Clone)]
pub struct Shifted<A, S> {
    /// The operator $K$.
    pub inner: A,
    /// The shift $s$.
    pub shift: S,
}

impl<A, S> Shifted<A, S> {
    /// $K + s I$; fails unless $K$ is square.
    pub fn new<B>(inner: A, shift: S) -> Result<Self, KrylovError>
    where
        B: Block<Scalar = S>,
        A: LinearOperator<B>,
    {
        require_square("Shifted (K must be square)", inner.nrows(), inner.ncols())?;
        Ok(Self { inner, shift })
    }
}

impl<B: Block, A: LinearOperator<B>> LinearOperator<B> for Shifted<A, B::Scalar> {
    fn nrows(&self) -> usize {
        self.inner.nrows()
    }
    fn ncols(&self) -> usize {
        self.inner.ncols()
    }
    fn apply(&self, x: &B) -> B {
        let mut y = self.inner.apply(x);
        y.axpy_cols(&vec![self.shift; x.ncols()], x);
        y
    }
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        let mut d = self.inner.diagonal()?;
        d.iter_mut().for_each(|v| *v += self.shift);
        Some(d)
    }
    fn row(&self, i: usize) -> Option<Vec<B::Scalar>> {
        let mut r = self.inner.row(i)?;
        *r.get_mut(i)? += self.shift;
        Some(r)
    }
}

/// $c A$ for a scalar $c$.
#[derive(Debug, Clone)]
pub struct Scaled<A, S> {
    /// The operator $A$.
    pub inner: A,
    /// The factor $c$.
    pub factor: S,
}

impl<B: Block, A: LinearOperator<B>> LinearOperator<B> for Scaled<A, B::Scalar> {
    fn nrows(&self) -> usize {
        self.inner.nrows()
    }
    fn ncols(&self) -> usize {
        self.inner.ncols()
    }
    fn apply(&self, x: &B) -> B {
        let mut y = self.inner.apply(x);
        y.scale_cols(&vec![self.factor; x.ncols()]);
        y
    }
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        Some(
            self.inner
                .diagonal()?
                .into_iter()
                .map(|v| v * self.factor)
                .collect(),
        )
    }
    fn row(&self, i: usize) -> Option<Vec<B::Scalar>> {
        Some(
            self.inner
                .row(i)?
                .into_iter()
                .map(|v| v * self.factor)
                .collect(),
        )
    }
}

/// $A_1 + A_2$.
#[derive(Debug, Clone)]
pub struct Sum<A1, A2> {
    a1: A1,
    a2: A2,
}

impl<A1, A2> Sum<A1, A2> {
    /// $A_1 + A_2$; fails unless the shapes agree.
    pub fn new<B: Block>(a1: A1, a2: A2) -> Result<Self, KrylovError>
    where
        A1: LinearOperator<B>,
        A2: LinearOperator<B>,
    {
        if a1.nrows() != a2.nrows() {
            return Err(KrylovError::DimensionMismatch {
                what: "Sum rows",
                expected: a1.nrows(),
                got: a2.nrows(),
            });
        }
        if a1.ncols() != a2.ncols() {
            return Err(KrylovError::DimensionMismatch {
                what: "Sum columns",
                expected: a1.ncols(),
                got: a2.ncols(),
            });
        }
        Ok(Self { a1, a2 })
    }
}

impl<B: Block, A1: LinearOperator<B>, A2: LinearOperator<B>> LinearOperator<B> for Sum<A1, A2> {
    fn nrows(&self) -> usize {
        self.a1.nrows()
    }
    fn ncols(&self) -> usize {
        self.a1.ncols()
    }
    fn apply(&self, x: &B) -> B {
        let mut y = self.a1.apply(x);
        let y2 = self.a2.apply(x);
        y.axpy_cols(&vec![<B::Scalar as Scalar>::from_f64(1.0); x.ncols()], &y2);
        y
    }
    fn diagonal(&self) -> Option<Vec<B::Scalar>> {
        let d1 = self.a1.diagonal()?;
        let d2 = self.a2.diagonal()?;
        Some(d1.into_iter().zip(d2).map(|(a, b)| a + b).collect())
    }
    fn row(&self, i: usize) -> Option<Vec<B::Scalar>> {
        let r1 = self.a1.row(i)?;
        let r2 = self.a2.row(i)?;
        Some(r1.into_iter().zip(r2).map(|(a, b)| a + b).collect())
    }
}

/// $A A^\top$ ($m \times m$) from an operator $A$ ($m \times p$) and one for its
/// transpose $A^\top$ ($p \times m$): a Gram matrix, e.g. an empirical NTK
/// $J J^\top$ from Jacobian-vector and vector-Jacobian products.
#[derive(Debug, Clone)]
pub struct Gram<A, At> {
    a: A,
    at: At,
}

impl<A, At> Gram<A, At> {
    /// $A A^\top$; fails unless `at` has the transposed shape of `a`.
    pub fn new<B: Block>(a: A, at: At) -> Result<Self, KrylovError>
    where
        A: LinearOperator<B>,
        At: LinearOperator<B>,
    {
        if a.nrows() != at.ncols() || a.ncols() != at.nrows() {
            return Err(KrylovError::DimensionMismatch {
                what: "Gram (A' must be ncols(A) x nrows(A))",
                expected: a.ncols(),
                got: at.nrows(),
            });
        }
        Ok(Self { a, at })
    }
}

impl<B: Block, A: LinearOperator<B>, At: LinearOperator<B>> LinearOperator<B> for Gram<A, At> {
    fn nrows(&self) -> usize {
        self.a.nrows()
    }
    fn ncols(&self) -> usize {
        self.a.nrows()
    }
    fn apply(&self, x: &B) -> B {
        self.a.apply(&self.at.apply(x))
    }
}

/// A square operator given by a closure $X \mapsto A X$.
#[derive(Clone)]
pub struct FnOperator<F> {
    n: usize,
    f: F,
}

impl<F> FnOperator<F> {
    /// An $n \times n$ operator applying `f`.
    pub fn new(n: usize, f: F) -> Self {
        Self { n, f }
    }
}

impl<F> std::fmt::Debug for FnOperator<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnOperator")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl<B: Block, F: Fn(&B) -> B> LinearOperator<B> for FnOperator<F> {
    fn nrows(&self) -> usize {
        self.n
    }
    fn ncols(&self) -> usize {
        self.n
    }
    fn apply(&self, x: &B) -> B {
        (self.f)(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_operators_match_dense() {
        let a = DMatrix::<f64>::from_fn(4, 3, |i, j| (i as f64) * 0.5 - (j as f64) + 1.0);
        let at = a.transpose();
        let x = DMatrix::<f64>::from_fn(4, 2, |i, j| (i + j) as f64 - 1.0);
        let g = Gram::new(a.clone(), at.clone()).unwrap();
        let gd = &a * &at;
        assert!((g.apply(&x) - &gd * &x).norm() < 1e-12);
        let s = Shifted::new(gd.clone(), 0.5).unwrap();
        let sd = &gd + DMatrix::identity(4, 4) * 0.5;
        assert!((s.apply(&x) - &sd * &x).norm() < 1e-12);
        assert_eq!(
            LinearOperator::<DMatrix<f64>>::diagonal(&s).unwrap(),
            sd.diagonal().iter().copied().collect::<Vec<_>>()
        );
        assert_eq!(
            LinearOperator::<DMatrix<f64>>::row(&s, 2).unwrap(),
            sd.row(2).iter().copied().collect::<Vec<_>>()
        );
        let sum = Sum::new(&gd, &sd).unwrap();
        assert!((sum.apply(&x) - (&gd + &sd) * &x).norm() < 1e-12);
        let sc = Scaled {
            inner: &gd,
            factor: -2.0,
        };
        assert!((sc.apply(&x) + 2.0 * &gd * &x).norm() < 1e-12);
        let f = FnOperator::new(4, |x: &DMatrix<f64>| x * 3.0);
        assert!((f.apply(&x) - &x * 3.0).norm() < 1e-15);
        let boxed: Box<dyn LinearOperator<DMatrix<f64>>> = Box::new(f);
        assert!((boxed.apply(&x) - &x * 3.0).norm() < 1e-15);
        assert!(Shifted::new(a.clone(), 1.0).is_err());
        assert!(Gram::new(a.clone(), a.clone()).is_err());
        assert!(Sum::new(a.clone(), at.clone()).is_err());
    }
}
