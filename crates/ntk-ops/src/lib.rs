#![doc = include_str!("../README.md")]
//!
//! # Contents
//!
//! - [`Network`] / [`NetworkConfig`]: a sequence of [`Layer`]s (Linear, Conv2d with
//!   stride, padding, dilation and groups, pooling, BatchNorm, LayerNorm, Flatten, every
//!   [`Activation`], residual blocks, a heteroscedastic head) whose flat parameters follow
//!   PyTorch's `named_parameters()` order ([`ParamLayout`]). [`MlpConfig`] and
//!   [`CnnConfig`] build common ones; [`checkpoint`] reads and writes parameters as
//!   safetensors, and [`onnx`] reads networks from ONNX graphs.
//! - [`Jacobian`]: the Jacobian of any network, one type. Its products run on the
//!   fastest path the layers and the backend allow ([`Execution`]): per-layer factors
//!   with host GEMMs for a dense chain on a host-memory backend, the same factors in
//!   tensor operations elsewhere, or each layer's tangent and adjoint rules.
//!   [`JacobianOperator`] is the trait the operators below take; [`AutodiffJacobian`]
//!   implements it for any burn `Module` through burn-autodiff (the test oracle).
//! - [`NtkOperator`], [`GramOperator`], [`GgnOperator`], [`FiniteDifferenceFisher`],
//!   [`HostGram`]: the kernel and the parameter-space operators on device-resident
//!   [`TensorBlock`]s, as [`krylov::LinearOperator`]s.
//!
//! Tensors are created with the backend's own float type ([`convert::float_opts`]): burn
//! 0.21 keys default dtypes by device, so mixing `NdArray<f32>` and `NdArray<f64>` in one
//! process otherwise leaks dtypes.

#![cfg_attr(docsrs, feature(doc_cfg))]
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
pub mod sharded;
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
pub use sharded::{ShardedGram, ShardedNtk};

/// The default backend: burn-ndarray in `f64`.
pub type DefaultBackend = burn_ndarray::NdArray<f64>;
