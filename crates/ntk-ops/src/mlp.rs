//! Multi-layer perceptrons: builder, forward pass, flat parameters, and the
//! per-layer factors from which Jacobian products and NTKs are computed.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::activation::{Activation, sigmoid, softplus};
use crate::convert::{check_finite, check_shape, to_vec_f64};
use crate::error::{OpsError, Result};
use crate::network::{Layer, Network, NetworkConfig};
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// What the last Linear layer's output $z \in \mathbb{R}^o$ becomes.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Head {
    /// $f = z$ (regression means, or logits for a categorical likelihood).
    #[default]
    Plain,
    /// Two outputs, a mean and a scale: $f = (z_0,\ s_{\min} + \operatorname{softplus}(z_1))$,
    /// the heteroscedastic Gaussian $\mathcal N(y \mid \mu, \sigma^2)$ of the malaria
    /// experiment ($s_{\min} = 10^{-5}$ there).
    Heteroscedastic {
        /// The floor $s_{\min}$ added to the scale.
        min_scale: f64,
    },
}

/// Widths, activation and head of an MLP, validated into an [`Mlp`] by
/// [`init`](Self::init) or [`with_params`](Self::with_params).
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Layer widths $h_0$ (inputs), …, $h_L$ (outputs).
    pub widths: Vec<usize>,
    /// Nonlinearity between layers (none after the last).
    pub activation: Activation,
    /// Output head.
    pub head: Head,
}

impl MlpConfig {
    /// An MLP with these widths, tanh activations and a plain head.
    pub fn new(widths: &[usize]) -> Self {
        Self {
            widths: widths.to_vec(),
            activation: Activation::default(),
            head: Head::default(),
        }
    }

    /// Sets the activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the head.
    pub fn with_head(mut self, head: Head) -> Self {
        self.head = head;
        self
    }

    /// The MLP as a [`NetworkConfig`]: PyTorch's `nn.Sequential(Linear, act, …, Linear)`
    /// (then the heteroscedastic head), with the same flat-parameter layout and the same
    /// seeded initialization.
    pub fn network(&self) -> NetworkConfig {
        let mut layers = Vec::with_capacity(2 * self.widths.len());
        for (l, w) in self.widths.windows(2).enumerate() {
            if l > 0 {
                layers.push(Layer::act(self.activation));
            }
            layers.push(Layer::linear(w[0], w[1]));
        }
        if let Head::Heteroscedastic { min_scale } = self.head {
            layers.push(Layer::heteroscedastic(min_scale));
        }
        NetworkConfig::new(&self.widths[..1.min(self.widths.len())], layers)
    }

    /// The MLP a network is, when it is a dense chain: a vector input, Linear layers with
    /// one activation between each two, optionally the heteroscedastic head last.
    pub(crate) fn of_network(network: &NetworkConfig) -> Option<Self> {
        let [d] = network.input[..] else {
            return None;
        };
        let mut widths = vec![d];
        let mut activation = None;
        let mut head = Head::Plain;
        for layer in &network.layers {
            match layer {
                Layer::Linear(l) => widths.push(l.out_features),
                Layer::Act(a) => activation = Some(*a),
                Layer::Heteroscedastic(h) => {
                    head = Head::Heteroscedastic {
                        min_scale: h.min_scale,
                    }
                }
                _ => return None,
            }
        }
        let config = Self {
            widths,
            activation: activation.unwrap_or_default(),
            head,
        };
        // exactly the chain `network` builds: order, widths, one activation, head last
        (config.check().is_ok() && config.network() == *network).then_some(config)
    }

    /// The flat-parameter layout (`state_dict` order).
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::sequential_linear(&self.widths)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.widths.len() < 2 {
            return Err(OpsError::InvalidConfig(
                "an MLP needs at least an input and an output width".into(),
            ));
        }
        if self.widths.contains(&0) {
            return Err(OpsError::InvalidConfig("widths must be positive".into()));
        }
        if let Head::Heteroscedastic { min_scale } = self.head {
            if *self.widths.last().unwrap() != 2 {
                return Err(OpsError::InvalidConfig(
                    "a heteroscedastic head needs 2 outputs (mean, scale)".into(),
                ));
            }
            if !(min_scale >= 0.0 && min_scale.is_finite()) {
                return Err(OpsError::InvalidConfig("min_scale must be >= 0".into()));
            }
        }
        Ok(())
    }

    /// PyTorch's default `nn.Linear` initialization, seeded: weight and bias
    /// uniform on $[-1/\sqrt{h_{\text{in}}},\ 1/\sqrt{h_{\text{in}}}]$.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Mlp<B>> {
        self.check()?;
        let mut rng = SplitMix64::new(seed);
        let mut theta = Vec::with_capacity(self.layout().n_params());
        for w in self.widths.windows(2) {
            let bound = 1.0 / (w[0] as f64).sqrt();
            theta.extend((0..w[0] * w[1] + w[1]).map(|_| rng.uniform_in(-bound, bound)));
        }
        self.with_params(&theta, device)
    }

    /// An MLP holding the flat parameters `theta` (layout: [`layout`](Self::layout)).
    pub fn with_params<B: Backend>(&self, theta: &[f64], device: &B::Device) -> Result<Mlp<B>> {
        self.check()?;
        let p = self.layout().n_params();
        if theta.len() != p {
            return Err(OpsError::ShapeMismatch {
                what: "theta".into(),
                expected: vec![p],
                found: vec![theta.len()],
            });
        }
        let t = crate::convert::tensor1_from_f64::<B>(theta.to_vec(), device);
        Mlp::from_flat_unchecked(self.clone(), t)
    }
}

/// One Linear layer $z = a W^\top + b$, stored as PyTorch does.
#[derive(Clone, Debug)]
pub(crate) struct Dense<B: Backend> {
    /// $W$, shape `[out, in]`.
    pub weight: Tensor<B, 2>,
    /// $b$, shape `[out]`.
    pub bias: Tensor<B, 1>,
}

impl<B: Backend> Dense<B> {
    /// $z = a W^\top + b$ for a batch `a` of shape `[n, in]`.
    pub fn forward(&self, a: Tensor<B, 2>) -> Tensor<B, 2> {
        // A row-major copy of Wᵀ (p entries) makes the big product a plain
        // NN product, which burn-ndarray runs markedly faster than with a
        // transposed view.
        let [out, inp] = self.weight.dims();
        let wt = self.weight.clone().transpose().reshape([inp, out]);
        a.matmul(wt) + self.bias.clone().unsqueeze::<2>()
    }
}

/// A multi-layer perceptron $f(x) = \text{head}(W_L \sigma(\cdots \sigma(W_1 x + b_1) \cdots) + b_L)$
/// on any burn backend.
#[derive(Clone, Debug)]
pub struct Mlp<B: Backend> {
    config: MlpConfig,
    layers: Vec<Dense<B>>,
}

/// Per-layer factors of the Jacobian of an MLP at a batch of $m$ points.
///
/// Row $(i, j)$ of the Jacobian (point $i$, output $j$) restricted to layer
/// $l$ is $\Delta_l\[i, j\] \otimes (a_{l-1}\[i\], 1)$: the weight block is the outer
/// product of the output sensitivity $\Delta_l\[i,j\] = \partial f_j(x_i) / \partial z_l$
/// and the layer's input $a_{l-1}\[i\]$, the bias block is $\Delta_l\[i,j\]$. Every product
/// with $J$ is then one matrix product per layer, and the activations are shared
/// by all columns of a block.
#[derive(Clone, Debug)]
pub(crate) struct Factors<B: Backend> {
    /// $A_l$: the inputs of layer $l$, `[m, h_{l-1}]`.
    pub inputs: Vec<Tensor<B, 2>>,
    /// $\Delta_l$: output sensitivities of layer $l$'s pre-activations, `[m, o, h_l]`.
    pub sens: Vec<Tensor<B, 3>>,
    /// The network outputs $f(X)$, `[m, o]`.
    pub output: Tensor<B, 2>,
}

impl<B: Backend> Factors<B> {
    /// Rows `start..start + len` of every factor.
    pub fn narrow(&self, start: usize, len: usize) -> Self {
        Self {
            inputs: self
                .inputs
                .iter()
                .map(|a| a.clone().narrow(0, start, len))
                .collect(),
            sens: self
                .sens
                .iter()
                .map(|d| d.clone().narrow(0, start, len))
                .collect(),
            output: self.output.clone().narrow(0, start, len),
        }
    }

    /// Number of points $m$.
    pub fn n_points(&self) -> usize {
        self.output.dims()[0]
    }
}

impl<B: Backend> Mlp<B> {
    fn from_flat_unchecked(config: MlpConfig, theta: Tensor<B, 1>) -> Result<Self> {
        let layout = config.layout();
        let specs = layout.specs();
        let layers = specs
            .chunks(2)
            .map(|wb| {
                let (w, b) = (&wb[0], &wb[1]);
                Dense {
                    weight: theta
                        .clone()
                        .narrow(0, w.offset, w.numel())
                        .reshape([w.shape[0], w.shape[1]]),
                    bias: theta.clone().narrow(0, b.offset, b.numel()),
                }
            })
            .collect();
        Ok(Self { config, layers })
    }

    /// An MLP from its configuration and layers (shapes are checked).
    pub(crate) fn from_layers(config: MlpConfig, layers: Vec<Dense<B>>) -> Result<Self> {
        config.check()?;
        if layers.len() != config.widths.len() - 1 {
            return Err(OpsError::InvalidConfig(format!(
                "{} layers for {} widths",
                layers.len(),
                config.widths.len()
            )));
        }
        for (l, (layer, w)) in layers.iter().zip(config.widths.windows(2)).enumerate() {
            check_shape(&layer.weight, [w[1], w[0]], &format!("{}.weight", 2 * l))?;
            check_shape(&layer.bias, [w[1]], &format!("{}.bias", 2 * l))?;
        }
        Ok(Self { config, layers })
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The Linear layers.
    #[cfg(test)]
    pub(crate) fn layers(&self) -> &[Dense<B>] {
        &self.layers
    }

    /// Input dimension $h_0$.
    pub fn n_inputs(&self) -> usize {
        self.config.widths[0]
    }

    /// Output dimension $o = h_L$.
    pub fn n_outputs(&self) -> usize {
        *self.config.widths.last().unwrap()
    }

    /// Number of parameters $p$.
    pub fn n_params(&self) -> usize {
        self.layout().n_params()
    }

    /// The flat-parameter layout.
    pub fn layout(&self) -> ParamLayout {
        self.config.layout()
    }

    /// The device holding the parameters.
    pub fn device(&self) -> B::Device {
        self.layers[0].weight.device()
    }

    /// The flat parameter vector $\theta$ (`state_dict` order).
    pub fn flatten(&self) -> Tensor<B, 1> {
        Tensor::cat(
            self.layers
                .iter()
                .flat_map(|d| [d.weight.clone().reshape([-1]), d.bias.clone()])
                .collect(),
            0,
        )
    }

    /// The flat parameter vector on the host, as `f64`.
    pub fn flatten_f64(&self) -> Vec<f64> {
        // Tensor by tensor: reshaping a weight someone else holds and concatenating copies it
        // element by element on burn-ndarray (about 30 ms for 803k parameters).
        let mut theta = Vec::with_capacity(self.n_params());
        for d in &self.layers {
            theta.extend(to_vec_f64(d.weight.clone()));
            theta.extend(to_vec_f64(d.bias.clone()));
        }
        theta
    }

    /// The same architecture with parameters `theta` (shape `[p]`).
    pub fn with_flat(&self, theta: Tensor<B, 1>) -> Result<Self> {
        check_shape(&theta, [self.n_params()], "theta")?;
        Self::from_flat_unchecked(self.config.clone(), theta)
    }

    /// The same architecture with parameters $\theta + \varepsilon v$.
    pub fn perturbed(&self, v: Tensor<B, 1>, eps: f64) -> Result<Self> {
        check_shape(&v, [self.n_params()], "v")?;
        Self::from_flat_unchecked(self.config.clone(), self.flatten() + v.mul_scalar(eps))
    }

    /// Checks that `x` is a non-empty, finite `[n, h_0]` batch.
    pub fn check_inputs(&self, x: &Tensor<B, 2>, what: &str) -> Result<()> {
        let [n, d] = x.dims();
        if n == 0 {
            return Err(OpsError::Empty {
                what: format!("{what} has no rows"),
            });
        }
        if d != self.n_inputs() {
            return Err(OpsError::ShapeMismatch {
                what: what.to_string(),
                expected: vec![n, self.n_inputs()],
                found: vec![n, d],
            });
        }
        check_finite(x, what)
    }

    /// The network output $f(X)$, `[n, o]` (no checks; see [`output`](Self::output)).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        let mut a = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let z = layer.forward(a);
            a = if l < last {
                self.config.activation.apply(z)
            } else {
                self.head(z).0
            };
        }
        a
    }

    /// The last hidden layer's activations at `x` (`[n, h_{L-1}]`, the inputs of the last
    /// Linear layer; `x` itself for a one-layer network): the features of last-layer
    /// baselines. No checks (see [`check_inputs`](Self::check_inputs)).
    pub fn hidden_features(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers[..last]
            .iter()
            .fold(x, |a, layer| self.config.activation.apply(layer.forward(a)))
    }

    /// The network output $f(X)$ (the GP's prior mean $\mu(X)$), after checking `x`.
    pub fn output(&self, x: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.check_inputs(&x, "X")?;
        Ok(self.forward(x))
    }

    /// The head's output and its elementwise derivative $\partial f_j / \partial z_j$.
    fn head(&self, z: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match self.config.head {
            Head::Plain => {
                let d = z.ones_like();
                (z, d)
            }
            Head::Heteroscedastic { min_scale } => {
                let mean = z.clone().narrow(1, 0, 1);
                let s = z.narrow(1, 1, 1);
                let scale = softplus(s.clone()).add_scalar(min_scale);
                let ds = sigmoid(s);
                (
                    Tensor::cat(vec![mean.clone(), scale], 1),
                    Tensor::cat(vec![mean.ones_like(), ds], 1),
                )
            }
        }
    }

    /// The Jacobian factors $(A_l, \Delta_l)$ and outputs at the batch `x` (no checks).
    ///
    /// Cost: one forward pass and one backward pass per output
    /// ($\approx 2 n p (1 + o)$ flops).
    pub(crate) fn factors(&self, x: Tensor<B, 2>) -> Factors<B> {
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut derivs = Vec::with_capacity(last);
        let mut a = x;
        let mut z_last = None;
        for (l, layer) in self.layers.iter().enumerate() {
            inputs.push(a.clone());
            let z = layer.forward(a.clone());
            if l < last {
                let (a_next, d) = self.config.activation.apply_with_derivative(z);
                derivs.push(d);
                a = a_next;
            } else {
                z_last = Some(z);
            }
        }
        let (output, head_d) = self.head(z_last.expect("at least one layer"));
        let [m, o] = output.dims();
        // Δ_L[i, j, r] = δ_jr ∂f_j/∂z_j(x_i)
        let eye_vals = (0..o * o)
            .map(|q| if q % (o + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let eye =
            crate::convert::tensor_from_f64::<B>(eye_vals, o, o, &output.device()).unsqueeze::<3>();
        let mut delta = eye * head_d.unsqueeze_dim::<3>(1);
        let mut sens = vec![delta.clone()];
        for l in (0..last).rev() {
            // Δ_l = (Δ_{l+1} W_{l+1}) ⊙ σ'(z_l)
            let h = self.config.widths[l + 2];
            let h_prev = self.config.widths[l + 1];
            let back = delta
                .reshape([m * o, h])
                .matmul(self.layers[l + 1].weight.clone())
                .reshape([m, o, h_prev]);
            delta = back * derivs[l].clone().unsqueeze_dim::<3>(1);
            sens.push(delta.clone());
        }
        sens.reverse();
        Factors {
            inputs,
            sens,
            output,
        }
    }
}

impl<B: Backend> From<Mlp<B>> for Network<B> {
    /// The same network, sharing the parameter tensors.
    fn from(mlp: Mlp<B>) -> Self {
        let params = mlp
            .layers
            .iter()
            .flat_map(|l| [l.weight.clone().reshape([-1]), l.bias.clone()])
            .collect();
        Network::from_tensors(mlp.config.network(), params)
            .expect("an MLP's network has its layout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MLP's network is recognized as one; a chain that `network` would not build is not.
    #[test]
    fn dense_chains_are_exactly_the_mlps() {
        let mlp = MlpConfig::new(&[3, 5, 4, 2])
            .with_activation(Activation::Elu)
            .with_head(Head::Heteroscedastic { min_scale: 0.1 });
        assert_eq!(MlpConfig::of_network(&mlp.network()), Some(mlp));
        let chain = |layers| NetworkConfig::new(&[3], layers);
        let not_mlps = [
            // two activations
            chain(vec![
                Layer::linear(3, 5),
                Layer::act(Activation::Tanh),
                Layer::linear(5, 4),
                Layer::act(Activation::Relu),
                Layer::linear(4, 1),
            ]),
            // no activation between Linear layers
            chain(vec![Layer::linear(3, 5), Layer::linear(5, 1)]),
            // an activation last
            chain(vec![Layer::linear(3, 5), Layer::act(Activation::Tanh)]),
            // a norm inside
            chain(vec![
                Layer::linear(3, 5),
                Layer::layer_norm(1e-5),
                Layer::linear(5, 1),
            ]),
        ];
        for cfg in not_mlps {
            assert_eq!(MlpConfig::of_network(&cfg), None, "{cfg:?}");
        }
    }
}
