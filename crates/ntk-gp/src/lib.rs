#![doc = include_str!("../README.md")]
//!
//! # Contents
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

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod ablr;
pub mod chol;
#[cfg(test)]
mod conformance;
pub mod dense;
pub mod distributed;
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
