//! [`Jacobian`]: the one Jacobian type, for every [`Network`], with its execution path
//! chosen by what the layers and the backend can do.
//!
//! Three internal paths compute the same numbers:
//! - **dense, on the host** ([`Execution::DenseHost`]): a *dense chain* (Linear layers with
//!   one activation between them, optionally the heteroscedastic head, the shape of an
//!   MLP) on a backend whose tensors live in host memory
//!   ([`computes_on_host`](crate::device::computes_on_host)): shared per-layer factors
//!   $(A_l, \Delta_l)$, one GEMM per layer per product, structured NTK blocks;
//! - **dense, in tensors** ([`Execution::DenseTensor`]): the same factors in burn tensor
//!   operations, for a dense chain on any other backend (the GPU);
//! - **layers** ([`Execution::Layers`]): each layer's tangent and adjoint rules
//!   ([`network`](crate::network)), for every network (convolutions, pooling, norms,
//!   residual blocks).
//!
//! [`Execution::Auto`] (the default) takes the first that applies; the others force a
//! path (a typed error where it does not apply). The autodiff Jacobian
//! ([`AutodiffJacobian`](crate::AutodiffJacobian)) stays the oracle and the fallback for
//! modules outside the layer set.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use nalgebra::{DMatrix, RealField};

use crate::convert;
use crate::dense::MlpJacobian;
use crate::error::{OpsError, Result};
use crate::host_jacobian::HostJacobian;
use crate::host_ntk::HostNtk;
use crate::jacobian::{JacobianOperator, JacobianOptions, check_output_block, check_param_block};
use crate::mlp::Mlp;
use crate::network::{Network, NetworkJacobian};

/// Which path a [`Jacobian`]'s products take: [`Auto`](Self::Auto) takes a dense chain on a
/// host-memory backend to [`DenseHost`](Self::DenseHost), a dense chain elsewhere to
/// [`DenseTensor`](Self::DenseTensor), any other network to [`Layers`](Self::Layers); the
/// others force a path (a typed error where it does not apply).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Execution {
    /// The fastest path that applies: dense on the host, dense in tensors, or layers.
    #[default]
    Auto,
    /// Per-layer factors of a dense chain with host GEMMs (host-memory backends).
    DenseHost,
    /// Per-layer factors of a dense chain in burn tensor operations (any backend).
    DenseTensor,
    /// Each layer's tangent and adjoint rules (any network, any backend).
    Layers,
}

/// The path inside a [`Jacobian`].
#[derive(Clone, Debug)]
enum Path<B: Backend> {
    Host(HostJacobian<B>),
    Dense(MlpJacobian<B>),
    Layers(NetworkJacobian<B>),
}

/// Forwards one expression to whichever path is inside.
macro_rules! on_path {
    ($self:expr, $j:ident => $e:expr) => {
        match &$self.path {
            Path::Host($j) => $e,
            Path::Dense($j) => $e,
            Path::Layers($j) => $e,
        }
    };
}

/// The Jacobian $J = \partial f(X)/\partial\theta$ of a [`Network`] at inputs $X$:
/// products $J V$, $J^\top U$, the NTK $J_1 J_2^\top$ and its diagonal, $J$ itself.
///
/// ```
/// use burn_ndarray::NdArray;
/// use ntk_ops::{Execution, Jacobian, JacobianOperator, MlpConfig, convert};
///
/// let dev = Default::default();
/// let mlp = MlpConfig::new(&[1, 16, 1]).network().init::<NdArray<f64>>(0, &dev)?;
/// let x = convert::tensor_from_f64(vec![-1.0, 0.0, 1.0], 3, 1, &dev);
/// let jac = Jacobian::new(mlp, x, Default::default())?;
/// assert_eq!(jac.execution(), Execution::DenseHost); // a dense chain on the CPU
/// let k = jac.ntk_matrix(&jac)?; // 3 × 3
/// assert_eq!(k.dims(), [3, 3]);
/// # Ok::<(), ntk_ops::OpsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Jacobian<B: Backend> {
    net: Network<B>,
    path: Path<B>,
}

impl<B: Backend> Jacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    /// The Jacobian of `net` at `x` (`[n, n_inputs]`), checked for shape, emptiness and
    /// NaN/Inf; the path is [`JacobianOptions::execution`].
    pub fn new(
        net: impl Into<Network<B>>,
        x: Tensor<B, 2>,
        options: JacobianOptions,
    ) -> Result<Self> {
        let net = net.into();
        net.check_inputs(&x, "X")?;
        options.check()?;
        let dense = net.dense_chain();
        let on_host = crate::device::computes_on_host::<B>();
        let path = match (options.execution, dense) {
            (Execution::Auto, Some(mlp)) if on_host => {
                Path::Host(HostJacobian::new(mlp, x, options)?)
            }
            (Execution::Auto, Some(mlp)) | (Execution::DenseTensor, Some(mlp)) => {
                Path::Dense(MlpJacobian::new(mlp, x, options)?)
            }
            (Execution::DenseHost, Some(mlp)) if on_host => {
                Path::Host(HostJacobian::new(mlp, x, options)?)
            }
            (Execution::Auto, None) | (Execution::Layers, _) => {
                Path::Layers(NetworkJacobian::new(net.clone(), x, options)?)
            }
            (Execution::DenseHost, Some(_)) => {
                return Err(OpsError::InvalidConfig(format!(
                    "Execution::DenseHost needs a backend with tensors in host memory, not {}",
                    std::any::type_name::<B>()
                )));
            }
            (forced, None) => {
                return Err(OpsError::InvalidConfig(format!(
                    "Execution::{forced:?} needs a dense chain (Linear layers with one \
                     activation between them); this network has other layers"
                )));
            }
        };
        Ok(Self { net, path })
    }

    /// The network.
    pub fn network(&self) -> &Network<B> {
        &self.net
    }

    /// The network as an [`Mlp`] when it is a dense chain (on the dense paths).
    pub fn mlp(&self) -> Option<&Mlp<B>> {
        match &self.path {
            Path::Host(j) => Some(j.mlp()),
            Path::Dense(j) => Some(j.mlp()),
            Path::Layers(_) => None,
        }
    }

    /// The path the products take (never [`Execution::Auto`]).
    pub fn execution(&self) -> Execution {
        match &self.path {
            Path::Host(_) => Execution::DenseHost,
            Path::Dense(_) => Execution::DenseTensor,
            Path::Layers(_) => Execution::Layers,
        }
    }

    /// The inputs $X$ (`[n, n_inputs]`).
    pub fn inputs(&self) -> Tensor<B, 2> {
        match &self.path {
            Path::Host(j) => j.inputs(),
            Path::Dense(j) => j.inputs().clone(),
            Path::Layers(j) => j.inputs().clone(),
        }
    }

    /// Whether the factors of all of $X$ are kept between products.
    pub fn is_cached(&self) -> bool {
        on_path!(self, j => j.is_cached())
    }

    /// The explicit Jacobian (`[n·o, p]`), for small problems ($n o p$ numbers).
    pub fn jacobian(&self) -> Result<Tensor<B, 2>> {
        match &self.path {
            Path::Host(j) => j.jacobian(),
            Path::Dense(j) => j.jacobian(),
            Path::Layers(_) => {
                // J = (Jᵀ I)ᵀ, a block of rows at a time
                let rows = self.n_rows();
                let dev = self.device();
                let mut parts = Vec::new();
                for s in (0..rows).step_by(COLUMNS) {
                    let c = COLUMNS.min(rows - s);
                    parts.push(self.vjp(unit_columns::<B>(rows, s, c, &dev))?.transpose());
                }
                Ok(Tensor::cat(parts, 0))
            }
        }
    }

    /// The NTK $J_1 J_2^\top$ between this operator's inputs and `other`'s
    /// (`[n_1 o, n_2 o]`), both of the same network: structured per-layer blocks on the
    /// dense paths, products $J_1 (J_2^\top E)$ on blocks of unit columns otherwise.
    pub fn ntk_matrix(&self, other: &Self) -> Result<Tensor<B, 2>> {
        if self.net.config() != other.net.config() || self.n_params() != other.n_params() {
            return Err(OpsError::InvalidConfig(
                "the two Jacobians must belong to the same network".into(),
            ));
        }
        match (&self.path, &other.path) {
            (Path::Dense(a), Path::Dense(b)) => crate::ntk::ntk_matrix(a, b),
            (Path::Host(a), Path::Host(b)) => {
                let host = |j: &HostJacobian<B>| {
                    HostNtk::<B::FloatElem>::new(j.mlp(), &convert::to_dmatrix_f64(j.inputs()))
                };
                let k = host(a)?.cross(&host(b)?)?;
                Ok(convert::from_dmatrix_elems::<B>(&k, &self.device()))
            }
            _ => {
                let cols = other.n_rows();
                let dev = self.device();
                let mut parts = Vec::new();
                for s in (0..cols).step_by(COLUMNS) {
                    let c = COLUMNS.min(cols - s);
                    let jt = other.vjp(unit_columns::<B>(cols, s, c, &dev))?;
                    parts.push(self.jvp(jt)?);
                }
                Ok(Tensor::cat(parts, 1))
            }
        }
    }

    /// The diagonal of $K = J J^\top$ ($n o$ entries): structured on the dense paths, the
    /// squared row norms of $J$ otherwise.
    pub fn ntk_diagonal(&self) -> Result<Tensor<B, 1>> {
        match &self.path {
            Path::Dense(j) => crate::ntk::ntk_diagonal(j),
            Path::Host(j) => match JacobianOperator::ntk_diagonal(j) {
                Some(d) => Ok(d),
                None => {
                    let h = HostNtk::<B::FloatElem>::new(
                        j.mlp(),
                        &convert::to_dmatrix_f64(j.inputs()),
                    )?;
                    let d = h.diagonal();
                    let len = d.len();
                    Ok(convert::tensor_from_elems::<B, 1>(d, [len], &self.device()))
                }
            },
            Path::Layers(_) => {
                let rows = self.n_rows();
                let dev = self.device();
                let mut parts = Vec::new();
                for s in (0..rows).step_by(COLUMNS) {
                    let c = COLUMNS.min(rows - s);
                    let jt = self.vjp(unit_columns::<B>(rows, s, c, &dev))?;
                    parts.push(jt.square().sum_dim(0).reshape([c]));
                }
                Ok(Tensor::cat(parts, 0))
            }
        }
    }

    /// $J V$ for a host block `v` (`[p, k]`): on the host path with no tensor in between
    /// (what a solver on `DMatrix` blocks calls), through tensors otherwise.
    pub fn jvp_host(&self, v: &DMatrix<B::FloatElem>) -> Result<DMatrix<B::FloatElem>> {
        match &self.path {
            Path::Host(j) => j.jvp_host(v),
            _ => {
                let t = convert::from_dmatrix_elems::<B>(v, &self.device());
                Ok(convert::to_dmatrix_elems(self.jvp(t)?))
            }
        }
    }

    /// $J^\top U$ for a host block `u` (`[n·o, k]`), as [`Self::jvp_host`].
    pub fn vjp_host(&self, u: &DMatrix<B::FloatElem>) -> Result<DMatrix<B::FloatElem>> {
        match &self.path {
            Path::Host(j) => j.vjp_host(u),
            _ => {
                let t = convert::from_dmatrix_elems::<B>(u, &self.device());
                Ok(convert::to_dmatrix_elems(self.vjp(t)?))
            }
        }
    }

    /// The host operator inside, on the host path.
    pub(crate) fn into_host(self) -> Option<HostJacobian<B>> {
        match self.path {
            Path::Host(j) => Some(j),
            _ => None,
        }
    }
}

/// Unit columns per block when a product builds $J$, its diagonal or a cross kernel.
const COLUMNS: usize = 64;

/// Columns `start..start + c` of the `rows × rows` identity.
fn unit_columns<B: Backend>(rows: usize, start: usize, c: usize, dev: &B::Device) -> Tensor<B, 2> {
    let mut vals = vec![0.0; rows * c];
    for j in 0..c {
        vals[(start + j) * c + j] = 1.0;
    }
    convert::tensor_from_f64::<B>(vals, rows, c, dev)
}

impl<B: Backend> JacobianOperator<B> for Jacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    fn n_points(&self) -> usize {
        on_path!(self, j => j.n_points())
    }
    fn n_outputs(&self) -> usize {
        on_path!(self, j => j.n_outputs())
    }
    fn n_params(&self) -> usize {
        on_path!(self, j => j.n_params())
    }
    fn device(&self) -> B::Device {
        on_path!(self, j => j.device())
    }
    fn outputs(&self) -> Result<Tensor<B, 2>> {
        on_path!(self, j => j.outputs())
    }
    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params())?;
        on_path!(self, j => j.jvp(v))
    }
    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_output_block(&u, self.n_rows())?;
        on_path!(self, j => j.vjp(u))
    }
    fn ntk_diagonal(&self) -> Option<Tensor<B, 1>> {
        on_path!(self, j => j.ntk_diagonal())
    }
    fn ntk_row(&self, i: usize) -> Option<Tensor<B, 1>> {
        on_path!(self, j => j.ntk_row(i))
    }
    fn gram_diagonal(&self) -> Option<Tensor<B, 1>> {
        on_path!(self, j => j.gram_diagonal())
    }
}
