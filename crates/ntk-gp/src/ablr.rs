//! Adaptive Bayesian linear regression (ABLR; Perrone et al. 2018), the feature-learning
//! baseline: a shared feature map $\phi(x)$ (a network) and, per task $t$, a Bayesian linear
//! regression $y_t = \Phi_t w_t + \varepsilon$ with $w_t \sim \mathcal N(0, s_t^2 I)$ and
//! $\varepsilon \sim \mathcal N(0, \sigma_t^2)$. The features and all per-task variances are
//! learned by maximizing $\sum_t \log p(y_t)$.
//!
//! This module holds the per-task objective and its gradient with respect to the features,
//! $\partial \log p / \partial \Phi = s^2 W \Phi$ with $W = \alpha\alpha^\top - A^{-1}$ and
//! $A = s^2\Phi\Phi^\top + \sigma^2 I$ (from $d\log p = \tfrac12\operatorname{tr}(W\,dA)$); the
//! caller back-propagates it through the feature network.

use nalgebra::{DMatrix, DVector};

use crate::error::GpError;
use crate::exact::{ExactGp, Hyper};

/// One task's ABLR objective and its gradients.
#[derive(Debug, Clone)]
pub struct TaskObjective {
    /// $\log p(y_t \mid \Phi_t, s_t^2, \sigma_t^2)$.
    pub lml: f64,
    /// $\partial \log p / \partial \Phi_t$ ($n_t\times p$).
    pub d_features: DMatrix<f64>,
    /// $\partial \log p / \partial \log\sigma_t^2$.
    pub d_log_noise: f64,
    /// $\partial \log p / \partial \log s_t^2$.
    pub d_log_prior_scale: f64,
}

/// The ABLR objective of one task with features `phi` ($n\times p$) and targets `y`.
pub fn task_objective(
    phi: &DMatrix<f64>,
    y: &DVector<f64>,
    hyper: Hyper,
) -> Result<TaskObjective, GpError> {
    let gp = ExactGp::new(phi * phi.transpose(), y.clone(), hyper)?;
    let w = gp.gradient_weights();
    let g = gp.gradient();
    Ok(TaskObjective {
        lml: gp.log_marginal_likelihood(),
        d_features: (w * phi) * hyper.prior_scale,
        d_log_noise: hyper.noise * g.noise,
        d_log_prior_scale: hyper.prior_scale * g.prior_scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gradient_matches_central_differences() {
        let phi = DMatrix::from_fn(7, 3, |i, j| ((i * 3 + j * 5) as f64 * 0.41).cos());
        let y = DVector::from_fn(7, |i, _| (i as f64 * 0.9).sin());
        let h = Hyper {
            noise: 0.2,
            prior_scale: 1.4,
        };
        let obj = task_objective(&phi, &y, h).unwrap();
        let e = 1e-6;
        for (i, j) in [(0, 0), (3, 1), (6, 2), (2, 2)] {
            let (mut p, mut m) = (phi.clone(), phi.clone());
            p[(i, j)] += e;
            m[(i, j)] -= e;
            let fd = (task_objective(&p, &y, h).unwrap().lml
                - task_objective(&m, &y, h).unwrap().lml)
                / (2.0 * e);
            assert!(
                (obj.d_features[(i, j)] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "({i},{j})"
            );
        }
        let up = task_objective(
            &phi,
            &y,
            Hyper {
                noise: h.noise * (1.0 + e),
                ..h
            },
        )
        .unwrap()
        .lml;
        let dn = task_objective(
            &phi,
            &y,
            Hyper {
                noise: h.noise * (1.0 - e),
                ..h
            },
        )
        .unwrap()
        .lml;
        let fd = (up - dn) / ((1.0 + e).ln() - (1.0 - e).ln());
        assert!((obj.d_log_noise - fd).abs() < 1e-5 * (1.0 + fd.abs()));
    }
}
