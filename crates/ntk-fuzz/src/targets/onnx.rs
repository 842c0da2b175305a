//! The ONNX graph reader, [`ntk_ops::onnx::OnnxNetwork::from_bytes`]: burn's `onnx-ir`
//! parser and the mapping of its graph onto layers.
//!
//! Checked on every accepted file: the parameter vector has the layout's length and is finite,
//! and the network runs forward on a batch of zeros to finite outputs of the declared width.
//! The seeds (`corpus/onnx/`) are the PyTorch exports of `tests/fixtures/pytorch/`: a CNN, a
//! residual MLP, MLPs with Gemm, MatMul + Add and GELU's erf pattern, a CNN with BatchNorm,
//! pooling and a reshape (seeds must be accepted).

use burn::tensor::Tensor;
use ntk_ops::DefaultBackend;
use ntk_ops::onnx::OnnxNetwork;
use rand::rngs::SmallRng;

/// Operator names and attribute keys the byte-level mutations splice in.
pub const DICTIONARY: &[&[u8]] = &[
    b"Gemm",
    b"MatMul",
    b"Add",
    b"Conv",
    b"Relu",
    b"Tanh",
    b"Erf",
    b"Mul",
    b"Div",
    b"Reshape",
    b"Flatten",
    b"MaxPool",
    b"AveragePool",
    b"BatchNormalization",
    b"Softmax",
    b"kernel_shape",
    b"strides",
    b"pads",
    b"transB",
    b"epsilon",
    b"location",
];

/// Reads `data` as an ONNX model; checks what is accepted.
pub fn run(data: &[u8]) -> super::Outcome {
    let onnx = OnnxNetwork::from_bytes(data).map_err(|e| super::one_line(&e.to_string()))?;
    let layout = onnx
        .config
        .layout()
        .expect("an accepted network has a layout");
    assert_eq!(onnx.params.len(), layout.n_params(), "parameter count");
    assert!(
        onnx.params
            .iter()
            .chain(&onnx.buffers)
            .all(|v| v.is_finite()),
        "a non-finite parameter was accepted"
    );
    let device = Default::default();
    let net = onnx
        .network::<DefaultBackend>(&device)
        .expect("an accepted network builds");
    let x = Tensor::<DefaultBackend, 2>::zeros([2, net.n_inputs()], &device);
    let y = net.forward(x);
    assert_eq!(y.dims(), [2, net.n_outputs()], "output shape");
    Ok(format!(
        "ok {} layers, p ~ 2^{}",
        onnx.config.layers.len(),
        super::size_class(onnx.params.len())
    ))
}

/// No format-aware mutation: the byte-level ones, with [`DICTIONARY`], reach the protobuf.
pub fn mutate(_data: &mut Vec<u8>, _rng: &mut SmallRng) {}
