//! The matrix-free Laplace classifier: Newton in weight space with CG on the generalized
//! Gauss–Newton matrix, never forming the $nC\times nC$ kernel.
//!
//! With $\theta' = s\,u$, $u \sim \mathcal N(0, I_p)$, the linearized logits are
//! $f = \mu + sJu$ and the mode maximizes $\Psi(u) = \log p(y\mid f) - \tfrac12\lVert u\rVert^2$.
//! Its negative Hessian is $A = I + s^2 J^\top W J$ ($W$ block diagonal, $W_i =
//! \operatorname{diag}\pi_i - \pi_i\pi_i^\top$), applied as $v \mapsto v + s^2 J^\top(W(Jv))$:
//! each Newton step solves $A\delta = sJ^\top g - u$ ($g = \nabla_f\log p(y\mid f)$) by CG
//! (the spectrum of $A$ is bounded below by 1, so CG needs no preconditioner), with step
//! halving if $\Psi$ would fall. At the mode $\hat u$:
//!
//! - $\log q(y) = \Psi(\hat u) - \tfrac12\log\lvert A\rvert$, the log-determinant by stochastic
//!   Lanczos quadrature (exact with [`MatrixFreeParams::exact_trace`]); by Sylvester's identity
//!   $\lvert A\rvert = \lvert I + W^{1/2}KW^{1/2}\rvert$, the function-space value of
//!   [`LaplaceClassifier`](crate::laplace::LaplaceClassifier);
//! - the test logits are $\mathcal N(\mu_* + sJ_*\hat u,\ s^2 J_* A^{-1} J_*^\top)$, one CG column
//!   per test point and class.
//!
//! The same posterior as the function-space classifier, in $O(p)$ memory per Krylov vector.

use burn::prelude::Backend;
use krylov::cg::pcg;
use krylov::precond::Identity;
use krylov::slq::{InvQuadLogdetParams, Probes, inv_quad_logdet};
use krylov::{LinearOperator, Scalar};
use nalgebra::{DMatrix, DVector};
use ntk_ops::{Jacobian, JacobianOperator, convert};

use crate::error::GpError;
use crate::laplace::{LaplaceParams, likelihood_blocks};
use crate::ntk::MatrixFreeParams;

/// $\Psi$, $\nabla_f \log p(y\mid f)$ and the blocks of $W$ at one point.
type Terms = (f64, DVector<f64>, Vec<DMatrix<f64>>);

/// $A = I + s^2 J^\top W J$ on host blocks ($p\times k$).
struct Ggn<'a, B: Backend> {
    jac: &'a Jacobian<B>,
    /// $W_i$, one $C\times C$ block per point.
    w: &'a [DMatrix<f64>],
    s2: f64,
}

impl<B: Backend> Ggn<'_, B>
where
    B::FloatElem: Scalar,
{
    fn try_apply(&self, v: &DMatrix<f64>) -> Result<DMatrix<f64>, GpError> {
        let dev = self.jac.device();
        let jv = convert::to_dmatrix_f64(self.jac.jvp(convert::from_dmatrix_f64(v, &dev))?);
        let c = self.w.first().map_or(1, DMatrix::nrows);
        let mut wjv = DMatrix::zeros(jv.nrows(), jv.ncols());
        for (i, w) in self.w.iter().enumerate() {
            let rows = jv.rows(i * c, c);
            wjv.rows_mut(i * c, c).copy_from(&(w * rows));
        }
        let jtwjv = convert::to_dmatrix_f64(self.jac.vjp(convert::from_dmatrix_f64(&wjv, &dev))?);
        Ok(v + jtwjv * self.s2)
    }
}

impl<B: Backend> LinearOperator<DMatrix<f64>> for Ggn<'_, B>
where
    B::FloatElem: Scalar,
{
    fn nrows(&self) -> usize {
        self.jac.n_params()
    }
    fn ncols(&self) -> usize {
        self.jac.n_params()
    }
    fn apply(&self, v: &DMatrix<f64>) -> DMatrix<f64> {
        // The Jacobian and the blocks were checked when the classifier was built; a product
        // can fail only on a malformed block, which CG never passes.
        self.try_apply(v)
            .unwrap_or_else(|e| panic!("the GGN product failed: {e}"))
    }
}

/// The Laplace posterior in weight space.
#[derive(Debug, Clone)]
pub(crate) struct FreeLaplace {
    /// The mode $\hat u$ ($\theta' = s\hat u$).
    u: DVector<f64>,
    /// $W_i$ at the mode.
    w: Vec<DMatrix<f64>>,
    pub(crate) log_marginal_likelihood: f64,
    /// The SLQ standard error of $\log\lvert A\rvert$ (0 with exact traces).
    pub(crate) logdet_std_error: f64,
    pub(crate) iterations: usize,
    pub(crate) converged: bool,
}

impl FreeLaplace {
    /// Newton to the mode for `labels` with prior logits `mean` ($nC$) and prior scale `s2`.
    pub(crate) fn fit<B: Backend>(
        jac: &Jacobian<B>,
        mean: &DVector<f64>,
        labels: &[usize],
        s2: f64,
        params: LaplaceParams,
        settings: &MatrixFreeParams,
    ) -> Result<Self, GpError>
    where
        B::FloatElem: Scalar,
    {
        let c = jac.n_outputs();
        let p = jac.n_params();
        let s = s2.sqrt();
        let dev = jac.device();
        let logits = |u: &DVector<f64>| -> Result<DVector<f64>, GpError> {
            let ju = jac.jvp(convert::from_dmatrix_f64(
                &DMatrix::from_column_slice(p, 1, u.as_slice()),
                &dev,
            ))?;
            Ok(mean + DVector::from_vec(convert::to_vec_f64(ju)) * s)
        };
        let psi_at = |u: &DVector<f64>| -> Result<Terms, GpError> {
            let (log_lik, grad, w) = likelihood_blocks(&logits(u)?, labels, c);
            Ok((log_lik - 0.5 * u.norm_squared(), grad, w))
        };
        let mut u = DVector::zeros(p);
        let (mut psi, mut grad, mut w) = psi_at(&u)?;
        let (mut iterations, mut converged) = (0, false);
        while iterations < params.max_iters {
            if !psi.is_finite() {
                return Err(GpError::NonFiniteObjective {
                    at: format!("Newton step {iterations} towards the Laplace mode"),
                    value: psi,
                });
            }
            let jt_g = convert::to_dmatrix_f64(jac.vjp(convert::from_dmatrix_f64(
                &DMatrix::from_column_slice(grad.len(), 1, grad.as_slice()),
                &dev,
            ))?);
            let rhs = jt_g * s - DMatrix::from_column_slice(p, 1, u.as_slice());
            let a = Ggn { jac, w: &w, s2 };
            let step = pcg(&a, &Identity, &rhs, None, &settings.cg())?
                .check()?
                .solution;
            let step = DVector::from_column_slice(step.as_slice());
            // Full Newton steps, halved while Ψ would fall (the objective is concave).
            let mut t = 1.0;
            let (next, next_psi, g2, w2) = loop {
                let cand = &u + &step * t;
                let (q, g2, w2) = psi_at(&cand)?;
                if q >= psi - 1e-12 * psi.abs() || t < 1e-6 {
                    break (cand, q, g2, w2);
                }
                t *= 0.5;
            };
            iterations += 1;
            let change = next_psi - psi;
            (u, psi, grad, w) = (next, next_psi, g2, w2);
            if change.abs() < params.tolerance {
                converged = true;
                break;
            }
        }
        // log|A| at the mode.
        let a = Ggn { jac, w: &w, s2 };
        let probe_rhs = DMatrix::from_column_slice(p, 1, u.as_slice());
        let out = inv_quad_logdet(
            &a,
            &Identity,
            &probe_rhs,
            &InvQuadLogdetParams {
                cg: settings.cg(),
                probes: if settings.exact_trace {
                    p
                } else {
                    settings.probes
                },
                distribution: if settings.exact_trace {
                    Probes::Basis
                } else {
                    Probes::Rademacher
                },
                seed: settings.seed,
            },
        )?;
        Ok(Self {
            u,
            w,
            log_marginal_likelihood: psi - 0.5 * out.logdet.value,
            logdet_std_error: out.logdet.std_error,
            iterations,
            converged,
        })
    }

    /// Predictive logits at the test Jacobian `jt` with prior logits `test_mean`: means
    /// ($m\times C$) and per-point covariances ($C\times C$).
    pub(crate) fn predict_logits<B: Backend>(
        &self,
        jac: &Jacobian<B>,
        jt: &Jacobian<B>,
        test_mean: &DVector<f64>,
        s2: f64,
        settings: &MatrixFreeParams,
    ) -> Result<(DMatrix<f64>, Vec<DMatrix<f64>>), GpError>
    where
        B::FloatElem: Scalar,
    {
        let (c, m, p) = (jt.n_outputs(), jt.n_points(), jt.n_params());
        let s = s2.sqrt();
        let dev = jt.device();
        let f = jt.jvp(convert::from_dmatrix_f64(
            &DMatrix::from_column_slice(p, 1, self.u.as_slice()),
            &dev,
        ))?;
        let mean = test_mean + DVector::from_vec(convert::to_vec_f64(f)) * s;
        // sJ*ᵀ: one column per test point and class.
        let rhs = convert::to_dmatrix_f64(jt.vjp(convert::from_dmatrix_f64(
            &DMatrix::identity(m * c, m * c),
            &dev,
        ))?) * s;
        let a = Ggn {
            jac,
            w: &self.w,
            s2,
        };
        let x = pcg(&a, &Identity, &rhs, None, &settings.cg())?
            .check()?
            .solution;
        let covs = (0..m)
            .map(|i| rhs.columns(i * c, c).tr_mul(&x.columns(i * c, c)))
            .map(|cov| (&cov + cov.transpose()) * 0.5)
            .collect();
        Ok((DMatrix::from_row_slice(m, c, mean.as_slice()), covs))
    }
}
