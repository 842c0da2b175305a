//! Jacobian, neural-tangent-kernel (NTK) and Fisher operators on burn backends.
//!
//! For a model $f(x;\theta)$ and inputs $X$ ($n$ points, $o$ outputs), the
//! Jacobian $J = \partial f(X)/\partial\theta$ ($n o \times p$) is used through
//! products $JV$ and $J^\top U$ with blocks of vectors, from which the NTK
//! $K = J J^\top$, the Gram matrix $J^\top J$ and the Gauss–Newton / Fisher matrix
//! $J^\top H J$ are built as [`krylov::LinearOperator`]s on device-resident
//! [`TensorBlock`]s. Small problems get dense forms: $J$ itself, the NTK by
//! structured per-layer products, and the exact diagonal of $K$.
//!
//! - [`JacobianOperator`]: `jvp` / `vjp` on blocks; [`MlpJacobian`] is the
//!   hand-written, tape-free implementation for [`Mlp`]s, [`SequentialJacobian`]
//!   the same for [`Sequential`] networks of Linear, Conv2d, pooling, norm,
//!   activation and residual layers (the small [`Cnn`] among them), and
//!   [`AutodiffJacobian`] the generic one for any burn `Module` (autodiff for
//!   $J^\top u$, nested autodiff for $J v$), the test oracle of both.
//! - [`ntk_matrix`], [`ntk_diagonal`], [`NtkOperator`]: the kernel.
//! - [`GramOperator`], [`GgnOperator`], [`FiniteDifferenceFisher`]: parameter space.
//! - [`MlpConfig`] / [`Mlp`]: models whose flat parameters follow PyTorch's
//!   `state_dict` order ([`ParamLayout`]); [`checkpoint`] reads and writes them
//!   as safetensors.
//!
//! Tensors are created with the backend's own float type
//! ([`convert::float_opts`]): burn 0.21 keys default dtypes by device, so mixing
//! `NdArray<f32>` and `NdArray<f64>` in one process otherwise leaks dtypes.
//!
//! ```
//! use burn_ndarray::NdArray;
//! use ntk_ops::{JacobianOperator, MlpConfig, MlpJacobian, ntk_matrix, convert};
//!
//! type B = NdArray<f64>;
//! let dev = Default::default();
//! let mlp = MlpConfig::new(&[1, 40, 40, 1]).init::<B>(0, &dev)?;
//! let x = convert::tensor_from_f64(vec![-1.0, 0.0, 0.5, 2.0], 4, 1, &dev);
//! let jac = MlpJacobian::new(mlp, x, Default::default())?;
//! let k = ntk_matrix(&jac, &jac)?; // 4 × 4, equal to J Jᵀ
//! let v = convert::tensor_from_f64(vec![1.0; jac.n_params()], jac.n_params(), 1, &dev);
//! let jv = jac.jvp(v)?; // 4 × 1
//! assert_eq!(k.dims(), [4, 4]);
//! assert_eq!(jv.dims(), [4, 1]);
//! # Ok::<(), ntk_ops::OpsError>(())
//! ```

pub mod activation;
pub mod autodiff;
pub mod block;
pub mod checkpoint;
mod chunk;
pub mod cnn;
pub mod convert;
mod dense;
pub mod device;
pub mod error;
pub mod fisher;
pub mod host_jacobian;
pub mod host_ntk;
pub mod jacobian;
pub mod matmul;
pub mod mlp;
pub mod network;
pub mod ntk;
pub mod params;
pub mod rng;
pub mod vmath;

#[cfg(test)]
mod testing;

pub use activation::Activation;
pub use autodiff::{AutodiffJacobian, MlpModule, Nested, TorchLinear, flat_params};
pub use block::TensorBlock;
pub use checkpoint::{DiskDtype, load_mlp, save_mlp};
pub use cnn::{Cnn, CnnConfig};
pub use dense::MlpJacobian;
pub use device::{Device, DeviceError};
pub use error::{OpsError, Result};
pub use fisher::{FdScheme, FiniteDifferenceFisher, GgnOperator, GramOperator, Likelihood};
pub use host_jacobian::{HostGram, HostJacobian};
pub use host_ntk::HostNtk;
pub use jacobian::{JacobianOperator, JacobianOptions};
pub use mlp::{Dense, Factors, Head, Mlp, MlpConfig};
pub use network::{GenericJacobian, Layer, Network, NetworkConfig, NetworkJacobian, NetworkModule};
pub use ntk::{NtkOperator, ntk_diagonal, ntk_lower_blocks, ntk_matrix};
pub use params::{ParamLayout, ParamSpec};

/// The default backend: burn-ndarray in `f64`.
pub type DefaultBackend = burn_ndarray::NdArray<f64>;
