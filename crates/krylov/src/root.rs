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
    let (ritz_values, v) = (dec.ritz_values, dec.ritz_vectors);
    if let Some(k) = ritz_values
        .iter()
        .position(|t| t.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
    {
        return Err(KrylovError::NotPositiveDefinite {
            iteration: k,
            column: 0,
            curvature: ritz_values[k],
        });
    }
    // C = V Θ^{power}.
    let c = DMatrix::from_fn(m, m, |i, j| v[(i, j)] * ritz_values[j].powf(power));
    let mut factor = start.zeros_like(m);
    factor.add_mul(&dec.basis, &to_scalar_matrix(&c));
    Ok(RootDecomposition {
        factor,
        ritz_values,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn full_rank_roots_are_exact() {
        let mut rng = rng(51);
        let n = 30;
        let a = spd_with_spectrum(&log_spaced(n, 1e3), &mut rng);
        let b = gaussian(n, 1, &mut rng);
        let p = LanczosParams {
            steps: n,
            ..Default::default()
        };
        let r = root_decomposition(&a, &b, &p).unwrap();
        assert_eq!(r.rank(), n);
        assert!((&r.factor * r.factor.transpose() - &a).norm() < 1e-9 * a.norm());
        let s = inv_root_decomposition(&a, &b, &p).unwrap();
        let inv = a.clone().try_inverse().unwrap();
        assert!((&s.factor * s.factor.transpose() - &inv).norm() < 1e-7 * inv.norm());
        let x = gaussian(n, 2, &mut rng);
        assert!((s.apply(&x) - &inv * &x).norm() < 1e-7 * (&inv * &x).norm());
        assert!(r.ritz_values.windows(2).all(|w| w[0] <= w[1]));
    }

    /// LOVE: the cached variance reduction never exceeds the exact one (so
    /// predictive variances stay non-negative) and approaches it as the rank grows.
    #[test]
    fn love_variance_reduction_is_bounded_and_converges() {
        let mut rng = rng(52);
        let n = 200;
        let sigma2 = 1e-2;
        let k = ntk_like_kernel(n + 5, &mut rng);
        let k_train = k.view((0, 0), (n, n)).into_owned();
        let k_star = k.view((0, n), (n, 5)).into_owned();
        let a = &k_train + DMatrix::identity(n, n) * sigma2;
        let exact: Vec<f64> = {
            let sol = dense_solve(&a, &k_star);
            (0..5)
                .map(|j| k_star.column(j).dot(&sol.column(j)))
                .collect()
        };
        let y = gaussian(n, 1, &mut rng);
        let mut prev_err = f64::INFINITY;
        for steps in [10, 40, 120] {
            let s = inv_root_decomposition(
                &a,
                &y,
                &LanczosParams {
                    steps,
                    ..Default::default()
                },
            )
            .unwrap();
            let red = s.quad_diag(&k_star);
            let mut err: f64 = 0.0;
            for j in 0..5 {
                assert!(
                    red[j] <= exact[j] * (1.0 + 1e-9) + 1e-12,
                    "step {steps}: {} > {}",
                    red[j],
                    exact[j]
                );
                assert!(red[j] >= 0.0);
                err = err.max((exact[j] - red[j]) / exact[j]);
            }
            assert!(err <= prev_err + 1e-12);
            prev_err = err;
        }
        assert!(prev_err < 1e-3, "{prev_err}");
    }

    #[test]
    fn root_errors_are_typed() {
        let a = diag(&[1.0, -1.0]);
        let b = DMatrix::from_element(2, 1, 1.0);
        let p = LanczosParams {
            steps: 2,
            ..Default::default()
        };
        assert!(matches!(
            inv_root_decomposition(&a, &b, &p),
            Err(KrylovError::NotPositiveDefinite { .. })
        ));
        let two = DMatrix::from_element(2, 2, 1.0);
        assert!(matches!(
            root_decomposition(&a, &two, &p),
            Err(KrylovError::DimensionMismatch { .. })
        ));
        let zero = DMatrix::zeros(2, 1);
        assert!(matches!(
            root_decomposition(&a, &zero, &p),
            Err(KrylovError::InvalidParameter { .. })
        ));
    }
}
