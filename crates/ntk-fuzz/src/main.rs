//! `ntk-fuzz`: fuzz ntk-rs's parsers (`cargo xtask fuzz` runs it), replay inputs, shrink a
//! finding, and write the generated seeds. See the library's docs for how it works.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ntk_fuzz::engine::{self, ChildConfig};
use ntk_fuzz::runner::{self, FindingKind, FuzzParams, HARNESS_ERROR};
use ntk_fuzz::{Target, fnv1a};

#[derive(Parser)]
#[command(
    name = "ntk-fuzz",
    about = "Fuzz the parsers of ntk-rs (stable toolchain)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz each target (default: all) for a while; exits 1 if anything was found.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Output folder: crashes/, queue/ (default: target/fuzz in the workspace).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Random seed (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Milliseconds one input may take before it counts as a hang.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Address-space cap of the fuzzing process in MiB (0: none).
        #[arg(long, default_value_t = 2048)]
        memory_mb: u64,
        /// The longest input the mutations make, in bytes.
        #[arg(long, default_value_t = 64 * 1024)]
        max_len: usize,
        /// The targets (default: all).
        #[arg(value_enum)]
        targets: Vec<Target>,
    },
    /// Run a target on files, in this process, and print what it answers (a panic aborts
    /// the run with its message).
    Replay {
        /// The target.
        #[arg(value_enum)]
        target: Target,
        /// The inputs.
        files: Vec<PathBuf>,
        /// Print the normalized answer (what tells new behaviour) instead.
        #[arg(long)]
        normalized: bool,
    },
    /// Shrink a finding's input while it still fails the same way.
    Minimize {
        /// The target.
        #[arg(value_enum)]
        target: Target,
        /// The input.
        file: PathBuf,
        /// Where to write the smaller input (default: FILE.min).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Milliseconds one run may take before it counts as a hang.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Address-space cap in MiB (0: none).
        #[arg(long, default_value_t = 2048)]
        memory_mb: u64,
    },
    /// Write the generated seeds (safetensors, GeoTIFF) into crates/ntk-fuzz/corpus/.
    Seeds,
    /// The fuzzing loop, run by `fuzz` in a child process.
    #[command(hide = true)]
    Child {
        #[arg(value_enum)]
        target: Target,
        #[arg(long)]
        millis: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        max_len: usize,
        #[arg(long)]
        skip_seeds: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Child {
            target,
            millis,
            out,
            seed,
            max_len,
            skip_seeds,
        } => {
            let cfg = ChildConfig {
                target,
                duration: Duration::from_millis(millis),
                out,
                seed,
                max_len,
                run_seeds: !skip_seeds,
            };
            match engine::child_main(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ntk-fuzz child: {e}");
                    ExitCode::from(HARNESS_ERROR as u8)
                }
            }
        }
        Cmd::Fuzz {
            seconds,
            out,
            seed,
            timeout_ms,
            memory_mb,
            max_len,
            targets,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
            let opts = FuzzParams {
                duration: Duration::from_secs_f64(seconds.max(0.0)),
                out: out.unwrap_or_else(|| workspace().join("target").join("fuzz")),
                seed,
                timeout: Duration::from_millis(timeout_ms),
                memory_mb,
                max_len,
            };
            fuzz(
                if targets.is_empty() {
                    &Target::ALL
                } else {
                    &targets
                },
                &opts,
            )
        }
        Cmd::Replay {
            target,
            files,
            normalized,
        } => {
            for f in files {
                match std::fs::read(&f) {
                    Ok(data) if normalized => match target.run(&data) {
                        Ok(s) => println!("ok {}", engine::normalize(&s)),
                        Err(s) => println!("err {}", engine::normalize(&s)),
                    },
                    Ok(data) => println!("{}: {:?}", f.display(), target.run(&data)),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::Minimize {
            target,
            file,
            out,
            timeout_ms,
            memory_mb,
        } => {
            let out = out.unwrap_or_else(|| file.with_extension("min"));
            match minimize(
                target,
                &file,
                &out,
                Duration::from_millis(timeout_ms),
                memory_mb,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ntk-fuzz: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Seeds => {
            for target in Target::ALL {
                for (name, bytes) in target.generated_seeds() {
                    let path = target.corpus_dir().join(name);
                    if let Err(e) = std::fs::create_dir_all(target.corpus_dir())
                        .and_then(|()| std::fs::write(&path, &bytes))
                    {
                        eprintln!("{}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("{} ({} bytes)", path.display(), bytes.len());
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// The workspace root.
fn workspace() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

fn fuzz(targets: &[Target], opts: &FuzzParams) -> ExitCode {
    eprintln!(
        "fuzzing {} for {:.0} s each (seed {}, output {})",
        targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        opts.duration.as_secs_f64(),
        opts.seed,
        opts.out.display()
    );
    let mut reports = Vec::new();
    for &target in targets {
        match runner::fuzz(target, opts) {
            Ok(r) => {
                eprintln!(
                    "{}: {} execs in {:.1} s ({:.0}/s), corpus {} -> {}, {} children, {} findings",
                    target.name(),
                    r.execs,
                    r.elapsed.as_secs_f64(),
                    r.rate(),
                    r.seeds,
                    r.corpus,
                    r.children,
                    r.findings.len()
                );
                reports.push(r);
            }
            Err(e) => {
                eprintln!("ntk-fuzz: {}: {e}", target.name());
                return ExitCode::from(2);
            }
        }
    }
    println!("\n| target | executions | execs/s | corpus | findings |");
    println!("|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {:.0} | {} -> {} | {} |",
            r.target.name(),
            r.execs,
            r.rate(),
            r.seeds,
            r.corpus,
            r.findings.len()
        );
    }
    let findings: Vec<_> = reports
        .iter()
        .flat_map(|r| r.findings.iter().map(move |f| (r.target, f)))
        .collect();
    for (target, f) in &findings {
        println!(
            "\n{} {:?} ({}x): {}\n  input: {}\n  replay: cargo run -p ntk-fuzz -- replay {} {}",
            target.name(),
            f.kind,
            f.count,
            f.message,
            f.path.display(),
            target.name(),
            f.path.display()
        );
        if f.kind != FindingKind::Panic {
            println!(
                "  shrink: cargo run -p ntk-fuzz -- minimize {} {}",
                target.name(),
                f.path.display()
            );
        }
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!(
            "\nonce fixed, copy each input to crates/ntk-fuzz/regressions/TARGET/ (replayed by cargo test)"
        );
        ExitCode::FAILURE
    }
}

/// How one run of the target on a file ended: `None` if it returned, else a description
/// that is the same for the same bug (the panic's location, or the abort's last words).
fn failure(
    target: Target,
    file: &Path,
    timeout: Duration,
    memory_mb: u64,
) -> Result<Option<String>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c");
    if memory_mb > 0 {
        cmd.arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            memory_mb * 1024
        ));
    } else {
        cmd.arg("exec \"$0\" \"$@\"");
    }
    let mut child = cmd
        .arg(exe)
        .args(["replay", target.name()])
        .arg(file)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the target: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(status) = status else {
        return Ok(Some("hang".into()));
    };
    if status.success() {
        return Ok(None);
    }
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    let panic_at = stderr
        .lines()
        .find_map(|l| l.split_once("panicked at ").map(|(_, loc)| loc.to_string()));
    Ok(Some(panic_at.unwrap_or_else(|| {
        engine::normalize(stderr.lines().last().unwrap_or("no message"))
    })))
}

/// Removes chunks of the input, halving their size, while the failure stays the same.
fn minimize(
    target: Target,
    file: &Path,
    out: &Path,
    timeout: Duration,
    memory_mb: u64,
) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut best = read(file)?;
    let want = failure(target, file, timeout, memory_mb)?
        .ok_or_else(|| format!("{} does not fail", file.display()))?;
    eprintln!("{} bytes, failing with: {want}", best.len());
    let scratch = std::env::temp_dir().join(format!(
        "ntk-fuzz-min-{:016x}",
        fnv1a(file.as_os_str().as_encoded_bytes())
    ));
    let mut chunk = best.len().div_ceil(2).max(1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.len() {
            let mut candidate = best.clone();
            candidate.drain(i..(i + chunk).min(best.len()));
            std::fs::write(&scratch, &candidate).map_err(|e| e.to_string())?;
            if failure(target, &scratch, timeout, memory_mb)?.as_deref() == Some(want.as_str()) {
                best = candidate;
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    let _ = std::fs::remove_file(&scratch);
    std::fs::write(out, &best).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{} bytes: {}", best.len(), out.display());
    Ok(())
}
