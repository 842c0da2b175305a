//! The finite-NTK GP of a trained network on one task.
//!
//! The network $f(x;\theta)$ is linearized at its trained weights; with
//! $\theta' \sim \mathcal N(0, s^2 I)$ and noise $\sigma^2$ the task's targets follow
//! $y = \mu(X) + J\theta' + \varepsilon$, a GP with kernel $s^2 JJ^\top$. The prior mean
//! $\mu$ is one of [`MeanFunction`]:
//!
//! - `Zero`: $\mu(x) = 0$ (the authors' code);
//! - `Constant`: $\mu(x) = c$, fixed or fitted by maximum marginal likelihood;
//! - `Network`: $\mu(x) = f(x;\theta)$, the trained network itself (the linearization's
//!   offset), optionally plus a fitted constant.

use std::time::{Duration, Instant};

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_ops::{HostNtk, Jacobian, JacobianOperator, JacobianParams, Network, convert};
use serde::{Deserialize, Serialize};

use krylov::cg::{CgParams, pcg};
use krylov::ops::{Scaled, Shifted};
use krylov::precond::PivotedCholesky;
use krylov::slq::{InvQuadLogdetParams, Probes, SlqEstimate, inv_quad_logdet};
use krylov::{Block, LinearOperator, Scalar};
use ntk_ops::{NtkOperator, TensorBlock};

use crate::dense::{DenseGp, DenseReport, Precision, TestKernels};
use crate::error::GpError;
use crate::exact::{ExactGp, Hyper, Prediction};
use crate::fit::{FitParams, Param, fit_hyper};
use crate::optimize::{MaximizeParams, Maximum};
use crate::spectral::{LmlWithGradient, SpectralLml};
use crate::strategy::{Choice, CostAssumptions, ProblemSize, Strategy, choose};
use crate::weight_space::WeightSpaceGp;

/// The prior mean $\mu(x)$.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MeanFunction {
    /// $\mu = 0$.
    Zero,
    /// $\mu = c$.
    Constant(Param),
    /// $\mu = f(x;\theta)$.
    Network,
}

/// How a task's GP is built: defaults and builder methods, checked by
/// [`check`](Self::check) and fitted on a network and data by [`fit`](Self::fit) (the
/// linfa shape: parameters, then `fit`, then the model).
///
/// ```
/// use nalgebra::{DMatrix, DVector};
/// use ntk_gp::{MeanFunction, NtkGpParams, Param, Strategy};
/// use ntk_ops::{DefaultBackend, MlpConfig};
///
/// let net = MlpConfig::new(&[1, 8, 1]).init::<DefaultBackend>(0, &Default::default())?;
/// let x = DMatrix::from_fn(6, 1, |i, _| i as f64 / 3.0 - 1.0);
/// let y = x.column(0).map(|v| v.sin());
/// let params = NtkGpParams::default()
///     .strategy(Strategy::Dense)
///     .noise(Param::fit_variance(0.05))
///     .mean(MeanFunction::Network);
/// let gp = params.fit(net, &x, &y)?;
/// assert!(gp.hyper().noise > 0.0);
/// // Out of range: a fixed noise must be positive.
/// assert!(NtkGpParams::default().noise(Param::Fixed(0.0)).check().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NtkGpParams {
    /// The inference strategy ([`Strategy::Auto`] chooses by cost).
    pub strategy: Strategy,
    /// Noise variance $\sigma^2$.
    pub noise: Param,
    /// Prior scale $s^2$.
    pub prior_scale: Param,
    /// Prior mean.
    pub mean: MeanFunction,
    /// Memory and caching of the Jacobian products.
    pub jacobian: JacobianParams,
    /// Settings of the marginal-likelihood maximization.
    pub optimizer: MaximizeParams,
    /// Assumptions of the strategy cost model.
    pub costs: CostAssumptions,
    /// Settings of the matrix-free strategy.
    pub matrix_free: MatrixFreeParams,
    /// Precision of the dense strategy's kernel and factorization on a dense chain
    /// ([`Precision::F32`]: half the memory, twice the GEMM rate; every other strategy and
    /// network runs in the backend's precision and refuses `F32`).
    pub precision: Precision,
}

impl Default for NtkGpParams {
    /// Fixed noise 0.01, prior scale 1, zero mean, strategy chosen by cost.
    fn default() -> Self {
        Self {
            strategy: Strategy::Auto,
            noise: Param::Fixed(0.01),
            prior_scale: Param::Fixed(1.0),
            mean: MeanFunction::Zero,
            jacobian: JacobianParams::default(),
            optimizer: MaximizeParams::default(),
            costs: CostAssumptions::default(),
            matrix_free: MatrixFreeParams::default(),
            precision: Precision::F64,
        }
    }
}

impl NtkGpParams {
    /// The inference strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The noise variance $\sigma^2$, fixed or fitted.
    pub fn noise(mut self, noise: Param) -> Self {
        self.noise = noise;
        self
    }

    /// The prior scale $s^2$, fixed or fitted.
    pub fn prior_scale(mut self, prior_scale: Param) -> Self {
        self.prior_scale = prior_scale;
        self
    }

    /// The prior mean.
    pub fn mean(mut self, mean: MeanFunction) -> Self {
        self.mean = mean;
        self
    }

    /// Memory and caching of the Jacobian products.
    pub fn jacobian(mut self, jacobian: JacobianParams) -> Self {
        self.jacobian = jacobian;
        self
    }

    /// The marginal-likelihood maximization.
    pub fn optimizer(mut self, optimizer: MaximizeParams) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// The cost model's assumptions (for [`Strategy::Auto`]).
    pub fn costs(mut self, costs: CostAssumptions) -> Self {
        self.costs = costs;
        self
    }

    /// The matrix-free strategies' parameters.
    pub fn matrix_free(mut self, matrix_free: MatrixFreeParams) -> Self {
        self.matrix_free = matrix_free;
        self
    }

    /// The dense strategy's precision.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Checks every parameter's range (what does not depend on the network or the data):
    /// variances positive and finite, boxes ordered around their start, the matrix-free
    /// tolerances positive, `f32` only with `Dense` or `Auto`.
    pub fn check(&self) -> Result<(), GpError> {
        check_param("noise", &self.noise, true)?;
        check_param("prior_scale", &self.prior_scale, true)?;
        if let MeanFunction::Constant(c) = &self.mean {
            check_param("mean", c, false)?;
        }
        if self.precision == Precision::F32
            && !matches!(self.strategy, Strategy::Dense | Strategy::Auto)
        {
            return Err(GpError::NotSupported {
                strategy: self.strategy,
                what: "f32 precision",
                instead: "f32 runs the Dense strategy; use Precision::F64 (or an f32 backend)",
            });
        }
        self.matrix_free.check()?;
        let invalid = |name, reason: String| Err(GpError::InvalidParam { name, reason });
        if self.jacobian.memory_budget == 0 {
            return invalid("jacobian.memory_budget", "must be positive".into());
        }
        let budgets = [self.costs.memory_budget, self.costs.jacobian_budget];
        if budgets.iter().any(|b| b.is_nan() || *b <= 0.0) {
            return invalid(
                "costs",
                format!(
                    "memory budgets must be positive, got {} and {}",
                    self.costs.memory_budget, self.costs.jacobian_budget
                ),
            );
        }
        Ok(())
    }

    /// Checks the parameters, then linearizes `network` at `x` and conditions on `y`
    /// ([`NtkGp::new`]).
    pub fn fit<B: Backend>(
        &self,
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
    ) -> Result<NtkGp<B>, GpError>
    where
        B::FloatElem: krylov::Scalar,
    {
        self.check()?;
        NtkGp::new(network, x, y, *self)
    }

    /// [`fit`](Self::fit) and predict at `x_test` in one call ([`NtkGp::fit_predict`]).
    pub fn fit_predict<B: Backend>(
        &self,
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        x_test: &DMatrix<f64>,
    ) -> Result<(NtkGp<B>, Prediction), GpError>
    where
        B::FloatElem: krylov::Scalar,
    {
        self.check()?;
        NtkGp::fit_predict(network, x, y, x_test, *self)
    }
}

impl NtkGpParams {
    /// Checks the parameters, then adapts `network` to every task of `tasks` (name, inputs,
    /// targets) as one [`MultiTask`](crate::MultiTask) hierarchy with these parameters as
    /// its defaults.
    pub fn fit_tasks<B: Backend>(
        &self,
        network: impl Into<Network<B>>,
        tasks: impl IntoIterator<Item = (String, DMatrix<f64>, DVector<f64>)>,
    ) -> Result<crate::MultiTask<B>, GpError>
    where
        B::FloatElem: krylov::Scalar,
    {
        self.check()?;
        let mut hierarchy = crate::MultiTask::new(network, *self);
        for (name, x, y) in tasks {
            hierarchy.add_task(name, x, y, None)?;
        }
        Ok(hierarchy)
    }
}

/// A [`Param`]'s range: finite; a variance's value or box positive; a box ordered around its
/// start.
pub(crate) fn check_param(name: &'static str, p: &Param, variance: bool) -> Result<(), GpError> {
    let bad = |reason: String| Err(GpError::InvalidParam { name, reason });
    match *p {
        Param::Fixed(v) if !v.is_finite() || (variance && v <= 0.0) => bad(format!(
            "fixed at {v}, must be finite{}",
            if variance { " and positive" } else { "" }
        )),
        Param::Fit { init, lower, upper }
            if !(lower <= init
                && init <= upper
                && lower < upper
                && upper.is_finite()
                && lower.is_finite())
                || (variance && lower <= 0.0) =>
        {
            bad(format!(
                "fitted from {init} in [{lower}, {upper}]: need finite lower ≤ init ≤ upper, \
                 lower < upper{}",
                if variance { ", lower > 0" } else { "" }
            ))
        }
        _ => Ok(()),
    }
}

/// Settings of the matrix-free strategy (preconditioned CG and stochastic Lanczos quadrature).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatrixFreeParams {
    /// Relative CG tolerance of the training solve and of the variance solves.
    pub cg_tolerance: f64,
    /// Maximum CG iterations.
    pub max_iters: usize,
    /// SLQ probes for $\log\lvert A\rvert$.
    pub probes: usize,
    /// Rank of the partial pivoted Cholesky preconditioner (0: none).
    pub precond_rank: usize,
    /// Seed of the probes.
    pub seed: u64,
    /// Predictive variances from a LOVE cache (Pleiss et al. 2018) of this many Lanczos
    /// steps instead of one CG solve per test point; `None`: exact CG variances.
    pub love_rank: Option<usize>,
    /// Most Adam steps of the matrix-free hyper-parameter fit (stochastic-trace gradients).
    pub fit_steps: usize,
    /// The fit has converged when no free log-variance moves by more than this in a step
    /// (a relative change of the variance). A free constant mean is not stepped: it is
    /// profiled out exactly at every step.
    pub fit_tolerance: f64,
    /// Adam learning rate of that fit (on log-variances and the constant mean).
    pub fit_lr: f64,
    /// Use the $n$ unit vectors as trace probes (exact gradients, $n$ extra columns) instead of
    /// `probes` Rademacher vectors. For small problems and tests.
    pub exact_trace: bool,
    /// Largest $n$ for which a CG that does not converge falls back to `Dense` (and says so
    /// in [`NtkGp::choice`]); above it the non-convergence is an error carrying the residuals.
    pub dense_fallback_max_n: usize,
}

impl MatrixFreeParams {
    /// CG to `cg_tolerance` (relative) within `max_iters`.
    pub fn cg(&self) -> CgParams {
        CgParams {
            rel_tolerance: self.cg_tolerance,
            max_iters: self.max_iters,
            ..CgParams::default()
        }
    }

    /// CG as [`cg`](Self::cg) and SLQ over `probes` Rademacher probes seeded by `seed`.
    pub fn slq(&self) -> InvQuadLogdetParams {
        InvQuadLogdetParams {
            cg: self.cg(),
            probes: self.probes,
            distribution: Probes::Rademacher,
            seed: self.seed,
        }
    }

    /// Checks the ranges: tolerances and the learning rate positive and finite, at least one
    /// CG iteration, probe and fit step, a LOVE rank of at least 1.
    pub fn check(&self) -> Result<(), GpError> {
        let positive = [
            ("matrix_free.cg_tolerance", self.cg_tolerance),
            ("matrix_free.fit_tolerance", self.fit_tolerance),
            ("matrix_free.fit_lr", self.fit_lr),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(GpError::InvalidParam {
                name,
                reason: format!("{v} must be positive and finite"),
            });
        }
        let counts = [
            ("matrix_free.max_iters", self.max_iters),
            ("matrix_free.probes", self.probes),
            ("matrix_free.fit_steps", self.fit_steps),
            ("matrix_free.love_rank", self.love_rank.unwrap_or(1)),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(GpError::InvalidParam {
                name,
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl Default for MatrixFreeParams {
    fn default() -> Self {
        Self {
            cg_tolerance: 1e-8,
            max_iters: 1000,
            probes: 16,
            precond_rank: 30,
            seed: 0,
            love_rank: None,
            fit_steps: 500,
            fit_tolerance: 1e-5,
            fit_lr: 0.05,
            exact_trace: false,
            dense_fallback_max_n: 5000,
        }
    }
}

/// The matrix-free solve of the training system (either matrix-free strategy).
#[derive(Debug, Clone)]
pub struct MatrixFreeState {
    /// On the host: $\alpha = A^{-1} r$ ($n$) in function space, $w = B^{-1}sJ^\top r$ ($p$)
    /// in parameter space.
    pub(crate) alpha: DVector<f64>,
    /// $r^\top A^{-1} r$ (in function space, whichever system was solved).
    pub(crate) inv_quad: f64,
    /// The residual $r = y - \mu(X) - c$ (LOVE starts its Lanczos run there).
    pub(crate) residual: DVector<f64>,
    /// The SLQ estimate of $\log\lvert A\rvert$ with its standard error.
    pub logdet: krylov::slq::SlqEstimate,
    /// How CG ended.
    pub info: krylov::cg::CgInfo,
    /// Rank of the preconditioner actually built.
    pub precond_rank: usize,
}

/// The conditioned posterior of one strategy.
#[derive(Debug, Clone)]
enum Posterior<B: Backend> {
    /// Dense on the structured kernel of a dense chain, in f64 or f32.
    Structured(Structured),
    Function(ExactGp),
    Parameter(WeightSpaceGp),
    MatrixFree(MatrixFreeState),
    /// The parameter-space solve with its Nyström sketch (for the variance solves).
    ParameterFree(MatrixFreeState, crate::param_free::Sketch<B>),
}

/// The dense posterior on structured factors, in either precision.
#[derive(Debug, Clone)]
enum Structured {
    F64(DenseGp<f64>),
    F32(DenseGp<f32>),
}

/// Runs `$body` with `$g` bound to the [`DenseGp`] of either precision.
macro_rules! on_dense {
    ($s:expr, $g:ident => $body:expr) => {
        match $s {
            Structured::F64($g) => $body,
            Structured::F32($g) => $body,
        }
    };
}

/// A finite-NTK GP conditioned on one task (scalar-output networks, or a (mean, scale)
/// head for heteroscedastic regression).
#[derive(Debug, Clone)]
pub struct NtkGp<B: Backend> {
    /// The network: any [`Network`] (MLP, CNN, residual blocks).
    network: Network<B>,
    /// The training inputs.
    x: DMatrix<f64>,
    /// The Jacobian at the training inputs, built when a strategy or a query needs it (the
    /// dense strategy on a dense chain never does).
    jac: std::sync::OnceLock<Jacobian<B>>,
    targets: DVector<f64>,
    config: NtkGpParams,
    hyper: Hyper,
    constant: f64,
    posterior: Posterior<B>,
    /// The training inputs' structured NTK factors on the host (f64), kept by the dense
    /// strategy for its cross-kernels when the network is a dense chain (otherwise the
    /// kernels come from the Jacobian's products).
    host: Option<HostNtk<f64>>,
    choice: Choice,
    fit_report: Option<Maximum>,
    /// The LOVE cache $S S^\top \approx A^{-1}$, built on the first prediction that needs it
    /// and dropped whenever the hyper-parameters change.
    love: std::sync::OnceLock<krylov::root::RootDecomposition<TensorBlock<B>>>,
}

impl<B: Backend> NtkGp<B>
where
    B::FloatElem: krylov::Scalar,
{
    /// Linearizes `network` (any [`Network`], or an `Mlp`) at the task's inputs `x`
    /// ($n\times d$, one flattened point per row), fits what `config` leaves free, and
    /// conditions on the targets `y`.
    pub fn new(
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        config: NtkGpParams,
    ) -> Result<Self, GpError> {
        Ok(Self::build(network.into(), x, y, config, None)?.0)
    }

    /// [`new`](Self::new) and [`predict`](Self::predict) at `x_test` in one call. The dense
    /// strategy on a dense chain forms the test points' kernels while the factorization runs
    /// (the same numbers as the two calls, sooner).
    pub fn fit_predict(
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        x_test: &DMatrix<f64>,
        config: NtkGpParams,
    ) -> Result<(Self, Prediction), GpError> {
        let (gp, kernels) = Self::build(network.into(), x, y, config, Some(x_test))?;
        let pred = match kernels {
            Some(k) => {
                let prior = gp.prior_at(x_test)?;
                match (&gp.posterior, k) {
                    (Posterior::Structured(Structured::F64(g)), Kernels::F64(k)) => {
                        g.predict(k, prior)?
                    }
                    (Posterior::Structured(Structured::F32(g)), Kernels::F32(k)) => {
                        g.predict(k, prior)?
                    }
                    _ => gp.predict(x_test)?,
                }
            }
            None => gp.predict(x_test)?,
        };
        Ok((gp, pred))
    }

    fn build(
        network: Network<B>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        config: NtkGpParams,
        x_test: Option<&DMatrix<f64>>,
    ) -> Result<(Self, Option<Kernels>), GpError> {
        let heteroscedastic = network.has_heteroscedastic_head();
        if network.n_outputs() != 1 && !heteroscedastic {
            return Err(GpError::Shape {
                what: "network outputs (the regression GP needs a scalar output or a (mean, scale) head)",
                expected: 1,
                got: network.n_outputs(),
            });
        }
        if x.nrows() != y.len() {
            return Err(GpError::Shape {
                what: "input rows vs targets",
                expected: y.len(),
                got: x.nrows(),
            });
        }
        if y.is_empty() {
            return Err(GpError::EmptyTask);
        }
        crate::error::check_finite("targets", y.iter())?;
        let device = network.device();
        let x_dev = convert::from_dmatrix_f64(x, &device);
        network.check_inputs(&x_dev, "X")?;
        let jac_cell = std::sync::OnceLock::new();
        let jac = || jacobian_in(&jac_cell, &network, x, config.jacobian);
        let o = network.n_outputs();
        let size = ProblemSize::network(&network, y.len(), 0).ok_or(GpError::Shape {
            what: "parameter count (it overflows)",
            expected: usize::MAX,
            got: usize::MAX,
        })?;
        let mut choice = choose(&size, &config.costs);
        if config.strategy != Strategy::Auto {
            choice.reason = format!("{:?} as asked ({})", config.strategy, choice.reason);
            choice.strategy = config.strategy;
        }
        let outputs = (config.mean == MeanFunction::Network || heteroscedastic)
            .then(|| convert::to_dmatrix_f64(network.forward(x_dev)));
        let base_mean = match (&outputs, config.mean) {
            (Some(f), MeanFunction::Network) => f.column(0).into_owned(),
            _ => DVector::zeros(y.len()),
        };
        // A (mean, scale) head: the GP is on the mean output, its noise shape the squared scale.
        let noise_shape = outputs
            .as_ref()
            .filter(|_| heteroscedastic)
            .map(|f| f.column(1).map(|s| s * s));
        let structured = noise_shape.is_none() && network.is_dense_chain();
        if config.precision == Precision::F32
            && !(structured && matches!(choice.strategy, Strategy::Dense | Strategy::Auto))
        {
            return Err(GpError::NotSupported {
                strategy: choice.strategy,
                what: "f32 precision on this network",
                instead: "f32 runs the Dense strategy on a dense chain without a heteroscedastic \
                          head; use Precision::F64 (or an f32 backend)",
            });
        }
        let r0 = y - &base_mean;
        let spec = FitParams {
            noise: config.noise,
            prior_scale: config.prior_scale,
            constant_mean: match config.mean {
                MeanFunction::Constant(p) => Some(p),
                _ => None,
            },
        };
        let mut host = None;
        let mut test_kernels = None;
        let (hyper, constant, fit_report, posterior) = match choice.strategy {
            Strategy::Dense | Strategy::Auto if structured => {
                // The fit needs K in f64 (one eigen-decomposition); an f64 solve reuses it.
                let (fixed, fitted) = if spec.has_free() {
                    let h = structured_factors::<f64, B>(&network, x)?;
                    let k = h.symmetric()?;
                    let spectral = SpectralLml::from_kernel(&k, &r0)?;
                    let fitted =
                        fit_hyper(|h, c| Ok(spectral.evaluate(h, c)), &spec, config.optimizer)?;
                    (fitted, Some((h, k)))
                } else {
                    let fixed = fit_hyper(
                        |_, _| unreachable!("nothing is free"),
                        &spec,
                        config.optimizer,
                    )?;
                    (fixed, None)
                };
                let (hyper, c, report) = fixed;
                let r = r0.add_scalar(-c);
                // Overlap the test kernels with the factorization when one chunk holds them.
                let overlap = x_test.filter(|xt| {
                    xt.nrows() <= test_chunk_rows(config.jacobian.memory_budget, 8 * 3 * y.len())
                });
                let t0 = std::time::Instant::now();
                let structured = match config.precision {
                    Precision::F64 => {
                        let (h, k) = match fitted {
                            Some((h, k)) => (h, Some(k)),
                            None => (structured_factors::<f64, B>(&network, x)?, None),
                        };
                        let factors_s = t0.elapsed().as_secs_f64();
                        let t = overlap
                            .map(|xt| structured_factors::<f64, B>(&network, xt))
                            .transpose()?;
                        let (gp, k) = DenseGp::new(h, k, &r, hyper, t.as_ref(), factors_s)?;
                        test_kernels = k.map(Kernels::F64);
                        Structured::F64(gp)
                    }
                    Precision::F32 => {
                        let h = structured_factors::<f32, B>(&network, x)?;
                        let factors_s = t0.elapsed().as_secs_f64();
                        let t = overlap
                            .map(|xt| structured_factors::<f32, B>(&network, xt))
                            .transpose()?;
                        let (gp, k) = DenseGp::new(h, None, &r, hyper, t.as_ref(), factors_s)?;
                        test_kernels = k.map(Kernels::F32);
                        Structured::F32(gp)
                    }
                };
                (hyper, c, report, Posterior::Structured(structured))
            }
            Strategy::Dense | Strategy::Auto => {
                let (k, h) = train_kernel(&network, jac, x)?;
                let k = mean_block(k, o, o);
                host = h;
                // One eigen-decomposition of K makes each optimizer step O(n); skipped when
                // nothing is free. Heteroscedastic noise is not isotropic: one Cholesky a step.
                let (hyper, c, report) = if let Some(d) = &noise_shape {
                    fit_hyper(
                        |h, c| {
                            let gp = ExactGp::heteroscedastic(
                                k.clone(),
                                r0.add_scalar(-c),
                                h,
                                d.clone(),
                            )?;
                            let g = gp.gradient();
                            Ok(LmlWithGradient {
                                value: gp.log_marginal_likelihood(),
                                d_noise: g.noise,
                                d_prior_scale: g.prior_scale,
                                d_constant_mean: g.constant_mean,
                            })
                        },
                        &spec,
                        config.optimizer,
                    )?
                } else if spec.has_free() {
                    let spectral = SpectralLml::from_kernel(&k, &r0)?;
                    fit_hyper(|h, c| Ok(spectral.evaluate(h, c)), &spec, config.optimizer)?
                } else {
                    fit_hyper(
                        |_, _| unreachable!("nothing is free"),
                        &spec,
                        config.optimizer,
                    )?
                };
                let gp = match &noise_shape {
                    Some(d) => ExactGp::heteroscedastic(k, r0.add_scalar(-c), hyper, d.clone())?,
                    None => ExactGp::new(k, r0.add_scalar(-c), hyper)?,
                };
                (hyper, c, report, Posterior::Function(gp))
            }
            Strategy::ParameterSpace => {
                if noise_shape.is_some() {
                    return Err(Self::hetero_unsupported(Strategy::ParameterSpace));
                }
                let j = convert::to_dmatrix_f64(jac()?.jacobian()?);
                // The eigen-decomposition of the smaller of JJᵀ (n×n) and JᵀJ (p×p).
                let (hyper, c, report) = if spec.has_free() {
                    let spectral = if j.nrows() < j.ncols() {
                        SpectralLml::from_kernel(&(&j * j.transpose()), &r0)?
                    } else {
                        SpectralLml::from_features(&j, &r0)?
                    };
                    fit_hyper(|h, c| Ok(spectral.evaluate(h, c)), &spec, config.optimizer)?
                } else {
                    fit_hyper(
                        |_, _| unreachable!("nothing is free"),
                        &spec,
                        config.optimizer,
                    )?
                };
                let gp = WeightSpaceGp::new(&j, &r0.add_scalar(-c), hyper)?;
                (hyper, c, report, Posterior::Parameter(gp))
            }
            Strategy::MatrixFree => {
                if noise_shape.is_some() {
                    return Err(Self::hetero_unsupported(Strategy::MatrixFree));
                }
                let (hyper, c, report) = if spec.has_free() {
                    fit_matrix_free(
                        jac()?,
                        &r0,
                        &spec,
                        &config.matrix_free,
                        config.optimizer.time_limit,
                    )?
                } else {
                    fixed_hyper(&spec)?
                };
                let r = r0.add_scalar(-c);
                match matrix_free_solve(jac()?, &r, hyper, &config.matrix_free) {
                    Ok(state) => {
                        let report = report.map(|m| {
                            slq_report(m, state.inv_quad, &state.logdet, state.residual.len())
                        });
                        (hyper, c, report, Posterior::MatrixFree(state))
                    }
                    Err(GpError::Krylov(krylov::KrylovError::NoConvergence {
                        iterations,
                        max_residual,
                        ..
                    })) if y.len() <= config.matrix_free.dense_fallback_max_n => {
                        choice.strategy = Strategy::Dense;
                        choice.reason = format!(
                            "Dense as a fallback: CG did not converge in {iterations} iterations \
                             (residual {max_residual:.2e}) at n = {}",
                            y.len()
                        );
                        let (k, h) = train_kernel(&network, jac, x)?;
                        host = h;
                        (
                            hyper,
                            c,
                            None,
                            Posterior::Function(ExactGp::new(k, r, hyper)?),
                        )
                    }
                    Err(e) => return Err(e),
                }
            }
            Strategy::MatrixFreeParameterSpace => {
                if noise_shape.is_some() {
                    return Err(Self::hetero_unsupported(Strategy::MatrixFreeParameterSpace));
                }
                let settings = &config.matrix_free;
                let jac = jac()?;
                let sketch =
                    crate::param_free::Sketch::new(jac, settings.precond_rank, settings.seed)?;
                let (hyper, c, report) = if spec.has_free() {
                    crate::param_free::fit(
                        jac,
                        &sketch,
                        &r0,
                        &spec,
                        settings,
                        config.optimizer.time_limit,
                    )?
                } else {
                    fixed_hyper(&spec)?
                };
                let state =
                    crate::param_free::solve(jac, &sketch, &r0.add_scalar(-c), hyper, settings)?;
                let report = report
                    .map(|m| slq_report(m, state.inv_quad, &state.logdet, state.residual.len()));
                (hyper, c, report, Posterior::ParameterFree(state, sketch))
            }
        };
        Ok((
            Self {
                network,
                x: x.clone(),
                jac: jac_cell,
                targets: y.clone(),
                config,
                hyper,
                constant,
                posterior,
                host,
                choice,
                fit_report,
                love: std::sync::OnceLock::new(),
            },
            test_kernels,
        ))
    }

    /// The Jacobian at the training inputs (built on first use).
    fn jac(&self) -> Result<&Jacobian<B>, GpError> {
        jacobian_in(&self.jac, &self.network, &self.x, self.config.jacobian)
    }

    /// How the dense solve went (its precision, seconds and flops), when the dense strategy
    /// ran on a dense chain's structured kernel.
    pub fn dense_report(&self) -> Option<&DenseReport> {
        match &self.posterior {
            Posterior::Structured(s) => Some(on_dense!(s, g => g.report())),
            _ => None,
        }
    }

    /// The observation-noise variance at the rows of `x_test`: $\sigma^2$, or $\sigma^2 s(x)^2$
    /// for a network with a (mean, scale) head. Add it to the latent variance of
    /// [`predict`](Self::predict) for the predictive variance of a new observation.
    pub fn noise_at(&self, x_test: &DMatrix<f64>) -> Result<DVector<f64>, GpError> {
        let m = x_test.nrows();
        if !self.network.has_heteroscedastic_head() {
            return Ok(DVector::from_element(m, self.hyper.noise));
        }
        let xt = convert::from_dmatrix_f64(x_test, &self.network.device());
        self.network.check_inputs(&xt, "test inputs")?;
        let f = self.network.forward(xt);
        let f = convert::to_dmatrix_f64(f);
        Ok(f.column(1).map(|s| self.hyper.noise * s * s))
    }

    /// The network the GP linearizes.
    pub fn network(&self) -> &Network<B> {
        &self.network
    }

    /// The parameters this GP was built with.
    pub fn params(&self) -> &NtkGpParams {
        &self.config
    }

    /// The strategy used and why.
    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    /// The noise and prior scale in use (fitted or fixed).
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// The constant added to the prior mean (0 unless fitted or fixed by a `Constant` mean).
    pub fn constant_mean(&self) -> f64 {
        self.constant
    }

    /// How the hyper-parameter fit went (`None` when nothing was free).
    pub fn fit_report(&self) -> Option<&Maximum> {
        self.fit_report.as_ref()
    }

    /// The matrix-free solve (CG report, SLQ log-determinant with its standard error), when
    /// that strategy was used.
    pub fn matrix_free_state(&self) -> Option<&MatrixFreeState> {
        match &self.posterior {
            Posterior::MatrixFree(st) | Posterior::ParameterFree(st, _) => Some(st),
            _ => None,
        }
    }

    /// Number of training points $n$.
    pub fn n_train(&self) -> usize {
        self.x.nrows()
    }

    /// Number of network parameters $p$.
    pub fn n_params(&self) -> usize {
        self.network.n_params()
    }

    /// $\log p(y)$ at the hyper-parameters in use.
    pub fn log_marginal_likelihood(&self) -> f64 {
        match &self.posterior {
            Posterior::Structured(s) => on_dense!(s, g => g.log_marginal_likelihood()),
            Posterior::Function(gp) => gp.log_marginal_likelihood(),
            Posterior::Parameter(gp) => gp.log_marginal_likelihood(),
            Posterior::MatrixFree(st) | Posterior::ParameterFree(st, _) => {
                -0.5 * st.inv_quad
                    - 0.5 * st.logdet.value
                    - 0.5 * st.residual.len() as f64 * (2.0 * std::f64::consts::PI).ln()
            }
        }
    }

    /// $\log\lvert A\rvert$ of $A = s^2K + \sigma^2 D$ at the hyper-parameters in use (the SLQ
    /// estimate for the matrix-free strategies).
    pub fn log_det(&self) -> f64 {
        match &self.posterior {
            Posterior::Structured(s) => on_dense!(s, g => g.log_det()),
            Posterior::Function(gp) => gp.log_det(),
            Posterior::Parameter(gp) => gp.log_det(),
            Posterior::MatrixFree(st) | Posterior::ParameterFree(st, _) => st.logdet.value,
        }
    }

    /// $r^\top A^{-1} r$ for the residual $r = y - \mu(X) - c$.
    pub fn inv_quad(&self) -> f64 {
        match &self.posterior {
            Posterior::Structured(s) => on_dense!(s, g => g.inv_quad()),
            Posterior::Function(gp) => gp.inv_quad(),
            Posterior::Parameter(gp) => gp.inv_quad(),
            Posterior::MatrixFree(st) | Posterior::ParameterFree(st, _) => st.inv_quad,
        }
    }

    /// The LOVE cache $S$ ($n\times k$, $SS^\top \approx A^{-1}$) from `rank` Lanczos steps on
    /// $A$ started at the training residual, built once and reused by every prediction.
    fn love_cache(
        &self,
        rank: usize,
    ) -> Result<&krylov::root::RootDecomposition<TensorBlock<B>>, GpError> {
        if let Some(cache) = self.love.get() {
            return Ok(cache);
        }
        let Posterior::MatrixFree(st) = &self.posterior else {
            unreachable!("LOVE serves the matrix-free strategy only")
        };
        let a = system(self.jac()?, self.hyper)?;
        let start = TensorBlock::new(convert::from_dmatrix_f64(
            &DMatrix::from_column_slice(st.residual.len(), 1, st.residual.as_slice()),
            &self.network.device(),
        ));
        let params = krylov::lanczos::LanczosParams {
            steps: rank.min(st.residual.len()),
            ..Default::default()
        };
        let root = krylov::root::inv_root_decomposition(&a, &start, &params)?;
        Ok(self.love.get_or_init(|| root))
    }

    /// Conditions again with new variances (same data and mean), dropping every cache
    /// that depended on the old ones (the Cholesky factor, the CG solve, the LOVE root).
    pub fn set_hyper(&mut self, hyper: Hyper) -> Result<(), GpError> {
        let config = NtkGpParams {
            noise: Param::Fixed(hyper.noise),
            prior_scale: Param::Fixed(hyper.prior_scale),
            mean: match self.config.mean {
                MeanFunction::Constant(_) => MeanFunction::Constant(Param::Fixed(self.constant)),
                other => other,
            },
            strategy: self.choice.strategy,
            ..self.config
        };
        let x = self.x.clone();
        let y = self.targets.clone();
        *self = Self::new(self.network.clone(), &x, &y, config)?;
        Ok(())
    }

    /// The prior mean $\mu(X_*) + c$ at the test inputs (checked for shape and NaN/Inf).
    fn prior_at(&self, x_test: &DMatrix<f64>) -> Result<DVector<f64>, GpError> {
        let xt = convert::from_dmatrix_f64(x_test, &self.network.device());
        self.network.check_inputs(&xt, "test inputs")?;
        let mut prior = match self.config.mean {
            MeanFunction::Network => convert::to_dmatrix_f64(self.network.forward(xt))
                .column(0)
                .into_owned(),
            _ => DVector::zeros(x_test.nrows()),
        };
        prior.add_scalar_mut(self.constant);
        Ok(prior)
    }

    /// The Jacobian at the test inputs.
    fn test_jacobian(&self, x_test: &DMatrix<f64>) -> Result<Jacobian<B>, GpError> {
        Ok(Jacobian::new(
            self.network.clone(),
            convert::from_dmatrix_f64(x_test, &self.network.device()),
            self.config.jacobian,
        )?)
    }

    /// The training and test points' structured factors, when the dense strategy kept them.
    fn host_test(&self, x_test: &DMatrix<f64>) -> Result<Option<HostPair<'_>>, GpError> {
        let Some(h) = &self.host else {
            return Ok(None);
        };
        Ok(HostNtk::<f64>::of_network(&self.network, x_test)?.map(|ht| (h, ht)))
    }

    /// Predictive mean and full latent covariance at the rows of `x_test` (for small test
    /// sets: the covariance is $m\times m$). Dense and parameter-space strategies only.
    pub fn predict_cov(
        &self,
        x_test: &DMatrix<f64>,
    ) -> Result<(DVector<f64>, DMatrix<f64>), GpError> {
        let prior = self.prior_at(x_test)?;
        let o = self.network.n_outputs();
        match &self.posterior {
            Posterior::Structured(s) => on_dense!(s, g => {
                let ht = structured_factors(&self.network, x_test)?;
                g.predict_cov(g.test_kernels(&ht)?.0, ht.cross(&ht)?, prior)
            }),
            Posterior::Function(gp) => {
                let (cross, test) = match self.host_test(x_test)? {
                    Some((h, ht)) => (h.cross(&ht)?, ht.cross(&ht)?),
                    None => {
                        let jt = self.test_jacobian(x_test)?;
                        (
                            convert::to_dmatrix_f64(self.jac()?.ntk_matrix(&jt)?),
                            convert::to_dmatrix_f64(jt.ntk_matrix(&jt)?),
                        )
                    }
                };
                gp.predict_cov(&mean_block(cross, o, o), &mean_block(test, o, o), &prior)
            }
            Posterior::Parameter(gp) => {
                let j = convert::to_dmatrix_f64(self.test_jacobian(x_test)?.jacobian()?);
                gp.predict_cov(&j, &prior)
            }
            Posterior::MatrixFree(_) | Posterior::ParameterFree(..) => Err(GpError::NotSupported {
                strategy: self.choice.strategy,
                what: "the full predictive covariance",
                instead: "use Dense or ParameterSpace, or predict() for variances",
            }),
        }
    }

    /// Predictive mean and latent variance at the rows of `x_test`.
    ///
    /// Test points are taken in chunks whose cross-kernel, test Jacobian or CG block holds
    /// at most a quarter of the Jacobian's memory budget, so memory does not grow with the
    /// number of test points (the results do not depend on the chunking: each test point's
    /// prediction is its own).
    pub fn predict(&self, x_test: &DMatrix<f64>) -> Result<Prediction, GpError> {
        let m = x_test.nrows();
        let chunk = self.test_chunk_rows().clamp(1, m.max(1));
        if m <= chunk {
            return self.predict_rows(x_test);
        }
        let (mut mean, mut var, mut clamped) = (Vec::with_capacity(m), Vec::with_capacity(m), 0);
        for start in (0..m).step_by(chunk) {
            let rows = x_test.rows(start, chunk.min(m - start)).into_owned();
            let p = self.predict_rows(&rows)?;
            mean.extend(p.mean.iter());
            var.extend(p.var.iter());
            clamped += p.clamped;
        }
        Ok(Prediction {
            mean: DVector::from_vec(mean),
            var: DVector::from_vec(var),
            clamped,
        })
    }

    /// The error for a heteroscedastic head under `strategy`.
    fn hetero_unsupported(strategy: Strategy) -> GpError {
        GpError::NotSupported {
            strategy,
            what: "a heteroscedastic (mean, scale) head",
            instead: "use Dense",
        }
    }

    /// Test points per prediction chunk: a quarter of the Jacobian's memory budget over the
    /// bytes one test point costs (a cross-kernel column, a Jacobian row, or a CG column).
    fn test_chunk_rows(&self) -> usize {
        let n = self.n_train().max(1);
        let per_point = 8 * match &self.posterior {
            Posterior::Structured(_) | Posterior::Function(_) => 3 * n,
            Posterior::Parameter(_) => 3 * self.n_params().max(1),
            Posterior::MatrixFree(_) => 8 * n,
            Posterior::ParameterFree(..) => 8 * self.n_params().max(1),
        };
        test_chunk_rows(self.config.jacobian.memory_budget, per_point)
    }

    fn predict_rows(&self, x_test: &DMatrix<f64>) -> Result<Prediction, GpError> {
        let prior = self.prior_at(x_test)?;
        let m = x_test.nrows();
        let o = self.network.n_outputs();
        match &self.posterior {
            Posterior::Structured(s) => on_dense!(s, g => {
                let ht = structured_factors(&self.network, x_test)?;
                g.predict(g.test_kernels(&ht)?, prior)
            }),
            Posterior::Function(gp) => {
                let (cross, diag) = match self.host_test(x_test)? {
                    Some((h, ht)) => (h.cross(&ht)?, ht.diagonal()),
                    None => {
                        let jt = self.test_jacobian(x_test)?;
                        (
                            convert::to_dmatrix_f64(self.jac()?.ntk_matrix(&jt)?),
                            convert::to_vec_f64(jt.ntk_diagonal()?),
                        )
                    }
                };
                let cross = mean_block(cross, o, o);
                let diag = DVector::from_vec(diag);
                let diag = DVector::from_iterator(m, diag.iter().step_by(o).copied());
                gp.predict(&cross, &diag, &prior)
            }
            Posterior::Parameter(gp) => {
                let j = convert::to_dmatrix_f64(self.test_jacobian(x_test)?.jacobian()?);
                gp.predict(&j, &prior)
            }
            Posterior::ParameterFree(st, sketch) => crate::param_free::predict(
                self.jac()?,
                &self.test_jacobian(x_test)?,
                st,
                sketch,
                self.hyper,
                &self.config.matrix_free,
                prior,
            ),
            Posterior::MatrixFree(st) => {
                // Cross-kernel by structured products; the variance reduction
                // s⁴ k*ᵀ A⁻¹ k* from one CG solve per test point, or from the LOVE cache.
                let jt = self.test_jacobian(x_test)?;
                let cross = self.jac()?.ntk_matrix(&jt)?;
                let s2 = self.hyper.prior_scale;
                let cross_host = convert::to_dmatrix_f64(cross.clone());
                let mean = prior + cross_host.tr_mul(&st.alpha) * s2;
                let rhs = TensorBlock::new(cross.mul_scalar(s2));
                let settings = &self.config.matrix_free;
                let reduction: Vec<f64> = match settings.love_rank {
                    Some(rank) => self.love_cache(rank)?.quad_diag(&rhs),
                    None => {
                        let a = system(self.jac()?, self.hyper)?;
                        let params = settings.cg();
                        let precond = PivotedCholesky::new(
                            &a.inner,
                            self.hyper.noise,
                            settings.precond_rank,
                            &rhs,
                        )?;
                        let sol = pcg(&a, &precond, &rhs, None, &params)?.check()?;
                        rhs.col_dots(&sol.solution)
                            .into_iter()
                            .map(|v| v.to_f64())
                            .collect()
                    }
                };
                let diag = convert::to_vec_f64(jt.ntk_diagonal()?);
                let mut clamped = 0;
                let var = DVector::from_iterator(
                    m,
                    (0..m).map(|j| {
                        let v = s2 * diag[j] - reduction[j];
                        if v < 0.0 {
                            clamped += 1;
                            0.0
                        } else {
                            v
                        }
                    }),
                );
                Ok(Prediction { mean, var, clamped })
            }
        }
    }
}

/// Test kernels formed during the factorization, in the dense solve's precision.
enum Kernels {
    F64(TestKernels<f64>),
    F32(TestKernels<f32>),
}

/// The hyper-parameters of `spec` when nothing is free (their fixed or starting values).
fn fixed_hyper(spec: &FitParams) -> Result<(Hyper, f64, Option<Maximum>), GpError> {
    let hyper = Hyper {
        noise: spec.noise.start(),
        prior_scale: spec.prior_scale.start(),
    };
    hyper.check()?;
    Ok((hyper, spec.constant_mean.map_or(0.0, |p| p.start()), None))
}

/// A matrix-free fit's report with its value, the SLQ log marginal likelihood at the fitted
/// point, and the SLQ standard error in its termination.
pub(crate) fn slq_report(m: Maximum, inv_quad: f64, logdet: &SlqEstimate, n: usize) -> Maximum {
    Maximum {
        value: -0.5 * inv_quad
            - 0.5 * logdet.value
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln(),
        termination: format!(
            "{} (SLQ log-determinant ± {:.2e})",
            m.termination, logdet.std_error
        ),
        ..m
    }
}

/// Test points per prediction chunk: a quarter of `budget` over `per_point` bytes.
fn test_chunk_rows(budget: usize, per_point: usize) -> usize {
    (budget / 4 / per_point.max(1)).max(1)
}

/// The Jacobian in `cell`, built at `x` on first use.
fn jacobian_in<'a, B: Backend>(
    cell: &'a std::sync::OnceLock<Jacobian<B>>,
    network: &Network<B>,
    x: &DMatrix<f64>,
    options: JacobianParams,
) -> Result<&'a Jacobian<B>, GpError>
where
    B::FloatElem: krylov::Scalar,
{
    if let Some(j) = cell.get() {
        return Ok(j);
    }
    let j = Jacobian::new(
        network.clone(),
        convert::from_dmatrix_f64(x, &network.device()),
        options,
    )?;
    Ok(cell.get_or_init(|| j))
}

/// The structured factors of a dense chain at `x`, in `T`.
fn structured_factors<T, B: Backend>(
    network: &Network<B>,
    x: &DMatrix<f64>,
) -> Result<HostNtk<T>, GpError>
where
    T: nalgebra::RealField + Copy,
{
    HostNtk::<T>::of_network(network, x)?.ok_or(GpError::NotSupported {
        strategy: Strategy::Dense,
        what: "the structured kernel of a network that is not a dense chain",
        instead: "its kernel comes from the Jacobian's products",
    })
}

/// The training points' structured factors and the test points'.
type HostPair<'a> = (&'a HostNtk<f64>, HostNtk<f64>);

/// The training kernel $K(X, X)$ in f64 on the host, with the structured factors of a dense
/// chain (kept for the cross-kernels) or, for any other network, from the Jacobian's
/// products in its backend's precision.
fn train_kernel<'a, B: Backend>(
    network: &Network<B>,
    jac: impl FnOnce() -> Result<&'a Jacobian<B>, GpError>,
    x: &DMatrix<f64>,
) -> Result<(DMatrix<f64>, Option<HostNtk<f64>>), GpError>
where
    B::FloatElem: krylov::Scalar,
{
    match HostNtk::<f64>::of_network(network, x)? {
        Some(h) => Ok((h.symmetric()?, Some(h))),
        None => {
            let jac = jac()?;
            Ok((convert::to_dmatrix_f64(jac.ntk_matrix(jac)?), None))
        }
    }
}

/// The rows and columns of a kernel matrix that belong to output 0 (the mean), for `o`
/// outputs per point (rows are point-major: row $i o + j$ is point $i$, output $j$).
fn mean_block(k: DMatrix<f64>, row_outputs: usize, col_outputs: usize) -> DMatrix<f64> {
    if row_outputs == 1 && col_outputs == 1 {
        return k;
    }
    let (r, c) = (k.nrows() / row_outputs, k.ncols() / col_outputs);
    DMatrix::from_fn(r, c, |i, j| k[(i * row_outputs, j * col_outputs)])
}

/// $s^2 K + \sigma^2 I$ with $K$ the NTK of an MLP, on device blocks.
type System<B> = Shifted<
    Scaled<NtkOperator<B, Jacobian<B>>, <B as burn::tensor::backend::BackendTypes>::FloatElem>,
    <B as burn::tensor::backend::BackendTypes>::FloatElem,
>;

/// $A = s^2 K + \sigma^2 I$ as an operator on device blocks.
fn system<B: Backend>(jac: &Jacobian<B>, hyper: Hyper) -> Result<System<B>, GpError>
where
    B::FloatElem: krylov::Scalar,
{
    let scaled = Scaled {
        inner: NtkOperator::new(jac.clone()),
        factor: <B::FloatElem as krylov::Scalar>::from_f64(hyper.prior_scale),
    };
    Ok(Shifted::new::<TensorBlock<B>>(
        scaled,
        <B::FloatElem as krylov::Scalar>::from_f64(hyper.noise),
    )?)
}

/// Maximizes the log marginal likelihood over the free parameters of `spec` without forming
/// $K$ (the matrix-free function-space strategy), on one process: [`fit_matrix_free_on`]
/// with the NTK operator of `jac` and the residual on its device.
fn fit_matrix_free<B: Backend>(
    jac: &Jacobian<B>,
    r0: &DVector<f64>,
    spec: &FitParams,
    settings: &MatrixFreeParams,
    time_limit: Option<Duration>,
) -> Result<(Hyper, f64, Option<Maximum>), GpError>
where
    B::FloatElem: krylov::Scalar,
{
    let r0 = TensorBlock::<B>::new(convert::from_dmatrix_f64(
        &DMatrix::from_column_slice(r0.len(), 1, r0.as_slice()),
        &jac.device(),
    ));
    let kernel = NtkOperator::new(jac.clone());
    fit_matrix_free_on(&kernel, &r0, spec, settings, clock(time_limit))
}

/// Whether `limit` has passed since this was called (never, without a limit).
pub(crate) fn clock(limit: Option<Duration>) -> impl FnMut() -> bool {
    let start = Instant::now();
    move || limit.is_some_and(|l| start.elapsed() >= l)
}

/// Maximizes the log marginal likelihood over the free parameters of `spec` with only
/// products by $K$ (`kernel`, unscaled) on blocks like `r0` (the $n \times 1$ residual
/// $y - \mu(X)$, before any constant mean): [`adam_fit`] with gradients from one batched,
/// preconditioned CG solve over $[r, z_1, \dots, z_s]$ per step (Gardner et al. 2018): with
/// $\alpha = A^{-1}r$, $\lVert\alpha\rVert^2$, $r^\top\alpha$, $\mathbf 1^\top\alpha$ and the
/// Hutchinson estimate $\operatorname{tr}A^{-1} \approx \frac1s\sum_i z_i^\top A^{-1}z_i$ with
/// the same probes at every step. The caller reports the SLQ log marginal likelihood at the
/// fitted point as the value.
///
/// Generic over the block, so the same fit runs on one device ([`TensorBlock`]) and over
/// ranks ([`krylov::Sharded`]: every inner product is all-reduced, so every rank takes the
/// same steps).
pub(crate) fn fit_matrix_free_on<Blk: Block, Op: LinearOperator<Blk>>(
    kernel: &Op,
    r0: &Blk,
    spec: &FitParams,
    settings: &MatrixFreeParams,
    expired: impl FnMut() -> bool,
) -> Result<(Hyper, f64, Option<Maximum>), GpError> {
    let n = r0.nrows();
    let host = |m: DMatrix<f64>| r0.from_host_like(&m.map(Blk::Scalar::from_f64));
    let probes = if settings.exact_trace {
        DMatrix::identity(n, n)
    } else {
        krylov::slq::draw_probes(n, settings.probes.max(1), Probes::Rademacher, settings.seed)
    };
    let trace_div = if settings.exact_trace {
        1.0
    } else {
        probes.ncols() as f64
    };
    // The probes go to the device once; each step reads back only the scalars of the
    // gradient: the Krylov vectors stay on the device.
    let n_probes = probes.ncols();
    let probes = host(probes);
    let ones = host(DMatrix::from_element(n, 1, 1.0));
    let c_free = spec.constant_mean.as_ref().and_then(Param::bounds);
    adam_fit(spec, settings, expired, |hyper, c_adam| {
        // A free constant mean is profiled out exactly (generalized least squares): with
        // x_0 = A⁻¹r_0 and x_1 = A⁻¹1 from the same batched solve, the optimum given the
        // variances is c = 1ᵀx_0 / 1ᵀx_1, and α = x_0 − c x_1.
        let mut r = r0.clone();
        if c_free.is_none() {
            r.axpy_cols(&[Blk::Scalar::from_f64(-c_adam)], &ones);
        }
        let a = Shifted::new::<Blk>(
            Scaled {
                inner: kernel,
                factor: Blk::Scalar::from_f64(hyper.prior_scale),
            },
            Blk::Scalar::from_f64(hyper.noise),
        )?;
        let lead = if c_free.is_some() {
            r.hcat(&ones)
        } else {
            r.clone()
        };
        let k0 = lead.ncols();
        let rhs = lead.hcat(&probes);
        let precond = PivotedCholesky::new(&a.inner, hyper.noise, settings.precond_rank, &rhs)?;
        let params = CgParams {
            rel_tolerance: settings.cg_tolerance.max(1e-10),
            ..settings.cg()
        };
        let x = pcg(&a, &precond, &rhs, None, &params)?.solution;
        let tr_inv = x
            .columns(k0, n_probes)
            .col_dots(&probes)
            .into_iter()
            .map(Scalar::to_f64)
            .sum::<f64>()
            / trace_div;
        let dot = |a: &Blk, b: &Blk| a.col_dots(b)[0].to_f64();
        let x0 = x.columns(0, 1);
        Ok(match c_free {
            Some((lo, hi)) => {
                let x1 = x.columns(1, 1);
                let (s0, s1) = (dot(&x0, &ones), dot(&x1, &ones));
                let c = (s0 / s1).clamp(lo, hi);
                LmlPieces {
                    c,
                    alpha_sq: dot(&x0, &x0) - 2.0 * c * dot(&x0, &x1) + c * c * dot(&x1, &x1),
                    alpha_r: dot(&x0, &r) - c * s0 - c * dot(&x1, &r) + c * c * s1,
                    alpha_sum: s0 - c * s1,
                    tr_inv,
                    n,
                }
            }
            None => LmlPieces {
                c: c_adam,
                alpha_sq: dot(&x0, &x0),
                alpha_r: dot(&x0, &r),
                alpha_sum: dot(&x0, &ones),
                tr_inv,
                n,
            },
        })
    })
}

/// What one step of a matrix-free fit measures at $(\sigma^2, s^2, c)$, with $A = s^2K +
/// \sigma^2 I$ and $\alpha = A^{-1}(r_0 - c\mathbf 1)$.
pub(crate) struct LmlPieces {
    /// The constant mean in use (profiled when free).
    pub c: f64,
    /// $\lVert\alpha\rVert^2$.
    pub alpha_sq: f64,
    /// $r^\top\alpha$.
    pub alpha_r: f64,
    /// $\mathbf 1^\top\alpha$.
    pub alpha_sum: f64,
    /// An estimate of $\operatorname{tr}A^{-1}$.
    pub tr_inv: f64,
    /// $n$.
    pub n: usize,
}

impl LmlPieces {
    /// The gradient of $\log p(y)$ in $(\log\sigma^2, \log s^2, c)$:
    /// $\partial/\partial\sigma^2 = \tfrac12(\alpha^\top\alpha - \operatorname{tr}A^{-1})$,
    /// $\partial/\partial s^2 = \tfrac12(\alpha^\top K\alpha - \operatorname{tr}A^{-1}K)$ with
    /// $K\alpha = (r - \sigma^2\alpha)/s^2$ and
    /// $\operatorname{tr}A^{-1}K = (n - \sigma^2\operatorname{tr}A^{-1})/s^2$,
    /// $\partial/\partial c = \mathbf 1^\top\alpha$.
    fn gradient(&self, hyper: Hyper) -> [f64; 3] {
        let (s2n, s2) = (hyper.noise, hyper.prior_scale);
        let aka = (self.alpha_r - s2n * self.alpha_sq) / s2;
        let tr_inv_k = (self.n as f64 - s2n * self.tr_inv) / s2;
        [
            s2n * 0.5 * (self.alpha_sq - self.tr_inv),
            s2 * 0.5 * (aka - tr_inv_k),
            self.alpha_sum,
        ]
    }
}

/// Adam ascent of $\log p(y)$ on the log-variances of `spec` (and its constant mean, unless
/// `pieces` profiles it out), from the [`LmlPieces`] that `pieces` measures at each point.
///
/// Per-coordinate step sizes are halved whenever that coordinate's gradient changes sign
/// (the iterate stepped over the optimum): with the probes fixed the surrogate is
/// deterministic, so the steps shrink onto its optimum and the fit can say it converged.
///
/// `expired` is asked before every step after the first; once it says yes the fit stops
/// there, not converged, saying it reached the time limit.
pub(crate) fn adam_fit(
    spec: &FitParams,
    settings: &MatrixFreeParams,
    mut expired: impl FnMut() -> bool,
    mut pieces: impl FnMut(Hyper, f64) -> Result<LmlPieces, GpError>,
) -> Result<(Hyper, f64, Option<Maximum>), GpError> {
    // Free coordinates: (log σ², log s², c), each with its box.
    let log_box = |p: &Param| p.bounds().map(|(lo, hi)| (lo.ln(), hi.ln()));
    let slots = [
        log_box(&spec.noise),
        log_box(&spec.prior_scale),
        spec.constant_mean.as_ref().and_then(Param::bounds),
    ];
    let mut z = [
        spec.noise.start().ln(),
        spec.prior_scale.start().ln(),
        spec.constant_mean.map_or(0.0, |p| p.start()),
    ];
    let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
    let unpack = |z: &[f64; 3]| {
        (
            Hyper {
                noise: z[0].exp(),
                prior_scale: z[1].exp(),
            },
            z[2],
        )
    };
    let mut lr = [settings.fit_lr; 2];
    let mut last_grad = [0.0f64; 2];
    let (mut steps_run, mut converged, mut timed_out) = (0, false, false);
    for step in 1..=settings.fit_steps {
        if step > 1 && expired() {
            timed_out = true;
            break;
        }
        steps_run = step;
        let (hyper, c_adam) = unpack(&z);
        hyper.check()?;
        let at = pieces(hyper, c_adam)?;
        z[2] = at.c;
        let grad = at.gradient(hyper);
        if grad.iter().any(|g| !g.is_finite()) {
            return Err(GpError::NonFiniteObjective {
                at: format!(
                    "σ² = {:e}, s² = {:e}, c = {:e} (its gradient)",
                    hyper.noise, hyper.prior_scale, at.c
                ),
                value: f64::NAN,
            });
        }
        let (b1, b2) = (0.9f64, 0.999f64);
        let mut largest_step = 0.0f64;
        for i in 0..2 {
            let Some((lo, hi)) = slots[i] else {
                continue;
            };
            if step > 1 && grad[i] * last_grad[i] < 0.0 {
                lr[i] *= 0.5;
            }
            last_grad[i] = grad[i];
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            let mhat = m[i] / (1.0 - b1.powi(step as i32));
            let vhat = v[i] / (1.0 - b2.powi(step as i32));
            let before = z[i];
            z[i] = (z[i] + lr[i] * mhat / (vhat.sqrt() + 1e-12)).clamp(lo, hi);
            // Log-variances move in relative units.
            largest_step = largest_step.max((z[i] - before).abs());
        }
        if largest_step < settings.fit_tolerance {
            converged = true;
            break;
        }
    }
    let (hyper, c) = unpack(&z);
    // The value is filled in by the caller from its SLQ solve at the fitted point.
    Ok((
        hyper,
        c,
        Some(Maximum {
            x: (0..3)
                .filter(|&i| slots[i].is_some())
                .map(|i| z[i])
                .collect(),
            value: f64::NAN,
            iterations: steps_run as u64,
            converged,
            at_bound: (0..3)
                .filter_map(|i| slots[i].map(|(lo, hi)| z[i] <= lo || z[i] >= hi))
                .collect(),
            termination: if timed_out {
                format!(
                    "not converged: stopped at the time limit after {steps_run} Adam steps on \
                     stochastic-trace gradients"
                )
            } else if converged {
                format!(
                    "converged: {steps_run} Adam steps on stochastic-trace gradients, the last \
                     step below {:e}",
                    settings.fit_tolerance
                )
            } else {
                format!(
                    "not converged: stopped at the limit of {steps_run} Adam steps on \
                     stochastic-trace gradients (raise fit_steps)"
                )
            },
        }),
    ))
}

/// Solves $A\alpha = r$ and estimates $\log\lvert A\rvert$ in one batched CG call over
/// $[r, z_1, \dots, z_s]$ with a pivoted-Cholesky preconditioner.
fn matrix_free_solve<B: Backend>(
    jac: &Jacobian<B>,
    r: &DVector<f64>,
    hyper: Hyper,
    settings: &MatrixFreeParams,
) -> Result<MatrixFreeState, GpError>
where
    B::FloatElem: krylov::Scalar,
{
    let a = system(jac, hyper)?;
    let y = TensorBlock::new(convert::from_dmatrix_f64(
        &DMatrix::from_column_slice(r.len(), 1, r.as_slice()),
        &jac.device(),
    ));
    let precond = PivotedCholesky::new(&a.inner, hyper.noise, settings.precond_rank, &y)?;
    let out = inv_quad_logdet(&a, &precond, &y, &settings.slq())?;
    Ok(MatrixFreeState {
        alpha: DVector::from_vec(convert::to_vec_f64(out.solution.into_tensor()).to_vec()),
        inv_quad: out.inv_quad[0],
        residual: r.clone(),
        logdet: out.logdet,
        info: out.info,
        precond_rank: precond.rank(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_ops::{DefaultBackend, MlpConfig};

    type B = DefaultBackend;

    fn data(n: usize, seed: usize) -> (DMatrix<f64>, DVector<f64>) {
        let x = DMatrix::from_fn(n, 2, |i, j| {
            (((i + seed) * 7 + j * 3) as f64 * 0.61).sin() * 1.5
        });
        let y = DVector::from_fn(n, |i, _| (x[(i, 0)] * 1.3).sin() + 0.5 * x[(i, 1)]);
        (x, y)
    }

    fn mlp() -> ntk_ops::Mlp<B> {
        MlpConfig::new(&[2, 8, 8, 1])
            .init::<B>(3, &Default::default())
            .unwrap()
    }

    fn config(strategy: Strategy) -> NtkGpParams {
        NtkGpParams {
            strategy,
            noise: Param::Fixed(0.05),
            prior_scale: Param::Fixed(0.7),
            mean: MeanFunction::Network,
            matrix_free: MatrixFreeParams {
                cg_tolerance: 1e-12,
                probes: 64,
                precond_rank: 5,
                ..MatrixFreeParams::default()
            },
            ..NtkGpParams::default()
        }
    }

    fn rel(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
        (a - b).amax() / b.amax()
    }

    #[test]
    fn dense_matches_an_explicit_jacobian_computation() {
        let (x, y) = data(12, 0);
        let (xt, _) = data(5, 40);
        let net = mlp();
        let gp = NtkGp::new(net.clone(), &x, &y, config(Strategy::Dense)).unwrap();
        let pred = gp.predict(&xt).unwrap();
        // Reference: J from the operator's explicit Jacobian, everything else in nalgebra.
        let dev = Default::default();
        let jac = |x: &DMatrix<f64>| {
            let j = ntk_ops::Jacobian::new(
                net.clone(),
                convert::from_dmatrix_f64(x, &dev),
                JacobianParams::default(),
            )
            .unwrap();
            (
                convert::to_dmatrix_f64(j.jacobian().unwrap()),
                DVector::from_vec(convert::to_vec_f64(j.outputs().unwrap())),
            )
        };
        let (j, f) = jac(&x);
        let (js, fs) = jac(&xt);
        let (s2, n2) = (0.7, 0.05);
        let a = &j * j.transpose() * s2 + DMatrix::identity(12, 12) * n2;
        let a_inv = a.clone().try_inverse().unwrap();
        let ks = &j * js.transpose() * s2;
        let mean = &fs + ks.transpose() * &a_inv * (&y - &f);
        let cov = &js * js.transpose() * s2 - ks.transpose() * &a_inv * &ks;
        assert!(rel(&pred.mean, &mean) < 1e-10);
        assert!(rel(&pred.var, &cov.diagonal()) < 1e-8);
        let (m2, c2) = gp.predict_cov(&xt).unwrap();
        assert!(rel(&m2, &mean) < 1e-10);
        assert!((&c2 - &cov).amax() < 1e-8 * cov.amax());
        let (_, c3) = NtkGp::new(net.clone(), &x, &y, config(Strategy::ParameterSpace))
            .unwrap()
            .predict_cov(&xt)
            .unwrap();
        assert!((&c3 - &cov).amax() < 1e-8 * cov.amax());
        let r = &y - &f;
        let lml = -0.5 * (r.transpose() * &a_inv * &r)[0]
            - 0.5 * a.determinant().ln()
            - 6.0 * (2.0 * std::f64::consts::PI).ln();
        assert!((gp.log_marginal_likelihood() - lml).abs() < 1e-9 * lml.abs());
        assert_eq!(gp.n_params(), 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1);
    }

    #[test]
    fn the_three_strategies_agree() {
        let (x, y) = data(30, 1);
        let (xt, _) = data(7, 50);
        let dense = NtkGp::new(mlp(), &x, &y, config(Strategy::Dense)).unwrap();
        let d = dense.predict(&xt).unwrap();
        for strategy in [Strategy::ParameterSpace, Strategy::MatrixFree] {
            let gp = NtkGp::new(mlp(), &x, &y, config(strategy)).unwrap();
            assert_eq!(gp.choice().strategy, strategy);
            let p = gp.predict(&xt).unwrap();
            assert!(rel(&p.mean, &d.mean) < 1e-6, "{strategy:?} means");
            assert!(
                rel(&p.var, &d.var) < 1e-5,
                "{strategy:?} variances {} vs {}",
                p.var,
                d.var
            );
            let lml = gp.log_marginal_likelihood();
            let err = match gp.matrix_free_state() {
                Some(st) => 3.0 * st.logdet.std_error + 1e-8,
                None => 1e-9 * lml.abs(),
            };
            assert!(
                (lml - dense.log_marginal_likelihood()).abs() <= err,
                "{strategy:?}: {lml} vs {}",
                dense.log_marginal_likelihood()
            );
        }
    }

    #[test]
    fn fitting_agrees_between_spaces_and_improves_the_likelihood() {
        let (x, y) = data(25, 2);
        let fit = |strategy| NtkGpParams {
            noise: Param::fit_variance(0.1),
            prior_scale: Param::fit_variance(1.0),
            mean: MeanFunction::Constant(Param::Fit {
                init: 0.0,
                lower: -5.0,
                upper: 5.0,
            }),
            ..config(strategy)
        };
        let d = NtkGp::new(mlp(), &x, &y, fit(Strategy::Dense)).unwrap();
        let p = NtkGp::new(mlp(), &x, &y, fit(Strategy::ParameterSpace)).unwrap();
        let fixed = NtkGp::new(
            mlp(),
            &x,
            &y,
            NtkGpParams {
                mean: MeanFunction::Zero,
                ..config(Strategy::Dense)
            },
        )
        .unwrap();
        assert!(d.log_marginal_likelihood() > fixed.log_marginal_likelihood());
        assert!((d.log_marginal_likelihood() - p.log_marginal_likelihood()).abs() < 1e-4);
        assert!(
            (d.hyper().noise / p.hyper().noise - 1.0).abs() < 1e-3,
            "{:?} {:?}",
            d.hyper(),
            p.hyper()
        );
        assert!(d.fit_report().is_some());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let (x, mut y) = data(6, 3);
        let net = mlp();
        let c = config(Strategy::Dense);
        assert!(matches!(
            NtkGp::new(net.clone(), &x.rows(0, 5).into_owned(), &y, c),
            Err(GpError::Shape { .. })
        ));
        assert!(matches!(
            NtkGp::new(net.clone(), &DMatrix::zeros(0, 2), &DVector::zeros(0), c),
            Err(GpError::EmptyTask)
        ));
        assert!(matches!(
            NtkGp::new(
                net.clone(),
                &x,
                &y,
                NtkGpParams {
                    noise: Param::Fixed(0.0),
                    ..c
                }
            ),
            Err(GpError::NonPositive { .. })
        ));
        let gp = NtkGp::new(net.clone(), &x, &y, c).unwrap();
        assert!(matches!(
            gp.predict(&DMatrix::zeros(3, 5)),
            Err(GpError::Ops(_))
        ));
        y[2] = f64::NAN;
        assert!(matches!(
            NtkGp::new(net, &x, &y, c),
            Err(GpError::NonFinite { .. })
        ));
    }

    #[test]
    fn love_variances_match_exact_ones_and_the_cache_follows_the_hyper_parameters() {
        let (x, y) = data(25, 4);
        let (xt, _) = data(6, 60);
        let love = |rank| NtkGpParams {
            matrix_free: MatrixFreeParams {
                love_rank: Some(rank),
                ..config(Strategy::MatrixFree).matrix_free
            },
            ..config(Strategy::MatrixFree)
        };
        let exact = NtkGp::new(mlp(), &x, &y, config(Strategy::Dense))
            .unwrap()
            .predict(&xt)
            .unwrap();
        let mut gp = NtkGp::new(mlp(), &x, &y, love(25)).unwrap();
        let cached = gp.predict(&xt).unwrap();
        assert!(
            rel(&cached.var, &exact.var) < 1e-4,
            "{} vs {}",
            cached.var,
            exact.var
        );
        assert_eq!(gp.predict(&xt).unwrap(), cached, "the cache is reused");
        // A low-rank cache never reduces the variance by more than the exact amount.
        let low = NtkGp::new(mlp(), &x, &y, love(3))
            .unwrap()
            .predict(&xt)
            .unwrap();
        assert!(
            low.var
                .iter()
                .zip(exact.var.iter())
                .all(|(l, e)| *l >= e - 1e-9)
        );
        // New variances: the cache is rebuilt, matching a GP built with them from scratch.
        let h = Hyper {
            noise: 0.2,
            prior_scale: 1.3,
        };
        gp.set_hyper(h).unwrap();
        let fresh = NtkGp::new(
            mlp(),
            &x,
            &y,
            NtkGpParams {
                noise: Param::Fixed(0.2),
                prior_scale: Param::Fixed(1.3),
                ..love(25)
            },
        )
        .unwrap();
        assert_eq!(gp.hyper(), h);
        assert_eq!(gp.predict(&xt).unwrap(), fresh.predict(&xt).unwrap());
        assert!(rel(&gp.predict(&xt).unwrap().var, &cached.var) > 1e-3);
    }

    #[test]
    fn cg_non_convergence_falls_back_to_dense_or_reports_its_residual() {
        let (x, y) = data(20, 5);
        let starved = |max_n| NtkGpParams {
            matrix_free: MatrixFreeParams {
                max_iters: 2,
                precond_rank: 0,
                cg_tolerance: 1e-14,
                dense_fallback_max_n: max_n,
                ..MatrixFreeParams::default()
            },
            ..config(Strategy::MatrixFree)
        };
        let gp = NtkGp::new(mlp(), &x, &y, starved(100)).unwrap();
        assert_eq!(gp.choice().strategy, Strategy::Dense);
        assert!(
            gp.choice().reason.contains("CG did not converge"),
            "{}",
            gp.choice().reason
        );
        match NtkGp::new(mlp(), &x, &y, starved(0)) {
            Err(GpError::Krylov(krylov::KrylovError::NoConvergence { max_residual, .. })) => {
                assert!(max_residual > 0.0)
            }
            other => panic!("expected NoConvergence, got {other:?}"),
        }
    }

    #[test]
    fn a_heteroscedastic_head_models_the_mean_with_the_scale_as_noise() {
        use ntk_ops::Head;
        let (x, y) = data(15, 6);
        let (xt, _) = data(4, 70);
        let net = MlpConfig::new(&[2, 8, 2])
            .with_head(Head::Heteroscedastic { min_scale: 1e-5 })
            .init::<B>(9, &Default::default())
            .unwrap();
        let cfg = NtkGpParams {
            noise: Param::Fixed(1.5),
            ..config(Strategy::Dense)
        };
        let gp = NtkGp::new(net.clone(), &x, &y, cfg).unwrap();
        let pred = gp.predict(&xt).unwrap();
        // Reference: the mean output's Jacobian rows (even rows), D = scale².
        let dev = Default::default();
        let jac = |x: &DMatrix<f64>| {
            let j = ntk_ops::Jacobian::new(
                net.clone(),
                convert::from_dmatrix_f64(x, &dev),
                JacobianParams::default(),
            )
            .unwrap();
            let full = convert::to_dmatrix_f64(j.jacobian().unwrap());
            let f = convert::to_dmatrix_f64(j.outputs().unwrap());
            let rows = DMatrix::from_fn(full.nrows() / 2, full.ncols(), |i, k| full[(2 * i, k)]);
            (rows, f.column(0).into_owned(), f.column(1).map(|s| s * s))
        };
        let (j, f, d) = jac(&x);
        let (js, fs, ds) = jac(&xt);
        let a = &j * j.transpose() * 0.7 + DMatrix::from_diagonal(&(d * 1.5));
        let a_inv = a.clone().try_inverse().unwrap();
        let ks = &j * js.transpose() * 0.7;
        let mean = &fs + ks.transpose() * &a_inv * (&y - &f);
        let cov = &js * js.transpose() * 0.7 - ks.transpose() * &a_inv * &ks;
        assert!(rel(&pred.mean, &mean) < 1e-10);
        assert!(rel(&pred.var, &cov.diagonal()) < 1e-8);
        let noise = gp.noise_at(&xt).unwrap();
        assert!(rel(&noise, &(ds * 1.5)) < 1e-12);
        // The noise multiplier can be fitted; other strategies say what to use instead.
        let fitted = NtkGp::new(
            net.clone(),
            &x,
            &y,
            NtkGpParams {
                noise: Param::fit_variance(1.0),
                ..cfg
            },
        )
        .unwrap();
        assert!(fitted.log_marginal_likelihood() >= gp.log_marginal_likelihood());
        assert!(matches!(
            NtkGp::new(net, &x, &y, config(Strategy::MatrixFree)),
            Err(GpError::NotSupported { .. })
        ));
    }

    #[test]
    fn matrix_free_fitting_finds_the_dense_optimum() {
        let (x, y) = data(20, 8);
        // Noisy targets, so that the optimal noise is well inside its bounds.
        let y = y + DVector::from_fn(20, |i, _| {
            0.3 * ((i as f64 * 12.9898).sin() * 43758.5453).fract()
        });
        let spec = |strategy, exact_trace| NtkGpParams {
            noise: Param::fit_variance(0.5),
            prior_scale: Param::fit_variance(0.5),
            mean: MeanFunction::Constant(Param::Fit {
                init: 0.0,
                lower: -5.0,
                upper: 5.0,
            }),
            matrix_free: MatrixFreeParams {
                fit_steps: 300,
                fit_lr: 0.08,
                cg_tolerance: 1e-9,
                exact_trace,
                ..config(strategy).matrix_free
            },
            ..config(strategy)
        };
        let dense = NtkGp::new(mlp(), &x, &y, spec(Strategy::Dense, false)).unwrap();
        let exact = NtkGp::new(mlp(), &x, &y, spec(Strategy::MatrixFree, true)).unwrap();
        let noisy = NtkGp::new(mlp(), &x, &y, spec(Strategy::MatrixFree, false)).unwrap();
        let (d, e) = (dense.hyper(), exact.hyper());
        assert!((e.noise / d.noise - 1.0).abs() < 0.02, "{e:?} vs {d:?}");
        assert!(
            (e.prior_scale / d.prior_scale - 1.0).abs() < 0.02,
            "{e:?} vs {d:?}"
        );
        assert!((exact.constant_mean() - dense.constant_mean()).abs() < 0.02);
        // With 64 random probes the optimum is close in likelihood, not in every coordinate.
        let at = |h: Hyper, c: f64| {
            NtkGp::new(
                mlp(),
                &x,
                &y,
                NtkGpParams {
                    noise: Param::Fixed(h.noise),
                    prior_scale: Param::Fixed(h.prior_scale),
                    mean: MeanFunction::Constant(Param::Fixed(c)),
                    ..config(Strategy::Dense)
                },
            )
            .unwrap()
            .log_marginal_likelihood()
        };
        let best = dense.log_marginal_likelihood();
        assert!(
            best - at(noisy.hyper(), noisy.constant_mean()) < 0.5,
            "{:?}",
            noisy.hyper()
        );
        assert!(noisy.fit_report().unwrap().termination.contains("Adam"));
    }
}
