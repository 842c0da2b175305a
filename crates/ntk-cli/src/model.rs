//! The trained network a command adapts: an ONNX graph, or a safetensors `state_dict` with
//! `--arch` (and `--layers`), read into an [`ntk_ops::NetworkConfig`] and its parameters.
//!
//! - `FILE.onnx`: the graph gives the layers and the weights (external data files next to it
//!   are followed); `--arch`, if given, is checked against it. The operators read are
//!   [`ntk_ops::onnx::OPERATORS_READ`].
//! - any other file: safetensors as `safetensors.torch.save_file(model.state_dict(), path)`
//!   writes it, with `--arch WIDTHS:ACTIVATION`. The Linear layers' key prefixes are
//!   `--layers P1,P2,…`, or else every prefix with a 2-D `weight`, in natural order
//!   (`0 < 3 < 6`, `fc1 < fc2 < fc10`, `layers.0 < layers.1`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use ntk_ops::checkpoint::mlp_params_from_state_dict;
use ntk_ops::onnx::OnnxNetwork;
use ntk_ops::{Activation, Layer, MlpConfig, Network, NetworkConfig};

use crate::error::CliError;
use crate::spec::{ActivationName, ArchConfig};

/// A network read from a file, before it is put on a device.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The file.
    pub path: PathBuf,
    /// The layers and the input shape.
    pub config: NetworkConfig,
    /// $\theta$ in layout order.
    pub params: Vec<f64>,
    /// BatchNorm buffers.
    pub buffers: Vec<f64>,
    /// Where each parameter tensor came from (its key in the file), in layout order.
    pub sources: Vec<String>,
    /// What kind of file it was.
    pub format: ModelFormat,
}

/// The kind of model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// An ONNX graph.
    Onnx,
    /// A safetensors `state_dict` with `--arch`.
    StateDict,
}

/// The activation an `--arch` names.
pub fn activation(a: ActivationName) -> Activation {
    match a {
        ActivationName::Tanh => Activation::Tanh,
        ActivationName::Relu => Activation::Relu,
        ActivationName::Elu => Activation::Elu,
        ActivationName::Gelu => Activation::Gelu,
        ActivationName::Sigmoid => Activation::Sigmoid,
        ActivationName::Softplus => Activation::Softplus,
    }
}

/// The MLP an `--arch` describes.
pub fn mlp_config(arch: &ArchConfig) -> MlpConfig {
    MlpConfig::new(&arch.widths).with_activation(activation(arch.activation))
}

/// Whether `path` names an ONNX file (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads the model file: ONNX by extension, else a safetensors `state_dict`.
pub fn load_model(
    path: &Path,
    arch: Option<&ArchConfig>,
    layers: Option<&[String]>,
) -> Result<LoadedModel, CliError> {
    let model_error = |e: ntk_ops::OpsError| CliError::Model(format!("{}: {e}", path.display()));
    if is_onnx(path) {
        if layers.is_some() {
            return Err(CliError::Usage(
                "--layers names the Linear layers of a safetensors file; an ONNX graph names its own"
                    .into(),
            ));
        }
        if !path.exists() {
            return Err(CliError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let onnx = quietly(|| OnnxNetwork::read(path)).map_err(model_error)?;
        if let Some(arch) = arch {
            let expected = mlp_config(arch).network();
            if expected != onnx.config {
                return Err(CliError::Model(format!(
                    "{}: --arch {arch} does not match the graph, whose layers are {}",
                    path.display(),
                    describe_layers(&onnx.config.layers)
                )));
            }
        }
        return Ok(LoadedModel {
            path: path.to_path_buf(),
            config: onnx.config,
            params: onnx.params,
            buffers: onnx.buffers,
            sources: onnx.param_sources,
            format: ModelFormat::Onnx,
        });
    }
    let arch = arch.ok_or_else(|| {
        CliError::Usage(format!(
            "{}: a safetensors file holds no architecture: give --arch WIDTHS:ACTIVATION (an .onnx file needs none)",
            path.display()
        ))
    })?;
    let bytes = std::fs::read(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mlp = mlp_config(arch);
    let (params, prefixes) = mlp_params_from_state_dict(&mlp, &bytes, layers)
        .map_err(|e| CliError::Model(format!("{}: {e} (architecture {arch})", path.display())))?;
    let config = mlp.network();
    let sources = config
        .layout()
        .map_err(model_error)?
        .specs()
        .iter()
        .map(|s| {
            let (index, rest) = s.name.split_once('.').unwrap_or((&s.name, ""));
            let layer = index.parse::<usize>().map_or(0, |i| i / 2);
            format!("{}.{rest}", prefixes[layer])
        })
        .collect();
    Ok(LoadedModel {
        path: path.to_path_buf(),
        config,
        params,
        buffers: vec![],
        sources,
        format: ModelFormat::StateDict,
    })
}

thread_local! {
    /// Set while this thread parses an ONNX file (see [`install_quiet_panic_hook`]).
    static PARSING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs a panic hook that is silent while this thread parses an ONNX file and defers to
/// the previous hook otherwise. The ONNX parser panics on some malformed files, which
/// [`OnnxNetwork::read`] turns into an error; the command's contract is one line. The `ntk`
/// command installs it once, at start.
pub fn install_quiet_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !PARSING.get() {
            previous(info);
        }
    }));
}

/// Runs `f` with this thread marked as parsing (what the hook above keeps quiet about).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    PARSING.set(true);
    let out = f();
    PARSING.set(false);
    out
}

impl LoadedModel {
    /// The network on `device`.
    pub fn network<B: Backend>(&self, device: &B::Device) -> Result<Network<B>, CliError> {
        self.config
            .with_params(&self.params, &self.buffers, device)
            .map_err(|e| CliError::Model(format!("{}: {e}", self.path.display())))
    }

    /// Features of one input point (CSV input columns).
    pub fn n_inputs(&self) -> usize {
        self.config.n_inputs()
    }

    /// What `ntk inspect` prints: the layers, their parameter tensors and where each came
    /// from, the input shape and the output count.
    pub fn inspect(&self, n_outputs: usize) -> String {
        let mut out = String::new();
        let kind = match self.format {
            ModelFormat::Onnx => "ONNX graph",
            ModelFormat::StateDict => "safetensors state_dict",
        };
        let _ = writeln!(out, "model: {} ({kind})", self.path.display());
        let _ = writeln!(
            out,
            "input: {:?} per point ({} CSV input columns, row-major)",
            self.config.input,
            self.n_inputs()
        );
        let _ = writeln!(out, "outputs: {n_outputs}");
        let _ = writeln!(out, "parameters: {}", self.params.len());
        let _ = writeln!(out, "layers:");
        write_layers(&mut out, &self.config.layers, "  ", "");
        let _ = writeln!(
            out,
            "parameter tensors (layout key, shape, key in the file):"
        );
        if let Ok(layout) = self.config.layout() {
            for (spec, source) in layout.specs().iter().zip(&self.sources) {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<16} {source}",
                    spec.name,
                    format!("{:?}", spec.shape)
                );
            }
        }
        out
    }
}

fn write_layers(out: &mut String, layers: &[Layer], indent: &str, prefix: &str) {
    for (i, layer) in layers.iter().enumerate() {
        let _ = writeln!(out, "{indent}{prefix}{i:<3} {}", describe(layer));
        if let Layer::Residual(r) = layer {
            write_layers(
                out,
                &r.body,
                &format!("{indent}    "),
                &format!("{prefix}{i}.body."),
            );
        }
    }
}

/// One layer in a line, as PyTorch would name it.
pub fn describe(layer: &Layer) -> String {
    match layer {
        Layer::Linear(l) => format!("Linear({} → {})", l.in_features, l.out_features),
        Layer::Conv2d(c) => format!(
            "Conv2d({} → {}, kernel {:?}, stride {:?}, padding {:?}, dilation {:?}, groups {})",
            c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.dilation, c.groups
        ),
        Layer::Act(a) => format!("{a:?}"),
        Layer::AvgPool2d(p) => format!("AvgPool2d(kernel {:?})", p.kernel),
        Layer::MaxPool2d(p) => format!("MaxPool2d(kernel {:?})", p.kernel),
        Layer::Flatten(_) => "Flatten".into(),
        Layer::BatchNorm2d(b) => format!("BatchNorm2d({}, eps {:e})", b.channels, b.eps),
        Layer::LayerNorm(l) => format!("LayerNorm(eps {:e})", l.eps),
        Layer::Residual(r) => format!("Residual(x + f(x), f of {} layers)", r.body.len()),
        Layer::Heteroscedastic(h) => format!("Heteroscedastic(min scale {:e})", h.min_scale),
        other => format!("{other:?}"),
    }
}

/// The layers in one line (for messages).
pub fn describe_layers(layers: &[Layer]) -> String {
    layers.iter().map(describe).collect::<Vec<_>>().join(", ")
}
