//! The parent: runs [`crate::engine`] in a child process (this binary again, `ntk-fuzz
//! child`), under a cap on its address space, and watches it.
//!
//! A panic the child caught arrives as a line on its stdout. An abort (a failed allocation,
//! which the memory cap turns a giant allocation into; a stack overflow) kills the child, and
//! an input that runs longer than the time limit is a hang: the parent kills the child. Either
//! way the input in `OUT/.current-TARGET` is saved to `OUT/crashes/TARGET/crash-HASH` with a
//! `.log` saying what happened, and a fresh child goes on with the remaining time.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Target;
use crate::engine::{self, current_path, normalize, save_finding};

/// The exit status of a child that failed for a reason of its own (not a finding).
pub const HARNESS_ERROR: i32 = 3;

/// How a target is fuzzed.
#[derive(Debug, Clone)]
pub struct FuzzParams {
    /// The time for each target.
    pub duration: Duration,
    /// The output folder.
    pub out: PathBuf,
    /// The random seed of the first child (each restart adds one).
    pub seed: u64,
    /// The time one input may take before it counts as a hang.
    pub timeout: Duration,
    /// The child's address-space cap in MiB (0: none).
    pub memory_mb: u64,
    /// The longest input the mutations make (at most [`Target::max_len`]).
    pub max_len: usize,
}

/// What went wrong on one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// A panic, a failed check included.
    Panic,
    /// The process died: an abort (failed allocation, stack overflow) or a signal.
    Crash,
    /// The input ran past the time limit.
    Hang,
}

/// One distinct finding: its first input, and how often it recurred.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Panic, crash or hang.
    pub kind: FindingKind,
    /// The saved input.
    pub path: PathBuf,
    /// What happened (the panic message, the child's last words, the time limit).
    pub message: String,
    /// How many times it happened (inputs with the same normalized message).
    pub count: usize,
}

/// The result of fuzzing one target.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: Target,
    /// Inputs run.
    pub execs: u64,
    /// Time taken.
    pub elapsed: Duration,
    /// The corpus size at the start (seeds, regressions, earlier runs' queue).
    pub seeds: usize,
    /// The corpus size at the end (of the last child).
    pub corpus: usize,
    /// Children started (1 + restarts after crashes and hangs).
    pub children: usize,
    /// The findings, distinct by normalized message.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, kind: FindingKind, path: PathBuf, message: String) {
        let key = normalize(&message);
        match self
            .findings
            .iter_mut()
            .find(|f| f.kind == kind && normalize(&f.message) == key)
        {
            Some(f) => f.count += 1,
            None => self.findings.push(Finding {
                kind,
                path,
                message,
                count: 1,
            }),
        }
    }
}

/// Fuzzes `target` for `opts.duration`, restarting the child after each crash or hang.
pub fn fuzz(target: Target, opts: &FuzzParams) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| format!("cannot create {}: {e}", opts.out.display()))?;
    let seeds = target.builtin_seeds().len()
        + [
            target.corpus_dir(),
            target.regressions_dir(),
            engine::queue_dir(&opts.out, target),
        ]
        .iter()
        .map(|d| engine::load_inputs(d).len())
        .sum::<usize>();
    let mut report = Report {
        target,
        execs: 0,
        elapsed: Duration::ZERO,
        seeds,
        corpus: seeds,
        children: 0,
        findings: Vec::new(),
    };
    let start = Instant::now();
    let current = current_path(&opts.out, target);
    let mut last_progress = start;
    while let Some(left) = opts.duration.checked_sub(start.elapsed())
        && left > Duration::from_millis(100)
    {
        // A stale input from an earlier child must not be taken for this one's.
        let _ = std::fs::remove_file(&current);
        let mut child = spawn(&exe, target, opts, left, report.children)?;
        report.children += 1;
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let stderr = read_tail(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + left + opts.timeout + Duration::from_secs(5);
        let (mut seq, mut since) = (0, Instant::now());
        let mut child_execs = 0;
        let mut done = false;
        let ended = loop {
            for line in lines.try_iter() {
                handle_line(&line, &mut report, &mut child_execs, &mut done);
            }
            if let Some(status) = child.try_wait().map_err(|e| format!("waiting: {e}"))? {
                break End::Exited(status);
            }
            let now_seq = read_current(&current).map_or(0, |(s, _)| s);
            if now_seq != seq {
                (seq, since) = (now_seq, Instant::now());
            } else if seq > 0 && since.elapsed() > opts.timeout {
                break End::Hang;
            }
            if Instant::now() > deadline {
                break End::Hang;
            }
            if last_progress.elapsed() > Duration::from_secs(30) {
                last_progress = Instant::now();
                eprintln!(
                    "  {}: {:.0} s, {} execs, corpus {}, {} findings",
                    target.name(),
                    start.elapsed().as_secs_f64(),
                    report.execs + child_execs.max(seq),
                    report.corpus,
                    report.findings.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if matches!(ended, End::Hang) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for line in lines.iter() {
            handle_line(&line, &mut report, &mut child_execs, &mut done);
        }
        let stderr = stderr.join().unwrap_or_default();
        let input = read_current(&current);
        report.execs += child_execs.max(input.as_ref().map_or(0, |(s, _)| *s));
        let (kind, message) = match ended {
            End::Exited(status) if status.success() && done => continue,
            End::Exited(status) if status.code() == Some(HARNESS_ERROR) => {
                return Err(format!(
                    "the {} child failed: {}",
                    target.name(),
                    stderr.trim()
                ));
            }
            End::Exited(status) => (FindingKind::Crash, died(status, &stderr)),
            End::Hang => (
                FindingKind::Hang,
                format!("no answer within {:?}", opts.timeout),
            ),
        };
        let Some((_, data)) = input else {
            return Err(format!(
                "the {} child ended before running an input: {message}",
                target.name()
            ));
        };
        let kind_name = format!("{kind:?}").to_lowercase();
        let path = save_finding(
            &engine::crashes_dir(&opts.out, target),
            &data,
            &format!("{kind_name}: {message}"),
        )
        .map_err(|e| format!("saving a finding: {e}"))?;
        report.add(kind, path, message);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

enum End {
    Exited(ExitStatus),
    Hang,
}

/// Starts the child, under `ulimit -v` when there is a memory cap.
fn spawn(
    exe: &Path,
    target: Target,
    opts: &FuzzParams,
    left: Duration,
    restart: usize,
) -> Result<Child, String> {
    let args: Vec<String> = vec![
        "child".into(),
        target.name().into(),
        "--millis".into(),
        left.as_millis().to_string(),
        "--out".into(),
        opts.out.display().to_string(),
        "--seed".into(),
        (opts.seed.wrapping_add(restart as u64)).to_string(),
        "--max-len".into(),
        opts.max_len.to_string(),
    ];
    let mut cmd = if opts.memory_mb > 0 {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "ulimit -v {} && exec \"$0\" \"$@\"",
                opts.memory_mb * 1024
            ))
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(&args);
    if restart > 0 {
        cmd.arg("--skip-seeds");
    }
    // Backtraces would bury an abort's message (which is the last thing it prints).
    cmd.env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the fuzzing child: {e}"))
}

/// The child's stdout, line by line, from a thread.
fn read_lines(out: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The last 4 KiB of the child's stderr, when it closes.
fn read_tail(mut err: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.len() > 8192 {
                all.drain(..all.len() - 4096);
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    })
}

fn handle_line(line: &str, report: &mut Report, execs: &mut u64, done: &mut bool) {
    if let Some((path, message)) = line
        .strip_prefix("panic\t")
        .and_then(|rest| rest.split_once('\t'))
    {
        report.add(FindingKind::Panic, PathBuf::from(path), message.to_string());
        return;
    }
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(tag @ ("stat" | "done")), Some(n), Some(corpus)) => {
            *execs = n.parse().unwrap_or(*execs);
            report.corpus = corpus.parse().unwrap_or(report.corpus);
            *done |= tag == "done";
        }
        _ => eprintln!("  child: {line}"),
    }
}

/// The execution count and input in the child's current-input file.
fn read_current(path: &Path) -> Option<(u64, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    let seq = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let data = &bytes[16..];
    let len = usize::try_from(len).unwrap_or(usize::MAX).min(data.len());
    Some((seq, data[..len].to_vec()))
}

/// How the child died: a panic outside the target (the harness's own) with its location,
/// else its last lines on stderr; and the signal.
fn died(status: ExitStatus, stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let words = match lines.iter().rposition(|l| l.contains("panicked at")) {
        Some(i) => lines[i..lines.len().min(i + 2)].join(" "),
        None => lines[lines.len().saturating_sub(2)..].join(" / "),
    };
    match status.signal() {
        Some(sig) => format!("{words} (signal {sig})"),
        None => format!("{words} (exit status {})", status.code().unwrap_or(-1)),
    }
}
