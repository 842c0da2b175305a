//! The `ntk` command end to end: train, adapt, tasks, and every bad input (exit code 2, one
//! line on standard error, no partial output file).

mod common;

use std::path::{Path, PathBuf};

use common::*;

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
    assert!(json["fit"]["iterations"].as_u64().unwrap() > 0, "{json}");
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
fn a_fitted_noise_starts_from_the_data_and_does_not_run_to_the_bound() {
    // Targets of variance ≈ 5000: a fixed start at σ² = 0.1 sent L-BFGS to the bound 10⁶ in one
    // step, reported as converged.
    let (dir, model) = trained();
    let d = dir.path();
    let scaled: String = sine_csv(40, -2.0, 2.0, true)
        .lines()
        .enumerate()
        .map(|(i, l)| match (i, l.split_once(',')) {
            (0, _) | (_, None) => format!("{l}\n"),
            (_, Some((x, y))) => format!("{x},{}\n", 100.0 * y.parse::<f64>().unwrap() + 3.0),
        })
        .collect();
    let train = write(d, "scaled.csv", &scaled);
    let out = d.join("p.csv");
    let o = ntk(&[
        "adapt",
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "1-16-1:tanh",
        "--train",
        train.to_str().unwrap(),
        "--test",
        train.to_str().unwrap(),
        "--strategy",
        "dense",
        "--output",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let noise = json["noise"].as_f64().unwrap();
    assert!(noise > 1e-6 && noise < 1e5, "{json}");
    // A stationary point: σ² × 1.1 or ÷ 1.1 gives no better marginal likelihood.
    let lml = json["log_marginal_likelihood"].as_f64().unwrap();
    for f in [1.1, 1.0 / 1.1] {
        let o = ntk(&[
            "adapt",
            "--model",
            model.to_str().unwrap(),
            "--arch",
            "1-16-1:tanh",
            "--train",
            train.to_str().unwrap(),
            "--test",
            train.to_str().unwrap(),
            "--strategy",
            "dense",
            "--noise",
            &(noise * f).to_string(),
            "--output",
            out.to_str().unwrap(),
            "--json",
        ]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            j["log_marginal_likelihood"].as_f64().unwrap() <= lml + 1e-9,
            "{j} vs {json}"
        );
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["adapt", "train", "tasks"] {
        let o = ntk(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("Example"), "{sub}: {text}");
        assert!(text.contains(&format!("ntk {sub} --")), "{sub}: {text}");
    }
    let o = ntk(&["--help"]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(["adapt", "train", "tasks"].iter().all(|s| text.contains(s)));
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
    let state = dir.path().join("state.json");
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
        "--noise",
        "fit",
        "--save-state",
        state.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("a,10,") && lines[2].starts_with("b,12,"));
    assert!(out.join("a.pred.csv").is_file() && out.join("b.pred.csv").is_file());
    // The saved hierarchy restores every task's predictions bit for bit.
    type B = ntk_ops::DefaultBackend;
    let saved: ntk_gp::MultiTaskState =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let (back, pending) = ntk_gp::MultiTask::<B>::from_state(
        &saved,
        &Default::default(),
        ntk_gp::NtkGpParams::default(),
    )
    .unwrap();
    assert!(pending.is_empty());
    assert_eq!(back.names().collect::<Vec<_>>(), ["a", "b"]);
    for name in ["a", "b"] {
        let csv = std::fs::read_to_string(out.join(format!("{name}.pred.csv"))).unwrap();
        let rows: Vec<Vec<f64>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        let x = nalgebra::DMatrix::from_fn(rows.len(), 1, |i, _| rows[i][0]);
        let p = back.predict(name, &x).unwrap();
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(p.mean[i].to_bits(), r[1].to_bits(), "{name} row {i} mean");
            assert_eq!(p.var[i].to_bits(), r[2].to_bits(), "{name} row {i} var");
        }
    }
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

/// One bad `ntk adapt` call: (model, arch, train, test, extra flags) and the needles of its error.
type BadAdapt<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Vec<&'a str>,
    Vec<&'a str>,
);

#[test]
fn every_bad_input_exits_2_with_one_line_and_no_output() {
    let (dir, model) = trained();
    let d = dir.path();
    let file = |name: &str, text: &str| write(d, name, text).to_string_lossy().into_owned();
    let good = file("good.csv", &sine_csv(8, -1.0, 1.0, true));
    let garbage = file("garbage.safetensors", "this is not a safetensors file");
    let out = d.join("never.csv");
    let (m, g, o_) = (
        model.to_str().unwrap(),
        good.as_str(),
        out.to_str().unwrap(),
    );
    let z = file("z.csv", "z\n1\n");
    let two_inputs = file("two.csv", "x1,x2,y\n1,2,3\n");
    let no_target = file("notarget.csv", "x,t\n1,2\n");
    let oops = file("oops.csv", "x,y\n1,2\n2,oops\n");
    let nan = file("nan.csv", "x,y\nNaN,2\n");
    let inf = file("inf.csv", "x,y\n0.5,1\n1,-inf\n");
    let ragged = file("ragged.csv", "x,y\n1,2\n3,4,5\n");
    let empty = file("empty.csv", "");
    let header_only = file("header.csv", "x,y\n");
    // (model, arch, train, test, extra flags) → needles of the one line on standard error.
    #[rustfmt::skip]
    let cases: Vec<BadAdapt> = vec![
        // Missing files: the data, the test file, the weights.
        (m, "1-16-1:tanh", "/nonexistent/t.csv", g, vec![], vec!["/nonexistent/t.csv", "No such file"]),
        (m, "1-16-1:tanh", g, "/nonexistent/q.csv", vec![], vec!["/nonexistent/q.csv"]),
        ("/nonexistent/m.safetensors", "1-16-1:tanh", g, g, vec![], vec!["/nonexistent/m.safetensors"]),
        (&garbage, "1-16-1:tanh", g, g, vec![], vec!["garbage.safetensors"]),
        // Headers that do not match: the test inputs, the target, the architecture's inputs.
        (m, "1-16-1:tanh", g, &z, vec![], vec!["z.csv", "input columns (z) differ from the training file's (x)"]),
        (m, "1-16-1:tanh", &no_target, g, vec![], vec!["notarget.csv", "no target column `y`"]),
        (m, "1-16-1:tanh", &two_inputs, g, vec![], vec!["two.csv", "2 input columns (x1,x2)", "takes 1"]),
        (m, "1-16-1:tanh", g, g, vec!["--target", "temp"], vec!["no target column `temp`"]),
        // Cells: non-numeric, NaN, Inf (in the test file), a ragged row; with line and column.
        (m, "1-16-1:tanh", &oops, g, vec![], vec!["oops.csv", "line 3, column `y`: `oops` is not a number"]),
        (m, "1-16-1:tanh", &nan, g, vec![], vec!["nan.csv", "line 2, column `x`: NaN is not finite"]),
        (m, "1-16-1:tanh", g, &inf, vec![], vec!["inf.csv", "line 3, column `y`: -inf is not finite"]),
        (m, "1-16-1:tanh", &ragged, g, vec![], vec!["ragged.csv", "line 3"]),
        // Empty files.
        (m, "1-16-1:tanh", &empty, g, vec![], vec!["empty.csv", "the file is empty"]),
        (m, "1-16-1:tanh", g, &header_only, vec![], vec!["header.csv", "no data rows"]),
        // The architecture does not fit the weights: the tensor and both shapes.
        (m, "1-8-1:tanh", g, g, vec![], vec!["0.weight", "[8, 1]", "[16, 1]"]),
        // A deeper architecture than the file: the layer count and the prefixes found.
        (m, "1-16-16-1:tanh", g, g, vec![], vec!["3 Linear layers but 2 prefixes", "are 0,2"]),
        // Bad specs: unknown activation, malformed widths.
        (m, "1-16-1:swish", g, g, vec![], vec!["unknown activation `swish`", "tanh, relu"]),
        (m, "1-x-1:tanh", g, g, vec![], vec!["width `x` is not a positive integer"]),
        // σ² ≤ 0 (and s² ≤ 0, and non-numbers).
        (m, "1-16-1:tanh", g, g, vec!["--noise", "0"], vec!["--noise must be a positive number or `fit`, got `0`"]),
        (m, "1-16-1:tanh", g, g, vec!["--noise=-0.5"], vec!["--noise must be a positive number", "`-0.5`"]),
        (m, "1-16-1:tanh", g, g, vec!["--noise", "NaN"], vec!["--noise must be a positive number", "`NaN`"]),
        (m, "1-16-1:tanh", g, g, vec!["--prior-scale", "0"], vec!["--prior-scale must be a positive number"]),
        // Unknown enum values and devices.
        (m, "1-16-1:tanh", g, g, vec!["--strategy", "magic"], vec!["magic"]),
        // Devices: CUDA without the feature (or, with it, an index no machine has), unknown names.
        (m, "1-16-1:tanh", g, g, vec!["--device", if cfg!(feature = "cuda") { "cuda:4096" } else { "cuda" }],
            vec![if cfg!(feature = "cuda") { "device `cuda:4096`: CUDA is not available (" } else { "device `cuda:0`: built without the `cuda` feature; rebuild with --features cuda" }]),
        (m, "1-16-1:tanh", g, g, vec!["--device", "gpu"], vec!["unknown device `gpu`; use cpu or cuda[:i]"]),
    ];
    for (model, arch, train, test, extra, needles) in &cases {
        let mut args = vec![
            "adapt", "--model", model, "--arch", arch, "--train", train, "--test", test,
            "--output", o_,
        ];
        args.extend(extra);
        fails_cleanly(&args, needles, &out);
        // Also with --json: still nothing on standard output.
        args.push("--json");
        fails_cleanly(&args, needles, &out);
    }
    // --json needs the CSV in a file.
    fails_cleanly(
        &[
            "adapt",
            "--model",
            m,
            "--arch",
            "1-16-1:tanh",
            "--train",
            g,
            "--test",
            g,
            "--json",
        ],
        &["--json prints JSON on standard output"],
        &out,
    );
    // `ntk train`: no weights file is left behind.
    let weights = d.join("never.safetensors");
    let w = weights.to_str().unwrap();
    #[rustfmt::skip]
    let train_cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--arch", "1-4-1:tanh", "--data", "/nonexistent/s.csv"], vec!["/nonexistent/s.csv"]),
        (vec!["--arch", "1-4-1:tanh", "--data", &oops], vec!["line 3, column `y`"]),
        (vec!["--arch", "1-4-1:tanh", "--data", &empty], vec!["the file is empty"]),
        (vec!["--arch", "2-4-1:tanh", "--data", g], vec!["1 input columns (x)", "takes 2"]),
        (vec!["--arch", "1-4-2:tanh", "--data", g], vec!["the last width must be 1"]),
        (vec!["--arch", "1-4-1:softsign", "--data", g], vec!["unknown activation `softsign`"]),
        (vec!["--arch", "1-4-1:tanh", "--data", g, "--epochs", "0"], vec!["must be positive"]),
    ];
    for (extra, needles) in &train_cases {
        let mut args = vec!["train", "--out", w];
        args.extend(extra);
        fails_cleanly(&args, needles, &weights);
    }
    // `ntk tasks`: a folder without tasks, and a task with a bad file.
    let tasks = d.join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    let t = tasks.to_str().unwrap();
    let preds = d.join("preds");
    let p = preds.to_str().unwrap();
    let tasks_args = [
        "tasks",
        "--model",
        m,
        "--arch",
        "1-16-1:tanh",
        "--dir",
        t,
        "--out-dir",
        p,
    ];
    fails_cleanly(
        &tasks_args,
        &["no NAME.train.csv files"],
        &preds.join("a.pred.csv"),
    );
    // A good task first, then a bad one: neither predictions nor a partial summary are left.
    write(&tasks, "a.train.csv", &sine_csv(10, -1.0, 1.0, true));
    write(&tasks, "b.train.csv", "x,y\n1,NaN\n");
    fails_cleanly(
        &tasks_args,
        &["b.train.csv", "not finite"],
        &preds.join("a.pred.csv"),
    );
}

/// The PyTorch round trip (`scripts/make_cli_fixture.py`): weights saved by
/// `safetensors.torch.save_file(model.state_dict(), …)` and the posterior computed in f64 by
/// numpy from a hand-written Jacobian.
mod pytorch_fixture {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn expected() -> serde_json::Value {
        let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    /// Largest relative error of `got` against `want`: $|g_i - w_i| / \max(|w_i|, 0.01\,\|w\|_\infty)$
    /// (the floor keeps values near zero, e.g. an interval end, from dividing by almost nothing).
    fn max_rel(got: &[f64], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let floor = 0.01 * want.iter().fold(0.0_f64, |m, w| m.max(w.abs()));
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(floor))
            .fold(0.0, f64::max)
    }

    /// Runs `ntk adapt` on one fixture case; returns the prediction CSV and the JSON summary.
    fn adapt(case: &serde_json::Value, strategy: &str) -> (String, serde_json::Value) {
        let f = fixtures();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pred.csv");
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let o = ntk(&[
            "adapt",
            "--model",
            &s(f.join(case["model"].as_str().unwrap())),
            "--arch",
            case["arch"].as_str().unwrap(),
            "--train",
            &s(f.join("train.csv")),
            "--test",
            &s(f.join("test.csv")),
            "--noise",
            "0.05",
            "--prior-scale",
            "0.5",
            "--mean",
            case["mean_mode"].as_str().unwrap(),
            "--strategy",
            strategy,
            "--output",
            &s(out.clone()),
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let json = serde_json::from_slice(&o.stdout).unwrap();
        (std::fs::read_to_string(&out).unwrap(), json)
    }

    /// How close a strategy must come to numpy (the tolerances documented in `ntk adapt --help`).
    struct Tol {
        /// `mean`, `lower`, `upper`: relative.
        mean: f64,
        /// `var`, `std`: relative.
        var: f64,
        /// `log_marginal_likelihood`: absolute, plus this many of its reported standard errors
        /// (`log_marginal_likelihood_std_error`, the matrix-free SLQ estimate's).
        lml: f64,
        lml_std_errors: f64,
        /// `mean`, `lower`, `upper` and the constant when `--mean constant` is fitted: relative.
        fitted_constant: f64,
    }

    /// Checks one strategy on every case of the fixture.
    fn check(strategy: &str, tol: Tol) {
        let exp = expected();
        let fixed = (exp["noise"].as_f64(), exp["prior_scale"].as_f64());
        assert_eq!(fixed, (Some(0.05), Some(0.5)));
        for case in exp["cases"].as_array().unwrap() {
            let what = format!("{strategy} {} {}", case["arch"], case["mean_mode"]);
            let (csv, json) = adapt(case, strategy);
            assert!(
                csv.starts_with("x1,x2,mean,var,std,lower,upper\n"),
                "{what}"
            );
            assert_eq!(json["n_train"], exp["n_train"], "{what}");
            assert_eq!(json["n_test"], exp["n_test"], "{what}");
            assert_eq!(json["n_params"], case["n_params"], "{what}");
            // Fixed values come back as given (the matrix-free fit of a constant mean passes
            // them through exp(log(·)), hence the last-bit tolerance).
            for (k, v) in [("noise", 0.05), ("prior_scale", 0.5)] {
                let got = json[k].as_f64().unwrap();
                assert!((got - v).abs() <= 1e-14 * v, "{what}: {k} {got}");
            }
            let c = case["constant_mean"].as_f64();
            let mean_tol = if c.is_some() {
                tol.fitted_constant
            } else {
                tol.mean
            };
            for (col, t) in [
                ("mean", mean_tol),
                ("var", tol.var),
                ("std", tol.var),
                ("lower", mean_tol),
                ("upper", mean_tol),
            ] {
                let err = max_rel(&csv_column(&csv, col), &floats(&case[col]));
                assert!(err <= t, "{what}: {col} off by {err:e} relative (> {t:e})");
            }
            let lml = json["log_marginal_likelihood"].as_f64().unwrap();
            let want = case["log_marginal_likelihood"].as_f64().unwrap();
            let se = json["log_marginal_likelihood_std_error"]
                .as_f64()
                .unwrap_or(0.0);
            assert!(
                (lml - want).abs() <= tol.lml + tol.lml_std_errors * se,
                "{what}: lml {lml} vs {want} (numpy)"
            );
            match c {
                Some(c) => {
                    let got = json["constant_mean"].as_f64().unwrap();
                    let err = (got - c).abs() / c.abs();
                    assert!(err <= tol.fitted_constant, "{what}: c {got} vs {c}");
                }
                None => assert!(json["constant_mean"].is_null(), "{what}"),
            }
            for m in ["rmse", "nlpd", "coverage95"] {
                let got = json["metrics"][m].as_f64().unwrap();
                let want = case["metrics"][m].as_f64().unwrap();
                let t = mean_tol.max(tol.var) * (1.0 + want.abs());
                assert!((got - want).abs() <= t, "{what}: {m} {got} vs {want}");
            }
        }
    }

    #[test]
    fn dense_matches_numpy_to_1e_8() {
        let t = 1e-8;
        check(
            "dense",
            Tol {
                mean: t,
                var: t,
                lml: t,
                lml_std_errors: 0.0,
                fitted_constant: t,
            },
        );
    }

    #[test]
    fn parameter_space_matches_numpy_to_1e_8() {
        let t = 1e-8;
        check(
            "parameter",
            Tol {
                mean: t,
                var: t,
                lml: t,
                lml_std_errors: 0.0,
                fitted_constant: t,
            },
        );
    }

    #[test]
    fn function_space_matches_numpy_to_its_tolerance() {
        check(
            "function",
            Tol {
                mean: 1e-7,
                var: 1e-8,
                lml: 1e-6,
                lml_std_errors: 3.0,
                // Profiled out exactly from the CG solves (it was 1e-4 with Adam steps).
                fitted_constant: 1e-6,
            },
        );
    }
}

/// The numbers of two prediction tables: the same header and rows, values equal to `tol`
/// relative (scaled by the column's largest value).
fn same_predictions(a: &str, b: &str, tol: f64) {
    let (mut la, mut lb) = (a.lines(), b.lines());
    let header = la.next().unwrap();
    assert_eq!(Some(header), lb.next(), "the same columns");
    assert_eq!(a.lines().count(), b.lines().count(), "the same rows");
    for name in header.split(',') {
        let (ca, cb) = (csv_column(a, name), csv_column(b, name));
        let scale = ca.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for (x, y) in ca.iter().zip(&cb) {
            assert!((x - y).abs() <= tol * scale, "{name}: {x} vs {y}");
        }
    }
}

/// The keys of two JSON objects, at every depth, are the same.
fn same_keys(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    if let (Some(oa), Some(ob)) = (a.as_object(), b.as_object()) {
        let ka: Vec<&String> = oa.keys().collect();
        let kb: Vec<&String> = ob.keys().collect();
        assert_eq!(ka, kb, "keys of {at}");
        for k in ka {
            same_keys(&oa[k], &ob[k], &format!("{at}.{k}"));
        }
    } else {
        assert_eq!(a.is_null(), b.is_null(), "{at}: {a} vs {b}");
    }
}

/// `ntk adapt --distributed` with `launch` (`--threads N`, or a command line that starts
/// `mpirun`) against one process with `--strategy function`: the same CSV format and rows,
/// the same JSON keys, values equal to 1e-9 relative with σ² and s² fixed and 1e-6 fitted.
fn distributed_matches_one_process(launch: &[String], label: &str) {
    let (dir, model) = trained();
    let d = dir.path();
    let train = write(d, "train.csv", &sine_csv(53, -2.5, 2.5, true));
    let test = write(d, "test.csv", &sine_csv(9, -3.0, 3.0, true));
    for (flags, tol) in [
        (&["--noise", "0.01", "--prior-scale", "0.5"][..], 1e-9),
        (&["--prior-scale", "fit", "--mean", "constant"][..], 1e-6),
    ] {
        let run = |out: &Path, distributed: bool| {
            let mut extra = vec!["--strategy", "function", "--json"];
            extra.extend(flags);
            let mut args = adapt_args(&model, "1-16-1:tanh", &train, &test, out, &extra);
            let o = if distributed {
                args.push("--distributed".into());
                let bin = env!("CARGO_BIN_EXE_ntk").to_string();
                let mut cmd: Vec<String> = launch.to_vec();
                let threads = cmd.first().is_some_and(|a| a == "--threads");
                if threads {
                    args.extend(cmd);
                    ntk(&strs(&args))
                } else {
                    cmd.push(bin);
                    cmd.extend(args);
                    std::process::Command::new(&cmd[0])
                        .args(&cmd[1..])
                        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                        .output()
                        .unwrap()
                }
            } else {
                ntk(&strs(&args))
            };
            assert!(o.status.success(), "{label} {flags:?}: {}", stderr(&o));
            let json: serde_json::Value =
                serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
            (std::fs::read_to_string(out).unwrap(), json, stderr(&o))
        };
        let (csv1, json1, _) = run(&d.join("one.csv"), false);
        let (csv_d, json_d, err) = run(&d.join("dist.csv"), true);
        same_predictions(&csv1, &csv_d, tol);
        same_keys(&json1, &json_d, "json");
        assert_eq!(json_d["strategy"], "MatrixFree");
        assert_eq!(json_d["n_train"], 53);
        assert_eq!(json_d["n_params"], json1["n_params"]);
        for key in ["noise", "prior_scale", "log_marginal_likelihood"] {
            let (a, b) = (json1[key].as_f64().unwrap(), json_d[key].as_f64().unwrap());
            assert!((a - b).abs() <= tol * a.abs(), "{label} {key}: {a} vs {b}");
        }
        assert_eq!(json1["fit"]["iterations"], json_d["fit"]["iterations"]);
        // Rank 0 prints every rank's timings and all-reduce share.
        assert!(
            err.contains("rank 0: ") && err.contains("all-reduce"),
            "{err}"
        );
    }
}

#[test]
fn distributed_adapt_over_threads_writes_what_one_process_writes() {
    for threads in ["1", "3"] {
        let launch = ["--threads".to_string(), threads.to_string()];
        distributed_matches_one_process(&launch, &format!("{threads} threads"));
    }
}

#[test]
fn distributed_adapt_refuses_what_it_cannot_shard_and_stops_every_rank() {
    let (dir, model) = trained();
    let d = dir.path();
    let out = d.join("out.csv");
    let train = write(d, "train.csv", &sine_csv(12, -2.0, 2.0, true));
    let test = write(d, "test.csv", &sine_csv(5, -2.0, 2.0, false));
    let args = |train: &Path, extra: &[&str]| {
        let mut e = vec!["--distributed"];
        e.extend(extra);
        adapt_args(&model, "1-16-1:tanh", train, &test, &out, &e)
    };
    fails_cleanly(
        &strs(&args(&train, &["--strategy", "dense"])),
        &["--distributed runs the matrix-free function-space strategy"],
        &out,
    );
    fails_cleanly(
        &strs(&args(&train, &["--likelihood", "categorical"])),
        &["--likelihood gaussian"],
        &out,
    );
    fails_cleanly(
        &strs(&args(&train, &["--threads", "0"])),
        &["--threads must be at least 1"],
        &out,
    );
    let mut plain = adapt_args(&model, "1-16-1:tanh", &train, &test, &out, &[]);
    plain.extend(["--threads".into(), "2".into()]);
    fails_cleanly(&strs(&plain), &["--distributed"], &out);
    // A bad cell in the second rank's share: its message, with the file's line number.
    let mut lines: Vec<String> = sine_csv(12, -2.0, 2.0, true)
        .lines()
        .map(String::from)
        .collect();
    lines[11] = "1.6,oops".into(); // line 12 of the file
    let text = lines.join("\n") + "\n";
    let bad = write(d, "bad.csv", &text);
    fails_cleanly(
        &strs(&args(&bad, &["--threads", "2"])),
        &[
            "rank 1: ",
            "bad.csv: line 12, column `y`: `oops` is not a number",
        ],
        &out,
    );
    // More ranks than rows.
    let small = write(d, "small.csv", &sine_csv(3, -1.0, 1.0, true));
    fails_cleanly(
        &strs(&args(&small, &["--threads", "5", "--noise", "0.1"])),
        &["holds no data rows", "fewer data lines than ranks"],
        &out,
    );
}

/// `mpirun` on the PATH, if any.
#[cfg(feature = "mpi")]
fn mpirun() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("mpirun"))
        .find(|p| p.is_file())
}

#[cfg(feature = "mpi")]
#[test]
fn distributed_adapt_over_mpi_processes_writes_what_one_process_writes() {
    let Some(mpirun) = mpirun() else {
        println!("skipped: `mpirun` is not on the PATH (Debian: apt install openmpi-bin)");
        return;
    };
    for np in ["2", "4"] {
        let launch = [
            mpirun.display().to_string(),
            "--oversubscribe".into(),
            "-np".into(),
            np.into(),
        ];
        distributed_matches_one_process(&launch, &format!("mpirun -np {np}"));
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_adapt_over_mpi_processes_writes_what_one_process_writes() {
    println!(
        "skipped: built without the `mpi` feature \
         (cargo test -p ntk-cli --features mpi --test cli distributed)"
    );
}
