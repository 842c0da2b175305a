//! Adaptive Bayesian linear regression (ABLR; Perrone et al. 2018), the feature-learning
//! baseline: a shared feature map $\phi(x)$ (a network) and, per task $t$, a Bayesian linear
//! regression $y_t = \Phi_t w_t + \varepsilon$ with $w_t \sim \mathcal N(0, s_t^2 I)$ and
//! $\varepsilon \sim \mathcal N(0, \sigma_t^2)$. The features and all per-task variances are
//! learned by maximizing $\sum_t \log p(y_t)$.
//!
//! [`train_features`] learns the feature network on a source task; [`fit_predict`] adapts the
//! fixed features to one target task. Underneath, the per-task objective and its gradient
//! with respect to the features,
//! $\partial \log p / \partial \Phi = s^2 W \Phi$ with $W = \alpha\alpha^\top - A^{-1}$ and
//! $A = s^2\Phi\Phi^\top + \sigma^2 I$ (from $d\log p = \tfrac12\operatorname{tr}(W\,dA)$); the
//! caller back-propagates it through the feature network.

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_ops::{Jacobian, JacobianOperator, JacobianParams, Network, NetworkConfig, convert};

use crate::error::GpError;
use crate::exact::{ExactGp, Hyper, Prediction};
use crate::fit::{FitParams, Param, fit_hyper};
use crate::optimize::MaximizeParams;
use crate::spectral::SpectralLml;
use crate::train::{Optimizer, TrainParams, TrainReport, train};
use crate::weight_space::WeightSpaceGp;

/// How ABLR's feature network is trained: full-batch Adam for `steps` steps at rate `lr`
/// from the seeded initialization `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AblrParams {
    /// Adam steps.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of the network's initialization.
    pub seed: u64,
}

impl Default for AblrParams {
    /// 1000 steps at 0.01 from seed 0.
    fn default() -> Self {
        Self {
            steps: 1000,
            lr: 1e-2,
            seed: 0,
        }
    }
}

/// ABLR's feature network (`features`: any network, its outputs the features $\phi(x)$),
/// trained on $(X, y)$ by maximizing the Bayesian-linear-regression marginal likelihood
/// $\log\mathcal N(y \mid 0, s^2\Phi\Phi^\top + \sigma^2 I)$ jointly over its weights and
/// $(\log\sigma^2, \log s^2)$ (from $\sigma^2 = 0.1$, $s^2 = 1$) with full-batch Adam (Perrone
/// et al. 2018). `on_step(step, loss)` follows the progress.
pub fn train_features<B: Backend>(
    features: &NetworkConfig,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    params: &AblrParams,
    device: &B::Device,
    on_step: impl FnMut(usize, f64),
) -> Result<(Network<B>, TrainReport), GpError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let net = features.init::<B>(params.seed, device)?;
    let buffers = net.buffers_flat();
    let p = net.n_params();
    // The network's parameters, then log σ² and log s².
    let mut theta = net.params_f64();
    theta.extend([(0.1f64).ln(), 0.0]);
    let config = TrainParams {
        optimizer: Optimizer::adam(),
        lr: params.lr,
        epochs: params.steps,
        batch_size: y.len(),
        decay_every: 0,
        decay: 1.0,
        seed: params.seed,
    };
    let report = train(
        &mut theta,
        y.len(),
        &config,
        |theta, _batch| {
            let net = features.with_params::<B>(&theta[..p], &buffers, device)?;
            let jac = Jacobian::new(
                net,
                convert::from_dmatrix_f64(x, device),
                JacobianParams::default(),
            )?;
            let phi = convert::to_dmatrix_f64(jac.outputs()?);
            let hyper = Hyper {
                noise: theta[p].exp(),
                prior_scale: theta[p + 1].exp(),
            };
            let obj = task_objective(&phi, y, hyper)?;
            // Minimize −log p: back-propagate −∂/∂Φ (row-major n·o) through the network.
            let u = -obj.d_features.transpose();
            let g = jac.vjp(convert::tensor_from_f64(
                u.as_slice().to_vec(),
                phi.len(),
                1,
                device,
            ))?;
            let mut grad = convert::to_vec_f64(g);
            grad.extend([-obj.d_log_noise, -obj.d_log_prior_scale]);
            Ok((-obj.lml, grad))
        },
        on_step,
    )?;
    Ok((
        features.with_params::<B>(&theta[..p], &buffers, device)?,
        report,
    ))
}

/// ABLR on one target task: the `features` fixed, $(\sigma^2, s^2)$ fitted to the task's
/// marginal likelihood exactly (one eigen-decomposition of $\Phi^\top\Phi$), then the Bayesian
/// linear regression's predictive mean and latent variance at `x_test`, with the fitted
/// variances.
pub fn fit_predict<B: Backend>(
    features: &Network<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    x_test: &DMatrix<f64>,
) -> Result<(Prediction, Hyper), GpError> {
    fit_predict_with(
        features,
        x,
        y,
        x_test,
        Param::fit_variance(0.1),
        Param::fit_variance(1.0),
    )
}

/// [`fit_predict`] with the noise $\sigma^2$ and the prior scale $s^2$ of the weights each
/// fitted or held fixed.
pub fn fit_predict_with<B: Backend>(
    features: &Network<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    x_test: &DMatrix<f64>,
    noise: Param,
    prior_scale: Param,
) -> Result<(Prediction, Hyper), GpError> {
    let phi_at = |x: &DMatrix<f64>| -> Result<DMatrix<f64>, GpError> {
        let xt = convert::from_dmatrix_f64(x, &features.device());
        features.check_inputs(&xt, "ABLR inputs")?;
        Ok(convert::to_dmatrix_f64(features.forward(xt)))
    };
    let phi = phi_at(x)?;
    let spectral = SpectralLml::from_features(&phi, y)?;
    let spec = FitParams {
        noise,
        prior_scale,
        constant_mean: None,
    };
    let (hyper, _, _) = fit_hyper(
        |h, c| Ok(spectral.evaluate(h, c)),
        &spec,
        MaximizeParams::default(),
    )?;
    let gp = WeightSpaceGp::new(&phi, y, hyper)?;
    let pred = gp.predict(&phi_at(x_test)?, &DVector::zeros(x_test.nrows()))?;
    Ok((pred, hyper))
}

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

    #[test]
    fn a_fixed_prior_scale_is_held_and_matches_the_dense_blr_posterior() {
        use ntk_ops::{DefaultBackend, MlpConfig};
        let features = MlpConfig::new(&[1, 6, 4]).network();
        let net = features
            .init::<DefaultBackend>(2, &Default::default())
            .unwrap();
        let x = DMatrix::from_fn(15, 1, |i, _| -1.0 + i as f64 / 7.0);
        let y = DVector::from_fn(15, |i, _| (2.0 * x[(i, 0)]).sin());
        let x_test = DMatrix::from_fn(4, 1, |i, _| 1.2 + 0.1 * i as f64);
        let (pred, hyper) = fit_predict_with(
            &net,
            &x,
            &y,
            &x_test,
            Param::fit_variance(0.1),
            Param::Fixed(1.0),
        )
        .unwrap();
        assert_eq!(hyper.prior_scale, 1.0);
        assert!(
            hyper.noise > 0.0 && hyper.noise != 0.1,
            "the noise is fitted"
        );
        // the weight-space posterior mean Φ*ᵀ(ΦᵀΦ + σ²I)⁻¹Φᵀy, by a dense solve
        let phi = convert::to_dmatrix_f64(
            net.forward(convert::from_dmatrix_f64(&x, &Default::default())),
        );
        let phi_t = convert::to_dmatrix_f64(
            net.forward(convert::from_dmatrix_f64(&x_test, &Default::default())),
        );
        let a = phi.transpose() * &phi + DMatrix::identity(4, 4) * hyper.noise;
        let w = a.cholesky().unwrap().solve(&(phi.transpose() * &y));
        let want = phi_t * w;
        assert!((pred.mean - want).amax() < 1e-10);
    }
}
