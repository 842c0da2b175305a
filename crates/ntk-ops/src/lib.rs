//! Jacobian, neural-tangent-kernel (NTK) and Fisher operators of feed-forward networks on
//! burn backends.
//!
//! For a network $f(x;\theta)$ and inputs $X$ ($n$ points, $o$ outputs each), the
//! Jacobian $J = \partial f(X)/\partial\theta$ ($n o \times p$) is used through products
//! $J V$ and $J^\top U$ with blocks of vectors, from which the NTK $K = J J^\top$, the Gram
//! matrix $J^\top J$ and the Gauss–Newton / Fisher matrix $J^\top H J$ are built as
//! [`krylov::LinearOperator`]s on device-resident [`TensorBlock`]s. Small problems get
//! dense forms: $J$ itself, the NTK and its diagonal.
//!
//! - [`Network`] / [`NetworkConfig`]: a sequence of [`Layer`]s (Linear, Conv2d with
//!   stride, padding, dilation and groups, pooling, BatchNorm, LayerNorm, Flatten, every
//!   [`Activation`], residual blocks, a heteroscedastic head) whose flat parameters follow
//!   PyTorch's `named_parameters()` order ([`ParamLayout`]). [`MlpConfig`] and
//!   [`CnnConfig`] build common ones; [`checkpoint`] reads and writes parameters as
//!   safetensors.
//! - [`Jacobian`]: the Jacobian of any network, one type. Its products run on the
//!   fastest path the layers and the backend allow ([`Execution`]): per-layer factors
//!   with host GEMMs for a dense chain on a host-memory backend, the same factors in
//!   tensor operations elsewhere, or each layer's tangent and adjoint rules.
//!   [`JacobianOperator`] is the trait the operators below take; [`AutodiffJacobian`]
//!   implements it for any burn `Module` through burn-autodiff (the test oracle).
//! - [`NtkOperator`], [`GramOperator`], [`GgnOperator`], [`FiniteDifferenceFisher`],
//!   [`HostGram`]: the kernel and the parameter-space operators.
//!
//! Tensors are created with the backend's own float type ([`convert::float_opts`]): burn
//! 0.21 keys default dtypes by device, so mixing `NdArray<f32>` and `NdArray<f64>` in one
//! process otherwise leaks dtypes.
//!
//! A small CNN, its Jacobian products and its NTK, each checked against the others:
//!
//! ```
//! use burn_ndarray::NdArray;
//! use ntk_ops::layers::Conv2d;
//! use ntk_ops::{Activation, Jacobian, JacobianOperator, Layer, NetworkConfig, convert};
//!
//! type B = NdArray<f64>;
//! let dev = Default::default();
//! // 1×6×6 images → conv 3×3 (4 channels, padding 1) → ReLU → max-pool 2 → linear (1)
//! let cnn = NetworkConfig::new(
//!     &[1, 6, 6],
//!     vec![
//!         Conv2d::new(1, 4, 3).with_padding([1, 1]).into(),
//!         Layer::act(Activation::Relu),
//!         Layer::max_pool2d([2, 2]),
//!         Layer::flatten(),
//!         Layer::linear(4 * 3 * 3, 1),
//!     ],
//! )
//! .init::<B>(0, &dev)?;
//! let x = convert::tensor_from_f64((0..5 * 36).map(|i| (i as f64).sin()).collect(), 5, 36, &dev);
//! let jac = Jacobian::new(cnn, x, Default::default())?;
//! let p = jac.n_params();
//! let v = convert::tensor_from_f64((0..p).map(|i| (i as f64).cos()).collect(), p, 1, &dev);
//! let u = convert::tensor_from_f64(vec![1.0, -2.0, 0.5, 0.0, 3.0], 5, 1, &dev);
//! let (jv, jtu) = (jac.jvp(v.clone())?, jac.vjp(u.clone())?); // [5, 1] and [p, 1]
//! // ⟨J v, u⟩ = ⟨v, Jᵀ u⟩
//! let (a, b) = ((jv * u.clone()).sum().into_scalar(), (v * jtu).sum().into_scalar());
//! assert!((a - b).abs() < 1e-12 * a.abs().max(1.0));
//! // the NTK applied to u is J (Jᵀ u)
//! let k = jac.ntk_matrix(&jac)?; // [5, 5]
//! let ku = jac.jvp(jac.vjp(u.clone())?)?;
//! assert!((k.matmul(u) - ku).abs().max().into_scalar() < 1e-12);
//! # Ok::<(), ntk_ops::OpsError>(())
//! ```

#![warn(missing_docs)]

pub mod activation;
mod autodiff;
mod block;
pub mod checkpoint;
mod chunk;
mod cnn;
pub mod convert;
mod dense;
pub mod device;
mod error;
mod fisher;
mod host_jacobian;
pub mod host_ntk;
mod jacobian;
pub mod matmul;
mod mlp;
pub mod network;
mod ntk;
pub mod onnx;
mod operator;
mod params;
pub mod rng;
pub mod vmath;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod testing;

pub use activation::Activation;
pub use autodiff::{AutodiffJacobian, flat_params};
pub use block::TensorBlock;
pub use checkpoint::{DiskDtype, load_mlp, save_mlp};
pub use cnn::CnnConfig;
pub use device::{Device, DeviceError};
pub use error::{OpsError, Result};
pub use fisher::{FdScheme, FiniteDifferenceFisher, GgnOperator, GramOperator, Likelihood};
pub use host_jacobian::HostGram;
pub use host_ntk::HostNtk;
pub use jacobian::{JacobianOperator, JacobianParams};
pub use mlp::{Head, Mlp, MlpConfig};
pub use network::{Layer, Network, NetworkConfig, layers};
pub use ntk::NtkOperator;
pub use operator::{Execution, Jacobian};
pub use params::{ParamLayout, ParamSpec};

/// The default backend: burn-ndarray in `f64`.
pub type DefaultBackend = burn_ndarray::NdArray<f64>;
