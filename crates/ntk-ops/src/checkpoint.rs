//! Parameters to and from safetensors files in PyTorch's `state_dict` layout.
//!
//! An `nn.Sequential` of `nn.Linear` layers and activations saved with
//! `safetensors.torch.save_file(model.state_dict(), path)` has keys `0.weight`
//! (`[out, in]`), `0.bias`, `2.weight`, … (activations hold no parameters and
//! take the odd indices). [`load_mlp`] reads such a file into an [`Mlp`] as is;
//! [`save_mlp`] writes one that PyTorch loads with `load_state_dict`.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::Backend;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{OpsError, Result};
use crate::mlp::{Mlp, MlpConfig};
use crate::params::ParamLayout;

/// Floating-point type of the tensors written to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiskDtype {
    /// 32-bit (PyTorch's default).
    #[default]
    F32,
    /// 64-bit.
    F64,
}

/// The flat parameter vector (layout order) from safetensors bytes.
///
/// Keys are looked up as `prefix + name` (e.g. prefix `"net."` for a
/// submodule); tensors in the file that the layout does not name are ignored.
/// Every tensor's presence, shape and dtype is checked against the layout before
/// anything is allocated, so a layout far larger than the file (a mistyped width)
/// is refused with the first tensor that differs, never by running out of memory.
/// NaN or ±Inf in a tensor is an error naming it. A PyTorch pickle (`torch.save`)
/// is recognised and refused with how to save safetensors instead.
pub fn params_from_bytes(layout: &ParamLayout, bytes: &[u8], prefix: &str) -> Result<Vec<f64>> {
    let st = deserialize(bytes)?;
    let mut views = Vec::with_capacity(layout.specs().len());
    for spec in layout.specs() {
        let key = format!("{prefix}{}", spec.name);
        let view = st
            .tensor(&key)
            .map_err(|_| OpsError::MissingTensor { name: key.clone() })?;
        if view.shape() != spec.shape.as_slice() {
            return Err(OpsError::TensorShape {
                name: key,
                expected: spec.shape.clone(),
                found: view.shape().to_vec(),
            });
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F64) {
            return Err(OpsError::UnsupportedDtype {
                name: key,
                dtype: format!("{:?}", view.dtype()),
            });
        }
        views.push((key, view));
    }
    // Every shape matched a tensor in the file, so p entries are really there.
    let mut theta = Vec::with_capacity(layout.n_params());
    for (key, view) in views {
        let start = theta.len();
        let data = view.data();
        if view.dtype() == Dtype::F32 {
            theta.extend(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
            );
        } else {
            theta.extend(
                data.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap())),
            );
        }
        if let Some(index) = theta[start..].iter().position(|v| !v.is_finite()) {
            return Err(OpsError::NonFiniteTensor { name: key, index });
        }
    }
    Ok(theta)
}

/// The safetensors in `bytes`; a format often mistaken for it is named, with how to convert.
fn deserialize(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    if let Some(format) = known_other_format(bytes) {
        return Err(OpsError::NotSafetensors(format!(
            "this is {format}, not safetensors: save the weights with \
             `safetensors.torch.save_file(model.state_dict(), path)`"
        )));
    }
    Ok(SafeTensors::deserialize(bytes)?)
}

/// Names a file format that is often mistaken for safetensors, from its first bytes.
fn known_other_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip archive (PyTorch's `torch.save` format, a .pt/.pth file)")
    } else if bytes.first() == Some(&0x80) && bytes.get(1).is_some_and(|v| (2..=5).contains(v)) {
        Some("a Python pickle (an old-style `torch.save` .pt/.pth file)")
    } else if bytes.starts_with(b"\x08") && bytes.windows(7).take(64).any(|w| w == b"pytorch") {
        Some("an ONNX model (give the file the .onnx extension to read it as a graph)")
    } else {
        None
    }
}

/// Safetensors bytes holding `theta` (layout order) under the layout's names.
pub fn params_to_bytes(layout: &ParamLayout, theta: &[f64], dtype: DiskDtype) -> Result<Vec<u8>> {
    if theta.len() != layout.n_params() {
        return Err(OpsError::ShapeMismatch {
            what: "theta".into(),
            expected: vec![layout.n_params()],
            found: vec![theta.len()],
        });
    }
    let buffers: Vec<Vec<u8>> = layout
        .specs()
        .iter()
        .map(|s| {
            let vals = &theta[s.offset..s.offset + s.numel()];
            match dtype {
                DiskDtype::F32 => vals
                    .iter()
                    .flat_map(|&x| (x as f32).to_le_bytes())
                    .collect(),
                DiskDtype::F64 => vals.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            }
        })
        .collect();
    let st_dtype = match dtype {
        DiskDtype::F32 => Dtype::F32,
        DiskDtype::F64 => Dtype::F64,
    };
    let views = layout
        .specs()
        .iter()
        .zip(&buffers)
        .map(|(s, b)| {
            Ok((
                s.name.clone(),
                TensorView::new(st_dtype, s.shape.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// The key prefixes of a `state_dict`'s Linear layers: every `P` with a 2-D `P.weight`, in
/// natural order (`0 < 3 < 6`, `fc1 < fc2 < fc10`, `layers.0 < layers.1`; see
/// [`natural_cmp`]).
pub fn linear_prefixes(bytes: &[u8]) -> Result<Vec<String>> {
    let st = deserialize(bytes)?;
    let mut prefixes: Vec<String> = st
        .iter()
        .filter(|(_, view)| view.shape().len() == 2)
        .filter_map(|(name, _)| name.strip_suffix(".weight").map(str::to_string))
        .collect();
    prefixes.sort_by(|a, b| natural_cmp(a, b));
    Ok(prefixes)
}

/// Natural order of keys: runs of ASCII digits compare as numbers, the rest byte by byte
/// (`fc2 < fc10`, `layers.9 < layers.10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (x, y) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            let ord = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            match a[i].cmp(&b[j]) {
                Ordering::Equal => (i, j) = (i + 1, j + 1),
                ord => return ord,
            }
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[start..]
}

/// An MLP's $\theta$ from a `state_dict` whose Linear layers have the key prefixes
/// `prefixes` (one per layer, in order; `None`: [`linear_prefixes`] of the file), with the
/// prefixes used.
///
/// A missing tensor or a shape that differs from `config` is refused with a message that
/// names the tensor, both shapes and the Linear prefixes the file holds. So is a file with
/// tensors the MLP does not use (a norm layer, a residual block's, a convolution's): read as
/// an MLP, its network would silently lose them.
pub fn mlp_params_from_state_dict(
    config: &MlpConfig,
    bytes: &[u8],
    prefixes: Option<&[String]>,
) -> Result<(Vec<f64>, Vec<String>)> {
    let found = linear_prefixes(bytes)?;
    let layers = config.widths.len().saturating_sub(1);
    let used: Vec<String> = prefixes.map_or_else(|| found.clone(), <[String]>::to_vec);
    // Found (not given) prefixes must follow one pattern: `fc1, fc2`, `0, 3, 6`; a nested
    // `2.body.0` among `0, 4` is a block an MLP cannot describe (a residual, say).
    let skeleton = |p: &str| {
        let mut out = String::new();
        for c in p.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
        out
    };
    if prefixes.is_none() && used.iter().any(|p| skeleton(p) != skeleton(&used[0])) {
        return Err(OpsError::StateDict(format!(
            "the Linear prefixes in the file ({}) do not follow one pattern, as a plain MLP's do: \
             a network with nested blocks needs its ONNX export (or name the layers with --layers)",
            used.join(",")
        )));
    }
    if let Some(twice) = used
        .iter()
        .enumerate()
        .find_map(|(i, p)| used[..i].contains(p).then_some(p))
    {
        return Err(OpsError::StateDict(format!(
            "the prefix `{twice}` is given twice in --layers ({})",
            used.join(",")
        )));
    }
    let listing = if found.is_empty() {
        "the file has no 2-D `*.weight` tensors".to_string()
    } else {
        format!("the Linear prefixes in the file are {}", found.join(","))
    };
    if used.len() != layers {
        return Err(OpsError::StateDict(format!(
            "the architecture has {layers} Linear layers but {} prefixes {} ({}); {listing}",
            used.len(),
            if prefixes.is_some() {
                "were given with --layers"
            } else {
                "were found"
            },
            used.join(",")
        )));
    }
    // The layout names layer l `{2l}.weight` / `{2l}.bias`; rename to the file's prefixes.
    let layout = config.layout();
    let renamed = ParamLayout::new(layout.specs().iter().map(|s| {
        let (index, rest) = s
            .name
            .split_once('.')
            .expect("layout keys are `index.name`");
        let l: usize = index
            .parse::<usize>()
            .expect("layout keys start with an index")
            / 2;
        (format!("{}.{rest}", used[l]), s.shape.clone())
    }));
    let theta = params_from_bytes(&renamed, bytes, "").map_err(|e| match e {
        OpsError::TensorShape {
            name,
            expected,
            found: shape,
        } => OpsError::StateDict(format!(
            "tensor `{name}`: the architecture expects shape {expected:?}, the file has {shape:?}; {listing}"
        )),
        OpsError::MissingTensor { name } => OpsError::StateDict(format!(
            "tensor `{name}` is missing; {listing}"
        )),
        other => other,
    })?;
    let named: std::collections::HashSet<&str> =
        renamed.specs().iter().map(|s| s.name.as_str()).collect();
    let mut unused: Vec<String> = deserialize(bytes)?
        .names()
        .into_iter()
        .filter(|n| !named.contains(n))
        .map(str::to_string)
        .collect();
    if !unused.is_empty() {
        unused.sort_by(|a, b| natural_cmp(a, b));
        let more = if unused.len() > 6 {
            format!(" and {} more", unused.len() - 6)
        } else {
            String::new()
        };
        unused.truncate(6);
        return Err(OpsError::StateDict(format!(
            "the file holds tensors that an MLP of Linear layers {} does not use ({}{more}): \
             a network with other layers needs its ONNX export",
            used.join(","),
            unused.join(", ")
        )));
    }
    Ok((theta, used))
}

/// An MLP with architecture `config` and parameters from a safetensors file.
pub fn load_mlp<B: Backend>(
    config: &MlpConfig,
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Mlp<B>> {
    let bytes = std::fs::read(path)?;
    let theta = params_from_bytes(&config.layout(), &bytes, "")?;
    config.with_params(&theta, device)
}

/// Writes the MLP's parameters to a safetensors file in `state_dict` layout.
pub fn save_mlp<B: Backend>(mlp: &Mlp<B>, path: impl AsRef<Path>, dtype: DiskDtype) -> Result<()> {
    let bytes = params_to_bytes(&mlp.layout(), &mlp.flatten_f64(), dtype)?;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::testing::TestBackend;

    #[test]
    fn round_trip_f64_is_exact_and_f32_rounds() {
        let dev = Default::default();
        let cfg = MlpConfig::new(&[3, 5, 2]);
        let mlp = cfg.init::<TestBackend>(4, &dev).unwrap();
        let dir = std::env::temp_dir().join(format!("ntk-ops-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (dtype, tol) in [(DiskDtype::F64, 0.0), (DiskDtype::F32, 1e-7)] {
            let path = dir.join(format!("{dtype:?}.safetensors"));
            save_mlp(&mlp, &path, dtype).unwrap();
            let back = load_mlp::<TestBackend>(&cfg, &path, &dev).unwrap();
            for (a, b) in mlp.flatten_f64().iter().zip(back.flatten_f64()) {
                assert!((a - b).abs() <= tol * a.abs(), "{dtype:?}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A file laid out as `nn.Sequential(nn.Linear(2, 1))` writes it: weight `[1, 2]`.
    #[test]
    fn pytorch_layout_gives_pytorch_forward() {
        let dev = Default::default();
        let w: Vec<u8> = [2.0f32, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b: Vec<u8> = 0.5f32.to_le_bytes().to_vec();
        let views = vec![
            (
                "0.weight",
                TensorView::new(Dtype::F32, vec![1, 2], &w).unwrap(),
            ),
            ("0.bias", TensorView::new(Dtype::F32, vec![1], &b).unwrap()),
            (
                "extra.buffer",
                TensorView::new(Dtype::F32, vec![1], &b).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let cfg = MlpConfig::new(&[2, 1]);
        let theta = params_from_bytes(&cfg.layout(), &bytes, "").unwrap();
        let mlp = cfg.with_params::<TestBackend>(&theta, &dev).unwrap();
        let x = tensor_from_f64(vec![1.0, 3.0], 1, 2, &dev);
        assert_eq!(to_vec_f64(mlp.forward(x)), vec![2.0 - 3.0 + 0.5]);
    }

    #[test]
    fn errors_name_the_tensor_and_shapes() {
        let layout = ParamLayout::sequential_linear(&[2, 3, 1]);
        let theta = vec![0.1; layout.n_params()];
        let bytes = params_to_bytes(&layout, &theta, DiskDtype::F32).unwrap();
        let wider = ParamLayout::sequential_linear(&[2, 4, 1]);
        match params_from_bytes(&wider, &bytes, "") {
            Err(OpsError::TensorShape {
                name,
                expected,
                found,
            }) => {
                assert_eq!(
                    (name.as_str(), expected, found),
                    ("0.weight", vec![4, 2], vec![3, 2])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let deeper = ParamLayout::sequential_linear(&[2, 3, 1, 1]);
        assert!(matches!(
            params_from_bytes(&deeper, &bytes, ""),
            Err(OpsError::MissingTensor { name }) if name == "4.weight"
        ));
        assert!(matches!(
            params_from_bytes(&layout, b"not a file", ""),
            Err(OpsError::Safetensors(_))
        ));
        let msg = params_from_bytes(&wider, &bytes, "")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("0.weight") && msg.contains("[4, 2]") && msg.contains("[3, 2]"));
    }

    #[test]
    fn natural_order_compares_digit_runs_as_numbers() {
        let mut keys = [
            "fc10",
            "fc2",
            "layers.10",
            "fc1",
            "layers.9",
            "6",
            "0",
            "3",
            "b",
            "a",
        ];
        keys.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            keys,
            [
                "0",
                "3",
                "6",
                "a",
                "b",
                "fc1",
                "fc2",
                "fc10",
                "layers.9",
                "layers.10"
            ]
        );
        assert_eq!(natural_cmp("fc02", "fc2"), std::cmp::Ordering::Equal);
        assert_eq!(natural_cmp("fc", "fc1"), std::cmp::Ordering::Less);
    }

    /// A `state_dict` with the keys `theta`'s layers get under `names`.
    fn state_dict(config: &MlpConfig, theta: &[f64], names: &[&str]) -> Vec<u8> {
        let layout = ParamLayout::new(config.layout().specs().iter().map(|s| {
            let (i, rest) = s.name.split_once('.').unwrap();
            let l = i.parse::<usize>().unwrap() / 2;
            (format!("{}.{rest}", names[l]), s.shape.clone())
        }));
        params_to_bytes(&layout, theta, DiskDtype::F64).unwrap()
    }

    #[test]
    fn named_and_gapped_state_dicts_map_onto_the_layers() {
        let config = MlpConfig::new(&[2, 3, 3, 1]);
        let theta: Vec<f64> = (0..config.layout().n_params()).map(|i| i as f64).collect();
        for names in [
            ["fc1", "fc2", "fc10"],
            ["0", "3", "6"],
            ["layers.0", "layers.1", "layers.2"],
        ] {
            let bytes = state_dict(&config, &theta, &names);
            assert_eq!(linear_prefixes(&bytes).unwrap(), names);
            let (read, used) = mlp_params_from_state_dict(&config, &bytes, None).unwrap();
            assert_eq!(
                (read, used),
                (theta.clone(), names.map(String::from).to_vec())
            );
        }
        // Given prefixes win over the natural order.
        let bytes = state_dict(&config, &theta, &["b", "a", "c"]);
        let given = ["b", "a", "c"].map(String::from);
        let (read, _) = mlp_params_from_state_dict(&config, &bytes, Some(&given)).unwrap();
        assert_eq!(read, theta);
        // Prefixes without a common pattern (their natural order is only alphabetical) are
        // refused without --layers; a wrong order given is refused with both shapes.
        let msg = mlp_params_from_state_dict(&config, &bytes, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("(a,b,c) do not follow one pattern"), "{msg}");
        let alphabetical = ["a", "b", "c"].map(String::from);
        let msg = mlp_params_from_state_dict(&config, &bytes, Some(&alphabetical))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`a.weight`")
                && msg.contains("[3, 2]")
                && msg.contains("[3, 3]")
                && msg.contains("a,b,c"),
            "{msg}"
        );
        let msg =
            mlp_params_from_state_dict(&MlpConfig::new(&[2, 3, 1]), &bytes, Some(&alphabetical))
                .unwrap_err()
                .to_string();
        assert!(msg.contains("2 Linear layers but 3 prefixes"), "{msg}");
        // Layers that fit but leave tensors unused: refused, naming them.
        let two = MlpConfig::new(&[2, 3, 1]);
        let given = ["b", "c"].map(String::from);
        let msg = mlp_params_from_state_dict(&two, &bytes, Some(&given))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("does not use (a.bias, a.weight)"), "{msg}");
        let twice = ["b", "b", "c"].map(String::from);
        let msg = mlp_params_from_state_dict(&config, &bytes, Some(&twice))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`b` is given twice"), "{msg}");
    }

    #[test]
    fn a_huge_layout_is_refused_before_allocating() {
        let layout = ParamLayout::sequential_linear(&[2, 3, 1]);
        let bytes =
            params_to_bytes(&layout, &vec![0.1; layout.n_params()], DiskDtype::F32).unwrap();
        for widths in [[2, 1_000_000_000, 1], [2, usize::MAX, 1]] {
            let huge = ParamLayout::sequential_linear(&widths);
            assert!(matches!(
                params_from_bytes(&huge, &bytes, ""),
                Err(OpsError::TensorShape { name, .. }) if name == "0.weight"
            ));
        }
    }

    #[test]
    fn non_finite_weights_name_the_tensor() {
        let layout = ParamLayout::sequential_linear(&[2, 3, 1]);
        let mut theta = vec![0.1; layout.n_params()];
        theta[layout.get("2.weight").unwrap().offset + 1] = f64::NAN;
        let bytes = params_to_bytes(&layout, &theta, DiskDtype::F64).unwrap();
        let e = params_from_bytes(&layout, &bytes, "").unwrap_err();
        assert!(
            matches!(&e, OpsError::NonFiniteTensor { name, index: 1 } if name == "2.weight"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`2.weight`"), "{e}");
    }

    #[test]
    fn pytorch_pickles_are_recognised() {
        let layout = ParamLayout::sequential_linear(&[2, 1]);
        for bytes in [&b"PK\x03\x04archive/data.pkl"[..], &b"\x80\x02}q\x00"[..]] {
            let e = params_from_bytes(&layout, bytes, "")
                .unwrap_err()
                .to_string();
            assert!(e.contains("torch.save") && e.contains("save_file"), "{e}");
        }
    }
}
