//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in `ntk-ops`.
///
/// Shape and value checks happen once, where data enters (constructors of
/// Jacobian operators, [`JacobianOperator`](crate::JacobianOperator) products,
/// checkpoint loading), so the numerical code below them can assume valid input.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum OpsError {
    /// A tensor or vector has the wrong shape for the model or operator.
    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// What was checked (`"X"`, `"v"`, `"u"`, ...).
        what: String,
        /// The shape the model or operator needs.
        expected: Vec<usize>,
        /// The shape that was given.
        found: Vec<usize>,
    },
    /// Input data or a vector holds NaN or ±Inf.
    #[error("{what} contains NaN or Inf{}", .index.map(|i| format!(" (first at flat index {i})")).unwrap_or_default())]
    NonFinite {
        /// What was checked.
        what: String,
        /// Row-major index of the first bad entry, when known.
        index: Option<usize>,
    },
    /// No data points (or no columns) were given.
    #[error("empty data: {what}")]
    Empty {
        /// What was empty.
        what: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor's key (`"0.weight"`, ...).
        name: String,
    },
    /// A checkpoint tensor has a shape that differs from the model's.
    #[error("tensor `{name}`: the model expects shape {expected:?}, the checkpoint has {found:?}")]
    TensorShape {
        /// The tensor's key.
        name: String,
        /// Shape in the model.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A checkpoint tensor has a dtype other than f32 or f64.
    #[error("tensor `{name}`: unsupported dtype {dtype} (f32 and f64 are supported)")]
    UnsupportedDtype {
        /// The tensor's key.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A checkpoint tensor holds NaN or ±Inf.
    #[error("tensor `{name}` in the checkpoint contains NaN or Inf (first at flat index {index})")]
    NonFiniteTensor {
        /// The tensor's key.
        name: String,
        /// Row-major index of the first bad entry.
        index: usize,
    },
    /// The file is not safetensors but another known format; the message says how to convert.
    #[error("{0}")]
    NotSafetensors(String),
    /// A `state_dict` does not fit the architecture; the message names the tensor, both
    /// shapes and the Linear prefixes the file holds.
    #[error("{0}")]
    StateDict(String),
    /// An ONNX file could not be parsed, or its graph is not a chain the layers can express.
    #[error("onnx: {0}")]
    Onnx(String),
    /// An ONNX node whose operator (or attributes) is not read.
    #[error(
        "ONNX operator {op} (node {node}){detail} is not read; read are: {}",
        crate::onnx::OPERATORS_READ.join(", ")
    )]
    OnnxOperator {
        /// The operator type (`Softmax`, `LeakyRelu`, ...).
        op: String,
        /// The node: its name in the file in backticks, or the parser's name and a note
        /// saying so.
        node: String,
        /// What about it is not read (empty when the operator is not read at all).
        detail: String,
    },
    /// The safetensors file could not be parsed or written.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Reading or writing a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, OpsError>;
