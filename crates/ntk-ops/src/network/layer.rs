//! The layer trait and the registry of layer kinds.
//!
//! A layer kind is one file in [`layers`](super::layers): a public config struct that
//! compiles itself ([`LayerSpec`]) into a rule ([`LayerRule`]) with the layer's forward
//! pass, its tangent (forward-mode, $\dot y$ from $\dot x$ and $\dot\theta_l$) and adjoint
//! (reverse-mode, $\bar x$ and $\bar\theta_l$ from $\bar y$) rules, its initialization and
//! its memory. [`register_layers!`] lists the kinds once; it generates the public
//! [`Layer`] enum and the dispatch, so adding a kind is one new file and one line there.

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor};

use super::layers::{
    avg_pool, batch_norm, conv2d, flatten, heteroscedastic, layer_norm, linear, max_pool, residual,
};
use super::plan::{Compiler, Node, Site, Values};
use super::shape::Shape;
use crate::error::Result;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// A block of $k$ tangent or cotangent columns over a chunk of $m$ points, carried as one
/// batch of $k m$ (column outer, point inner).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch {
    pub k: usize,
    pub m: usize,
}

/// What a rule reads besides its own arguments.
pub(crate) struct Ctx<'a, B: Backend> {
    pub site: &'a Site,
    pub values: &'a Values<'a, B>,
    pub batch: Batch,
}

/// What a layer keeps from the forward pass for its tangent and adjoint rules.
#[derive(Clone, Debug)]
pub(crate) enum Saved<B: Backend> {
    /// The layer's input (Linear `[m, d]` as `[m, d, 1, 1]`, Conv2d).
    Input(Tensor<B, 4>),
    /// $\sigma'(z)$.
    Derivative(Tensor<B, 4>),
    /// Arg-max of each window, `[m, c, h_o w_o, 1]`.
    ArgMax(Tensor<B, 4, Int>),
    /// $\hat x$ (`[m, …]`) and the per-channel (BatchNorm, `[1, c, 1, 1]`) or
    /// per-point (LayerNorm, `[m, 1, 1, 1]`) $1/\sqrt{v + \epsilon}$.
    Norm(Tensor<B, 4>, Tensor<B, 4>),
    /// Nothing (linear, parameter-free layers).
    Nothing,
    /// A residual body's saved factors.
    Residual(Vec<Saved<B>>),
}

impl<B: Backend> Saved<B> {
    /// The saved layer input (Linear, Conv2d).
    pub fn input(&self) -> &Tensor<B, 4> {
        match self {
            Self::Input(a) => a,
            _ => unreachable!("saved factors match their layer: an input"),
        }
    }

    /// The saved $\hat x$ and $1/\sqrt{v + \epsilon}$ (norms).
    pub fn norm(&self) -> (&Tensor<B, 4>, &Tensor<B, 4>) {
        match self {
            Self::Norm(xhat, inv_std) => (xhat, inv_std),
            _ => unreachable!("saved factors match their layer: a norm"),
        }
    }

    /// The saved arg-maxes (max pooling).
    pub fn arg_max(&self) -> &Tensor<B, 4, Int> {
        match self {
            Self::ArgMax(idx) => idx,
            _ => unreachable!("saved factors match their layer: arg-maxes"),
        }
    }

    /// A residual body's saved factors.
    pub fn body(&self) -> &[Saved<B>] {
        match self {
            Self::Residual(s) => s,
            _ => unreachable!("saved factors match their layer: a residual body"),
        }
    }
}

/// The tangent and the adjoint of an elementwise map, both: `t` times the saved derivative
/// (shared by the $k$ columns).
pub(crate) fn by_derivative<B: Backend>(saved: &Saved<B>, t: Tensor<B, 4>) -> Tensor<B, 4> {
    let Saved::Derivative(d) = saved else {
        unreachable!("an elementwise layer saves its derivative")
    };
    super::tensor::mul_shared(t, d.clone())
}

/// Parameter cotangents accumulated over chunks: one `[k, numel]` block per layout entry.
pub(crate) struct Grads<B: Backend>(pub Vec<Option<Tensor<B, 2>>>);

impl<B: Backend> Grads<B> {
    /// Adds `g` to entry `i`.
    pub fn add(&mut self, i: usize, g: Tensor<B, 2>) {
        self.0[i] = Some(match self.0[i].take() {
            None => g,
            Some(a) => a + g,
        });
    }
}

/// A layer's public configuration, compiled at a point shape.
pub(crate) trait LayerSpec {
    /// Resolves the output shape, registers parameters and buffers under `name`, and
    /// returns the compiled node; a typed error if the layer does not fit `input`.
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node>;
}

/// A compiled layer's passes. Batches are `[m, c, h, w]` (vectors as `[m, d, 1, 1]`).
pub(crate) trait LayerRule {
    /// $y = \phi(x; \theta_l)$, from operations burn-autodiff can differentiate twice (the
    /// generic path runs it too).
    fn forward<B: Backend>(&self, site: &Site, values: &Values<B>, x: Tensor<B, 4>)
    -> Tensor<B, 4>;

    /// $y$ and what the tangent and adjoint rules need.
    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        (self.forward(site, values, x), Saved::Nothing)
    }

    /// $\dot y = \partial_x\phi\,\dot x + \partial_\theta\phi\,\dot\theta_l$ for the $k$
    /// columns (`xdot` `[k m, …]`, `None` for zero; `v` the parameter tangents per layout
    /// entry, `[k, numel]`); `None` when $\dot y = 0$.
    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>>;

    /// Adds $\bar\theta_l = \partial_\theta\phi^\top \bar y$ into `grads` and returns
    /// $\bar x = \partial_x\phi^\top \bar y$, or `None` when `need_input` is false and the
    /// layer can skip it.
    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        grads: &mut Grads<B>,
        need_input: bool,
    ) -> Option<Tensor<B, 4>>;

    /// Appends the layer's initial parameters (PyTorch's defaults) to `theta`.
    fn init(&self, site: &Site, layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
        let _ = (site, layout, rng, theta);
    }

    /// Entries saved per point by [`forward_saving`](Self::forward_saving) (an upper bound).
    fn saved_entries(&self, site: &Site) -> usize {
        site.input.numel() + site.output.numel()
    }

    /// The widest activation per point the rules touch.
    fn widest(&self, site: &Site) -> usize {
        site.input.numel().max(site.output.numel())
    }
}

/// Generates [`Layer`], the compiled [`Op`] and their dispatch from one list of
/// `Variant(Config => Rule)` lines.
macro_rules! register_layers {
    ($( $(#[$doc:meta])* $variant:ident($spec:ty => $rule:ty), )*) => {
        /// One layer of a [`NetworkConfig`](super::NetworkConfig), named after its PyTorch
        /// module; built most easily by its constructor (`Layer::linear(3, 8)`,
        /// `Layer::conv2d(…)`, …).
        #[non_exhaustive]
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Layer {
            $( $(#[$doc])* $variant($spec), )*
        }

        /// A compiled layer's rule.
        #[derive(Clone, Debug)]
        pub(crate) enum Op {
            $( $variant($rule), )*
        }

        $(
            impl From<$spec> for Layer {
                fn from(spec: $spec) -> Self {
                    Self::$variant(spec)
                }
            }
        )*

        impl Layer {
            pub(crate) fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
                match self {
                    $( Self::$variant(l) => LayerSpec::compile(l, c, name, input), )*
                }
            }
        }

        impl Node {
            pub(crate) fn forward<B: Backend>(&self, values: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
                match &self.op {
                    $( Op::$variant(r) => r.forward(&self.site, values, x), )*
                }
            }

            pub(crate) fn forward_saving<B: Backend>(
                &self,
                values: &Values<B>,
                x: Tensor<B, 4>,
            ) -> (Tensor<B, 4>, Saved<B>) {
                match &self.op {
                    $( Op::$variant(r) => r.forward_saving(&self.site, values, x), )*
                }
            }

            pub(crate) fn tangent<B: Backend>(
                &self,
                values: &Values<B>,
                batch: Batch,
                saved: &Saved<B>,
                xdot: Option<Tensor<B, 4>>,
                v: &[Tensor<B, 2>],
            ) -> Option<Tensor<B, 4>> {
                let cx = Ctx { site: &self.site, values, batch };
                match &self.op {
                    $( Op::$variant(r) => r.tangent(&cx, saved, xdot, v), )*
                }
            }

            #[allow(clippy::too_many_arguments)]
            pub(crate) fn adjoint<B: Backend>(
                &self,
                values: &Values<B>,
                batch: Batch,
                saved: &Saved<B>,
                ybar: Tensor<B, 4>,
                grads: &mut Grads<B>,
                need_input: bool,
            ) -> Option<Tensor<B, 4>> {
                let cx = Ctx { site: &self.site, values, batch };
                match &self.op {
                    $( Op::$variant(r) => r.adjoint(&cx, saved, ybar, grads, need_input), )*
                }
            }

            pub(crate) fn init(&self, layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
                match &self.op {
                    $( Op::$variant(r) => r.init(&self.site, layout, rng, theta), )*
                }
            }

            pub(crate) fn saved_entries(&self) -> usize {
                match &self.op {
                    $( Op::$variant(r) => r.saved_entries(&self.site), )*
                }
            }

            pub(crate) fn widest(&self) -> usize {
                match &self.op {
                    $( Op::$variant(r) => r.widest(&self.site), )*
                }
            }
        }
    };
}

register_layers! {
    /// `nn.Linear(in_features, out_features)`.
    Linear(linear::Linear => linear::Linear),
    /// `nn.Conv2d(in, out, kernel, stride, padding, dilation, groups)`.
    Conv2d(conv2d::Conv2d => conv2d::Conv2d),
    /// An elementwise activation (`nn.Tanh()`, `nn.ReLU()`, …).
    Act(crate::activation::Activation => crate::activation::Activation),
    /// `nn.AvgPool2d(kernel)`.
    AvgPool2d(avg_pool::AvgPool2d => avg_pool::AvgPool2d),
    /// `nn.MaxPool2d(kernel)`.
    MaxPool2d(max_pool::MaxPool2d => max_pool::MaxPool2d),
    /// `nn.Flatten()`.
    Flatten(flatten::Flatten => flatten::Flatten),
    /// `nn.BatchNorm2d(channels, eps)` in eval mode.
    BatchNorm2d(batch_norm::BatchNorm2d => batch_norm::BatchNorm2d),
    /// `nn.LayerNorm(shape, eps)` over all of a point's features.
    LayerNorm(layer_norm::LayerNorm => layer_norm::LayerNorm),
    /// A residual block $x \mapsto x + g(x)$.
    Residual(residual::Residual => residual::ResidualBlock),
    /// A mean-and-scale head $(z_0,\ s_{\min} + \operatorname{softplus}(z_1))$.
    Heteroscedastic(heteroscedastic::Heteroscedastic => heteroscedastic::Heteroscedastic),
}

impl Layer {
    /// `nn.Linear(in_features, out_features)`.
    pub fn linear(in_features: usize, out_features: usize) -> Self {
        linear::Linear {
            in_features,
            out_features,
        }
        .into()
    }

    /// `nn.Conv2d(in_channels, out_channels, kernel)`: square kernel, stride 1, no padding,
    /// no dilation, one group; see [`Conv2d`](conv2d::Conv2d)'s builders for the rest.
    pub fn conv2d(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        conv2d::Conv2d::new(in_channels, out_channels, kernel).into()
    }

    /// An elementwise activation.
    pub fn act(activation: crate::activation::Activation) -> Self {
        Self::Act(activation)
    }

    /// `nn.AvgPool2d(kernel)` (stride = kernel).
    pub fn avg_pool2d(kernel: [usize; 2]) -> Self {
        avg_pool::AvgPool2d { kernel }.into()
    }

    /// `nn.MaxPool2d(kernel)` (stride = kernel).
    pub fn max_pool2d(kernel: [usize; 2]) -> Self {
        max_pool::MaxPool2d { kernel }.into()
    }

    /// `nn.Flatten()`.
    pub fn flatten() -> Self {
        Self::Flatten(flatten::Flatten)
    }

    /// `nn.BatchNorm2d(channels, eps=1e-5)` in eval mode.
    pub fn batch_norm2d(channels: usize) -> Self {
        batch_norm::BatchNorm2d {
            channels,
            eps: 1e-5,
        }
        .into()
    }

    /// `nn.LayerNorm(shape, eps)` over all of a point's features.
    pub fn layer_norm(eps: f64) -> Self {
        layer_norm::LayerNorm { eps }.into()
    }

    /// The mean-and-scale head $(z_0,\ s_{\min} + \operatorname{softplus}(z_1))$.
    pub fn heteroscedastic(min_scale: f64) -> Self {
        heteroscedastic::Heteroscedastic { min_scale }.into()
    }

    /// A residual block $x \mapsto x + g(x)$ around `body`.
    pub fn residual(body: Vec<Layer>) -> Self {
        residual::Residual { body }.into()
    }
}
