//! `ntk-bench`: runs the paper's experiments (called by `cargo xtask reproduce`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ntk_bench::PAPER_EXPERIMENTS;
use ntk_bench::harness::{self, DEFAULT_SEED, Entry, Profile, RunContext};

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
        #[arg(long)]
        quick: bool,
        /// The seed of all random numbers.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Where `<experiment>/` output folders go.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// A JSON object whose fields override the profile's configuration (one experiment only).
        #[arg(long)]
        config: Option<PathBuf>,
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
    },
}

fn compare_main(
    problem: PathBuf,
    dtype: Option<String>,
    reps: usize,
    reference: bool,
    gemm: usize,
) -> ExitCode {
    use ntk_bench::compare::{Precision, compare};
    let dtype = dtype.map(|d| {
        if d == "f32" {
            Precision::F32
        } else {
            Precision::F64
        }
    });
    match compare(&problem, dtype, reps, reference, gemm) {
        Ok(rec) => match serde_json::to_string(&rec) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ntk-bench compare: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("ntk-bench compare: {}: {e}", problem.display());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let (name, quick, seed, out, config) = match Cli::parse().command {
        Cmd::Reproduce {
            name,
            quick,
            seed,
            out,
            config,
        } => (name, quick, seed, out, config),
        Cmd::Compare {
            problem,
            dtype,
            reps,
            reference,
            gemm,
        } => return compare_main(problem, dtype, reps, reference, gemm),
    };
    let overrides = match config.as_deref().map(std::fs::read_to_string) {
        None => None,
        Some(Ok(text)) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("ntk-bench: --config: {e}");
                return ExitCode::from(2);
            }
        },
        Some(Err(e)) => {
            eprintln!("ntk-bench: --config: {e}");
            return ExitCode::from(2);
        }
    };
    if overrides.is_some() && name.is_none() {
        eprintln!("ntk-bench: --config needs an experiment name");
        return ExitCode::from(2);
    }
    let profile = if quick { Profile::Quick } else { Profile::Full };
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
    let mut failed = false;
    for entry in wanted {
        eprintln!(
            "ntk-bench: running {} ({profile} profile, seed {seed})",
            entry.name
        );
        let result = RunContext::new(&out, entry.name, seed, profile).and_then(|mut ctx| {
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
