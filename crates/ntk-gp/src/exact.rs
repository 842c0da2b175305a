//! Exact (dense) Gaussian-process inference on a precomputed kernel matrix.
//!
//! With an unscaled kernel matrix $K$ on the training inputs, a prior scale $s^2$,
//! noise $\sigma^2$ and residuals $r = y - \mu(X)$, the model is
//! $r \sim \mathcal N(0, A)$ with $A = s^2 K + \sigma^2 I$. One Cholesky factor
//! $A = L L^\top$ gives everything:
//!
//! - $\alpha = A^{-1} r$;
//! - $\log p(y) = -\tfrac12 r^\top\alpha - \sum_i \log L_{ii} - \tfrac n2 \log 2\pi$;
//! - predictive mean $\mu(x_*) + s^2 k_*^\top \alpha$ and latent variance
//!   $s^2 k_{**} - s^4 k_*^\top A^{-1} k_*$ (Rasmussen & Williams 2006, Alg. 2.1).
//!
//! A heteroscedastic likelihood replaces $\sigma^2 I$ by $\sigma^2 D$ with a fixed positive
//! diagonal $D$ (the per-point variances of a network's scale head; $\sigma^2$ then scales them).
//!
//! The kernel can be the finite NTK $J J^\top$ (the structured dense strategy) or any
//! other positive semi-definite kernel (the RBF baselines).

use nalgebra::{Cholesky, DMatrix, DVector, Dyn};

use crate::error::{GpError, check_finite, check_positive};

/// $\tfrac12 \log 2\pi$.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// The hyper-parameters of a Gaussian likelihood on a scaled kernel.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyper {
    /// Observation noise variance $\sigma^2 > 0$.
    pub noise: f64,
    /// Prior scale $s^2 > 0$ of the kernel (for the NTK: $\theta' \sim \mathcal N(0, s^2 I)$).
    pub prior_scale: f64,
}

impl Hyper {
    /// Checks that both variances are positive and finite.
    pub fn check(&self) -> Result<(), GpError> {
        check_positive("noise variance σ²", self.noise)?;
        check_positive("prior scale s²", self.prior_scale)
    }
}

/// Gradient of the log marginal likelihood.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmlGradient {
    /// $\partial \log p / \partial \sigma^2 = \tfrac12(\alpha^\top\alpha - \operatorname{tr} A^{-1})$.
    pub noise: f64,
    /// $\partial \log p / \partial s^2 = \tfrac12(\alpha^\top K\alpha - \operatorname{tr} A^{-1}K)$.
    pub prior_scale: f64,
    /// $\partial \log p / \partial c = \mathbf 1^\top \alpha$ for a constant mean $c$.
    pub constant_mean: f64,
}

/// Posterior predictive marginals at test points.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Predictive mean of the latent function.
    pub mean: DVector<f64>,
    /// Predictive variance of the latent function (noise not included), clamped at 0.
    pub var: DVector<f64>,
    /// How many variances were negative by round-off and clamped to 0.
    pub clamped: usize,
}

/// A dense GP conditioned on one task: the Cholesky factor of $s^2K + \sigma^2 I$ and
/// $\alpha$, reusable for any number of predictions.
#[derive(Debug, Clone)]
pub struct ExactGp {
    kernel: DMatrix<f64>,
    residual: DVector<f64>,
    hyper: Hyper,
    /// The noise shape $D$ (`None`: $D = I$).
    noise_shape: Option<DVector<f64>>,
    chol: Cholesky<f64, Dyn>,
    alpha: DVector<f64>,
}

impl ExactGp {
    /// Conditions on residuals $r = y - \mu(X)$ under the unscaled kernel matrix `kernel`.
    ///
    /// ```
    /// use nalgebra::{DMatrix, DVector};
    /// use ntk_gp::exact::{ExactGp, Hyper};
    /// let k = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]);
    /// let gp = ExactGp::new(k, DVector::from_vec(vec![1.0, -1.0]),
    ///                       Hyper { noise: 0.1, prior_scale: 1.0 }).unwrap();
    /// // A = [[2.1, 1], [1, 2.1]], r = (1, -1) is an eigenvector with eigenvalue 1.1.
    /// assert!((gp.alpha()[0] - 1.0 / 1.1).abs() < 1e-14);
    /// ```
    pub fn new(
        kernel: DMatrix<f64>,
        residual: DVector<f64>,
        hyper: Hyper,
    ) -> Result<Self, GpError> {
        Self::build(kernel, residual, hyper, None)
    }

    /// Conditions with heteroscedastic noise $\sigma^2 D$, $D = \operatorname{diag}(d)$, $d_i > 0$.
    pub fn heteroscedastic(
        kernel: DMatrix<f64>,
        residual: DVector<f64>,
        hyper: Hyper,
        noise_shape: DVector<f64>,
    ) -> Result<Self, GpError> {
        if noise_shape.len() != residual.len() {
            return Err(GpError::Shape {
                what: "per-point noise variances vs targets",
                expected: residual.len(),
                got: noise_shape.len(),
            });
        }
        for &d in noise_shape.iter() {
            check_positive("per-point noise variance", d)?;
        }
        Self::build(kernel, residual, hyper, Some(noise_shape))
    }

    fn build(
        kernel: DMatrix<f64>,
        residual: DVector<f64>,
        hyper: Hyper,
        noise_shape: Option<DVector<f64>>,
    ) -> Result<Self, GpError> {
        let n = residual.len();
        if n == 0 {
            return Err(GpError::EmptyTask);
        }
        if kernel.nrows() != n || kernel.ncols() != n {
            return Err(GpError::Shape {
                what: "kernel matrix rows/columns vs number of targets",
                expected: n,
                got: if kernel.nrows() != n {
                    kernel.nrows()
                } else {
                    kernel.ncols()
                },
            });
        }
        hyper.check()?;
        check_finite("targets", residual.iter())?;
        check_finite("kernel matrix", kernel.iter())?;
        let mut a = &kernel * hyper.prior_scale;
        for i in 0..n {
            a[(i, i)] += hyper.noise * noise_shape.as_ref().map_or(1.0, |d| d[i]);
        }
        // The blocked factorization runs on matrix products (see `chol`); nalgebra's solves
        // then read its lower triangle.
        crate::chol::cholesky_blocked(&mut a, crate::chol::block_for(n)).map_err(|e| match e {
            GpError::NotPositiveDefinite { .. } => GpError::NotPositiveDefinite {
                what: "s²K + σ²I",
            },
            other => other,
        })?;
        let chol = Cholesky::pack_dirty(a);
        let alpha = chol.solve(&residual);
        Ok(Self {
            kernel,
            residual,
            hyper,
            noise_shape,
            chol,
            alpha,
        })
    }

    /// The hyper-parameters this GP was conditioned with.
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// $\alpha = (s^2K + \sigma^2 I)^{-1} r$.
    pub fn alpha(&self) -> &DVector<f64> {
        &self.alpha
    }

    /// $\log\lvert s^2K + \sigma^2 I\rvert = 2\sum_i \log L_{ii}$.
    pub fn log_det(&self) -> f64 {
        2.0 * self
            .chol
            .l_dirty()
            .diagonal()
            .iter()
            .map(|d| d.ln())
            .sum::<f64>()
    }

    /// $r^\top (s^2K + \sigma^2 I)^{-1} r$.
    pub fn inv_quad(&self) -> f64 {
        self.residual.dot(&self.alpha)
    }

    /// The log marginal likelihood $\log \mathcal N(y \mid \mu, s^2K + \sigma^2 I)$.
    pub fn log_marginal_likelihood(&self) -> f64 {
        let n = self.residual.len() as f64;
        -0.5 * self.inv_quad() - 0.5 * self.log_det() - n * HALF_LOG_2PI
    }

    /// The exact gradient of [`log_marginal_likelihood`](Self::log_marginal_likelihood)
    /// in $\sigma^2$, $s^2$ and a constant mean. Costs one $O(n^3)$ inverse.
    ///
    /// Uses $A^{-1}K = (I - \sigma^2 A^{-1}D)/s^2$, so only the diagonal of $A^{-1}$ is needed:
    /// $\partial/\partial\sigma^2 = \tfrac12(\alpha^\top D\alpha - \operatorname{tr}A^{-1}D)$.
    pub fn gradient(&self) -> LmlGradient {
        let n = self.residual.len() as f64;
        let inv_diag = self.chol.inverse().diagonal();
        let (a2, tr_inv) = match &self.noise_shape {
            None => (self.alpha.norm_squared(), inv_diag.sum()),
            Some(d) => (
                self.alpha.component_mul(&self.alpha).dot(d),
                inv_diag.dot(d),
            ),
        };
        let Hyper { noise, prior_scale } = self.hyper;
        let aka = self.alpha.dot(&(&self.kernel * &self.alpha));
        let tr_inv_k = (n - noise * tr_inv) / prior_scale;
        LmlGradient {
            noise: 0.5 * (a2 - tr_inv),
            prior_scale: 0.5 * (aka - tr_inv_k),
            constant_mean: self.alpha.sum(),
        }
    }

    /// $W = \alpha\alpha^\top - A^{-1}$, so that
    /// $\partial \log p/\partial\vartheta = \tfrac12 \sum_{ij} W_{ij}\,(\partial A/\partial\vartheta)_{ij}$
    /// for any kernel hyper-parameter $\vartheta$ (Rasmussen & Williams 2006, eq. 5.9).
    pub fn gradient_weights(&self) -> DMatrix<f64> {
        &self.alpha * self.alpha.transpose() - self.chol.inverse()
    }

    /// Predictive marginals at $m$ test points from the unscaled cross-kernel
    /// $K(X, X_*)$ ($n\times m$), the test diagonal $k(x_*, x_*)$ and the prior mean there.
    pub fn predict(
        &self,
        cross: &DMatrix<f64>,
        test_diag: &DVector<f64>,
        test_mean: &DVector<f64>,
    ) -> Result<Prediction, GpError> {
        let (mean, v) = self.predict_parts(cross, test_mean)?;
        if test_diag.len() != cross.ncols() {
            return Err(GpError::Shape {
                what: "test kernel diagonal vs test points",
                expected: cross.ncols(),
                got: test_diag.len(),
            });
        }
        let s2 = self.hyper.prior_scale;
        let mut clamped = 0;
        let var = DVector::from_iterator(
            cross.ncols(),
            (0..cross.ncols()).map(|j| {
                let var = s2 * test_diag[j] - v.column(j).norm_squared();
                if var < 0.0 {
                    clamped += 1;
                    0.0
                } else {
                    var
                }
            }),
        );
        Ok(Prediction { mean, var, clamped })
    }

    /// Predictive mean and full latent covariance
    /// $s^2K_{**} - s^4 K_*^\top A^{-1} K_*$ (for small test sets).
    pub fn predict_cov(
        &self,
        cross: &DMatrix<f64>,
        test_kernel: &DMatrix<f64>,
        test_mean: &DVector<f64>,
    ) -> Result<(DVector<f64>, DMatrix<f64>), GpError> {
        let m = cross.ncols();
        if test_kernel.nrows() != m || test_kernel.ncols() != m {
            return Err(GpError::Shape {
                what: "test kernel matrix vs test points",
                expected: m,
                got: test_kernel.nrows(),
            });
        }
        let (mean, v) = self.predict_parts(cross, test_mean)?;
        let cov = test_kernel * self.hyper.prior_scale - v.transpose() * &v;
        Ok((mean, cov))
    }

    /// The mean and $V = L^{-1} s^2 K_*$, whose column norms are the variance reductions.
    fn predict_parts(
        &self,
        cross: &DMatrix<f64>,
        test_mean: &DVector<f64>,
    ) -> Result<(DVector<f64>, DMatrix<f64>), GpError> {
        let n = self.residual.len();
        if cross.nrows() != n {
            return Err(GpError::Shape {
                what: "cross-kernel rows vs training points",
                expected: n,
                got: cross.nrows(),
            });
        }
        if test_mean.len() != cross.ncols() {
            return Err(GpError::Shape {
                what: "test prior mean vs test points",
                expected: cross.ncols(),
                got: test_mean.len(),
            });
        }
        check_finite("cross-kernel", cross.iter())?;
        let s2 = self.hyper.prior_scale;
        let mean = test_mean + cross.tr_mul(&self.alpha) * s2;
        let mut v = cross * s2;
        crate::chol::solve_lower_blocked(self.chol.l_dirty(), &mut v, crate::chol::block_for(n))?;
        Ok((mean, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random_psd(n: usize, rank: usize, seed: u64) -> DMatrix<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let j = DMatrix::from_fn(n, rank, |_, _| rng.random::<f64>() - 0.5);
        &j * j.transpose()
    }

    /// Direct evaluation of $\log\mathcal N(r\mid 0, A)$ through a dense inverse and LU determinant.
    fn lml_reference(k: &DMatrix<f64>, r: &DVector<f64>, h: Hyper) -> f64 {
        let n = r.len();
        let a = k * h.prior_scale + DMatrix::identity(n, n) * h.noise;
        let inv = a.clone().try_inverse().unwrap();
        let quad = (r.transpose() * inv * r)[0];
        -0.5 * quad
            - 0.5 * a.determinant().ln()
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    #[test]
    fn lml_matches_a_direct_evaluation() {
        let k = random_psd(12, 5, 1);
        let r = DVector::from_fn(12, |i, _| (i as f64).sin());
        let h = Hyper {
            noise: 0.3,
            prior_scale: 1.7,
        };
        let gp = ExactGp::new(k.clone(), r.clone(), h).unwrap();
        let want = lml_reference(&k, &r, h);
        assert!((gp.log_marginal_likelihood() - want).abs() < 1e-10 * want.abs());
    }

    #[test]
    fn gradient_matches_central_differences() {
        let k = random_psd(15, 6, 2);
        let y = DVector::from_fn(15, |i, _| (0.7 * i as f64).cos() + 0.4);
        let h = Hyper {
            noise: 0.2,
            prior_scale: 0.8,
        };
        let c = 0.1;
        let lml = |h: Hyper, c: f64| {
            let r = y.add_scalar(-c);
            ExactGp::new(k.clone(), r, h)
                .unwrap()
                .log_marginal_likelihood()
        };
        let g = ExactGp::new(k.clone(), y.add_scalar(-c), h)
            .unwrap()
            .gradient();
        let e = 1e-6;
        let fd_noise = (lml(
            Hyper {
                noise: h.noise + e,
                ..h
            },
            c,
        ) - lml(
            Hyper {
                noise: h.noise - e,
                ..h
            },
            c,
        )) / (2.0 * e);
        let fd_scale = (lml(
            Hyper {
                prior_scale: h.prior_scale + e,
                ..h
            },
            c,
        ) - lml(
            Hyper {
                prior_scale: h.prior_scale - e,
                ..h
            },
            c,
        )) / (2.0 * e);
        let fd_mean = (lml(h, c + e) - lml(h, c - e)) / (2.0 * e);
        assert!(
            (g.noise - fd_noise).abs() < 1e-6 * (1.0 + fd_noise.abs()),
            "{g:?} {fd_noise}"
        );
        assert!((g.prior_scale - fd_scale).abs() < 1e-6 * (1.0 + fd_scale.abs()));
        assert!((g.constant_mean - fd_mean).abs() < 1e-6 * (1.0 + fd_mean.abs()));
    }

    #[test]
    fn prediction_matches_the_textbook_formula() {
        // Train on the first 10 of 14 points of one kernel, predict the last 4.
        let full = random_psd(14, 8, 3);
        let k = full.view((0, 0), (10, 10)).into_owned();
        let cross = full.view((0, 10), (10, 4)).into_owned();
        let kss = full.view((10, 10), (4, 4)).into_owned();
        let r = DVector::from_fn(10, |i, _| 1.0 - 0.1 * i as f64);
        let h = Hyper {
            noise: 0.05,
            prior_scale: 2.0,
        };
        let gp = ExactGp::new(k.clone(), r.clone(), h).unwrap();
        let zero = DVector::zeros(4);
        let p = gp.predict(&cross, &kss.diagonal(), &zero).unwrap();
        let a_inv = (&k * 2.0 + DMatrix::identity(10, 10) * 0.05)
            .try_inverse()
            .unwrap();
        let mean = (&cross * 2.0).transpose() * &a_inv * &r;
        let cov = &kss * 2.0 - (&cross * 2.0).transpose() * &a_inv * (&cross * 2.0);
        for j in 0..4 {
            assert!((p.mean[j] - mean[j]).abs() < 1e-10);
            assert!((p.var[j] - cov[(j, j)]).abs() < 1e-10);
        }
        let (m2, c2) = gp.predict_cov(&cross, &kss, &zero).unwrap();
        assert!((m2 - mean).norm() < 1e-10);
        assert!((c2 - cov).norm() < 1e-9);
        assert_eq!(p.clamped, 0);
    }

    #[test]
    fn heteroscedastic_gradient_matches_central_differences() {
        let k = random_psd(11, 4, 5);
        let r = DVector::from_fn(11, |i, _| (1.3 * i as f64).sin());
        let d = DVector::from_fn(11, |i, _| 0.5 + 0.1 * i as f64);
        let h = Hyper {
            noise: 0.3,
            prior_scale: 1.2,
        };
        let lml = |h: Hyper| {
            ExactGp::heteroscedastic(k.clone(), r.clone(), h, d.clone())
                .unwrap()
                .log_marginal_likelihood()
        };
        let g = ExactGp::heteroscedastic(k.clone(), r.clone(), h, d.clone())
            .unwrap()
            .gradient();
        let e = 1e-6;
        let fd_noise = (lml(Hyper {
            noise: h.noise + e,
            ..h
        }) - lml(Hyper {
            noise: h.noise - e,
            ..h
        })) / (2.0 * e);
        let fd_scale = (lml(Hyper {
            prior_scale: h.prior_scale + e,
            ..h
        }) - lml(Hyper {
            prior_scale: h.prior_scale - e,
            ..h
        })) / (2.0 * e);
        assert!((g.noise - fd_noise).abs() < 1e-6 * (1.0 + fd_noise.abs()));
        assert!((g.prior_scale - fd_scale).abs() < 1e-6 * (1.0 + fd_scale.abs()));
        // D = 1 is the homoscedastic model.
        let ones =
            ExactGp::heteroscedastic(k.clone(), r.clone(), h, DVector::from_element(11, 1.0))
                .unwrap();
        let plain = ExactGp::new(k.clone(), r.clone(), h).unwrap();
        assert!((ones.log_marginal_likelihood() - plain.log_marginal_likelihood()).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let k = DMatrix::identity(3, 3);
        let r = DVector::from_vec(vec![1.0, 2.0, 3.0]);
        let ok = Hyper {
            noise: 0.1,
            prior_scale: 1.0,
        };
        assert!(matches!(
            ExactGp::new(k.clone(), r.clone(), Hyper { noise: 0.0, ..ok }),
            Err(GpError::NonPositive { .. })
        ));
        assert!(matches!(
            ExactGp::new(k.clone(), DVector::from_vec(vec![1.0, f64::NAN, 0.0]), ok),
            Err(GpError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            ExactGp::new(DMatrix::identity(2, 2), r.clone(), ok),
            Err(GpError::Shape { .. })
        ));
        assert!(matches!(
            ExactGp::new(DMatrix::zeros(0, 0), DVector::zeros(0), ok),
            Err(GpError::EmptyTask)
        ));
        let gp = ExactGp::new(k, r, ok).unwrap();
        assert!(matches!(
            gp.predict(
                &DMatrix::zeros(2, 1),
                &DVector::zeros(1),
                &DVector::zeros(1)
            ),
            Err(GpError::Shape { .. })
        ));
    }
}
