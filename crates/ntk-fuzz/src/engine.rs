//! The fuzzing loop, run in the child process that [`crate::runner`] starts.
//!
//! The corpus starts as the seeds (the committed corpus, the regression inputs and what
//! earlier runs kept); each step mutates an entry ([`crate::mutate`]), runs the target, and
//! keeps the mutant when its [`signature`] is new. Before each run the input is written to
//! `OUT/.current-TARGET` (one `pwrite`: execution count, length, bytes), so that the parent
//! can save it when this process dies or hangs. A panic is caught here, saved to
//! `OUT/crashes/TARGET/`, and the loop goes on.
//!
//! Lines on stdout tell the parent how it goes:
//! `stat EXECS CORPUS`, `panic<TAB>PATH<TAB>MESSAGE`, and at the end `done EXECS CORPUS`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

use crate::{Outcome, Target, fnv1a, mutate};

/// What one child run does.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// The target.
    pub target: Target,
    /// How long to fuzz.
    pub duration: Duration,
    /// The output folder (`.current-TARGET`, `queue/`, `crashes/`).
    pub out: PathBuf,
    /// The random seed.
    pub seed: u64,
    /// The longest input the mutations make (at most [`Target::max_len`]).
    pub max_len: usize,
    /// Whether to run every seed once before mutating. A restarted child runs only what
    /// earlier children kept (the queue, which ran without failing), not the seeds and
    /// regression inputs, one of which may be what failed.
    pub run_seeds: bool,
}

/// A caught panic: its message and where it was raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    /// The panic message.
    pub message: String,
    /// `file:line:column` of the panic.
    pub location: String,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked at {}: {}", self.location, self.message)
    }
}

/// The last panic's message and location, recorded by the hook [`quiet_panics`] installs.
static LAST_PANIC: Mutex<Option<Panic>> = Mutex::new(None);

thread_local! {
    /// Whether this thread is inside [`run_caught`].
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
}

/// Replaces the panic hook with one that records a target's panic for [`run_caught`] and
/// prints nothing (a fuzzer may catch thousands); a panic elsewhere (the harness's own) is
/// printed as usual.
pub fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_TARGET.get() {
            return default(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".into());
        let location = info
            .location()
            .map_or_else(|| "<unknown>".into(), |l| l.to_string());
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(Panic { message, location });
    }));
}

/// Runs `target` on `data`, turning a panic into `Err` (with [`quiet_panics`] installed, the
/// panic's message and location; otherwise the payload only).
pub fn run_caught(target: Target, data: &[u8]) -> Result<Outcome, Panic> {
    IN_TARGET.set(true);
    let result = catch_unwind(AssertUnwindSafe(|| target.run(data)));
    IN_TARGET.set(false);
    result.map_err(|payload| {
        LAST_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| Panic {
                message: payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
                location: "<unknown>".into(),
            })
    })
}

/// A message with its specifics removed, so that two inputs refused for the same reason
/// normalize alike: in each line (the first [`MAX_PARTS`]; a target that runs several
/// parsers answers with a line each), text in backticks, double quotes,
/// parentheses and square brackets is
/// dropped, digit runs become `#`, characters other than printable ASCII go, and the part is
/// cut to 64 characters.
pub fn normalize(message: &str) -> String {
    message
        .lines()
        .take(MAX_PARTS)
        .map(normalize_part)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of an answer that count: an input quoted in a message may bring more.
pub const MAX_PARTS: usize = 4;

fn normalize_part(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    // Bracketed text (a quoted header, itself with parentheses; a list of numbers) runs to
    // the last closing bracket of its kind.
    let last = |close: char| chars.iter().rposition(|&c| c == close);
    let (last_paren, last_square) = (last(')'), last(']'));
    let mut out = String::with_capacity(64);
    let (mut quote, mut last_digit) = (None, false);
    let mut i = 0;
    while i < chars.len() && out.len() < 64 {
        let c = chars[i];
        i += 1;
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' => {
                quote = Some(c);
                out.extend([c, c]);
            }
            None => {}
        }
        if quote.is_some() || c == '`' || c == '"' {
            continue;
        }
        if c == '(' || c == '[' {
            let (close, last) = if c == '(' {
                (')', last_paren)
            } else {
                (']', last_square)
            };
            out.extend([c, close]);
            i = last.map_or(chars.len(), |j| j.max(i - 1) + 1);
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        }
    }
    out
}

/// The kind of behaviour an input showed: accepted or refused, the normalized answer, and the
/// input's size class. A mutant with a signature not seen before joins the corpus (up to
/// [`FAMILY_CAP`] per [`family`]).
pub fn signature(outcome: &Outcome, len: usize) -> u64 {
    let (tag, text) = match outcome {
        Ok(s) => ("ok", s),
        Err(e) => ("err", e),
    };
    // Sizes by factors of 16: 0, 1-15, 16-255, ...
    let size = crate::targets::size_class(len).div_ceil(4);
    let key = format!("{tag}|{}|{size}", normalize(text));
    fnv1a(key.as_bytes())
}

/// The family of an answer: each line's normalized text up to its first quote or
/// bracket (`line #, column `), accepted or refused. A family may bring at most
/// [`FAMILY_CAP`] entries into the corpus, so that parser messages that quote the input (a
/// header with backticks in it) cannot flood it.
pub fn family(outcome: &Outcome) -> u64 {
    let (tag, text) = match outcome {
        Ok(s) => ("ok", s),
        Err(e) => ("err", e),
    };
    let parts: Vec<String> = text
        .lines()
        .take(MAX_PARTS)
        .map(|p| normalize_part(p.split(['`', '"', '(', '[']).next().unwrap_or("")))
        .collect();
    fnv1a(format!("{tag}|{}", parts.join("|")).as_bytes())
}

/// The most corpus entries one [`family`] of answers may add.
pub const FAMILY_CAP: usize = 32;

/// The files of `dir` (not `*.log`), sorted by name; none if it does not exist.
pub fn load_inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "log"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// Where the child writes the input it is about to run.
pub fn current_path(out: &Path, target: Target) -> PathBuf {
    out.join(format!(".current-{}", target.name()))
}

/// Where findings of `target` are saved.
pub fn crashes_dir(out: &Path, target: Target) -> PathBuf {
    out.join("crashes").join(target.name())
}

/// Where the inputs with new signatures are kept between runs.
pub fn queue_dir(out: &Path, target: Target) -> PathBuf {
    out.join("queue").join(target.name())
}

/// Saves a finding's input as `crash-HASH` in `dir`, with `crash-HASH.log` saying what
/// happened; returns the input's path.
pub fn save_finding(dir: &Path, data: &[u8], what: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("crash-{:016x}", fnv1a(data)));
    std::fs::write(&path, data)?;
    std::fs::write(path.with_extension("log"), format!("{what}\n"))?;
    Ok(path)
}

/// The child's loop (see the module docs). Returns when the time is up.
pub fn child_main(cfg: &ChildConfig) -> Result<(), String> {
    quiet_panics();
    let target = cfg.target;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let queue = queue_dir(&cfg.out, target);
    let crashes = crashes_dir(&cfg.out, target);
    std::fs::create_dir_all(&queue).map_err(|e| io("creating the queue folder", e))?;
    let current = File::create(current_path(&cfg.out, target))
        .map_err(|e| io("creating the current-input file", e))?;

    let mut corpus: Vec<Vec<u8>> = target.builtin_seeds();
    for dir in [target.corpus_dir(), target.regressions_dir()] {
        corpus.extend(load_inputs(&dir).into_iter().map(|(_, b)| b));
    }
    let n_seeds = corpus.len();
    corpus.extend(load_inputs(&queue).into_iter().map(|(_, b)| b));
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let max_len = cfg.max_len.min(target.max_len());
    let mut seen: HashSet<u64> = HashSet::new();
    let mut families: HashMap<u64, usize> = HashMap::new();
    let mut panics: HashMap<String, u64> = HashMap::new();
    let mut execs: u64 = 0;
    let mut scratch = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let start = Instant::now();
    let mut last_stat = start;

    let mut exec = |data: &[u8], execs: &mut u64| -> Result<Result<Outcome, Panic>, String> {
        *execs += 1;
        scratch.clear();
        scratch.extend_from_slice(&execs.to_le_bytes());
        scratch.extend_from_slice(&(data.len() as u64).to_le_bytes());
        scratch.extend_from_slice(data);
        current
            .write_all_at(&scratch, 0)
            .map_err(|e| io("writing the current input", e))?;
        Ok(run_caught(target, data))
    };
    let mut on_panic = |p: Panic, data: &[u8], out: &mut dyn Write| -> Result<(), String> {
        let n = panics.entry(p.location.clone()).or_default();
        *n += 1;
        if *n == 1 {
            let path = save_finding(&crashes, data, &format!("panic: {p}"))
                .map_err(|e| io("saving a finding", e))?;
            let line = p.to_string().replace('\n', " / ");
            writeln!(out, "panic\t{}\t{line}", path.display()).map_err(|e| io("stdout", e))?;
        }
        Ok(())
    };

    // The corpus runs once to learn the signatures it already has (all of it, or what
    // earlier children kept).
    let first = if cfg.run_seeds { 0 } else { n_seeds };
    for data in &corpus[first..] {
        match exec(data, &mut execs)? {
            Ok(outcome) => {
                seen.insert(signature(&outcome, data.len()));
                *families.entry(family(&outcome)).or_default() += 1;
            }
            Err(p) => on_panic(p, data, &mut stdout)?,
        }
    }
    // Beyond this many entries, new behaviour is still counted but no longer kept.
    let max_corpus = 4096;
    while start.elapsed() < cfg.duration {
        for _ in 0..64 {
            let parent = corpus.choose(&mut rng).unwrap();
            let other = corpus.choose(&mut rng).unwrap();
            let data = mutate::mutate(target, parent, other, &mut rng, max_len);
            match exec(&data, &mut execs)? {
                Ok(outcome) => {
                    let members = families.entry(family(&outcome)).or_default();
                    if *members < FAMILY_CAP
                        && corpus.len() < max_corpus
                        && seen.insert(signature(&outcome, data.len()))
                    {
                        *members += 1;
                        let path = queue.join(format!("{:016x}", fnv1a(&data)));
                        std::fs::write(path, &data).map_err(|e| io("saving to the queue", e))?;
                        corpus.push(data);
                    }
                }
                Err(p) => on_panic(p, &data, &mut stdout)?,
            }
        }
        if last_stat.elapsed() >= Duration::from_secs(1) {
            last_stat = Instant::now();
            writeln!(stdout, "stat {execs} {}", corpus.len()).map_err(|e| io("stdout", e))?;
            stdout.flush().map_err(|e| io("stdout", e))?;
        }
    }
    writeln!(stdout, "done {execs} {}", corpus.len()).map_err(|e| io("stdout", e))?;
    stdout.flush().map_err(|e| io("stdout", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_normalize_without_specifics() {
        assert_eq!(
            normalize("fuzz.csv: line 12, column `x1`: `abc` is not a number"),
            "fuzz.csv: line #, column ``: `` is not a number"
        );
        let a = signature(&Err("line 3: 4 fields".into()), 10);
        assert_eq!(a, signature(&Err("line 77: 1 fields".into()), 12));
        assert_ne!(a, signature(&Ok("line 3: 4 fields".into()), 10));
        assert_ne!(a, signature(&Err("line 3: 4 fields".into()), 1000));
        assert_eq!(
            family(&Err("f: column `a`b`: empty\nx (y)".into())),
            family(&Err("f: column `c``: `d` is not a number\nx (z)".into()))
        );
        assert_eq!(
            normalize("f: no column `y` in the header (a,`b)\u{1}(c)\nf: 2 é fields"),
            "f: no column `` in the header ()\nf: #  fields"
        );
    }

    #[test]
    fn panics_are_caught_with_their_location() {
        quiet_panics();
        let p = run_caught(Target::Selftest, b"panic").unwrap_err();
        assert_eq!(p.message, "planted panic");
        assert!(p.location.contains("selftest.rs"), "{}", p.location);
        assert!(run_caught(Target::Selftest, b"fine").unwrap().is_err());
        let _ = std::panic::take_hook();
    }
}
