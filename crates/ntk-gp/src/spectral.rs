//! Fast hyper-parameter fitting through one eigen-decomposition.
//!
//! For a Gaussian likelihood, $A = s^2 K + \sigma^2 I$ shares its eigenvectors with $K$, so
//! after one eigen-decomposition the log marginal likelihood is a sum of $k$ scalar terms
//! in $(\sigma^2, s^2, c)$ and every optimizer step costs $O(k)$ instead of a Cholesky.
//! With eigenpairs $(\lambda_i, u_i)$ of the kernel restricted to its range
//! ($k = n$ in function space; $k = p$ from $\Phi^\top\Phi = Q\Lambda Q^\top$ in parameter
//! space, where $u_i = \Phi q_i/\sqrt{\lambda_i}$), residual $r = r_0 - c\mathbf 1$,
//! $d_i = u_i^\top r$, $D_i = s^2\lambda_i + \sigma^2$ and the part of $r$ outside the range
//! $\rho = \lVert r\rVert^2 - \sum_i d_i^2$:
//! $$\log p(y) = -\tfrac12\Big(\sum_i \frac{d_i^2}{D_i} + \frac{\rho}{\sigma^2}\Big)
//!   - \tfrac12\Big(\sum_i \log D_i + (n-k)\log\sigma^2\Big) - \tfrac n2\log 2\pi .$$

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{GpError, check_finite};
use crate::exact::Hyper;

/// $\tfrac12 \log 2\pi$.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// The spectral form of one task's marginal likelihood.
#[derive(Debug, Clone)]
pub struct SpectralLml {
    n: usize,
    lambda: Vec<f64>,
    /// $u_i^\top r_0$.
    a: Vec<f64>,
    /// $u_i^\top \mathbf 1$.
    b: Vec<f64>,
    r0_sq: f64,
    r0_sum: f64,
}

/// The log marginal likelihood and its gradient in $(\sigma^2, s^2, c)$.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmlWithGradient {
    /// $\log p(y)$.
    pub value: f64,
    /// $\partial/\partial\sigma^2$.
    pub d_noise: f64,
    /// $\partial/\partial s^2$.
    pub d_prior_scale: f64,
    /// $\partial/\partial c$.
    pub d_constant_mean: f64,
}

impl SpectralLml {
    /// From an $n\times n$ kernel matrix $K$ (function space) and residuals $r_0$.
    pub fn from_kernel(kernel: &DMatrix<f64>, r0: &DVector<f64>) -> Result<Self, GpError> {
        let n = r0.len();
        if kernel.nrows() != n || kernel.ncols() != n {
            return Err(GpError::Shape {
                what: "kernel matrix vs targets",
                expected: n,
                got: kernel.nrows(),
            });
        }
        check_finite("kernel matrix", kernel.iter())?;
        check_finite("targets", r0.iter())?;
        let eig = SymmetricEigen::new(kernel.clone());
        let ones = DVector::from_element(n, 1.0);
        let a = eig.eigenvectors.tr_mul(r0);
        let b = eig.eigenvectors.tr_mul(&ones);
        Ok(Self::assemble(
            n,
            eig.eigenvalues.iter().map(|l| l.max(0.0)).collect(),
            a.as_slice().to_vec(),
            b.as_slice().to_vec(),
            r0,
        ))
    }

    /// From features $\Phi$ ($n\times p$; the Jacobian in parameter space) and residuals $r_0$,
    /// through the $p\times p$ Gram matrix. Directions with $\lambda_i \le 10^{-12}\lambda_{\max}$
    /// are treated as outside the range.
    pub fn from_features(phi: &DMatrix<f64>, r0: &DVector<f64>) -> Result<Self, GpError> {
        let n = r0.len();
        if phi.nrows() != n {
            return Err(GpError::Shape {
                what: "feature rows vs targets",
                expected: n,
                got: phi.nrows(),
            });
        }
        check_finite("features", phi.iter())?;
        check_finite("targets", r0.iter())?;
        let ones = DVector::from_element(n, 1.0);
        Self::from_gram(&phi.tr_mul(phi), &phi.tr_mul(r0), &phi.tr_mul(&ones), r0)
    }

    /// From the sufficient statistics $\Phi^\top\Phi$, $\Phi^\top r_0$, $\Phi^\top\mathbf 1$ (which
    /// can be accumulated over chunks of data) and $r_0$.
    pub fn from_gram(
        gram: &DMatrix<f64>,
        phi_t_r0: &DVector<f64>,
        phi_t_one: &DVector<f64>,
        r0: &DVector<f64>,
    ) -> Result<Self, GpError> {
        let eig = SymmetricEigen::new(gram.clone());
        let max = eig.eigenvalues.iter().cloned().fold(0.0, f64::max);
        let za = eig.eigenvectors.tr_mul(phi_t_r0);
        let zb = eig.eigenvectors.tr_mul(phi_t_one);
        let (mut lambda, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..eig.eigenvalues.len() {
            let l = eig.eigenvalues[i];
            if l > 1e-12 * max && l > 0.0 {
                lambda.push(l);
                a.push(za[i] / l.sqrt());
                b.push(zb[i] / l.sqrt());
            }
        }
        Ok(Self::assemble(r0.len(), lambda, a, b, r0))
    }

    fn assemble(n: usize, lambda: Vec<f64>, a: Vec<f64>, b: Vec<f64>, r0: &DVector<f64>) -> Self {
        Self {
            n,
            lambda,
            a,
            b,
            r0_sq: r0.norm_squared(),
            r0_sum: r0.sum(),
        }
    }

    /// $\log p(y)$ and its gradient at noise and scale `hyper` and constant mean `c`.
    pub fn evaluate(&self, hyper: Hyper, c: f64) -> LmlWithGradient {
        let Hyper {
            noise: s2n,
            prior_scale: s2,
        } = hyper;
        let n = self.n as f64;
        let k = self.lambda.len() as f64;
        let (mut quad, mut logdet, mut in_range) = (0.0, 0.0, 0.0);
        let (mut dq_noise, mut dq_scale, mut dq_c) = (0.0, 0.0, 0.0);
        let (mut dl_noise, mut dl_scale, mut d_in_range_c) = (0.0, 0.0, 0.0);
        for i in 0..self.lambda.len() {
            let l = self.lambda[i];
            let d = self.a[i] - c * self.b[i];
            let big_d = s2 * l + s2n;
            quad += d * d / big_d;
            in_range += d * d;
            logdet += big_d.ln();
            dq_noise -= d * d / (big_d * big_d);
            dq_scale -= d * d * l / (big_d * big_d);
            dq_c -= 2.0 * self.b[i] * d / big_d;
            d_in_range_c -= 2.0 * self.b[i] * d;
            dl_noise += 1.0 / big_d;
            dl_scale += l / big_d;
        }
        // ‖r0 − c1‖² and the part of it outside the range.
        let r_sq = self.r0_sq - 2.0 * c * self.r0_sum + c * c * n;
        let rest = (r_sq - in_range).max(0.0);
        let d_rest_c = (-2.0 * self.r0_sum + 2.0 * c * n) - d_in_range_c;
        quad += rest / s2n;
        dq_noise -= rest / (s2n * s2n);
        dq_c += d_rest_c / s2n;
        logdet += (n - k) * s2n.ln();
        dl_noise += (n - k) / s2n;
        LmlWithGradient {
            value: -0.5 * quad - 0.5 * logdet - n * HALF_LOG_2PI,
            d_noise: -0.5 * (dq_noise + dl_noise),
            d_prior_scale: -0.5 * (dq_scale + dl_scale),
            d_constant_mean: -0.5 * dq_c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::ExactGp;

    #[test]
    fn agrees_with_cholesky_in_both_spaces() {
        for &(n, p) in &[(20usize, 6usize), (5, 9)] {
            let phi = DMatrix::from_fn(n, p, |i, j| ((i * 13 + j * 7) as f64 * 0.29).sin());
            let y = DVector::from_fn(n, |i, _| (i as f64 * 0.4).cos() + 0.3);
            let h = Hyper {
                noise: 0.11,
                prior_scale: 1.7,
            };
            let c = 0.25;
            let k = &phi * phi.transpose();
            let exact = ExactGp::new(k.clone(), y.add_scalar(-c), h).unwrap();
            let g = exact.gradient();
            for s in [
                SpectralLml::from_kernel(&k, &y).unwrap(),
                SpectralLml::from_features(&phi, &y).unwrap(),
            ] {
                let e = s.evaluate(h, c);
                let tol = 1e-9 * (1.0 + e.value.abs());
                assert!(
                    (e.value - exact.log_marginal_likelihood()).abs() < tol,
                    "{n}x{p}"
                );
                assert!((e.d_noise - g.noise).abs() < 1e-7 * (1.0 + g.noise.abs()));
                assert!(
                    (e.d_prior_scale - g.prior_scale).abs() < 1e-7 * (1.0 + g.prior_scale.abs())
                );
                assert!(
                    (e.d_constant_mean - g.constant_mean).abs()
                        < 1e-7 * (1.0 + g.constant_mean.abs())
                );
            }
        }
    }
}
