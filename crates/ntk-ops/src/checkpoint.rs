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
    if let Some(format) = known_other_format(bytes) {
        return Err(OpsError::NotSafetensors(format!(
            "this is {format}, not safetensors: save the weights with \
             `safetensors.torch.save_file(model.state_dict(), path)`"
        )));
    }
    let st = SafeTensors::deserialize(bytes)?;
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

/// Names a file format that is often mistaken for safetensors, from its first bytes.
fn known_other_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip archive (PyTorch's `torch.save` format, a .pt/.pth file)")
    } else if bytes.first() == Some(&0x80) && bytes.get(1).is_some_and(|v| (2..=5).contains(v)) {
        Some("a Python pickle (an old-style `torch.save` .pt/.pth file)")
    } else if bytes.starts_with(b"\x08") && bytes.windows(7).take(64).any(|w| w == b"pytorch") {
        Some("an ONNX model (read as a graph by a later version; export safetensors for now)")
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
