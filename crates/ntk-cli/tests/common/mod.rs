//! Helpers shared by the `ntk` integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn ntk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ntk"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `n` points of y = sin(2x) (+ a small deterministic wiggle) on [lo, hi].
pub fn sine_csv(n: usize, lo: f64, hi: f64, target: bool) -> String {
    let mut s = String::from(if target { "x,y\n" } else { "x\n" });
    for i in 0..n {
        let x = lo + (hi - lo) * i as f64 / (n - 1) as f64;
        if target {
            s.push_str(&format!(
                "{x},{}\n",
                (2.0 * x).sin() + 0.05 * (13.0 * x).cos()
            ));
        } else {
            s.push_str(&format!("{x}\n"));
        }
    }
    s
}

/// A trained 1-16-1 tanh network in a temporary folder.
pub fn trained() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "source.csv", &sine_csv(40, -2.0, 2.0, true));
    let model = dir.path().join("m.safetensors");
    let o = ntk(&[
        "train",
        "--arch",
        "1-16-1:tanh",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "100",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trained 1-16-1:tanh (49 parameters)"),
        "{}",
        stderr(&o)
    );
    (dir, model)
}

pub fn csv_column(text: &str, name: &str) -> Vec<f64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let c = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(c).unwrap().parse().unwrap())
        .collect()
}

/// Runs `ntk` with `args` and checks the failure contract: exit code 2, exactly one line on
/// standard error containing every needle, nothing on standard output, and no file at `out`.
pub fn fails_cleanly(args: &[&str], needles: &[&str], out: &Path) {
    fails_with(2, args, needles, out);
}

/// The failure contract with exit code `code` (2: bad input, 3: numerical failure).
pub fn fails_with(code: i32, args: &[&str], needles: &[&str], out: &Path) {
    let o = ntk(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("ntk: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(o.stdout.is_empty(), "{args:?} printed {:?}", o.stdout);
    assert!(!out.exists(), "a partial output was left for {args:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `ntk adapt --model M --arch A --train T --test Q --output O` and then `extra`.
pub fn adapt_args(
    model: &Path,
    arch: &str,
    train: &Path,
    test: &Path,
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["adapt", "--model"].map(String::from).to_vec();
    args.push(model.display().to_string());
    args.extend(["--arch".into(), arch.into(), "--train".into()]);
    args.push(train.display().to_string());
    args.push("--test".into());
    args.push(test.display().to_string());
    args.push("--output".into());
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The arguments as `&str`s, for [`ntk`] and [`fails_cleanly`].
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
