//! First-order optimizers on a flat parameter vector, with seeded minibatches.
//!
//! Training the base network (the first step of the paper's Algorithm 1) and the baselines
//! only needs a loss and its gradient for a minibatch; where they come from (a hand-written
//! reverse pass, burn-autodiff) is the caller's business. Updates, for gradient $g_t$:
//!
//! - SGD with momentum $\mu$ (PyTorch's form): $b_t = \mu b_{t-1} + g_t$, $\theta_t = \theta_{t-1} - \eta_t b_t$;
//! - Adam (Kingma & Ba 2015): $m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t$, $v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2$,
//!   $\theta_t = \theta_{t-1} - \eta_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)$ with bias corrections;
//!
//! and a step decay $\eta_t = \eta_0\,\gamma^{\lfloor e / s \rfloor}$ at epoch $e$.

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_ops::{Execution, Jacobian, JacobianOperator, JacobianParams, Mlp, Network, convert};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{GpError, check_finite, check_positive};

/// A minibatch's mean loss and its gradient, or why they could not be computed.
pub type LossAndGradient = Result<(f64, Vec<f64>), GpError>;

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Momentum $\mu \in [0, 1)$.
        momentum: f64,
    },
    /// Adam with the usual constants.
    Adam {
        /// $\beta_1$.
        beta1: f64,
        /// $\beta_2$.
        beta2: f64,
        /// $\epsilon$.
        eps: f64,
    },
}

impl Optimizer {
    /// Adam with $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\epsilon = 10^{-8}$.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// A training schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// The update rule.
    pub optimizer: Optimizer,
    /// Initial learning rate $\eta_0$.
    pub lr: f64,
    /// Number of passes over the data.
    pub epochs: usize,
    /// Minibatch size (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Multiply the learning rate by `decay` every `decay_every` epochs (0: never).
    pub decay_every: usize,
    /// The decay factor $\gamma$.
    pub decay: f64,
    /// Seed of the minibatch shuffles.
    pub seed: u64,
}

impl TrainParams {
    fn check(&self) -> Result<(), GpError> {
        check_positive("learning rate", self.lr)?;
        check_positive("decay factor", self.decay)?;
        if self.batch_size == 0 {
            return Err(GpError::NonPositive {
                what: "batch size",
                value: 0.0,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for TrainParams {
    /// The schedule in words, for reports: `SGD (momentum 0.9), lr 0.001 (×0.1 every 100
    /// epochs), batch 200, 500 epochs` or `Adam, lr 0.003, batch 100, 300 epochs`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.optimizer {
            Optimizer::Sgd { momentum } if momentum > 0.0 => {
                write!(f, "SGD (momentum {momentum})")?
            }
            Optimizer::Sgd { .. } => f.write_str("SGD")?,
            Optimizer::Adam { .. } => f.write_str("Adam")?,
        }
        write!(f, ", lr {}", self.lr)?;
        if self.decay_every > 0 && self.decay != 1.0 {
            write!(f, " (×{} every {} epochs)", self.decay, self.decay_every)?;
        }
        write!(f, ", batch {}, {} epochs", self.batch_size, self.epochs)
    }
}

/// The recorded course of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean minibatch loss of each epoch.
    pub epoch_loss: Vec<f64>,
}

/// Minimizes a loss over `params` in place. `loss_grad(params, batch)` returns the mean loss
/// of the data points `batch` (indices into `0..n`) and its gradient. `on_epoch` is called
/// after each epoch with its index and mean loss (for progress bars).
pub fn train(
    params: &mut [f64],
    n: usize,
    config: &TrainParams,
    mut loss_grad: impl FnMut(&[f64], &[usize]) -> LossAndGradient,
    mut on_epoch: impl FnMut(usize, f64),
) -> Result<TrainReport, GpError> {
    config.check()?;
    if n == 0 {
        return Err(GpError::EmptyTask);
    }
    let p = params.len();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut m, mut v) = (vec![0.0; p], vec![0.0; p]);
    let mut step = 0i32;
    let mut epoch_loss = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        let lr = match config.decay_every {
            0 => config.lr,
            s => config.lr * config.decay.powi((epoch / s) as i32),
        };
        order.shuffle(&mut rng);
        let (mut total, mut batches) = (0.0, 0usize);
        for batch in order.chunks(config.batch_size) {
            let (loss, grad) = loss_grad(params, batch)?;
            if grad.len() != p {
                return Err(GpError::Shape {
                    what: "gradient length vs parameters",
                    expected: p,
                    got: grad.len(),
                });
            }
            check_finite("training gradient", grad.iter())?;
            step += 1;
            match config.optimizer {
                Optimizer::Sgd { momentum } => {
                    for i in 0..p {
                        m[i] = momentum * m[i] + grad[i];
                        params[i] -= lr * m[i];
                    }
                }
                Optimizer::Adam { beta1, beta2, eps } => {
                    let (c1, c2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
                    for i in 0..p {
                        m[i] = beta1 * m[i] + (1.0 - beta1) * grad[i];
                        v[i] = beta2 * v[i] + (1.0 - beta2) * grad[i] * grad[i];
                        params[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                    }
                }
            }
            total += loss;
            batches += 1;
        }
        let mean = total / batches as f64;
        if !mean.is_finite() {
            return Err(GpError::NonFinite {
                what: "training loss (diverged; lower the learning rate)",
                index: epoch,
            });
        }
        epoch_loss.push(mean);
        on_epoch(epoch, mean);
    }
    Ok(TrainReport { epoch_loss })
}

/// The loss a network is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// $\tfrac12 (f(x) - y)^2$ averaged over the batch (a Gaussian likelihood with fixed noise).
    Gaussian,
    /// $(f(x) - y)^2$ averaged over the batch: PyTorch's `nn.MSELoss`, which the paper's code
    /// trains with. Its gradient is twice [`Loss::Gaussian`]'s, so SGD on it at learning rate
    /// $\eta$ takes exactly the steps of SGD on `Gaussian` at $2\eta$.
    MeanSquaredError,
    /// $-\log\mathcal N(y \mid \mu(x), \sigma(x)^2)$ for a network with outputs $(\mu, \sigma)$ (a
    /// heteroscedastic head), averaged over the batch.
    HeteroscedasticGaussian,
    /// $\log \sum_k e^{f_k(x)} - f_y(x)$ for a classifier with logits $f \in \mathbb R^o$ and
    /// class labels $y \in \{0, \dots, o-1\}$ (stored as `f64`), averaged over the batch:
    /// PyTorch's `nn.CrossEntropyLoss`, the categorical likelihood's negative log.
    CrossEntropy,
}

impl Loss {
    /// The mean loss of outputs `f` ($b\times o$, row-major) at targets `y`, and its gradient
    /// with respect to `f` (the cotangent the reverse pass takes).
    pub fn value_and_output_gradient(&self, f: &[f64], y: &[f64]) -> (f64, Vec<f64>) {
        let b = y.len() as f64;
        match self {
            Loss::Gaussian => {
                let (mut l, mut g) = (0.0, Vec::with_capacity(y.len()));
                for (fi, yi) in f.iter().zip(y) {
                    let r = fi - yi;
                    l += 0.5 * r * r;
                    g.push(r / b);
                }
                (l / b, g)
            }
            Loss::MeanSquaredError => {
                let (mut l, mut g) = (0.0, Vec::with_capacity(y.len()));
                for (fi, yi) in f.iter().zip(y) {
                    let r = fi - yi;
                    l += r * r;
                    g.push(2.0 * r / b);
                }
                (l / b, g)
            }
            Loss::HeteroscedasticGaussian => {
                let (mut l, mut g) = (0.0, Vec::with_capacity(2 * y.len()));
                for (i, yi) in y.iter().enumerate() {
                    let (mu, s) = (f[2 * i], f[2 * i + 1]);
                    let r = yi - mu;
                    l += 0.5 * (r / s).powi(2) + s.ln() + 0.918_938_533_204_672_7;
                    g.push(-r / (s * s) / b);
                    g.push((1.0 / s - r * r / (s * s * s)) / b);
                }
                (l / b, g)
            }
            Loss::CrossEntropy => {
                let o = f.len() / y.len().max(1);
                let (mut l, mut g) = (0.0, Vec::with_capacity(f.len()));
                for (row, &yi) in f.chunks(o).zip(y) {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|fk| (fk - max).exp()).sum();
                    let label = yi as usize;
                    l += max + sum.ln() - row[label];
                    for (k, fk) in row.iter().enumerate() {
                        let p = (fk - max).exp() / sum;
                        g.push((p - f64::from(u8::from(k == label))) / b);
                    }
                }
                (l / b, g)
            }
        }
    }

    /// Checks targets `y` against `n_outputs` network outputs: one output per target for the
    /// squared errors, two (mean, scale) for the heteroscedastic loss, and for cross-entropy
    /// class labels that are integers below `n_outputs`.
    pub fn check_targets(&self, y: &[f64], n_outputs: usize) -> Result<(), GpError> {
        let expected = match self {
            Loss::Gaussian | Loss::MeanSquaredError => 1,
            Loss::HeteroscedasticGaussian => 2,
            Loss::CrossEntropy => {
                if let Some(i) = y
                    .iter()
                    .position(|&l| !(l >= 0.0 && l.fract() == 0.0 && l < n_outputs as f64))
                {
                    return Err(GpError::InvalidParam {
                        name: "class label",
                        reason: format!(
                            "target {i} is {}; labels are integers 0..{n_outputs}",
                            y[i]
                        ),
                    });
                }
                return Ok(());
            }
        };
        if n_outputs != expected {
            return Err(GpError::Shape {
                what: "network outputs for this loss",
                expected,
                got: n_outputs,
            });
        }
        Ok(())
    }
}

/// Trains `mlp` on inputs `x` ($n\times h_0$) and targets `y` with `loss`
/// ([`train_network`] on the MLP as a [`Network`]). Returns the trained network and the loss
/// curve.
pub fn train_mlp<B: Backend>(
    mlp: &Mlp<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    loss: Loss,
    config: &TrainParams,
    on_epoch: impl FnMut(usize, f64),
) -> Result<(Mlp<B>, TrainReport), GpError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    // The tensor path, no host copy of θ.
    let jacobian = JacobianParams {
        execution: Execution::DenseTensor,
        ..Default::default()
    };
    let net = Network::from(mlp.clone());
    let (net, report) = train_network(&net, x, y, loss, config, jacobian, on_epoch)?;
    Ok((
        mlp.config()
            .with_params::<B>(&net.params_f64(), &mlp.device())?,
        report,
    ))
}

/// Trains `network` (any [`Network`]: MLP, CNN, residual blocks) on inputs `x` ($n\times d$,
/// one flattened point per row) and targets `y` with `loss`, the gradient of each minibatch
/// coming from the network's hand-written reverse pass, $\nabla_\theta L = J^\top \partial
/// L/\partial f$ on a fresh Jacobian of `jacobian`'s parameters per minibatch (buffers such as
/// BatchNorm statistics are kept). Returns the trained network and the loss curve.
pub fn train_network<B: Backend>(
    network: &Network<B>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    loss: Loss,
    config: &TrainParams,
    jacobian: JacobianParams,
    on_epoch: impl FnMut(usize, f64),
) -> Result<(Network<B>, TrainReport), GpError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    if x.nrows() != y.len() {
        return Err(GpError::Shape {
            what: "input rows vs targets",
            expected: y.len(),
            got: x.nrows(),
        });
    }
    check_finite("training targets", y.iter())?;
    loss.check_targets(y.as_slice(), network.n_outputs())?;
    let device = network.device();
    let model_config = network.config().clone();
    let buffers = network.buffers_flat();
    let mut theta = network.params_f64();
    let report = train(
        &mut theta,
        y.len(),
        config,
        |params, batch| {
            let xb = DMatrix::from_fn(batch.len(), x.ncols(), |i, j| x[(batch[i], j)]);
            let yb: Vec<f64> = batch.iter().map(|&i| y[i]).collect();
            let net = model_config.with_params::<B>(params, &buffers, &device)?;
            let jac = Jacobian::new(net, convert::from_dmatrix_f64(&xb, &device), jacobian)?;
            let f = convert::to_vec_f64(jac.outputs()?);
            let (l, g) = loss.value_and_output_gradient(&f, &yb);
            let u = convert::tensor_from_f64(g, f.len(), 1, &device);
            Ok((l, convert::to_vec_f64(jac.vjp(u)?)))
        },
        on_epoch,
    )?;
    Ok((
        model_config.with_params::<B>(&theta, &buffers, &device)?,
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Least squares y = 3x - 1 on 40 points: loss ½ mean (a x + b - y)².
    fn line() -> (Vec<f64>, Vec<f64>) {
        let x: Vec<f64> = (0..40).map(|i| -1.0 + i as f64 / 20.0).collect();
        let y = x.iter().map(|x| 3.0 * x - 1.0).collect();
        (x, y)
    }

    fn loss_grad<'a>(
        x: &'a [f64],
        y: &'a [f64],
    ) -> impl FnMut(&[f64], &[usize]) -> LossAndGradient + 'a {
        move |p, batch| {
            let (mut l, mut g) = (0.0, vec![0.0, 0.0]);
            for &i in batch {
                let r = p[0] * x[i] + p[1] - y[i];
                l += 0.5 * r * r;
                g[0] += r * x[i];
                g[1] += r;
            }
            let k = batch.len() as f64;
            Ok((l / k, g.into_iter().map(|g| g / k).collect()))
        }
    }

    #[test]
    fn sgd_and_adam_fit_a_line_and_are_deterministic() {
        let (x, y) = line();
        for optimizer in [Optimizer::Sgd { momentum: 0.9 }, Optimizer::adam()] {
            let config = TrainParams {
                optimizer,
                lr: 0.05,
                epochs: 300,
                batch_size: 8,
                decay_every: 100,
                decay: 0.5,
                seed: 7,
            };
            let mut p = vec![0.0, 0.0];
            let report = train(&mut p, 40, &config, loss_grad(&x, &y), |_, _| {}).unwrap();
            assert!(
                (p[0] - 3.0).abs() < 1e-3 && (p[1] + 1.0).abs() < 1e-3,
                "{optimizer:?}: {p:?}"
            );
            assert!(report.epoch_loss[299] < 1e-3 * report.epoch_loss[0]);
            let mut q = vec![0.0, 0.0];
            let again = train(&mut q, 40, &config, loss_grad(&x, &y), |_, _| {}).unwrap();
            assert_eq!(p, q);
            assert_eq!(report, again);
        }
    }

    #[test]
    fn schedules_read_as_words() {
        let sgd = TrainParams {
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            lr: 1e-3,
            epochs: 500,
            batch_size: 200,
            decay_every: 100,
            decay: 0.1,
            seed: 0,
        };
        assert_eq!(
            sgd.to_string(),
            "SGD (momentum 0.9), lr 0.001 (×0.1 every 100 epochs), batch 200, 500 epochs"
        );
        let adam = TrainParams {
            optimizer: Optimizer::adam(),
            lr: 3e-3,
            decay_every: 0,
            ..sgd
        };
        assert_eq!(adam.to_string(), "Adam, lr 0.003, batch 200, 500 epochs");
    }

    #[test]
    fn divergence_is_an_error_not_a_nan_model() {
        let (x, y) = line();
        let config = TrainParams {
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            lr: 50.0,
            epochs: 200,
            batch_size: 40,
            decay_every: 0,
            decay: 1.0,
            seed: 1,
        };
        let mut p = vec![0.0, 0.0];
        assert!(matches!(
            train(&mut p, 40, &config, loss_grad(&x, &y), |_, _| {}),
            Err(GpError::NonFinite { .. })
        ));
    }

    #[test]
    fn cross_entropy_matches_its_definition_and_its_gradient_a_central_difference() {
        // two points, three classes
        let f = [0.3, -1.2, 2.0, 5.0, 4.0, -3.0];
        let y = [2.0, 0.0];
        let (l, g) = Loss::CrossEntropy.value_and_output_gradient(&f, &y);
        let nll = |row: &[f64], label: usize| {
            -(row[label].exp() / row.iter().map(|v| v.exp()).sum::<f64>()).ln()
        };
        let want = 0.5 * (nll(&f[..3], 2) + nll(&f[3..], 0));
        assert!((l - want).abs() < 1e-14, "{l} vs {want}");
        let h = 1e-6;
        for i in 0..f.len() {
            let (mut up, mut down) = (f, f);
            up[i] += h;
            down[i] -= h;
            let fd = (Loss::CrossEntropy.value_and_output_gradient(&up, &y).0
                - Loss::CrossEntropy.value_and_output_gradient(&down, &y).0)
                / (2.0 * h);
            assert!((g[i] - fd).abs() < 1e-8, "output {i}: {} vs {fd}", g[i]);
        }
        // large logits do not overflow
        let (l, g) = Loss::CrossEntropy.value_and_output_gradient(&[1e4, 0.0], &[1.0]);
        assert!((l - 1e4).abs() < 1e-9 && g.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn targets_are_checked_against_the_loss() {
        assert!(
            Loss::CrossEntropy
                .check_targets(&[0.0, 2.0, 1.0], 3)
                .is_ok()
        );
        for bad in [3.0, -1.0, 0.5] {
            let e = Loss::CrossEntropy
                .check_targets(&[0.0, bad], 3)
                .unwrap_err();
            assert!(e.to_string().contains("target 1"), "{e}");
        }
        assert!(Loss::MeanSquaredError.check_targets(&[0.3], 1).is_ok());
        assert!(matches!(
            Loss::Gaussian.check_targets(&[0.3], 2),
            Err(GpError::Shape {
                expected: 1,
                got: 2,
                ..
            })
        ));
        assert!(
            Loss::HeteroscedasticGaussian
                .check_targets(&[0.3], 1)
                .is_err()
        );
    }

    #[test]
    fn train_mlp_fits_a_sine_deterministically_with_both_losses() {
        use ntk_ops::{DefaultBackend, Head, MlpConfig};
        let x = DMatrix::from_fn(20, 1, |i, _| -2.0 + 0.2 * i as f64);
        let y = DVector::from_fn(20, |i, _| x[(i, 0)].sin());
        let config = TrainParams {
            optimizer: Optimizer::adam(),
            lr: 1e-2,
            epochs: 150,
            batch_size: 5,
            decay_every: 0,
            decay: 1.0,
            seed: 4,
        };
        let dev = Default::default();
        for (head, loss) in [
            (Head::Plain, Loss::Gaussian),
            (Head::Plain, Loss::MeanSquaredError),
            (
                Head::Heteroscedastic { min_scale: 1e-5 },
                Loss::HeteroscedasticGaussian,
            ),
            (Head::Plain, Loss::CrossEntropy),
        ] {
            let outputs = match loss {
                Loss::HeteroscedasticGaussian => 2,
                Loss::CrossEntropy => 3,
                _ => 1,
            };
            // three classes: the sine's sign, and near zero
            let labels = y.map(|v| f64::from(u8::from(v > -0.3) + u8::from(v > 0.3)));
            let y = if loss == Loss::CrossEntropy {
                &labels
            } else {
                &y
            };
            let net = MlpConfig::new(&[1, 16, outputs])
                .with_head(head)
                .init::<DefaultBackend>(1, &dev)
                .unwrap();
            let (a, ra) = train_mlp(&net, &x, y, loss, &config, |_, _| {}).unwrap();
            let (b, rb) = train_mlp(&net, &x, y, loss, &config, |_, _| {}).unwrap();
            assert_eq!(ra, rb);
            assert_eq!(a.flatten_f64(), b.flatten_f64());
            let first = ra.epoch_loss[0];
            let last = *ra.epoch_loss.last().unwrap();
            // The squared error must shrink 20-fold; the NLL (which can go negative) by 1 nat.
            let improved = match loss {
                Loss::Gaussian | Loss::MeanSquaredError => last < 0.05 * first,
                Loss::HeteroscedasticGaussian => last < first - 1.0,
                Loss::CrossEntropy => last < 0.5 * first,
            };
            assert!(improved, "{loss:?}: {first} -> {last}");
        }
    }

    #[test]
    fn output_gradients_match_finite_differences() {
        let f = [0.3, 0.8, -0.2, 1.1];
        let y = [0.5, -0.4];
        for (loss, f) in [
            (Loss::Gaussian, &f[..2]),
            (Loss::MeanSquaredError, &f[..2]),
            (Loss::HeteroscedasticGaussian, &f[..]),
        ] {
            let (_, g) = loss.value_and_output_gradient(f, &y);
            for k in 0..f.len() {
                let (mut fp, mut fm) = (f.to_vec(), f.to_vec());
                fp[k] += 1e-6;
                fm[k] -= 1e-6;
                let fd = (loss.value_and_output_gradient(&fp, &y).0
                    - loss.value_and_output_gradient(&fm, &y).0)
                    / 2e-6;
                assert!((g[k] - fd).abs() < 1e-6, "{loss:?} {k}: {} vs {fd}", g[k]);
            }
        }
    }

    /// `MeanSquaredError` at learning rate η and `Gaussian` at 2η give the same SGD steps (the
    /// gradients differ by the factor 2, an exact scaling in floating point), so the trained
    /// weights agree bit for bit and the losses by the factor 2.
    #[test]
    fn mse_at_lr_equals_half_mse_at_twice_the_lr_under_sgd() {
        use ntk_ops::{DefaultBackend, MlpConfig};
        let x = DMatrix::from_fn(24, 1, |i, _| -3.0 + 0.25 * i as f64);
        let y = DVector::from_fn(24, |i, _| (1.3 * x[(i, 0)]).sin());
        let net = MlpConfig::new(&[1, 12, 12, 1])
            .init::<DefaultBackend>(3, &Default::default())
            .unwrap();
        let sgd = TrainParams {
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            lr: 1e-3,
            epochs: 40,
            batch_size: 3,
            decay_every: 20,
            decay: 0.1,
            seed: 5,
        };
        let (mse, mse_report) =
            train_mlp(&net, &x, &y, Loss::MeanSquaredError, &sgd, |_, _| {}).unwrap();
        let doubled = TrainParams { lr: 2e-3, ..sgd };
        let (half, half_report) =
            train_mlp(&net, &x, &y, Loss::Gaussian, &doubled, |_, _| {}).unwrap();
        assert_eq!(mse.flatten_f64(), half.flatten_f64());
        // At the same learning rate the two differ: the factor is not absorbed elsewhere.
        let (same_lr, _) = train_mlp(&net, &x, &y, Loss::Gaussian, &sgd, |_, _| {}).unwrap();
        assert_ne!(mse.flatten_f64(), same_lr.flatten_f64());
        for (a, b) in mse_report.epoch_loss.iter().zip(&half_report.epoch_loss) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * a.abs(), "{a} vs 2 × {b}");
        }
    }
}
