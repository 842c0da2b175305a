//! The paper's sinusoid experiment (its Figures 1, 7, 8 and 9): a small network trained on one
//! sinusoid adapts to other sinusoids from 10 points each through its finite-NTK GP.
//!
//! 1. A 1-40-40-1 network is trained on the context points of task 0 (the mean squared error
//!    of `torch.nn.MSELoss`, SGD, momentum 0.9, batch 3, lr $10^{-3}$, 2500 epochs, ×0.1 every
//!    500 epochs: the authors' code).
//! 2. Each target task conditions the NTK GP (noise $\sigma^2 = \max(10^{-3}, \text{training
//!    MSE})$, zero prior mean, $s^2 = 1$: the authors' settings) on its 10 points and predicts
//!    on a grid. Function space and parameter space must give the same predictions (the run
//!    fails otherwise); parameter space with the paper's finite-difference Fisher is compared
//!    with them and the difference reported (its $O(\varepsilon)$ error is a property of the
//!    method, measured across $\varepsilon$ by the `fisher` experiment).
//! 3. Baselines on the same tasks: the network unchanged, its last layer retrained on the
//!    context points, ABLR (a shared 1-40-40-100 feature network, per-task Bayesian linear
//!    regression) and an RBF GP fitted per task.

use std::time::Instant;

use nalgebra::{DMatrix, DVector};
use ntk_gp::exact::{Hyper, Prediction};
use ntk_gp::fit::Param;
use ntk_gp::ntk::{MeanFunction, NtkGp, NtkGpParams};
use ntk_gp::optimize::MaximizeParams;
use ntk_gp::strategy::Strategy;
use ntk_gp::train::{Loss, Optimizer, TrainParams, train, train_mlp};
use ntk_gp::weight_space::WeightSpaceGp;
use ntk_ops::{
    Activation, FiniteDifferenceFisher, Jacobian, JacobianOperator, JacobianParams, Likelihood,
    Mlp, MlpConfig, convert,
};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::{Experiment, ExperimentConfig, RunContext, Summary};
use crate::metrics::{MeanStderr, TaskMetrics};
use crate::plot::{Curve, Panel, PanelGrid, Scatter};
use crate::rbf_baseline::fit_restarts;
use crate::report::{Cell, Report, reproduce_command};
use crate::sinusoid::{SineTask, SinusoidTasks};

/// The training loss of the source network and of the last-layer baseline: the mean squared
/// error without ½, as the paper's code (`torch.nn.MSELoss`), so its learning rates apply as
/// they are.
const SOURCE_LOSS: Loss = Loss::MeanSquaredError;

/// The CPU backend the experiments run on.
type B = ntk_ops::DefaultBackend;

/// The network's nonlinearity (the paper shows tanh and ReLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// tanh
    Tanh,
    /// ReLU
    Relu,
}

impl From<Nonlinearity> for Activation {
    fn from(n: Nonlinearity) -> Self {
        match n {
            Nonlinearity::Tanh => Activation::Tanh,
            Nonlinearity::Relu => Activation::Relu,
        }
    }
}

/// SolverParams of the sinusoid experiment; [`Default`] is the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinusoidConfig {
    /// The task distribution.
    pub tasks: SinusoidTasks,
    /// Target tasks in the table (task 0 is the source).
    pub n_targets: usize,
    /// Target tasks plotted.
    pub plotted: usize,
    /// Network widths.
    pub widths: Vec<usize>,
    /// Network nonlinearities: one network per entry, each with its own table and figure
    /// (the paper shows tanh and ReLU).
    pub activations: Vec<Nonlinearity>,
    /// Source training.
    pub train: TrainParams,
    /// Floor of the GP noise variance.
    pub min_noise: f64,
    /// Target tasks on which the parameter-space strategies (with $J^\top J$, and with the
    /// finite-difference Fisher) are checked against function space. With 10 points and
    /// $p = 1761$ parameter space is the slow choice: the finite-difference Fisher costs one
    /// perturbed forward pass per parameter.
    pub check_tasks: usize,
    /// Step $\varepsilon$ of the finite-difference Fisher.
    pub fd_eps: f64,
    /// Epochs of last-layer retraining (same optimizer as the source training, no decay).
    pub last_layer_epochs: usize,
    /// Width of ABLR's feature layer.
    pub ablr_features: usize,
    /// Adam steps of ABLR's feature network on the source task.
    pub ablr_steps: usize,
}

impl Default for SinusoidConfig {
    fn default() -> Self {
        Self {
            tasks: SinusoidTasks::default(),
            n_targets: 100,
            plotted: 6,
            widths: vec![1, 40, 40, 1],
            activations: vec![Nonlinearity::Tanh, Nonlinearity::Relu],
            train: TrainParams {
                optimizer: Optimizer::Sgd { momentum: 0.9 },
                lr: 1e-3,
                epochs: 2500,
                batch_size: 3,
                decay_every: 500,
                decay: 0.1,
                seed: 0,
            },
            min_noise: 1e-3,
            check_tasks: 10,
            fd_eps: 1e-4,
            last_layer_epochs: 1000,
            ablr_features: 100,
            ablr_steps: 2500,
        }
    }
}

impl ExperimentConfig for SinusoidConfig {
    fn quick() -> Self {
        let full = Self::default();
        Self {
            tasks: SinusoidTasks {
                grid_points: 200,
                ..SinusoidTasks::default()
            },
            n_targets: 8,
            plotted: 4,
            train: TrainParams {
                epochs: 1000,
                ..full.train
            },
            check_tasks: 2,
            last_layer_epochs: 200,
            ablr_steps: 300,
            ..full
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        self.tasks.validate()?;
        if self.n_targets < 2 {
            return Err(BenchError::invalid(
                "n_targets",
                "need ≥ 2 for a standard error",
            ));
        }
        if self.plotted > self.n_targets || self.check_tasks > self.n_targets {
            return Err(BenchError::invalid(
                "plotted / check_tasks",
                "at most n_targets",
            ));
        }
        if self.activations.is_empty() {
            return Err(BenchError::invalid("activations", "need at least one"));
        }
        if self.widths.len() < 2 || self.widths[0] != 1 || *self.widths.last().unwrap() != 1 {
            return Err(BenchError::invalid("widths", "need 1 input and 1 output"));
        }
        Ok(())
    }
}

/// The sinusoid experiment.
#[derive(Debug, Clone)]
pub struct Sinusoid {
    config: SinusoidConfig,
}

/// The methods compared, in table order.
const METHODS: [&str; 5] = ["NTK GP", "network", "last layer", "ABLR", "RBF GP"];

/// One method's predictions on one task, with the time its adaptation took.
struct Predicted {
    mean: Vec<f64>,
    /// Predictive variance of a new observation (latent + noise).
    var: Vec<f64>,
    seconds: f64,
}

fn column(x: &[f64]) -> DMatrix<f64> {
    DMatrix::from_column_slice(x.len(), 1, x)
}

/// The largest relative difference $\max_i |a_i - b_i| / \max_i |b_i|$.
fn rel_diff(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    (a - b).amax() / b.amax().max(f64::MIN_POSITIVE)
}

/// The network's last hidden layer (the inputs of its last Linear layer) at `x`.
fn hidden_features(mlp: &Mlp<B>, x: &[f64]) -> DMatrix<f64> {
    convert::to_dmatrix_f64(
        mlp.hidden_features(convert::from_dmatrix_f64(&column(x), &mlp.device())),
    )
}

/// The network's outputs at `x`.
fn outputs(mlp: &Mlp<B>, x: &[f64]) -> Result<Vec<f64>, BenchError> {
    let f = mlp
        .output(convert::from_dmatrix_f64(&column(x), &mlp.device()))
        .map_err(ntk_gp::GpError::from)?;
    Ok(convert::to_vec_f64(f))
}

/// The parameter-space posterior with the finite-difference Fisher $F \approx J^\top J/\sigma^2$
/// as its precision: ntk-gp's [`WeightSpaceGp::from_gram`] on the Gram matrix $\sigma^2 F$
/// (symmetrized), so that $M = \sigma^2 F + (\sigma^2/s^2) I = \sigma^2\Lambda$ with
/// $\Lambda = F + I/s^2$: weights $\bar w = \Lambda^{-1}J^\top r/\sigma^2$ and the test predictive
/// $J_*\bar w$, $\operatorname{diag}(J_*\Lambda^{-1}J_*^\top)$. $F$ is built densely from $p$
/// finite-difference products with unit vectors.
///
/// The forward difference's error (of order $\varepsilon$ for a smooth network, of order one where
/// a ReLU switches between $\theta$ and $\theta + \varepsilon v$) is not positive semi-definite.
/// Where it outweighs the ridge $\sigma^2/s^2$, $M$ is indefinite and the method has no posterior:
/// that is returned as [`FdOutcome::Indefinite`] with $M$'s smallest eigenvalue, not as an error.
fn fd_fisher_predict(
    mlp: &Mlp<B>,
    x: &[f64],
    y: &[f64],
    grid: &[f64],
    hyper: Hyper,
    eps: f64,
) -> Result<FdOutcome, BenchError> {
    let dev = mlp.device();
    let gp_err = ntk_gp::GpError::from;
    let jac = Jacobian::new(
        mlp.clone(),
        convert::from_dmatrix_f64(&column(x), &dev),
        JacobianParams::default(),
    )
    .map_err(gp_err)?;
    let p = jac.n_params();
    let fisher = FiniteDifferenceFisher::new(
        jac.clone(),
        Likelihood::Gaussian {
            noise_var: hyper.noise,
        },
    )
    .map_err(gp_err)?
    .with_eps(eps)
    .map_err(gp_err)?;
    let mut f = DMatrix::zeros(p, p);
    for start in (0..p).step_by(256) {
        let len = 256.min(p - start);
        let e = DMatrix::from_fn(p, len, |i, j| f64::from(i == start + j));
        let fe = fisher
            .try_apply(convert::from_dmatrix_f64(&e, &dev))
            .map_err(gp_err)?;
        f.columns_mut(start, len)
            .copy_from(&convert::to_dmatrix_f64(fe));
    }
    // The symmetrized finite-difference Fisher, as a Gram matrix: σ² F ≈ JᵀJ.
    let gram = (&f + f.transpose()) * (0.5 * hyper.noise);
    let r = DVector::from_column_slice(y);
    let jtr = convert::to_dmatrix_f64(
        jac.vjp(convert::from_dmatrix_f64(&column(y), &dev))
            .map_err(gp_err)?,
    );
    let gp = match WeightSpaceGp::from_gram(
        &gram,
        &jtr.column(0).into_owned(),
        r.norm_squared(),
        y.len(),
        hyper,
    ) {
        Ok(gp) => gp,
        Err(ntk_gp::GpError::NotPositiveDefinite { .. }) => {
            let ridge = hyper.noise / hyper.prior_scale;
            let min_eigenvalue = gram.symmetric_eigenvalues().min() + ridge;
            return Ok(FdOutcome::Indefinite { min_eigenvalue });
        }
        Err(e) => return Err(e.into()),
    };
    let jt = Jacobian::new(
        mlp.clone(),
        convert::from_dmatrix_f64(&column(grid), &dev),
        JacobianParams::default(),
    )
    .map_err(gp_err)?;
    let j_star = convert::to_dmatrix_f64(jt.jacobian().map_err(gp_err)?);
    Ok(FdOutcome::Posterior(
        gp.predict(&j_star, &DVector::zeros(grid.len()))?,
    ))
}

/// The report's sentence on the finite-difference Fisher's check.
fn fd_sentence(
    cfg: &SinusoidConfig,
    indefinite: &[f64],
    agree: (f64, f64),
    hyper: Hyper,
) -> String {
    let eps = cfg.fd_eps;
    let mut text = String::new();
    if !indefinite.is_empty() {
        let worst = indefinite.iter().copied().fold(f64::INFINITY, f64::min);
        text.push_str(&format!(
            "with the finite-difference Fisher ($\\varepsilon = {eps}$, the paper's forward \
             difference) $\\sigma^2 F + (\\sigma^2/s^2) I$ was indefinite on {} of the {} \
             tasks (smallest eigenvalue {worst:.1e}, with the ridge $\\sigma^2/s^2 = {:.1e}$ \
             included: the difference's error, of order $\\varepsilon$ for a smooth network and of \
             order one where a ReLU switches between $\\theta$ and $\\theta + \\varepsilon v$, \
             outweighs the ridge), so that method gave no posterior there",
            indefinite.len(),
            cfg.check_tasks,
            hyper.noise / hyper.prior_scale,
        ));
    }
    if indefinite.len() < cfg.check_tasks {
        // The ε clause once: the indefinite part above already names it.
        text.push_str(&format!(
            "{}parameter space with the finite-difference Fisher{} vs function space {:.1e} \
             and {:.1e}",
            if text.is_empty() {
                ""
            } else {
                "; on the others, "
            },
            if text.is_empty() {
                format!(" ($\\varepsilon = {eps}$)")
            } else {
                String::new()
            },
            agree.0,
            agree.1,
        ));
    }
    text.push('.');
    text
}

/// What the finite-difference Fisher gave on one task.
enum FdOutcome {
    /// The parameter-space posterior.
    Posterior(Prediction),
    /// $\sigma^2 F + (\sigma^2/s^2)I$ was not positive definite: its smallest eigenvalue.
    Indefinite {
        /// The smallest eigenvalue (negative).
        min_eigenvalue: f64,
    },
}

/// ABLR's feature network ([`ntk_gp::ablr::train_features`]): the source MLP's layout with
/// `ablr_features` outputs, trained on the source task.
fn train_ablr(
    cfg: &SinusoidConfig,
    activation: Nonlinearity,
    source: &SineTask,
    seed: u64,
) -> Result<(ntk_ops::Network<B>, Vec<f64>), BenchError> {
    let mut widths = cfg.widths.clone();
    *widths.last_mut().expect("validated") = cfg.ablr_features;
    let features = MlpConfig::new(&widths)
        .with_activation(activation.into())
        .network();
    let params = ntk_gp::ablr::AblrParams {
        steps: cfg.ablr_steps,
        lr: 1e-2,
        seed,
    };
    let (net, report) = ntk_gp::ablr::train_features::<B>(
        &features,
        &column(&source.x),
        &DVector::from_column_slice(&source.y),
        &params,
        &Default::default(),
        |_, _| {},
    )?;
    Ok((net, report.epoch_loss))
}

/// ABLR on one target ([`ntk_gp::ablr::fit_predict`]) on the grid, with the fitted noise
/// added to the variances.
fn ablr_predict(
    net: &ntk_ops::Network<B>,
    task: &SineTask,
    grid: &[f64],
) -> Result<Predicted, BenchError> {
    let t0 = Instant::now();
    let (pred, hyper) = ntk_gp::ablr::fit_predict(
        net,
        &column(&task.x),
        &DVector::from_column_slice(&task.y),
        &column(grid),
    )?;
    Ok(Predicted {
        mean: pred.mean.as_slice().to_vec(),
        var: pred.var.iter().map(|v| v + hyper.noise).collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The last Linear layer retrained on the context points from the trained weights, all other
/// layers frozen (same optimizer as the source training, without decay).
fn last_layer_predict(
    mlp: &Mlp<B>,
    cfg: &SinusoidConfig,
    task: &SineTask,
    grid: &[f64],
    noise: f64,
) -> Result<Predicted, BenchError> {
    let t0 = Instant::now();
    let phi = hidden_features(mlp, &task.x);
    let h = phi.ncols();
    let theta_all = mlp.flatten_f64();
    // PyTorch order: the last layer's weight [1, h] then its bias, at the end of θ.
    let mut w = theta_all[theta_all.len() - h - 1..].to_vec();
    let config = TrainParams {
        epochs: cfg.last_layer_epochs,
        decay_every: 0,
        decay: 1.0,
        ..cfg.train
    };
    train(
        &mut w,
        task.x.len(),
        &config,
        |w, batch| {
            let f: Vec<f64> = batch
                .iter()
                .map(|&i| (0..h).map(|k| phi[(i, k)] * w[k]).sum::<f64>() + w[h])
                .collect();
            let y: Vec<f64> = batch.iter().map(|&i| task.y[i]).collect();
            // The source network's loss; its output gradient already carries the 1/batch.
            let (loss, df) = SOURCE_LOSS.value_and_output_gradient(&f, &y);
            let mut grad = vec![0.0; h + 1];
            for (&i, d) in batch.iter().zip(&df) {
                for k in 0..h {
                    grad[k] += d * phi[(i, k)];
                }
                grad[h] += d;
            }
            Ok((loss, grad))
        },
        |_, _| {},
    )?;
    let phi_grid = hidden_features(mlp, grid);
    let mean = (0..grid.len())
        .map(|i| (0..h).map(|k| phi_grid[(i, k)] * w[k]).sum::<f64>() + w[h])
        .collect();
    Ok(Predicted {
        mean,
        var: vec![noise; grid.len()],
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Experiment for Sinusoid {
    const NAME: &'static str = "sinusoid";
    type Config = SinusoidConfig;

    fn new(config: SinusoidConfig) -> Result<Self, BenchError> {
        Ok(Self { config })
    }

    fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
        let mut report = Report::new("Sinusoid few-shot transfer");
        let mut summary = Summary::default();
        for (i, &activation) in self.config.activations.iter().enumerate() {
            // The first network's files keep plain names; the others get a suffix.
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("-{activation:?}").to_lowercase()
            };
            for (key, value) in self.run_one(ctx, activation, &suffix, &mut report)? {
                let key = if i == 0 {
                    key
                } else {
                    format!("{}/{key}", &suffix[1..])
                };
                summary = summary.metric(key, value);
            }
        }
        report.reproduce(reproduce_command(Self::NAME, ctx.profile(), ctx.seed()));
        report.write(ctx)?;
        Ok(summary)
    }
}

impl Sinusoid {
    /// One network (of nonlinearity `activation`) and every target task: writes its files with
    /// `suffix`, adds its section to `report`, returns its headline numbers.
    fn run_one(
        &self,
        ctx: &mut RunContext,
        activation: Nonlinearity,
        suffix: &str,
        report: &mut Report,
    ) -> Result<Vec<(String, f64)>, BenchError> {
        let cfg = &self.config;
        let gp_err = ntk_gp::GpError::from;
        let tasks = cfg.tasks.sample_tasks(cfg.n_targets + 1, ctx.seed())?;
        let (source, targets) = tasks.split_first().expect("n_targets ≥ 2");

        // 1. The source network.
        let dev = Default::default();
        let net_config = MlpConfig::new(&cfg.widths).with_activation(activation.into());
        let init = net_config.init::<B>(ctx.seed(), &dev).map_err(gp_err)?;
        let bar = ctx.progress(cfg.train.epochs as u64, "training the source network");
        let t0 = Instant::now();
        let (mlp, curve) = train_mlp(
            &init,
            &column(&source.x),
            &DVector::from_column_slice(&source.y),
            SOURCE_LOSS,
            &TrainParams {
                seed: ctx.seed(),
                ..cfg.train
            },
            |_, _| bar.inc(1),
        )?;
        bar.finish_and_clear();
        let train_seconds = t0.elapsed().as_secs_f64();
        let fitted = outputs(&mlp, &source.x)?;
        let train_mse = fitted
            .iter()
            .zip(&source.y)
            .map(|(f, y)| (f - y).powi(2))
            .sum::<f64>()
            / source.y.len() as f64;
        let noise = train_mse.max(cfg.min_noise);
        let hyper = Hyper {
            noise,
            prior_scale: 1.0,
        };
        ctx.write_csv(
            &format!("training_loss{suffix}"),
            &["epoch", "loss"],
            curve
                .epoch_loss
                .iter()
                .enumerate()
                .map(|(e, l)| [e as f64, *l]),
        )?;
        let t_ablr = Instant::now();
        let (ablr_net, _) = train_ablr(cfg, activation, source, ctx.seed())?;
        let ablr_seconds = t_ablr.elapsed().as_secs_f64();
        let mut check_seconds = 0.0;

        // 2. Each target task.
        let gp_config = |strategy| NtkGpParams {
            strategy,
            noise: Param::Fixed(noise),
            prior_scale: Param::Fixed(1.0),
            mean: MeanFunction::Zero,
            ..NtkGpParams::default()
        };
        let mut per_method: Vec<Vec<TaskMetrics>> = vec![Vec::new(); METHODS.len()];
        let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); METHODS.len()];
        let (mut agree_param, mut agree_fd) = ((0.0f64, 0.0f64), (0.0f64, 0.0f64));
        // The smallest eigenvalue of σ²F + (σ²/s²)I on each checked task where it was < 0.
        let mut fd_indefinite: Vec<f64> = Vec::new();
        let mut panels = Vec::new();
        let mut rows = Vec::new();
        let bar = ctx.progress(targets.len() as u64, "adapting to target tasks");
        for (t, task) in targets.iter().enumerate() {
            let grid = cfg.tasks.grid(task);
            let y_test = cfg
                .tasks
                .noisy(task, &grid, &mut ctx.rng_stream(1 << 32 | t as u64))?;
            let x = column(&task.x);
            let y = DVector::from_column_slice(&task.y);
            let xg = column(&grid);

            let t0 = Instant::now();
            let dense = NtkGp::new(mlp.clone(), &x, &y, gp_config(Strategy::Dense))?;
            let ntk = dense.predict(&xg)?;
            let ntk_seconds = t0.elapsed().as_secs_f64();
            if t < cfg.check_tasks {
                let t_check = Instant::now();
                let param = NtkGp::new(mlp.clone(), &x, &y, gp_config(Strategy::ParameterSpace))?
                    .predict(&xg)?;
                agree_param.0 = agree_param.0.max(rel_diff(&param.mean, &ntk.mean));
                agree_param.1 = agree_param.1.max(rel_diff(&param.var, &ntk.var));
                match fd_fisher_predict(&mlp, &task.x, &task.y, &grid, hyper, cfg.fd_eps)? {
                    FdOutcome::Posterior(fd) => {
                        agree_fd.0 = agree_fd.0.max(rel_diff(&fd.mean, &ntk.mean));
                        agree_fd.1 = agree_fd.1.max(rel_diff(&fd.var, &ntk.var));
                    }
                    FdOutcome::Indefinite { min_eigenvalue } => {
                        fd_indefinite.push(min_eigenvalue);
                    }
                }
                check_seconds += t_check.elapsed().as_secs_f64();
            }
            let network = outputs(&mlp, &grid)?;
            let predictions = [
                Predicted {
                    mean: ntk.mean.as_slice().to_vec(),
                    var: ntk.var.iter().map(|v| v + noise).collect(),
                    seconds: ntk_seconds,
                },
                Predicted {
                    mean: network.clone(),
                    var: vec![noise; grid.len()],
                    seconds: 0.0,
                },
                last_layer_predict(&mlp, cfg, task, &grid, noise)?,
                ablr_predict(&ablr_net, task, &grid)?,
                {
                    let t0 = Instant::now();
                    let gp = fit_restarts(task, MaximizeParams::default())?;
                    let p = gp.predict(&xg)?;
                    let n = gp.params().noise;
                    Predicted {
                        mean: p.mean.as_slice().to_vec(),
                        var: p.var.iter().map(|v| v + n).collect(),
                        seconds: t0.elapsed().as_secs_f64(),
                    }
                },
            ];
            for (m, p) in predictions.iter().enumerate() {
                per_method[m].push(TaskMetrics::evaluate(&y_test, &p.mean, &p.var)?);
                seconds[m].push(p.seconds);
            }
            let truth: Vec<f64> = grid.iter().map(|&g| task.f(g)).collect();
            if t < cfg.plotted {
                for (j, &g) in grid.iter().enumerate() {
                    rows.push(vec![
                        t as f64 + 1.0,
                        g,
                        truth[j],
                        network[j],
                        ntk.mean[j],
                        ntk.var[j],
                    ]);
                }
                panels.push(Panel {
                    title: format!(
                        "task {}: A = {:.2}, w = {:.2}",
                        t + 1,
                        task.amplitude,
                        task.frequency
                    ),
                    curves: vec![
                        Curve::line("truth", grid.clone(), truth),
                        Curve::line("network", grid.clone(), network),
                        Curve::mean_two_sd(
                            "NTK GP ± 2σ",
                            grid.clone(),
                            ntk.mean.as_slice().to_vec(),
                            ntk.var.as_slice(),
                        ),
                    ],
                    points: vec![Scatter {
                        label: "context".into(),
                        x: task.x.clone(),
                        y: task.y.clone(),
                    }],
                });
            }
            bar.inc(1);
        }
        bar.finish_and_clear();

        // 3. The strategies must agree: round-off for parameter space, O(ε) for the FD Fisher.
        if agree_param.0 > 1e-6 || agree_param.1 > 1e-5 {
            return Err(BenchError::invalid(
                "strategy agreement",
                format!("parameter space differs from function space by {agree_param:?}"),
            ));
        }

        // 4. Outputs.
        let summaries: Vec<[MeanStderr; 4]> = (0..METHODS.len())
            .map(|m| {
                let pick =
                    |f: fn(&TaskMetrics) -> f64| per_method[m].iter().map(f).collect::<Vec<_>>();
                Ok([
                    MeanStderr::of(&pick(|t| t.rmse))?,
                    MeanStderr::of(&pick(|t| t.nlpd))?,
                    MeanStderr::of(&pick(|t| t.coverage95))?,
                    MeanStderr::of(&seconds[m].iter().map(|s| s * 1e3).collect::<Vec<_>>())?,
                ])
            })
            .collect::<Result<_, BenchError>>()?;
        let metrics_csv = ctx.write_csv(
            &format!("metrics{suffix}"),
            &["task", "method", "rmse", "nlpd", "coverage95", "seconds"],
            (0..targets.len()).flat_map(|t| {
                let per_method = &per_method;
                let seconds = &seconds;
                (0..METHODS.len()).map(move |m| {
                    vec![
                        (t + 1).to_string(),
                        METHODS[m].to_string(),
                        per_method[m][t].rmse.to_string(),
                        per_method[m][t].nlpd.to_string(),
                        per_method[m][t].coverage95.to_string(),
                        seconds[m][t].to_string(),
                    ]
                })
            }),
        )?;
        let predictions_csv = ctx.write_csv(
            &format!("predictions{suffix}"),
            &["task", "x", "truth", "network", "ntk_mean", "ntk_var"],
            rows,
        )?;
        let figure = PanelGrid::new(
            "Sinusoid transfer: the finite-NTK GP of a network trained on one task",
            "x",
            "y",
            3,
            panels,
        )
        .write(ctx, &format!("tasks{suffix}"))?;
        let table = ctx.write_json(
            &format!("summary{suffix}"),
            &METHODS
                .iter()
                .zip(&summaries)
                .map(|(m, s)| (m.to_string(), s.to_vec()))
                .collect::<Vec<_>>(),
        )?;
        let (w_lo, w_hi) = cfg.tasks.frequency.range();
        report
            .heading(format!("{activation:?} network"))
            .paragraph(format!(
                "A {} {:?} network trained on task 0's {} points (mean squared error as `torch.nn.MSELoss`; {}, \
                 training MSE {:.2e}, {:.1} s) adapts to {} target tasks \
                 $y = A\\sin(wx+b)+\\varepsilon$, $w \\sim \\mathcal U({:.2}, {:.2})$, from {} context \
                 points each. The NTK GP uses $\\sigma^2 = {:.3e}$, $s^2 = 1$ and a zero prior mean (the \
                 authors' settings). Metrics on noisy targets at {} grid points; mean ± standard error \
                 over tasks; time per adapted task in milliseconds.",
                cfg.widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-"),
                activation,
                source.x.len(),
                cfg.train,
                train_mse,
                train_seconds,
                targets.len(),
                w_lo,
                w_hi,
                cfg.tasks.context_points,
                noise,
                cfg.tasks.grid_points,
            ))
            .table(
                &["method", "RMSE", "NLPD", "95% coverage", "ms per task"],
                METHODS.iter().zip(&summaries).map(|(m, s)| {
                    vec![Cell::from(*m), s[0].into(), s[1].into(), s[2].into(), s[3].into()]
                }),
            )
            .paragraph(format!(
                "Strategy check on the first {} tasks ({:.1} s): parameter space vs function space, \
                 largest relative difference {:.1e} (means) and {:.1e} (variances); {} \
                 ABLR's feature network trained in {:.1} s. The network and last-layer baselines have no epistemic \
                 uncertainty: their predictive variance is the noise $\\sigma^2$ alone. ABLR's \
                 per-task variances are fitted exactly (L-BFGS on the spectral marginal likelihood) \
                 instead of the authors' 150 Adam steps.",
                cfg.check_tasks,
                check_seconds,
                agree_param.0,
                agree_param.1,
                fd_sentence(cfg, &fd_indefinite, agree_fd, hyper),
                ablr_seconds
            ))
            .figure("Target tasks: truth, context points, the network and the NTK GP (mean ± 2σ)", &figure)
            .links([
                ("per-task metrics (CSV)", metrics_csv.as_path()),
                ("NTK-GP predictions on the plotted tasks (CSV)", predictions_csv.as_path()),
                ("summary table (JSON)", table.as_path()),
            ]);
        let mut metrics = vec![
            ("noise".to_string(), noise),
            ("agreement/parameter_mean".to_string(), agree_param.0),
            (
                "agreement/fd_fisher_mean".to_string(),
                if fd_indefinite.len() < cfg.check_tasks {
                    agree_fd.0
                } else {
                    f64::NAN
                },
            ),
            (
                "fd_fisher/indefinite_tasks".to_string(),
                fd_indefinite.len() as f64,
            ),
        ];
        for (m, s) in METHODS.iter().zip(&summaries) {
            let key = m.to_lowercase().replace(' ', "_");
            metrics.push((format!("rmse/{key}"), s[0].mean));
            metrics.push((format!("nlpd/{key}"), s[1].mean));
            metrics.push((format!("coverage95/{key}"), s[2].mean));
            metrics.push((format!("ms_per_task/{key}"), s[3].mean));
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sentence names ε once, whether or not some tasks were indefinite.
    #[test]
    fn fd_sentence_names_the_step_once() {
        let cfg = SinusoidConfig::default();
        let hyper = Hyper {
            noise: 0.01,
            prior_scale: 1.0,
        };
        for indefinite in [vec![], vec![-0.09]] {
            let text = fd_sentence(&cfg, &indefinite, (1e-3, 2e-3), hyper);
            assert_eq!(text.matches("\\varepsilon =").count(), 1, "{text}");
            assert!(text.ends_with('.'));
        }
    }
}
