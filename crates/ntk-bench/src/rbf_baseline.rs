//! The RBF-GP baseline on sinusoid tasks, run through the whole harness: each task's GP is
//! fitted on its own context points ([`RbfGp::fit`]), and predicts on the task's grid.
//!
//! Not registered for `ntk-bench reproduce`: the sinusoid experiment of the paper compares
//! this baseline with the NTK GP, which lands with `ntk-ops`. Until then it demonstrates and
//! tests the harness end to end (`cargo run -p ntk-bench --example sinusoid_rbf`).

use nalgebra::{DMatrix, DVector};
use ntk_gp::optimize::MaximizeParams;
use ntk_gp::rbf::{RbfGp, RbfParams};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::{Experiment, ExperimentConfig, RunContext, Summary};
use crate::metrics::{MeanStderr, TaskMetrics};
use crate::plot::{Curve, Panel, PanelGrid, Scatter};
use crate::report::{Cell, Report};
use crate::sinusoid::{SineTask, SinusoidTasks};

/// SolverParams of the RBF baseline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinusoidRbfConfig {
    /// The task distribution.
    pub tasks: SinusoidTasks,
    /// How many tasks.
    pub n_tasks: usize,
    /// How many of them to plot (the first ones).
    pub plotted: usize,
    /// L-BFGS iterations per fit.
    pub max_iters: u64,
}

impl Default for SinusoidRbfConfig {
    /// Ten tasks as in the paper's Figure 1, all plotted.
    fn default() -> Self {
        Self {
            tasks: SinusoidTasks::default(),
            n_tasks: 10,
            plotted: 10,
            max_iters: 200,
        }
    }
}

impl ExperimentConfig for SinusoidRbfConfig {
    fn quick() -> Self {
        Self {
            tasks: SinusoidTasks {
                grid_points: 200,
                ..SinusoidTasks::default()
            },
            n_tasks: 4,
            plotted: 4,
            max_iters: 100,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        self.tasks.validate()?;
        if self.n_tasks < 2 {
            return Err(BenchError::invalid(
                "n_tasks",
                "need ≥ 2 for a standard error",
            ));
        }
        if self.plotted == 0 || self.plotted > self.n_tasks {
            return Err(BenchError::invalid("plotted", "must be in 1..=n_tasks"));
        }
        Ok(())
    }
}

/// The RBF-GP baseline on sinusoid tasks.
#[derive(Debug, Clone)]
pub struct SinusoidRbf {
    config: SinusoidRbfConfig,
}

/// Length scales the fit starts from; the best marginal likelihood wins. From a single
/// start the optimizer often settles on "all noise" (a flat mean) for these wiggly tasks.
const START_LENGTHSCALES: [f64; 3] = [0.5, 1.0, 2.0];

/// Fits an RBF GP to `task`'s context points from several starts scaled to the data
/// (signal variance $\operatorname{var} y$, noise $10^{-2}\operatorname{var} y$, mean $\bar y$).
pub(crate) fn fit_restarts(task: &SineTask, opt: MaximizeParams) -> Result<RbfGp, BenchError> {
    let x = DMatrix::from_column_slice(task.x.len(), 1, &task.x);
    let y = DVector::from_column_slice(&task.y);
    fit_from_starts(&x, &y, &START_LENGTHSCALES, opt)
}

/// Fits an RBF GP to $(X, y)$ from each length scale in `starts` (the same for every input
/// dimension; signal variance $\operatorname{var} y$, noise $10^{-2}\operatorname{var} y$,
/// mean $\bar y$) and keeps the fit with the largest marginal likelihood.
pub(crate) fn fit_from_starts(
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    starts: &[f64],
    opt: MaximizeParams,
) -> Result<RbfGp, BenchError> {
    let var = y.variance().max(1e-6);
    let mut best: Option<RbfGp> = None;
    for &l in starts {
        let init = RbfParams {
            lengthscales: vec![l; x.ncols()],
            signal: var,
            noise: 1e-2 * var,
            mean: y.mean(),
        };
        let (gp, _) = RbfGp::fit(x.clone(), y, init, opt)?;
        if best
            .as_ref()
            .is_none_or(|b| gp.log_marginal_likelihood() > b.log_marginal_likelihood())
        {
            best = Some(gp);
        }
    }
    best.ok_or_else(|| BenchError::invalid("RBF fit", "no start length scale"))
}

/// One task's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task.
    pub task: SineTask,
    /// The fitted hyper-parameters.
    pub params: RbfParams,
    /// Test metrics on noisy targets at the grid.
    pub metrics: TaskMetrics,
}

impl Experiment for SinusoidRbf {
    const NAME: &'static str = "sinusoid-rbf";
    type Config = SinusoidRbfConfig;

    fn new(config: SinusoidRbfConfig) -> Result<Self, BenchError> {
        Ok(Self { config })
    }

    fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
        let cfg = &self.config;
        let tasks = cfg.tasks.sample_tasks(cfg.n_tasks, ctx.seed())?;
        let opt = MaximizeParams {
            max_iters: cfg.max_iters,
            ..MaximizeParams::default()
        };
        let bar = ctx.progress(tasks.len() as u64, "fitting RBF GPs");
        let mut results = Vec::with_capacity(tasks.len());
        let mut panels = Vec::new();
        let mut rows = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let gp = fit_restarts(&task, opt)?;
            let grid = cfg.tasks.grid(&task);
            let pred = gp.predict(&DMatrix::from_column_slice(grid.len(), 1, &grid))?;
            let noise = gp.params().noise;
            let var: Vec<f64> = pred.var.iter().map(|v| v + noise).collect();
            // Test targets drawn from their own stream, after the tasks' streams.
            let y_test = cfg
                .tasks
                .noisy(&task, &grid, &mut ctx.rng_stream(1 << 32 | i as u64))?;
            let metrics = TaskMetrics::evaluate(&y_test, pred.mean.as_slice(), &var)?;
            let truth: Vec<f64> = grid.iter().map(|&x| task.f(x)).collect();
            if i < cfg.plotted {
                for (j, &g) in grid.iter().enumerate() {
                    rows.push(vec![i as f64, g, truth[j], pred.mean[j], var[j]]);
                }
                panels.push(Panel {
                    title: format!(
                        "task {i}: A = {:.2}, w = {:.2}",
                        task.amplitude, task.frequency
                    ),
                    curves: vec![
                        Curve::line("truth", grid.clone(), truth),
                        Curve::mean_two_sd(
                            "RBF GP ± 2σ",
                            grid,
                            pred.mean.as_slice().to_vec(),
                            &var,
                        ),
                    ],
                    points: vec![Scatter {
                        label: "context".into(),
                        x: task.x.clone(),
                        y: task.y.clone(),
                    }],
                });
            }
            results.push(TaskResult {
                task,
                params: gp.params().clone(),
                metrics,
            });
            bar.inc(1);
        }
        bar.finish();

        let tasks_json = ctx.write_json("tasks", &results)?;
        let metrics_csv = ctx.write_csv(
            "metrics",
            &[
                "task",
                "amplitude",
                "frequency",
                "phase",
                "rmse",
                "nlpd",
                "coverage95",
            ],
            results.iter().enumerate().map(|(i, r)| {
                [
                    i as f64,
                    r.task.amplitude,
                    r.task.frequency,
                    r.task.phase,
                    r.metrics.rmse,
                    r.metrics.nlpd,
                    r.metrics.coverage95,
                ]
            }),
        )?;
        let predictions_csv =
            ctx.write_csv("predictions", &["task", "x", "truth", "mean", "var"], rows)?;
        let columns = if panels.len() > 4 { 5 } else { 2 };
        let figure = PanelGrid::new("RBF GP on sinusoid tasks", "x", "y", columns, panels)
            .write(ctx, "fits")?;

        let rmse = MeanStderr::of(&results.iter().map(|r| r.metrics.rmse).collect::<Vec<_>>())?;
        let nlpd = MeanStderr::of(&results.iter().map(|r| r.metrics.nlpd).collect::<Vec<_>>())?;
        let cover = MeanStderr::of(
            &results
                .iter()
                .map(|r| r.metrics.coverage95)
                .collect::<Vec<_>>(),
        )?;
        let (w_lo, w_hi) = cfg.tasks.frequency.range();
        let mut report = Report::new("RBF GP baseline on sinusoid tasks");
        report
            .paragraph(format!(
                "{} tasks $y = A\\sin(wx + b) + \\varepsilon$ with $w \\sim \\mathcal U({:.2}, {:.2})$, \
                 {} context points each; an RBF GP fitted per task by maximizing its marginal \
                 likelihood, tested on noisy targets at {} grid points (mean ± standard error \
                 over tasks).",
                cfg.n_tasks,
                w_lo,
                w_hi,
                cfg.tasks.context_points,
                cfg.tasks.grid_points
            ))
            .table(
                &["method", "RMSE", "NLPD", "95% coverage"],
                [vec![
                    Cell::from("RBF GP (per task)"),
                    rmse.into(),
                    nlpd.into(),
                    cover.into(),
                ]],
            )
            .figure(
                "Fits on the first tasks: mean ± 2σ, truth and context points",
                &figure,
            )
            .links([
                ("per-task metrics (CSV)", metrics_csv.as_path()),
                ("predictions on the grid (CSV)", predictions_csv.as_path()),
                (
                    "tasks, fitted hyper-parameters and metrics (JSON)",
                    tasks_json.as_path(),
                ),
            ])
            .reproduce(format!(
                "cargo run --release -p ntk-bench --example sinusoid_rbf -- {} {}",
                ctx.profile(),
                ctx.seed()
            ));
        report.write(ctx)?;
        Ok(Summary::default()
            .metric("rmse", rmse.mean)
            .metric("nlpd", nlpd.mean)
            .metric("coverage95", cover.mean))
    }
}
