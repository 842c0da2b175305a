//! `cargo xtask bench compare`: ntk-rs against the Python anchors on the same problems.
//!
//! Makes sure a virtual environment with the anchors' requirements exists (creating it from
//! `anchors/requirements.txt` plus `neural-tangents==0.6.5 --no-deps` when missing),
//! builds `ntk-bench` in release mode, and runs `xtask/compare/compare.py` with that
//! environment's python: it dumps the anchors' parameters and data, runs the anchor
//! configurations and `ntk-bench compare`, and prints and saves the table.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand};

use crate::{cargo, root, run};

/// `cargo xtask bench …`
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Time ntk-rs against the Python anchors (JAX neural-tangents, PyTorch/GPyTorch) on the
    /// same problems; print and save a table of times, ratios, peak memory and agreement.
    Compare(CompareArgs),
}

/// Options of `cargo xtask bench compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// The virtual environment with the anchors' requirements (created when missing).
    #[arg(long, default_value = "target/anchors-venv")]
    venv: PathBuf,
    /// The anchors' folder (ntk_gp_anchor.py, requirements.txt).
    #[arg(long, default_value = "anchors")]
    anchors: PathBuf,
    /// Where problems, raw JSON lines and the table go.
    #[arg(long, default_value = "target/compare")]
    out: PathBuf,
    /// Only the rows with n ≤ 1000 (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Comma-separated substrings of the row tags to run (e.g. `fig4-lml-5000,sine`).
    #[arg(long)]
    rows: Option<String>,
    /// Also run the PyTorch anchor at n ≥ 5000 (adds ~12 minutes on 2 cores).
    #[arg(long)]
    all_anchors: bool,
    /// Reuse the anchor results already in `<out>/anchors.jsonl` instead of rerunning them.
    #[arg(long)]
    skip_anchors: bool,
}

/// Runs a `bench` subcommand.
pub fn run_bench(cmd: BenchCmd) -> Result<(), String> {
    match cmd {
        BenchCmd::Compare(args) => compare(args),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root().join(p)
    }
}

/// The venv's python, creating the venv and installing the anchors' requirements if needed.
fn ensure_venv(venv: &Path, anchors: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    if python.is_file() {
        return Ok(python);
    }
    let requirements = anchors.join("requirements.txt");
    if !requirements.is_file() {
        return Err(format!("no {} to install from", requirements.display()));
    }
    eprintln!(
        "xtask: creating {} from {} (a few GB, several minutes)",
        venv.display(),
        requirements.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    let pip = venv.join("bin").join("pip");
    run(Command::new(&pip)
        .args(["install", "-q", "-r"])
        .arg(&requirements))?;
    // neural-tangents declares tensorflow and tf2jax as hard dependencies that only its
    // experimental module needs; the anchor script stubs that module.
    run(Command::new(&pip).args(["install", "-q", "--no-deps", "neural-tangents==0.6.5"]))?;
    Ok(python)
}

fn compare(a: CompareArgs) -> Result<(), String> {
    let anchors = absolute(&a.anchors);
    if !anchors.join("ntk_gp_anchor.py").is_file() {
        return Err(format!(
            "{} has no ntk_gp_anchor.py (pass --anchors)",
            anchors.display()
        ));
    }
    let python = ensure_venv(&absolute(&a.venv), &anchors)?;
    cargo(&["build", "--release", "--package", "ntk-bench"])?;
    let bench = root().join("target").join("release").join("ntk-bench");
    let mut cmd = Command::new(python);
    cmd.arg(root().join("xtask").join("compare").join("compare.py"))
        .arg("--anchors")
        .arg(&anchors)
        .arg("--ntk-bench")
        .arg(bench)
        .arg("--out")
        .arg(absolute(&a.out));
    if a.quick {
        cmd.arg("--quick");
    }
    if let Some(rows) = &a.rows {
        cmd.arg("--rows").arg(rows);
    }
    if a.all_anchors {
        cmd.arg("--all-anchors");
    }
    if a.skip_anchors {
        cmd.arg("--skip-anchors");
    }
    run(&mut cmd)
}
