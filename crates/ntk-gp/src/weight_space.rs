//! Bayesian linear regression in weight space: the parameter-space view of the same GP.
//!
//! With features $\Phi \in \mathbb{R}^{n\times p}$ (the Jacobian $J$ for the finite NTK, or a
//! learned feature map for ABLR), weights $w \sim \mathcal N(0, s^2 I)$ and noise $\sigma^2$,
//! the model $y = \mu + \Phi w + \varepsilon$ is the GP with kernel $s^2\Phi\Phi^\top$. By the
//! Woodbury identity everything comes from the $p\times p$ matrix
//! $$M = \Phi^\top\Phi + (\sigma^2/s^2) I = L L^\top,$$
//! cheaper than the $n\times n$ kernel when $n \gg p$:
//!
//! - posterior mean weights $\bar w = M^{-1}\Phi^\top r$, predictive mean $\phi_*^\top \bar w$;
//! - latent predictive variance $\sigma^2\, \phi_*^\top M^{-1}\phi_*$;
//! - $r^\top A^{-1} r = (r^\top r - r^\top \Phi \bar w)/\sigma^2$ and, by the matrix determinant
//!   lemma, $\log\lvert A\rvert = (n-p)\log\sigma^2 + p \log s^2 + \log\lvert M\rvert$, with
//!   $A = s^2\Phi\Phi^\top + \sigma^2 I$.

use nalgebra::{Cholesky, DMatrix, DVector, Dyn};

use crate::error::{GpError, check_finite};
use crate::exact::{Hyper, Prediction};

/// $\tfrac12 \log 2\pi$.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// A Bayesian linear regression conditioned on one task, in weight space.
#[derive(Debug, Clone)]
pub struct WeightSpaceGp {
    hyper: Hyper,
    chol: Cholesky<f64, Dyn>,
    w_mean: DVector<f64>,
    n: usize,
    rtr: f64,
    rtphiw: f64,
}

impl WeightSpaceGp {
    /// Conditions on features `phi` ($n\times p$) and residuals $r = y - \mu(X)$.
    pub fn new(phi: &DMatrix<f64>, residual: &DVector<f64>, hyper: Hyper) -> Result<Self, GpError> {
        let n = residual.len();
        if n == 0 {
            return Err(GpError::EmptyTask);
        }
        if phi.nrows() != n {
            return Err(GpError::Shape {
                what: "feature rows vs targets",
                expected: n,
                got: phi.nrows(),
            });
        }
        hyper.check()?;
        check_finite("targets", residual.iter())?;
        check_finite("features", phi.iter())?;
        Self::from_gram(
            &phi.tr_mul(phi),
            &phi.tr_mul(residual),
            residual.norm_squared(),
            n,
            hyper,
        )
    }

    /// Conditions from the sufficient statistics $\Phi^\top\Phi$, $\Phi^\top r$, $r^\top r$ and $n$
    /// (which can be accumulated over chunks of data, or across machines).
    pub fn from_gram(
        gram: &DMatrix<f64>,
        phi_t_r: &DVector<f64>,
        rtr: f64,
        n: usize,
        hyper: Hyper,
    ) -> Result<Self, GpError> {
        let p = gram.nrows();
        if gram.ncols() != p || phi_t_r.len() != p {
            return Err(GpError::Shape {
                what: "Gram matrix / projected targets vs parameters",
                expected: p,
                got: if gram.ncols() != p {
                    gram.ncols()
                } else {
                    phi_t_r.len()
                },
            });
        }
        if n == 0 {
            return Err(GpError::EmptyTask);
        }
        hyper.check()?;
        let mut m = gram.clone();
        let ratio = hyper.noise / hyper.prior_scale;
        for i in 0..p {
            m[(i, i)] += ratio;
        }
        let chol = Cholesky::new(m).ok_or(GpError::NotPositiveDefinite {
            what: "ΦᵀΦ + (σ²/s²)I",
        })?;
        let w_mean = chol.solve(phi_t_r);
        let rtphiw = phi_t_r.dot(&w_mean);
        Ok(Self {
            hyper,
            chol,
            w_mean,
            n,
            rtr,
            rtphiw,
        })
    }

    /// Posterior mean of the weights, $\bar w = M^{-1}\Phi^\top r$.
    pub fn weight_mean(&self) -> &DVector<f64> {
        &self.w_mean
    }

    /// $r^\top (s^2\Phi\Phi^\top + \sigma^2 I)^{-1} r$.
    pub fn inv_quad(&self) -> f64 {
        (self.rtr - self.rtphiw) / self.hyper.noise
    }

    /// $\log\lvert s^2\Phi\Phi^\top + \sigma^2 I\rvert$ by the matrix determinant lemma.
    pub fn log_det(&self) -> f64 {
        let p = self.w_mean.len() as f64;
        let log_m = 2.0
            * self
                .chol
                .l_dirty()
                .diagonal()
                .iter()
                .map(|d| d.ln())
                .sum::<f64>();
        (self.n as f64 - p) * self.hyper.noise.ln() + p * self.hyper.prior_scale.ln() + log_m
    }

    /// The log marginal likelihood, identical to the function-space one.
    pub fn log_marginal_likelihood(&self) -> f64 {
        -0.5 * self.inv_quad() - 0.5 * self.log_det() - self.n as f64 * HALF_LOG_2PI
    }

    /// Predictive mean and full latent covariance $\sigma^2 \Phi_* M^{-1}\Phi_*^\top$.
    pub fn predict_cov(
        &self,
        phi_test: &DMatrix<f64>,
        test_mean: &DVector<f64>,
    ) -> Result<(DVector<f64>, DMatrix<f64>), GpError> {
        let pred = self.predict(phi_test, test_mean)?;
        let mut v = phi_test.transpose();
        self.chol.l_dirty().solve_lower_triangular_mut(&mut v);
        Ok((pred.mean, v.tr_mul(&v) * self.hyper.noise))
    }

    /// Predictive marginals at test features `phi_test` ($m\times p$) with prior mean `test_mean`.
    pub fn predict(
        &self,
        phi_test: &DMatrix<f64>,
        test_mean: &DVector<f64>,
    ) -> Result<Prediction, GpError> {
        let p = self.w_mean.len();
        if phi_test.ncols() != p {
            return Err(GpError::Shape {
                what: "test feature columns vs parameters",
                expected: p,
                got: phi_test.ncols(),
            });
        }
        if test_mean.len() != phi_test.nrows() {
            return Err(GpError::Shape {
                what: "test prior mean vs test points",
                expected: phi_test.nrows(),
                got: test_mean.len(),
            });
        }
        check_finite("test features", phi_test.iter())?;
        let mean = test_mean + phi_test * &self.w_mean;
        // var_j = σ² ‖L⁻¹ φ_j‖², never negative by construction.
        let mut v = phi_test.transpose();
        self.chol.l_dirty().solve_lower_triangular_mut(&mut v);
        let var = DVector::from_iterator(
            phi_test.nrows(),
            v.column_iter().map(|c| self.hyper.noise * c.norm_squared()),
        );
        Ok(Prediction {
            mean,
            var,
            clamped: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::ExactGp;

    #[test]
    fn agrees_with_function_space() {
        // n = 9 > p = 4 and n = 3 < p = 4: both regimes.
        for &(n, p) in &[(9usize, 4usize), (3, 4)] {
            let phi = DMatrix::from_fn(n + 5, p, |i, j| ((i * 7 + j * 3) as f64 * 0.37).sin());
            let train = phi.rows(0, n).into_owned();
            let test = phi.rows(n, 5).into_owned();
            let r = DVector::from_fn(n, |i, _| 0.3 * i as f64 - 1.0);
            let h = Hyper {
                noise: 0.07,
                prior_scale: 1.9,
            };
            let ws = WeightSpaceGp::new(&train, &r, h).unwrap();
            let fs = ExactGp::new(&train * train.transpose(), r.clone(), h).unwrap();
            let lml = fs.log_marginal_likelihood();
            assert!((ws.log_marginal_likelihood() - lml).abs() < 1e-10 * lml.abs().max(1.0));
            let zero = DVector::zeros(5);
            let a = ws.predict(&test, &zero).unwrap();
            let kss = &test * test.transpose();
            let b = fs
                .predict(&(&train * test.transpose()), &kss.diagonal(), &zero)
                .unwrap();
            assert!((&a.mean - &b.mean).norm() < 1e-10);
            assert!((&a.var - &b.var).norm() < 1e-10);
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let h = Hyper {
            noise: 1.0,
            prior_scale: 1.0,
        };
        let phi = DMatrix::zeros(3, 2);
        assert!(matches!(
            WeightSpaceGp::new(&phi, &DVector::zeros(4), h),
            Err(GpError::Shape { .. })
        ));
        let gp = WeightSpaceGp::new(&phi, &DVector::zeros(3), h).unwrap();
        assert!(matches!(
            gp.predict(&DMatrix::zeros(1, 3), &DVector::zeros(1)),
            Err(GpError::Shape { .. })
        ));
    }
}
