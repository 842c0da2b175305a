//! `ntk-bench`: runs the paper's experiments (called by `cargo xtask reproduce`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ntk_bench::PAPER_EXPERIMENTS;
use ntk_bench::data::data_dir;
use ntk_bench::data::precip::MeanFrom;
use ntk_bench::data::weather::{WEATHER_CSV, export_weather_csvs};
use ntk_bench::device_bench::{DeviceBenchConfig, run_device_bench, table};
use ntk_bench::harness::{self, DEFAULT_SEED, Entry, ExperimentConfig, Profile, RunContext};
use ntk_gp::ntk::MatrixFreeParams;
use ntk_ops::Device;

#[derive(Parser)]
#[command(name = "ntk-bench", about = "The ntk-rs experiment harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one experiment, or every available one.
    Reproduce {
        /// The experiment's name (default: all available).
        name: Option<String>,
        /// Each experiment's quick profile (a smoke test).
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The paper's settings in full, the sweeps that take hours included (the default
        /// profile cuts them so that everything finishes in about a quarter of an hour).
        #[arg(long)]
        full: bool,
        /// The seed of all random numbers.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Where `<experiment>/` output folders go.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Device: `cpu`, or `cuda` / `cuda:INDEX` (needs the `cuda` feature). Checked before
        /// anything runs; experiments read it from `RunContext::device`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// A JSON object whose fields override the profile's configuration (one experiment only).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `scaling` only: the function-space log marginal likelihood of its n sweep with the
        /// rows split across ranks: the processes of `mpirun -np N` (built with the `mpi`
        /// feature), or `--threads N`. Rank 0 prints the table and writes
        /// OUT/scaling-distributed/ranks-N.json.
        #[arg(long)]
        distributed: bool,
        /// With --distributed: N threads of this process as the ranks (no MPI needed).
        #[arg(long, requires = "distributed", value_name = "N")]
        threads: Option<usize>,
        /// With --distributed: rank 0 also solves on one process and prints the difference.
        #[arg(long, requires = "distributed")]
        check: bool,
    },
    /// Time the matrix-free log marginal likelihood of the 803k-parameter scaling MLP
    /// (5-200-2000-200-1 tanh) on a device and print a table.
    DeviceBench {
        /// Device: `cpu`, or `cuda` / `cuda:INDEX` (needs the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Training-set sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 100_000])]
        n: Vec<usize>,
        /// Layer widths, dash-separated (default: the 803k scaling MLP).
        #[arg(long, default_value = "5-200-2000-200-1")]
        widths: String,
        /// Relative CG tolerance.
        #[arg(long, default_value_t = 1e-2)]
        cg_tolerance: f64,
        /// SLQ probes.
        #[arg(long, default_value_t = 4)]
        probes: usize,
    },
    /// Write a shipped data set as the CSV files the `ntk` command reads.
    #[command(
        after_help = "Example:\n  ntk-bench export weather --out weather-tasks/\n  (writes seattle-2012.train.csv, seattle-2012.test.csv, …, new-york-2015.test.csv)"
    )]
    Export {
        /// The data set: `weather` (data/weather.csv, Seattle and New York 2012–2015; one
        /// task per city-year, header `day,y`, 300 training and 65 test days).
        #[arg(value_parser = ["weather"])]
        dataset: String,
        /// The folder to write into (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Solve one problem dumped by `cargo xtask bench compare` (the Python anchors' parameters
    /// and data) and print the result as one JSON line.
    Compare {
        /// The problem directory (meta.json, theta.bin, X.bin, y.bin, Xs.bin).
        problem: PathBuf,
        /// Precision (default: f32 for networks over 100k parameters, else f64).
        #[arg(long, value_parser = ["f32", "f64"])]
        dtype: Option<String>,
        /// Timed repetitions after the first run.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also compute the f64 log marginal likelihood (untimed) for the agreement check.
        #[arg(long)]
        reference: bool,
        /// Size of a square GEMM timed first, for the matrix-product peak (0: skip).
        #[arg(long, default_value_t = 2048)]
        gemm: usize,
        /// Time the Jacobian products ($Jv$, $J^\top u$, NTK and GGN products) on the
        /// problem's network and inputs instead of solving the GP.
        #[arg(long)]
        products: bool,
        /// With `--products`: time the Jacobian's burn-tensor path (`Execution::DenseTensor`)
        /// instead of its host path (`Execution::DenseHost`).
        #[arg(long, requires = "products")]
        tensor: bool,
    },
}

fn parse_device(text: &str) -> Result<Device, ExitCode> {
    let device = text.parse::<Device>().and_then(|d| d.check().map(|()| d));
    device.map_err(|e| {
        eprintln!("ntk-bench: {e}");
        ExitCode::from(2)
    })
}

fn device_bench(
    device: &str,
    n: Vec<usize>,
    widths: &str,
    cg_tolerance: f64,
    probes: usize,
) -> ExitCode {
    let device = match parse_device(device) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let Ok(widths) = widths
        .split('-')
        .map(str::parse::<usize>)
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("ntk-bench: --widths must look like 5-200-2000-200-1, got `{widths}`");
        return ExitCode::from(2);
    };
    let defaults = DeviceBenchConfig::default();
    let config = DeviceBenchConfig {
        widths,
        sizes: n,
        settings: MatrixFreeParams {
            cg_tolerance,
            probes,
            ..defaults.settings
        },
        ..defaults
    };
    let params = ntk_ops::MlpConfig::new(&config.widths).layout().n_params();
    match run_device_bench(device, &config) {
        Ok(rows) => {
            print!("{}", table(device, params, &rows));
            if rows.iter().any(|r| r.failure.is_some()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ntk-bench: device-bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare_main(
    problem: PathBuf,
    dtype: Option<String>,
    reps: usize,
    reference: bool,
    gemm: usize,
    (products, tensor): (bool, bool),
) -> ExitCode {
    use ntk_bench::compare::{Precision, compare};
    let dtype = dtype.map(|d| {
        if d == "f32" {
            Precision::F32
        } else {
            Precision::F64
        }
    });
    let line = if products {
        ntk_bench::compare::products(&problem, dtype, reps, gemm, tensor)
            .map(|r| serde_json::to_string(&r))
    } else {
        compare(&problem, dtype, reps, reference, gemm).map(|r| serde_json::to_string(&r))
    };
    match line {
        Ok(Ok(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("ntk-bench compare: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ntk-bench compare: {}: {e}", problem.display());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Reproduce {
            name,
            quick,
            full,
            seed,
            out,
            device,
            config,
            distributed,
            threads,
            check,
        } => {
            let profile = match (quick, full) {
                (true, _) => Profile::Quick,
                (_, true) => Profile::Full,
                _ => Profile::Standard,
            };
            if distributed {
                reproduce_distributed(
                    name.as_deref(),
                    profile,
                    seed,
                    &out,
                    config,
                    (threads, check),
                )
            } else {
                reproduce(name, profile, seed, out, &device, config)
            }
        }
        Cmd::Compare {
            problem,
            dtype,
            reps,
            reference,
            gemm,
            products,
            tensor,
        } => compare_main(problem, dtype, reps, reference, gemm, (products, tensor)),
        Cmd::DeviceBench {
            device,
            n,
            widths,
            cg_tolerance,
            probes,
        } => device_bench(&device, n, &widths, cg_tolerance, probes),
        Cmd::Export { dataset: _, out } => {
            let path = data_dir().join(WEATHER_CSV);
            match export_weather_csvs(&path, &out, MeanFrom::AllDays) {
                Ok(files) => {
                    eprintln!(
                        "ntk-bench: wrote {} files (NAME.train.csv, NAME.test.csv) to {}",
                        files.len(),
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ntk-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Reads `--config`: a JSON object, or `None`.
fn read_overrides(config: Option<&std::path::Path>) -> Result<Option<serde_json::Value>, ExitCode> {
    let Some(path) = config else {
        return Ok(None);
    };
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()));
    parsed.map(Some).map_err(|e| {
        eprintln!("ntk-bench: --config: {e}");
        ExitCode::from(2)
    })
}

/// `reproduce scaling --distributed`: the n sweep's function-space likelihood over ranks.
fn reproduce_distributed(
    name: Option<&str>,
    profile: Profile,
    seed: u64,
    out: &std::path::Path,
    config: Option<PathBuf>,
    (threads, check): (Option<usize>, bool),
) -> ExitCode {
    use ntk_bench::distributed::{DistributedConfig, run, table};
    use ntk_bench::scaling::ScalingConfig;
    if name != Some("scaling") {
        eprintln!("ntk-bench: --distributed runs the `scaling` experiment only");
        return ExitCode::from(2);
    }
    let scaling = match read_overrides(config.as_deref()) {
        Err(code) => return code,
        Ok(None) => Ok(ScalingConfig::for_profile(profile)),
        Ok(Some(v)) => harness::config_with_overrides::<ScalingConfig>(profile, v),
    };
    let mut dc = match scaling {
        Ok(c) => DistributedConfig::of_scaling(&c, seed),
        Err(e) => {
            eprintln!("ntk-bench: {e}");
            return ExitCode::from(2);
        }
    };
    dc.check = check;
    let report = |rank: usize, rows: Result<Vec<_>, ntk_bench::error::BenchError>| -> ExitCode {
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ntk-bench: rank {rank}: scaling --distributed failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        if rank != 0 {
            return ExitCode::SUCCESS;
        }
        print!("{}", table(&rows));
        let ranks = rows.first().map_or(1, |r| r.ranks);
        let dir = out.join("scaling-distributed");
        let path = dir.join(format!("ranks-{ranks}.json"));
        let json = serde_json::json!({ "config": dc, "rows": rows });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&json).unwrap_or_default(),
            )
        });
        match written {
            Ok(()) => {
                eprintln!("ntk-bench: wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ntk-bench: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        }
    };
    if let Some(t) = threads {
        let mut results = krylov::comm::LocalGroup::run(t, |comm| run(&dc, comm));
        return report(0, results.remove(0));
    }
    #[cfg(feature = "mpi")]
    {
        use krylov::comm::Communicator;
        krylov::comm::with_world(|comm| report(comm.rank(), run(&dc, comm))).unwrap_or_else(|| {
            eprintln!("ntk-bench: MPI was already initialized");
            ExitCode::FAILURE
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if krylov::comm::launched_by_mpirun() {
            eprintln!(
                "ntk-bench: started by mpirun, but built without the `mpi` feature (each \
                 process would run alone): build with `cargo build --release -p ntk-bench \
                 --features mpi`, or use --threads N"
            );
            return ExitCode::from(2);
        }
        report(0, run(&dc, krylov::comm::SingleProcess))
    }
}

/// The experiments run on the CPU backend (`DefaultBackend`, f64): another device is refused
/// rather than ignored. (`device-bench` runs on any device.)
fn experiments_run_on(device: Device) -> Result<(), String> {
    match device {
        Device::Cpu => Ok(()),
        other => Err(format!(
            "--device {other}: the experiments run on the CPU only (burn-ndarray, f64); \
             `ntk-bench device-bench --device {other}` times the matrix-free likelihood there"
        )),
    }
}

fn reproduce(
    name: Option<String>,
    profile: Profile,
    seed: u64,
    out: PathBuf,
    device: &str,
    config: Option<PathBuf>,
) -> ExitCode {
    let device = match parse_device(device) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if let Err(msg) = experiments_run_on(device) {
        eprintln!("ntk-bench: {msg}");
        return ExitCode::from(2);
    }
    let overrides = match read_overrides(config.as_deref()) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if overrides.is_some() && name.is_none() {
        eprintln!("ntk-bench: --config needs an experiment name");
        return ExitCode::from(2);
    }
    let available: Vec<&str> = harness::REGISTRY.iter().map(|e| e.name).collect();
    let available_list = if available.is_empty() {
        "none yet".to_string()
    } else {
        available.join(", ")
    };
    let wanted: Vec<&Entry> = match name.as_deref() {
        Some(n) => match harness::find(n) {
            Some(entry) => vec![entry],
            None if PAPER_EXPERIMENTS.contains(&n) => {
                eprintln!("ntk-bench: `{n}` is not implemented yet; available: {available_list}");
                return ExitCode::FAILURE;
            }
            None => {
                eprintln!(
                    "ntk-bench: unknown experiment `{n}`; the paper's: {}; available: {available_list}",
                    PAPER_EXPERIMENTS.join(", ")
                );
                return ExitCode::from(2);
            }
        },
        None => harness::REGISTRY.iter().collect(),
    };
    if wanted.is_empty() {
        eprintln!(
            "ntk-bench: no experiment is available yet (the paper's: {}); nothing was run",
            PAPER_EXPERIMENTS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let expected: Vec<f64> = wanted.iter().map(|e| e.expected.seconds(profile)).collect();
    let total: f64 = expected.iter().sum();
    eprintln!(
        "ntk-bench: {} experiment(s), {profile} profile, seed {seed}: expected about {} on a \
         2-core machine ({}){}",
        wanted.len(),
        harness::format_duration(total),
        wanted
            .iter()
            .zip(&expected)
            .map(|(e, s)| format!("{} {}", e.name, harness::format_duration(*s)))
            .collect::<Vec<_>>()
            .join(", "),
        match profile {
            Profile::Standard => "; --full runs the paper's sweeps in full, --quick a smoke test",
            _ => "",
        }
    );
    let mut failed = false;
    let started = std::time::Instant::now();
    let count = wanted.len();
    for (i, entry) in wanted.into_iter().enumerate() {
        eprintln!(
            "ntk-bench: [{}/{count}] running {} (expected about {}; {} elapsed)",
            i + 1,
            entry.name,
            harness::format_duration(expected[i]),
            harness::format_duration(started.elapsed().as_secs_f64())
        );
        let result = RunContext::new(&out, entry.name, seed, profile).and_then(|ctx| {
            let mut ctx = ctx.with_device(device);
            let record = match &overrides {
                Some(v) => (entry.run_json)(&mut ctx, v.clone())?,
                None => (entry.run)(&mut ctx)?,
            };
            Ok((ctx.dir().to_path_buf(), record))
        });
        match result {
            Ok((dir, record)) => eprintln!(
                "ntk-bench: {} done in {:.1} s; outputs in {}",
                entry.name,
                record.elapsed_s,
                dir.display()
            ),
            Err(e) => {
                eprintln!("ntk-bench: {} failed: {e}", entry.name);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_refuse_a_device_they_would_not_use() {
        assert!(experiments_run_on(Device::Cpu).is_ok());
        let msg = experiments_run_on(Device::Cuda(1)).unwrap_err();
        assert!(
            msg.contains("--device cuda:1") && msg.contains("device-bench"),
            "{msg}"
        );
    }
}
