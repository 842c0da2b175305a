//! Hyper-parameter fitting: maximize the log marginal likelihood over $\sigma^2$, $s^2$ and a
//! constant mean $c$, each either fixed or free within bounds.
//!
//! Variances are optimized in log space ($\partial/\partial\log v = v\,\partial/\partial v$),
//! the mean directly, with [`maximize_bounded`]. The paper's fixed-noise behaviour is
//! [`Param::Fixed`].

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{GpError, check_positive};
use crate::exact::{ExactGp, Hyper};
use crate::optimize::{MaximizeParams, Maximum, maximize_bounded};
use crate::spectral::{LmlWithGradient, SpectralLml};

/// One hyper-parameter: held fixed, or fitted from `init` within `[lower, upper]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Param {
    /// Held at this value.
    Fixed(f64),
    /// Fitted by maximum marginal likelihood.
    Fit {
        /// Starting value.
        init: f64,
        /// Lower bound.
        lower: f64,
        /// Upper bound.
        upper: f64,
    },
}

impl Param {
    /// A variance fitted from `init` within $[10^{-6}, 10^{6}]$.
    pub fn fit_variance(init: f64) -> Self {
        Param::Fit {
            init,
            lower: 1e-6,
            upper: 1e6,
        }
    }

    /// The box `(lower, upper)` of a free parameter; `None` for a fixed one.
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match *self {
            Param::Fit { lower, upper, .. } => Some((lower, upper)),
            Param::Fixed(_) => None,
        }
    }

    /// The value to start from: the fixed value or the initial one.
    pub fn start(&self) -> f64 {
        match *self {
            Param::Fixed(v) | Param::Fit { init: v, .. } => v,
        }
    }
}

/// What to fit for a Gaussian likelihood on a scaled kernel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    /// Noise variance $\sigma^2$.
    pub noise: Param,
    /// Prior scale $s^2$.
    pub prior_scale: Param,
    /// A constant added to the prior mean; `None` for no constant.
    pub constant_mean: Option<Param>,
}

impl FitParams {
    /// Whether any parameter is fitted.
    pub fn has_free(&self) -> bool {
        let free = |p: &Param| matches!(p, Param::Fit { .. });
        free(&self.noise)
            || free(&self.prior_scale)
            || self.constant_mean.as_ref().is_some_and(free)
    }
}

/// The fitted GP and how the fit went.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The GP conditioned with the fitted hyper-parameters.
    pub gp: ExactGp,
    /// The fitted variances.
    pub hyper: Hyper,
    /// The fitted constant mean (0 when none).
    pub constant_mean: f64,
    /// The optimizer's report; `None` when nothing was free.
    pub report: Option<Maximum>,
}

/// Free coordinates: which parameter each optimizer coordinate is.
#[derive(Clone, Copy)]
enum Slot {
    LogNoise,
    LogScale,
    Mean,
}

/// Maximizes the log marginal likelihood given by `lml` (value and gradient at
/// $(\sigma^2, s^2)$ and constant mean $c$) over the free parameters of `spec`. Returns the
/// fitted variances, the constant mean (0 when none) and the optimizer's report (`None` when
/// nothing was free).
pub fn fit_hyper(
    lml: impl Fn(Hyper, f64) -> Result<LmlWithGradient, GpError>,
    spec: &FitParams,
    opt: MaximizeParams,
) -> Result<(Hyper, f64, Option<Maximum>), GpError> {
    let mut slots = Vec::new();
    let (mut x0, mut lower, mut upper) = (Vec::new(), Vec::new(), Vec::new());
    let mut push = |slot: Slot, p: &Param, log: bool| -> Result<(), GpError> {
        if let Param::Fit {
            init,
            lower: lo,
            upper: hi,
        } = *p
        {
            let f = |v: f64| if log { v.ln() } else { v };
            if log {
                check_positive("initial variance", init)?;
                check_positive("variance lower bound", lo)?;
            }
            slots.push(slot);
            x0.push(f(init));
            lower.push(f(lo));
            upper.push(f(hi));
        }
        Ok(())
    };
    push(Slot::LogNoise, &spec.noise, true)?;
    push(Slot::LogScale, &spec.prior_scale, true)?;
    if let Some(c) = &spec.constant_mean {
        push(Slot::Mean, c, false)?;
    }
    let unpack = |z: &[f64]| {
        let mut hyper = Hyper {
            noise: spec.noise.start(),
            prior_scale: spec.prior_scale.start(),
        };
        let mut c = spec.constant_mean.map_or(0.0, |p| p.start());
        for (slot, &v) in slots.iter().zip(z) {
            match slot {
                Slot::LogNoise => hyper.noise = v.exp(),
                Slot::LogScale => hyper.prior_scale = v.exp(),
                Slot::Mean => c = v,
            }
        }
        (hyper, c)
    };
    if slots.is_empty() {
        let (hyper, c) = unpack(&[]);
        hyper.check()?;
        return Ok((hyper, c, None));
    }
    let objective = |z: &[f64]| -> Result<(f64, Vec<f64>), GpError> {
        let (hyper, c) = unpack(z);
        let e = lml(hyper, c)?;
        let grad = slots
            .iter()
            .map(|s| match s {
                Slot::LogNoise => hyper.noise * e.d_noise,
                Slot::LogScale => hyper.prior_scale * e.d_prior_scale,
                Slot::Mean => e.d_constant_mean,
            })
            .collect();
        Ok((e.value, grad))
    };
    let report = maximize_bounded(&objective, &x0, &lower, &upper, opt)?;
    let (hyper, c) = unpack(&report.x);
    Ok((hyper, c, Some(report)))
}

/// Fits `spec` for the dense GP with unscaled kernel matrix `kernel`, targets `y` and base
/// prior mean `base_mean` ($\mu(X)$: zeros, or the network's outputs); the prior mean is
/// $\mu(X) + c$. One eigen-decomposition of $K$ makes every optimizer step $O(n)$
/// ([`SpectralLml`]); one Cholesky then conditions the returned GP.
pub fn fit_exact(
    kernel: &DMatrix<f64>,
    y: &DVector<f64>,
    base_mean: &DVector<f64>,
    spec: &FitParams,
    opt: MaximizeParams,
) -> Result<Fitted, GpError> {
    if base_mean.len() != y.len() {
        return Err(GpError::Shape {
            what: "prior mean vs targets",
            expected: y.len(),
            got: base_mean.len(),
        });
    }
    let residual = y - base_mean;
    let spectral = SpectralLml::from_kernel(kernel, &residual)?;
    let (hyper, constant_mean, report) = fit_hyper(|h, c| Ok(spectral.evaluate(h, c)), spec, opt)?;
    let gp = ExactGp::new(kernel.clone(), residual.add_scalar(-constant_mean), hyper)?;
    Ok(Fitted {
        gp,
        hyper,
        constant_mean,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_noise_and_scale_that_generated_the_data() {
        // y = J w + ε with w ~ N(0, 4 I), ε ~ N(0, 0.01): a linear kernel with 3 features.
        let n = 200;
        let j = DMatrix::from_fn(n, 3, |i, k| ((i as f64) * 0.05 * (k as f64 + 1.0)).cos());
        let w = DVector::from_vec(vec![2.1, -1.7, 2.4]);
        let noise: DVector<f64> = DVector::from_fn(n, |i, _| {
            0.1 * ((i as f64 * 12.9898).sin() * 43758.5453).fract()
        });
        let y = &j * &w + noise.add_scalar(-noise.mean()) * 1.7 + DVector::from_element(n, 0.5);
        let kernel = &j * j.transpose();
        let spec = FitParams {
            noise: Param::fit_variance(1.0),
            prior_scale: Param::fit_variance(1.0),
            constant_mean: Some(Param::Fit {
                init: 0.0,
                lower: -10.0,
                upper: 10.0,
            }),
        };
        let fitted = fit_exact(
            &kernel,
            &y,
            &DVector::zeros(n),
            &spec,
            MaximizeParams::default(),
        )
        .unwrap();
        // The fit must beat the start, and be a stationary point: small gradient.
        let start = ExactGp::new(
            kernel.clone(),
            y.clone(),
            Hyper {
                noise: 1.0,
                prior_scale: 1.0,
            },
        )
        .unwrap()
        .log_marginal_likelihood();
        assert!(fitted.gp.log_marginal_likelihood() > start + 10.0);
        let g = fitted.gp.gradient();
        assert!((g.noise * fitted.hyper.noise).abs() < 1e-3, "{g:?}");
        assert!(g.constant_mean.abs() < 1e-3, "{g:?}");
        // The noise level is that of the injected noise (variance ≈ 0.024), within a factor 2.
        let injected = (noise.add_scalar(-noise.mean()) * 1.7).norm_squared() / n as f64;
        assert!(
            fitted.hyper.noise > 0.5 * injected && fitted.hyper.noise < 2.0 * injected,
            "{:?} vs {injected}",
            fitted.hyper
        );
    }

    #[test]
    fn fixed_parameters_stay_fixed() {
        let kernel = DMatrix::identity(4, 4);
        let y = DVector::from_vec(vec![1.0, 2.0, 3.0, 4.0]);
        let spec = FitParams {
            noise: Param::Fixed(0.5),
            prior_scale: Param::fit_variance(1.0),
            constant_mean: None,
        };
        let f = fit_exact(
            &kernel,
            &y,
            &DVector::zeros(4),
            &spec,
            MaximizeParams::default(),
        )
        .unwrap();
        assert_eq!(f.hyper.noise, 0.5);
        // With K = I, A = (s² + σ²) I and the optimum is s² + σ² = mean(y²) = 7.5.
        assert!((f.hyper.prior_scale - 7.0).abs() < 1e-4, "{:?}", f.hyper);
        let none = FitParams {
            prior_scale: Param::Fixed(2.0),
            ..spec
        };
        let f = fit_exact(
            &kernel,
            &y,
            &DVector::zeros(4),
            &none,
            MaximizeParams::default(),
        )
        .unwrap();
        assert!(f.report.is_none());
    }
}
