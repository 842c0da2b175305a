//! The `ntk` command end to end: train, adapt, tasks, and every bad input (exit code 2, one
//! line on standard error, no partial output file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ntk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ntk"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `n` points of y = sin(2x) (+ a small deterministic wiggle) on [lo, hi].
fn sine_csv(n: usize, lo: f64, hi: f64, target: bool) -> String {
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
fn trained() -> (tempfile::TempDir, PathBuf) {
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

fn csv_column(text: &str, name: &str) -> Vec<f64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let c = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(c).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn adapt_writes_predictions_and_json_and_the_strategies_agree() {
    let (dir, model) = trained();
    let d = dir.path();
    let train = write(d, "train.csv", &sine_csv(15, -1.5, 1.5, true));
    let test = write(d, "test.csv", &sine_csv(9, -2.0, 2.0, true));
    let out = d.join("pred.csv");
    let base = [
        "adapt",
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "1-16-1:tanh",
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["--output", out.to_str().unwrap(), "--json"]);
    let o = ntk(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["n_train"], 15);
    assert_eq!(json["n_test"], 9);
    assert_eq!(json["n_params"], 49);
    assert!(json["noise"].as_f64().unwrap() > 0.0);
    assert!(json["metrics"]["rmse"].as_f64().unwrap() < 0.5, "{json}");
    assert!(json["log_marginal_likelihood"].is_number());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("x,mean,var,std,lower,upper\n"));
    let (mean, var) = (csv_column(&text, "mean"), csv_column(&text, "var"));
    let lower = csv_column(&text, "lower");
    let noise = json["noise"].as_f64().unwrap();
    for i in 0..9 {
        assert!((mean[i] - lower[i] - 1.959964 * (var[i] + noise).sqrt()).abs() < 1e-9);
    }
    // Fixed hyper-parameters: dense, parameter and matrix-free predictions agree.
    let run = |strategy: &str| {
        let mut a = base.to_vec();
        a.extend(["--noise", "0.01", "--strategy", strategy]);
        let o = ntk(&a);
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        (csv_column(&text, "mean"), csv_column(&text, "var"))
    };
    let (dm, dv) = run("dense");
    for strategy in ["parameter", "function"] {
        let (m, v) = run(strategy);
        for i in 0..9 {
            assert!(
                (m[i] - dm[i]).abs() < 1e-6 * (1.0 + dm[i].abs()),
                "{strategy} mean {i}"
            );
            assert!(
                (v[i] - dv[i]).abs() < 1e-5 * (1e-3 + dv[i].abs()),
                "{strategy} var {i}"
            );
        }
    }
}

#[test]
fn tasks_adapts_every_task_in_a_folder() {
    let (dir, model) = trained();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    write(&tasks, "a.train.csv", &sine_csv(10, -1.0, 1.0, true));
    write(&tasks, "a.test.csv", &sine_csv(5, -1.0, 1.0, true));
    write(&tasks, "b.train.csv", &sine_csv(12, 0.0, 2.0, true));
    let out = dir.path().join("preds");
    let o = ntk(&[
        "tasks",
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "1-16-1:tanh",
        "--dir",
        tasks.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("a,10,") && lines[2].starts_with("b,12,"));
    assert!(out.join("a.pred.csv").is_file() && out.join("b.pred.csv").is_file());
    // `--device cpu` is the default; an unusable CUDA device is one line, exit code 2.
    let args = |device: &'static str| {
        [
            "tasks",
            "--model",
            model.to_str().unwrap(),
            "--arch",
            "1-16-1:tanh",
            "--dir",
            tasks.to_str().unwrap(),
            "--device",
            device,
        ]
        .map(String::from)
    };
    let o = ntk(&args("cpu").each_ref().map(String::as_str));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 3);
    let o = ntk(&args("cuda:4096").each_ref().map(String::as_str));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("device `cuda:4096`"), "{err}");
}

#[test]
fn every_bad_input_exits_2_with_one_line_and_no_output() {
    let (dir, model) = trained();
    let d = dir.path();
    let good = write(d, "good.csv", &sine_csv(8, -1.0, 1.0, true));
    let out = d.join("never.csv");
    let m = model.to_str().unwrap();
    let g = good.to_str().unwrap();
    let o_ = out.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--train".into(),
                "/nonexistent/t.csv".into(),
                "--test".into(),
                g.into(),
            ],
            "/nonexistent/t.csv",
        ),
        (
            vec![
                "--train".into(),
                g.into(),
                "--test".into(),
                write(d, "z.csv", "z\n1\n").to_string_lossy().into(),
            ],
            "differ from the training file",
        ),
        (
            vec![
                "--train".into(),
                write(d, "bad.csv", "x,y\n1,2\n2,oops\n")
                    .to_string_lossy()
                    .into(),
                "--test".into(),
                g.into(),
            ],
            "line 3, column `y`: `oops` is not a number",
        ),
        (
            vec![
                "--train".into(),
                write(d, "nan.csv", "x,y\nNaN,2\n").to_string_lossy().into(),
                "--test".into(),
                g.into(),
            ],
            "not finite",
        ),
        (
            vec![
                "--train".into(),
                write(d, "empty.csv", "").to_string_lossy().into(),
                "--test".into(),
                g.into(),
            ],
            "empty",
        ),
        (
            vec![
                "--train".into(),
                g.into(),
                "--test".into(),
                g.into(),
                "--noise".into(),
                "0".into(),
            ],
            "--noise must be a positive number",
        ),
        (
            vec![
                "--train".into(),
                g.into(),
                "--test".into(),
                g.into(),
                "--device".into(),
                // With the feature, an index no machine has: the runtime probe must fail.
                if cfg!(feature = "cuda") {
                    "cuda:4096"
                } else {
                    "cuda"
                }
                .into(),
            ],
            if cfg!(feature = "cuda") {
                "device `cuda:4096`: CUDA is not available ("
            } else {
                "device `cuda:0`: built without the `cuda` feature; rebuild with --features cuda"
            },
        ),
        (
            vec![
                "--train".into(),
                g.into(),
                "--test".into(),
                g.into(),
                "--device".into(),
                "gpu".into(),
            ],
            "unknown device `gpu`; use cpu or cuda[:i]",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "adapt",
            "--model",
            m,
            "--arch",
            "1-16-1:tanh",
            "--output",
            o_,
        ];
        args.extend(extra.iter().map(String::as_str));
        let o = ntk(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!out.exists(), "a partial output was left for {args:?}");
    }
    // The architecture does not match the weights: the tensor and both shapes are named.
    let o = ntk(&[
        "adapt",
        "--model",
        m,
        "--arch",
        "1-8-1:tanh",
        "--train",
        g,
        "--test",
        g,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("0.weight")
            && stderr(&o).contains("[8, 1]")
            && stderr(&o).contains("[16, 1]"),
        "{}",
        stderr(&o)
    );
    let o = ntk(&[
        "adapt",
        "--model",
        m,
        "--arch",
        "1-16-1:swish",
        "--train",
        g,
        "--test",
        g,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown activation `swish`"),
        "{}",
        stderr(&o)
    );
}
