//! `ntk adapt --likelihood categorical`: the Laplace approximation of a linearized classifier.
//!
//! The logits are $f = \mu(x) + J(x)\theta'$ with $\theta' \sim \mathcal N(0, s^2 I)$ and a
//! softmax likelihood of the labels; Newton's method finds the posterior mode and the
//! posterior is the Gaussian there ([`ntk_gp::NtkClassifier`]). OUT.csv holds, per test
//! point, the posterior mean and variance of each logit (`mean_c`, `var_c`) and the class
//! probabilities `p_c` by the probit approximation
//! $\operatorname{softmax}_c\big(m_c / \sqrt{1 + \pi\Sigma_{cc}/8}\big)$, which sum to 1.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::Backend;
use nalgebra::DMatrix;
use ntk_gp::{ClassMetrics, ClassifierParams, NtkClassifier, Strategy};
use serde_json::json;

use crate::error::CliError;
use crate::model::LoadedModel;
use crate::output::{refuse_overwriting, write_atomically};
use crate::table::{Table, read_table};

/// What a categorical adaptation needs, checked from the command line.
pub struct Request {
    /// The model, read.
    pub model: LoadedModel,
    /// The model file (never overwritten).
    pub model_path: PathBuf,
    /// Training data: inputs and labels.
    pub train: PathBuf,
    /// Test inputs (labels optional).
    pub test: PathBuf,
    /// The label column.
    pub target: String,
    /// Where the predictions go (standard output if `None`).
    pub output: Option<PathBuf>,
    /// Print a JSON summary.
    pub json: bool,
    /// The prior scale $s^2$.
    pub prior_scale: f64,
    /// The strategy (`Dense`, `MatrixFreeParameterSpace` or `Auto`).
    pub strategy: Strategy,
}

/// The labels of a table's target column: integers in `0..classes`.
fn labels(
    table: &Table,
    path: &std::path::Path,
    classes: usize,
    all: bool,
) -> Result<Vec<Option<usize>>, CliError> {
    let Some(target) = &table.target else {
        return Ok(vec![None; table.inputs.nrows()]);
    };
    target
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            None if !all => Ok(None),
            Some(v) if v.fract() == 0.0 && *v >= 0.0 && (*v as usize) < classes => {
                Ok(Some(*v as usize))
            }
            _ => Err(CliError::Csv {
                path: path.to_path_buf(),
                message: format!(
                    "row {}: label {} is not a class 0…{} (the network has {classes} outputs)",
                    i + 1,
                    v.map_or("(empty)".to_string(), |v| v.to_string()),
                    classes - 1
                ),
            }),
        })
        .collect()
}

/// Adapts the classifier to the training labels and writes the test predictions.
pub fn adapt_categorical<B: Backend>(req: &Request, dev: &B::Device) -> Result<(), CliError>
where
    B::FloatElem: krylov::Scalar,
{
    if let Some(out) = &req.output {
        refuse_overwriting(out, &[&req.train, &req.test, &req.model_path])?;
    }
    let t0 = Instant::now();
    let network = req.model.network::<B>(dev)?;
    let classes = network.n_outputs();
    if classes < 2 {
        return Err(CliError::Usage(format!(
            "{}: the network has {classes} output; a categorical likelihood needs one logit per class (two or more)",
            req.model_path.display()
        )));
    }
    let train = read_table(&req.train, &req.target, true)?;
    let test = read_table(&req.test, &req.target, false)?;
    for (table, path) in [(&train, &req.train), (&test, &req.test)] {
        if table.inputs.ncols() != req.model.n_inputs() {
            return Err(CliError::Csv {
                path: path.clone(),
                message: format!(
                    "{} input columns, but the model's input shape {:?} takes {}",
                    table.inputs.ncols(),
                    req.model.config.input,
                    req.model.n_inputs()
                ),
            });
        }
    }
    let y: Vec<usize> = labels(&train, &req.train, classes, true)?
        .into_iter()
        .map(|l| l.expect("a training file has every label"))
        .collect();
    let y_test = labels(&test, &req.test, classes, false)?;
    let params = ClassifierParams::default()
        .strategy(req.strategy)
        .prior_scale(req.prior_scale);
    let gp = NtkClassifier::new(network, &train.inputs, &y, params)?;
    let seconds_fit = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (means, covs) = gp.predict_logits(&test.inputs)?;
    let proba = ntk_gp::laplace::probit_probabilities(&means, &covs);
    let seconds_predict = t1.elapsed().as_secs_f64();
    if let Some(i) = (0..means.nrows()).find(|&i| {
        !(means.row(i).iter().all(|v| v.is_finite())
            && covs[i].iter().all(|v| v.is_finite())
            && proba.row(i).iter().all(|v| v.is_finite()))
    }) {
        return Err(CliError::NonFinite(format!(
            "the prediction at test row {} is not finite: nothing was written",
            i + 1
        )));
    }
    let csv = class_csv(&test, &means, &covs, &proba);
    let scored: Vec<(usize, Vec<f64>)> = y_test
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (l, proba.row(i).iter().copied().collect())))
        .collect();
    let metrics = if scored.is_empty() {
        None
    } else {
        let (labels, rows): (Vec<usize>, Vec<Vec<f64>>) = scored.into_iter().unzip();
        let m = ClassMetrics::evaluate(&labels, &rows)?;
        Some(
            json!({ "accuracy": m.accuracy, "nll": m.nll, "ece": m.ece, "n_scored": labels.len() }),
        )
    };
    match &req.output {
        Some(path) => write_atomically(path, csv.as_bytes())?,
        None => print!("{csv}"),
    }
    let (iterations, converged) = gp.newton();
    if req.json {
        let summary = json!({
            "likelihood": "categorical",
            "strategy": format!("{:?}", gp.strategy()),
            "prior_scale": req.prior_scale,
            "log_marginal_likelihood": gp.log_marginal_likelihood(),
            "log_marginal_likelihood_std_error": gp.lml_std_error(),
            "newton": { "iterations": iterations, "converged": converged },
            "n_classes": classes,
            "n_train": y.len(),
            "n_test": test.inputs.nrows(),
            "n_params": req.model.params.len(),
            "metrics": metrics,
            "timings": { "fit_s": seconds_fit, "predict_s": seconds_predict, "total_s": t0.elapsed().as_secs_f64() },
        });
        println!("{summary}");
    } else if let Some(m) = &metrics {
        eprintln!("ntk: {m}");
    }
    if !converged {
        eprintln!(
            "ntk: warning: Newton's method stopped after {iterations} steps before the mode settled"
        );
    }
    Ok(())
}

/// The prediction table: the input columns, then `mean_c`, `var_c` and `p_c` per class.
fn class_csv(
    test: &Table,
    means: &DMatrix<f64>,
    covs: &[DMatrix<f64>],
    proba: &DMatrix<f64>,
) -> String {
    let classes = means.ncols();
    let mut out = String::new();
    for name in &test.input_names {
        out.push_str(name);
        out.push(',');
    }
    let header: Vec<String> = ["mean", "var", "p"]
        .iter()
        .flat_map(|k| (0..classes).map(move |c| format!("{k}_{c}")))
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for i in 0..means.nrows() {
        for j in 0..test.inputs.ncols() {
            let _ = write!(out, "{},", test.inputs[(i, j)]);
        }
        let cells: Vec<String> = (0..classes)
            .map(|c| means[(i, c)])
            .chain((0..classes).map(|c| covs[i][(c, c)]))
            .chain((0..classes).map(|c| proba[(i, c)]))
            .map(|v| v.to_string())
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
