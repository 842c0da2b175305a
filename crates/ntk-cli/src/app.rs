//! The `ntk` command line: its commands, flags and what each does.
//!
//! `src/main.rs` calls [`main`]; the end-to-end tests (the workspace's `tests/` member) run
//! the same function as a process of their own.
//!
//! Every failure prints one line on standard error and exits with code 2 (bad input) or 3
//! (numerical failure), never a panic; an output file is written all at once or not at all,
//! and never over an input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use burn::prelude::Backend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nalgebra::DVector;
use ntk_gp::MultiTask;
use ntk_gp::fit::Param;
use ntk_gp::ntk::{MeanFunction, NtkGp, NtkGpParams};
use ntk_gp::strategy::{CostAssumptions, ProblemSize, Strategy, estimates};
use ntk_gp::train::{Loss, Optimizer, TrainParams, train_mlp};
use ntk_ops::checkpoint::{DiskDtype, params_to_bytes};
use ntk_ops::{Device, DeviceError, Network};
use serde_json::json;

use crate::classify;
use crate::error::{CliError, EXIT_BAD_INPUT};
use crate::memory;
use crate::model::{LoadedModel, load_model, mlp_config};
use crate::output::{Staged, prediction_csv, refuse_overwriting, write_atomically};
use crate::progress::Progress;
use crate::spec::ArchConfig;
use crate::table::{Table, read_table};

/// The backend of `ntk train` (the CPU, in `f64`).
type TrainBackend = ntk_ops::DefaultBackend;

#[derive(Parser)]
#[command(
    name = "ntk",
    version,
    about = "Adapt a trained network to new data in closed form, with calibrated uncertainty (finite-NTK Gaussian processes)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Condition the network's finite-NTK GP on TRAIN.csv and predict TEST.csv.
    #[command(
        after_help = "Example (the weather tasks of `ntk-bench export weather`, docs/src/cli.md):\n  ntk adapt --model seattle-2012.safetensors --arch 1-40-40-1:tanh \\\n      --train new-york-2013.train.csv --test new-york-2013.test.csv \\\n      --noise fit --prior-scale fit --output new-york-2013.pred.csv --json"
    )]
    Adapt(AdaptArgs),
    /// Train a network on SOURCE.csv (Gaussian loss) and save it in PyTorch's layout.
    #[command(
        after_help = "Example:\n  ntk train --arch 1-40-40-1:tanh --data seattle-2012.train.csv --epochs 500 --lr 0.01 \\\n      --out seattle-2012.safetensors"
    )]
    Train(TrainArgs),
    /// Show the layers, parameter shapes, input shape and output count of a model file.
    #[command(
        after_help = "Examples:\n  ntk inspect cnn.onnx\n  ntk inspect named.safetensors --arch 2-16-16-1:tanh --layers fc1,fc2,fc3"
    )]
    Inspect(InspectArgs),
    /// Adapt to every task in DIR (NAME.train.csv, optional NAME.test.csv) sharing one network.
    #[command(
        after_help = "Example:\n  ntk tasks --model seattle-2012.safetensors --arch 1-40-40-1:tanh --dir weather-tasks/ \\\n      --prior-scale fit --out-dir predictions/"
    )]
    Tasks(TasksArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum MeanArg {
    Zero,
    Constant,
    Network,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StrategyArg {
    Auto,
    Dense,
    /// Matrix-free in function space (CG + SLQ on the n × n system).
    #[value(alias = "matrix-free")]
    Function,
    Parameter,
    /// Matrix-free in parameter space (Nyström-preconditioned CG + SLQ on the p × p system).
    #[value(name = "parameter-free")]
    ParameterFree,
}

impl StrategyArg {
    /// The strategy the flag names.
    fn strategy(self) -> Strategy {
        match self {
            Self::Auto => Strategy::Auto,
            Self::Dense => Strategy::Dense,
            Self::Function => Strategy::MatrixFree,
            Self::Parameter => Strategy::ParameterSpace,
            Self::ParameterFree => Strategy::MatrixFreeParameterSpace,
        }
    }
}

/// Where the network comes from (`ntk adapt`, `ntk tasks`, `ntk inspect`).
#[derive(Args, Clone)]
pub(crate) struct NetworkArgs {
    /// Architecture WIDTHS:ACTIVATION, e.g. 1-40-40-1:tanh (tanh, relu, elu, gelu, sigmoid,
    /// softplus): needed for a safetensors file, checked against the graph of an ONNX file.
    #[arg(long, value_name = "SPEC")]
    pub(crate) arch: Option<ArchConfig>,
    /// Key prefixes of a safetensors file's Linear layers, in order (e.g. fc1,fc2,fc3).
    /// Default: every prefix with a 2-D `weight`, in natural order (0 < 3 < 6, fc2 < fc10).
    #[arg(long, value_name = "P1,P2,…", value_delimiter = ',')]
    pub(crate) layers: Option<Vec<String>>,
}

#[derive(Args)]
struct InspectArgs {
    /// The model: FILE.onnx, or a safetensors file with --arch.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    network: NetworkArgs,
}

#[derive(Args, Clone)]
pub(crate) struct ModelArgs {
    /// The trained network: FILE.onnx (a graph from `torch.onnx.export`, weights included or
    /// in external data files next to it), or a safetensors file as written by
    /// `safetensors.torch.save_file(model.state_dict(), path)`, with --arch.
    #[arg(long, value_name = "FILE")]
    pub(crate) model: PathBuf,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
    /// Name of the target column.
    #[arg(long, default_value = "y")]
    pub(crate) target: String,
    /// Noise variance σ² > 0, or `fit` (the default) to maximize the marginal likelihood
    /// (L-BFGS from half the targets' sample variance, within [1e-6, 1e6]; --json reports how
    /// the fit ended). Gaussian likelihood only.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) noise: Option<String>,
    /// Prior scale s² > 0 of θ′ ~ N(0, s²I), or `fit`.
    #[arg(long, default_value = "1", allow_negative_numbers = true)]
    pub(crate) prior_scale: String,
    /// Prior mean: zero, a fitted constant, or the network's own output (the default).
    #[arg(long, value_enum)]
    pub(crate) mean: Option<MeanArg>,
    /// Inference strategy: auto (chosen by cost), dense, function or parameter.
    ///
    /// `dense`: Cholesky of the n×n kernel matrix. `parameter`: exact, in the P-dimensional
    /// weight space. `function`: matrix-free, preconditioned CG to a 1e-8 relative residual and
    /// the log-determinant by stochastic Lanczos quadrature (16 probes, rank-30 pivoted
    /// Cholesky preconditioner). Accuracy against an f64 numpy reference (the PyTorch
    /// round-trip fixture, fixed σ² and s²): dense and parameter 1e-8 relative on every output
    /// column and on the log marginal likelihood; function 1e-7 relative on mean/lower/upper,
    /// 1e-8 on var/std, the log marginal likelihood within 3 of its standard errors (printed
    /// by --json as `log_marginal_likelihood_std_error`), and a constant mean fitted matrix-free
    /// (profiled out exactly from the CG solves) to 1e-6 relative.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) strategy: StrategyArg,
    /// Device: `cpu`, or `cuda` / `cuda:INDEX` when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Largest peak memory to plan for, e.g. `4GiB`, `500MB` or bytes (default: the memory
    /// available now). A plan whose estimate is larger is refused, naming one that fits.
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_memory: Option<String>,
    /// Wall-clock limit in seconds of the hyper-parameter fit (default: none; the fit is
    /// always bounded by its iteration and evaluation limits).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub(crate) time_limit: Option<f64>,
    /// No progress line on standard error (it is shown only on a terminal, after 2 s).
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// The likelihood of the new task's targets.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LikelihoodArg {
    /// Real targets with Gaussian noise of variance σ².
    Gaussian,
    /// Class labels 0…C−1 (C = the network's outputs), a softmax of the logits; the
    /// posterior is the Laplace approximation of the linearized classifier.
    Categorical,
}

#[derive(Args)]
pub(crate) struct AdaptArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// `gaussian` (regression) or `categorical` (classification: the target column holds
    /// class labels; OUT.csv gets mean_c, var_c of each logit and the probabilities p_c).
    #[arg(long, value_enum, default_value = "gaussian")]
    pub(crate) likelihood: LikelihoodArg,
    /// Training data of the new task (CSV with a header).
    #[arg(long, value_name = "TRAIN.csv")]
    pub(crate) train: PathBuf,
    /// Test inputs (and, optionally, targets for metrics).
    #[arg(long, value_name = "TEST.csv")]
    pub(crate) test: PathBuf,
    /// Where to write the predictions (default: standard output).
    #[arg(long, value_name = "OUT.csv")]
    pub(crate) output: Option<PathBuf>,
    /// Print one JSON object with the fitted values, metrics and timings.
    #[arg(long)]
    pub(crate) json: bool,
    /// Split the training rows across ranks: the processes of `mpirun -np N ntk adapt
    /// --distributed …` (built with the `mpi` feature), or N threads with --threads N. Each
    /// rank reads only its part of TRAIN.csv; rank 0 writes OUT.csv and the --json object
    /// and prints every rank's timings and all-reduce share on standard error. Runs the
    /// matrix-free function-space strategy (--strategy auto or function) with a Gaussian
    /// likelihood; every other flag works as without it.
    #[arg(long)]
    pub(crate) distributed: bool,
    /// With --distributed: N threads of this process as the ranks (no MPI needed).
    #[arg(long, value_name = "N", requires = "distributed")]
    pub(crate) threads: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    /// Architecture WIDTHS:ACTIVATION.
    #[arg(long, value_name = "SPEC")]
    arch: ArchConfig,
    /// Training data (CSV with a header).
    #[arg(long, value_name = "SOURCE.csv")]
    data: PathBuf,
    /// Name of the target column.
    #[arg(long, default_value = "y")]
    target: String,
    /// Passes over the data.
    #[arg(long, default_value_t = 1000)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Momentum of SGD.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seed of the initialization and the minibatches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the weights.
    #[arg(long, value_name = "M.safetensors")]
    out: PathBuf,
    /// Largest peak memory to plan for (as for `ntk adapt`).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
}

#[derive(Args)]
struct TasksArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of NAME.train.csv (and optional NAME.test.csv) files.
    #[arg(long)]
    dir: PathBuf,
    /// Folder for NAME.pred.csv files (default: none written).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write the fitted hierarchy as JSON: the network, its weights, and every task's data and
    /// fitted hyper-parameters (`ntk_gp::MultiTask::from_state` restores bit-identical
    /// predictions).
    #[arg(long, value_name = "STATE.json")]
    save_state: Option<PathBuf>,
}

/// Runs the `ntk` command on the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    crate::model::install_quiet_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, as for every other failure, keeping clap's lists and tips.
            eprintln!("ntk: {}", one_line(&e.to_string()));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let result = match cli.command {
        Command::Adapt(a) => adapt(&a),
        Command::Train(t) => train(&t),
        Command::Tasks(t) => tasks(&t),
        Command::Inspect(i) => inspect(&i),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ntk: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Clap's message as one line: the lines before `Usage:`, trimmed and joined, a list after
/// a colon separated by commas (`the following required arguments were not provided:
/// --train <TRAIN.csv>, --test <TEST.csv>`), allowed values and tips kept.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut in_list = false;
    let lines = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty());
    for line in lines {
        let line = line.trim_start_matches("error: ");
        if out.is_empty() {
        } else if in_list && (line.starts_with('-') || line.starts_with('<')) {
            out.push_str(if out.ends_with(':') { " " } else { ", " });
        } else {
            out.push_str("; ");
            in_list = false;
        }
        out.push_str(line);
        in_list |= line.ends_with(':');
    }
    if out.is_empty() {
        "invalid arguments".into()
    } else {
        out
    }
}

/// The `--device` value, parsed and checked (compiled in, and usable at run time).
fn device(model: &ModelArgs) -> Result<Device, CliError> {
    let device: Device = model
        .device
        .parse()
        .map_err(|e: DeviceError| CliError::Usage(e.to_string()))?;
    device.check().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(device)
}

/// Runs `$body` with `B` the backend of `$device` and `$dev` its device handle: burn-ndarray
/// in `f64` on the CPU, burn-cuda in `f32` on `cuda:i` (with the `cuda` feature).
macro_rules! on_device {
    ($device:expr, |$dev:ident: B| $body:expr) => {
        match $device {
            Device::Cpu => {
                type B = ntk_ops::DefaultBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                type B = ntk_ops::device::CudaBackend;
                let $dev = ntk_ops::device::CudaDevice::new(i);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            d @ Device::Cuda(_) => Err(CliError::Usage(DeviceError::NotCompiled(d).to_string())),
        }
    };
}

/// `FLOAT` (positive) or `fit`, a fit starting from `init`.
pub(crate) fn param(name: &str, text: &str, init: f64) -> Result<Param, CliError> {
    if text == "fit" {
        return Ok(Param::fit_variance(init));
    }
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Param::Fixed(v)),
        _ => Err(CliError::Usage(format!(
            "{name} must be a positive number or `fit`, got `{text}`"
        ))),
    }
}

/// Where a fitted σ² starts: half the sample variance of the targets, within $[10^{-4}, 10^4]$.
///
/// A start far below the optimum (say 0.1 for targets of variance 7) gives a first gradient
/// step so large that L-BFGS lands on the upper bound $10^6$ and stops there.
fn noise_init(y: &DVector<f64>) -> f64 {
    let n = y.len() as f64;
    let mean = y.mean();
    noise_start(y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
}

/// [`noise_init`] from the targets' sample variance `var`.
pub(crate) fn noise_start(var: f64) -> f64 {
    (0.5 * var).clamp(1e-4, 1e4)
}

/// The prior mean `--mean` names (the network's outputs by default; a constant is fitted).
pub(crate) fn mean_function(model: &ModelArgs) -> MeanFunction {
    match model.mean.unwrap_or(MeanArg::Network) {
        MeanArg::Zero => MeanFunction::Zero,
        MeanArg::Constant => MeanFunction::Constant(Param::Fit {
            init: 0.0,
            lower: -1e6,
            upper: 1e6,
        }),
        MeanArg::Network => MeanFunction::Network,
    }
}

/// Refuses a log marginal likelihood that is not finite (at the hyper-parameters `hyper`).
pub(crate) fn check_lml(lml: f64, hyper: ntk_gp::Hyper) -> Result<(), CliError> {
    if lml.is_finite() {
        return Ok(());
    }
    Err(CliError::NonFinite(format!(
        "the log marginal likelihood is {lml} at σ² = {:e}, s² = {:e}: the targets may be \
         of extreme scale (standardize them)",
        hyper.noise, hyper.prior_scale
    )))
}

/// Reads the model file named by `--model` (ONNX, or safetensors with `--arch`).
pub(crate) fn load(model: &ModelArgs) -> Result<LoadedModel, CliError> {
    load_model(
        &model.model,
        model.network.arch.as_ref(),
        model.network.layers.as_deref(),
    )
}

/// A regression adapts one output: refuses a network with several (a classifier).
pub(crate) fn check_one_output<B: Backend>(
    network: &Network<B>,
    path: &Path,
) -> Result<(), CliError> {
    if network.n_outputs() != 1 {
        return Err(CliError::Usage(format!(
            "{}: the network has {} outputs; regression adapts one (a classifier is adapted by ntk adapt --likelihood categorical)",
            path.display(),
            network.n_outputs()
        )));
    }
    Ok(())
}

fn gp_config(model: &ModelArgs, y: &DVector<f64>, plan: &Plan) -> Result<NtkGpParams, CliError> {
    let mut config = NtkGpParams {
        strategy: plan.strategy,
        noise: param(
            "--noise",
            model.noise.as_deref().unwrap_or("fit"),
            noise_init(y),
        )?,
        prior_scale: param("--prior-scale", &model.prior_scale, 1.0)?,
        mean: mean_function(model),
        ..NtkGpParams::default()
    };
    config.optimizer.time_limit = time_limit(model)?;
    Ok(config)
}

/// Checks the values of the model flags before any file is read; gives the memory limit
/// every task is planned against.
pub(crate) fn check_flags(model: &ModelArgs) -> Result<Option<f64>, CliError> {
    param("--noise", model.noise.as_deref().unwrap_or("fit"), 1.0)?;
    param("--prior-scale", &model.prior_scale, 1.0)?;
    time_limit(model)?;
    memory_limit(model.max_memory.as_deref())
}

pub(crate) fn time_limit(model: &ModelArgs) -> Result<Option<Duration>, CliError> {
    model
        .time_limit
        .map(|t| {
            Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--time-limit must be a positive number of seconds, got {t}"
                    ))
                })
        })
        .transpose()
}

/// The memory a run may use: `--max-memory`, else what the machine has available now.
fn memory_limit(max_memory: Option<&str>) -> Result<Option<f64>, CliError> {
    match max_memory {
        Some(text) => memory::parse_size(text)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("--max-memory: {e}"))),
        None => Ok(memory::available_bytes()),
    }
}

/// The strategy a task runs with and the peak memory it is estimated to need.
pub(crate) struct Plan {
    pub(crate) strategy: Strategy,
    pub(crate) reason: String,
    pub(crate) size: ProblemSize,
    pub(crate) estimated_bytes: f64,
    pub(crate) limit_bytes: Option<f64>,
}

/// Chooses the strategy for `n` training and `m` test points and refuses a plan whose
/// estimated peak exceeds the memory limit, naming the estimate and a strategy that fits.
/// Nothing of the task has been allocated yet.
pub(crate) fn plan<B: Backend>(
    model: &ModelArgs,
    network: &Network<B>,
    limit: Option<f64>,
    n: usize,
    m: usize,
) -> Result<Plan, CliError> {
    let size = ProblemSize::network(network, n, m).ok_or_else(|| {
        CliError::Usage(format!(
            "the network has more parameters than a {}-bit machine can count",
            usize::BITS
        ))
    })?;
    let costs = CostAssumptions {
        memory_budget: limit.unwrap_or(f64::INFINITY),
        ..CostAssumptions::default()
    };
    let all = estimates(&size, &costs);
    let (strategy, reason) = match model.strategy {
        StrategyArg::Auto => {
            let c = ntk_gp::strategy::choose(&size, &costs);
            (c.strategy, c.reason)
        }
        other => {
            let s = other.strategy();
            (s, format!("{s:?} as asked"))
        }
    };
    let estimated_bytes = all
        .iter()
        .find(|e| e.strategy == strategy)
        .map_or(0.0, |e| e.bytes);
    if let Some(limit) = limit.filter(|l| estimated_bytes > *l) {
        let fits: Vec<String> = all
            .iter()
            .filter(|e| e.bytes <= limit)
            .map(|e| {
                format!(
                    "--strategy {} ({})",
                    strategy_flag(e.strategy),
                    memory::format_bytes(e.bytes)
                )
            })
            .collect();
        let source = if model.max_memory.is_some() {
            "--max-memory"
        } else {
            "available memory"
        };
        return Err(CliError::Memory(format!(
            "the {strategy:?} strategy needs about {} at n = {n}, {m} test points, p = {}, over the {} of {source}; {}",
            memory::format_bytes(estimated_bytes),
            size.params,
            memory::format_bytes(limit),
            if fits.is_empty() {
                "no strategy fits: use fewer points or a machine with more memory".to_string()
            } else {
                format!("what fits: {}", fits.join(", "))
            }
        )));
    }
    Ok(Plan {
        strategy,
        reason,
        size,
        estimated_bytes,
        limit_bytes: limit,
    })
}

fn strategy_flag(s: Strategy) -> &'static str {
    match s {
        Strategy::Dense => "dense",
        Strategy::MatrixFree => "function",
        Strategy::ParameterSpace => "parameter",
        Strategy::MatrixFreeParameterSpace => "parameter-free",
        Strategy::Auto => "auto",
    }
}

/// What a CSV's input columns must fit: a count, and how to name it in a message.
pub(crate) struct Inputs {
    count: usize,
    what: String,
}

impl Inputs {
    pub(crate) fn of_model(model: &LoadedModel) -> Self {
        Self {
            count: model.n_inputs(),
            what: format!("the model's input shape {:?}", model.config.input),
        }
    }

    fn of_arch(arch: &ArchConfig) -> Self {
        Self {
            count: arch.widths[0],
            what: format!("the architecture {arch}"),
        }
    }
}

pub(crate) fn check_inputs(inputs: &Inputs, table: &Table, path: &Path) -> Result<(), CliError> {
    if table.inputs.ncols() != inputs.count {
        let names = if table.input_names.len() <= 8 {
            format!(" ({})", table.input_names.join(","))
        } else {
            String::new()
        };
        return Err(CliError::Csv {
            path: path.to_path_buf(),
            message: format!(
                "{} input columns{names}, but {} takes {}",
                table.inputs.ncols(),
                inputs.what,
                inputs.count
            ),
        });
    }
    Ok(())
}

/// One task's data, read and checked.
pub(crate) struct Task {
    pub(crate) train: Table,
    pub(crate) test: Table,
    pub(crate) y: DVector<f64>,
    /// The training and test files.
    pub(crate) paths: [PathBuf; 2],
}

/// Reads a task's files; their input columns are checked against the model by
/// [`check_task`] once it is read.
pub(crate) fn read_task(model: &ModelArgs, train: &Path, test: &Path) -> Result<Task, CliError> {
    let train_t = read_table(train, &model.target, true)?;
    let test_t = read_table(test, &model.target, false)?;
    let y = train_t
        .complete_target()
        .expect("a training file has every target");
    Ok(Task {
        train: train_t,
        test: test_t,
        y,
        paths: [train.to_path_buf(), test.to_path_buf()],
    })
}

/// The training file's input columns against the model's input shape, then the test
/// file's against the training file's.
pub(crate) fn check_task(task: &Task, inputs: &Inputs) -> Result<(), CliError> {
    check_inputs(inputs, &task.train, &task.paths[0])?;
    if task.test.input_names != task.train.input_names {
        return Err(CliError::Csv {
            path: task.paths[1].clone(),
            message: format!(
                "input columns ({}) differ from the training file's ({})",
                task.test.input_names.join(","),
                task.train.input_names.join(",")
            ),
        });
    }
    Ok(())
}

/// The outcome of adapting to one task.
struct Adapted<B: Backend> {
    gp: NtkGp<B>,
    scored: Scored,
    seconds_fit: f64,
}

fn adapt_one<B: Backend>(
    network: &Network<B>,
    model: &ModelArgs,
    task: &Task,
    plan: &Plan,
    progress: &Progress,
) -> Result<Adapted<B>, CliError>
where
    B::FloatElem: krylov::Scalar,
{
    let y = &task.y;
    progress.set_message(format!(
        "fitting: {:?}, n = {}, p = {}, about {}",
        plan.strategy,
        plan.size.n,
        plan.size.params,
        memory::format_bytes(plan.estimated_bytes)
    ));
    let t0 = Instant::now();
    let gp = NtkGp::new(
        network.clone(),
        &task.train.inputs,
        y,
        gp_config(model, y, plan)?,
    )?;
    let seconds_fit = t0.elapsed().as_secs_f64();
    let scored = score(&gp, task, plan, progress)?;
    Ok(Adapted {
        gp,
        scored,
        seconds_fit,
    })
}

/// A task's predictions as CSV, with their metrics where the test file has targets.
pub(crate) struct Scored {
    pub(crate) csv: String,
    pub(crate) metrics: Option<serde_json::Value>,
    pub(crate) seconds_predict: f64,
}

/// Checks the fit and predicts the task's test points.
fn score<B: Backend>(
    gp: &NtkGp<B>,
    task: &Task,
    plan: &Plan,
    progress: &Progress,
) -> Result<Scored, CliError>
where
    B::FloatElem: krylov::Scalar,
{
    check_lml(gp.log_marginal_likelihood(), gp.hyper())?;
    progress.set_message(format!(
        "predicting {} test points ({:?})",
        task.test.inputs.nrows(),
        plan.strategy
    ));
    let t1 = Instant::now();
    let pred = gp.predict(&task.test.inputs)?;
    scored(task, &pred, gp.hyper().noise, t1.elapsed().as_secs_f64())
}

/// The predictions of `task`'s test points as CSV, with their metrics; refused if any is
/// not finite.
pub(crate) fn scored(
    task: &Task,
    pred: &ntk_gp::Prediction,
    noise: f64,
    seconds_predict: f64,
) -> Result<Scored, CliError> {
    if let Some(i) = (0..pred.mean.len()).find(|&i| {
        !(pred.mean[i].is_finite() && pred.var[i].is_finite() && (pred.var[i] + noise).is_finite())
    }) {
        return Err(CliError::NonFinite(format!(
            "the prediction at test row {} is not finite (mean {}, var {}): nothing was written",
            i + 1,
            pred.mean[i],
            pred.var[i]
        )));
    }
    let metrics = task
        .test
        .target
        .as_ref()
        .map(|yt| metrics(yt, &pred.mean, &pred.var, noise))
        .transpose()?
        .flatten();
    let csv = prediction_csv(
        &task.test.input_names,
        &task.test.inputs,
        &pred.mean,
        &pred.var,
        noise,
    );
    Ok(Scored {
        csv,
        metrics,
        seconds_predict,
    })
}

/// RMSE, mean negative log predictive density of N(mean, var + σ²), and 95% coverage
/// ([`ntk_gp::metrics`]) over the test rows that have a target (`None` if none has).
pub(crate) fn metrics(
    y: &[Option<f64>],
    mean: &DVector<f64>,
    var: &DVector<f64>,
    noise: f64,
) -> Result<Option<serde_json::Value>, CliError> {
    let scored: Vec<(f64, f64, f64)> = y
        .iter()
        .enumerate()
        .filter_map(|(i, yi)| yi.map(|yi| (yi, mean[i], var[i] + noise)))
        .collect();
    if scored.is_empty() {
        return Ok(None);
    }
    let (y, mean, var): (Vec<f64>, Vec<f64>, Vec<f64>) = unzip3(&scored);
    let m = ntk_gp::metrics::TaskMetrics::evaluate(&y, &mean, &var)?;
    Ok(Some(
        json!({ "rmse": m.rmse, "nlpd": m.nlpd, "coverage95": m.coverage95, "n_scored": y.len() }),
    ))
}

/// Three columns of a list of triples.
fn unzip3(rows: &[(f64, f64, f64)]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let col = |f: fn(&(f64, f64, f64)) -> f64| rows.iter().map(f).collect();
    (col(|r| r.0), col(|r| r.1), col(|r| r.2))
}

/// Warns on standard error when a fit stopped without converging or at a bound.
pub(crate) fn warn_about_fit(fit: Option<&ntk_gp::optimize::Maximum>, task: &str) {
    let Some(f) = fit else { return };
    if !f.converged {
        eprintln!(
            "ntk: warning: {task}the hyper-parameter fit did not converge ({})",
            f.termination
        );
    } else if f.at_bound.contains(&true) {
        eprintln!(
            "ntk: warning: {task}a fitted hyper-parameter stopped at its bound ({})",
            f.termination
        );
    }
}

/// What `--likelihood categorical` runs on: its flags checked (the noise, the mean function
/// and the time limit of a hyper-parameter fit belong to regression; the prior scale is
/// fixed), then the data and the model read, in the order of the Gaussian path.
fn categorical_request(args: &AdaptArgs) -> Result<classify::Request, CliError> {
    let m = &args.model;
    if m.time_limit.is_some() {
        return Err(CliError::Usage(
            "--time-limit bounds a hyper-parameter fit, which --likelihood categorical does not run"
                .into(),
        ));
    }
    if m.noise.is_some() {
        return Err(CliError::Usage(
            "--noise is the Gaussian noise of regression; a categorical likelihood has none (drop --noise)"
                .into(),
        ));
    }
    if m.mean.is_some() {
        return Err(CliError::Usage(
            "--mean applies to regression; a classifier's prior mean is the network's logits"
                .into(),
        ));
    }
    let prior_scale = match param("--prior-scale", &m.prior_scale, 1.0)? {
        Param::Fixed(v) => v,
        _ => {
            return Err(CliError::Usage(
                "--prior-scale fit is not available with --likelihood categorical: give a number"
                    .into(),
            ));
        }
    };
    let strategy = match m.strategy {
        StrategyArg::Function | StrategyArg::Parameter => {
            return Err(CliError::Usage(
                "--likelihood categorical runs --strategy dense, parameter-free or auto".into(),
            ));
        }
        other => other.strategy(),
    };
    let limit = check_flags(m)?;
    if let Some(out) = &args.output {
        refuse_overwriting(out, &[&args.train, &args.test, &m.model])?;
    }
    let task = read_task(m, &args.train, &args.test)?;
    let model = load(m)?;
    check_task(&task, &Inputs::of_model(&model))?;
    Ok(classify::Request {
        model,
        task,
        output: args.output.clone(),
        json: args.json,
        prior_scale,
        strategy,
        memory_limit: limit,
        max_memory_given: m.max_memory.is_some(),
    })
}

fn adapt(args: &AdaptArgs) -> Result<(), CliError> {
    on_device!(device(&args.model)?, |dev: B| adapt_on::<B>(args, &dev))
}

fn adapt_on<B: Backend>(args: &AdaptArgs, dev: &B::Device) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    if args.json && args.output.is_none() {
        return Err(CliError::Usage(
            "--json prints JSON on standard output: give the predictions a file with --output"
                .into(),
        ));
    }
    if args.distributed {
        return crate::distributed::adapt::<B>(args, dev);
    }
    if args.likelihood == LikelihoodArg::Categorical {
        return classify::adapt_categorical::<B>(&categorical_request(args)?, dev);
    }
    let limit = check_flags(&args.model)?;
    if let Some(out) = &args.output {
        refuse_overwriting(out, &[&args.train, &args.test, &args.model.model])?;
    }
    let t0 = Instant::now();
    // The data, then the weights (their shapes are compared with the architecture before
    // anything is allocated), then the plan, refused if it does not fit in memory.
    let task = read_task(&args.model, &args.train, &args.test)?;
    let model = load(&args.model)?;
    check_task(&task, &Inputs::of_model(&model))?;
    let network = model.network::<B>(dev)?;
    check_one_output(&network, &args.model.model)?;
    let plan = plan(
        &args.model,
        &network,
        limit,
        task.y.len(),
        task.test.inputs.nrows(),
    )?;
    let progress = Progress::start(String::new(), args.model.quiet);
    let a = adapt_one(&network, &args.model, &task, &plan, &progress)?;
    drop(progress);
    match &args.output {
        Some(path) => write_atomically(path, a.scored.csv.as_bytes())?,
        None => print!("{}", a.scored.csv),
    }
    if args.json {
        let reason = match args.model.strategy {
            StrategyArg::Auto => plan.reason.clone(),
            _ => a.gp.choice().reason.clone(),
        };
        let summary = Summary {
            strategy: a.gp.choice().strategy,
            reason,
            hyper: a.gp.hyper(),
            constant_mean: a.gp.constant_mean(),
            log_marginal_likelihood: a.gp.log_marginal_likelihood(),
            logdet_std_error: a.gp.matrix_free_state().map(|st| st.logdet.std_error),
            fit: a.gp.fit_report(),
            n_train: a.gp.n_train(),
            n_params: a.gp.n_params(),
            seconds_fit: a.seconds_fit,
        };
        println!("{}", summary.json(args, &task, &plan, &a.scored, t0));
    } else if let Some(m) = &a.scored.metrics {
        eprintln!("ntk: {m}");
    }
    warn_about_fit(a.gp.fit_report(), "");
    Ok(())
}

/// What the `--json` object of `ntk adapt` reports of a fit, on one process or over ranks.
pub(crate) struct Summary<'a> {
    pub(crate) strategy: Strategy,
    pub(crate) reason: String,
    pub(crate) hyper: ntk_gp::Hyper,
    pub(crate) constant_mean: f64,
    pub(crate) log_marginal_likelihood: f64,
    /// The SLQ log-determinant's standard error (matrix-free strategies).
    pub(crate) logdet_std_error: Option<f64>,
    pub(crate) fit: Option<&'a ntk_gp::optimize::Maximum>,
    pub(crate) n_train: usize,
    pub(crate) n_params: usize,
    pub(crate) seconds_fit: f64,
}

impl Summary<'_> {
    /// The `--json` object: the same keys whichever way the run went.
    pub(crate) fn json(
        &self,
        args: &AdaptArgs,
        task: &Task,
        plan: &Plan,
        scored: &Scored,
        t0: Instant,
    ) -> serde_json::Value {
        let h = self.hyper;
        json!({
            "strategy": format!("{:?}", self.strategy),
            "strategy_reason": self.reason,
            "noise": h.noise,
            "prior_scale": h.prior_scale,
            "constant_mean": matches!(args.model.mean, Some(MeanArg::Constant)).then_some(self.constant_mean),
            "log_marginal_likelihood": self.log_marginal_likelihood,
            // Matrix-free: the SLQ log-determinant's standard error, halved as in the lml.
            "log_marginal_likelihood_std_error": self.logdet_std_error.map(|e| 0.5 * e),
            "fit": self.fit.map(|f| json!({ "iterations": f.iterations, "converged": f.converged, "termination": f.termination, "at_bound": f.at_bound })),
            "n_train": self.n_train,
            "n_test": task.test.inputs.nrows(),
            "n_params": self.n_params,
            "metrics": scored.metrics,
            "memory": {
                "estimated_peak_bytes": plan.estimated_bytes,
                "peak_rss_bytes": memory::peak_rss_bytes(),
                "limit_bytes": plan.limit_bytes,
            },
            "timings": { "fit_s": self.seconds_fit, "predict_s": scored.seconds_predict, "total_s": t0.elapsed().as_secs_f64() },
        })
    }
}

fn train(args: &TrainArgs) -> Result<(), CliError> {
    refuse_overwriting(&args.out, &[&args.data])?;
    if *args.arch.widths.last().expect("parsed") != 1 {
        return Err(CliError::Usage(format!(
            "architecture {}: `ntk train` fits one target, so the last width must be 1",
            args.arch
        )));
    }
    if args.batch_size == 0 || args.epochs == 0 {
        return Err(CliError::Usage(
            "--epochs and --batch-size must be positive".into(),
        ));
    }
    let lr_ok = args.lr.is_finite() && args.lr > 0.0;
    if !(lr_ok && (0.0..1.0).contains(&args.momentum)) {
        return Err(CliError::Usage(format!(
            "--lr must be positive and --momentum in [0, 1), got {} and {}",
            args.lr, args.momentum
        )));
    }
    // Parameters, gradients, momentum and their copies, and one batch's activations.
    let size = ProblemSize::mlp(&args.arch.widths, args.batch_size, 0).ok_or_else(|| {
        CliError::Usage(format!(
            "architecture {} has more parameters than a {}-bit machine can count",
            args.arch,
            usize::BITS
        ))
    })?;
    let need = ntk_gp::strategy::PROCESS_BYTES
        + 8.0 * (8.0 * size.params as f64 + 8.0 * (args.batch_size * size.activations) as f64);
    if let Some(limit) = memory_limit(args.max_memory.as_deref())?.filter(|l| need > *l) {
        return Err(CliError::Memory(format!(
            "training {} ({} parameters) needs about {}, over the {} available",
            args.arch,
            size.params,
            memory::format_bytes(need),
            memory::format_bytes(limit)
        )));
    }
    let data = read_table(&args.data, &args.target, true)?;
    check_inputs(&Inputs::of_arch(&args.arch), &data, &args.data)?;
    let config = mlp_config(&args.arch);
    let init = config
        .init::<TrainBackend>(args.seed, &Default::default())
        .map_err(|e| CliError::Model(e.to_string()))?;
    let schedule = TrainParams {
        optimizer: Optimizer::Sgd {
            momentum: args.momentum,
        },
        lr: args.lr,
        epochs: args.epochs,
        batch_size: args.batch_size,
        decay_every: 0,
        decay: 1.0,
        seed: args.seed,
    };
    let y = data
        .complete_target()
        .expect("a training file has every target");
    let (mlp, report) = train_mlp(
        &init,
        &data.inputs,
        &y,
        Loss::Gaussian,
        &schedule,
        |_, _| {},
    )?;
    let final_loss = report.epoch_loss.last().copied().unwrap_or(f64::NAN);
    let theta = mlp.flatten_f64();
    if !final_loss.is_finite() || theta.iter().any(|v| !v.is_finite()) {
        return Err(CliError::NonFinite(format!(
            "training diverged (final loss {final_loss}): lower --lr; nothing was written"
        )));
    }
    let bytes = params_to_bytes(&mlp.layout(), &theta, DiskDtype::F32)
        .map_err(|e| CliError::Model(e.to_string()))?;
    write_atomically(&args.out, &bytes)?;
    eprintln!(
        "ntk: trained {} ({} parameters) for {} epochs, final loss {:.6e}; wrote {}",
        args.arch,
        mlp.n_params(),
        args.epochs,
        final_loss,
        args.out.display()
    );
    Ok(())
}

fn tasks(args: &TasksArgs) -> Result<(), CliError> {
    on_device!(device(&args.model)?, |dev: B| tasks_on::<B>(args, &dev))
}

fn tasks_on<B: Backend>(args: &TasksArgs, dev: &B::Device) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    let limit = check_flags(&args.model)?;
    let entries = std::fs::read_dir(&args.dir).map_err(|source| CliError::Io {
        path: args.dir.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".train.csv")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(CliError::Usage(format!(
            "no NAME.train.csv files in {}",
            args.dir.display()
        )));
    }
    let files: Vec<(PathBuf, PathBuf)> = names
        .iter()
        .map(|name| {
            let train = args.dir.join(format!("{name}.train.csv"));
            let test = args.dir.join(format!("{name}.test.csv"));
            let test = if test.exists() { test } else { train.clone() };
            (train, test)
        })
        .collect();
    let mut inputs: Vec<&Path> = vec![&args.model.model];
    inputs.extend(files.iter().flat_map(|(a, b)| [a.as_path(), b.as_path()]));
    if let Some(out) = &args.out_dir {
        for name in &names {
            refuse_overwriting(&out.join(format!("{name}.pred.csv")), &inputs)?;
        }
    }
    if let Some(state) = &args.save_state {
        refuse_overwriting(state, &inputs)?;
    }
    // Every task is read and planned, then adapted, before anything is written, so that a
    // bad task leaves neither prediction files nor a partial summary behind.
    let tasks = files
        .iter()
        .map(|(train, test)| read_task(&args.model, train, test))
        .collect::<Result<Vec<_>, _>>()?;
    let model = load(&args.model)?;
    let inputs = Inputs::of_model(&model);
    for task in &tasks {
        check_task(task, &inputs)?;
    }
    let network = model.network::<B>(dev)?;
    check_one_output(&network, &args.model.model)?;
    let plans = tasks
        .iter()
        .map(|t| {
            plan(
                &args.model,
                &network,
                limit,
                t.y.len(),
                t.test.inputs.nrows(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bar = if args.model.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(names.len() as u64)
    }
    .with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tasks, {elapsed} {msg}")
            .expect("a valid template"),
    );
    let progress = Progress::start(String::new(), true);
    let mut rows = Vec::with_capacity(names.len());
    let mut predictions = Vec::with_capacity(names.len());
    // One hierarchy (the paper's Algorithm 1): the shared network, a GP per task.
    let mut hierarchy = MultiTask::new(network, NtkGpParams::default());
    for ((name, task), plan) in names.iter().zip(&tasks).zip(&plans) {
        bar.set_message(name.clone());
        let config = gp_config(&args.model, &task.y, plan)?;
        let gp = hierarchy
            .add_task(
                name.clone(),
                task.train.inputs.clone(),
                task.y.clone(),
                Some(config),
            )
            .inspect_err(|_| bar.abandon())?;
        let a = score(gp, task, plan, &progress).inspect_err(|_| bar.abandon())?;
        warn_about_fit(gp.fit_report(), &format!("task {name}: "));
        let m = |k: &str| {
            a.metrics
                .as_ref()
                .and_then(|m| m[k].as_f64())
                .map_or(String::new(), |v| v.to_string())
        };
        rows.push(format!(
            "{name},{},{},{},{},{},{}",
            gp.n_train(),
            gp.hyper().noise,
            gp.log_marginal_likelihood(),
            m("rmse"),
            m("nlpd"),
            m("coverage95")
        ));
        predictions.push(a.csv);
        bar.inc(1);
    }
    bar.finish_and_clear();

    if let Some(out) = &args.out_dir {
        std::fs::create_dir_all(out).map_err(|source| CliError::Io {
            path: out.clone(),
            source,
        })?;
    }
    // All prediction files and the state, or none.
    let mut staged = Staged::default();
    if let Some(out) = &args.out_dir {
        for (name, csv) in names.iter().zip(&predictions) {
            staged.add(&out.join(format!("{name}.pred.csv")), csv.as_bytes())?;
        }
    }
    if let Some(path) = &args.save_state {
        let json = serde_json::to_vec(&hierarchy.state(true)).map_err(|e| {
            CliError::Usage(format!("the hierarchy's state does not serialize: {e}"))
        })?;
        staged.add(path, &json)?;
    }
    staged.commit()?;
    println!("task,n_train,noise,log_marginal_likelihood,rmse,nlpd,coverage95");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

fn inspect(args: &InspectArgs) -> Result<(), CliError> {
    let model = load_model(
        &args.file,
        args.network.arch.as_ref(),
        args.network.layers.as_deref(),
    )?;
    let network = model.network::<ntk_ops::DefaultBackend>(&Default::default())?;
    print!("{}", model.inspect(network.n_outputs()));
    Ok(())
}
