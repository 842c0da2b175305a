//! The scaling experiment (the paper's Figure 4): the time of one log marginal likelihood
//! $\log p(y) = -\tfrac12 y^\top (K + \sigma^2 I)^{-1} y - \tfrac12 \log\lvert K + \sigma^2 I\rvert
//! \,-\, \tfrac n2 \log 2\pi$ of the 5-200-2000-200-1 MLP's NTK GP ($p$ = 803,601) against $n$,
//! and against the width $W$ of a 5-W-W-W-W-1 MLP at fixed $n$.
//!
//! Three ways to compute it, each timed from the inputs to the number (forward pass included):
//!
//! - `dense`: the structured NTK ($2n^2 S$ flops) and a blocked Cholesky ($n^3/3$), exact.
//! - `function-space`: matrix-free, $K u = J(J^\top u)$, pivoted-Cholesky preconditioned batched
//!   CG on $[y, z_1 … z_s]$ and stochastic Lanczos quadrature for the log-determinant
//!   ([`NtkGp`] with [`Strategy::MatrixFree`]).
//! - `parameter-space`: matrix-free on the $p \times p$ system $A_p = J^\top J + \sigma^2 I$
//!   (CG and SLQ on $[J^\top y, z_1 … z_s]$, $z_i \in \{\pm1\}^p$), preconditioned by the
//!   Nyström approximation of $J^\top J$ from a Gaussian $p\times r$ sketch
//!   ([`NtkGp`] with [`Strategy::MatrixFreeParameterSpace`]), and mapped back by the matrix
//!   determinant lemma and Woodbury:
//!   $\log\lvert K + \sigma^2 I\rvert = \log\lvert A_p\rvert + (n - p)\log\sigma^2$ and
//!   $y^\top (K + \sigma^2 I)^{-1} y = (y^\top y - (J^\top y)^\top A_p^{-1} J^\top y)/\sigma^2$.
//!
//! Every point records CG iterations, the final relative residuals, the SLQ standard error,
//! the peak resident memory of that point alone (`VmHWM`, reset before it) and the load of the
//! machine; the exponent $b$ of $t \approx a n^b$ is fitted per method. Sizes are
//! configurable (`ntk-bench reproduce scaling --config my.json`); a method whose point took
//! longer than `budget_s` is not run at larger sizes, and the report says which points ran.
//! Data as in the anchors: $x \sim \mathcal N(0, I_5)$, $y = \sin(3 x^\top w) + 0.1\varepsilon$.
//! The network is tanh by default (the anchors'); the authors' notebook used ELU
//! (`"activation": "elu"`).

use std::collections::BTreeMap;

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_gp::chol::DenseLml;
use ntk_gp::{GpError, MatrixFreeParams, MeanFunction, NtkGp, NtkGpParams, Param, Strategy};
use ntk_ops::{Activation, JacobianParams, Mlp, MlpConfig};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::{Experiment, ExperimentConfig, RunContext, Summary};
use crate::perf::{self, PowerLaw, fit_power_law};
use crate::plot::{ErrorBarChart, ErrorSeries};
use crate::report::{Cell, Report, reproduce_command};

/// The floating-point type of the network, the NTK and its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// `f32` (the anchors' choice for this model).
    F32,
    /// `f64`.
    F64,
}

/// The MLP's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// tanh (the anchors').
    Tanh,
    /// ELU (the authors' notebook).
    Elu,
}

impl From<Nonlinearity> for Activation {
    fn from(n: Nonlinearity) -> Self {
        match n {
            Nonlinearity::Tanh => Activation::Tanh,
            Nonlinearity::Elu => Activation::Elu,
        }
    }
}

/// How the log marginal likelihood is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Structured NTK and blocked Cholesky.
    Dense,
    /// Matrix-free in function space (preconditioned CG + SLQ on $K + \sigma^2 I$).
    FunctionSpace,
    /// Matrix-free in parameter space (CG + SLQ on $J^\top J + \sigma^2 I$).
    ParameterSpace,
}

impl Method {
    /// Its name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::FunctionSpace => "function-space",
            Self::ParameterSpace => "parameter-space",
        }
    }
}

/// SolverParams of the scaling experiment; [`Default`] is the paper's CPU sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScalingConfig {
    /// Layer widths of the $n$ sweep's MLP.
    pub widths: Vec<usize>,
    /// Nonlinearity of every MLP.
    pub activation: Nonlinearity,
    /// Training-set sizes of the $n$ sweep.
    pub ns: Vec<usize>,
    /// Methods to time.
    pub methods: Vec<Method>,
    /// Precision.
    pub dtype: Dtype,
    /// Noise variance $\sigma^2$ (prior scale 1, zero mean: the anchors' setting).
    pub noise: f64,
    /// Largest $n$ for the dense method ($8n^2$ bytes in f64, $4n^2$ in f32).
    pub dense_max_n: usize,
    /// Relative CG tolerance asked of the solve column ($y$) in both matrix-free methods.
    pub cg_tolerance: f64,
    /// CG iteration cap.
    pub max_iters: usize,
    /// SLQ probes.
    pub probes: usize,
    /// Rank of the preconditioners: pivoted Cholesky (function space), Nyström (parameter
    /// space).
    pub precond_rank: usize,
    /// A method whose point took longer than this many seconds is not run at larger sizes.
    pub budget_s: f64,
    /// Widths $W$ of the width sweep (5-W-…-W-1 with `width_sweep_depth` hidden layers).
    pub width_sweep: Vec<usize>,
    /// Hidden layers of the width sweep.
    pub width_sweep_depth: usize,
    /// $n$ of the width sweep.
    pub width_sweep_n: usize,
    /// Size of the square GEMM that measures the matrix-product peak (0: skip).
    pub gemm_size: usize,
    /// Memory budget of the Jacobian products, bytes.
    pub memory_budget: usize,
    /// The `points.json` of an earlier run (not this run's own, which it rewrites): its
    /// points without an error, of the same sweep, method, $n$, width, parameter count and
    /// [settings](Point::settings), are taken as they are instead of being measured again, so
    /// that a long sweep stopped midway, or extended to a larger $n$, reports every point in
    /// one table and one figure.
    pub resume: Option<std::path::PathBuf>,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            widths: vec![5, 200, 2000, 200, 1],
            activation: Nonlinearity::Tanh,
            ns: vec![500, 1000, 2000, 5000, 10_000, 20_000, 50_000],
            methods: vec![Method::Dense, Method::FunctionSpace, Method::ParameterSpace],
            dtype: Dtype::F32,
            noise: 1.0,
            dense_max_n: 20_000,
            cg_tolerance: 1e-3,
            max_iters: 500,
            probes: 8,
            precond_rank: 30,
            budget_s: 300.0,
            width_sweep: vec![10, 50, 100, 250, 500, 1000, 2000],
            width_sweep_depth: 4,
            width_sweep_n: 1000,
            gemm_size: 2048,
            memory_budget: 4 << 30,
            resume: None,
        }
    }
}

impl ExperimentConfig for ScalingConfig {
    fn quick() -> Self {
        Self {
            widths: vec![5, 20, 100, 20, 1],
            ns: vec![100, 200, 400],
            dtype: Dtype::F64,
            cg_tolerance: 1e-8,
            probes: 16,
            budget_s: 60.0,
            width_sweep: vec![10, 40],
            width_sweep_n: 100,
            gemm_size: 256,
            ..Self::default()
        }
    }

    /// The paper's sweep to n = 2000 (not 50 000) and width 500 (not 2000), about 3 minutes on
    /// a 2-core machine: its rows at n = 5000 take 3 minutes more, those at n = 50 000 half an
    /// hour (`--full` runs them).
    fn standard() -> Self {
        Self {
            ns: vec![500, 1000, 2000],
            dense_max_n: 2000,
            width_sweep: vec![10, 50, 100, 250, 500],
            budget_s: 120.0,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.widths.len() < 2 || self.widths.contains(&0) || *self.widths.last().unwrap() != 1 {
            return Err(BenchError::invalid(
                "widths",
                "need at least two positive widths ending in 1 output",
            ));
        }
        if self.ns.contains(&0) || self.width_sweep.contains(&0) || self.width_sweep_n == 0 {
            return Err(BenchError::invalid(
                "sizes",
                "every n and width must be positive",
            ));
        }
        if !(self.noise > 0.0 && self.noise.is_finite()) {
            return Err(BenchError::invalid("noise", "must be positive"));
        }
        if self.cg_tolerance.is_nan()
            || self.cg_tolerance <= 0.0
            || self.probes == 0
            || self.max_iters == 0
        {
            return Err(BenchError::invalid(
                "matrix-free settings",
                "cg_tolerance, probes and max_iters must be positive",
            ));
        }
        if self.methods.is_empty() {
            return Err(BenchError::invalid("methods", "none asked"));
        }
        Ok(())
    }
}

/// One timed log marginal likelihood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// `"n"` or `"width"`.
    pub sweep: String,
    /// The method.
    pub method: Method,
    /// Training points.
    pub n: usize,
    /// Hidden width (the width sweep) or the widest layer.
    pub width: usize,
    /// Parameters $p$.
    pub p: usize,
    /// Wall-clock seconds from the inputs to the number.
    pub seconds: f64,
    /// $\log p(y)$ (`NaN` on failure).
    pub lml: f64,
    /// $\log\lvert K + \sigma^2 I\rvert$.
    pub logdet: f64,
    /// $y^\top (K + \sigma^2 I)^{-1} y$.
    pub inv_quad: f64,
    /// CG iterations (matrix-free).
    pub cg_iterations: Option<usize>,
    /// Final relative residual of the solve column $y$ (matrix-free).
    pub rel_residual: Option<f64>,
    /// Largest final relative residual over the probe columns (matrix-free).
    pub probe_rel_residual: Option<f64>,
    /// Whether the solve column met the tolerance.
    pub converged: Option<bool>,
    /// Standard error of the SLQ log-determinant.
    pub logdet_std_error: Option<f64>,
    /// Peak resident memory during this point, MiB.
    pub peak_mib: f64,
    /// 1-minute load average when the point finished.
    pub load: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The settings it was computed with (precision, activation, $\sigma^2$, tolerance,
    /// iteration cap, probes, rank, memory budget, seed): `resume` reuses only points with the
    /// same. Empty in files written before it was recorded (those are matched on the rest).
    #[serde(default)]
    pub settings: String,
}

/// The settings that change a point's numbers, in one string (see [`Point::settings`]).
fn fingerprint(c: &ScalingConfig, seed: u64) -> String {
    format!(
        "{:?} {:?} noise {} tol {} iters {} probes {} rank {} budget {} seed {seed}",
        c.dtype,
        c.activation,
        c.noise,
        c.cg_tolerance,
        c.max_iters,
        c.probes,
        c.precond_rank,
        c.memory_budget
    )
}

/// Figure 4 of the paper; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Scaling {
    config: ScalingConfig,
}

impl Experiment for Scaling {
    const NAME: &'static str = "scaling";
    type Config = ScalingConfig;

    fn new(config: ScalingConfig) -> Result<Self, BenchError> {
        Ok(Self { config })
    }

    fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
        let c = &self.config;
        let mut rng = ctx.rng_stream(0);
        let (gemm32, gemm64) = if c.gemm_size > 0 {
            (
                perf::gemm_gflops::<burn_ndarray::NdArray<f32>>(c.gemm_size, 3),
                perf::gemm_gflops::<burn_ndarray::NdArray<f64>>(c.gemm_size, 3),
            )
        } else {
            (f64::NAN, f64::NAN)
        };
        let max_n =
            c.ns.iter()
                .copied()
                .chain([c.width_sweep_n])
                .max()
                .unwrap_or(1);
        let d = c.widths[0];
        let (x_all, y_all) = anchor_like_data(max_n, d, &mut rng);
        let earlier = match &c.resume {
            Some(path) => {
                // This run rewrites its points.json after every point.
                let own = ctx.path("points.json")?;
                if own.exists()
                    && std::fs::canonicalize(path).ok() == std::fs::canonicalize(&own).ok()
                {
                    return Err(BenchError::invalid(
                        "resume",
                        "is this run's own points.json, which the run overwrites: copy it \
                         aside and resume from the copy",
                    ));
                }
                read_points(path)?
            }
            None => Vec::new(),
        };
        let settings = fingerprint(c, ctx.seed());
        // A point of the earlier run, if it has this one (same sweep, method, n, width,
        // parameter count and settings) and it did not fail.
        let reuse = |sweep: &str, m: Method, n: usize, width: usize, widths: &[usize]| {
            let p = MlpConfig::new(widths).layout().n_params();
            earlier
                .iter()
                .find(|q| {
                    q.sweep == sweep
                        && q.method == m
                        && q.n == n
                        && q.width == width
                        && q.p == p
                        && (q.settings.is_empty() || q.settings == settings)
                        && q.error.is_none()
                })
                .cloned()
        };
        let mut points = Vec::new();
        let bar = ctx.progress(
            (c.ns.len() + c.width_sweep.len()) as u64 * c.methods.len() as u64,
            "scaling",
        );
        // The n sweep.
        let mut stopped: BTreeMap<Method, f64> = BTreeMap::new();
        for &n in &c.ns {
            let (x, y) = (x_all.rows(0, n).into_owned(), y_all.rows(0, n).into_owned());
            for &m in &c.methods {
                bar.inc(1);
                if stopped.contains_key(&m) || (m == Method::Dense && n > c.dense_max_n) {
                    continue;
                }
                let widest = *c.widths.iter().max().unwrap_or(&1);
                let pt = match reuse("n", m, n, widest, &c.widths) {
                    Some(pt) => pt,
                    None => measure(c, "n", m, &c.widths, widest, &x, &y, ctx.seed())?,
                };
                if pt.seconds > c.budget_s {
                    stopped.insert(m, pt.seconds);
                }
                points.push(pt);
                write_points(ctx, &points)?;
            }
        }
        // The width sweep.
        let n = c.width_sweep_n;
        let (x, y) = (x_all.rows(0, n).into_owned(), y_all.rows(0, n).into_owned());
        let mut stopped_w: BTreeMap<Method, f64> = BTreeMap::new();
        for &w in &c.width_sweep {
            let mut widths = vec![d];
            widths.extend(std::iter::repeat_n(w, c.width_sweep_depth));
            widths.push(1);
            for &m in &c.methods {
                bar.inc(1);
                if stopped_w.contains_key(&m) || (m == Method::Dense && n > c.dense_max_n) {
                    continue;
                }
                let pt = match reuse("width", m, n, w, &widths) {
                    Some(pt) => pt,
                    None => measure(c, "width", m, &widths, w, &x, &y, ctx.seed())?,
                };
                if pt.seconds > c.budget_s {
                    stopped_w.insert(m, pt.seconds);
                }
                points.push(pt);
                write_points(ctx, &points)?;
            }
        }
        bar.finish_and_clear();
        self.write_outputs(ctx, &points, (gemm32, gemm64), &stopped, &stopped_w)
    }
}

/// $n$ points $x \sim \mathcal N(0, I_d)$ and $y = \sin(3x^\top w) + 0.1\varepsilon$,
/// $w \sim \mathcal N(0, I_d/d)$ (the anchors' recipe, with this crate's generator).
///
/// Drawn point by point ($x_i$, then $\varepsilon_i$), so that the first $m$ points are the
/// same for every $n \ge m$: a sweep over $n$ (or a run with a different largest $n$) sees
/// nested data sets.
pub fn anchor_like_data(n: usize, d: usize, rng: &mut impl Rng) -> (DMatrix<f64>, DVector<f64>) {
    let mut normal = || -> f64 { StandardNormal.sample(&mut *rng) };
    let w: Vec<f64> = (0..d).map(|_| normal() / (d as f64).sqrt()).collect();
    let mut x = DMatrix::zeros(n, d);
    let mut y = DVector::zeros(n);
    for i in 0..n {
        for j in 0..d {
            x[(i, j)] = normal();
        }
        let s: f64 = (0..d).map(|j| x[(i, j)] * w[j]).sum();
        y[i] = (3.0 * s).sin() + 0.1 * normal();
    }
    (x, y)
}

/// Times one point, in the configured precision; failures of the computation become a row
/// with `error` set (the sweep goes on), errors of the setup abort.
#[allow(clippy::too_many_arguments)]
fn measure(
    c: &ScalingConfig,
    sweep: &str,
    method: Method,
    widths: &[usize],
    width: usize,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    seed: u64,
) -> Result<Point, BenchError> {
    let mlp_config = MlpConfig::new(widths).with_activation(c.activation.into());
    let p = mlp_config.layout().n_params();
    perf::reset_peak_rss();
    let settings = SolverParams::of(c);
    let (outcome, seconds) = match c.dtype {
        Dtype::F32 => {
            type B = burn_ndarray::NdArray<f32>;
            let mlp = mlp_config
                .init::<B>(seed, &Default::default())
                .map_err(GpError::from)?;
            perf::timed(|| lml_by(method, mlp, x, y, &settings))
        }
        Dtype::F64 => {
            type B = burn_ndarray::NdArray<f64>;
            let mlp = mlp_config
                .init::<B>(seed, &Default::default())
                .map_err(GpError::from)?;
            perf::timed(|| lml_by(method, mlp, x, y, &settings))
        }
    };
    let mut pt = Point {
        sweep: sweep.to_string(),
        method,
        n: y.len(),
        width,
        p,
        seconds,
        lml: f64::NAN,
        logdet: f64::NAN,
        inv_quad: f64::NAN,
        cg_iterations: None,
        rel_residual: None,
        probe_rel_residual: None,
        converged: None,
        logdet_std_error: None,
        peak_mib: perf::peak_rss_mib(),
        load: perf::load_average(),
        error: None,
        settings: fingerprint(c, seed),
    };
    match outcome {
        Ok(o) => {
            pt.lml = o.value.lml;
            pt.logdet = o.value.logdet;
            pt.inv_quad = o.value.inv_quad;
            if let Some(cg) = o.cg {
                pt.cg_iterations = Some(cg.iterations);
                pt.rel_residual = Some(cg.rel_residual);
                pt.probe_rel_residual = Some(cg.probe_rel_residual);
                pt.converged = Some(cg.converged);
                pt.logdet_std_error = Some(cg.logdet_std_error);
            }
        }
        Err(e) => pt.error = Some(e.to_string()),
    }
    Ok(pt)
}

/// The solver settings of one point.
#[derive(Debug, Clone, Copy)]
pub struct SolverParams {
    /// Noise variance.
    pub noise: f64,
    /// CG relative tolerance.
    pub cg_tolerance: f64,
    /// CG iteration cap.
    pub max_iters: usize,
    /// SLQ probes.
    pub probes: usize,
    /// Preconditioner rank (both matrix-free methods).
    pub precond_rank: usize,
    /// Seed of the probes.
    pub seed: u64,
    /// Jacobian memory budget, bytes.
    pub memory_budget: usize,
}

impl SolverParams {
    fn of(c: &ScalingConfig) -> Self {
        Self {
            noise: c.noise,
            cg_tolerance: c.cg_tolerance,
            max_iters: c.max_iters,
            probes: c.probes,
            precond_rank: c.precond_rank,
            seed: 0,
            memory_budget: c.memory_budget,
        }
    }
}

/// How a matrix-free point ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgSummary {
    /// CG iterations.
    pub iterations: usize,
    /// Relative residual of the solve column.
    pub rel_residual: f64,
    /// Largest relative residual of the probe columns.
    pub probe_rel_residual: f64,
    /// Whether the solve column converged.
    pub converged: bool,
    /// SLQ standard error.
    pub logdet_std_error: f64,
}

/// A log marginal likelihood with, for the matrix-free methods, how CG ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmlOutcome {
    /// The value and its pieces.
    pub value: DenseLml,
    /// CG report (matrix-free methods).
    pub cg: Option<CgSummary>,
}

fn cg_summary(info: &krylov::cg::CgInfo, logdet_std_error: f64) -> CgSummary {
    let rel = info.rel_residuals();
    CgSummary {
        iterations: info.iterations,
        rel_residual: rel[0],
        probe_rel_residual: rel[1..].iter().copied().fold(0.0, f64::max),
        converged: info.converged[0],
        logdet_std_error,
    }
}

/// $\log \mathcal N(y \mid 0, K + \sigma^2 I)$ of `mlp`'s NTK at `x` by `method`.
pub fn lml_by<B: Backend>(
    method: Method,
    mlp: Mlp<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    s: &SolverParams,
) -> Result<LmlOutcome, GpError>
where
    B::FloatElem: krylov::Scalar + nalgebra::RealField + Copy + Into<f64>,
{
    let opts = JacobianParams {
        memory_budget: s.memory_budget,
        ..Default::default()
    };
    match method {
        Method::Dense => Ok(LmlOutcome {
            value: crate::compare::dense_ntk_gp(
                mlp,
                x,
                y,
                None,
                s.noise,
                if std::mem::size_of::<B::FloatElem>() == 4 {
                    ntk_gp::Precision::F32
                } else {
                    ntk_gp::Precision::F64
                },
            )?
            .lml,
            cg: None,
        }),
        Method::FunctionSpace | Method::ParameterSpace => {
            let config = NtkGpParams {
                strategy: if method == Method::FunctionSpace {
                    Strategy::MatrixFree
                } else {
                    Strategy::MatrixFreeParameterSpace
                },
                noise: Param::Fixed(s.noise),
                prior_scale: Param::Fixed(1.0),
                mean: MeanFunction::Zero,
                jacobian: opts,
                matrix_free: MatrixFreeParams {
                    cg_tolerance: s.cg_tolerance,
                    max_iters: s.max_iters,
                    probes: s.probes,
                    precond_rank: s.precond_rank,
                    seed: s.seed,
                    dense_fallback_max_n: 0,
                    ..MatrixFreeParams::default()
                },
                ..NtkGpParams::default()
            };
            let gp = NtkGp::new(mlp, x, y, config)?;
            let st = gp.matrix_free_state().ok_or(GpError::NotSupported {
                strategy: gp.choice().strategy,
                what: "a matrix-free state",
                instead: "ask for a matrix-free strategy",
            })?;
            let lml = gp.log_marginal_likelihood();
            let logdet = st.logdet.value;
            let n = y.len() as f64;
            Ok(LmlOutcome {
                value: DenseLml {
                    lml,
                    logdet,
                    inv_quad: -2.0
                        * (lml + 0.5 * logdet + 0.5 * n * (2.0 * std::f64::consts::PI).ln()),
                },
                cg: Some(cg_summary(&st.info, st.logdet.std_error)),
            })
        }
    }
}

/// The points of an earlier run's `points.json`.
fn read_points(path: &std::path::Path) -> Result<Vec<Point>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `points.json` and `points.csv`: after every point, so that a long sweep stopped
/// midway keeps what it measured.
fn write_points(ctx: &mut RunContext, points: &[Point]) -> Result<(), BenchError> {
    ctx.write_json("points", points)?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:e}"));
    ctx.write_csv(
        "points",
        &[
            "sweep",
            "method",
            "n",
            "width",
            "p",
            "seconds",
            "lml",
            "logdet",
            "inv_quad",
            "cg_iterations",
            "rel_residual",
            "probe_rel_residual",
            "converged",
            "logdet_std_error",
            "peak_mib",
            "load",
            "error",
        ],
        points.iter().map(|pt| {
            vec![
                pt.sweep.clone(),
                pt.method.name().to_string(),
                pt.n.to_string(),
                pt.width.to_string(),
                pt.p.to_string(),
                pt.seconds.to_string(),
                pt.lml.to_string(),
                pt.logdet.to_string(),
                pt.inv_quad.to_string(),
                pt.cg_iterations.map_or(String::new(), |v| v.to_string()),
                opt(pt.rel_residual),
                opt(pt.probe_rel_residual),
                pt.converged.map_or(String::new(), |v| v.to_string()),
                opt(pt.logdet_std_error),
                pt.peak_mib.to_string(),
                pt.load.to_string(),
                pt.error.clone().unwrap_or_default(),
            ]
        }),
    )?;
    Ok(())
}

impl Scaling {
    fn write_outputs(
        &self,
        ctx: &mut RunContext,
        points: &[Point],
        (gemm32, gemm64): (f64, f64),
        stopped: &BTreeMap<Method, f64>,
        stopped_w: &BTreeMap<Method, f64>,
    ) -> Result<Summary, BenchError> {
        let c = &self.config;
        write_points(ctx, points)?;
        let mut summary = Summary::default()
            .metric("gemm_gflops/f32", gemm32)
            .metric("gemm_gflops/f64", gemm64);
        let mut report = Report::new("Scaling of the log marginal likelihood (Figure 4)");
        report.paragraph(format!(
            "MLP {:?} ({:?}, p = {}), {:?}, σ² = {}, s² = 1, zero mean. Matrix-free: CG tolerance \
             {:e} on the solve column, {} SLQ probes, preconditioner rank {} (pivoted Cholesky in \
             function space, Nyström in parameter space). Matrix-product peak in this run: f32 {:.1}, \
             f64 {:.1} GFLOP/s ({}² GEMM). Load average during the run: {:.2}–{:.2}.",
            c.widths,
            c.activation,
            MlpConfig::new(&c.widths).layout().n_params(),
            c.dtype,
            c.noise,
            c.cg_tolerance,
            c.probes,
            c.precond_rank,
            gemm32,
            gemm64,
            c.gemm_size,
            points.iter().map(|p| p.load).fold(f64::INFINITY, f64::min),
            points.iter().map(|p| p.load).fold(f64::NEG_INFINITY, f64::max),
        ));
        for (sweep, label, stop) in [("n", "n", stopped), ("width", "W", stopped_w)] {
            let rows: Vec<&Point> = points.iter().filter(|p| p.sweep == sweep).collect();
            if rows.is_empty() {
                continue;
            }
            report.heading(if sweep == "n" {
                "Time against n".to_string()
            } else {
                format!("Time against the width (n = {})", c.width_sweep_n)
            });
            let dense_lml: BTreeMap<(usize, usize), f64> = rows
                .iter()
                .filter(|p| p.method == Method::Dense && p.error.is_none())
                .map(|p| ((p.n, p.width), p.lml))
                .collect();
            report.table(
                &[
                    label,
                    "p",
                    "method",
                    "seconds",
                    "lml",
                    "vs dense",
                    "CG iters",
                    "rel. residual",
                    "probe residual",
                    "SLQ s.e.",
                    "peak MiB",
                    "load",
                    "error",
                ],
                rows.iter().map(|p| {
                    // Blank where no dense value was computed at this size.
                    let vs = dense_lml
                        .get(&(p.n, p.width))
                        .map_or(Cell::from(""), |d| Cell::from(((p.lml - d) / d).abs()));
                    vec![
                        Cell::from(if sweep == "n" { p.n } else { p.width }),
                        Cell::from(p.p),
                        Cell::from(p.method.name()),
                        Cell::from(p.seconds),
                        Cell::from(p.lml),
                        vs,
                        p.cg_iterations.map_or(Cell::from(""), Cell::from),
                        p.rel_residual.map_or(Cell::from(""), Cell::from),
                        p.probe_rel_residual.map_or(Cell::from(""), Cell::from),
                        p.logdet_std_error.map_or(Cell::from(""), Cell::from),
                        Cell::from(p.peak_mib),
                        Cell::from(p.load),
                        Cell::from(p.error.clone().unwrap_or_default()),
                    ]
                }),
            );
            let mut series = Vec::new();
            let mut fits = Vec::new();
            for &m in &c.methods {
                let ok: Vec<&&Point> = rows
                    .iter()
                    .filter(|p| p.method == m && p.error.is_none())
                    .collect();
                let xs: Vec<f64> = ok
                    .iter()
                    .map(|p| if sweep == "n" { p.n as f64 } else { p.p as f64 })
                    .collect();
                let ts: Vec<f64> = ok.iter().map(|p| p.seconds).collect();
                if let Some(fit) = fit_power_law(&xs, &ts) {
                    summary =
                        summary.metric(format!("exponent/{sweep}/{}", m.name()), fit.exponent);
                    fits.push((m, fit));
                }
                if !xs.is_empty() {
                    series.push(ErrorSeries {
                        label: m.name().to_string(),
                        x: xs.iter().map(|v| v.log10()).collect(),
                        mean: ts.iter().map(|v| v.log10()).collect(),
                        err: vec![0.0; xs.len()],
                    });
                }
                if let Some(last) = ok.last() {
                    summary = summary.metric(
                        format!(
                            "seconds/{sweep}/{}/{}",
                            m.name(),
                            if sweep == "n" { last.n } else { last.width }
                        ),
                        last.seconds,
                    );
                }
            }
            let var = if sweep == "n" { "n" } else { "p" };
            report.paragraph(
                fits.iter()
                    .map(|(m, f): &(Method, PowerLaw)| {
                        format!(
                            "{}: t ∝ {var}^{:.2} ({} points)",
                            m.name(),
                            f.exponent,
                            f.points
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            if !stop.is_empty() {
                report.paragraph(format!(
                    "Stopped after exceeding the {} s budget: {}.",
                    c.budget_s,
                    stop.iter()
                        .map(|(m, s)| format!("{} ({s:.0} s)", m.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !series.is_empty() {
                let chart = ErrorBarChart::new(
                    if sweep == "n" {
                        "log marginal likelihood: time against n"
                    } else {
                        "log marginal likelihood: time against parameters"
                    },
                    format!("log10 {var}"),
                    "log10 seconds",
                    series,
                );
                let files = chart.write(ctx, &format!("time-vs-{var}"))?;
                report.figure(
                    format!("Time of one log marginal likelihood against {var}"),
                    &files,
                );
            }
        }
        let failed = points.iter().filter(|p| p.error.is_some()).count();
        let unconverged = points.iter().filter(|p| p.converged == Some(false)).count();
        summary = summary
            .metric("points", points.len() as f64)
            .metric("failed", failed as f64)
            .metric("unconverged", unconverged as f64);
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
    fn quick_profile_agrees_across_methods() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = RunContext::new(root.path(), Scaling::NAME, 0, Profile::Quick)
            .unwrap()
            .without_progress();
        let record = run::<Scaling>(&mut ctx).unwrap();
        assert_eq!(record.summary.metrics["failed"], 0.0);
        assert_eq!(record.summary.metrics["unconverged"], 0.0);
        let points: Vec<Point> = serde_json::from_str(
            &std::fs::read_to_string(root.path().join("scaling/points.json")).unwrap(),
        )
        .unwrap();
        let cfg = ScalingConfig::quick();
        assert_eq!(
            points.len(),
            (cfg.ns.len() + cfg.width_sweep.len()) * cfg.methods.len()
        );
        for pt in points.iter().filter(|p| p.method == Method::Dense) {
            for other in points
                .iter()
                .filter(|o| o.method != Method::Dense && o.n == pt.n && o.width == pt.width)
            {
                // The solve is exact to the CG tolerance; the SLQ log-determinant is a
                // stochastic estimate: allow a few of its standard errors.
                let q = (other.inv_quad - pt.inv_quad).abs() / pt.inv_quad;
                assert!(q < 1e-5, "{:?} n = {}: inv quad {q:e}", other.method, pt.n);
                let se = other.logdet_std_error.unwrap();
                assert!(
                    (other.logdet - pt.logdet).abs() < 4.0 * se + 1e-6 * pt.logdet.abs(),
                    "{:?} n = {}: logdet {} vs {} (s.e. {se})",
                    other.method,
                    pt.n,
                    other.logdet,
                    pt.logdet
                );
                assert!(other.cg_iterations.unwrap() > 0);
            }
            assert!(pt.peak_mib > 0.0 || pt.peak_mib.is_nan());
        }
        assert!(root.path().join("scaling/time-vs-n.png").is_file());
        assert!(root.path().join("scaling/report.md").is_file());
    }

    /// A resumed run takes the earlier run's points as they are and measures only the rest.
    #[test]
    fn resume_reuses_earlier_points() {
        let root = tempfile::tempdir().unwrap();
        let ctx = |dir: &str| {
            RunContext::new(root.path().join(dir), Scaling::NAME, 0, Profile::Quick)
                .unwrap()
                .without_progress()
        };
        let base = serde_json::json!({"ns": [60], "width_sweep": [], "methods": ["dense"]});
        crate::harness::run_json::<Scaling>(&mut ctx("a"), base).unwrap();
        let read = |dir: &str| -> Vec<Point> {
            read_points(&root.path().join(dir).join("scaling/points.json")).unwrap()
        };
        let mut first = read("a");
        first[0].seconds = 1234.5;
        let earlier = root.path().join("earlier.json");
        std::fs::write(&earlier, serde_json::to_string(&first).unwrap()).unwrap();
        // (A budget above the made-up time, which would stop the method otherwise.)
        let more = serde_json::json!({"ns": [60, 80], "width_sweep": [], "methods": ["dense"],
            "budget_s": 1e6,
            "resume": earlier});
        crate::harness::run_json::<Scaling>(&mut ctx("b"), more).unwrap();
        let second = read("b");
        assert_eq!(second.len(), 2);
        assert_eq!((second[0].n, second[0].seconds), (60, 1234.5));
        assert_eq!(second[0].lml, first[0].lml);
        assert!(second[1].n == 80 && second[1].seconds < 1000.0 && second[1].lml.is_finite());
        // A point of other settings, or of another network, is measured again.
        let mut other = first.clone();
        other[0].settings.push_str(" changed");
        std::fs::write(&earlier, serde_json::to_string(&other).unwrap()).unwrap();
        let again = serde_json::json!({"ns": [60], "width_sweep": [], "methods": ["dense"],
            "budget_s": 1e6, "resume": earlier});
        crate::harness::run_json::<Scaling>(&mut ctx("e"), again).unwrap();
        assert!(read("e")[0].seconds < 1000.0);
        first[0].p += 1;
        std::fs::write(&earlier, serde_json::to_string(&first).unwrap()).unwrap();
        let again = serde_json::json!({"ns": [60], "width_sweep": [], "methods": ["dense"],
            "budget_s": 1e6, "resume": earlier});
        crate::harness::run_json::<Scaling>(&mut ctx("d"), again).unwrap();
        assert!(read("d")[0].seconds < 1000.0);
        let own = serde_json::json!({"resume": root.path().join("d/scaling/points.json")});
        assert!(matches!(
            crate::harness::run_json::<Scaling>(&mut ctx("d"), own),
            Err(BenchError::Invalid { .. })
        ));
        let missing = serde_json::json!({"resume": root.path().join("none.json")});
        assert!(matches!(
            crate::harness::run_json::<Scaling>(&mut ctx("c"), missing),
            Err(BenchError::Io { .. })
        ));
    }

    #[test]
    fn anchor_like_data_is_nested_in_n() {
        let (x, y) = anchor_like_data(40, 3, &mut crate::harness::stream_rng(5, 0));
        let (x2, y2) = anchor_like_data(100, 3, &mut crate::harness::stream_rng(5, 0));
        assert_eq!(x, x2.rows(0, 40));
        assert_eq!(y, y2.rows(0, 40));
        assert!(x.iter().all(|v| v.is_finite()) && x.column(0) != x.column(1));
    }

    /// Parameter space on tensor blocks (a GELU network has no host Jacobian) against the
    /// dense value: the quadratic form exact to the CG tolerance, the log-determinant within
    /// a few SLQ standard errors.
    #[test]
    fn parameter_space_on_tensor_blocks_matches_dense() {
        let cfg = MlpConfig::new(&[5, 12, 12, 1]).with_activation(Activation::Gelu);
        let mut rng = crate::harness::stream_rng(4, 0);
        let (x, y) = anchor_like_data(80, 5, &mut rng);
        let s = SolverParams {
            precond_rank: 10,
            ..SolverParams::of(&ScalingConfig::quick())
        };
        let mlp = || {
            cfg.init::<burn_ndarray::NdArray<f64>>(2, &Default::default())
                .unwrap()
        };
        let dense = lml_by(Method::Dense, mlp(), &x, &y, &s).unwrap().value;
        let ps = lml_by(Method::ParameterSpace, mlp(), &x, &y, &s).unwrap();
        let cg = ps.cg.unwrap();
        assert!(cg.converged && cg.iterations > 0);
        let q = (ps.value.inv_quad - dense.inv_quad).abs() / dense.inv_quad;
        assert!(q < 1e-5, "inv quad {q:e}");
        assert!(
            (ps.value.logdet - dense.logdet).abs() < 4.0 * cg.logdet_std_error + 1e-6,
            "logdet {} vs {} (s.e. {})",
            ps.value.logdet,
            dense.logdet,
            cg.logdet_std_error
        );
    }

    /// A preconditioner rank of 0 (none) and one above p (a 5-2-1 network, p = 15) both
    /// still solve.
    #[test]
    fn parameter_space_takes_any_preconditioner_rank() {
        let cfg = MlpConfig::new(&[5, 2, 1]);
        let mut rng = crate::harness::stream_rng(5, 0);
        let (x, y) = anchor_like_data(40, 5, &mut rng);
        let mlp = || {
            cfg.init::<burn_ndarray::NdArray<f64>>(3, &Default::default())
                .unwrap()
        };
        let base = SolverParams::of(&ScalingConfig::quick());
        let dense = lml_by(Method::Dense, mlp(), &x, &y, &base).unwrap().value;
        for rank in [0, 30] {
            let s = SolverParams {
                precond_rank: rank,
                ..base
            };
            let ps = lml_by(Method::ParameterSpace, mlp(), &x, &y, &s).unwrap();
            assert!(ps.cg.unwrap().converged, "rank {rank}");
            let q = (ps.value.inv_quad - dense.inv_quad).abs() / dense.inv_quad;
            assert!(q < 1e-6, "rank {rank}: inv quad {q:e}");
        }
    }

    #[test]
    fn dense_f32_matches_dense_f64() {
        let cfg = MlpConfig::new(&[5, 30, 30, 1]);
        let mut rng = crate::harness::stream_rng(3, 0);
        let (x, y) = anchor_like_data(150, 5, &mut rng);
        let s = SolverParams::of(&ScalingConfig::quick());
        let m64 = cfg
            .init::<burn_ndarray::NdArray<f64>>(1, &Default::default())
            .unwrap();
        let m32 = cfg
            .init::<burn_ndarray::NdArray<f32>>(1, &Default::default())
            .unwrap();
        let a = lml_by(Method::Dense, m64, &x, &y, &s).unwrap().value;
        let b = lml_by(Method::Dense, m32, &x, &y, &s).unwrap().value;
        assert!(
            ((a.lml - b.lml) / a.lml).abs() < 1e-5,
            "{} vs {}",
            a.lml,
            b.lml
        );
        let exact = {
            let jac = ntk_ops::Jacobian::new(
                cfg.init::<burn_ndarray::NdArray<f64>>(1, &Default::default())
                    .unwrap(),
                ntk_ops::convert::from_dmatrix_f64(&x, &Default::default()),
                JacobianParams::default(),
            )
            .unwrap();
            let j = ntk_ops::convert::to_dmatrix_f64(jac.jacobian().unwrap());
            let k = &j * j.transpose() + DMatrix::identity(150, 150) * s.noise;
            let ch = k.cholesky().unwrap();
            let alpha = ch.solve(&y);
            -0.5 * y.dot(&alpha)
                - ch.l().diagonal().map(f64::ln).sum()
                - 75.0 * (2.0 * std::f64::consts::PI).ln()
        };
        assert!(
            ((a.lml - exact) / exact).abs() < 1e-10,
            "{} vs {exact}",
            a.lml
        );
    }
}
