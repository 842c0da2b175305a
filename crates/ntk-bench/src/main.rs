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
    },
}

fn main() -> ExitCode {
    let Cmd::Reproduce {
        name,
        quick,
        seed,
        out,
    } = Cli::parse().command;
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
            let record = (entry.run)(&mut ctx)?;
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
