//! `cargo xtask`: the project's automation, in Rust.
//!
//! Run `cargo xtask --help` for the commands. xtask depends on no workspace
//! crate, so it starts without building burn; the heavy work is delegated to
//! `cargo` invocations.

mod bench;
mod book;
mod data;
mod download;
mod geotiff;
mod layers;
mod malaria;
#[cfg(test)]
mod testserver;
mod ushcn;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "ntk-rs project automation",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything CI checks: an up-to-date Cargo.lock, fmt, clippy (also with `cuda`),
    /// rustdoc, the book, the layer check, the data checksums, the tests, `cargo package` of
    /// the libraries, a short fuzzing run and the experiments' quick profiles.
    Ci,
    /// Check that workspace crates depend only on the layers below them.
    CheckLayers,
    /// Build the book (docs/ -> target/book, math rendered by KaTeX, links checked) and the
    /// rustdoc API docs.
    Docs,
    /// Build and check the book only (docs/ -> target/book).
    Book,
    /// Run the paper's experiments on the shipped offline data.
    Reproduce {
        /// One experiment by name (default: all available).
        name: Option<String>,
        /// The quick profile of every experiment (a CI smoke test).
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The paper's settings in full, the sweeps that take hours included (the default
        /// profile finishes in about a quarter of an hour on a 2-core machine).
        #[arg(long)]
        full: bool,
        /// Build with the `cuda` feature (burn-cuda); implied by `--device cuda[:i]`.
        #[arg(long)]
        cuda: bool,
        /// Device passed to `ntk-bench reproduce`: `cpu` or `cuda[:i]`.
        #[arg(long)]
        device: Option<String>,
        /// The seed of all random numbers (default: ntk-bench's, 0).
        #[arg(long)]
        seed: Option<u64>,
        /// A JSON file whose fields override the profile's configuration (one experiment).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the `<experiment>/` output folders go (default: `results/`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Performance comparisons (ntk-rs against the Python anchors).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
    },
    /// Dataset management: verify the shipped data, download the full sets.
    Data {
        #[command(subcommand)]
        command: data::DataCmd,
    },
    /// Fuzz the parsers of user files (crates/ntk-fuzz): fails if anything is found.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// One target: csv, safetensors, dly, geotiff, arch or onnx (default: all).
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; anything else is a usage error.
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let result = match cli.command {
        Cmd::Ci => ci(),
        Cmd::CheckLayers => layers::check_workspace(),
        Cmd::Docs => docs(),
        Cmd::Book => book::build_and_check(&root().join("target").join("book")),
        Cmd::Reproduce {
            name,
            quick,
            full,
            cuda,
            device,
            seed,
            config,
            out,
        } => reproduce(
            name.as_deref(),
            quick,
            cuda,
            device.as_deref(),
            &Forwarded {
                full,
                seed,
                config,
                out,
            },
        ),
        Cmd::Bench { command } => bench::run_bench(command),
        Cmd::Data { command } => data::run(command),
        Cmd::Fuzz { seconds, target } => cargo(&fuzz_args(seconds, target.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Runs `cargo` with `args` in the workspace root, echoing the command.
pub(crate) fn cargo(args: &[impl AsRef<std::ffi::OsStr>]) -> Result<(), String> {
    run(Command::new(env!("CARGO")).args(args))
}

/// Runs a command, echoing it, and turns a non-zero exit into an error.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    cmd.current_dir(root());
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    // `--locked`: Cargo.lock must be committed up to date (fails rather than rewriting it).
    cargo(&[
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The CUDA backend must keep compiling on machines without a GPU or CUDA toolkit (cudarc
    // loads the driver at run time); clippy also lints the cuda-only code.
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        "cuda",
        "--",
        "-D",
        "warnings",
    ])?;
    // Broken intra-doc links (a KaTeX `[i]` read as a link, a renamed item) fail the build.
    run(Command::new(env!("CARGO"))
        .args(["doc", "--workspace", "--no-deps", "--exclude", "xtask"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    book::build_and_check(&root().join("target").join("book"))?;
    layers::check_workspace()?;
    package()?;
    data::verify_shipped()?;
    cargo(&["test", "--workspace"])?;
    mpi_checks()?;
    // Every fuzz target for a few seconds (the build is the tests' dev profile).
    cargo(&fuzz_args(CI_FUZZ_SECONDS, None))?;
    smoke()?;
    Ok(())
}

/// The code behind the `mpi` features, linted and tested under `mpirun -np 2` and `-np 4`,
/// when this machine has MPI (`mpicc` and `mpirun`; `.ci/run` installs Debian's Open MPI).
/// Without it the step is skipped, saying so: the default build needs no MPI.
fn mpi_checks() -> Result<(), String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if !(on_path("mpicc") && on_path("mpirun")) {
        eprintln!(
            "xtask ci: skipped the MPI checks: no `mpicc`/`mpirun` on the PATH \
             (Debian: apt install libopenmpi-dev openmpi-bin libclang-dev)"
        );
        return Ok(());
    }
    let features = ["--features", "ntk-bench/mpi,ntk-cli/mpi"];
    let mut clippy = vec!["clippy", "--locked", "-p", "ntk-krylov", "-p", "ntk-bench"];
    clippy.extend(["-p", "ntk-cli", "--all-targets"]);
    clippy.extend(features);
    clippy.extend(["--", "-D", "warnings"]);
    cargo(&clippy)?;
    // The distributed tests of `ntk-bench reproduce scaling` and of `ntk adapt`.
    for (package, test, feature) in [
        ("ntk-bench", "it", "ntk-bench/mpi"),
        ("ntk-cli", "cli", "ntk-cli/mpi"),
    ] {
        let args = ["test", "-p", package, "--test", test, "--features", feature];
        let mut args = args.to_vec();
        args.push("distributed");
        cargo(&args)?;
    }
    Ok(())
}

/// `cargo package` for the library crates, as `cargo publish` would run it. ntk-krylov is
/// built from its package too; ntk-ops and ntk-gp are packaged (files, metadata, dependencies
/// resolved with the workspace crates as they would be published) but not rebuilt, because
/// that builds burn from scratch, unoptimized, for minutes.
fn package() -> Result<(), String> {
    let libs = ["-p", "ntk-krylov", "-p", "ntk-ops", "-p", "ntk-gp"];
    let mut args = vec!["package", "--locked", "--allow-dirty", "--no-verify"];
    args.extend(libs);
    cargo(&args)?;
    cargo(&["package", "--locked", "--allow-dirty", "-p", "ntk-krylov"])
}

/// Seconds per fuzz target in `cargo xtask ci`.
const CI_FUZZ_SECONDS: u64 = 5;

/// The `cargo` arguments of `cargo xtask fuzz`: the harness in the dev profile (its
/// dependencies, the parsers included, are optimized by the workspace's profile).
fn fuzz_args(seconds: u64, target: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--quiet", "--package", "ntk-fuzz", "--", "fuzz"]
        .map(String::from)
        .to_vec();
    args.extend(["--seconds".into(), seconds.to_string()]);
    args.extend(target.map(String::from));
    args
}

/// The experiments' quick profiles as a smoke test (dev profile, already built by the tests):
/// every output must exist, and on the sinusoids the NTK GP must beat the unchanged network.
fn smoke() -> Result<(), String> {
    let out = root().join("target").join("ci-results");
    let out_str = out.to_string_lossy().into_owned();
    cargo(&[
        "run",
        "--quiet",
        "--package",
        "ntk-bench",
        "--",
        "reproduce",
        "--quick",
        "--out",
        &out_str,
    ])?;
    let dir = out.join("sinusoid");
    for file in [
        "report.md",
        "tasks.png",
        "tasks.svg",
        "metrics.csv",
        "run.json",
    ] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "smoke test: {} is missing",
                dir.join(file).display()
            ));
        }
    }
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("run.json")).map_err(|e| format!("smoke test: {e}"))?,
    )
    .map_err(|e| format!("smoke test: run.json: {e}"))?;
    let metric = |k: &str| run["summary"]["metrics"][k].as_f64();
    match (metric("rmse/ntk_gp"), metric("rmse/network")) {
        (Some(ntk), Some(net)) if ntk < net => {
            eprintln!("smoke: sinusoid RMSE {ntk:.3} (NTK GP) < {net:.3} (network): ok");
        }
        (ntk, net) => {
            return Err(format!(
                "smoke test: the NTK GP must beat the unchanged network on RMSE, got {ntk:?} vs {net:?}"
            ));
        }
    }
    smoke_precipitation(&out.join("precipitation"))
}

/// The precipitation quick run: its outputs exist, every method's RMSE is finite, coverages
/// are fractions, and the two exact NTK-GP posteriors agree to round-off. (Whether the NTK GP
/// beats a baseline on 3 targets is not a robust check.)
fn smoke_precipitation(dir: &Path) -> Result<(), String> {
    for file in ["report.md", "tasks.png", "metrics.csv", "run.json"] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "smoke test: {} is missing",
                dir.join(file).display()
            ));
        }
    }
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("run.json")).map_err(|e| format!("smoke test: {e}"))?,
    )
    .map_err(|e| format!("smoke test: run.json: {e}"))?;
    let metrics = &run["summary"]["metrics"];
    let metric = |k: &str| {
        metrics[k]
            .as_f64()
            .ok_or_else(|| format!("smoke test: precipitation metric {k} missing"))
    };
    for m in [
        "ntk_gp",
        "network",
        "transfer_rbf_gp",
        "rbf_gp",
        "ablr",
        "constant",
    ] {
        let rmse = metric(&format!("rmse/{m}"))?;
        let cover = metric(&format!("coverage95/{m}"))?;
        if !rmse.is_finite() || !(0.0..=1.0).contains(&cover) {
            return Err(format!(
                "smoke test: precipitation {m}: RMSE {rmse}, coverage {cover}"
            ));
        }
    }
    let agree = metric("agreement/parameter_mean")?;
    if agree >= 1e-6 {
        return Err(format!(
            "smoke test: precipitation strategies differ by {agree:e}"
        ));
    }
    eprintln!(
        "smoke: precipitation NTK GP RMSE {:.3} mm, coverage {:.2}: ok",
        metric("rmse/ntk_gp")?,
        metric("coverage95/ntk_gp")?
    );
    Ok(())
}

fn docs() -> Result<(), String> {
    let book_out = root().join("target").join("book");
    book::build_and_check(&book_out)?;
    let header = root().join("docs").join("katex-header.html");
    run(Command::new(env!("CARGO"))
        .args(["doc", "--workspace", "--no-deps", "--exclude", "xtask"])
        .env(
            "RUSTDOCFLAGS",
            format!("--html-in-header {}", header.display()),
        ))?;
    eprintln!(
        "book: {}\nAPI:  {}",
        book_out.join("index.html").display(),
        root().join("target/doc/krylov/index.html").display()
    );
    Ok(())
}

/// The options `cargo xtask reproduce` passes on to `ntk-bench reproduce` unchanged (paths made
/// absolute against the caller's folder, since cargo runs in the workspace root).
#[derive(Default)]
struct Forwarded {
    full: bool,
    seed: Option<u64>,
    config: Option<PathBuf>,
    out: Option<PathBuf>,
}

impl Forwarded {
    fn args(&self) -> Result<Vec<String>, String> {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let mut args = Vec::new();
        if self.full {
            args.push("--full".to_string());
        }
        if let Some(seed) = self.seed {
            args.extend(["--seed".to_string(), seed.to_string()]);
        }
        if let Some(config) = &self.config {
            args.extend(["--config".to_string(), absolute(config)?]);
        }
        if let Some(out) = &self.out {
            args.extend(["--out".to_string(), absolute(out)?]);
        }
        Ok(args)
    }
}

fn reproduce(
    name: Option<&str>,
    quick: bool,
    cuda: bool,
    device: Option<&str>,
    forwarded: &Forwarded,
) -> Result<(), String> {
    let mut args: Vec<String> = reproduce_args(name, quick, cuda, device)
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(forwarded.args()?);
    cargo(&args)
}

/// The `cargo` arguments of `cargo xtask reproduce`: `--cuda`, or a CUDA `--device`, builds
/// with `--features cuda`.
fn reproduce_args<'a>(
    name: Option<&'a str>,
    quick: bool,
    cuda: bool,
    device: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec!["run", "--release", "--package", "ntk-bench"];
    if cuda || device.is_some_and(|d| d.trim().to_ascii_lowercase().starts_with("cuda")) {
        args.extend(["--features", "cuda"]);
    }
    args.extend(["--", "reproduce"]);
    if let Some(name) = name {
        args.push(name);
    }
    if quick {
        args.push("--quick");
    }
    if let Some(device) = device {
        args.extend(["--device", device]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::{Forwarded, fuzz_args, reproduce_args};
    use std::path::PathBuf;

    #[test]
    fn fuzz_runs_the_harness_on_one_or_all_targets() {
        assert_eq!(
            fuzz_args(5, None),
            [
                "run",
                "--quiet",
                "--package",
                "ntk-fuzz",
                "--",
                "fuzz",
                "--seconds",
                "5"
            ]
        );
        assert_eq!(
            fuzz_args(600, Some("csv"))[6..],
            ["--seconds", "600", "csv"]
        );
    }

    #[test]
    fn reproduce_builds_with_cuda_when_asked() {
        assert_eq!(
            reproduce_args(Some("sinusoid"), true, false, None),
            [
                "run",
                "--release",
                "--package",
                "ntk-bench",
                "--",
                "reproduce",
                "sinusoid",
                "--quick"
            ]
        );
        let cuda = [
            "run",
            "--release",
            "--package",
            "ntk-bench",
            "--features",
            "cuda",
            "--",
        ];
        assert_eq!(reproduce_args(None, false, true, None)[..7], cuda);
        let with_device = reproduce_args(None, false, false, Some("cuda:1"));
        assert_eq!(with_device[..7], cuda);
        assert_eq!(with_device[8..], ["--device", "cuda:1"]);
        assert!(!reproduce_args(None, false, false, Some("cpu")).contains(&"--features"));
    }

    #[test]
    fn reproduce_forwards_full_seed_config_and_out_with_absolute_paths() {
        assert!(Forwarded::default().args().unwrap().is_empty());
        let forwarded = Forwarded {
            full: true,
            seed: Some(7),
            config: Some(PathBuf::from("sine.json")),
            out: Some(PathBuf::from("/tmp/out")),
        };
        let args = forwarded.args().unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            args,
            [
                "--full".to_string(),
                "--seed".into(),
                "7".into(),
                "--config".into(),
                here.join("sine.json").to_string_lossy().into_owned(),
                "--out".into(),
                "/tmp/out".into(),
            ]
        );
    }
}
