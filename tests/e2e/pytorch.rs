//! `ntk` on networks exported from PyTorch (`tests/fixtures/pytorch/`, written by
//! `scripts/make_pytorch_fixtures.py`): ONNX graphs from both exporters, `state_dict`s with
//! named and gapped keys, a CNN, a residual MLP, GELU networks and a 3-class classifier. The
//! references are float64, from an explicit torch.func Jacobian, independent of this code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// σ² and s² of the regression references.
const NOISE: &str = "0.05";
const PRIOR_SCALE: &str = "0.5";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pytorch")
        .join(name)
}

fn ntk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ntk-e2e"))
        .args(args)
        .output()
        .expect("the ntk binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{name}.reference.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The named columns of a CSV file, as numbers.
fn columns(path: &Path, names: &[String]) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let idx: Vec<usize> = names
        .iter()
        .map(|n| {
            header
                .iter()
                .position(|h| h == n)
                .unwrap_or_else(|| panic!("no column {n}"))
        })
        .collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    idx.iter()
        .map(|&j| rows.iter().map(|r| r[j]).collect())
        .collect()
}

/// The largest $|g_i - w_i| / \max(|w_i|, 0.01 \max_j |w_j|)$ (the CLI docs' relative error).
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = 0.01 * want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(scale))
        .fold(0.0, f64::max)
}

/// Runs `ntk adapt` with `--json` into a temporary folder; returns the summary and OUT.csv.
fn adapt(args: &[&str]) -> (Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let mut all = vec![
        "adapt",
        "--output",
        out.to_str().unwrap(),
        "--json",
        "--quiet",
    ];
    all.extend_from_slice(args);
    let o = ntk(&all);
    assert_eq!(o.status.code(), Some(0), "{all:?}: {}", stderr(&o));
    let summary = serde_json::from_slice(&o.stdout).unwrap();
    (summary, dir)
}

/// A regression model against its reference, with the bounds of one strategy.
fn check_regression(task: &str, model: &[&str], strategy: &str, bounds: [f64; 3]) {
    let (train, test) = (
        fixture(&format!("{task}.train.csv")),
        fixture(&format!("{task}.test.csv")),
    );
    let mut args = model.to_vec();
    args.extend([
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--noise",
        NOISE,
        "--prior-scale",
        PRIOR_SCALE,
        "--strategy",
        strategy,
    ]);
    let (summary, dir) = adapt(&args);
    let r = reference(task);
    let cols = columns(&dir.path().join("out.csv"), &["mean".into(), "var".into()]);
    let lml = summary["log_marginal_likelihood"].as_f64().unwrap();
    let want_lml = r["log_marginal_likelihood"].as_f64().unwrap();
    // The matrix-free strategies estimate the log-determinant by SLQ: 3 standard errors more.
    let se = summary["log_marginal_likelihood_std_error"]
        .as_f64()
        .unwrap_or(0.0);
    let errors = [
        rel_err(&cols[0], &floats(&r["mean"])),
        rel_err(&cols[1], &floats(&r["var"])),
        (lml - want_lml).abs() / want_lml.abs(),
    ];
    let bounds = [bounds[0], bounds[1], bounds[2] + 3.0 * se / want_lml.abs()];
    for ((e, b), what) in errors.iter().zip(bounds).zip(["mean", "var", "lml"]) {
        assert!(e <= &b, "{model:?} {strategy}: {what} error {e:e} > {b:e}");
    }
    assert_eq!(summary["n_params"], r["n_params"], "{model:?}");
}

fn onnx(name: &str) -> [String; 2] {
    ["--model".into(), fixture(name).to_str().unwrap().into()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every regression network, every way it was saved, with the dense strategy: 1e-8.
#[test]
fn dense_adaptation_matches_every_regression_reference() {
    let st = |name: &str, extra: &[&str]| {
        let mut v = vec![
            "--model".to_string(),
            fixture(name).to_str().unwrap().to_string(),
            "--arch".into(),
            "2-16-16-1:tanh".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("cnn", onnx("cnn.onnx").to_vec()),
        ("cnn", onnx("cnn-dynamo.onnx").to_vec()),
        ("resmlp", onnx("resmlp.onnx").to_vec()),
        ("named", onnx("named.onnx").to_vec()),
        ("gelu", onnx("gelu.onnx").to_vec()),
        ("gelu", onnx("gelu-dynamo.onnx").to_vec()),
        ("cnn-ops", onnx("cnn-ops.onnx").to_vec()),
        ("matmul", onnx("matmul.onnx").to_vec()),
        ("named", st("named.safetensors", &[])),
        (
            "named",
            st("named.safetensors", &["--layers", "fc1,fc2,fc3"]),
        ),
        ("gapped", st("gapped.safetensors", &[])),
        ("gapped", st("gapped.safetensors", &["--layers", "0,3,6"])),
    ];
    for (task, model) in &cases {
        check_regression(task, &strs(model), "dense", [1e-8, 1e-8, 1e-8]);
    }
    // `--arch` is checked against an ONNX graph, and passes where it matches.
    let mut named = onnx("named.onnx").to_vec();
    named.extend(["--arch".into(), "2-16-16-1:tanh".into()]);
    check_regression("named", &strs(&named), "dense", [1e-8, 1e-8, 1e-8]);
}

/// The other strategies on the CNN and the residual MLP, to their documented tolerances
/// (docs/src/cli.md, "Accuracy of the strategies"): the log marginal likelihood of the
/// matrix-free ones within 3 of their standard errors (and 1e-9 relative).
#[test]
fn every_strategy_adapts_the_cnn_and_the_residual_network() {
    for (task, file) in [("cnn", "cnn.onnx"), ("resmlp", "resmlp.onnx")] {
        let model = onnx(file);
        check_regression(task, &strs(&model), "parameter", [1e-8, 1e-8, 1e-8]);
        check_regression(task, &strs(&model), "function", [1e-7, 1e-8, 1e-9]);
        check_regression(task, &strs(&model), "parameter-free", [1e-6, 1e-8, 1e-9]);
    }
}

/// The 3-class classifier (ONNX and `state_dict`): logits, their variances, probabilities,
/// the Laplace evidence and the test metrics, to 1e-6.
#[test]
fn categorical_adaptation_matches_the_laplace_reference() {
    let r = reference("classifier");
    let (train, test) = (
        fixture("classifier.train.csv"),
        fixture("classifier.test.csv"),
    );
    let (graph, st) = (
        fixture("classifier.onnx"),
        fixture("classifier.safetensors"),
    );
    let models: [Vec<&str>; 2] = [
        vec!["--model", graph.to_str().unwrap()],
        vec!["--model", st.to_str().unwrap(), "--arch", "2-16-16-3:tanh"],
    ];
    for (model, strategy, bound) in [
        (&models[0], "dense", 1e-6),
        (&models[1], "dense", 1e-6),
        (&models[0], "parameter-free", 1e-7),
    ] {
        let mut args = model.clone();
        args.extend([
            "--likelihood",
            "categorical",
            "--prior-scale",
            "1",
            "--strategy",
            strategy,
            "--train",
            train.to_str().unwrap(),
            "--test",
            test.to_str().unwrap(),
        ]);
        let (summary, dir) = adapt(&args);
        for (key, prefix) in [("mean", "mean"), ("var", "var"), ("proba", "p")] {
            let names: Vec<String> = (0..3).map(|c| format!("{prefix}_{c}")).collect();
            let got = columns(&dir.path().join("out.csv"), &names);
            let want: Vec<Vec<f64>> = r[key].as_array().unwrap().iter().map(floats).collect();
            for c in 0..3 {
                let want_c: Vec<f64> = want.iter().map(|row| row[c]).collect();
                let e = rel_err(&got[c], &want_c);
                assert!(e <= bound, "{model:?} {strategy}: {key}_{c} error {e:e}");
            }
            if key == "proba" {
                let totals = (0..got[0].len()).map(|i| got.iter().map(|col| col[i]).sum::<f64>());
                for (i, total) in totals.enumerate() {
                    assert!((total - 1.0).abs() < 1e-12, "row {i} sums to {total}");
                }
            }
        }
        // The matrix-free evidence is a stochastic Lanczos estimate: within 3 of its standard
        // errors (0.59 on this fixture).
        let lml = summary["log_marginal_likelihood"].as_f64().unwrap();
        let want = r["log_marginal_likelihood"].as_f64().unwrap();
        let se = summary["log_marginal_likelihood_std_error"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(
            (lml - want).abs() <= bound * want.abs() + 3.0 * se,
            "{strategy}: lml {lml} ± {se} vs {want}"
        );
        for k in ["accuracy", "nll", "ece"] {
            let (g, w) = (
                summary["metrics"][k].as_f64().unwrap(),
                r[k].as_f64().unwrap(),
            );
            assert!(
                (g - w).abs() <= bound * w.abs().max(1.0),
                "{strategy}: {k} {g} vs {w}"
            );
        }
        assert_eq!(summary["newton"]["converged"], true);
    }
}

#[test]
fn inspect_shows_layers_shapes_and_the_key_mapping() {
    let o = ntk(&["inspect", fixture("cnn-dynamo.onnx").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for needle in [
        "input: [1, 8, 8] per point (64 CSV input columns",
        "outputs: 1",
        "parameters: 1097",
        "Conv2d(1 → 4, kernel [3, 3], stride [1, 1], padding [1, 1]",
        "MaxPool2d(kernel [2, 2])",
        "Linear(64 → 16)",
        "4.weight             [16, 64]",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    let o = ntk(&[
        "inspect",
        fixture("gapped.safetensors").to_str().unwrap(),
        "--arch",
        "2-16-16-1:tanh",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("2.weight             [16, 16]         3.weight"),
        "{text}"
    );
    assert!(
        text.contains("4.bias               [1]              6.bias"),
        "{text}"
    );
    let o = ntk(&["inspect", fixture("resmlp.onnx").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Residual(x + f(x), f of 3 layers)"), "{text}");
    assert!(text.contains("2.body.0.weight"), "{text}");
}

/// One bad input: exit 2, one line naming what is wrong, nothing on standard output and no
/// output file.
fn refused(args: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let mut all: Vec<&str> = args.to_vec();
    if args[0] == "adapt" {
        all.extend(["--output", out.to_str().unwrap()]);
    }
    let o = ntk(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{all:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{all:?}: {err}");
    assert!(
        err.starts_with("ntk: ") && !err.contains("panicked"),
        "{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(o.stdout.is_empty(), "{all:?} printed {:?}", o.stdout);
    assert!(!out.exists(), "{all:?} left an output file");
}

#[test]
fn every_bad_input_exits_2_with_one_line_and_no_output() {
    let f = |name: &str| fixture(name).to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // A dynamo export without its external data file.
    let lonely = dir.path().join("alone");
    std::fs::create_dir(&lonely).unwrap();
    std::fs::copy(fixture("cnn-dynamo.onnx"), lonely.join("cnn-dynamo.onnx")).unwrap();
    let lonely = lonely.join("cnn-dynamo.onnx").to_str().unwrap().to_string();
    // … and one whose "data file" is a folder: the parser panics on it, `ntk` says one line.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("cnn-dynamo.onnx.data")).unwrap();
    std::fs::copy(fixture("cnn-dynamo.onnx"), folder.join("cnn-dynamo.onnx")).unwrap();
    let folder = folder.join("cnn-dynamo.onnx").to_str().unwrap().to_string();
    let garbage = write("garbage.onnx", b"this is not a protobuf message at all");
    let two_columns = f("named.train.csv");
    // Labels outside 0..3, and a fractional label.
    let bad_labels = write("labels.csv", b"x0,x1,y\n0.1,0.2,0\n0.3,0.4,3\n");
    let fractional = write("frac.csv", b"x0,x1,y\n0.1,0.2,0\n0.3,0.4,1.5\n");
    let swapped = write("swapped.csv", b"x1,x0,y\n0.1,0.2,0\n0.3,0.4,1\n");
    let (cnn_tr, cnn_te) = (f("cnn.train.csv"), f("cnn.test.csv"));
    let (named_tr, named_te) = (f("named.train.csv"), f("named.test.csv"));
    let (cls_tr, cls_te) = (f("classifier.train.csv"), f("classifier.test.csv"));
    let adapt = |model: &[&str], train: &str, test: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["adapt".into(), "--model".into()];
        v.extend(model.iter().map(|s| s.to_string()));
        v.extend(["--train".into(), train.into(), "--test".into(), test.into()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        // Operators that are not read: the operator and the node as the file names it.
        (
            adapt(&[&f("refused-leakyrelu.onnx")], &named_tr, &named_te, &[]),
            vec!["ONNX operator LeakyRelu", "/1/LeakyRelu", "read are: Gemm"],
        ),
        (
            adapt(&[&f("refused-softmax.onnx")], &named_tr, &named_te, &[]),
            vec!["ONNX operator Softmax", "/3/Softmax"],
        ),
        (
            adapt(&[&f("refused-gelu-tanh.onnx")], &named_tr, &named_te, &[]),
            vec!["ONNX operator Gelu", "approximate=\"tanh\""],
        ),
        (
            vec!["inspect".into(), f("refused-softmax.onnx")],
            vec!["Softmax"],
        ),
        // Unreadable files.
        (
            adapt(&[&garbage], &named_tr, &named_te, &[]),
            vec!["garbage.onnx", "onnx"],
        ),
        (
            adapt(&[&lonely], &cnn_tr, &cnn_te, &[]),
            vec!["cnn-dynamo.onnx.data", "keep it next to the model"],
        ),
        (
            adapt(&[&folder], &cnn_tr, &cnn_te, &[]),
            vec!["cnn-dynamo.onnx"],
        ),
        (
            adapt(
                &[&dir.path().join("missing.onnx").to_string_lossy()],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["missing.onnx"],
        ),
        // safetensors needs --arch; --layers is for safetensors only.
        (
            adapt(&[&f("named.safetensors")], &named_tr, &named_te, &[]),
            vec!["give --arch", ".onnx file needs none"],
        ),
        (
            adapt(
                &[&f("named.onnx"), "--layers", "fc1,fc2,fc3"],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["--layers"],
        ),
        // --arch that does not match the graph.
        (
            adapt(
                &[&f("named.onnx"), "--arch", "2-8-1:tanh"],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["--arch 2-8-1:tanh does not match", "Linear(2 → 16)"],
        ),
        // --layers naming a missing prefix, or in an order that does not fit: the tensor, both
        // shapes, and the prefixes the file holds.
        (
            adapt(
                &[
                    &f("named.safetensors"),
                    "--arch",
                    "2-16-16-1:tanh",
                    "--layers",
                    "fc1,fc2,out",
                ],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["`out.weight` is missing", "fc1,fc2,fc3"],
        ),
        (
            adapt(
                &[
                    &f("named.safetensors"),
                    "--arch",
                    "2-16-16-1:tanh",
                    "--layers",
                    "fc2,fc1,fc3",
                ],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["`fc2.weight`", "[16, 2]", "[16, 16]", "fc1,fc2,fc3"],
        ),
        // A residual network cannot be described by --arch (read as a wider MLP, it would
        // lose its skip connection): its prefixes do not follow one pattern.
        (
            adapt(
                &[&f("resmlp.safetensors"), "--arch", "2-16-16-16-1:tanh"],
                &named_tr,
                &named_te,
                &[],
            ),
            vec![
                "(0,2.body.0,2.body.2,4) do not follow one pattern",
                "ONNX export",
            ],
        ),
        // Named layers that leave tensors unused (a CNN's convolutions) are refused by name.
        (
            adapt(
                &[
                    &f("cnn-ops.safetensors"),
                    "--arch",
                    "16-8-1:softplus",
                    "--layers",
                    "7,9",
                ],
                &named_tr,
                &named_te,
                &[],
            ),
            vec!["does not use (0.bias, 0.weight, 2.bias"],
        ),
        // CSV columns that do not fit the model's input shape: both numbers.
        (
            adapt(&[&f("cnn.onnx")], &two_columns, &named_te, &[]),
            vec!["2 input columns", "[1, 8, 8] takes 64"],
        ),
        // A classifier with the Gaussian likelihood, and a regression network as a classifier.
        (
            adapt(&[&f("classifier.onnx")], &cls_tr, &cls_te, &[]),
            vec!["3 outputs", "--likelihood categorical"],
        ),
        (
            adapt(
                &[&f("named.onnx")],
                &named_tr,
                &named_te,
                &["--likelihood", "categorical"],
            ),
            vec!["1 output", "two or more"],
        ),
        // Categorical: no noise, no mean function, a fixed prior scale, labels 0…C−1.
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--noise", "0.1"],
            ),
            vec!["--noise", "categorical likelihood has none"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--mean", "zero"],
            ),
            vec!["--mean"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--prior-scale", "fit"],
            ),
            vec!["--prior-scale fit"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &bad_labels,
                &cls_te,
                &["--likelihood", "categorical"],
            ),
            vec!["labels.csv", "row 2: label 3 is not a class 0…2"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &fractional,
                &cls_te,
                &["--likelihood", "categorical"],
            ),
            vec!["frac.csv", "label 1.5"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--strategy", "function"],
            ),
            vec!["dense, parameter-free or auto"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--time-limit", "5"],
            ),
            vec!["--time-limit"],
        ),
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &cls_te,
                &["--likelihood", "categorical", "--max-memory", "1MB"],
            ),
            vec![
                "the dense classifier needs about",
                "--max-memory",
                "parameter-free",
            ],
        ),
        // Test columns in another order than the training file's.
        (
            adapt(
                &[&f("classifier.onnx")],
                &cls_tr,
                &swapped,
                &["--likelihood", "categorical"],
            ),
            vec!["swapped.csv", "input columns (x1,x0) differ"],
        ),
    ];
    for (args, needles) in &cases {
        refused(&strs(args), needles);
    }
}

/// `ntk tasks` adapts every task in a folder with one network read from ONNX: the same
/// numbers as `ntk adapt`, hence as the reference.
#[test]
fn tasks_adapts_a_folder_with_an_onnx_network() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::copy(
            fixture("cnn.train.csv"),
            dir.path().join(format!("{name}.train.csv")),
        )
        .unwrap();
        std::fs::copy(
            fixture("cnn.test.csv"),
            dir.path().join(format!("{name}.test.csv")),
        )
        .unwrap();
    }
    let out = dir.path().join("pred");
    let o = ntk(&[
        "tasks",
        "--model",
        fixture("cnn-dynamo.onnx").to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--noise",
        NOISE,
        "--prior-scale",
        PRIOR_SCALE,
        "--strategy",
        "dense",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = reference("cnn");
    let want = r["log_marginal_likelihood"].as_f64().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        let lml: f64 = row.split(',').nth(3).unwrap().parse().unwrap();
        assert!((lml - want).abs() <= 1e-8 * want.abs(), "{row}");
    }
    for name in ["a", "b"] {
        let cols = columns(&out.join(format!("{name}.pred.csv")), &["mean".into()]);
        assert!(rel_err(&cols[0], &floats(&r["mean"])) <= 1e-8, "{name}");
    }
}
