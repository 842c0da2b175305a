//! Feed-forward networks of common layers, with hand-written (tape-free) forward,
//! tangent ($J v$) and adjoint ($J^\top u$) passes in burn tensor operations.
//!
//! A [`NetworkConfig`] lists [`Layer`]s as a PyTorch `nn.Sequential` would: `Linear`,
//! `Conv2d` (stride, padding, dilation, groups), elementwise activations, `AvgPool2d` /
//! `MaxPool2d` (kernel = stride, no padding: PyTorch's `nn.AvgPool2d(k)` /
//! `nn.MaxPool2d(k)`), `Flatten`, `BatchNorm2d` in eval mode, `LayerNorm` over all
//! features of a point, and residual blocks $x \mapsto x + g(x)$ around a nested list.
//! Each layer kind is one file in [`layers`], implementing one trait (see `layer.rs`).
//!
//! # Flat parameters
//!
//! $\theta$ follows PyTorch's `named_parameters()` order, which is the
//! `state_dict` order with the buffers left out: layer $i$ of the sequence
//! contributes `i.weight` then `i.bias` (Linear `[out, in]`, Conv2d
//! `[c_out, c_in / groups, k_h, k_w]`, norms `[c]` or the normalized shape), and a
//! residual block at index $i$ whose body is an `nn.Sequential` attribute `body`
//! contributes `i.body.j.weight`, `i.body.j.bias` for its layers $j$. The
//! running statistics of `BatchNorm2d` (`i.running_mean`, `i.running_var`) are
//! buffers, held by the [`Network`] but not part of $\theta$.
//!
//! # Products
//!
//! Every layer $y = \phi(x; \theta_l)$ has a tangent rule
//! $\dot y = \partial_x\phi\, \dot x + \partial_\theta\phi\, \dot\theta_l$ and its adjoint
//! $\bar x = \partial_x\phi^\top \bar y$, $\bar\theta_l = \partial_\theta\phi^\top \bar y$
//! (each layer file states its own). A block of $k$ vectors is carried as one batch of
//! $k m$ tangents (column outer, point inner), so each layer costs a few batched tensor
//! operations; the parameter terms ($x \dot W^\top$, $\dot W \star x$, $\bar W$) contract
//! all $k$ columns in one matrix product or convolution.

mod jacobian;
mod layer;
pub mod layers;
mod module;
mod pass;
mod plan;
mod shape;
mod tensor;
#[cfg(test)]
mod tests;

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::autodiff::{AutodiffJacobian, Nested};
use crate::convert::check_finite;
use crate::error::{OpsError, Result};
use crate::jacobian::JacobianParams;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

pub(crate) use jacobian::NetworkJacobian;
pub use layer::Layer;
pub use module::{GenericJacobian, NetworkModule};
pub(crate) use plan::{Plan, Values};

/// A network: the shape of one input point and the layers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkConfig {
    /// One point's shape: `[d]` (vector) or `[c, h, w]` (image). Rows of $X$
    /// hold the point flattened row-major.
    pub input: Vec<usize>,
    /// The layers, in order.
    pub layers: Vec<Layer>,
}

impl NetworkConfig {
    /// A network on points of shape `input` (`[d]` or `[c, h, w]`).
    pub fn new(input: &[usize], layers: Vec<Layer>) -> Self {
        Self {
            input: input.to_vec(),
            layers,
        }
    }

    pub(crate) fn plan(&self) -> Result<Plan> {
        Plan::compile(&self.input, &self.layers)
    }

    /// The flat-parameter layout ($\theta$, `named_parameters()` order).
    pub fn layout(&self) -> Result<ParamLayout> {
        Ok(self.plan()?.layout)
    }

    /// The layout of the buffers (BatchNorm running means and variances).
    pub fn buffer_layout(&self) -> Result<ParamLayout> {
        Ok(self.plan()?.buffers)
    }

    /// Features per input point.
    pub fn n_inputs(&self) -> usize {
        self.input.iter().product()
    }

    /// PyTorch's default initialization, seeded: weights and biases of Linear
    /// and Conv2d uniform on $\pm 1/\sqrt{\text{fan-in}}$, norms $\gamma = 1$,
    /// $\beta = 0$; running means $0$ and variances $1$.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Network<B>> {
        let plan = self.plan()?;
        let theta = plan.init_params(&mut SplitMix64::new(seed));
        let buffers = plan.default_buffers();
        self.with_params(&theta, &buffers, device)
    }

    /// A network holding the flat parameters `theta` and buffers `buffers`
    /// (in [`buffer_layout`](Self::buffer_layout) order; empty without BatchNorm).
    pub fn with_params<B: Backend>(
        &self,
        theta: &[f64],
        buffers: &[f64],
        device: &B::Device,
    ) -> Result<Network<B>> {
        let plan = self.plan()?;
        let (params, buffers) = plan.split_values::<B>(theta, buffers, device)?;
        Ok(Network {
            config: self.clone(),
            plan,
            params,
            buffers,
            host: std::sync::OnceLock::from(std::sync::Arc::<[f64]>::from(theta)),
        })
    }
}

/// A [`NetworkConfig`] with parameter and buffer values on a device.
#[derive(Clone, Debug)]
pub struct Network<B: Backend> {
    config: NetworkConfig,
    plan: Plan,
    params: Vec<Tensor<B, 1>>,
    buffers: Vec<Tensor<B, 1>>,
    /// $\theta$ on the host in f64, kept from [`NetworkConfig::with_params`] or read back once
    /// (the host paths start from it; reading 803k parameters back costs milliseconds).
    host: std::sync::OnceLock<std::sync::Arc<[f64]>>,
}

impl<B: Backend> Network<B> {
    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The flat-parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.plan.layout
    }

    /// The buffer layout.
    pub fn buffer_layout(&self) -> &ParamLayout {
        &self.plan.buffers
    }

    /// Number of parameters $p$.
    pub fn n_params(&self) -> usize {
        self.plan.layout.n_params()
    }

    /// Features per input point.
    pub fn n_inputs(&self) -> usize {
        self.plan.input.numel()
    }

    /// Outputs per point $o$ (the last layer's shape, flattened).
    pub fn n_outputs(&self) -> usize {
        self.plan.output.numel()
    }

    /// The device the values live on.
    pub fn device(&self) -> B::Device {
        self.params[0].device()
    }

    /// $\theta$ as one vector.
    pub fn flatten(&self) -> Tensor<B, 1> {
        Tensor::cat(self.params.clone(), 0)
    }

    /// $\theta$ as host numbers in `f64` (PyTorch's `named_parameters()` order).
    pub fn params_f64(&self) -> Vec<f64> {
        self.host_params().to_vec()
    }

    /// $\theta$ on the host in f64, read back from the device once and then shared.
    pub fn host_params(&self) -> &[f64] {
        self.host.get_or_init(|| {
            let mut theta = Vec::with_capacity(self.n_params());
            for t in &self.params {
                theta.extend(crate::convert::to_vec_f64(t.clone()));
            }
            theta.into()
        })
    }

    /// Whether the last layer is the (mean, scale) head of heteroscedastic regression.
    pub fn has_heteroscedastic_head(&self) -> bool {
        matches!(self.config.layers.last(), Some(Layer::Heteroscedastic(_)))
    }

    /// Whether the network is a dense chain (Linear layers with one activation between
    /// them, optionally the heteroscedastic head): the networks with a structured NTK
    /// ([`HostNtk::of_network`](crate::HostNtk::of_network)).
    pub fn is_dense_chain(&self) -> bool {
        self.dense_widths().is_some()
    }

    /// The widths of a dense chain, inputs first (`[d, h_1, …, o]`, the head's two outputs
    /// counted); `None` for any other network.
    pub fn dense_widths(&self) -> Option<Vec<usize>> {
        crate::MlpConfig::of_network(&self.config).map(|c| c.widths)
    }

    /// Values one point's forward pass keeps for the products (activations, pre-activations,
    /// pooling indices): the per-point memory of the Jacobian's cached factors is
    /// this many entries.
    pub fn saved_per_point(&self) -> usize {
        self.saved_entries_per_point()
    }

    /// The buffers as one vector (empty without BatchNorm).
    pub fn buffers_flat(&self) -> Vec<f64> {
        self.buffers
            .iter()
            .flat_map(|b| crate::convert::to_vec_f64(b.clone()))
            .collect()
    }

    /// The same network with buffers `buffers` (in buffer-layout order).
    pub fn with_buffers(&self, buffers: &[f64]) -> Result<Self> {
        let theta = crate::convert::to_vec_f64(self.flatten());
        self.config.with_params(&theta, buffers, &self.device())
    }

    /// The same network with parameters $\theta + \epsilon v$ (`v`: `[p]`), buffers kept.
    pub fn perturbed(&self, v: Tensor<B, 1>, eps: f64) -> Result<Self> {
        let p = self.n_params();
        if v.dims() != [p] {
            return Err(OpsError::ShapeMismatch {
                what: "perturbation v".into(),
                expected: vec![p],
                found: v.dims().to_vec(),
            });
        }
        let params = self
            .plan
            .layout
            .specs()
            .iter()
            .zip(&self.params)
            .map(|(s, t)| t.clone() + v.clone().narrow(0, s.offset, s.numel()).mul_scalar(eps))
            .collect();
        Ok(Self {
            config: self.config.clone(),
            plan: self.plan.clone(),
            params,
            buffers: self.buffers.clone(),
            host: std::sync::OnceLock::new(),
        })
    }

    /// A typed error unless `x` is `[n, n_inputs]` with $n \ge 1$ and finite.
    pub fn check_inputs(&self, x: &Tensor<B, 2>, what: &str) -> Result<()> {
        let [n, d] = x.dims();
        if d != self.n_inputs() {
            return Err(OpsError::ShapeMismatch {
                what: what.into(),
                expected: vec![n, self.n_inputs()],
                found: vec![n, d],
            });
        }
        if n == 0 {
            return Err(OpsError::Empty {
                what: format!("{what} has no rows"),
            });
        }
        check_finite(x, what)
    }

    pub(crate) fn values(&self) -> Values<'_, B> {
        Values {
            params: &self.params,
            buffers: &self.buffers,
            layout: &self.plan.layout,
        }
    }

    /// $f(X)$, `[n, o]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let m = x.dims()[0];
        let y = pass::forward(
            &self.plan.nodes,
            &self.values(),
            x.reshape(self.plan.input.batch(m)),
        );
        y.reshape([m, self.plan.output.numel()])
    }

    /// The tape-free Jacobian at inputs `x` (`[n, n_inputs]`).
    pub fn jacobian(&self, x: Tensor<B, 2>, options: JacobianParams) -> Result<NetworkJacobian<B>> {
        NetworkJacobian::new(self.clone(), x, options)
    }

    /// The generic-path (autodiff) Jacobian of the same network, the test oracle, with
    /// rows chunked by the same planner under `options`.
    pub fn generic_jacobian(
        &self,
        x: Tensor<B, 2>,
        options: JacobianParams,
    ) -> Result<GenericJacobian<B>> {
        self.check_inputs(&x, "X")?;
        let module = NetworkModule::<Nested<B>>::from_network(self, &x.device());
        // a tape of about four times the activations the fast path saves
        let elem = std::mem::size_of::<B::FloatElem>();
        let row = 4 * elem * self.saved_entries_per_point();
        AutodiffJacobian::new(module, NetworkModule::forward as fn(&_, _) -> _, x)?
            .with_options(options, row)
    }

    /// Entries saved per point by a forward pass that keeps the factors.
    pub(crate) fn saved_entries_per_point(&self) -> usize {
        self.plan.input.numel()
            + self
                .plan
                .nodes
                .iter()
                .map(|n| n.saved_entries())
                .sum::<usize>()
    }

    /// The network as an [`Mlp`](crate::Mlp) sharing its parameter tensors, when it is a
    /// dense chain (what the dense execution paths run on).
    pub(crate) fn dense_chain(&self) -> Option<crate::Mlp<B>> {
        let config = crate::MlpConfig::of_network(&self.config)?;
        let layers = self
            .params
            .chunks(2)
            .zip(config.widths.windows(2))
            .map(|(wb, w)| crate::mlp::Dense {
                weight: wb[0].clone().reshape([w[1], w[0]]),
                bias: wb[1].clone(),
            })
            .collect();
        crate::Mlp::from_layers(config, layers).ok()
    }

    /// A network of `config` holding `params` (one flat tensor per layout entry) and no
    /// buffers.
    pub(crate) fn from_tensors(config: NetworkConfig, params: Vec<Tensor<B, 1>>) -> Result<Self> {
        let plan = config.plan()?;
        let ok = plan.buffers.specs().is_empty()
            && params.len() == plan.layout.specs().len()
            && params
                .iter()
                .zip(plan.layout.specs())
                .all(|(t, s)| t.dims()[0] == s.numel());
        if !ok {
            return Err(OpsError::InvalidConfig(
                "parameter tensors do not follow the network's layout".into(),
            ));
        }
        Ok(Self {
            config,
            plan,
            params,
            buffers: Vec::new(),
            host: std::sync::OnceLock::new(),
        })
    }

    /// The widest activation per point.
    pub(crate) fn widest_per_point(&self) -> usize {
        self.plan
            .nodes
            .iter()
            .map(|n| n.widest())
            .max()
            .unwrap_or(0)
            .max(1)
    }
}
