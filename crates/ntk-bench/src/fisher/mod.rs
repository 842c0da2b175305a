//! The Fisher-vector-product experiment (the paper's Figures 5 and 6).
//!
//! For a Gaussian likelihood with noise $\sigma^2$ the Fisher is the generalized Gauss–Newton
//! matrix $F = J^\top J/\sigma^2$. The paper's finite-difference product (its Appendix D) is
//! $F v \approx \nabla_{\theta'} \operatorname{KL}(p(y\mid\theta) \,\|\, p(y\mid\theta'))
//! \big|_{\theta' = \theta + \varepsilon v} / \varepsilon
//! = J(\theta+\varepsilon v)^\top \big(f(\theta + \varepsilon v) - f(\theta)\big) / (\varepsilon\sigma^2)$:
//! one forward and one backward pass.
//!
//! 1. Accuracy (Figure 5): $\lVert F_\varepsilon v - F v\rVert / \lVert F v\rVert$ for unit $v$ and
//!    $\varepsilon$ on a log grid over $[10^{-8}, 1]$, against the exact product $J^\top(Jv)/\sigma^2$
//!    (forward-mode $Jv$, reverse-mode $J^\top u$), for an MLP (f64 and f32) and the small
//!    CNN ([`ntk_ops::CnnConfig`], f64, the layers path of [`ntk_ops::Jacobian`]), at
//!    initialization, mid-training and at the end of training (Adam on the squared error).
//! 2. Speed (Figure 6): exact product vs finite difference for MLPs 5-W-W-1 of growing width at
//!    fixed $n$, median of a few repetitions, f32 and f64. The exact product is timed cold (factors
//!    = one forward and one backward pass, then $Jv$ and $J^\top u$) and with the factors cached
//!    (many products at the same $\theta$, as in CG); the finite difference always needs a fresh
//!    forward and backward pass at $\theta + \varepsilon v$.
//! 3. Both on a CNN classifier under the categorical likelihood, the paper's own setting, with
//!    the double-backward autodiff product the paper timed against ([`classifier`]).

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nalgebra::{DMatrix, DVector};
use ntk_gp::GpError;
use ntk_gp::train::{Loss, Optimizer, TrainParams, train_network};
use ntk_ops::{
    Activation, CnnConfig, FiniteDifferenceFisher, GgnOperator, Jacobian, JacobianOperator,
    JacobianParams, Likelihood, MlpConfig, OpsError, convert,
};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::{Experiment, ExperimentConfig, RunContext, Summary};
use crate::perf;
use crate::plot::{ErrorBarChart, ErrorSeries};
use crate::report::{Cell, Report, reproduce_command};
use crate::scaling::anchor_like_data;

pub mod classifier;

use classifier::ClassifierStudy;

/// SolverParams of the Fisher experiment; [`Default`] is the full run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FisherConfig {
    /// MLP widths of the accuracy study.
    pub mlp_widths: Vec<usize>,
    /// Data points of the accuracy study (MLP and CNN).
    pub n: usize,
    /// CNN input `[channels, height, width]`.
    pub cnn_input: [usize; 3],
    /// CNN channels.
    pub cnn_channels: [usize; 2],
    /// Training epochs (mid-training is half of them).
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Points of the $\varepsilon$ grid over $[10^{-8}, 1]$.
    pub eps_points: usize,
    /// Widths $W$ of the speed study (5-W-W-1).
    pub speed_widths: Vec<usize>,
    /// $n$ of the speed study.
    pub speed_n: usize,
    /// Repetitions per timing (median).
    pub reps: usize,
    /// Noise variance $\sigma^2$.
    pub noise: f64,
    /// Classes of the CNN classifier (categorical likelihood; same images shape and channels as
    /// the CNN above, trained on `n` images for `epochs` epochs).
    pub classes: usize,
    /// Channels of the classifiers timed in its speed study, smallest first.
    pub classifier_speed_channels: Vec<[usize; 2]>,
}

impl Default for FisherConfig {
    fn default() -> Self {
        Self {
            mlp_widths: vec![5, 100, 100, 1],
            n: 500,
            cnn_input: [1, 12, 12],
            cnn_channels: [4, 8],
            epochs: 40,
            lr: 3e-3,
            eps_points: 17,
            speed_widths: vec![50, 100, 200, 500, 1000, 2000],
            speed_n: 1000,
            reps: 3,
            noise: 1.0,
            classes: 4,
            classifier_speed_channels: vec![[4, 8], [8, 16], [16, 32]],
        }
    }
}

impl ExperimentConfig for FisherConfig {
    fn quick() -> Self {
        Self {
            mlp_widths: vec![5, 20, 20, 1],
            n: 60,
            cnn_input: [1, 10, 10],
            cnn_channels: [2, 3],
            epochs: 6,
            lr: 1e-2,
            eps_points: 9,
            speed_widths: vec![10, 40],
            speed_n: 100,
            reps: 1,
            classes: 3,
            classifier_speed_channels: vec![[2, 3], [4, 6]],
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.n == 0 || self.speed_n == 0 || self.eps_points < 2 || self.reps == 0 {
            return Err(BenchError::invalid(
                "sizes",
                "n, speed_n, reps must be positive and eps_points at least 2",
            ));
        }
        if self.classes < 2 {
            return Err(BenchError::invalid(
                "classes",
                "a classifier needs at least 2",
            ));
        }
        for &channels in &self.classifier_speed_channels {
            classifier::classifier(self.cnn_input, channels, self.classes)
                .network_config()
                .map_err(|e| BenchError::invalid("classifier_speed_channels", e.to_string()))?;
        }
        if !(self.noise > 0.0 && self.lr > 0.0) {
            return Err(BenchError::invalid("noise / lr", "must be positive"));
        }
        Ok(())
    }
}

/// One accuracy measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyPoint {
    /// `"mlp-f64"`, `"mlp-f32"` or `"cnn-f64"`.
    pub model: String,
    /// `"init"`, `"mid"` or `"end"`.
    pub stage: String,
    /// $\varepsilon$.
    pub eps: f64,
    /// $\lVert F_\varepsilon v - Fv\rVert / \lVert Fv\rVert$.
    pub rel_error: f64,
}

/// One speed measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedPoint {
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// Hidden width.
    pub width: usize,
    /// Parameters.
    pub p: usize,
    /// Exact product including the factors (forward + backward) at $\theta$.
    pub exact_cold_s: f64,
    /// Exact product with the factors cached.
    pub exact_cached_s: f64,
    /// Finite-difference product (forward + backward at $\theta + \varepsilon v$).
    pub fd_s: f64,
    /// Load average.
    pub load: f64,
}

/// Figures 5 and 6 of the paper; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Fisher {
    config: FisherConfig,
}

fn eps_grid(points: usize) -> Vec<f64> {
    (0..points)
        .map(|i| 10f64.powf(-8.0 + 8.0 * i as f64 / (points - 1) as f64))
        .collect()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn unit_vector(p: usize, rng: &mut impl Rng) -> Vec<f64> {
    let v: Vec<f64> = (0..p).map(|_| StandardNormal.sample(&mut *rng)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn column<B: Backend>(v: &[f64]) -> Tensor<B, 2> {
    convert::tensor_from_f64(v.to_vec(), v.len(), 1, &Default::default())
}

/// Relative errors of the finite-difference product of an MLP at `theta` over `eps`, in backend
/// `B`'s precision, against the exact GGN product in f64.
fn mlp_errors<B: Backend>(
    cfg: &MlpConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    v: &[f64],
    eps: &[f64],
    noise: f64,
) -> Result<Vec<f64>, OpsError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    type F = burn_ndarray::NdArray<f64>;
    let lik = Likelihood::Gaussian { noise_var: noise };
    let exact = {
        let jac = Jacobian::new(
            cfg.with_params::<F>(theta, &Default::default())?,
            convert::from_dmatrix_f64(x, &Default::default()),
            JacobianParams::default(),
        )?;
        convert::to_vec_f64(GgnOperator::new(jac, lik)?.try_apply(column::<F>(v))?)
    };
    let jac = Jacobian::new(
        cfg.with_params::<B>(theta, &Default::default())?,
        convert::from_dmatrix_f64(x, &Default::default()),
        JacobianParams::default(),
    )?;
    fd_errors(&jac, lik, v, eps, &exact)
}

/// Relative errors against `exact` of the finite-difference Fisher of `jac` under `likelihood`
/// applied to `v`, one per step of `eps`, in backend `B`'s precision.
fn fd_errors<B: Backend>(
    jac: &Jacobian<B>,
    likelihood: Likelihood,
    v: &[f64],
    eps: &[f64],
    exact: &[f64],
) -> Result<Vec<f64>, OpsError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    eps.iter()
        .map(|&e| {
            let fd = FiniteDifferenceFisher::new(jac.clone(), likelihood)?.with_eps(e)?;
            Ok(rel(
                &convert::to_vec_f64(fd.try_apply(column::<B>(v))?),
                exact,
            ))
        })
        .collect()
}

/// The same for the CNN (tape-free path, f64): exact $J^\top(Jv)/\sigma^2$ with $Jv$ by
/// forward-mode tangents, and $J(\theta+\varepsilon v)^\top (f(\theta+\varepsilon v) - f(\theta))/(\varepsilon\sigma^2)$.
fn cnn_errors(
    cfg: &CnnConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    v: &[f64],
    eps: &[f64],
    noise: f64,
) -> Result<Vec<f64>, OpsError> {
    type F = burn_ndarray::NdArray<f64>;
    let dev = Default::default();
    let xt = convert::from_dmatrix_f64::<F>(x, &dev);
    let jac = cfg.jacobian::<F>(theta, xt.clone(), Default::default())?;
    let exact = convert::to_vec_f64(jac.vjp(jac.jvp(column::<F>(v))?)?.div_scalar(noise));
    let f0 = cfg.with_params::<F>(theta, &dev)?.forward(xt.clone());
    eps.iter()
        .map(|&e| {
            let shifted: Vec<f64> = theta.iter().zip(v).map(|(t, d)| t + e * d).collect();
            let f1 = cfg.with_params::<F>(&shifted, &dev)?.forward(xt.clone());
            let j1 = cfg.jacobian::<F>(&shifted, xt.clone(), Default::default())?;
            let g = j1.vjp((f1 - f0.clone()).div_scalar(noise * e))?;
            Ok(rel(&convert::to_vec_f64(g), &exact))
        })
        .collect()
}

/// Trains `net` on $\tfrac12 (f(x) - y)^2$ with Adam for `epochs` epochs (minibatches of 32)
/// by [`train_network`], and returns its parameters.
fn fit<B: Backend>(
    net: &ntk_ops::Network<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    epochs: usize,
    lr: f64,
    seed: u64,
) -> Result<Vec<f64>, BenchError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let config = TrainParams {
        optimizer: Optimizer::adam(),
        lr,
        epochs,
        batch_size: 32,
        decay_every: 0,
        decay: 1.0,
        seed,
    };
    let (trained, _) = train_network(
        net,
        x,
        y,
        Loss::Gaussian,
        &config,
        JacobianParams::default(),
        |_, _| {},
    )?;
    Ok(trained.params_f64())
}

/// Mean squared-error loss and gradient $J^\top (f - y)/m$ of a batch, from a Jacobian operator.
fn batch_loss<B: Backend, J: JacobianOperator<B>>(
    jac: &J,
    y: &[f64],
) -> Result<(f64, Vec<f64>), OpsError> {
    let f = convert::to_vec_f64(jac.outputs()?);
    let m = y.len() as f64;
    let r: Vec<f64> = f.iter().zip(y).map(|(a, b)| (a - b) / m).collect();
    let loss = f
        .iter()
        .zip(y)
        .map(|(a, b)| 0.5 * (a - b).powi(2))
        .sum::<f64>()
        / m;
    let g = jac.vjp(column::<B>(&r))?;
    Ok((loss, convert::to_vec_f64(g)))
}

/// Adds the relative errors `acc` to `report` as a table (a row per $\varepsilon$ of `eps`, a
/// column per model and stage in order of first appearance) and to `summary` as metrics (each
/// series' best error, and its error at $\varepsilon = 10^{-4}$), and returns their figure's
/// series.
fn error_study(
    report: &mut Report,
    acc: &[AccuracyPoint],
    eps: &[f64],
    mut summary: Summary,
) -> (Vec<ErrorSeries>, Summary) {
    let first_seen = |name: fn(&AccuracyPoint) -> &str| {
        let mut names: Vec<&str> = Vec::new();
        for a in acc {
            if !names.contains(&name(a)) {
                names.push(name(a));
            }
        }
        names
    };
    let models = first_seen(|a| a.model.as_str());
    let stages = first_seen(|a| a.stage.as_str());
    let pairs: Vec<(&str, &str)> = models
        .iter()
        .flat_map(|&m| stages.iter().map(move |&s| (m, s)))
        .collect();
    let points = |m: &str, s: &str| -> Vec<&AccuracyPoint> {
        acc.iter()
            .filter(|a| a.model == m && a.stage == s)
            .collect()
    };
    let mut headers = vec!["ε".to_string()];
    headers.extend(pairs.iter().map(|(m, s)| format!("{m} {s}")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    report.table(
        &header_refs,
        eps.iter().map(|&e| {
            let mut row = vec![Cell::from(e)];
            row.extend(pairs.iter().map(|&(m, s)| {
                Cell::from(
                    points(m, s)
                        .iter()
                        .find(|a| a.eps == e)
                        .map_or(f64::NAN, |a| a.rel_error),
                )
            }));
            row
        }),
    );
    let mut series = Vec::new();
    for &(m, s) in &pairs {
        let pts = points(m, s);
        series.push(ErrorSeries {
            label: format!("{m} {s}"),
            x: pts.iter().map(|a| a.eps.log10()).collect(),
            mean: pts
                .iter()
                .map(|a| a.rel_error.max(1e-300).log10())
                .collect(),
            err: vec![0.0; pts.len()],
        });
        let best = pts
            .iter()
            .map(|a| a.rel_error)
            .fold(f64::INFINITY, f64::min);
        summary = summary.metric(format!("best_rel_error/{m}/{s}"), best);
        if let Some(at) = pts.iter().find(|a| (a.eps.log10() + 4.0).abs() < 1e-9) {
            summary = summary.metric(format!("rel_error_eps1e-4/{m}/{s}"), at.rel_error);
        }
    }
    (series, summary)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times exact and finite-difference products of a 5-W-W-1 MLP at `n` points.
fn speed<B: Backend>(
    width: usize,
    n: usize,
    reps: usize,
    noise: f64,
    rng: &mut impl Rng,
) -> Result<SpeedPoint, OpsError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let dev = Default::default();
    let cfg = MlpConfig::new(&[5, width, width, 1]);
    let mlp = cfg.init::<B>(0, &dev)?;
    let p = mlp.n_params();
    let (x, _) = anchor_like_data(n, 5, rng);
    let x = convert::from_dmatrix_f64::<B>(&x, &dev);
    let v = column::<B>(&unit_vector(p, rng));
    let lik = Likelihood::Gaussian { noise_var: noise };
    let sync = |t: Tensor<B, 2>| {
        let _ = B::sync(&t.device());
        t
    };
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    let mut fd = Vec::new();
    let jac = Jacobian::new(mlp.clone(), x.clone(), JacobianParams::default())?;
    let ggn = GgnOperator::new(jac.clone(), lik)?;
    let fdop = FiniteDifferenceFisher::new(jac, lik)?;
    for _ in 0..reps {
        let (r, s) = perf::timed(|| -> Result<_, OpsError> {
            let j = Jacobian::new(mlp.clone(), x.clone(), JacobianParams::default())?;
            Ok(sync(GgnOperator::new(j, lik)?.try_apply(v.clone())?))
        });
        r?;
        cold.push(s);
        let (r, s) = perf::timed(|| ggn.try_apply(v.clone()).map(sync));
        r?;
        cached.push(s);
        let (r, s) = perf::timed(|| fdop.try_apply(v.clone()).map(sync));
        r?;
        fd.push(s);
    }
    Ok(SpeedPoint {
        dtype: if std::mem::size_of::<B::FloatElem>() == 4 {
            "f32"
        } else {
            "f64"
        }
        .into(),
        width,
        p,
        exact_cold_s: median(cold),
        exact_cached_s: median(cached),
        fd_s: median(fd),
        load: perf::load_average(),
    })
}

impl Experiment for Fisher {
    const NAME: &'static str = "fisher";
    type Config = FisherConfig;

    fn new(config: FisherConfig) -> Result<Self, BenchError> {
        Ok(Self { config })
    }

    fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
        type F = burn_ndarray::NdArray<f64>;
        type S = burn_ndarray::NdArray<f32>;
        let c = &self.config;
        let mut rng = ctx.rng_stream(0);
        let eps = eps_grid(c.eps_points);
        let dev = Default::default();
        let mut acc: Vec<AccuracyPoint> = Vec::new();
        let mut losses: Vec<(String, String, f64)> = Vec::new();
        let mut push = |model: &str, stage: &str, errs: Vec<f64>| {
            for (e, r) in eps.iter().zip(errs) {
                acc.push(AccuracyPoint {
                    model: model.into(),
                    stage: stage.into(),
                    eps: *e,
                    rel_error: r,
                });
            }
        };
        // MLP on the anchors' regression data.
        let (x, y) = anchor_like_data(c.n, c.mlp_widths[0], &mut rng);
        let mcfg = MlpConfig::new(&c.mlp_widths).with_activation(Activation::Tanh);
        let mut theta = mcfg
            .init::<F>(ctx.seed(), &dev)
            .map_err(GpError::from)?
            .flatten_f64();
        let v = unit_vector(theta.len(), &mut rng);
        let half = c.epochs / 2;
        let mlp_grad = |p: &[f64], b: &[usize]| -> Result<(f64, Vec<f64>), OpsError> {
            let xb = DMatrix::from_fn(b.len(), x.ncols(), |i, j| x[(b[i], j)]);
            let yb: Vec<f64> = b.iter().map(|&i| y[i]).collect();
            let jac = Jacobian::new(
                mcfg.with_params::<F>(p, &Default::default())?,
                convert::from_dmatrix_f64(&xb, &Default::default()),
                JacobianParams::default(),
            )?;
            batch_loss(&jac, &yb)
        };
        let all: Vec<usize> = (0..c.n).collect();
        for (stage, epochs) in [("init", 0), ("mid", half), ("end", c.epochs - half)] {
            if epochs > 0 {
                let net = mcfg
                    .network()
                    .with_params::<F>(&theta, &[], &dev)
                    .map_err(GpError::from)?;
                theta = fit(&net, &x, &y, epochs, c.lr, ctx.seed())?;
            }
            losses.push((
                "mlp".into(),
                stage.into(),
                mlp_grad(&theta, &all).map_err(GpError::from)?.0,
            ));
            push(
                "mlp-f64",
                stage,
                mlp_errors::<F>(&mcfg, &theta, &x, &v, &eps, c.noise).map_err(GpError::from)?,
            );
            push(
                "mlp-f32",
                stage,
                mlp_errors::<S>(&mcfg, &theta, &x, &v, &eps, c.noise).map_err(GpError::from)?,
            );
        }
        // The small CNN on random images with a smooth target.
        let ccfg = CnnConfig {
            input: c.cnn_input,
            channels: c.cnn_channels,
            kernel: 3,
            outputs: 1,
            activation: Activation::Tanh,
        };
        let d = ccfg.n_inputs();
        let xi = DMatrix::from_fn(c.n, d, |_, _| StandardNormal.sample(&mut rng));
        let yi = DVector::from_fn(c.n, |i, _| {
            let s: f64 = (0..d).map(|j| xi[(i, j)] * ((j % 7) as f64 - 3.0)).sum();
            (s / d as f64).sin() * 2.0
        });
        let cnn = ccfg.init::<F>(ctx.seed(), &dev).map_err(GpError::from)?;
        let mut theta_c = convert::to_vec_f64(cnn.flatten());
        let vc = unit_vector(theta_c.len(), &mut rng);
        let cnn_grad = |p: &[f64], b: &[usize]| -> Result<(f64, Vec<f64>), OpsError> {
            let xb = DMatrix::from_fn(b.len(), d, |i, j| xi[(b[i], j)]);
            let yb: Vec<f64> = b.iter().map(|&i| yi[i]).collect();
            let jac = ccfg.jacobian::<F>(
                p,
                convert::from_dmatrix_f64(&xb, &Default::default()),
                Default::default(),
            )?;
            batch_loss(&jac, &yb)
        };
        for (stage, epochs) in [("init", 0), ("mid", half), ("end", c.epochs - half)] {
            if epochs > 0 {
                let net = ccfg
                    .network_config()
                    .map_err(GpError::from)?
                    .with_params::<F>(&theta_c, &[], &dev)
                    .map_err(GpError::from)?;
                theta_c = fit(&net, &xi, &yi, epochs, c.lr, ctx.seed())?;
            }
            losses.push((
                "cnn".into(),
                stage.into(),
                cnn_grad(&theta_c, &all).map_err(GpError::from)?.0,
            ));
            push(
                "cnn-f64",
                stage,
                cnn_errors(&ccfg, &theta_c, &xi, &vc, &eps, c.noise).map_err(GpError::from)?,
            );
        }
        let clf = classifier::run_study(c, &eps, ctx.seed(), &mut rng)?;
        // Speed across model sizes.
        let mut speeds = Vec::new();
        for &w in &c.speed_widths {
            speeds
                .push(speed::<S>(w, c.speed_n, c.reps, c.noise, &mut rng).map_err(GpError::from)?);
            speeds
                .push(speed::<F>(w, c.speed_n, c.reps, c.noise, &mut rng).map_err(GpError::from)?);
        }
        self.write_outputs(ctx, &acc, &losses, &speeds, &clf)
    }
}

impl Fisher {
    fn write_outputs(
        &self,
        ctx: &mut RunContext,
        acc: &[AccuracyPoint],
        losses: &[(String, String, f64)],
        speeds: &[SpeedPoint],
        clf: &ClassifierStudy,
    ) -> Result<Summary, BenchError> {
        let c = &self.config;
        ctx.write_json("accuracy", acc)?;
        ctx.write_json("speed", speeds)?;
        ctx.write_csv(
            "accuracy",
            &["model", "stage", "eps", "rel_error"],
            acc.iter().map(|a| {
                vec![
                    a.model.clone(),
                    a.stage.clone(),
                    a.eps.to_string(),
                    a.rel_error.to_string(),
                ]
            }),
        )?;
        ctx.write_csv(
            "speed",
            &[
                "dtype",
                "width",
                "p",
                "exact_cold_s",
                "exact_cached_s",
                "fd_s",
                "load",
            ],
            speeds.iter().map(|s| {
                vec![
                    s.dtype.clone(),
                    s.width.to_string(),
                    s.p.to_string(),
                    s.exact_cold_s.to_string(),
                    s.exact_cached_s.to_string(),
                    s.fd_s.to_string(),
                    s.load.to_string(),
                ]
            }),
        )?;
        let mut summary = Summary::default();
        let mut report = Report::new("Finite-difference Fisher-vector products (Figures 5, 6)");
        report.paragraph(format!(
            "Gaussian likelihood, σ² = {}; unit-norm random directions v. MLP {:?} tanh on the \
             anchors' regression data (n = {}); CNN input {:?}, channels {:?}, kernel 3, tanh, on \
             random images. Trained with Adam (lr {}, batch 32) for {} epochs; \"mid\" is half-way.",
            c.noise, c.mlp_widths, c.n, c.cnn_input, c.cnn_channels, c.lr, c.epochs
        ));
        report.heading("Training loss at each stage");
        report.table(
            &["model", "stage", "mean ½(f − y)²"],
            losses.iter().map(|(m, s, l)| {
                vec![
                    Cell::from(m.as_str()),
                    Cell::from(s.as_str()),
                    Cell::from(*l),
                ]
            }),
        );
        report.heading("Relative error of the finite difference against the exact GGN product");
        let (series, with_errors) = error_study(&mut report, acc, &eps_grid(c.eps_points), summary);
        summary = with_errors;
        let files = ErrorBarChart::new(
            "finite-difference FVP: relative error",
            "log10 ε",
            "log10 relative error",
            series,
        )
        .write(ctx, "fvp-error")?;
        report.figure(
            "Relative error of the finite-difference Fisher-vector product",
            &files,
        );
        report.heading(format!(
            "Speed: exact vs finite difference (5-W-W-1 MLP, n = {})",
            c.speed_n
        ));
        report.table(
            &[
                "dtype",
                "W",
                "p",
                "exact cold s",
                "exact cached s",
                "FD s",
                "cold / FD",
                "cached / FD",
                "load",
            ],
            speeds.iter().map(|s| {
                vec![
                    Cell::from(s.dtype.as_str()),
                    Cell::from(s.width),
                    Cell::from(s.p),
                    Cell::from(s.exact_cold_s),
                    Cell::from(s.exact_cached_s),
                    Cell::from(s.fd_s),
                    Cell::from(s.exact_cold_s / s.fd_s),
                    Cell::from(s.exact_cached_s / s.fd_s),
                    Cell::from(s.load),
                ]
            }),
        );
        let mut speed_series = Vec::new();
        for dt in ["f32", "f64"] {
            let pts: Vec<&SpeedPoint> = speeds.iter().filter(|s| s.dtype == dt).collect();
            for (label, f) in [
                (
                    "exact cold",
                    (|s: &SpeedPoint| s.exact_cold_s) as fn(&SpeedPoint) -> f64,
                ),
                ("exact cached", |s: &SpeedPoint| s.exact_cached_s),
                ("finite difference", |s: &SpeedPoint| s.fd_s),
            ] {
                speed_series.push(ErrorSeries {
                    label: format!("{label} {dt}"),
                    x: pts.iter().map(|s| (s.p as f64).log10()).collect(),
                    mean: pts.iter().map(|s| f(s).log10()).collect(),
                    err: vec![0.0; pts.len()],
                });
            }
            if let Some(last) = pts.last() {
                summary = summary
                    .metric(
                        format!("cold_over_fd/{dt}/p{}", last.p),
                        last.exact_cold_s / last.fd_s,
                    )
                    .metric(
                        format!("cached_over_fd/{dt}/p{}", last.p),
                        last.exact_cached_s / last.fd_s,
                    );
            }
        }
        let files = ErrorBarChart::new(
            "Fisher-vector product: time against parameters",
            "log10 p",
            "log10 seconds",
            speed_series,
        )
        .write(ctx, "fvp-speed")?;
        report.figure("Exact vs finite-difference Fisher-vector product", &files);
        summary = self.classifier_section(ctx, &mut report, clf, summary)?;
        report.reproduce(reproduce_command(Self::NAME, ctx.profile(), ctx.seed()));
        report.write(ctx)?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Profile, run};

    #[test]
    fn quick_profile_shows_the_finite_difference_trade_off() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = RunContext::new(root.path(), Fisher::NAME, 0, Profile::Quick)
            .unwrap()
            .without_progress();
        let record = run::<Fisher>(&mut ctx).unwrap();
        let m = &record.summary.metrics;
        for stage in ["init", "mid", "end"] {
            // f64: truncation O(ε) and round-off O(u/ε) meet near ε ≈ 1e-8..1e-6 well below 1e-4.
            let e = m[&format!("rel_error_eps1e-4/mlp-f64/{stage}")];
            assert!(e < 1e-3 && e > 1e-12, "{stage}: {e:e}");
            assert!(m[&format!("best_rel_error/mlp-f64/{stage}")] < 1e-5);
            assert!(m[&format!("best_rel_error/cnn-f64/{stage}")] < 1e-5);
            // f32 cannot get below ~1e-4 (round-off of f(θ+εv) − f(θ)).
            assert!(m[&format!("best_rel_error/mlp-f32/{stage}")] > 1e-6);
            // the classifier, under the categorical likelihood: the same trade-off
            assert!(m[&format!("best_rel_error/clf-f64/{stage}")] < 1e-5);
            assert!(m[&format!("best_rel_error/clf-f32/{stage}")] > 1e-6);
        }
        // the double-backward product is the exact product, and the classifier learned
        assert!(m["classifier_double_backward_rel_diff"] < 1e-12);
        assert!(m["classifier_cross_entropy/end"] < m["classifier_cross_entropy/init"]);
        assert!(root.path().join("fisher/classifier.json").is_file());
        assert!(
            root.path()
                .join("fisher/fvp-error-classifier.png")
                .is_file()
        );
        let acc: Vec<AccuracyPoint> = serde_json::from_str(
            &std::fs::read_to_string(root.path().join("fisher/accuracy.json")).unwrap(),
        )
        .unwrap();
        // At ε = 1 the error is the truncation error, large; at the best ε it is small.
        let big = acc
            .iter()
            .find(|a| a.model == "mlp-f64" && a.eps == 1.0)
            .unwrap();
        assert!(big.rel_error > 1e-4);
        assert!(root.path().join("fisher/fvp-error.png").is_file());
        assert!(root.path().join("fisher/speed.csv").is_file());
    }
}
