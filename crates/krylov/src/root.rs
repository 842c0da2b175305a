//! Low-rank root and inverse-root decompositions by Lanczos, for cached
//! predictive variances (LOVE).
//!
//! After $m$ Lanczos steps from $b$, $A \approx Q T Q^\top$ with
//! $T = V \Theta V^\top$, so
//!
//! $$A \approx R R^\top,\ R = Q V \Theta^{1/2};\qquad
//!   A^{-1} \approx S S^\top,\ S = Q V \Theta^{-1/2} = Q\,T^{-1/2}$$
//!
//! (both $n \times m$). Pleiss, Gardner, Weinberger & Wilson, *Constant-Time
//! Predictive Distributions for Gaussian Processes* (ICML 2018), cache $S$ for
//! $A = K + \sigma^2 I$: a test point's variance is then
//! $k_{**} - \lVert S^\top k_* \rVert^2$ in $O(nm)$.
//!
//! With full reorthogonalization $Q$ is orthonormal, so
//! $S S^\top = Q (Q^\top A Q)^{-1} Q^\top \preceq A^{-1}$: the cached variance
//! reduction never exceeds the exact one and predictive variances stay
//! non-negative. A cache belongs to one operator: rebuild it whenever $A$
//! (hyper-parameters, training data) changes; nothing here can detect that.

use nalgebra::DMatrix;

use crate::block::{Block, Scalar, to_scalar_matrix};
use crate::error::KrylovError;
use crate::lanczos::{LanczosParams, lanczos};
use crate::operator::LinearOperator;

/// A low-rank factor $R$ ($n \times m$) with $R R^\top \approx A$ or $A^{-1}$.
#[derive(Debug, Clone)]
pub struct RootDecomposition<B> {
    /// The factor $R$.
    pub factor: B,
    /// The Ritz values $\theta_k$ of $A$ (eigenvalues of $T$), ascending.
    pub ritz_values: Vec<f64>,
}

impl<B: Block> RootDecomposition<B> {
    /// Rank $m$.
    pub fn rank(&self) -> usize {
        self.ritz_values.len()
    }

    /// $R R^\top X$.
    pub fn apply(&self, x: &B) -> B {
        let c = self.factor.t_mul(x);
        let mut y = x.zeros_like(x.ncols());
        y.add_mul(&self.factor, &c);
        y
    }

    /// $\operatorname{diag}(X^\top R R^\top X) = \lVert R^\top x_j \rVert^2$ per column.
    /// With an inverse root of $K + \sigma^2 I$ and $X = K_{*}$, the LOVE
    /// variance reduction.
    pub fn quad_diag(&self, x: &B) -> Vec<f64> {
        let c = self.factor.t_mul(x);
        c.column_iter()
            .map(|col| col.iter().map(|v| v.to_f64().powi(2)).sum())
            .collect()
    }
}

fn decompose<B, A>(
    a: &A,
    start: &B,
    params: &LanczosParams,
    power: f64,
) -> Result<RootDecomposition<B>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    if start.ncols() != 1 {
        return Err(KrylovError::DimensionMismatch {
            what: "root decomposition start columns",
            expected: 1,
            got: start.ncols(),
        });
    }
    let dec = lanczos(a, start, params)?.remove(0);
    let m = dec.tridiagonal.dim();
    if m == 0 {
        return Err(KrylovError::InvalidParameter {
            name: "start",
            reason: "zero start vector".into(),
        });
    }
    let eig = dec.tridiagonal.eigen();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
    if let Some(&k) = order
        .iter()
        .find(|&&k| eig.eigenvalues[k].partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
    {
        return Err(KrylovError::NotPositiveDefinite {
            iteration: k,
            column: 0,
            curvature: eig.eigenvalues[k],
        });
    }
    // C = V Θ^{power}, columns in ascending Ritz order.
    let c = DMatrix::from_fn(m, m, |i, j| {
        let k = order[j];
        eig.eigenvectors[(i, k)] * eig.eigenvalues[k].powf(power)
    });
    let mut factor = start.zeros_like(m);
    factor.add_mul(&dec.basis, &to_scalar_matrix(&c));
    Ok(RootDecomposition {
        factor,
        ritz_values: order.iter().map(|&k| eig.eigenvalues[k]).collect(),
    })
}

/// $R$ with $R R^\top \approx A$, from `params.steps` Lanczos steps started at
/// `start` ($n \times 1$).
pub fn root_decomposition<B, A>(
    a: &A,
    start: &B,
    params: &LanczosParams,
) -> Result<RootDecomposition<B>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    decompose(a, start, params, 0.5)
}

/// $S$ with $S S^\top \approx A^{-1}$ (exact on the Krylov space), from
/// `params.steps` Lanczos steps started at `start` ($n \times 1$; LOVE starts
/// at the training targets $y$ or the mean cache $A^{-1} y$).
///
/// ```
/// use krylov::root::inv_root_decomposition;
/// use krylov::lanczos::LanczosParams;
/// use nalgebra::{DMatrix, DVector};
/// let a = DMatrix::<f64>::from_diagonal(&DVector::from_vec(vec![1.0, 2.0, 4.0]));
/// let b = DMatrix::from_element(3, 1, 1.0);
/// let s = inv_root_decomposition(&a, &b, &LanczosParams { steps: 3, ..Default::default() }).unwrap();
/// let inv = &s.factor * s.factor.transpose();
/// assert!((inv - DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 0.5, 0.25]))).norm() < 1e-10);
/// ```
pub fn inv_root_decomposition<B, A>(
    a: &A,
    start: &B,
    params: &LanczosParams,
) -> Result<RootDecomposition<B>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    decompose(a, start, params, -0.5)
}
