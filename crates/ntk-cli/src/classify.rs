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

use crate::app::Task;
use crate::error::CliError;
use crate::memory;
use crate::model::LoadedModel;
use crate::output::write_atomically;
use crate::table::Table;

/// What a categorical adaptation needs, checked from the command line: the model and the
/// task's data read, their shapes checked against each other, the output path not an input.
pub struct Request {
    /// The model, read.
    pub model: LoadedModel,
    /// The training and test tables.
    pub(crate) task: Task,
    /// Where the predictions go (standard output if `None`).
    pub output: Option<PathBuf>,
    /// Print a JSON summary.
    pub json: bool,
    /// The prior scale $s^2$.
    pub prior_scale: f64,
    /// The strategy (`Dense`, `MatrixFreeParameterSpace` or `Auto`).
    pub strategy: Strategy,
    /// The memory a run may use (`--max-memory`, else what is available).
    pub memory_limit: Option<f64>,
    /// Whether the limit is `--max-memory` (for the message).
    pub max_memory_given: bool,
}

/// Peak bytes of the dense strategy at $n$ training and $m$ test points, $C$ classes and $p$
/// parameters: the $nC\times nC$ kernel, $B$ and its factor, the cross-kernel and the
/// Jacobian blocks that form them.
fn dense_bytes(n: usize, m: usize, classes: usize, params: usize) -> f64 {
    let (nc, mc) = ((n * classes) as f64, (m * classes) as f64);
    ntk_gp::strategy::PROCESS_BYTES + 8.0 * (3.0 * nc * nc + nc * mc + (nc + mc) * params as f64)
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
    let t0 = Instant::now();
    let network = req.model.network::<B>(dev)?;
    let classes = network.n_outputs();
    if classes < 2 {
        return Err(CliError::Usage(format!(
            "{}: the network has {classes} output; a categorical likelihood needs one logit per class (two or more)",
            req.model.path.display()
        )));
    }
    let (train, test) = (&req.task.train, &req.task.test);
    let [train_path, test_path] = &req.task.paths;
    let y: Vec<usize> = labels(train, train_path, classes, true)?
        .into_iter()
        .map(|l| l.expect("a training file has every label"))
        .collect();
    let y_test = labels(test, test_path, classes, false)?;
    let (n, m) = (y.len(), test.inputs.nrows());
    let params = ClassifierParams::default()
        .strategy(req.strategy)
        .prior_scale(req.prior_scale);
    let dense = params.resolved_strategy(n, classes) == Strategy::Dense;
    let need = dense_bytes(n, m, classes, req.model.params.len());
    if let Some(limit) = req.memory_limit.filter(|l| dense && need > *l) {
        return Err(CliError::Memory(format!(
            "the dense classifier needs about {} at n = {n}, {m} test points, {classes} classes, p = {}, over the {} of {}; --strategy parameter-free runs without the nC × nC kernel",
            memory::format_bytes(need),
            req.model.params.len(),
            memory::format_bytes(limit),
            if req.max_memory_given {
                "--max-memory"
            } else {
                "available memory"
            }
        )));
    }
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
    let csv = class_csv(test, &means, &covs, &proba);
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
            // As for regression: the SLQ estimate's standard error, null when exact.
            "log_marginal_likelihood_std_error": (gp.strategy() != Strategy::Dense).then(|| gp.lml_std_error()),
            "newton": { "iterations": iterations, "converged": converged },
            "n_classes": classes,
            "n_train": y.len(),
            "n_test": test.inputs.nrows(),
            "n_params": req.model.params.len(),
            "memory": { "estimated_peak_bytes": dense.then_some(need), "peak_rss_bytes": memory::peak_rss_bytes(), "limit_bytes": req.memory_limit },
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
