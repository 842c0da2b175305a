//! The Fisher experiment on a classifier, the paper's own setting for Figures 5 and 6 (a CNN
//! trained with cross-entropy; the paper used PreResNet-56 on CIFAR-10).
//!
//! A LeNet-style CNN ([`CnnConfig`], ReLU) with $o$ logits and the categorical likelihood, whose
//! Fisher is the GGN $F = \sum_i J_i^\top \big(\operatorname{diag}(p_i) - p_i p_i^\top\big) J_i$ with
//! $p_i = \operatorname{softmax}(f(x_i))$. It is trained by Adam on the cross-entropy
//! ([`Loss::CrossEntropy`]) on images of $o$ noisy class templates, and at initialization,
//! half-way and at the end of training it measures:
//! - the relative error $\lVert F_\varepsilon v - F v\rVert / \lVert F v\rVert$ of the
//!   finite-difference product ([`FiniteDifferenceFisher`], f64 and f32) against the exact GGN
//!   product in f64 ([`GgnOperator`] on the tape-free [`Jacobian`]) for unit $v$ and $\varepsilon$
//!   on the experiment's grid (Figure 5);
//! - that the double-backward autodiff product (forward mode as the VJP of a VJP,
//!   [`ntk_ops::Network::generic_jacobian`]) agrees with the exact product.
//!
//! Speed (Figure 6): for CNNs of growing width at the same data, the time of one product by
//! the tape-free exact path (cold: with its forward and backward pass; cached: factors kept), by
//! the finite difference, and by double-backward autodiff, which is what "the exact product by
//! autograd" costs in the paper's PyTorch code.

use nalgebra::{DMatrix, DVector};
use ntk_gp::GpError;
use ntk_gp::train::{Loss, Optimizer, TrainParams, train_network};
use ntk_ops::{
    Activation, CnnConfig, FiniteDifferenceFisher, GgnOperator, Jacobian, JacobianParams,
    Likelihood, OpsError, convert,
};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{AccuracyPoint, FisherConfig, column, median, rel, unit_vector};
use crate::error::BenchError;
use crate::harness::{RunContext, Summary};
use crate::perf;
use crate::plot::ErrorBarChart;
use crate::report::{Cell, Report};

type F = burn_ndarray::NdArray<f64>;
type S = burn_ndarray::NdArray<f32>;

const LIKELIHOOD: Likelihood = Likelihood::Categorical;

/// The classifier at one stage of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierStage {
    /// `"init"`, `"mid"` or `"end"`.
    pub stage: String,
    /// Mean cross-entropy on the training images (nats).
    pub cross_entropy: f64,
    /// Fraction of training images whose largest logit is their class.
    pub accuracy: f64,
}

/// One speed measurement of the classifier's Fisher-vector products (seconds, median).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSpeedPoint {
    /// Channels of the two convolutions.
    pub channels: [usize; 2],
    /// Parameters.
    pub p: usize,
    /// Tape-free exact product with its forward and backward pass.
    pub exact_cold_s: f64,
    /// Tape-free exact product, factors cached.
    pub exact_cached_s: f64,
    /// Finite-difference product.
    pub fd_s: f64,
    /// Exact product by double-backward autodiff.
    pub double_backward_s: f64,
    /// Load average.
    pub load: f64,
}

/// Everything the classifier study measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierStudy {
    /// Classes $o$.
    pub classes: usize,
    /// Training images.
    pub n: usize,
    /// The training schedule, in words.
    pub schedule: String,
    /// Loss and accuracy at each stage.
    pub stages: Vec<ClassifierStage>,
    /// Relative errors of the finite difference (models `clf-f64`, `clf-f32`).
    pub accuracy: Vec<AccuracyPoint>,
    /// Largest relative difference of the double-backward product from the tape-free exact
    /// product over the stages.
    pub double_backward_rel_diff: f64,
    /// Timings across widths.
    pub speed: Vec<ClassifierSpeedPoint>,
}

/// The classifier: the experiment's CNN shape with `channels`, `classes` logits and ReLU.
pub fn classifier(input: [usize; 3], channels: [usize; 2], classes: usize) -> CnnConfig {
    CnnConfig {
        input,
        channels,
        kernel: 3,
        outputs: classes,
        activation: Activation::Relu,
    }
}

/// `n` images of shape `input` ($c h w$ pixels per row) in `classes` balanced classes: image $i$ of
/// class $k = i \bmod o$ is template $T_k$ plus unit Gaussian noise, the templates themselves
/// standard Gaussian. Labels are returned as `f64`.
pub fn template_images(
    n: usize,
    input: [usize; 3],
    classes: usize,
    rng: &mut impl Rng,
) -> (DMatrix<f64>, DVector<f64>) {
    let d: usize = input.iter().product();
    let templates: DMatrix<f64> =
        DMatrix::from_fn(classes, d, |_, _| StandardNormal.sample(&mut *rng));
    let y = DVector::from_fn(n, |i, _| (i % classes) as f64);
    let x = DMatrix::from_fn(n, d, |i, j| {
        let noise: f64 = StandardNormal.sample(&mut *rng);
        templates[(i % classes, j)] + noise
    });
    (x, y)
}

/// Mean cross-entropy and accuracy of the classifier with parameters `theta` on `(x, y)`.
fn evaluate(
    cfg: &CnnConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    y: &DVector<f64>,
) -> Result<(f64, f64), OpsError> {
    let net = cfg.with_params::<F>(theta, &Default::default())?;
    let f = convert::to_vec_f64(net.forward(convert::from_dmatrix_f64(x, &Default::default())));
    let (ce, _) = Loss::CrossEntropy.value_and_output_gradient(&f, y.as_slice());
    let o = cfg.outputs;
    let correct = f
        .chunks(o)
        .zip(y.iter())
        .filter(|(row, label)| {
            let best = (0..o).max_by(|&a, &b| row[a].total_cmp(&row[b]));
            best == Some(**label as usize)
        })
        .count();
    Ok((ce, correct as f64 / y.len() as f64))
}

/// The exact product $J^\top H J v$ in f64 by the tape-free path.
fn exact(
    cfg: &CnnConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    v: &[f64],
) -> Result<Vec<f64>, OpsError> {
    let jac = cfg.jacobian::<F>(
        theta,
        convert::from_dmatrix_f64(x, &Default::default()),
        JacobianParams::default(),
    )?;
    Ok(convert::to_vec_f64(
        GgnOperator::new(jac, LIKELIHOOD)?.try_apply(column::<F>(v))?,
    ))
}

/// The same product by double-backward autodiff.
fn double_backward(
    cfg: &CnnConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    v: &[f64],
) -> Result<Vec<f64>, OpsError> {
    let net = cfg.with_params::<F>(theta, &Default::default())?;
    let jac = net.generic_jacobian(
        convert::from_dmatrix_f64(x, &Default::default()),
        JacobianParams::default(),
    )?;
    Ok(convert::to_vec_f64(
        GgnOperator::new(jac, LIKELIHOOD)?.try_apply(column::<F>(v))?,
    ))
}

/// Relative errors of the finite-difference product over `eps`, in backend `B`'s precision,
/// against `exact`.
fn fd_errors<B: burn::prelude::Backend>(
    cfg: &CnnConfig,
    theta: &[f64],
    x: &DMatrix<f64>,
    v: &[f64],
    eps: &[f64],
    exact: &[f64],
) -> Result<Vec<f64>, OpsError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    let jac = cfg.jacobian::<B>(
        theta,
        convert::from_dmatrix_f64(x, &Default::default()),
        JacobianParams::default(),
    )?;
    super::fd_errors(&jac, LIKELIHOOD, v, eps, exact)
}

/// Times the three products of the classifier with `channels` at `x`, median of `reps`.
fn speed(
    c: &FisherConfig,
    channels: [usize; 2],
    x: &DMatrix<f64>,
    seed: u64,
    rng: &mut impl Rng,
) -> Result<ClassifierSpeedPoint, OpsError> {
    let cfg = classifier(c.cnn_input, channels, c.classes);
    let dev = Default::default();
    let net = cfg.init::<F>(seed, &dev)?;
    let p = net.n_params();
    let xt = convert::from_dmatrix_f64::<F>(x, &dev);
    let v = column::<F>(&unit_vector(p, rng));
    let ggn = GgnOperator::new(
        Jacobian::new(net.clone(), xt.clone(), JacobianParams::default())?,
        LIKELIHOOD,
    )?;
    let fd = FiniteDifferenceFisher::new(
        Jacobian::new(net.clone(), xt.clone(), JacobianParams::default())?,
        LIKELIHOOD,
    )?;
    let (mut cold, mut cached, mut fds, mut dbs) = (vec![], vec![], vec![], vec![]);
    for _ in 0..c.reps {
        let (r, s) = perf::timed(|| -> Result<_, OpsError> {
            let jac = Jacobian::new(net.clone(), xt.clone(), JacobianParams::default())?;
            GgnOperator::new(jac, LIKELIHOOD)?.try_apply(v.clone())
        });
        r?;
        cold.push(s);
        let (r, s) = perf::timed(|| ggn.try_apply(v.clone()));
        r?;
        cached.push(s);
        let (r, s) = perf::timed(|| fd.try_apply(v.clone()));
        r?;
        fds.push(s);
        let (r, s) = perf::timed(|| -> Result<_, OpsError> {
            let jac = net.generic_jacobian(xt.clone(), JacobianParams::default())?;
            GgnOperator::new(jac, LIKELIHOOD)?.try_apply(v.clone())
        });
        r?;
        dbs.push(s);
    }
    Ok(ClassifierSpeedPoint {
        channels,
        p,
        exact_cold_s: median(cold),
        exact_cached_s: median(cached),
        fd_s: median(fds),
        double_backward_s: median(dbs),
        load: perf::load_average(),
    })
}

/// Trains the classifier through its three stages, measuring the finite difference at each, then
/// times the products across [`FisherConfig::classifier_speed_channels`].
pub fn run_study(
    c: &FisherConfig,
    eps: &[f64],
    seed: u64,
    rng: &mut impl Rng,
) -> Result<ClassifierStudy, BenchError> {
    let cfg = classifier(c.cnn_input, c.cnn_channels, c.classes);
    let (x, y) = template_images(c.n, c.cnn_input, c.classes, rng);
    let dev = Default::default();
    let mut theta =
        convert::to_vec_f64(cfg.init::<F>(seed, &dev).map_err(GpError::from)?.flatten());
    let v = unit_vector(theta.len(), rng);
    let schedule = TrainParams {
        optimizer: Optimizer::adam(),
        lr: c.lr,
        epochs: c.epochs,
        batch_size: 32,
        decay_every: 0,
        decay: 1.0,
        seed,
    };
    let half = c.epochs / 2;
    let (mut stages, mut accuracy, mut db_diff) = (vec![], vec![], 0f64);
    for (stage, epochs) in [("init", 0), ("mid", half), ("end", c.epochs - half)] {
        if epochs > 0 {
            let net = cfg.with_params::<F>(&theta, &dev).map_err(GpError::from)?;
            let params = TrainParams { epochs, ..schedule };
            let (trained, _) = train_network(
                &net,
                &x,
                &y,
                Loss::CrossEntropy,
                &params,
                JacobianParams::default(),
                |_, _| {},
            )?;
            theta = trained.params_f64();
        }
        let (cross_entropy, acc) = evaluate(&cfg, &theta, &x, &y).map_err(GpError::from)?;
        stages.push(ClassifierStage {
            stage: stage.into(),
            cross_entropy,
            accuracy: acc,
        });
        let exact = exact(&cfg, &theta, &x, &v).map_err(GpError::from)?;
        let db = double_backward(&cfg, &theta, &x, &v).map_err(GpError::from)?;
        db_diff = db_diff.max(rel(&db, &exact));
        for (model, errors) in [
            ("clf-f64", fd_errors::<F>(&cfg, &theta, &x, &v, eps, &exact)),
            ("clf-f32", fd_errors::<S>(&cfg, &theta, &x, &v, eps, &exact)),
        ] {
            let errors = errors.map_err(GpError::from)?;
            accuracy.extend(eps.iter().zip(errors).map(|(&e, r)| AccuracyPoint {
                model: model.into(),
                stage: stage.into(),
                eps: e,
                rel_error: r,
            }));
        }
    }
    let mut speeds = Vec::new();
    for &channels in &c.classifier_speed_channels {
        speeds.push(speed(c, channels, &x, seed, rng).map_err(GpError::from)?);
    }
    Ok(ClassifierStudy {
        classes: c.classes,
        n: c.n,
        schedule: schedule.to_string(),
        stages,
        accuracy,
        double_backward_rel_diff: db_diff,
        speed: speeds,
    })
}

/// The paper's accuracy claim for Figure 5: a relative error "on the order of 1e-3".
pub const PAPER_REL_ERROR: f64 = 1e-3;
/// The paper's speed claim for Figure 6: the finite difference "at least 25×" faster than the
/// autograd product.
pub const PAPER_SPEEDUP: f64 = 25.0;

impl ClassifierStudy {
    /// The f64 error at $\varepsilon$ closest to `eps` per stage.
    pub fn errors_at(&self, model: &str, eps: f64) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for s in &self.stages {
            let best = self
                .accuracy
                .iter()
                .filter(|a| a.model == model && a.stage == s.stage)
                .min_by(|a, b| {
                    (a.eps.ln() - eps.ln())
                        .abs()
                        .total_cmp(&(b.eps.ln() - eps.ln()).abs())
                });
            if let Some(a) = best {
                out.push((s.stage.clone(), a.rel_error));
            }
        }
        out
    }

    /// The verdicts on the paper's two claims, from the numbers.
    pub fn verdict(&self) -> String {
        let at = self.errors_at("clf-f64", 1e-4);
        let (lo, hi) = at.iter().fold((f64::INFINITY, 0f64), |(lo, hi), (_, e)| {
            (lo.min(*e), hi.max(*e))
        });
        let listed = at
            .iter()
            .map(|(s, e)| format!("{s} {e:.1e}"))
            .collect::<Vec<_>>()
            .join(", ");
        let order = if hi <= 10.0 * PAPER_REL_ERROR {
            "at or below the paper's order of 1e-3"
        } else {
            "above the paper's order of 1e-3"
        };
        let steady = if hi <= 10.0 * lo {
            "within a factor of 10 through training, as the paper found"
        } else {
            "not steady through training (it moves by more than a factor of 10), unlike the paper's"
        };
        let mut text = format!(
            "Accuracy (Figure 5): at the paper's default ε = 1e-4 the f64 relative error is \
             {listed}: {order}, and {steady}. "
        );
        match self.speed.last() {
            Some(s) => {
                let ratio = s.double_backward_s / s.fd_s;
                let first = &self.speed[0];
                let growth = if self.speed.len() > 1 {
                    format!(
                        "; {:.1}× at p = {}",
                        first.double_backward_s / first.fd_s,
                        first.p
                    )
                } else {
                    String::new()
                };
                let cached = if s.exact_cached_s <= s.fd_s {
                    ": where the factors are reused, as in a Krylov solver, the exact product \
                     costs no more than the finite difference"
                } else {
                    ""
                };
                let holds = if ratio >= PAPER_SPEEDUP {
                    "holds here"
                } else {
                    "does not hold here"
                };
                text.push_str(&format!(
                    "Speed (Figure 6): at p = {} the finite difference takes {:.3} s, the \
                     double-backward autodiff product {:.3} s ({ratio:.1}×{growth}), so the \
                     paper's \"at least 25×\" {holds}. The tape-free exact product takes {:.3} s \
                     with its forward and backward pass and {:.3} s with cached factors ({:.1}× \
                     and {:.1}× the finite difference){cached}.",
                    s.p,
                    s.fd_s,
                    s.double_backward_s,
                    s.exact_cold_s,
                    s.exact_cached_s,
                    s.exact_cold_s / s.fd_s,
                    s.exact_cached_s / s.fd_s,
                ));
            }
            None => text.push_str("Speed (Figure 6): no sizes were timed."),
        }
        text
    }
}

impl super::Fisher {
    /// Writes `classifier.json` and the classifier's figure, adds its section to `report` and its
    /// metrics to `summary`.
    pub(super) fn classifier_section(
        &self,
        ctx: &mut RunContext,
        report: &mut Report,
        study: &ClassifierStudy,
        mut summary: Summary,
    ) -> Result<Summary, BenchError> {
        let c = &self.config;
        ctx.write_json("classifier", study)?;
        report.heading(format!(
            "A CNN classifier (categorical likelihood, {} classes)",
            study.classes
        ));
        report.paragraph(format!(
            "The paper measured Figures 5 and 6 on classifiers trained with cross-entropy \
             (PreResNet-56 and others on CIFAR-10). Here: the CNN above with ReLU and {} logits, \
             on n = {} images {:?} of {} noisy class templates (template plus unit Gaussian \
             noise), trained by {} on the cross-entropy; the Fisher is the GGN of the \
             categorical likelihood, Σᵢ Jᵢᵀ(diag pᵢ − pᵢpᵢᵀ)Jᵢ. The double-backward autodiff \
             product (forward mode as the VJP of a VJP) agrees with the tape-free exact product \
             to a relative {:.1e}.",
            study.classes,
            study.n,
            c.cnn_input,
            study.classes,
            study.schedule,
            study.double_backward_rel_diff
        ));
        report.table(
            &["stage", "cross-entropy", "training accuracy"],
            study.stages.iter().map(|s| {
                vec![
                    Cell::from(s.stage.as_str()),
                    Cell::from(s.cross_entropy),
                    Cell::from(s.accuracy),
                ]
            }),
        );
        let (series, with_errors) = super::error_study(
            report,
            &study.accuracy,
            &super::eps_grid(c.eps_points),
            summary,
        );
        summary = with_errors;
        for s in &study.stages {
            summary = summary
                .metric(format!("classifier_accuracy/{}", s.stage), s.accuracy)
                .metric(
                    format!("classifier_cross_entropy/{}", s.stage),
                    s.cross_entropy,
                );
        }
        let files = ErrorBarChart::new(
            "finite-difference FVP of a CNN classifier: relative error",
            "log10 ε",
            "log10 relative error",
            series,
        )
        .write(ctx, "fvp-error-classifier")?;
        report.figure(
            "Relative error of the classifier's finite-difference Fisher-vector product",
            &files,
        );
        report.table(
            &[
                "channels",
                "p",
                "exact cold s",
                "exact cached s",
                "FD s",
                "double-backward s",
                "double-backward / FD",
                "cold / FD",
                "load",
            ],
            study.speed.iter().map(|s| {
                vec![
                    Cell::from(format!("{}, {}", s.channels[0], s.channels[1])),
                    Cell::from(s.p),
                    Cell::from(s.exact_cold_s),
                    Cell::from(s.exact_cached_s),
                    Cell::from(s.fd_s),
                    Cell::from(s.double_backward_s),
                    Cell::from(s.double_backward_s / s.fd_s),
                    Cell::from(s.exact_cold_s / s.fd_s),
                    Cell::from(s.load),
                ]
            }),
        );
        if let Some(s) = study.speed.last() {
            summary = summary
                .metric(
                    format!("classifier_double_backward_over_fd/p{}", s.p),
                    s.double_backward_s / s.fd_s,
                )
                .metric(
                    format!("classifier_cold_over_fd/p{}", s.p),
                    s.exact_cold_s / s.fd_s,
                );
        }
        summary = summary.metric(
            "classifier_double_backward_rel_diff",
            study.double_backward_rel_diff,
        );
        report.paragraph(study.verdict());
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stream_rng;
    use ntk_ops::JacobianOperator;

    #[test]
    fn template_images_are_balanced_and_shaped() {
        let (x, y) = template_images(10, [1, 4, 5], 3, &mut stream_rng(0, 0));
        assert_eq!((x.nrows(), x.ncols()), (10, 20));
        let counts: Vec<usize> = (0..3)
            .map(|k| y.iter().filter(|&&l| l == k as f64).count())
            .collect();
        assert_eq!(counts, vec![4, 3, 3]);
    }

    #[test]
    fn the_exact_products_agree_and_the_finite_difference_converges() {
        let cfg = classifier([1, 10, 10], [2, 3], 3);
        let mut rng = stream_rng(1, 0);
        let (x, _) = template_images(12, cfg.input, 3, &mut rng);
        let theta = convert::to_vec_f64(cfg.init::<F>(3, &Default::default()).unwrap().flatten());
        let v = unit_vector(theta.len(), &mut rng);
        let e = exact(&cfg, &theta, &x, &v).unwrap();
        let db = double_backward(&cfg, &theta, &x, &v).unwrap();
        assert!(rel(&db, &e) < 1e-12, "{}", rel(&db, &e));
        // Against a dense reference: J by columns (Jv for unit vectors), then Σ Jᵢᵀ Hᵢ Jᵢ v.
        let jac = cfg
            .jacobian::<F>(
                &theta,
                convert::from_dmatrix_f64(&x, &Default::default()),
                JacobianParams::default(),
            )
            .unwrap();
        let p = theta.len();
        let jd = convert::to_dmatrix_f64(
            jac.jvp(convert::from_dmatrix_f64(
                &DMatrix::identity(p, p),
                &Default::default(),
            ))
            .unwrap(),
        );
        let f = convert::to_vec_f64(jac.outputs().unwrap());
        let jv = &jd * DVector::from_column_slice(&v);
        let mut hjv = DVector::zeros(jv.len());
        for (i, row) in f.chunks(3).enumerate() {
            let z: f64 = row.iter().map(|a| a.exp()).sum();
            let pr: Vec<f64> = row.iter().map(|a| a.exp() / z).collect();
            let dot: f64 = (0..3).map(|k| pr[k] * jv[3 * i + k]).sum();
            for k in 0..3 {
                hjv[3 * i + k] = pr[k] * (jv[3 * i + k] - dot);
            }
        }
        let reference = jd.transpose() * hjv;
        assert!(rel(&e, reference.as_slice()) < 1e-12);
        let eps = [1e-1, 1e-3, 1e-5];
        let errs = fd_errors::<F>(&cfg, &theta, &x, &v, &eps, &e).unwrap();
        assert!(errs[1] < errs[0] && errs[2] < 1e-3, "{errs:?}");
    }

    #[test]
    fn the_verdict_reads_the_numbers() {
        let point = |stage: &str, e: f64| AccuracyPoint {
            model: "clf-f64".into(),
            stage: stage.into(),
            eps: 1e-4,
            rel_error: e,
        };
        let stage = |s: &str| ClassifierStage {
            stage: s.into(),
            cross_entropy: 1.0,
            accuracy: 0.5,
        };
        let mut study = ClassifierStudy {
            classes: 3,
            n: 10,
            schedule: String::new(),
            stages: vec![stage("init"), stage("end")],
            accuracy: vec![point("init", 2e-4), point("end", 5e-4)],
            double_backward_rel_diff: 0.0,
            speed: vec![ClassifierSpeedPoint {
                channels: [2, 3],
                p: 100,
                exact_cold_s: 0.02,
                exact_cached_s: 0.01,
                fd_s: 0.01,
                double_backward_s: 0.5,
                load: 0.0,
            }],
        };
        let v = study.verdict();
        assert!(v.contains("init 2.0e-4, end 5.0e-4"), "{v}");
        assert!(
            v.contains("at or below") && v.contains("as the paper found"),
            "{v}"
        );
        assert!(v.contains("(50.0×)") && v.contains("holds here"), "{v}");
        study.accuracy[1].rel_error = 0.5;
        study.speed[0].double_backward_s = 0.1;
        let v = study.verdict();
        assert!(
            v.contains("above the paper's") && v.contains("not steady"),
            "{v}"
        );
        assert!(v.contains("does not hold here"), "{v}");
    }
}
