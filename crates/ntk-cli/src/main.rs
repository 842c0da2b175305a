//! `ntk`: adapt a trained network to new data, with uncertainty, from the shell.
//!
//! Every failure prints one line on standard error and exits with code 2; an output file is
//! written all at once or not at all.

mod error;
mod output;
mod spec;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::Backend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nalgebra::DVector;
use ntk_gp::fit::Param;
use ntk_gp::ntk::{MeanFunction, NtkGp, NtkGpConfig};
use ntk_gp::strategy::Strategy;
use ntk_gp::train::{Loss, Optimizer, TrainConfig, train_mlp};
use ntk_ops::checkpoint::{DiskDtype, load_mlp, params_to_bytes};
use ntk_ops::{Activation, Device, DeviceError, Mlp, MlpConfig};
use serde_json::json;

use crate::error::CliError;
use crate::output::{Z95, prediction_csv, write_atomically};
use crate::spec::{ActivationName, ArchSpec};
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
    /// Adapt to every task in DIR (NAME.train.csv, optional NAME.test.csv) sharing one network.
    #[command(
        after_help = "Example:\n  ntk tasks --model seattle-2012.safetensors --arch 1-40-40-1:tanh --dir weather-tasks/ \\\n      --prior-scale fit --out-dir predictions/"
    )]
    Tasks(TasksArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MeanArg {
    Zero,
    Constant,
    Network,
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Auto,
    Dense,
    Function,
    Parameter,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Weights: a safetensors file as written by `safetensors.torch.save_file(model.state_dict(), path)`.
    #[arg(long, value_name = "M.safetensors")]
    model: PathBuf,
    /// Architecture WIDTHS:ACTIVATION, e.g. 1-40-40-1:tanh (tanh, relu, elu, gelu, sigmoid, softplus).
    #[arg(long, value_name = "SPEC")]
    arch: ArchSpec,
    /// Name of the target column.
    #[arg(long, default_value = "y")]
    target: String,
    /// Noise variance σ² > 0, or `fit` to maximize the marginal likelihood (L-BFGS from half
    /// the targets' sample variance, within [1e-6, 1e6]; --json reports how the fit ended).
    #[arg(long, default_value = "fit")]
    noise: String,
    /// Prior scale s² > 0 of θ′ ~ N(0, s²I), or `fit`.
    #[arg(long, default_value = "1")]
    prior_scale: String,
    /// Prior mean: zero, a fitted constant, or the network's own output.
    #[arg(long, value_enum, default_value = "network")]
    mean: MeanArg,
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
    /// (Adam) to 1e-4 relative.
    #[arg(long, value_enum, default_value = "auto")]
    strategy: StrategyArg,
    /// Device: `cpu`, or `cuda` / `cuda:INDEX` when built with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct AdaptArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training data of the new task (CSV with a header).
    #[arg(long, value_name = "TRAIN.csv")]
    train: PathBuf,
    /// Test inputs (and, optionally, targets for metrics).
    #[arg(long, value_name = "TEST.csv")]
    test: PathBuf,
    /// Where to write the predictions (default: standard output).
    #[arg(long, value_name = "OUT.csv")]
    output: Option<PathBuf>,
    /// Print one JSON object with the fitted values, metrics and timings.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Architecture WIDTHS:ACTIVATION.
    #[arg(long, value_name = "SPEC")]
    arch: ArchSpec,
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
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Momentum of SGD.
    #[arg(long, default_value_t = 0.9)]
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line, as for every other failure.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("ntk: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Adapt(a) => adapt(&a),
        Command::Train(t) => train(&t),
        Command::Tasks(t) => tasks(&t),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ntk: {e}");
            ExitCode::from(2)
        }
    }
}

fn activation(a: ActivationName) -> Activation {
    match a {
        ActivationName::Tanh => Activation::Tanh,
        ActivationName::Relu => Activation::Relu,
        ActivationName::Elu => Activation::Elu,
        ActivationName::Gelu => Activation::Gelu,
        ActivationName::Sigmoid => Activation::Sigmoid,
        ActivationName::Softplus => Activation::Softplus,
    }
}

fn mlp_config(arch: &ArchSpec) -> MlpConfig {
    MlpConfig::new(&arch.widths).with_activation(activation(arch.activation))
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
                type B = ntk_ops::device::CpuBackend;
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
fn param(name: &str, text: &str, init: f64) -> Result<Param, CliError> {
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
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (0.5 * var).clamp(1e-4, 1e4)
}

fn load<B: Backend>(model: &ModelArgs, device: &B::Device) -> Result<Mlp<B>, CliError> {
    let config = mlp_config(&model.arch);
    load_mlp::<B>(&config, &model.model, device).map_err(|e| {
        CliError::Model(format!(
            "{}: {e} (architecture {})",
            model.model.display(),
            model.arch
        ))
    })
}

fn gp_config(model: &ModelArgs, y: &DVector<f64>) -> Result<NtkGpConfig, CliError> {
    Ok(NtkGpConfig {
        strategy: match model.strategy {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::Dense => Strategy::Dense,
            StrategyArg::Function => Strategy::FunctionSpace,
            StrategyArg::Parameter => Strategy::ParameterSpace,
        },
        noise: param("--noise", &model.noise, noise_init(y))?,
        prior_scale: param("--prior-scale", &model.prior_scale, 1.0)?,
        mean: match model.mean {
            MeanArg::Zero => MeanFunction::Zero,
            MeanArg::Constant => MeanFunction::Constant(Param::Fit {
                init: 0.0,
                lower: -1e6,
                upper: 1e6,
            }),
            MeanArg::Network => MeanFunction::Network,
        },
        ..NtkGpConfig::default()
    })
}

fn check_inputs(arch: &ArchSpec, table: &Table, path: &Path) -> Result<(), CliError> {
    if table.inputs.ncols() != arch.widths[0] {
        return Err(CliError::Csv {
            path: path.to_path_buf(),
            message: format!(
                "{} input columns ({}), but the architecture {} takes {}",
                table.inputs.ncols(),
                table.input_names.join(","),
                arch,
                arch.widths[0]
            ),
        });
    }
    Ok(())
}

/// The outcome of adapting to one task.
struct Adapted<B: Backend> {
    gp: NtkGp<B>,
    csv: String,
    metrics: Option<serde_json::Value>,
    seconds_fit: f64,
    seconds_predict: f64,
}

fn adapt_one<B: Backend>(
    mlp: &Mlp<B>,
    model: &ModelArgs,
    train: &Path,
    test: &Path,
) -> Result<Adapted<B>, CliError>
where
    B::FloatElem: krylov::Scalar,
{
    let train_t = read_table(train, &model.target, true)?;
    let test_t = read_table(test, &model.target, false)?;
    check_inputs(&model.arch, &train_t, train)?;
    if test_t.input_names != train_t.input_names {
        return Err(CliError::Csv {
            path: test.to_path_buf(),
            message: format!(
                "input columns ({}) differ from the training file's ({})",
                test_t.input_names.join(","),
                train_t.input_names.join(",")
            ),
        });
    }
    let y = train_t.target.expect("required above");
    let t0 = Instant::now();
    let gp = NtkGp::new(mlp.clone(), &train_t.inputs, &y, gp_config(model, &y)?)?;
    let seconds_fit = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let pred = gp.predict(&test_t.inputs)?;
    let seconds_predict = t1.elapsed().as_secs_f64();
    let noise = gp.hyper().noise;
    let metrics = test_t
        .target
        .as_ref()
        .map(|yt| metrics(yt, &pred.mean, &pred.var, noise));
    let csv = prediction_csv(
        &test_t.input_names,
        &test_t.inputs,
        &pred.mean,
        &pred.var,
        noise,
    );
    Ok(Adapted {
        gp,
        csv,
        metrics,
        seconds_fit,
        seconds_predict,
    })
}

/// RMSE, mean negative log predictive density of N(mean, var + σ²), and 95% coverage.
fn metrics(
    y: &DVector<f64>,
    mean: &DVector<f64>,
    var: &DVector<f64>,
    noise: f64,
) -> serde_json::Value {
    let n = y.len() as f64;
    let (mut se, mut nlpd, mut inside) = (0.0, 0.0, 0.0);
    for i in 0..y.len() {
        let v = var[i] + noise;
        let r = y[i] - mean[i];
        se += r * r;
        nlpd += 0.5 * (r * r / v + v.ln() + (2.0 * std::f64::consts::PI).ln());
        if r.abs() <= Z95 * v.sqrt() {
            inside += 1.0;
        }
    }
    json!({ "rmse": (se / n).sqrt(), "nlpd": nlpd / n, "coverage95": inside / n })
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
    let t0 = Instant::now();
    let mlp = load::<B>(&args.model, dev)?;
    let a = adapt_one(&mlp, &args.model, &args.train, &args.test)?;
    match &args.output {
        Some(path) => write_atomically(path, a.csv.as_bytes())?,
        None => print!("{}", a.csv),
    }
    if args.json {
        let h = a.gp.hyper();
        let summary = json!({
            "strategy": format!("{:?}", a.gp.choice().strategy),
            "strategy_reason": a.gp.choice().reason,
            "noise": h.noise,
            "prior_scale": h.prior_scale,
            "constant_mean": matches!(args.model.mean, MeanArg::Constant).then(|| a.gp.constant_mean()),
            "log_marginal_likelihood": a.gp.log_marginal_likelihood(),
            // Matrix-free: the SLQ log-determinant's standard error, halved as in the lml.
            "log_marginal_likelihood_std_error": a.gp.matrix_free_state().map(|st| 0.5 * st.logdet.std_error),
            "fit": a.gp.fit_report().map(|f| json!({ "iterations": f.iterations, "termination": f.termination, "at_bound": f.at_bound })),
            "n_train": a.gp.n_train(),
            "n_test": a.csv.lines().count() - 1,
            "n_params": a.gp.n_params(),
            "metrics": a.metrics,
            "timings": { "fit_s": a.seconds_fit, "predict_s": a.seconds_predict, "total_s": t0.elapsed().as_secs_f64() },
        });
        println!("{summary}");
    } else if let Some(m) = &a.metrics {
        eprintln!("ntk: {m}");
    }
    if let Some(f) = a.gp.fit_report().filter(|f| f.at_bound.contains(&true)) {
        eprintln!(
            "ntk: warning: a fitted hyper-parameter stopped at its bound ({})",
            f.termination
        );
    }
    Ok(())
}

fn train(args: &TrainArgs) -> Result<(), CliError> {
    let data = read_table(&args.data, &args.target, true)?;
    check_inputs(&args.arch, &data, &args.data)?;
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
    let config = mlp_config(&args.arch);
    let init = config
        .init::<TrainBackend>(args.seed, &Default::default())
        .map_err(|e| CliError::Model(e.to_string()))?;
    let schedule = TrainConfig {
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
    let y = data.target.expect("required above");
    let (mlp, report) = train_mlp(
        &init,
        &data.inputs,
        &y,
        Loss::Gaussian,
        &schedule,
        |_, _| {},
    )?;
    let bytes = params_to_bytes(&mlp.layout(), &mlp.flatten_f64(), DiskDtype::F32)
        .map_err(|e| CliError::Model(e.to_string()))?;
    write_atomically(&args.out, &bytes)?;
    eprintln!(
        "ntk: trained {} ({} parameters) for {} epochs, final loss {:.6e}; wrote {}",
        args.arch,
        mlp.n_params(),
        args.epochs,
        report.epoch_loss.last().copied().unwrap_or(f64::NAN),
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
    let mlp = load::<B>(&args.model, dev)?;
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
    // Every task is adapted before anything is written, so that a bad task leaves neither
    // prediction files nor a partial summary behind.
    let bar = indicatif::ProgressBar::new(names.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tasks, {elapsed} {msg}")
            .expect("a valid template"),
    );
    let mut rows = Vec::with_capacity(names.len());
    let mut predictions = Vec::with_capacity(names.len());
    for name in &names {
        bar.set_message(name.clone());
        let train = args.dir.join(format!("{name}.train.csv"));
        let test = args.dir.join(format!("{name}.test.csv"));
        let test = if test.exists() { test } else { train.clone() };
        let a = adapt_one(&mlp, &args.model, &train, &test).inspect_err(|_| bar.abandon())?;
        let m = |k: &str| {
            a.metrics
                .as_ref()
                .and_then(|m| m[k].as_f64())
                .map_or(String::new(), |v| v.to_string())
        };
        rows.push(format!(
            "{name},{},{},{},{},{},{}",
            a.gp.n_train(),
            a.gp.hyper().noise,
            a.gp.log_marginal_likelihood(),
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
        for (name, csv) in names.iter().zip(&predictions) {
            write_atomically(&out.join(format!("{name}.pred.csv")), csv.as_bytes())?;
        }
    }
    println!("task,n_train,noise,log_marginal_likelihood,rmse,nlpd,coverage95");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
