//! The exact RBF-kernel GP baseline, with hyper-parameters fitted on the marginal likelihood.
//!
//! $k(x, x') = a \exp\big(-\tfrac12\sum_d (x_d - x'_d)^2/\ell_d^2\big)$ (one length scale per
//! input dimension), a constant mean $c$ and noise $\sigma^2$. Fitting maximizes
//! $\log p(y)$ over $(\log\ell, \log a, \log\sigma^2, c)$ with exact gradients
//! (Rasmussen & Williams 2006, §5.4.1) by bounded L-BFGS. The paper's two RBF baselines are
//! [`RbfGp::fit`] on each target task, and [`RbfGp::fit`] on the source task followed by
//! [`RbfGp::condition`] on each target (hyper-parameters kept, data replaced).

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{GpError, check_finite, check_positive};
use crate::exact::{ExactGp, Hyper, Prediction};
use crate::optimize::{MaximizeParams, Maximum, maximize_bounded};

/// The hyper-parameters of an RBF GP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RbfParams {
    /// Length scales $\ell_d > 0$, one per input dimension.
    pub lengthscales: Vec<f64>,
    /// Signal variance $a > 0$.
    pub signal: f64,
    /// Noise variance $\sigma^2 > 0$.
    pub noise: f64,
    /// Constant prior mean $c$.
    pub mean: f64,
}

impl RbfParams {
    /// A neutral start for `d` standardized inputs: unit length scales, unit signal,
    /// noise 0.1, zero mean.
    pub fn initial(d: usize) -> Self {
        Self {
            lengthscales: vec![1.0; d],
            signal: 1.0,
            noise: 0.1,
            mean: 0.0,
        }
    }

    fn check(&self, d: usize) -> Result<(), GpError> {
        if self.lengthscales.len() != d {
            return Err(GpError::Shape {
                what: "RBF length scales vs input dimensions",
                expected: d,
                got: self.lengthscales.len(),
            });
        }
        for &l in &self.lengthscales {
            check_positive("RBF length scale", l)?;
        }
        check_positive("RBF signal variance", self.signal)?;
        check_positive("noise variance σ²", self.noise)?;
        check_finite("RBF constant mean", [self.mean].iter())
    }
}

/// The unit-signal RBF correlation matrix $C_{ij} = \exp(-\tfrac12\sum_d (x_{id}-x'_{jd})^2/\ell_d^2)$
/// between the rows of `x1` ($n_1\times d$) and `x2` ($n_2 \times d$).
pub fn rbf_correlation(x1: &DMatrix<f64>, x2: &DMatrix<f64>, lengthscales: &[f64]) -> DMatrix<f64> {
    DMatrix::from_fn(x1.nrows(), x2.nrows(), |i, j| {
        let q: f64 = (0..x1.ncols())
            .map(|d| ((x1[(i, d)] - x2[(j, d)]) / lengthscales[d]).powi(2))
            .sum();
        (-0.5 * q).exp()
    })
}

/// An RBF GP conditioned on one data set.
#[derive(Debug, Clone)]
pub struct RbfGp {
    x: DMatrix<f64>,
    params: RbfParams,
    gp: ExactGp,
}

impl RbfGp {
    /// Conditions on inputs `x` ($n\times d$, one row per point) and targets `y`.
    pub fn new(x: DMatrix<f64>, y: &DVector<f64>, params: RbfParams) -> Result<Self, GpError> {
        if x.nrows() != y.len() {
            return Err(GpError::Shape {
                what: "input rows vs targets",
                expected: y.len(),
                got: x.nrows(),
            });
        }
        check_finite("inputs", x.iter())?;
        params.check(x.ncols())?;
        let c = rbf_correlation(&x, &x, &params.lengthscales);
        let hyper = Hyper {
            noise: params.noise,
            prior_scale: params.signal,
        };
        let gp = ExactGp::new(c, y.add_scalar(-params.mean), hyper)?;
        Ok(Self { x, params, gp })
    }

    /// Fits all hyper-parameters by maximizing the log marginal likelihood from `init`.
    /// Log length scales, log signal and log noise are bounded to $[10^{-4}, 10^4]$
    /// (noise to $[10^{-6}, 10^4]$); the mean to the range of $y$ widened by its spread.
    pub fn fit(
        x: DMatrix<f64>,
        y: &DVector<f64>,
        init: RbfParams,
        opt: MaximizeParams,
    ) -> Result<(Self, Maximum), GpError> {
        init.check(x.ncols())?;
        let d = x.ncols();
        let (ymin, ymax) = (y.min(), y.max());
        let spread = (ymax - ymin).max(1e-8);
        let mut lower = vec![(1e-4f64).ln(); d + 2];
        let mut upper = vec![(1e4f64).ln(); d + 2];
        lower[d + 1] = (1e-6f64).ln();
        lower.push(ymin - spread);
        upper.push(ymax + spread);
        let mut x0: Vec<f64> = init.lengthscales.iter().map(|l| l.ln()).collect();
        x0.extend([init.signal.ln(), init.noise.ln(), init.mean]);
        let unpack = |z: &[f64]| RbfParams {
            lengthscales: z[..d].iter().map(|v| v.exp()).collect(),
            signal: z[d].exp(),
            noise: z[d + 1].exp(),
            mean: z[d + 2],
        };
        let objective = |z: &[f64]| -> Result<(f64, Vec<f64>), GpError> {
            let params = unpack(z);
            let model = Self::new(x.clone(), y, params)?;
            Ok((model.log_marginal_likelihood(), model.log_gradient()))
        };
        let best = maximize_bounded(&objective, &x0, &lower, &upper, opt)?;
        let model = Self::new(x, y, unpack(&best.x))?;
        Ok((model, best))
    }

    /// The same hyper-parameters conditioned on new data (the transfer baseline).
    pub fn condition(&self, x: DMatrix<f64>, y: &DVector<f64>) -> Result<Self, GpError> {
        Self::new(x, y, self.params.clone())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &RbfParams {
        &self.params
    }

    /// $\log p(y)$ under the current hyper-parameters.
    pub fn log_marginal_likelihood(&self) -> f64 {
        self.gp.log_marginal_likelihood()
    }

    /// Gradient of $\log p(y)$ in $(\log\ell_1..\log\ell_d, \log a, \log\sigma^2, c)$.
    pub fn log_gradient(&self) -> Vec<f64> {
        let w = self.gp.gradient_weights();
        let a = self.params.signal;
        // ∂A/∂log a = a C, ∂A/∂log ℓ_d = a C ⊙ (x_d - x'_d)² / ℓ_d², ∂A/∂log σ² = σ² I.
        let c = rbf_correlation(&self.x, &self.x, &self.params.lengthscales);
        let wc = w.component_mul(&c);
        let n = self.x.nrows();
        let mut g: Vec<f64> = (0..self.x.ncols())
            .map(|d| {
                let l2 = self.params.lengthscales[d].powi(2);
                let mut s = 0.0;
                for j in 0..n {
                    for i in 0..n {
                        s += wc[(i, j)] * (self.x[(i, d)] - self.x[(j, d)]).powi(2);
                    }
                }
                0.5 * a * s / l2
            })
            .collect();
        g.push(0.5 * a * wc.sum());
        g.push(0.5 * self.params.noise * w.trace());
        g.push(self.gp.alpha().sum());
        g
    }

    /// Predictive marginals of the latent function at the rows of `x_test`.
    pub fn predict(&self, x_test: &DMatrix<f64>) -> Result<Prediction, GpError> {
        if x_test.ncols() != self.x.ncols() {
            return Err(GpError::Shape {
                what: "test input columns vs training input columns",
                expected: self.x.ncols(),
                got: x_test.ncols(),
            });
        }
        check_finite("test inputs", x_test.iter())?;
        let cross = rbf_correlation(&self.x, x_test, &self.params.lengthscales);
        let m = x_test.nrows();
        self.gp.predict(
            &cross,
            &DVector::from_element(m, 1.0),
            &DVector::from_element(m, self.params.mean),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> (DMatrix<f64>, DVector<f64>) {
        let x = DMatrix::from_fn(n, 1, |i, _| -3.0 + 6.0 * i as f64 / (n - 1) as f64);
        let y = DVector::from_fn(n, |i, _| {
            (1.3 * x[(i, 0)]).sin() + 0.05 * ((7 * i) as f64).cos()
        });
        (x, y)
    }

    #[test]
    fn log_gradient_matches_central_differences() {
        let (x, y) = data(9);
        let x2 = DMatrix::from_fn(9, 2, |i, j| x[(i, 0)] * (1.0 + j as f64) + 0.1 * j as f64);
        let p = RbfParams {
            lengthscales: vec![0.7, 1.9],
            signal: 1.3,
            noise: 0.05,
            mean: 0.2,
        };
        let g = RbfGp::new(x2.clone(), &y, p.clone())
            .unwrap()
            .log_gradient();
        let mut z: Vec<f64> = p.lengthscales.iter().map(|l| l.ln()).collect();
        z.extend([p.signal.ln(), p.noise.ln(), p.mean]);
        let lml = |z: &[f64]| {
            let q = RbfParams {
                lengthscales: vec![z[0].exp(), z[1].exp()],
                signal: z[2].exp(),
                noise: z[3].exp(),
                mean: z[4],
            };
            RbfGp::new(x2.clone(), &y, q)
                .unwrap()
                .log_marginal_likelihood()
        };
        for k in 0..z.len() {
            let e = 1e-6;
            let (mut zp, mut zm) = (z.clone(), z.clone());
            zp[k] += e;
            zm[k] -= e;
            let fd = (lml(&zp) - lml(&zm)) / (2.0 * e);
            assert!(
                (g[k] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                "coord {k}: {} vs {fd}",
                g[k]
            );
        }
    }

    #[test]
    fn fitting_improves_the_likelihood_and_interpolates() {
        let (x, y) = data(30);
        let init = RbfParams::initial(1);
        let start = RbfGp::new(x.clone(), &y, init.clone())
            .unwrap()
            .log_marginal_likelihood();
        let (gp, best) = RbfGp::fit(x.clone(), &y, init, MaximizeParams::default()).unwrap();
        assert!(
            gp.log_marginal_likelihood() > start + 1.0,
            "{start} -> {best:?}"
        );
        // Noise was 0.05·cos: the fitted noise variance is small.
        assert!(gp.params().noise < 0.01, "{:?}", gp.params());
        let xt = DMatrix::from_fn(5, 1, |i, _| -2.5 + i as f64);
        let p = gp.predict(&xt).unwrap();
        for i in 0..5 {
            assert!((p.mean[i] - (1.3 * xt[(i, 0)]).sin()).abs() < 0.1, "{p:?}");
        }
    }

    #[test]
    fn condition_keeps_hyper_parameters() {
        let (x, y) = data(10);
        let p = RbfParams::initial(1);
        let gp = RbfGp::new(x.clone(), &y, p.clone()).unwrap();
        let moved = gp.condition(x.add_scalar(1.0), &(-&y)).unwrap();
        assert_eq!(moved.params(), &p);
        assert!(matches!(
            gp.predict(&DMatrix::zeros(2, 3)),
            Err(GpError::Shape { .. })
        ));
    }
}
