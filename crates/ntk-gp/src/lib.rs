//! Finite neural-tangent-kernel Gaussian processes.
//!
//! A network trained on a source task is linearized around its weights,
//! $f(x;\theta') \approx J(x)\theta' + \mu(x)$; with the prior $\theta' \sim \mathcal N(0, s^2 I)$
//! and Gaussian noise $\sigma^2$ each new task is a Gaussian process with kernel
//! $s^2 J J^\top$, adapted in closed form.
//!
//! - [`ntk::NtkGp`]: the finite-NTK GP of a trained network on one task, by any strategy.
//! - [`multitask::MultiTask`]: many tasks sharing one network (Algorithm 1), serializable.
//! - [`chol`]: a blocked, GEMM-based Cholesky and the dense log marginal likelihood on it.
//! - [`exact::ExactGp`]: dense inference on a precomputed kernel matrix (Cholesky).
//! - [`weight_space::WeightSpaceGp`]: the same posterior from the $p\times p$ matrix
//!   $\Phi^\top\Phi + (\sigma^2/s^2)I$ (parameter space, Woodbury).
//! - [`fit`]: maximum-marginal-likelihood $\sigma^2$, $s^2$ and constant mean.
//! - [`optimize`]: bounded quasi-Newton maximization of the log marginal likelihood.
//! - [`rbf`]: the exact RBF-kernel GP baseline with fitted hyper-parameters.
//!
//! ```
//! use nalgebra::{DMatrix, DVector};
//! use ntk_gp::exact::{ExactGp, Hyper};
//! // A linear kernel K = x xᵀ on three points.
//! let x = DVector::from_vec(vec![-1.0, 0.0, 1.0]);
//! let gp = ExactGp::new(&x * x.transpose(), 2.0 * &x, Hyper { noise: 1e-6, prior_scale: 1.0 })?;
//! let cross = DMatrix::from_column_slice(3, 1, (&x * 2.0).as_slice()); // K(X, 2)
//! let at_two = gp.predict(&cross, &DVector::from_vec(vec![4.0]), &DVector::zeros(1))?;
//! assert!((at_two.mean[0] - 4.0).abs() < 1e-5); // y = 2x, so f(2) = 4
//! # Ok::<(), ntk_gp::GpError>(())
//! ```

pub mod ablr;
pub mod chol;
#[cfg(test)]
mod conformance;
pub mod error;
pub mod exact;
pub mod fit;
pub mod laplace;
pub mod multitask;
pub mod ntk;
pub mod optimize;
mod param_free;
pub mod rbf;
pub mod spectral;
pub mod strategy;
pub mod train;
pub mod weight_space;

pub use error::GpError;
