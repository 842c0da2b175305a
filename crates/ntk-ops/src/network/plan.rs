//! A network compiled from its [`Layer`]s: shapes resolved, parameters and buffers located.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::layer::{Layer, Op};
use super::shape::Shape;
use super::tensor::shaped;
use crate::convert::tensor1_from_f64;
use crate::error::{OpsError, Result};
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// Where a compiled layer sits: its shapes, and its entries in the layouts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    pub input: Shape,
    pub output: Shape,
    /// Index of the layer's first parameter (its weight; the bias follows) in the layout.
    pub param: Option<usize>,
    /// Index of the layer's first buffer (a running mean; the variance follows).
    pub buffer: Option<usize>,
}

impl Site {
    /// The index of the layer's weight, for a layer that has one.
    pub fn weight(&self) -> usize {
        self.param.expect("compiled with parameters")
    }
}

/// A compiled layer: its rule and its site.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub site: Site,
}

impl Node {
    /// A layer `op` mapping points of shape `input` to `output`, with no parameters or
    /// buffers (add them with [`Self::with_param`], [`Self::with_buffer`]).
    pub fn new(op: Op, input: Shape, output: Shape) -> Self {
        Self {
            op,
            site: Site {
                input,
                output,
                param: None,
                buffer: None,
            },
        }
    }

    /// With its first parameter at index `i` of the layout.
    pub fn with_param(mut self, i: usize) -> Self {
        self.site.param = Some(i);
        self
    }

    /// With its first buffer at index `i` of the buffer layout.
    pub fn with_buffer(mut self, i: usize) -> Self {
        self.site.buffer = Some(i);
        self
    }
}

/// The parameter and buffer values a pass reads, one flat tensor per layout entry.
pub(crate) struct Values<'a, B: Backend> {
    pub params: &'a [Tensor<B, 1>],
    pub buffers: &'a [Tensor<B, 1>],
    pub layout: &'a ParamLayout,
}

impl<B: Backend> Values<'_, B> {
    /// Parameter `i` in its own shape.
    pub fn shaped<const D: usize>(&self, i: usize) -> Tensor<B, D> {
        shaped(&self.params[i], &self.layout.specs()[i].shape)
    }
}

/// The invalid-configuration error.
pub(crate) fn invalid(msg: String) -> OpsError {
    OpsError::InvalidConfig(msg)
}

/// Collects the parameter and buffer entries while layers compile.
#[derive(Default)]
pub(crate) struct Compiler {
    params: Vec<(String, Vec<usize>)>,
    buffers: Vec<(String, Vec<usize>)>,
}

impl Compiler {
    /// Registers `name.weight` and `name.bias`; returns the weight's index.
    pub fn affine(&mut self, name: &str, weight: Vec<usize>, bias: Vec<usize>) -> usize {
        let i = self.params.len();
        self.params.push((format!("{name}.weight"), weight));
        self.params.push((format!("{name}.bias"), bias));
        i
    }

    /// Registers `name.running_mean` and `name.running_var` of `c` channels; returns the
    /// mean's index.
    pub fn running_stats(&mut self, name: &str, c: usize) -> usize {
        let i = self.buffers.len();
        self.buffers.push((format!("{name}.running_mean"), vec![c]));
        self.buffers.push((format!("{name}.running_var"), vec![c]));
        i
    }

    /// Compiles `layers` named `{prefix}{i}` on points of shape `shape`.
    pub fn sequence(
        &mut self,
        layers: &[Layer],
        prefix: &str,
        mut shape: Shape,
    ) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let node = layer.compile(self, &format!("{prefix}{i}"), shape)?;
            shape = node.site.output;
            nodes.push(node);
        }
        Ok(nodes)
    }
}

/// The compiled structure of a network.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub nodes: Vec<Node>,
    pub layout: ParamLayout,
    pub buffers: ParamLayout,
    pub input: Shape,
    pub output: Shape,
}

impl Plan {
    /// Compiles `layers` on points of shape `input` (`[d]` or `[c, h, w]`).
    pub fn compile(input: &[usize], layers: &[Layer]) -> Result<Self> {
        let input = match *input {
            [d] => Shape::vector(d),
            [c, h, w] => Shape::image(c, h, w),
            _ => {
                return Err(invalid(format!(
                    "input shape {input:?}: expected [d] or [c, h, w]"
                )));
            }
        };
        if input.numel() == 0 {
            return Err(invalid("input shape has a zero dimension".into()));
        }
        let mut c = Compiler::default();
        let nodes = c.sequence(layers, "", input)?;
        if c.params.is_empty() {
            return Err(invalid("the network has no parameters".into()));
        }
        let output = nodes.last().map_or(input, |n| n.site.output);
        Ok(Self {
            nodes,
            layout: ParamLayout::new(c.params),
            buffers: ParamLayout::new(c.buffers),
            input,
            output,
        })
    }

    /// PyTorch's default initialization of every layer, in layout order.
    pub fn init_params(&self, rng: &mut SplitMix64) -> Vec<f64> {
        let mut theta = Vec::with_capacity(self.layout.n_params());
        for node in &self.nodes {
            node.init(&self.layout, rng, &mut theta);
        }
        theta
    }

    /// Running means $0$, variances $1$.
    pub fn default_buffers(&self) -> Vec<f64> {
        self.buffers
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

    /// Host values split into one flat tensor per layout entry.
    #[allow(clippy::type_complexity)]
    pub fn split_values<B: Backend>(
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

/// PyTorch's default initialization of an affine layer's weight and bias: uniform on
/// $\pm 1/\sqrt{\text{fan-in}}$, fan-in the product of the weight's trailing dimensions.
pub(crate) fn init_uniform(
    layout: &ParamLayout,
    i: usize,
    rng: &mut SplitMix64,
    theta: &mut Vec<f64>,
) {
    let w = &layout.specs()[i];
    let fan_in: usize = w.shape[1..].iter().product();
    let bound = 1.0 / (fan_in as f64).sqrt();
    let count = w.numel() + layout.specs()[i + 1].numel();
    theta.extend((0..count).map(|_| rng.uniform_in(-bound, bound)));
}

/// A norm's initialization: scale $\gamma = 1$, shift $\beta = 0$.
pub(crate) fn init_norm(layout: &ParamLayout, i: usize, theta: &mut Vec<f64>) {
    let n = layout.specs()[i].numel();
    theta.extend(std::iter::repeat_n(1.0, n));
    theta.extend(std::iter::repeat_n(0.0, n));
}
