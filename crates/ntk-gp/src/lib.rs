//! Finite neural-tangent-kernel Gaussian processes.
//!
//! A network trained on a source task is linearized around its weights,
//! $f(x;\theta') \approx J(x)\theta' + \mu(x)$; with the prior $\theta' \sim \mathcal N(0, s^2 I)$
//! and Gaussian noise $\sigma^2$ each new task is a Gaussian process with kernel
//! $s^2 J J^\top$, adapted in closed form.
//!
//! - [`NtkGp`]: the finite-NTK GP of any trained network on one task, by any [`Strategy`]
//!   (`Dense`, `ParameterSpace`, `MatrixFree`, `MatrixFreeParameterSpace`, or `Auto` by cost).
//! - [`NtkClassifier`]: the Laplace approximation for classification.
//! - [`metrics`]: RMSE, NLPD, coverage and calibration of Gaussian predictives.
//! - [`MultiTask`]: many tasks sharing one network (Algorithm 1), serializable.
//! - [`chol`]: a blocked, GEMM-based Cholesky and the dense log marginal likelihood on it.
//! - [`exact::ExactGp`]: dense inference on a precomputed kernel matrix (Cholesky).
//! - [`weight_space::WeightSpaceGp`]: the same posterior from the $p\times p$ matrix
//!   $\Phi^\top\Phi + (\sigma^2/s^2)I$ (parameter space, Woodbury).
//! - [`fit`]: maximum-marginal-likelihood $\sigma^2$, $s^2$ and constant mean.
//! - [`optimize`]: bounded quasi-Newton maximization of the log marginal likelihood.
//! - [`rbf`]: the exact RBF-kernel GP baseline with fitted hyper-parameters.
//!
//! Adapting a small network (any `ntk_ops::Network`: MLP, CNN, residual blocks) to new
//! data, with the noise fitted by maximum marginal likelihood:
//!
//! ```
//! use nalgebra::{DMatrix, DVector};
//! use ntk_gp::{MeanFunction, NtkGp, NtkGpParams, Param, Strategy};
//! use ntk_ops::{Activation, DefaultBackend, Layer, NetworkConfig};
//!
//! // A "trained" 1-16-1 tanh network (here: its seeded initialization).
//! let net = NetworkConfig::new(
//!     &[1],
//!     vec![Layer::linear(1, 16), Layer::act(Activation::Tanh), Layer::linear(16, 1)],
//! )
//! .init::<DefaultBackend>(0, &Default::default())?;
//! // Eight observations of the new task y = sin(2x).
//! let x = DMatrix::from_fn(8, 1, |i, _| i as f64 / 4.0 - 1.0);
//! let y = x.column(0).map(|v| (2.0 * v).sin());
//! let config = NtkGpParams {
//!     strategy: Strategy::Dense,
//!     noise: Param::fit_variance(0.01),
//!     mean: MeanFunction::Network,
//!     ..NtkGpParams::default()
//! };
//! let gp = NtkGp::new(net, &x, &y, config)?;
//! let x_test = DMatrix::from_column_slice(3, 1, &[-0.5, 0.0, 0.5]);
//! let pred = gp.predict(&x_test)?;
//! let noise = gp.noise_at(&x_test)?;
//! for i in 0..3 {
//!     let sd = (pred.var[i] + noise[i]).sqrt();
//!     println!("f({:+.1}) = {:.3} ± {:.3}", x_test[(i, 0)], pred.mean[i], 2.0 * sd);
//!     assert!((pred.mean[i] - (2.0 * x_test[(i, 0)]).sin()).abs() < 2.0 * sd);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The dense kernel alone, on a precomputed kernel matrix:
//!
//! ```
//! use nalgebra::{DMatrix, DVector};
//! use ntk_gp::{ExactGp, Hyper};
//! // A linear kernel K = x xᵀ on three points.
//! let x = DVector::from_vec(vec![-1.0, 0.0, 1.0]);
//! let gp = ExactGp::new(&x * x.transpose(), 2.0 * &x, Hyper { noise: 1e-6, prior_scale: 1.0 })?;
//! let cross = DMatrix::from_column_slice(3, 1, (&x * 2.0).as_slice()); // K(X, 2)
//! let at_two = gp.predict(&cross, &DVector::from_vec(vec![4.0]), &DVector::zeros(1))?;
//! assert!((at_two.mean[0] - 4.0).abs() < 1e-5); // y = 2x, so f(2) = 4
//! # Ok::<(), ntk_gp::GpError>(())
//! ```

#![warn(missing_docs)]

pub mod ablr;
pub mod chol;
#[cfg(test)]
mod conformance;
pub mod dense;
pub mod error;
pub mod exact;
pub mod fit;
pub mod laplace;
pub mod laplace_free;
pub mod metrics;
pub mod multitask;
pub mod ntk;
pub mod optimize;
mod param_free;
pub mod rbf;
pub mod spectral;
pub mod strategy;
pub mod train;
pub mod weight_space;

pub use dense::{DenseReport, Precision};
pub use error::GpError;
pub use exact::{ExactGp, Hyper, Prediction};
pub use fit::Param;
pub use laplace::{ClassifierParams, LaplaceClassifier, LaplaceParams, NtkClassifier};
pub use metrics::{
    Calibration, ClassMetrics, MeanStderr, TaskMetrics, calibration, coverage95, nlpd, rmse,
};
pub use multitask::{MultiTask, MultiTaskState};
pub use ntk::{MatrixFreeParams, MatrixFreeState, MeanFunction, NtkGp, NtkGpParams};
pub use optimize::{MaximizeParams, Maximum};
pub use strategy::{Choice, CostAssumptions, Strategy};
