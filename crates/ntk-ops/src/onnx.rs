//! Networks read from ONNX files, as `torch.onnx.export` writes them.
//!
//! [`OnnxNetwork::read`] parses a `.onnx` file with burn's maintained `onnx-ir` parser (weights
//! embedded or in external data files next to it, as the `dynamo=True` exporter writes them)
//! and maps its graph onto a [`NetworkConfig`] and the flat parameters $\theta$ in that
//! network's layout: the layers in the order the graph runs them, each weight as PyTorch holds
//! it (`[out, in]`; a MatMul's `[in, out]` right-hand side is transposed). That is PyTorch's
//! `named_parameters()` order for a model built as an `nn.Sequential`; for others it may
//! differ, which leaves the NTK unchanged. Weights tied in PyTorch are independent copies
//! here (the exporter stores them once or twice, and which cannot be told). The graph must
//! be a chain from one input to one output, with residual blocks $x + g(x)$ as its only
//! branches; every operator in [`OPERATORS_READ`] is read, anything else is refused with
//! [`OpsError::OnnxOperator`], which names the operator and the node.
//!
//! ```no_run
//! use ntk_ops::onnx::OnnxNetwork;
//! let onnx = OnnxNetwork::read("cnn.onnx")?;
//! println!("{} parameters, input {:?}", onnx.params.len(), onnx.config.input);
//! let net = onnx.network::<ntk_ops::DefaultBackend>(&Default::default())?;
//! # Ok::<(), ntk_ops::OpsError>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::Backend;
use onnx_ir::batch_norm::BatchNormConfig;
use onnx_ir::padding::{AutoPad, PaddingConfig2d};
use onnx_ir::reshape::ReshapeInput;
use onnx_ir::{ArgType, Argument, Node, OnnxGraph, OnnxGraphBuilder, TensorDataExt};

use crate::activation::Activation;
use crate::error::{OpsError, Result};
use crate::network::layers::{avg_pool, batch_norm, conv2d, max_pool};
use crate::network::{Layer, Network, NetworkConfig};

/// The ONNX operators that are read, as the documentation lists them.
pub const OPERATORS_READ: &[&str] = &[
    "Gemm",
    "MatMul + Add",
    "Conv (2-D)",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Gelu (and its erf pattern)",
    "Elu (alpha = 1)",
    "Softplus",
    "MaxPool (kernel = stride, no padding)",
    "AveragePool (kernel = stride, no padding)",
    "BatchNormalization (inference)",
    "Flatten",
    "Reshape to a flatten",
    "Add of two branches (residual)",
    "Identity",
    "Dropout (inference)",
];

/// A network read from an ONNX graph: its configuration, $\theta$ and buffers, and where
/// each parameter came from.
#[derive(Clone, Debug)]
pub struct OnnxNetwork {
    /// The layers and the shape of one input point (`[d]` or `[c, h, w]`).
    pub config: NetworkConfig,
    /// $\theta$ in the configuration's layout order.
    pub params: Vec<f64>,
    /// BatchNorm running means and variances, in buffer-layout order.
    pub buffers: Vec<f64>,
    /// The ONNX initializer each parameter tensor came from, in layout order.
    pub param_sources: Vec<String>,
}

impl OnnxNetwork {
    /// Reads an ONNX file (external data files next to it are followed).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)?;
        refuse_tanh_gelu(&bytes)?;
        check_external_data(&bytes, path)?;
        // The parser follows external data relative to the file, so it reads the path itself.
        let graph = guarded(|| OnnxGraphBuilder::new().parse_file(path))?;
        Self::from_graph(&graph).map_err(|e| with_file_node_name(e, &bytes))
    }

    /// Reads an ONNX model held in memory (weights embedded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        refuse_tanh_gelu(bytes)?;
        let graph = guarded(|| OnnxGraphBuilder::new().parse_bytes(bytes))?;
        Self::from_graph(&graph).map_err(|e| with_file_node_name(e, bytes))
    }

    /// Maps a parsed graph onto layers.
    pub fn from_graph(graph: &OnnxGraph) -> Result<Self> {
        Reader::default().read(graph)
    }

    /// The network on `device`.
    pub fn network<B: Backend>(&self, device: &B::Device) -> Result<Network<B>> {
        self.config.with_params(&self.params, &self.buffers, device)
    }
}

/// Runs the parser; its errors, and the panics it raises on some malformed files, become
/// [`OpsError::Onnx`] (the process's panic hook still reports a panic as it happens).
fn guarded(
    parse: impl FnOnce() -> std::result::Result<OnnxGraph, onnx_ir::Error>,
) -> Result<OnnxGraph> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(OpsError::Onnx(one_line(&e.to_string()))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(OpsError::Onnx(format!(
                "the ONNX parser could not read this file: {}",
                one_line(message)
            )))
        }
    }
}

/// The exact GELU is read; `Gelu(approximate="tanh")` (opset 20) is another function, and
/// the parser does not keep the attribute, so the raw model is checked for it.
fn refuse_tanh_gelu(bytes: &[u8]) -> Result<()> {
    let has = |pat: &[u8]| bytes.windows(pat.len()).any(|w| w == pat);
    if has(b"approximate") && has(b"Gelu") && has(b"tanh") {
        use protobuf::Message;
        let model = onnx_ir::ModelProto::parse_from_bytes(bytes)
            .map_err(|e| OpsError::Onnx(one_line(&e.to_string())))?;
        for node in &model.graph.node {
            let tanh = node
                .attribute
                .iter()
                .any(|a| a.name == "approximate" && a.s.as_ref() == b"tanh");
            if node.op_type == "Gelu" && tanh {
                return Err(OpsError::OnnxOperator {
                    op: "Gelu".into(),
                    node: format!("`{}`", node.name),
                    detail: " with approximate=\"tanh\" (only the exact GELU)".into(),
                });
            }
        }
    }
    Ok(())
}

/// How a message marks a node named by the parser (`add3`) rather than by the file.
const PARSER_NUMBERING: &str = " as the parser numbers nodes";

/// Operators whose nodes the parser fuses, renames or removes, so that its count of them
/// differs from the file's (an Add fused into a Linear is not counted).
const RENUMBERED: &[&str] = &[
    "add", "sub", "mul", "div", "matmul", "gemm", "linear", "conv", "identity", "dropout",
    "reshape", "flatten",
];

/// The parser renames nodes `<op><k>` (`leakyrelu1`: the first LeakyRelu); a message names
/// the node as the file does (`/1/LeakyRelu`, what Netron shows) where the two line up, and
/// says it is the parser's numbering otherwise.
fn with_file_node_name(e: OpsError, bytes: &[u8]) -> OpsError {
    let OpsError::OnnxOperator { op, node, detail } = e else {
        return e;
    };
    let Some(raw) = node
        .strip_suffix(PARSER_NUMBERING)
        .map(|n| n.trim_matches('`'))
    else {
        return OpsError::OnnxOperator { op, node, detail };
    };
    let digits = raw.len() - raw.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (prefix, k) = raw.split_at(raw.len() - digits);
    let comparable = !RENUMBERED.iter().any(|r| prefix.eq_ignore_ascii_case(r));
    let named = k
        .parse::<usize>()
        .ok()
        .filter(|_| comparable)
        .and_then(|k| {
            use protobuf::Message;
            let model = onnx_ir::ModelProto::parse_from_bytes(bytes).ok()?;
            let file_node = model
                .graph
                .node
                .iter()
                .filter(|n| n.op_type.eq_ignore_ascii_case(prefix))
                .nth(k.checked_sub(1)?)?;
            Some(file_node.name.clone()).filter(|n| !n.is_empty())
        });
    OpsError::OnnxOperator {
        op,
        node: named.map_or(node, |n| format!("`{n}`")),
        detail,
    }
}

/// Every external data file the model names exists next to it and holds the bytes it points
/// to (the parser would stop the process on a missing one).
fn check_external_data(bytes: &[u8], path: &Path) -> Result<()> {
    if !bytes.windows(8).any(|w| w == b"location") {
        return Ok(());
    }
    use protobuf::Message;
    let model = onnx_ir::ModelProto::parse_from_bytes(bytes)
        .map_err(|e| OpsError::Onnx(one_line(&e.to_string())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for tensor in &model.graph.initializer {
        let entry = |key: &str| {
            tensor
                .external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let Some(location) = entry("location") else {
            continue;
        };
        let number = |key: &str| entry(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let end = number("offset").saturating_add(number("length"));
        let file = dir.join(&location);
        let len = std::fs::metadata(&file).map(|m| m.len()).map_err(|e| {
            OpsError::Onnx(format!(
                "tensor `{}` is stored in the external data file `{}`, which cannot be read ({e}): \
                 keep it next to the model",
                tensor.name,
                file.display()
            ))
        })?;
        if len < end {
            return Err(OpsError::Onnx(format!(
                "tensor `{}` needs bytes up to {end} of the external data file `{}`, which has {len}",
                tensor.name,
                file.display()
            )));
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A parameter or buffer tensor of one layer: source name, shape, values.
#[derive(Clone, Debug)]
struct Tensor {
    source: String,
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// A layer read from the graph, or a residual block around earlier ones.
#[derive(Clone, Debug)]
enum Op {
    Layer {
        layer: Layer,
        params: Vec<Tensor>,
        buffers: Vec<Tensor>,
    },
    Residual(Vec<usize>),
}

/// The steps of GELU's erf pattern $\tfrac12 x (1 + \operatorname{erf}(x/\sqrt2))$, as
/// the TorchScript exporter writes it before opset 20.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GeluStep {
    /// $x / \sqrt 2$.
    Scaled,
    /// $\operatorname{erf}(x/\sqrt2)$.
    Erf,
    /// $1 + \operatorname{erf}(x/\sqrt2)$.
    OnePlus,
    /// $x (1 + \operatorname{erf}(\cdot))$.
    Times,
    /// $x / 2$.
    Half,
}

/// An entry of a shape computed in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    /// The batch size (entry 0 of `Shape(x)` for the points `x`).
    Batch,
    /// A constant.
    Fixed(i64),
    /// Anything else.
    Unknown,
}

/// What a graph value is, in terms of the chain read so far.
#[derive(Clone, Debug)]
enum Value {
    /// The input after these ops (indices into the op table).
    Chain(Vec<usize>),
    /// Part of a shape computation (`Shape`, `Gather`, … feeding a `Reshape`): its entries
    /// where they are known (a scalar is a list of one).
    Shape(Option<Vec<Dim>>),
    /// `x W` of a chain, waiting for its bias.
    MatMul(Vec<usize>, Tensor, String),
    /// A step of GELU's erf pattern on a chain.
    Gelu(GeluStep, Vec<usize>, String),
}

#[derive(Default)]
struct Reader {
    ops: Vec<Op>,
    values: HashMap<String, Value>,
    ranks: HashMap<String, usize>,
    /// One input point's shape.
    point: Vec<usize>,
}

/// Operators that only compute shapes.
const SHAPE_OPS: &[&str] = &[
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "ConstantOfShape",
    "Constant",
    "Size",
];

/// The operator of a node, as the parser names it. onnx-ir has no accessor for it, so it is
/// read from the variant name that `Debug` prints first (`Softmax(SoftmaxNode { … })`).
fn op_name(node: &Node) -> String {
    let debug = format!("{node:?}");
    debug.split('(').next().unwrap_or("?").to_string()
}

fn unsupported(node: &Node, detail: impl Into<String>) -> OpsError {
    let op = match op_name(node).as_str() {
        "Conv1d" | "Conv3d" => "Conv (not 2-D)".to_string(),
        "MaxPool1d" | "MaxPool3d" => "MaxPool (not 2-D)".to_string(),
        "AveragePool1d" | "AveragePool3d" => "AveragePool (not 2-D)".to_string(),
        other => other.to_string(),
    };
    OpsError::OnnxOperator {
        op,
        node: format!("`{}`{PARSER_NUMBERING}", node.name()),
        detail: detail.into(),
    }
}

/// A constant's values and shape, or `None` for a runtime value.
fn constant(arg: &Argument) -> Option<Tensor> {
    let data = arg.value()?;
    let values = data.to_f64_vec().ok()?;
    Some(Tensor {
        source: arg.name.clone(),
        shape: data.shape.to_vec(),
        values,
    })
}

fn is_scalar(t: &Tensor, value: f64, tol: f64) -> bool {
    t.values.len() == 1 && (t.values[0] - value).abs() <= tol * value.abs().max(1.0)
}

fn rank(arg: &Argument) -> usize {
    match &arg.ty {
        ArgType::Tensor(t) => t.rank,
        ArgType::ScalarTensor(_) => 1,
        ArgType::ScalarNative(_) => 0,
        ArgType::Shape(_) => 1,
    }
}

impl Reader {
    fn read(mut self, graph: &OnnxGraph) -> Result<OnnxNetwork> {
        let inputs: Vec<&Argument> = graph
            .inputs
            .iter()
            .filter(|a| a.value().is_none())
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(OpsError::Onnx(format!(
                "the graph has {} runtime inputs; one (the batch of points) is read",
                inputs.len()
            )));
        };
        let point = match &input.ty {
            ArgType::Tensor(t) => t
                .static_shape
                .as_ref()
                .and_then(|s| s.iter().skip(1).copied().collect::<Option<Vec<usize>>>()),
            _ => None,
        };
        let point = match point {
            Some(p) if p.len() == 1 || p.len() == 3 => p,
            _ => {
                return Err(OpsError::Onnx(format!(
                    "input `{}` has type {}; a batch of vectors [batch, d] or images [batch, c, h, w] with fixed sizes is read",
                    input.name, input.ty
                )));
            }
        };
        self.values.insert(input.name.clone(), Value::Chain(vec![]));
        self.point.clone_from(&point);
        self.ranks.insert(input.name.clone(), point.len() + 1);
        for node in &graph.nodes {
            self.node(node)?;
        }
        let [output] = graph.outputs.as_slice() else {
            return Err(OpsError::Onnx(format!(
                "the graph has {} outputs; one is read",
                graph.outputs.len()
            )));
        };
        let chain = match self.values.get(&output.name) {
            Some(Value::Chain(chain)) => chain.clone(),
            Some(Value::MatMul(_, _, node)) | Some(Value::Gelu(_, _, node)) => {
                return Err(OpsError::Onnx(format!(
                    "the output comes from node `{node}` in the middle of a pattern \
                     (a MatMul without its bias Add, or part of GELU's erf pattern)"
                )));
            }
            _ => {
                return Err(OpsError::Onnx(format!(
                    "output `{}` does not depend on the input",
                    output.name
                )));
            }
        };
        if self.ranks.get(&output.name).is_some_and(|&r| r != 2) {
            return Err(OpsError::Onnx(format!(
                "output `{}` has rank {}; a batch of output vectors [batch, outputs] is read",
                output.name, self.ranks[&output.name]
            )));
        }
        self.build(point, &chain)
    }

    fn build(&self, point: Vec<usize>, chain: &[usize]) -> Result<OnnxNetwork> {
        let mut params = Vec::new();
        let mut buffers = Vec::new();
        let layers = self.layers(chain, &mut params, &mut buffers);
        let config = NetworkConfig::new(&point, layers);
        let layout = config.layout()?;
        let buffer_layout = config.buffer_layout()?;
        let check = |what: &str, specs: &[crate::ParamSpec], tensors: &[Tensor]| {
            let ours: Vec<&Vec<usize>> = specs.iter().map(|s| &s.shape).collect();
            let theirs: Vec<&Vec<usize>> = tensors.iter().map(|t| &t.shape).collect();
            if ours != theirs {
                return Err(OpsError::Onnx(format!(
                    "the {what} read from the graph have shapes {theirs:?}, the layers need {ours:?}"
                )));
            }
            Ok(())
        };
        check("parameters", layout.specs(), &params)?;
        check("buffers", buffer_layout.specs(), &buffers)?;
        for t in params.iter().chain(&buffers) {
            if let Some(index) = t.values.iter().position(|v| !v.is_finite()) {
                return Err(OpsError::NonFiniteTensor {
                    name: t.source.clone(),
                    index,
                });
            }
        }
        Ok(OnnxNetwork {
            config,
            param_sources: params.iter().map(|t| t.source.clone()).collect(),
            params: params.into_iter().flat_map(|t| t.values).collect(),
            buffers: buffers.into_iter().flat_map(|t| t.values).collect(),
        })
    }

    fn layers(
        &self,
        chain: &[usize],
        params: &mut Vec<Tensor>,
        buffers: &mut Vec<Tensor>,
    ) -> Vec<Layer> {
        chain
            .iter()
            .map(|&i| match &self.ops[i] {
                Op::Layer {
                    layer,
                    params: p,
                    buffers: b,
                } => {
                    params.extend(p.iter().cloned());
                    buffers.extend(b.iter().cloned());
                    layer.clone()
                }
                Op::Residual(body) => Layer::residual(self.layers(body, params, buffers)),
            })
            .collect()
    }

    fn push(&mut self, base: &[usize], op: Op) -> Value {
        self.ops.push(op);
        let mut chain = base.to_vec();
        chain.push(self.ops.len() - 1);
        Value::Chain(chain)
    }

    fn layer(&mut self, base: &[usize], layer: Layer, params: Vec<Tensor>) -> Value {
        self.push(
            base,
            Op::Layer {
                layer,
                params,
                buffers: vec![],
            },
        )
    }

    fn set(&mut self, node: &Node, value: Value) {
        if let Some(out) = node.outputs().first() {
            self.ranks.insert(out.name.clone(), rank(out));
            self.values.insert(out.name.clone(), value);
        }
    }

    /// The chain an input of `node` holds.
    fn chain(&self, node: &Node, index: usize) -> Result<Vec<usize>> {
        let arg = node
            .inputs()
            .get(index)
            .ok_or_else(|| unsupported(node, format!(" without input {index}")))?;
        match self.values.get(&arg.name) {
            Some(Value::Chain(c)) => Ok(c.clone()),
            Some(Value::MatMul(_, _, from)) => Err(unsupported(
                node,
                format!(" after MatMul `{from}` (a Linear layer without a bias is not read)"),
            )),
            Some(Value::Gelu(_, _, from)) => Err(unsupported(
                node,
                format!(
                    " after node `{from}` (which started GELU's erf pattern but did not finish it)"
                ),
            )),
            _ => Err(unsupported(node, " on a constant or shape input")),
        }
    }

    /// A constant input (a weight): its source is the initializer's name, or, where the
    /// parser has lifted it into the node, the node's name and the input's role.
    fn weight(&self, node: &Node, index: usize, what: &str) -> Result<Tensor> {
        let mut t = node
            .inputs()
            .get(index)
            .filter(|a| !a.is_optional())
            .and_then(constant)
            .ok_or_else(|| unsupported(node, format!(" whose {what} is not a constant")))?;
        if t.source.is_empty() {
            t.source = format!("{} ({what})", node.name());
        }
        Ok(t)
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        let op = op_name(node);
        let ins = node.inputs();
        // Shape computations (and constants) never touch the points.
        if SHAPE_OPS.contains(&op.as_str()) {
            let on_points = ins
                .iter()
                .any(|a| matches!(self.values.get(&a.name), Some(Value::Chain(_))));
            let on_shapes = ins
                .iter()
                .any(|a| matches!(self.values.get(&a.name), Some(Value::Shape(_))));
            if (op == "Shape" || op == "Size") || on_shapes && !on_points {
                let dims = self.shape_dims(node, &op);
                for out in node.outputs() {
                    self.values
                        .insert(out.name.clone(), Value::Shape(dims.clone()));
                }
                return Ok(());
            }
            if !on_points && !on_shapes {
                return Ok(()); // constant folding left over
            }
            return Err(unsupported(node, " on the points"));
        }
        let value = match node {
            Node::Linear(n) => {
                let x = self.chain(node, 0)?;
                let mut w = self.weight(node, 1, "weight")?;
                if w.shape.len() != 2 {
                    return Err(unsupported(
                        node,
                        format!(" with a weight of shape {:?}", w.shape),
                    ));
                }
                if !n.config.transpose_weight {
                    w = transpose(&w);
                }
                // The parser fuses a MatMul with an Add right after it; without one the bias
                // may still come (an Add further on, or of shape [1, out]): `add` finishes it.
                match ins.get(2).filter(|a| !a.is_optional()) {
                    Some(_) => {
                        let bias = self.weight(node, 2, "bias")?;
                        self.linear(node, &x, w, bias)?
                    }
                    None => Value::MatMul(x, w, node.name().to_string()),
                }
            }
            Node::Gemm(n) => {
                let c = &n.config;
                if c.trans_a != 0 || c.alpha != 1.0 || c.beta != 1.0 {
                    return Err(unsupported(
                        node,
                        format!(
                            " with transA={}, alpha={}, beta={} (x Wᵀ + b is read)",
                            c.trans_a, c.alpha, c.beta
                        ),
                    ));
                }
                let x = self.chain(node, 0)?;
                let mut w = self.weight(node, 1, "weight")?;
                if w.shape.len() != 2 {
                    return Err(unsupported(
                        node,
                        format!(" with a weight of shape {:?}", w.shape),
                    ));
                }
                if c.trans_b == 0 {
                    w = transpose(&w);
                }
                if ins.get(2).is_none_or(|a| a.is_optional()) {
                    return Err(unsupported(node, " without a bias (C)"));
                }
                let bias = self.weight(node, 2, "bias")?;
                self.linear(node, &x, w, bias)?
            }
            Node::MatMul(_) => {
                let x = self.chain(node, 0)?;
                let w = self.weight(node, 1, "right-hand side")?;
                if w.shape.len() != 2 {
                    return Err(unsupported(
                        node,
                        format!(" with a right-hand side of shape {:?}", w.shape),
                    ));
                }
                Value::MatMul(x, transpose(&w), node.name().to_string())
            }
            Node::Add(_) => self.add(node)?,
            Node::Conv2d(n) => {
                let c = &n.config;
                let x = self.chain(node, 0)?;
                let w = self.weight(node, 1, "weight")?;
                let b = ins
                    .get(2)
                    .filter(|a| !a.is_optional())
                    .map(|_| self.weight(node, 2, "bias"))
                    .transpose()?
                    .ok_or_else(|| unsupported(node, " without a bias (bias=False is not read)"))?;
                if !matches!(c.auto_pad, AutoPad::NotSet | AutoPad::Valid) {
                    return Err(unsupported(
                        node,
                        " with auto_pad SAME_* (explicit pads are read)",
                    ));
                }
                let padding = match c.padding {
                    PaddingConfig2d::Valid => [0, 0],
                    PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => [t, l],
                    PaddingConfig2d::Explicit(..) => {
                        return Err(unsupported(node, " with asymmetric padding"));
                    }
                };
                let [c_out, c_in_g, ..] = w.shape[..] else {
                    return Err(unsupported(
                        node,
                        format!(" with a weight of shape {:?}", w.shape),
                    ));
                };
                let layer = conv2d::Conv2d {
                    in_channels: c_in_g
                        .checked_mul(c.groups)
                        .ok_or_else(|| unsupported(node, format!(" with group = {}", c.groups)))?,
                    out_channels: c_out,
                    kernel: c.kernel_size,
                    stride: c.stride,
                    padding,
                    dilation: c.dilation,
                    groups: c.groups,
                };
                self.layer(&x, layer.into(), vec![w, b])
            }
            Node::Relu(_) => self.act(node, Activation::Relu)?,
            Node::Tanh(_) => self.act(node, Activation::Tanh)?,
            Node::Sigmoid(_) => self.act(node, Activation::Sigmoid)?,
            Node::Gelu(_) => self.act(node, Activation::Gelu)?,
            Node::Softplus(_) => self.act(node, Activation::Softplus)?,
            Node::Elu(n) => {
                if n.config.alpha != 1.0 {
                    return Err(unsupported(
                        node,
                        format!(" with alpha = {} (alpha = 1 is read)", n.config.alpha),
                    ));
                }
                self.act(node, Activation::Elu)?
            }
            Node::MaxPool2d(n) => {
                let c = &n.config;
                let geometry = (c.kernel_size, c.strides, c.dilation, c.ceil_mode);
                self.pool(node, geometry, &c.padding, &c.auto_pad, |kernel| {
                    max_pool::MaxPool2d { kernel }.into()
                })?
            }
            Node::AveragePool2d(n) => {
                let c = &n.config;
                let geometry = (c.kernel_size, c.strides, c.dilation, c.ceil_mode);
                self.pool(node, geometry, &c.padding, &c.auto_pad, |kernel| {
                    avg_pool::AvgPool2d { kernel }.into()
                })?
            }
            Node::BatchNormalization(n) => {
                let BatchNormConfig::Static(c) = &n.config else {
                    return Err(unsupported(
                        node,
                        " whose scale, bias, mean or variance is computed in the graph (constants are read)",
                    ));
                };
                let x = self.chain(node, 0)?;
                if self.rank_of(&ins[0]) != 4 {
                    return Err(unsupported(
                        node,
                        " on vectors (BatchNorm2d on images is read)",
                    ));
                }
                let [gamma, beta, mean, var] =
                    [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")]
                        .map(|(i, what)| self.weight(node, i, what));
                let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
                let layer = batch_norm::BatchNorm2d {
                    channels: gamma.values.len(),
                    eps: shortest_decimal(c.epsilon),
                };
                self.push(
                    &x,
                    Op::Layer {
                        layer: layer.into(),
                        params: vec![gamma, beta],
                        buffers: vec![mean, var],
                    },
                )
            }
            Node::Flatten(n) => {
                let x = self.chain(node, 0)?;
                if n.config.axis != 1 {
                    return Err(unsupported(
                        node,
                        format!(" with axis = {} (axis 1 is read)", n.config.axis),
                    ));
                }
                if self.rank_of(&ins[0]) == 2 {
                    Value::Chain(x)
                } else {
                    self.layer(&x, Layer::flatten(), vec![])
                }
            }
            Node::Reshape(n) => {
                let x = self.chain(node, 0)?;
                let (from, to) = (
                    self.rank_of(&ins[0]),
                    node.outputs().first().map_or(0, rank),
                );
                // A flatten keeps the batch and puts every feature of a point in one row:
                // `[0 or -1, features]`, `[0, -1]`, or a shape computed at run time whose
                // result the parser knows to be `[batch, features]`.
                let features = self.features(&x);
                let is = |d: i64| features.is_some_and(|f| usize::try_from(d) == Ok(f));
                let flattens = match &n.config.shape {
                    ReshapeInput::Static(s) => {
                        s.len() == 2
                            && ((s[0] == 0 && (s[1] == -1 || is(s[1]))) || (s[0] == -1 && is(s[1])))
                    }
                    ReshapeInput::Runtime(r) => {
                        let target =
                            ins.get(r.input_index)
                                .and_then(|a| match self.values.get(&a.name) {
                                    Some(Value::Shape(Some(dims))) => Some(dims.clone()),
                                    _ => None,
                                });
                        match target.as_deref() {
                            Some([Dim::Batch, Dim::Fixed(-1)]) => true,
                            Some([Dim::Batch | Dim::Fixed(-1), Dim::Fixed(k)]) => is(*k),
                            _ => false,
                        }
                    }
                };
                match (from, to) {
                    (4, 2) if flattens => self.layer(&x, Layer::flatten(), vec![]),
                    (2, 2) if flattens => Value::Chain(x),
                    _ => {
                        return Err(unsupported(
                            node,
                            format!(
                                " from rank {from} to rank {to}, target {:?} (only a flatten to [batch, {}] is read)",
                                n.config.shape,
                                features.map_or("features".to_string(), |f| f.to_string())
                            ),
                        ));
                    }
                }
            }
            Node::Identity(_) | Node::Dropout(_) => Value::Chain(self.chain(node, 0)?),
            Node::Div(_) | Node::Mul(_) | Node::Erf(_) => self.gelu_step(node)?,
            _ => return Err(unsupported(node, "")),
        };
        self.set(node, value);
        Ok(())
    }

    /// The entries of a shape computation's output, where they can be followed: `Shape` of
    /// the points (the batch first), `Gather` of one entry, `Unsqueeze`/`Squeeze`/`Cast`
    /// (unchanged), `Concat` (joined), constants.
    fn shape_dims(&self, node: &Node, op: &str) -> Option<Vec<Dim>> {
        let ins = node.inputs();
        let dims_of = |a: &Argument| -> Option<Vec<Dim>> {
            match self.values.get(&a.name) {
                Some(Value::Shape(d)) => d.clone(),
                _ => constant(a).map(|t| t.values.iter().map(|&v| Dim::Fixed(v as i64)).collect()),
            }
        };
        match op {
            "Shape" => {
                let rank = ins.first().map_or(0, |a| self.rank_of(a));
                Some(
                    (0..rank)
                        .map(|i| if i == 0 { Dim::Batch } else { Dim::Unknown })
                        .collect(),
                )
            }
            "Gather" => {
                let dims = dims_of(ins.first()?)?;
                let index = constant(ins.get(1)?)?;
                let [i] = index.values[..] else { return None };
                let i = if i < 0.0 { dims.len() as f64 + i } else { i };
                dims.get(i as usize).map(|d| vec![*d])
            }
            "Unsqueeze" | "Squeeze" | "Cast" => dims_of(ins.first()?),
            "Concat" => ins
                .iter()
                .map(dims_of)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat()),
            _ => None,
        }
    }

    /// Features per point after `chain`.
    fn features(&self, chain: &[usize]) -> Option<usize> {
        let layers = self.layers(chain, &mut Vec::new(), &mut Vec::new());
        if layers.is_empty() {
            return Some(self.point.iter().product());
        }
        crate::network::Plan::compile(&self.point, &layers)
            .ok()
            .map(|p| p.output.numel())
    }

    fn rank_of(&self, arg: &Argument) -> usize {
        self.ranks
            .get(&arg.name)
            .copied()
            .unwrap_or_else(|| rank(arg))
    }

    fn act(&mut self, node: &Node, activation: Activation) -> Result<Value> {
        let x = self.chain(node, 0)?;
        Ok(self.layer(&x, Layer::act(activation), vec![]))
    }

    fn linear(&mut self, node: &Node, x: &[usize], w: Tensor, bias: Tensor) -> Result<Value> {
        let (out, inp) = (w.shape[0], w.shape[1]);
        let bias = match bias.shape.as_slice() {
            [n] | [1, n] if *n == out => Tensor {
                shape: vec![out],
                ..bias
            },
            _ => {
                return Err(unsupported(
                    node,
                    format!(" with a bias of shape {:?} for {out} outputs", bias.shape),
                ));
            }
        };
        Ok(self.layer(x, Layer::linear(inp, out), vec![w, bias]))
    }

    /// A pooling layer of kernel = stride without padding, dilation or ceil mode (the
    /// geometry of `nn.MaxPool2d(k)` / `nn.AvgPool2d(k)`): `(kernel, strides, dilation,
    /// ceil_mode)`.
    fn pool(
        &mut self,
        node: &Node,
        (kernel, strides, dilation, ceil_mode): ([usize; 2], [usize; 2], [usize; 2], bool),
        padding: &PaddingConfig2d,
        auto_pad: &AutoPad,
        layer: impl FnOnce([usize; 2]) -> Layer,
    ) -> Result<Value> {
        let no_pad = matches!(
            padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        );
        if kernel != strides
            || !no_pad
            || dilation != [1, 1]
            || ceil_mode
            || !matches!(auto_pad, AutoPad::NotSet | AutoPad::Valid)
        {
            return Err(unsupported(
                node,
                format!(
                    " with kernel {kernel:?}, strides {strides:?}, padding {padding}, dilation {dilation:?}, ceil_mode {ceil_mode} (kernel = stride without padding is read)"
                ),
            ));
        }
        let x = self.chain(node, 0)?;
        Ok(self.layer(&x, layer(kernel), vec![]))
    }

    /// `Add`: a residual merge, a MatMul's bias, or the `1 +` of GELU's erf pattern.
    fn add(&mut self, node: &Node) -> Result<Value> {
        let ins = node.inputs();
        if ins.len() != 2 {
            return Err(unsupported(node, " with other than two inputs"));
        }
        let (a, b) = (
            self.values.get(&ins[0].name).cloned(),
            self.values.get(&ins[1].name).cloned(),
        );
        let (ca, cb) = (constant(&ins[0]), constant(&ins[1]));
        match (a, b) {
            (Some(Value::Chain(a)), Some(Value::Chain(b))) => {
                let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                if long.len() > short.len() && long.starts_with(&short) {
                    let body = long[short.len()..].to_vec();
                    self.ops.push(Op::Residual(body));
                    let mut chain = short;
                    chain.push(self.ops.len() - 1);
                    Ok(Value::Chain(chain))
                } else {
                    Err(unsupported(
                        node,
                        " of two branches that are not x and f(x) (only residual blocks x + f(x) are read)",
                    ))
                }
            }
            (Some(Value::MatMul(x, w, _)), None) | (None, Some(Value::MatMul(x, w, _))) => {
                let bias = ca
                    .or(cb)
                    .ok_or_else(|| unsupported(node, " of a MatMul and a runtime value"))?;
                self.linear(node, &x, w, bias)
            }
            (Some(Value::Gelu(GeluStep::Erf, x, from)), None)
            | (None, Some(Value::Gelu(GeluStep::Erf, x, from)))
                if ca
                    .as_ref()
                    .or(cb.as_ref())
                    .is_some_and(|c| is_scalar(c, 1.0, 0.0)) =>
            {
                Ok(Value::Gelu(GeluStep::OnePlus, x, from))
            }
            _ => Err(unsupported(node, " of a constant to the points")),
        }
    }

    /// `Div`, `Mul` and `Erf` as steps of $\tfrac12 x(1 + \operatorname{erf}(x/\sqrt2))$.
    fn gelu_step(&mut self, node: &Node) -> Result<Value> {
        let ins = node.inputs();
        let get = |i: usize| ins.get(i).and_then(|a| self.values.get(&a.name).cloned());
        let cst = |i: usize| ins.get(i).and_then(constant);
        let name = node.name().to_string();
        let not_gelu = || unsupported(node, " outside GELU's erf pattern x·½(1 + erf(x/√2))");
        let sqrt2 = std::f64::consts::SQRT_2;
        let tol = 1e-6;
        let out = match (node, get(0), get(1)) {
            (Node::Erf(_), Some(Value::Gelu(GeluStep::Scaled, x, from)), _) => {
                Value::Gelu(GeluStep::Erf, x, from)
            }
            (Node::Div(_), Some(Value::Chain(x)), None)
                if cst(1).is_some_and(|c| is_scalar(&c, sqrt2, tol)) =>
            {
                Value::Gelu(GeluStep::Scaled, x, name)
            }
            (Node::Mul(_), a, b) => {
                let (v, c, other) = match (a, b) {
                    (Some(v), None) => (Some(v), cst(1), None),
                    (None, Some(v)) => (Some(v), cst(0), None),
                    (Some(v), Some(w)) => (Some(v), None, Some(w)),
                    (None, None) => (None, None, None),
                };
                match (v, c, other) {
                    (Some(Value::Chain(x)), Some(c), None) if is_scalar(&c, 1.0 / sqrt2, tol) => {
                        Value::Gelu(GeluStep::Scaled, x, name)
                    }
                    (Some(Value::Chain(x)), Some(c), None) if is_scalar(&c, 0.5, 0.0) => {
                        Value::Gelu(GeluStep::Half, x, name)
                    }
                    (Some(Value::Gelu(GeluStep::Times, x, _)), Some(c), None)
                        if is_scalar(&c, 0.5, 0.0) =>
                    {
                        return Ok(self.layer(&x, Layer::act(Activation::Gelu), vec![]));
                    }
                    (Some(p), None, Some(q)) => match (p, q) {
                        (Value::Chain(x), Value::Gelu(GeluStep::OnePlus, y, from))
                        | (Value::Gelu(GeluStep::OnePlus, y, from), Value::Chain(x))
                            if x == y =>
                        {
                            Value::Gelu(GeluStep::Times, x, from)
                        }
                        (
                            Value::Gelu(GeluStep::Half, x, _),
                            Value::Gelu(GeluStep::OnePlus, y, _),
                        )
                        | (
                            Value::Gelu(GeluStep::OnePlus, y, _),
                            Value::Gelu(GeluStep::Half, x, _),
                        ) if x == y => {
                            return Ok(self.layer(&x, Layer::act(Activation::Gelu), vec![]));
                        }
                        _ => return Err(not_gelu()),
                    },
                    _ => return Err(not_gelu()),
                }
            }
            _ => return Err(not_gelu()),
        };
        Ok(out)
    }
}

/// ONNX keeps float attributes in f32: ε = 1e-5 arrives as 9.99999974738e-6. The shortest
/// decimal that rounds to the same f32 (what the exporter was given: `1e-5`) is read instead.
fn shortest_decimal(value: f64) -> f64 {
    let single = value as f32;
    if f64::from(single) == value {
        single.to_string().parse().unwrap_or(value)
    } else {
        value
    }
}

/// A 2-D tensor transposed (`[a, b]` → `[b, a]`).
fn transpose(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut values = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            values[j * r + i] = t.values[i * c + j];
        }
    }
    Tensor {
        source: t.source.clone(),
        shape: vec![c, r],
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_attributes_read_as_the_decimal_they_were_written_from() {
        assert_eq!(shortest_decimal(f64::from(1e-5f32)), 1e-5);
        assert_eq!(shortest_decimal(f64::from(1e-3f32)), 1e-3);
        assert_eq!(shortest_decimal(f64::from(0.1f32)), 0.1);
        // Not an f32: kept as is.
        assert_eq!(shortest_decimal(1e-5 + 1e-20), 1e-5 + 1e-20);
    }

    #[test]
    fn transposes_row_major() {
        let t = Tensor {
            source: String::new(),
            shape: vec![2, 3],
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let u = transpose(&t);
        assert_eq!(
            (u.shape, u.values),
            (vec![3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
        );
    }

    #[test]
    fn bytes_that_are_not_onnx_are_an_error() {
        let e = OnnxNetwork::from_bytes(b"not a protobuf message").unwrap_err();
        assert!(matches!(e, OpsError::Onnx(_)), "{e:?}");
    }
}
