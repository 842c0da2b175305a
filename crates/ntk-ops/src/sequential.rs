//! Sequential networks of common layers with hand-written (tape-free) forward,
//! tangent ($J v$) and reverse ($J^\top u$) passes in burn tensor operations.
//!
//! A [`SequentialConfig`] lists [`Layer`]s as a PyTorch `nn.Sequential` would:
//! `Linear`, `Conv2d`, elementwise activations, `AvgPool2d` / `MaxPool2d`
//! (kernel = stride, no padding: PyTorch's `nn.AvgPool2d(k)` / `nn.MaxPool2d(k)`),
//! `Flatten`, `BatchNorm2d` in eval mode, `LayerNorm` over all features of a
//! point, and residual blocks $x \mapsto x + g(x)$ around a nested list.
//!
//! # Flat parameters
//!
//! $\theta$ follows PyTorch's `named_parameters()` order, which is the
//! `state_dict` order with the buffers left out: layer $i$ of the sequence
//! contributes `i.weight` then `i.bias` (Linear `[out, in]`, Conv2d
//! `[c_out, c_in, k_h, k_w]`, norms `[c]` or the normalized shape), and a
//! residual block at index $i$ whose body is an `nn.Sequential` attribute `body`
//! contributes `i.body.j.weight`, `i.body.j.bias` for its layers $j$. The
//! running statistics of `BatchNorm2d` (`i.running_mean`, `i.running_var`) are
//! buffers, held by the [`Sequential`] but not part of $\theta$.
//!
//! # Products
//!
//! Every layer $y = \phi(x; \theta_l)$ has a tangent rule
//! $\dot y = \partial_x\phi\, \dot x + \partial_\theta\phi\, \dot\theta_l$ and its adjoint
//! $\bar x = \partial_x\phi^\top \bar y$, $\bar\theta_l = \partial_\theta\phi^\top \bar y$:
//! - Linear $y = x W^\top + b$: $\dot y = \dot x W^\top + x \dot W^\top + \dot b$;
//!   $\bar x = \bar y W$, $\bar W = \bar y^\top x$, $\bar b = \sum \bar y$.
//! - Conv2d $y = W \star x + b$: $\dot y = W \star \dot x + \dot W \star x + \dot b$;
//!   $\bar x$ by the transposed convolution (written as a convolution),
//!   $\bar W$ as one matrix product of $\bar y$ with the input patches (im2col).
//! - Activations: $\dot y = \sigma'(z) \odot \dot z$, $\bar z = \sigma'(z) \odot \bar y$.
//! - Pooling: average pooling is linear; max pooling gathers $\dot x$ at the
//!   arg-max of each window and scatters $\bar y$ back there.
//! - BatchNorm2d (eval): $y = \gamma \hat x + \beta$, $\hat x = (x - \mu)/\sqrt{v + \epsilon}$
//!   with the running $\mu, v$, a per-channel affine map.
//! - LayerNorm: $\hat x = (x - \bar x)/s$, $s = \sqrt{\operatorname{var}(x) + \epsilon}$ over the
//!   point's $D$ features; $\dot{\hat x} = (\dot x - \operatorname{mean}(\dot x) - \hat x\,
//!   \operatorname{mean}(\hat x \odot \dot x))/s$, a self-adjoint map, so
//!   $\bar x = (g - \operatorname{mean}(g) - \hat x\, \operatorname{mean}(\hat x \odot g))/s$ with
//!   $g = \gamma \odot \bar y$.
//! - Residual $y = x + g(x)$: $\dot y = \dot x + \dot g$, $\bar x = \bar y + \bar x_g$.
//!
//! A block of $k$ vectors is carried as one batch of $k m$ tangents (column
//! outer, point inner), so each layer costs a few batched tensor operations;
//! the parameter terms ($x \dot W^\top$, $\dot W \star x$, $\bar W$) contract
//! all $k$ columns in one matrix product or convolution with $k$ times the
//! output channels.

use burn::module::{Module, Param};
use burn::prelude::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use crate::activation::Activation;
use crate::autodiff::{AutodiffJacobian, Nested};
use crate::convert::{check_finite, tensor1_from_f64, zeros};
use crate::error::{OpsError, Result};
use crate::jacobian::{
    JacobianOperator, JacobianOptions, check_output_block, check_param_block, transposed_copy,
};
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// One layer of a [`SequentialConfig`], named after its PyTorch module.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `nn.Linear(in_features, out_features)`; its input must be a vector
    /// (after `Flatten`, another `Linear`, or a vector input).
    Linear {
        /// Input width.
        in_features: usize,
        /// Output width.
        out_features: usize,
    },
    /// `nn.Conv2d(in_channels, out_channels, kernel, stride, padding)` (zero
    /// padding, no dilation, one group).
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel `[k_h, k_w]`.
        kernel: [usize; 2],
        /// Stride `[s_h, s_w]`.
        stride: [usize; 2],
        /// Zero padding `[p_h, p_w]` on both sides, smaller than the kernel.
        padding: [usize; 2],
    },
    /// An elementwise activation.
    Act(Activation),
    /// `nn.AvgPool2d(kernel)`: stride = kernel, no padding, trailing rows and
    /// columns that do not fill a window dropped.
    AvgPool2d {
        /// Window `[k_h, k_w]`.
        kernel: [usize; 2],
    },
    /// `nn.MaxPool2d(kernel)`, with the same geometry as [`Layer::AvgPool2d`].
    MaxPool2d {
        /// Window `[k_h, k_w]`.
        kernel: [usize; 2],
    },
    /// `nn.Flatten()`: `[c, h, w]` to a vector of $c h w$ (row-major).
    Flatten,
    /// `nn.BatchNorm2d(channels, eps)` in eval mode (running statistics).
    BatchNorm2d {
        /// Channels.
        channels: usize,
        /// $\epsilon$ (PyTorch default `1e-5`).
        eps: f64,
    },
    /// `nn.LayerNorm(shape, eps)` over all of a point's features, `shape` the
    /// point's shape at this layer (`[d]` or `[c, h, w]`).
    LayerNorm {
        /// $\epsilon$ (PyTorch default `1e-5`).
        eps: f64,
    },
    /// A residual block $x \mapsto x + g(x)$, $g$ the nested layers (shape-preserving).
    Residual(Vec<Layer>),
}

impl Layer {
    /// `nn.Linear(i, o)`.
    pub fn linear(in_features: usize, out_features: usize) -> Self {
        Self::Linear {
            in_features,
            out_features,
        }
    }

    /// `nn.Conv2d(c_in, c_out, k)`: square kernel, stride 1, no padding.
    pub fn conv2d(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self::Conv2d {
            in_channels,
            out_channels,
            kernel: [kernel; 2],
            stride: [1, 1],
            padding: [0, 0],
        }
    }
}

/// A network: the shape of one input point and the layers.
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialConfig {
    /// One point's shape: `[d]` (vector) or `[c, h, w]` (image). Rows of $X$
    /// hold the point flattened row-major.
    pub input: Vec<usize>,
    /// The layers, in order.
    pub layers: Vec<Layer>,
}

/// A point's shape inside the network: always `[c, h, w]`, vectors as `[d, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    dims: [usize; 3],
    image: bool,
}

impl Shape {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    fn torch(&self) -> Vec<usize> {
        if self.image {
            self.dims.to_vec()
        } else {
            vec![self.dims[0]]
        }
    }
}

/// A layer with its shapes resolved and its parameters located.
#[derive(Clone, Debug)]
struct Node {
    op: Op,
    input: Shape,
    output: Shape,
    /// Index in the layout of the layer's weight (its bias follows).
    param: Option<usize>,
}

#[derive(Clone, Debug)]
enum Op {
    Linear,
    Conv(ConvOptions<2>),
    Act(Activation),
    AvgPool([usize; 2]),
    MaxPool([usize; 2]),
    Flatten,
    /// Index of the running mean in the buffers (the variance follows).
    BatchNorm {
        eps: f64,
        buffer: usize,
    },
    LayerNorm {
        eps: f64,
    },
    Residual(Vec<Node>),
}

/// The compiled structure shared by the fast and the generic paths.
#[derive(Clone, Debug)]
struct Plan {
    nodes: Vec<Node>,
    layout: ParamLayout,
    buffers: ParamLayout,
    input: Shape,
    output: Shape,
}

fn invalid(msg: String) -> OpsError {
    OpsError::InvalidConfig(msg)
}

struct Builder {
    params: Vec<(String, Vec<usize>)>,
    buffers: Vec<(String, Vec<usize>)>,
}

impl Builder {
    fn compile(&mut self, layers: &[Layer], prefix: &str, mut shape: Shape) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let name = format!("{prefix}{i}");
            let first_param = self.params.len();
            let [c, h, w] = shape.dims;
            let (op, output) = match layer {
                Layer::Linear {
                    in_features,
                    out_features,
                } => {
                    if shape.image || c != *in_features {
                        return Err(invalid(format!(
                            "{name}: Linear({in_features}, {out_features}) on input of shape {:?}",
                            shape.torch()
                        )));
                    }
                    if *out_features == 0 {
                        return Err(invalid(format!("{name}: Linear with no outputs")));
                    }
                    self.push_affine(
                        &name,
                        vec![*out_features, *in_features],
                        vec![*out_features],
                    );
                    (
                        Op::Linear,
                        Shape {
                            dims: [*out_features, 1, 1],
                            image: false,
                        },
                    )
                }
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    if !shape.image || c != *in_channels {
                        return Err(invalid(format!(
                            "{name}: Conv2d({in_channels}, {out_channels}) on input of shape {:?}",
                            shape.torch()
                        )));
                    }
                    let out = |size: usize, d: usize| {
                        (size + 2 * padding[d])
                            .checked_sub(kernel[d])
                            .filter(|_| kernel[d] > 0 && stride[d] > 0)
                            .map(|s| s / stride[d] + 1)
                    };
                    let (Some(ho), Some(wo)) = (out(h, 0), out(w, 1)) else {
                        return Err(invalid(format!(
                            "{name}: kernel {kernel:?} / stride {stride:?} do not fit input {:?}",
                            shape.torch()
                        )));
                    };
                    if *out_channels == 0 {
                        return Err(invalid(format!("{name}: Conv2d with no output channels")));
                    }
                    if padding[0] >= kernel[0] || padding[1] >= kernel[1] {
                        return Err(invalid(format!(
                            "{name}: padding {padding:?} must be smaller than the kernel {kernel:?}"
                        )));
                    }
                    self.push_affine(
                        &name,
                        vec![*out_channels, *in_channels, kernel[0], kernel[1]],
                        vec![*out_channels],
                    );
                    (
                        Op::Conv(ConvOptions::new(*stride, *padding, [1, 1], 1)),
                        Shape {
                            dims: [*out_channels, ho, wo],
                            image: true,
                        },
                    )
                }
                Layer::Act(a) => (Op::Act(*a), shape),
                Layer::AvgPool2d { kernel } | Layer::MaxPool2d { kernel } => {
                    let (ho, wo) = (
                        h.checked_div(kernel[0]).unwrap_or(0),
                        w.checked_div(kernel[1]).unwrap_or(0),
                    );
                    if !shape.image || ho == 0 || wo == 0 {
                        return Err(invalid(format!(
                            "{name}: pooling window {kernel:?} on input of shape {:?}",
                            shape.torch()
                        )));
                    }
                    let op = if matches!(layer, Layer::AvgPool2d { .. }) {
                        Op::AvgPool(*kernel)
                    } else {
                        Op::MaxPool(*kernel)
                    };
                    (
                        op,
                        Shape {
                            dims: [c, ho, wo],
                            image: true,
                        },
                    )
                }
                Layer::Flatten => (
                    Op::Flatten,
                    Shape {
                        dims: [shape.numel(), 1, 1],
                        image: false,
                    },
                ),
                Layer::BatchNorm2d { channels, eps } => {
                    if !shape.image || c != *channels || *eps <= 0.0 {
                        return Err(invalid(format!(
                            "{name}: BatchNorm2d({channels}, eps = {eps}) on input of shape {:?}",
                            shape.torch()
                        )));
                    }
                    self.push_affine(&name, vec![c], vec![c]);
                    let buffer = self.buffers.len();
                    self.buffers.push((format!("{name}.running_mean"), vec![c]));
                    self.buffers.push((format!("{name}.running_var"), vec![c]));
                    (Op::BatchNorm { eps: *eps, buffer }, shape)
                }
                Layer::LayerNorm { eps } => {
                    if *eps <= 0.0 {
                        return Err(invalid(format!("{name}: LayerNorm eps = {eps}")));
                    }
                    self.push_affine(&name, shape.torch(), shape.torch());
                    (Op::LayerNorm { eps: *eps }, shape)
                }
                Layer::Residual(body) => {
                    let inner = self.compile(body, &format!("{name}.body."), shape)?;
                    let out = inner.last().map_or(shape, |n| n.output);
                    if out != shape {
                        return Err(invalid(format!(
                            "{name}: residual body maps {:?} to {:?}",
                            shape.torch(),
                            out.torch()
                        )));
                    }
                    (Op::Residual(inner), shape)
                }
            };
            let has_param = self.params.len() > first_param && !matches!(op, Op::Residual(_));
            nodes.push(Node {
                op,
                input: shape,
                output,
                param: has_param.then_some(first_param),
            });
            shape = output;
        }
        Ok(nodes)
    }

    fn push_affine(&mut self, name: &str, weight: Vec<usize>, bias: Vec<usize>) {
        self.params.push((format!("{name}.weight"), weight));
        self.params.push((format!("{name}.bias"), bias));
    }
}

impl SequentialConfig {
    /// A network on points of shape `input` (`[d]` or `[c, h, w]`).
    pub fn new(input: &[usize], layers: Vec<Layer>) -> Self {
        Self {
            input: input.to_vec(),
            layers,
        }
    }

    fn plan(&self) -> Result<Plan> {
        let input = match self.input[..] {
            [d] => Shape {
                dims: [d, 1, 1],
                image: false,
            },
            [c, h, w] => Shape {
                dims: [c, h, w],
                image: true,
            },
            _ => {
                return Err(invalid(format!(
                    "input shape {:?}: expected [d] or [c, h, w]",
                    self.input
                )));
            }
        };
        if input.numel() == 0 {
            return Err(invalid("input shape has a zero dimension".into()));
        }
        let mut b = Builder {
            params: Vec::new(),
            buffers: Vec::new(),
        };
        let nodes = b.compile(&self.layers, "", input)?;
        if b.params.is_empty() {
            return Err(invalid("the network has no parameters".into()));
        }
        let output = nodes.last().map_or(input, |n| n.output);
        Ok(Plan {
            nodes,
            layout: ParamLayout::new(b.params),
            buffers: ParamLayout::new(b.buffers),
            input,
            output,
        })
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
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Sequential<B>> {
        let plan = self.plan()?;
        let mut rng = SplitMix64::new(seed);
        let mut theta = Vec::with_capacity(plan.layout.n_params());
        init_nodes(&plan.nodes, &plan.layout, &mut rng, &mut theta);
        let buffers = running_defaults(&plan.buffers);
        self.with_params(&theta, &buffers, device)
    }

    /// A network holding the flat parameters `theta` and buffers `buffers`
    /// (in [`buffer_layout`](Self::buffer_layout) order; empty without BatchNorm).
    pub fn with_params<B: Backend>(
        &self,
        theta: &[f64],
        buffers: &[f64],
        device: &B::Device,
    ) -> Result<Sequential<B>> {
        let plan = self.plan()?;
        let (params, buffers) = plan.split_values::<B>(theta, buffers, device)?;
        Ok(Sequential {
            config: self.clone(),
            plan,
            params,
            buffers,
        })
    }
}

fn init_nodes(nodes: &[Node], layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
    for node in nodes {
        match (&node.op, node.param) {
            (Op::Residual(inner), _) => init_nodes(inner, layout, rng, theta),
            (Op::Linear | Op::Conv(_), Some(i)) => {
                let w = &layout.specs()[i];
                let fan_in: usize = w.shape[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                let count = w.numel() + layout.specs()[i + 1].numel();
                theta.extend((0..count).map(|_| rng.uniform_in(-bound, bound)));
            }
            (Op::BatchNorm { .. } | Op::LayerNorm { .. }, Some(i)) => {
                let w = &layout.specs()[i];
                theta.extend(std::iter::repeat_n(1.0, w.numel()));
                theta.extend(std::iter::repeat_n(0.0, w.numel()));
            }
            _ => {}
        }
    }
}

/// Running means $0$, variances $1$.
fn running_defaults(buffers: &ParamLayout) -> Vec<f64> {
    buffers
        .specs()
        .iter()
        .flat_map(|s| {
            let v = if s.name.ends_with("running_var") {
                1.0
            } else {
                0.0
            };
            std::iter::repeat_n(v, s.numel())
        })
        .collect()
}

impl Plan {
    /// Host values split into one flat tensor per layout entry.
    #[allow(clippy::type_complexity)]
    fn split_values<B: Backend>(
        &self,
        theta: &[f64],
        buffers: &[f64],
        device: &B::Device,
    ) -> Result<(Vec<Tensor<B, 1>>, Vec<Tensor<B, 1>>)> {
        let split = |vals: &[f64], layout: &ParamLayout, what: &str| {
            if vals.len() != layout.n_params() {
                return Err(OpsError::ShapeMismatch {
                    what: what.into(),
                    expected: vec![layout.n_params()],
                    found: vec![vals.len()],
                });
            }
            Ok(layout
                .specs()
                .iter()
                .map(|s| {
                    tensor1_from_f64::<B>(vals[s.offset..s.offset + s.numel()].to_vec(), device)
                })
                .collect::<Vec<_>>())
        };
        let params = split(theta, &self.layout, "theta")?;
        let bufs = split(buffers, &self.buffers, "buffers")?;
        if buffers.iter().any(|b| !b.is_finite())
            || self.buffers.specs().iter().any(|s| {
                s.name.ends_with("running_var")
                    && buffers[s.offset..s.offset + s.numel()]
                        .iter()
                        .any(|v| *v < 0.0)
            })
        {
            return Err(invalid(
                "running statistics must be finite, variances non-negative".into(),
            ));
        }
        Ok((params, bufs))
    }
}

/// A [`SequentialConfig`] with parameter and buffer values on a device.
#[derive(Clone, Debug)]
pub struct Sequential<B: Backend> {
    config: SequentialConfig,
    plan: Plan,
    params: Vec<Tensor<B, 1>>,
    buffers: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Sequential<B> {
    /// The configuration.
    pub fn config(&self) -> &SequentialConfig {
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

    /// $\theta$ as one vector.
    pub fn flatten(&self) -> Tensor<B, 1> {
        Tensor::cat(self.params.clone(), 0)
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
        let dev = self.params[0].device();
        let theta = crate::convert::to_vec_f64(self.flatten());
        self.config.with_params(&theta, buffers, &dev)
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

    /// $f(X)$, `[n, o]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        forward_plain(&self.plan, &self.params, &self.buffers, x)
    }

    /// The tape-free Jacobian at inputs `x` (`[n, n_inputs]`).
    pub fn jacobian(
        &self,
        x: Tensor<B, 2>,
        options: JacobianOptions,
    ) -> Result<SequentialJacobian<B>> {
        SequentialJacobian::new(self.clone(), x, options)
    }

    /// The generic-path (autodiff) Jacobian of the same network, the test oracle.
    pub fn generic_jacobian(&self, x: Tensor<B, 2>) -> Result<GenericSequentialJacobian<B>> {
        self.check_inputs(&x, "X")?;
        let dev = x.device();
        let module = SequentialModule::<Nested<B>> {
            params: self
                .params
                .iter()
                .map(|p| {
                    Param::from_tensor(Tensor::from_data(
                        p.to_data(),
                        crate::convert::float_opts::<Nested<B>>(&dev),
                    ))
                })
                .collect(),
            buffers: self.buffers_flat(),
            config: self.config.clone(),
        };
        AutodiffJacobian::new(module, SequentialModule::forward as fn(&_, _) -> _, x)
    }
}

/// The generic-path Jacobian type of a [`Sequential`] (see
/// [`Sequential::generic_jacobian`]).
pub type GenericSequentialJacobian<B> = AutodiffJacobian<
    B,
    SequentialModule<Nested<B>>,
    fn(&SequentialModule<Nested<B>>, Tensor<Nested<B>, 2>) -> Tensor<Nested<B>, 2>,
>;

/// A [`Sequential`] as a burn [`Module`] (parameters visited in layout
/// order), for the generic autodiff path.
#[derive(Module, Debug)]
pub struct SequentialModule<B: Backend> {
    params: Vec<Param<Tensor<B, 1>>>,
    #[module(skip)]
    buffers: Vec<f64>,
    #[module(skip)]
    config: SequentialConfig,
}

impl<B: Backend> SequentialModule<B> {
    /// $f(X)$, `[n, o]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let plan = self
            .config
            .plan()
            .expect("validated when the module was built");
        let params: Vec<_> = self.params.iter().map(|p| p.val()).collect();
        let dev = x.device();
        let buffers: Vec<_> = plan
            .buffers
            .specs()
            .iter()
            .map(|s| {
                tensor1_from_f64::<B>(self.buffers[s.offset..s.offset + s.numel()].to_vec(), &dev)
            })
            .collect();
        forward_plain(&plan, &params, &buffers, x)
    }
}

// ---------------------------------------------------------------------------
// Shared tensor helpers.

fn dims4(s: Shape, m: usize) -> [usize; 4] {
    [m, s.dims[0], s.dims[1], s.dims[2]]
}

/// `t` (`[k·m, …]`) times `d` (`[m, …]`), `d` shared by the $k$ columns.
fn mul_shared<B: Backend>(t: Tensor<B, 4>, d: Tensor<B, 4>) -> Tensor<B, 4> {
    let dims = t.dims();
    let [m, c, h, w] = d.dims();
    let k = dims[0] / m;
    (t.reshape([k, m, c * h * w]) * d.reshape([1, m, c * h * w])).reshape(dims)
}

/// A weight tensor of shape `shape` from a flat one.
fn shaped<B: Backend, const D: usize>(t: &Tensor<B, 1>, shape: &[usize]) -> Tensor<B, D> {
    let dims: [usize; D] = shape.try_into().expect("weight rank");
    t.clone().reshape(dims)
}

/// Windows of a `kernel`-pooling (stride = kernel) as `[m, c, h_o w_o, k_h k_w]`.
fn windows<B: Backend>(x: Tensor<B, 4>, kernel: [usize; 2], out: Shape) -> Tensor<B, 4> {
    let [m, c, _, _] = x.dims();
    let [_, ho, wo] = out.dims;
    let [kh, kw] = kernel;
    x.narrow(2, 0, ho * kh)
        .narrow(3, 0, wo * kw)
        .reshape([m, c, ho, kh, wo, kw])
        .permute([0, 1, 2, 4, 3, 5])
        .reshape([m, c, ho * wo, kh * kw])
}

/// The adjoint of [`windows`]: `[m, c, h_o w_o, k_h k_w]` back to `[m, c, h, w]`,
/// zeros where no window reached.
fn unwindows<B: Backend>(
    t: Tensor<B, 4>,
    kernel: [usize; 2],
    input: Shape,
    out: Shape,
) -> Tensor<B, 4> {
    let [m, c, _, _] = t.dims();
    let [_, h, w] = input.dims;
    let [_, ho, wo] = out.dims;
    let [kh, kw] = kernel;
    let t = t
        .reshape([m, c, ho, wo, kh, kw])
        .permute([0, 1, 2, 4, 3, 5])
        .reshape([m, c, ho * kh, wo * kw]);
    pad_zeros(t, (0, w - wo * kw, 0, h - ho * kh))
}

/// Zero padding of the last two axes by `(left, right, top, bottom)`, in the
/// backend's float type (burn 0.21's `Tensor::pad` creates its fill with the
/// device's default dtype, which leaks `f64` into an `f32` run).
fn pad_zeros<B: Backend>(
    t: Tensor<B, 4>,
    (left, right, top, bottom): (usize, usize, usize, usize),
) -> Tensor<B, 4> {
    if left + right + top + bottom == 0 {
        return t;
    }
    let [a, b, h, w] = t.dims();
    zeros::<B, 4>([a, b, h + top + bottom, w + left + right], &t.device())
        .slice_assign([0..a, 0..b, top..top + h, left..left + w], t)
}

fn avg_pool<B: Backend>(x: Tensor<B, 4>, kernel: [usize; 2], out: Shape) -> Tensor<B, 4> {
    let [m, c, _, _] = x.dims();
    let [_, ho, wo] = out.dims;
    windows(x, kernel, out).mean_dim(3).reshape([m, c, ho, wo])
}

/// Per-point mean over the features of `[m, D]`, `[m, 1]`.
fn layer_stats<B: Backend>(x: Tensor<B, 2>, eps: f64) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let mean = x.clone().mean_dim(1);
    let centered = x - mean;
    let inv_std = centered
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    (centered * inv_std.clone(), inv_std)
}

/// The forward pass alone, built from operations burn-autodiff can
/// differentiate twice (so it also serves the generic path).
fn forward_plain<B: Backend>(
    plan: &Plan,
    params: &[Tensor<B, 1>],
    buffers: &[Tensor<B, 1>],
    x: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let m = x.dims()[0];
    let y = forward_nodes_plain(
        &plan.nodes,
        &plan.layout,
        params,
        buffers,
        x.reshape(dims4(plan.input, m)),
    );
    y.reshape([m, plan.output.numel()])
}

fn forward_nodes_plain<B: Backend>(
    nodes: &[Node],
    layout: &ParamLayout,
    params: &[Tensor<B, 1>],
    buffers: &[Tensor<B, 1>],
    mut a: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let m = a.dims()[0];
    for node in nodes {
        let wb = |i: usize| (&params[i], &layout.specs()[i].shape);
        a = match &node.op {
            Op::Linear => {
                let (w, s) = wb(node.param.expect("linear weight"));
                let b = &params[node.param.unwrap() + 1];
                let z = a
                    .reshape([m, node.input.dims[0]])
                    .matmul(shaped::<B, 2>(w, s).transpose())
                    + b.clone().unsqueeze::<2>();
                z.reshape(dims4(node.output, m))
            }
            Op::Conv(opts) => {
                let (w, s) = wb(node.param.expect("conv weight"));
                let b = params[node.param.unwrap() + 1].clone();
                burn::tensor::module::conv2d(a, shaped::<B, 4>(w, s), Some(b), opts.clone())
            }
            Op::Act(act) => act.apply(a),
            Op::AvgPool(kernel) => avg_pool(a, *kernel, node.output),
            Op::MaxPool(kernel) => {
                let [_, c, ho, wo] = dims4(node.output, m);
                windows(a, *kernel, node.output)
                    .max_dim(3)
                    .reshape([m, c, ho, wo])
            }
            Op::Flatten => a.reshape(dims4(node.output, m)),
            Op::BatchNorm { eps, buffer } => {
                let i = node.param.expect("norm weight");
                let c = node.input.dims[0];
                let ch = |t: &Tensor<B, 1>| t.clone().reshape([1, c, 1, 1]);
                let inv_std = ch(&buffers[buffer + 1]).add_scalar(*eps).sqrt().recip();
                (a - ch(&buffers[*buffer])) * inv_std * ch(&params[i]) + ch(&params[i + 1])
            }
            Op::LayerNorm { eps } => {
                let i = node.param.expect("norm weight");
                let d = node.input.numel();
                let (xhat, _) = layer_stats(a.reshape([m, d]), *eps);
                let y =
                    xhat * params[i].clone().unsqueeze::<2>() + params[i + 1].clone().unsqueeze();
                y.reshape(dims4(node.output, m))
            }
            Op::Residual(inner) => {
                a.clone() + forward_nodes_plain(inner, layout, params, buffers, a)
            }
        };
    }
    a
}

// ---------------------------------------------------------------------------
// The fast path: forward with saved factors, tangent and reverse passes.

/// What a layer keeps from the forward pass for its tangent and reverse rules.
#[derive(Clone, Debug)]
enum Saved<B: Backend> {
    /// The layer's input (Linear `[m, d]` as `[m, d, 1, 1]`, Conv2d).
    Input(Tensor<B, 4>),
    /// $\sigma'(z)$.
    Derivative(Tensor<B, 4>),
    /// Arg-max of each window, `[m, c, h_o w_o, 1]`.
    ArgMax(Tensor<B, 4, Int>),
    /// $\hat x$ (`[m, …]`) and the per-channel (BatchNorm, `[1, c, 1, 1]`) or
    /// per-point (LayerNorm, `[m, 1, 1, 1]`) $1/\sqrt{v + \epsilon}$.
    Norm(Tensor<B, 4>, Tensor<B, 4>),
    Nothing,
    Residual(Vec<Saved<B>>),
}

/// The saved factors of one chunk of points, and its outputs `[m, o]`.
#[derive(Clone, Debug)]
struct Tape<B: Backend> {
    saved: Vec<Saved<B>>,
    output: Tensor<B, 2>,
    m: usize,
}

impl<B: Backend> Sequential<B> {
    fn tape(&self, x: Tensor<B, 2>) -> Tape<B> {
        let m = x.dims()[0];
        let (y, saved) =
            self.forward_saving(&self.plan.nodes, x.reshape(dims4(self.plan.input, m)));
        Tape {
            saved,
            output: y.reshape([m, self.plan.output.numel()]),
            m,
        }
    }

    fn forward_saving(&self, nodes: &[Node], mut a: Tensor<B, 4>) -> (Tensor<B, 4>, Vec<Saved<B>>) {
        let m = a.dims()[0];
        let layout = &self.plan.layout;
        let mut saved = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (y, s) = match &node.op {
                Op::Linear | Op::Conv(_) => {
                    let y = forward_nodes_plain(
                        std::slice::from_ref(node),
                        layout,
                        &self.params,
                        &self.buffers,
                        a.clone(),
                    );
                    (y, Saved::Input(a))
                }
                Op::Act(act) => {
                    let (y, d) = act.apply_with_derivative(a);
                    (y, Saved::Derivative(d))
                }
                Op::AvgPool(kernel) => (avg_pool(a, *kernel, node.output), Saved::Nothing),
                Op::MaxPool(kernel) => {
                    let [_, c, ho, wo] = dims4(node.output, m);
                    let (y, idx) = windows(a, *kernel, node.output).max_dim_with_indices(3);
                    (y.reshape([m, c, ho, wo]), Saved::ArgMax(idx))
                }
                Op::Flatten => (a.reshape(dims4(node.output, m)), Saved::Nothing),
                Op::BatchNorm { eps, buffer } => {
                    let i = node.param.expect("norm weight");
                    let c = node.input.dims[0];
                    let ch = |t: &Tensor<B, 1>| t.clone().reshape([1, c, 1, 1]);
                    let inv_std = ch(&self.buffers[buffer + 1])
                        .add_scalar(*eps)
                        .sqrt()
                        .recip();
                    let xhat = (a - ch(&self.buffers[*buffer])) * inv_std.clone();
                    let y = xhat.clone() * ch(&self.params[i]) + ch(&self.params[i + 1]);
                    (y, Saved::Norm(xhat, inv_std))
                }
                Op::LayerNorm { eps } => {
                    let i = node.param.expect("norm weight");
                    let d = node.input.numel();
                    let (xhat, inv_std) = layer_stats(a.reshape([m, d]), *eps);
                    let y = xhat.clone() * self.params[i].clone().unsqueeze::<2>()
                        + self.params[i + 1].clone().unsqueeze();
                    (
                        y.reshape(dims4(node.output, m)),
                        Saved::Norm(
                            xhat.reshape(dims4(node.input, m)),
                            inv_std.reshape([m, 1, 1, 1]),
                        ),
                    )
                }
                Op::Residual(inner) => {
                    let (g, s) = self.forward_saving(inner, a.clone());
                    (a + g, Saved::Residual(s))
                }
            };
            saved.push(s);
            a = y;
        }
        (a, saved)
    }

    /// Tangent of the nodes' output for input tangent `xdot` (`None` = zero)
    /// and parameter tangents `v` (per layout entry, `[k, numel]`).
    fn tangent(
        &self,
        nodes: &[Node],
        saved: &[Saved<B>],
        mut xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
        k: usize,
        m: usize,
    ) -> Option<Tensor<B, 4>> {
        let specs = self.plan.layout.specs();
        for (node, s) in nodes.iter().zip(saved) {
            xdot =
                match (&node.op, s) {
                    (Op::Linear, Saved::Input(a)) => {
                        let i = node.param.expect("linear weight");
                        let (o, d) = (node.output.dims[0], node.input.dims[0]);
                        let w = shaped::<B, 2>(&self.params[i], &specs[i].shape);
                        // x Ẇ_cᵀ for all columns at once: [m, d] × [d, k·o]
                        let wdot = v[i].clone().reshape([k * o, d]);
                        let mut z = a
                            .clone()
                            .reshape([m, d])
                            .matmul(transposed_copy(wdot))
                            .reshape([m, k, o])
                            .swap_dims(0, 1)
                            + v[i + 1].clone().reshape([k, 1, o]);
                        if let Some(t) = xdot {
                            z = z + t
                                .reshape([k * m, d])
                                .matmul(w.transpose())
                                .reshape([k, m, o]);
                        }
                        Some(z.reshape([k * m, o, 1, 1]))
                    }
                    (Op::Conv(opts), Saved::Input(a)) => {
                        let i = node.param.expect("conv weight");
                        let ws = &specs[i].shape;
                        let [_, co, ho, wo] = dims4(node.output, m);
                        let wdot = v[i].clone().reshape([k * co, ws[1], ws[2], ws[3]]);
                        let mut z =
                            burn::tensor::module::conv2d(a.clone(), wdot, None, opts.clone())
                                .reshape([m, k, co, ho * wo])
                                .swap_dims(0, 1)
                                + v[i + 1].clone().reshape([k, 1, co, 1]);
                        if let Some(t) = xdot {
                            let w = shaped::<B, 4>(&self.params[i], ws);
                            z = z + burn::tensor::module::conv2d(t, w, None, opts.clone())
                                .reshape([k, m, co, ho * wo]);
                        }
                        Some(z.reshape([k * m, co, ho, wo]))
                    }
                    (Op::Act(_), Saved::Derivative(d)) => xdot.map(|t| mul_shared(t, d.clone())),
                    (Op::AvgPool(kernel), _) => xdot.map(|t| avg_pool(t, *kernel, node.output)),
                    (Op::MaxPool(kernel), Saved::ArgMax(idx)) => xdot.map(|t| {
                        windows(t, *kernel, node.output)
                            .gather(3, idx.clone().repeat_dim(0, k))
                            .reshape(dims4(node.output, k * m))
                    }),
                    (Op::Flatten, _) => xdot.map(|t| t.reshape(dims4(node.output, k * m))),
                    (Op::BatchNorm { .. }, Saved::Norm(xhat, inv_std)) => {
                        let i = node.param.expect("norm weight");
                        let [_, c, h, w] = dims4(node.input, m);
                        let mut z = xhat.clone().reshape([1, m, c, h * w])
                            * v[i].clone().reshape([k, 1, c, 1])
                            + v[i + 1].clone().reshape([k, 1, c, 1]);
                        if let Some(t) = xdot {
                            let scale =
                                inv_std.clone() * self.params[i].clone().reshape([1, c, 1, 1]);
                            z = z + (t * scale).reshape([k, m, c, h * w]);
                        }
                        Some(z.reshape([k * m, c, h, w]))
                    }
                    (Op::LayerNorm { .. }, Saved::Norm(xhat, inv_std)) => {
                        let i = node.param.expect("norm weight");
                        let d = node.input.numel();
                        let xhat = xhat.clone().reshape([1, m, d]);
                        let mut z = xhat.clone() * v[i].clone().reshape([k, 1, d])
                            + v[i + 1].clone().reshape([k, 1, d]);
                        if let Some(t) = xdot {
                            let t = t.reshape([k, m, d]);
                            let proj = t.clone()
                                - t.clone().mean_dim(2)
                                - xhat.clone() * (xhat * t).mean_dim(2);
                            let gamma = self.params[i].clone().reshape([1, 1, d]);
                            z = z + proj * inv_std.clone().reshape([1, m, 1]) * gamma;
                        }
                        Some(z.reshape(dims4(node.output, k * m)))
                    }
                    (Op::Residual(inner), Saved::Residual(s)) => {
                        let g = self.tangent(inner, s, xdot.clone(), v, k, m);
                        match (xdot, g) {
                            (Some(a), Some(b)) => Some(a + b),
                            (a, b) => a.or(b),
                        }
                    }
                    _ => unreachable!("saved factors match their layer"),
                };
        }
        xdot
    }

    /// Reverse pass: accumulates $\bar\theta$ (per layout entry, `[k, numel]`)
    /// into `grads` and returns $\bar x$ when `need_input`.
    #[allow(clippy::too_many_arguments)]
    fn reverse(
        &self,
        nodes: &[Node],
        saved: &[Saved<B>],
        mut ybar: Tensor<B, 4>,
        grads: &mut [Option<Tensor<B, 2>>],
        k: usize,
        m: usize,
        need_input: bool,
    ) -> Option<Tensor<B, 4>> {
        let specs = self.plan.layout.specs();
        let add = |grads: &mut [Option<Tensor<B, 2>>], i: usize, g: Tensor<B, 2>| {
            grads[i] = Some(match grads[i].take() {
                None => g,
                Some(a) => a + g,
            });
        };
        for (pos, (node, s)) in nodes.iter().zip(saved).enumerate().rev() {
            let input_needed = need_input || pos > 0;
            ybar = match (&node.op, s) {
                (Op::Linear, Saved::Input(a)) => {
                    let i = node.param.expect("linear weight");
                    let (o, d) = (node.output.dims[0], node.input.dims[0]);
                    let y3 = ybar.reshape([k, m, o]);
                    // W̄_c = ȳ_cᵀ a, all columns in one product: [k·o, m] × [m, d]
                    let yt = y3.clone().swap_dims(1, 2).reshape([k * o, m]);
                    add(
                        grads,
                        i,
                        yt.matmul(a.clone().reshape([m, d])).reshape([k, o * d]),
                    );
                    add(grads, i + 1, y3.clone().sum_dim(1).reshape([k, o]));
                    if !input_needed {
                        return None;
                    }
                    let w = shaped::<B, 2>(&self.params[i], &specs[i].shape);
                    y3.reshape([k * m, o]).matmul(w).reshape([k * m, d, 1, 1])
                }
                (Op::Conv(opts), Saved::Input(a)) => {
                    let i = node.param.expect("conv weight");
                    let ws = &specs[i].shape;
                    let [_, co, ho, wo] = dims4(node.output, m);
                    let y5 = ybar.clone().reshape([k, m, co, ho * wo]);
                    add(
                        grads,
                        i + 1,
                        y5.clone().sum_dim(3).sum_dim(1).reshape([k, co]),
                    );
                    // W̄_c = Σ_points ȳ_c × patches(a), all columns in one matrix product
                    let yt = y5.permute([0, 2, 1, 3]).reshape([k * co, m * ho * wo]);
                    let gw = yt.matmul(patches(a.clone(), [ws[2], ws[3]], opts, node.output));
                    add(grads, i, gw.reshape([k, co * ws[1] * ws[2] * ws[3]]));
                    if !input_needed {
                        return None;
                    }
                    let w = shaped::<B, 4>(&self.params[i], ws);
                    conv_input_grad(ybar, w, opts, node.input)
                }
                (Op::Act(_), Saved::Derivative(d)) => mul_shared(ybar, d.clone()),
                (Op::AvgPool(kernel), _) => {
                    let [_, c, ho, wo] = dims4(node.output, k * m);
                    let [kh, kw] = *kernel;
                    let spread = ybar
                        .reshape([k * m, c, ho * wo, 1])
                        .div_scalar((kh * kw) as f64)
                        .repeat_dim(3, kh * kw);
                    unwindows(spread, *kernel, node.input, node.output)
                }
                (Op::MaxPool(kernel), Saved::ArgMax(idx)) => {
                    let [_, c, ho, wo] = dims4(node.output, k * m);
                    let [kh, kw] = *kernel;
                    let z = zeros::<B, 4>([k * m, c, ho * wo, kh * kw], &ybar.device()).scatter(
                        3,
                        idx.clone().repeat_dim(0, k),
                        ybar.reshape([k * m, c, ho * wo, 1]),
                        IndexingUpdateOp::Add,
                    );
                    unwindows(z, *kernel, node.input, node.output)
                }
                (Op::Flatten, _) => ybar.reshape(dims4(node.input, k * m)),
                (Op::BatchNorm { .. }, Saved::Norm(xhat, inv_std)) => {
                    let i = node.param.expect("norm weight");
                    let [_, c, h, w] = dims4(node.input, m);
                    let y4 = ybar.clone().reshape([k, m, c, h * w]);
                    let gg = (y4.clone() * xhat.clone().reshape([1, m, c, h * w]))
                        .sum_dim(3)
                        .sum_dim(1);
                    add(grads, i, gg.reshape([k, c]));
                    add(grads, i + 1, y4.sum_dim(3).sum_dim(1).reshape([k, c]));
                    let scale = inv_std.clone() * self.params[i].clone().reshape([1, c, 1, 1]);
                    ybar * scale
                }
                (Op::LayerNorm { .. }, Saved::Norm(xhat, inv_std)) => {
                    let i = node.param.expect("norm weight");
                    let d = node.input.numel();
                    let y3 = ybar.reshape([k, m, d]);
                    let xhat = xhat.clone().reshape([1, m, d]);
                    add(
                        grads,
                        i,
                        (y3.clone() * xhat.clone()).sum_dim(1).reshape([k, d]),
                    );
                    add(grads, i + 1, y3.clone().sum_dim(1).reshape([k, d]));
                    let g = y3 * self.params[i].clone().reshape([1, 1, d]);
                    let proj =
                        g.clone() - g.clone().mean_dim(2) - xhat.clone() * (xhat * g).mean_dim(2);
                    (proj * inv_std.clone().reshape([1, m, 1])).reshape(dims4(node.input, k * m))
                }
                (Op::Residual(inner), Saved::Residual(s)) => {
                    match self.reverse(inner, s, ybar.clone(), grads, k, m, input_needed) {
                        Some(g) => ybar + g,
                        None => ybar,
                    }
                }
                _ => unreachable!("saved factors match their layer"),
            };
            if !input_needed {
                return None;
            }
        }
        Some(ybar)
    }
}

/// im2col: the input patches a convolution with `kernel` and `opts` reads, as
/// `[m·h_o·w_o, c·k_h·k_w]` (row: point, then output position; column: the
/// weight's `[c, k_h, k_w]` order), so that the weight gradient of all $k$
/// columns is one matrix product. burn-ndarray 0.21's `conv2d_weight_backward`
/// is a convolution whose kernel is the whole output map, several times slower.
fn patches<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    opts: &ConvOptions<2>,
    out: Shape,
) -> Tensor<B, 2> {
    let [m, c, h, w] = x.dims();
    let [_, ho, wo] = out.dims;
    let [kh, kw] = kernel;
    let [sh, sw] = opts.stride;
    let [ph, pw] = opts.padding;
    // room for a full stride block after every window start i + s·o
    let (nh, nw) = (kh - 1 + ho * sh, kw - 1 + wo * sw);
    let xp = pad_zeros(x, (pw, nw - w - pw, ph, nh - h - ph));
    let mut cols = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            let p = xp.clone().narrow(2, i, ho * sh).narrow(3, j, wo * sw);
            let p = if sh * sw > 1 {
                p.reshape([m, c, ho, sh, wo, sw])
                    .narrow(3, 0, 1)
                    .narrow(5, 0, 1)
                    .reshape([m, c, ho * wo])
            } else {
                p.reshape([m, c, ho * wo])
            };
            cols.push(p);
        }
    }
    Tensor::stack::<4>(cols, 2)
        .reshape([m, c * kh * kw, ho * wo])
        .swap_dims(1, 2)
        .reshape([m * ho * wo, c * kh * kw])
}

/// $\bar x$ of a convolution, the transposed convolution of $\bar y$ with $W$,
/// written as a plain convolution: $\bar y$ dilated by the stride (zeros
/// between entries), zero-padded by $k - 1 - p$ in front and up to the input
/// size behind, correlated with $W$ flipped in space and with its channel axes
/// swapped. burn-ndarray 0.21's own `conv_transpose2d` is 30–50× slower than
/// its `conv2d` at LeNet sizes, which made $J^\top u$ cost as much as the
/// generic path.
fn conv_input_grad<B: Backend>(
    ybar: Tensor<B, 4>,
    w: Tensor<B, 4>,
    opts: &ConvOptions<2>,
    input: Shape,
) -> Tensor<B, 4> {
    let [kh, kw] = [w.dims()[2], w.dims()[3]];
    let mut y = ybar;
    for (axis, s) in [(2, opts.stride[0]), (3, opts.stride[1])] {
        if s > 1 {
            y = dilate(y, axis, s);
        }
    }
    let [_, _, lh, lw] = y.dims();
    let [_, h, w_in] = input.dims;
    // front k-1-p, back to a correlation output of the input size
    let (fh, fw) = (kh - 1 - opts.padding[0], kw - 1 - opts.padding[1]);
    let (bh, bw) = (h + kh - 1 - fh - lh, w_in + kw - 1 - fw - lw);
    let y = pad_zeros(y, (fw, bw, fh, bh));
    let wt = w.flip([2, 3]).swap_dims(0, 1);
    burn::tensor::module::conv2d(y, wt, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
}

/// Inserts $s - 1$ zeros between consecutive entries along `axis` (2 or 3).
fn dilate<B: Backend>(y: Tensor<B, 4>, axis: usize, s: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = y.dims();
    let (y5, len) = if axis == 2 {
        (y.reshape([b, c, h, 1, w]), h)
    } else {
        (y.reshape([b, c * h, w, 1, 1]), w)
    };
    let mut zdims = y5.dims();
    zdims[3] = s - 1;
    let z = zeros::<B, 5>(zdims, &y5.device());
    let spread = Tensor::cat(vec![y5, z], 3);
    let out = (len - 1) * s + 1;
    if axis == 2 {
        spread.reshape([b, c, h * s, w]).narrow(2, 0, out)
    } else {
        spread.reshape([b, c, h, w * s]).narrow(3, 0, out)
    }
}

// ---------------------------------------------------------------------------
// The Jacobian operator.

/// The tape-free Jacobian of a [`Sequential`] network at inputs $X$.
///
/// Like [`MlpJacobian`](crate::MlpJacobian), the forward pass of each row chunk
/// saves what the tangent and reverse rules need (layer inputs, $\sigma'(z)$,
/// max-pool arg-maxes, normalized activations); these are cached for all of
/// $X$ when they fit in half the memory budget, else recomputed per chunk and
/// product. A product with $k$ columns costs about one forward pass with a
/// batch of $k m$ points per chunk.
#[derive(Clone, Debug)]
pub struct SequentialJacobian<B: Backend> {
    net: Sequential<B>,
    x: Tensor<B, 2>,
    options: JacobianOptions,
    cache: Option<Vec<(usize, Tape<B>)>>,
}

impl<B: Backend> SequentialJacobian<B> {
    /// The Jacobian of `net` at `x` (`[n, n_inputs]`), checked for shape,
    /// emptiness and NaN/Inf.
    pub fn new(net: Sequential<B>, x: Tensor<B, 2>, options: JacobianOptions) -> Result<Self> {
        net.check_inputs(&x, "X")?;
        if options.memory_budget == 0 {
            return Err(invalid("memory_budget must be positive".into()));
        }
        let mut this = Self {
            net,
            x,
            options,
            cache: None,
        };
        let n = this.x.dims()[0];
        let fp = this.saved_bytes_per_point();
        if options.cache_factors && n.saturating_mul(fp) <= options.memory_budget / 2 {
            // chunks sized for a one-column product next to the cache
            let rows = (options.memory_budget / 2 / (fp + this.work_bytes_per_point()))
                .clamp(1, n)
                .min(options.max_chunk_rows);
            this.cache = Some(
                (0..n)
                    .step_by(rows)
                    .map(|s| {
                        (
                            s,
                            this.net.tape(this.x.clone().narrow(0, s, rows.min(n - s))),
                        )
                    })
                    .collect(),
            );
        }
        Ok(this)
    }

    /// The network.
    pub fn network(&self) -> &Sequential<B> {
        &self.net
    }

    /// The inputs $X$.
    pub fn inputs(&self) -> &Tensor<B, 2> {
        &self.x
    }

    /// Whether the saved factors of all of $X$ are cached.
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    fn elem_bytes() -> usize {
        std::mem::size_of::<B::FloatElem>()
    }

    /// Entries saved per point: about two per activation entry of every layer.
    fn saved_bytes_per_point(&self) -> usize {
        fn count(nodes: &[Node]) -> usize {
            nodes
                .iter()
                .map(|n| match &n.op {
                    Op::Residual(inner) => count(inner) + n.output.numel(),
                    _ => n.input.numel() + n.output.numel(),
                })
                .sum()
        }
        Self::elem_bytes() * (self.net.plan.input.numel() + count(&self.net.plan.nodes))
    }

    /// Working bytes per point and column in a product.
    fn work_bytes_per_point(&self) -> usize {
        fn widest(nodes: &[Node]) -> usize {
            nodes
                .iter()
                .map(|n| match &n.op {
                    Op::Residual(inner) => widest(inner).max(n.output.numel()),
                    _ => n.input.numel().max(n.output.numel()),
                })
                .max()
                .unwrap_or(0)
        }
        Self::elem_bytes() * 4 * widest(&self.net.plan.nodes).max(1)
    }

    fn for_each_chunk(
        &self,
        k: usize,
        mut f: impl FnMut(usize, &Tape<B>) -> Result<()>,
    ) -> Result<()> {
        let n = self.x.dims()[0];
        let budget = self.options.memory_budget;
        let wk = self.work_bytes_per_point() * k.max(1);
        match &self.cache {
            Some(chunks) => {
                for (start, tape) in chunks {
                    f(*start, tape)?;
                }
            }
            None => {
                let rows = (budget / (self.saved_bytes_per_point() + wk))
                    .clamp(1, n)
                    .min(self.options.max_chunk_rows);
                for s in (0..n).step_by(rows) {
                    let len = rows.min(n - s);
                    f(s, &self.net.tape(self.x.clone().narrow(0, s, len)))?;
                }
            }
        }
        Ok(())
    }

    /// The parameter block `[p, k]` split per layout entry as `[k, numel]`.
    fn split_block(&self, v: &Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.net
            .plan
            .layout
            .specs()
            .iter()
            .map(|s| transposed_copy(v.clone().narrow(0, s.offset, s.numel())))
            .collect()
    }
}

impl<B: Backend> JacobianOperator<B> for SequentialJacobian<B> {
    fn n_points(&self) -> usize {
        self.x.dims()[0]
    }

    fn n_outputs(&self) -> usize {
        self.net.n_outputs()
    }

    fn n_params(&self) -> usize {
        self.net.n_params()
    }

    fn device(&self) -> B::Device {
        self.x.device()
    }

    fn outputs(&self) -> Result<Tensor<B, 2>> {
        match &self.cache {
            Some(chunks) => Ok(Tensor::cat(
                chunks.iter().map(|(_, t)| t.output.clone()).collect(),
                0,
            )),
            None => {
                let mut parts = Vec::new();
                let n = self.n_points();
                let rows =
                    (self.options.memory_budget / self.saved_bytes_per_point().max(1)).clamp(1, n);
                for s in (0..n).step_by(rows) {
                    parts.push(
                        self.net
                            .forward(self.x.clone().narrow(0, s, rows.min(n - s))),
                    );
                }
                Ok(Tensor::cat(parts, 0))
            }
        }
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params())?;
        let k = v.dims()[1];
        let o = self.n_outputs();
        let split = self.split_block(&v);
        let mut parts = Vec::new();
        self.for_each_chunk(k, |_, tape| {
            let m = tape.m;
            let t = self
                .net
                .tangent(&self.net.plan.nodes, &tape.saved, None, &split, k, m)
                .expect("a network with parameters has a nonzero tangent");
            parts.push(transposed_copy(t.reshape([k, m * o])));
            Ok(())
        })?;
        Ok(Tensor::cat(parts, 0))
    }

    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_output_block(&u, self.n_rows())?;
        let k = u.dims()[1];
        let o = self.n_outputs();
        let mut grads: Vec<Option<Tensor<B, 2>>> = vec![None; self.net.plan.layout.specs().len()];
        self.for_each_chunk(k, |start, tape| {
            let m = tape.m;
            let uc = transposed_copy(u.clone().narrow(0, start * o, m * o))
                .reshape(dims4(self.net.plan.output, k * m));
            self.net.reverse(
                &self.net.plan.nodes,
                &tape.saved,
                uc,
                &mut grads,
                k,
                m,
                false,
            );
            Ok(())
        })?;
        let dev = self.device();
        let parts = grads
            .into_iter()
            .zip(self.net.plan.layout.specs())
            .map(|(g, s)| g.unwrap_or_else(|| zeros([k, s.numel()], &dev)))
            .collect();
        Ok(transposed_copy(Tensor::cat(parts, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::testing::{TestBackend, dot, rel_err};
    use proptest::prelude::*;

    type B = TestBackend;

    /// A network with randomized parameters (norm scales away from 1) and
    /// running statistics, so that every term of every rule is exercised.
    fn random_net(cfg: &SequentialConfig, seed: u64) -> Sequential<B> {
        let dev = Default::default();
        let base = cfg.init::<B>(seed, &dev).unwrap();
        let mut rng = SplitMix64::new(seed ^ 0x5EED);
        let theta: Vec<f64> = to_vec_f64(base.flatten())
            .into_iter()
            .map(|t| t + 0.3 * rng.normal())
            .collect();
        let bufs: Vec<f64> = cfg
            .buffer_layout()
            .unwrap()
            .specs()
            .iter()
            .flat_map(|s| {
                let var = s.name.ends_with("running_var");
                (0..s.numel())
                    .map(|_| {
                        if var {
                            rng.uniform_in(0.5, 1.5)
                        } else {
                            0.3 * rng.normal()
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        cfg.with_params(&theta, &bufs, &dev).unwrap()
    }

    fn inputs(cfg: &SequentialConfig, n: usize, seed: u64) -> Tensor<B, 2> {
        let d = cfg.n_inputs();
        tensor_from_f64(
            SplitMix64::new(seed).normal_vec(n * d),
            n,
            d,
            &Default::default(),
        )
    }

    /// Fast path against the generic (nested autodiff) path: outputs, $JV$
    /// and $J^\top U$ with two columns.
    fn check_against_generic(cfg: &SequentialConfig, n: usize, seed: u64) {
        let net = random_net(cfg, seed);
        let x = inputs(cfg, n, seed + 1);
        let fast = net.jacobian(x.clone(), Default::default()).unwrap();
        let generic = net.generic_jacobian(x).unwrap();
        let (p, r) = (fast.n_params(), fast.n_rows());
        assert_eq!((generic.n_params(), generic.n_rows()), (p, r));
        let dev = fast.device();
        let mut rng = SplitMix64::new(seed + 2);
        let v = tensor_from_f64(rng.normal_vec(p * 2), p, 2, &dev);
        let u = tensor_from_f64(rng.normal_vec(r * 2), r, 2, &dev);
        let pairs = [
            (
                "outputs",
                fast.outputs().unwrap(),
                generic.outputs().unwrap(),
            ),
            ("jvp", fast.jvp(v.clone()).unwrap(), generic.jvp(v).unwrap()),
            ("vjp", fast.vjp(u.clone()).unwrap(), generic.vjp(u).unwrap()),
        ];
        for (what, a, b) in pairs {
            let e = rel_err(&to_vec_f64(a), &to_vec_f64(b));
            assert!(e < 1e-10, "{what}: {e} for {:?}", cfg.layers);
        }
    }

    fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize) -> Layer {
        Layer::Conv2d {
            in_channels: ci,
            out_channels: co,
            kernel: [k; 2],
            stride: [s; 2],
            padding: [p; 2],
        }
    }

    #[test]
    fn linear_and_every_activation_match_generic_path() {
        for (i, act) in [
            Activation::Tanh,
            Activation::Relu,
            Activation::Elu,
            Activation::Gelu,
            Activation::Sigmoid,
            Activation::Softplus,
        ]
        .into_iter()
        .enumerate()
        {
            let cfg = SequentialConfig::new(
                &[3],
                vec![Layer::linear(3, 5), Layer::Act(act), Layer::linear(5, 2)],
            );
            check_against_generic(&cfg, 4, i as u64);
        }
    }

    #[test]
    fn conv_with_stride_and_padding_matches_generic_path() {
        let cfg = SequentialConfig::new(
            &[2, 7, 6],
            vec![
                conv(2, 3, 3, 2, 1),
                Layer::Act(Activation::Tanh),
                conv(3, 2, 2, 1, 0),
                Layer::Flatten,
                Layer::linear(2 * 3 * 2, 2),
            ],
        );
        check_against_generic(&cfg, 3, 10);
        let uneven = SequentialConfig::new(
            &[1, 9, 7],
            vec![
                Layer::Conv2d {
                    in_channels: 1,
                    out_channels: 2,
                    kernel: [3, 2],
                    stride: [3, 2],
                    padding: [2, 1],
                },
                Layer::Act(Activation::Sigmoid),
                Layer::Flatten,
                Layer::linear(2 * 4 * 4, 1),
            ],
        );
        check_against_generic(&uneven, 2, 11);
    }

    #[test]
    fn pooling_matches_generic_path() {
        for (i, pool) in [
            Layer::AvgPool2d { kernel: [2, 2] },
            Layer::MaxPool2d { kernel: [2, 2] },
            Layer::AvgPool2d { kernel: [3, 2] },
            Layer::MaxPool2d { kernel: [2, 3] },
        ]
        .into_iter()
        .enumerate()
        {
            // odd sizes: trailing rows and columns are dropped
            let cfg = SequentialConfig::new(
                &[1, 9, 8],
                vec![
                    conv(1, 3, 2, 1, 0),
                    Layer::Act(Activation::Gelu),
                    pool.clone(),
                    Layer::Flatten,
                    Layer::linear(3 * (8 / [2, 2, 3, 2][i]) * (7 / [2, 2, 2, 3][i]), 2),
                ],
            );
            check_against_generic(&cfg, 3, 20 + i as u64);
        }
    }

    #[test]
    fn norms_match_generic_path() {
        let bn = SequentialConfig::new(
            &[2, 5, 5],
            vec![
                conv(2, 3, 3, 1, 1),
                Layer::BatchNorm2d {
                    channels: 3,
                    eps: 1e-5,
                },
                Layer::Act(Activation::Relu),
                Layer::Flatten,
                Layer::linear(75, 2),
            ],
        );
        check_against_generic(&bn, 4, 30);
        let ln_image = SequentialConfig::new(
            &[2, 4, 4],
            vec![
                conv(2, 3, 3, 1, 0),
                Layer::LayerNorm { eps: 1e-5 },
                Layer::Act(Activation::Tanh),
                Layer::Flatten,
                Layer::linear(12, 2),
            ],
        );
        check_against_generic(&ln_image, 3, 31);
        let ln_vector = SequentialConfig::new(
            &[4],
            vec![
                Layer::linear(4, 6),
                Layer::LayerNorm { eps: 1e-3 },
                Layer::Act(Activation::Elu),
                Layer::linear(6, 3),
            ],
        );
        check_against_generic(&ln_vector, 5, 32);
        // a norm as the first layer: only its own parameters are differentiated
        let first = SequentialConfig::new(
            &[3, 2, 2],
            vec![
                Layer::BatchNorm2d {
                    channels: 3,
                    eps: 1e-5,
                },
                Layer::Flatten,
                Layer::LayerNorm { eps: 1e-5 },
                Layer::linear(12, 1),
            ],
        );
        check_against_generic(&first, 3, 33);
    }

    /// Conv → BN → ReLU → residual(conv → BN → ReLU → conv) → max-pool →
    /// conv → LayerNorm → tanh → avg-pool → flatten → linear.
    fn small_resnet() -> SequentialConfig {
        let bn = |c| Layer::BatchNorm2d {
            channels: c,
            eps: 1e-5,
        };
        SequentialConfig::new(
            &[2, 8, 8],
            vec![
                conv(2, 4, 3, 1, 1),
                bn(4),
                Layer::Act(Activation::Relu),
                Layer::Residual(vec![
                    conv(4, 4, 3, 1, 1),
                    bn(4),
                    Layer::Act(Activation::Relu),
                    conv(4, 4, 3, 1, 1),
                ]),
                Layer::MaxPool2d { kernel: [2, 2] },
                conv(4, 3, 3, 1, 1),
                Layer::LayerNorm { eps: 1e-5 },
                Layer::Act(Activation::Tanh),
                Layer::AvgPool2d { kernel: [2, 2] },
                Layer::Flatten,
                Layer::linear(12, 3),
            ],
        )
    }

    #[test]
    fn residual_cnn_matches_generic_path() {
        check_against_generic(&small_resnet(), 3, 40);
        let residual_only = SequentialConfig::new(
            &[5],
            vec![
                Layer::Residual(vec![Layer::linear(5, 5), Layer::Act(Activation::Softplus)]),
                Layer::linear(5, 1),
            ],
        );
        check_against_generic(&residual_only, 4, 41);
    }

    #[test]
    fn residual_cnn_jvp_matches_central_differences() {
        let cfg = small_resnet();
        let net = random_net(&cfg, 50);
        let x = inputs(&cfg, 4, 51);
        let jac = net.jacobian(x.clone(), Default::default()).unwrap();
        let theta = to_vec_f64(net.flatten());
        let bufs = net.buffers_flat();
        let p = theta.len();
        let v = SplitMix64::new(52).normal_vec(p);
        let jv = to_vec_f64(
            jac.jvp(tensor_from_f64(v.clone(), p, 1, &jac.device()))
                .unwrap(),
        );
        let h = 1e-5;
        let at = |s: f64| {
            let th: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + s * d).collect();
            cfg.with_params::<B>(&th, &bufs, &jac.device())
                .unwrap()
                .forward(x.clone())
        };
        let fd = to_vec_f64((at(h) - at(-h)).div_scalar(2.0 * h));
        // ReLU and max-pool kinks are not crossed almost surely at this step
        assert!(rel_err(&jv, &fd) < 1e-7, "{}", rel_err(&jv, &fd));
    }

    #[test]
    fn chunked_and_uncached_products_agree_with_cached() {
        let cfg = small_resnet();
        let net = random_net(&cfg, 60);
        let x = inputs(&cfg, 7, 61);
        let cached = net.jacobian(x.clone(), Default::default()).unwrap();
        let small = net
            .jacobian(
                x.clone(),
                JacobianOptions {
                    max_chunk_rows: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        let uncached = net
            .jacobian(
                x,
                JacobianOptions {
                    memory_budget: 5000,
                    cache_factors: false,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(cached.is_cached() && small.is_cached() && !uncached.is_cached());
        let dev = cached.device();
        let mut rng = SplitMix64::new(62);
        let (p, r) = (cached.n_params(), cached.n_rows());
        let v = tensor_from_f64(rng.normal_vec(p * 3), p, 3, &dev);
        let u = tensor_from_f64(rng.normal_vec(r * 3), r, 3, &dev);
        let jv = to_vec_f64(cached.jvp(v.clone()).unwrap());
        let jtu = to_vec_f64(cached.vjp(u.clone()).unwrap());
        let out = to_vec_f64(cached.outputs().unwrap());
        for other in [&small, &uncached] {
            assert!(rel_err(&to_vec_f64(other.jvp(v.clone()).unwrap()), &jv) < 1e-13);
            assert!(rel_err(&to_vec_f64(other.vjp(u.clone()).unwrap()), &jtu) < 1e-13);
            assert!(rel_err(&to_vec_f64(other.outputs().unwrap()), &out) < 1e-14);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn adjointness(
            c in 1usize..3, hw in 4usize..8, c1 in 1usize..4, kern in 1usize..4,
            stride in 1usize..3, pad in 0usize..2, pool in 0usize..3, norm in 0usize..3,
            residual in any::<bool>(), o in 1usize..3, n in 1usize..5, k in 1usize..4,
            seed in 0u64..1000, small_budget in any::<bool>(),
        ) {
            let mut layers = vec![conv(c, c1, kern, stride, pad), Layer::Act(Activation::Tanh)];
            match norm {
                1 => layers.push(Layer::BatchNorm2d { channels: c1, eps: 1e-5 }),
                2 => layers.push(Layer::LayerNorm { eps: 1e-5 }),
                _ => {}
            }
            if residual {
                layers.push(Layer::Residual(vec![
                    conv(c1, c1, 3, 1, 1),
                    Layer::Act(Activation::Softplus),
                ]));
            }
            prop_assume!(pad < kern);
            let side = (hw + 2 * pad - kern) / stride + 1;
            let side = match pool {
                1 => { layers.push(Layer::AvgPool2d { kernel: [2, 2] }); side / 2 }
                2 => { layers.push(Layer::MaxPool2d { kernel: [2, 2] }); side / 2 }
                _ => side,
            };
            prop_assume!(side > 0);
            layers.push(Layer::Flatten);
            layers.push(Layer::linear(c1 * side * side, o));
            let cfg = SequentialConfig::new(&[c, hw, hw], layers);
            let net = random_net(&cfg, seed);
            let opts = JacobianOptions {
                memory_budget: if small_budget { 4000 } else { 1 << 24 },
                cache_factors: !small_budget,
                max_chunk_rows: if small_budget { 2 } else { usize::MAX },
            };
            let jac = net.jacobian(inputs(&cfg, n, seed + 3), opts).unwrap();
            let dev = jac.device();
            let mut rng = SplitMix64::new(seed + 7);
            let (p, r) = (jac.n_params(), jac.n_rows());
            let v = tensor_from_f64(rng.normal_vec(p * k), p, k, &dev);
            let u = tensor_from_f64(rng.normal_vec(r * k), r, k, &dev);
            let jv = jac.jvp(v.clone()).unwrap();
            let jtu = jac.vjp(u.clone()).unwrap();
            prop_assert_eq!(jv.dims(), [n * o, k]);
            prop_assert_eq!(jtu.dims(), [p, k]);
            let (lhs, rhs) = (dot(&jv, &u), dot(&v, &jtu));
            prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn layout_follows_named_parameters_order() {
        let l = small_resnet().layout().unwrap();
        let names: Vec<_> = l.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight",
                "0.bias",
                "1.weight",
                "1.bias",
                "3.body.0.weight",
                "3.body.0.bias",
                "3.body.1.weight",
                "3.body.1.bias",
                "3.body.3.weight",
                "3.body.3.bias",
                "5.weight",
                "5.bias",
                "6.weight",
                "6.bias",
                "10.weight",
                "10.bias",
            ]
        );
        assert_eq!(l.get("6.weight").unwrap().shape, vec![3, 4, 4]);
        assert_eq!(l.get("6.bias").unwrap().shape, vec![3, 4, 4]);
        assert_eq!(l.get("10.weight").unwrap().shape, vec![3, 12]);
        let b = small_resnet().buffer_layout().unwrap();
        let names: Vec<_> = b.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1.running_mean",
                "1.running_var",
                "3.body.1.running_mean",
                "3.body.1.running_var"
            ]
        );
    }

    /// The PyTorch fixture (`testdata/make_sequential_fixture.py`): parameter
    /// and buffer order, shapes, and the forward pass of the same network.
    #[test]
    fn pytorch_fixture_order_and_forward() {
        let bytes = include_bytes!("../testdata/sequential_resnet.safetensors");
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let cfg = small_resnet();
        let layout = cfg.layout().unwrap();
        let buffer_layout = cfg.buffer_layout().unwrap();
        let names = |l: &ParamLayout| {
            l.specs()
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(names(&layout), meta["named_parameters"]);
        assert_eq!(names(&buffer_layout), meta["buffers"]);
        // parameters and buffers in state_dict order; num_batches_tracked is not used
        let state_dict: Vec<_> = meta["state_dict"]
            .split(',')
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        let mut ours: Vec<_> = layout
            .specs()
            .iter()
            .chain(buffer_layout.specs())
            .map(|s| s.name.as_str())
            .collect();
        let pos = |k: &str| state_dict.iter().position(|s| *s == k).unwrap();
        ours.sort_by_key(|k| pos(k));
        assert_eq!(ours, state_dict);
        // shapes are checked by the reader
        let theta = crate::checkpoint::params_from_bytes(&layout, bytes, "").unwrap();
        let bufs = crate::checkpoint::params_from_bytes(&buffer_layout, bytes, "").unwrap();
        let io = ParamLayout::new([
            ("x".to_string(), vec![3, 128]),
            ("y".to_string(), vec![3, 3]),
        ]);
        let xy = crate::checkpoint::params_from_bytes(&io, bytes, "").unwrap();
        let dev = Default::default();
        let net = cfg.with_params::<B>(&theta, &bufs, &dev).unwrap();
        let x = tensor_from_f64(xy[..384].to_vec(), 3, 128, &dev);
        let want = &xy[384..];
        let jac = net.jacobian(x.clone(), Default::default()).unwrap();
        for got in [net.forward(x), jac.outputs().unwrap()] {
            let e = rel_err(&to_vec_f64(got), want);
            assert!(e < 1e-12, "{e}");
        }
    }

    #[test]
    fn f32_backend_computes_in_f32() {
        type B32 = burn_ndarray::NdArray<f32>;
        let cfg = small_resnet();
        let dev = Default::default();
        let net = cfg.init::<B32>(3, &dev).unwrap();
        let x = tensor_from_f64(SplitMix64::new(4).normal_vec(2 * 128), 2, 128, &dev);
        let jac = net.jacobian(x, Default::default()).unwrap();
        let (p, r) = (jac.n_params(), jac.n_rows());
        let mut rng = SplitMix64::new(5);
        let v = tensor_from_f64(rng.normal_vec(p), p, 1, &dev);
        let u = tensor_from_f64(rng.normal_vec(r), r, 1, &dev);
        let jv = jac.jvp(v.clone()).unwrap();
        let jtu = jac.vjp(u.clone()).unwrap();
        assert_eq!(jv.dtype(), burn::tensor::DType::F32);
        assert_eq!(jtu.dtype(), burn::tensor::DType::F32);
        let lhs: f64 = to_vec_f64(jv * u).iter().sum();
        let rhs: f64 = to_vec_f64(v * jtu).iter().sum();
        assert!(
            (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn typed_errors_for_bad_configs_and_inputs() {
        let bad = [
            SequentialConfig::new(&[1, 4, 4], vec![Layer::linear(16, 1)]),
            SequentialConfig::new(&[4], vec![Layer::conv2d(1, 1, 1)]),
            SequentialConfig::new(&[1, 4, 4], vec![Layer::conv2d(2, 1, 1)]),
            SequentialConfig::new(&[1, 4, 4], vec![Layer::conv2d(1, 1, 5)]),
            SequentialConfig::new(&[1, 4, 4], vec![conv(1, 1, 2, 1, 2)]),
            SequentialConfig::new(&[1, 2, 2], vec![Layer::MaxPool2d { kernel: [3, 3] }]),
            SequentialConfig::new(&[2, 3], vec![Layer::linear(6, 1)]),
            SequentialConfig::new(&[3], vec![Layer::Act(Activation::Tanh)]),
            SequentialConfig::new(
                &[3],
                vec![
                    Layer::Residual(vec![Layer::linear(3, 2)]),
                    Layer::linear(2, 1),
                ],
            ),
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.layout(), Err(OpsError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
        let cfg = SequentialConfig::new(&[1, 4, 4], vec![Layer::Flatten, Layer::linear(16, 1)]);
        let dev = Default::default();
        assert!(matches!(
            cfg.with_params::<B>(&[0.0; 3], &[], &dev),
            Err(OpsError::ShapeMismatch { .. })
        ));
        let net = cfg.init::<B>(0, &dev).unwrap();
        assert!(matches!(
            net.jacobian(
                tensor_from_f64(vec![0.0; 15], 1, 15, &dev),
                Default::default()
            ),
            Err(OpsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            net.generic_jacobian(tensor_from_f64(vec![0.0; 15], 1, 15, &dev)),
            Err(OpsError::ShapeMismatch { .. })
        ));
        let mut vals = vec![0.0; 32];
        vals[20] = f64::NAN;
        assert!(matches!(
            net.jacobian(tensor_from_f64(vals, 2, 16, &dev), Default::default()),
            Err(OpsError::NonFinite {
                index: Some(20),
                ..
            })
        ));
        assert!(matches!(
            net.jacobian(crate::convert::zeros([0, 16], &dev), Default::default()),
            Err(OpsError::Empty { .. })
        ));
        let jac = net
            .jacobian(
                tensor_from_f64(vec![0.5; 32], 2, 16, &dev),
                Default::default(),
            )
            .unwrap();
        assert!(matches!(
            jac.jvp(tensor_from_f64(vec![0.0; 16], 16, 1, &dev)),
            Err(OpsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            jac.vjp(tensor_from_f64(vec![0.0; 3], 3, 1, &dev)),
            Err(OpsError::ShapeMismatch { .. })
        ));
    }
}
