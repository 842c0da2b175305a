//! `ntk-bench`: runs the paper's experiments (called by `cargo xtask reproduce`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ntk_bench::{EXPERIMENTS, PAPER_EXPERIMENTS};

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Reproduce { name, quick: _ } => {
            let missing: Vec<&str> = PAPER_EXPERIMENTS
                .iter()
                .copied()
                .filter(|e| !EXPERIMENTS.contains(e))
                .collect();
            if let Some(name) = name.as_deref()
                && !PAPER_EXPERIMENTS.contains(&name)
            {
                eprintln!(
                    "ntk-bench: unknown experiment `{name}`; known: {}",
                    PAPER_EXPERIMENTS.join(", ")
                );
                return ExitCode::from(2);
            }
            let wanted: Vec<&str> = match name.as_deref() {
                Some(n) => vec![n],
                None => EXPERIMENTS.to_vec(),
            };
            if wanted.is_empty() || wanted.iter().any(|w| missing.contains(w)) {
                eprintln!(
                    "ntk-bench: not implemented yet: {}; available: {}",
                    missing.join(", "),
                    if EXPERIMENTS.is_empty() {
                        "none".to_string()
                    } else {
                        EXPERIMENTS.join(", ")
                    }
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
