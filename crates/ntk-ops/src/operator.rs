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
use crate::jacobian::{JacobianOperator, JacobianParams};
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
    options: JacobianParams,
    path: Path<B>,
}

impl<B: Backend> Jacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    /// The Jacobian of `net` at `x` (`[n, n_inputs]`), checked for shape, emptiness and
    /// NaN/Inf; the path is [`JacobianParams::execution`].
    pub fn new(
        net: impl Into<Network<B>>,
        x: Tensor<B, 2>,
        options: JacobianParams,
    ) -> Result<Self> {
        let net = net.into();
        net.check_inputs(&x, "X")?;
        options.check()?;
        let dense = net.dense_chain();
        let on_host = crate::device::computes_on_host::<B>();
        let path = match (options.execution, dense) {
            (Execution::Auto | Execution::DenseHost, Some(mlp)) if on_host => {
                Path::Host(HostJacobian::new(mlp, x, options)?)
            }
            (Execution::Auto | Execution::DenseTensor, Some(mlp)) => {
                Path::Dense(MlpJacobian::new(mlp, x, options)?)
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
        Ok(Self { net, options, path })
    }

    /// The network.
    pub fn network(&self) -> &Network<B> {
        &self.net
    }

    /// The parameters it was built with.
    pub fn params(&self) -> JacobianParams {
        self.options
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
                let parts = self
                    .point_blocks()
                    .map(|(s, len)| Ok(crate::jacobian::transposed_copy(self.rows_t(s, len)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(parts, 0))
            }
        }
    }

    /// The NTK $J_1 J_2^\top$ between this operator's inputs and `other`'s
    /// (`[n_1 o, n_2 o]`), both of the same architecture (each at its own parameters):
    /// structured per-layer blocks on the dense paths; otherwise $J_1 J_2^\top$ from the
    /// explicit Jacobians when both fit in half the memory budget, else $J_1 (J_2^\top E)$
    /// on blocks of $J_2$'s rows.
    pub fn ntk_matrix(&self, other: &Self) -> Result<Tensor<B, 2>> {
        if self.net.config() != other.net.config() || self.n_params() != other.n_params() {
            return Err(OpsError::InvalidConfig(
                "the two Jacobians must belong to the same architecture".into(),
            ));
        }
        match (&self.path, &other.path) {
            (Path::Dense(a), Path::Dense(b)) => crate::ntk::ntk_matrix(a, b),
            (Path::Host(a), Path::Host(b)) => {
                // from the operators' own factors; one triangle when both are the same
                let ha = a.host_ntk();
                let k = if std::ptr::eq(a, b) {
                    ha.symmetric()?
                } else {
                    ha.cross(&b.host_ntk())?
                };
                Ok(convert::from_dmatrix_elems::<B>(&k, &self.device()))
            }
            _ => {
                let elem = std::mem::size_of::<B::FloatElem>();
                let explicit = (self.n_rows() + other.n_rows())
                    .saturating_mul(self.n_params())
                    .saturating_mul(elem);
                if explicit <= self.options.memory_budget / 2 {
                    let j1 = self.jacobian()?;
                    let j2 = if std::ptr::eq(self, other) {
                        j1.clone()
                    } else {
                        other.jacobian()?
                    };
                    return Ok(j1.matmul(crate::jacobian::transposed_copy(j2)));
                }
                let parts = other
                    .point_blocks()
                    .map(|(s, len)| self.jvp(other.rows_t(s, len)?))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(parts, 1))
            }
        }
    }

    /// The diagonal of $K = J J^\top$ ($n o$ entries): structured on the dense paths, the
    /// squared row norms of $J$ otherwise.
    pub fn ntk_diagonal(&self) -> Result<Tensor<B, 1>> {
        match &self.path {
            Path::Dense(j) => crate::ntk::ntk_diagonal(j),
            Path::Host(j) => Ok(j.diagonal()),
            Path::Layers(_) => {
                let o = self.n_outputs();
                let parts = self
                    .point_blocks()
                    .map(|(s, len)| Ok(self.rows_t(s, len)?.square().sum_dim(0).reshape([len * o])))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(parts, 0))
            }
        }
    }

    /// `(start, len)` of blocks of [`BLOCK_POINTS`] points.
    fn point_blocks(&self) -> impl Iterator<Item = (usize, usize)> + use<B> {
        let n = self.n_points();
        (0..n)
            .step_by(BLOCK_POINTS)
            .map(move |s| (s, BLOCK_POINTS.min(n - s)))
    }

    /// $J^\top$ restricted to the rows of points `start..start + len` (`[p, len·o]`): on the
    /// layers path, $J^\top E$ of a Jacobian of those points alone, so that each unit column
    /// runs the adjoint pass over its own block rather than over all $n$ points.
    fn rows_t(&self, start: usize, len: usize) -> Result<Tensor<B, 2>> {
        let o = self.n_outputs();
        let r = len * o;
        let dev = self.device();
        match &self.path {
            Path::Layers(_) => {
                let sub = NetworkJacobian::new(
                    self.net.clone(),
                    self.inputs().narrow(0, start, len),
                    JacobianParams {
                        cache_factors: false,
                        ..self.options
                    },
                )?;
                sub.vjp(unit_columns::<B>(r, 0, r, &dev))
            }
            _ => self.vjp(unit_columns::<B>(self.n_rows(), start * o, r, &dev)),
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

/// Points per block when the layers path forms rows of $J$ ($J^\top E$ for the block's
/// $16 o$ unit columns over its 16 points: $16^2 o$ per-point passes a block, $16 n o$ in all).
const BLOCK_POINTS: usize = 16;

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
    // each path checks its block (shape, columns, NaN/Inf) itself
    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        on_path!(self, j => j.jvp(v))
    }
    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        on_path!(self, j => j.vjp(u))
    }
    fn ntk_diagonal(&self) -> Option<Tensor<B, 1>> {
        // Every path has it: the layers path from blocks of explicit Jacobian rows.
        Jacobian::ntk_diagonal(self).ok()
    }
    fn ntk_row(&self, i: usize) -> Option<Tensor<B, 1>> {
        on_path!(self, j => j.ntk_row(i))
    }
    fn gram_diagonal(&self) -> Option<Tensor<B, 1>> {
        on_path!(self, j => j.gram_diagonal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Layer, NetworkConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, rel_err};

    /// The layers path's kernel from explicit Jacobians, by blocks of rows under a small
    /// memory budget, and across two input sets (more points than one block), all equal;
    /// the diagonal equal to the kernel's.
    #[test]
    fn layers_kernel_explicit_and_blocked_agree() {
        let dev = Default::default();
        let cfg = NetworkConfig::new(
            &[1, 4, 4],
            vec![
                Layer::conv2d(1, 2, 2),
                Layer::act(crate::Activation::Tanh),
                Layer::flatten(),
                Layer::linear(18, 2),
            ],
        );
        let net = cfg.init::<TestBackend>(3, &dev).unwrap();
        let x = |n: usize, seed: u64| {
            convert::tensor_from_f64::<TestBackend>(
                SplitMix64::new(seed).normal_vec(n * 16),
                n,
                16,
                &dev,
            )
        };
        let small = JacobianParams {
            memory_budget: 4096,
            ..Default::default()
        };
        let (a, b) = (x(37, 1), x(21, 2));
        let big_a = Jacobian::new(net.clone(), a.clone(), Default::default()).unwrap();
        let big_b = Jacobian::new(net.clone(), b.clone(), Default::default()).unwrap();
        let small_a = Jacobian::new(net.clone(), a, small).unwrap();
        let small_b = Jacobian::new(net, b, small).unwrap();
        assert_eq!(big_a.execution(), Execution::Layers);
        for (x, y) in [(&big_a, &big_b), (&big_a, &big_a)] {
            let explicit = convert::to_vec_f64(x.ntk_matrix(y).unwrap());
            let (xs, ys) = if std::ptr::eq(x, y) {
                (&small_a, &small_a)
            } else {
                (&small_a, &small_b)
            };
            let blocked = convert::to_vec_f64(xs.ntk_matrix(ys).unwrap());
            assert!(rel_err(&blocked, &explicit) < 1e-13);
        }
        let k = convert::to_dmatrix_f64(big_a.ntk_matrix(&big_a).unwrap());
        let d = convert::to_vec_f64(small_a.ntk_diagonal().unwrap());
        assert_eq!(d.len(), 74);
        let want: Vec<f64> = (0..74).map(|i| k[(i, i)]).collect();
        assert!(rel_err(&d, &want) < 1e-13);
    }
}
