//! Moving tensors between a burn device and host vectors, and value checks.

use burn::prelude::Backend;
use burn::tensor::{Element, ElementConversion, Tensor, TensorCreationOptions, TensorData};
use nalgebra::DMatrix;

use crate::error::{OpsError, Result};

/// `t` as a tensor no one else holds.
///
/// burn-ndarray moves an unshared tensor's storage out as is (about 1 ns per entry), but
/// copies a shared one (a tensor the caller still holds, a parameter) element by element
/// through a dynamic-rank iterator (about 30 ns per entry: 24 ms for 803k parameters). One
/// elementwise operation, exact ($x \cdot 1 = x$, NaN and $-0$ included), makes a fresh
/// tensor; on an unshared one it costs one pass, on a GPU one small kernel.
fn unshared<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    t.mul_scalar(1.0)
}

/// The entries of a float tensor, row-major, as `f64`. The tensor first goes through one
/// exact elementwise operation: burn-ndarray copies a tensor someone else still holds out
/// element by element (about 30 ns per entry), a fresh one as is.
pub fn to_vec_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    unshared(t)
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("float tensor converts to f64")
}

/// The entries of a float tensor, row-major, in the backend's element type (the same copy
/// as [`to_vec_f64`]).
pub fn to_vec_elem<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<B::FloatElem> {
    unshared(t)
        .into_data()
        .convert::<B::FloatElem>()
        .into_vec::<B::FloatElem>()
        .expect("float tensor converts to its element type")
}

/// Creation options on `device` with the backend's own float type.
///
/// burn 0.21 keys default dtypes by device, so without an explicit dtype the
/// first backend to touch a device (say `NdArray<f64>`) fixes the float type
/// of every later `NdArray<E>` tensor created there. Every tensor this crate
/// creates goes through here.
pub fn float_opts<B: Backend>(device: &B::Device) -> TensorCreationOptions<B> {
    TensorCreationOptions::new(device.clone()).with_dtype(<B::FloatElem as Element>::dtype())
}

/// A zero tensor in the backend's float type.
pub fn zeros<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::zeros(shape, float_opts::<B>(device))
}

/// A tensor of shape `shape` from row-major values already in the backend's float type (no
/// conversion): what host code computing in `B::FloatElem` hands back.
pub fn tensor_from_elems<B: Backend, const D: usize>(
    values: Vec<B::FloatElem>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), float_opts::<B>(device))
}

/// A host matrix in the backend's float type as a 2-d tensor.
pub fn from_dmatrix_elems<B: Backend>(m: &DMatrix<B::FloatElem>, device: &B::Device) -> Tensor<B, 2>
where
    B::FloatElem: nalgebra::Scalar,
{
    let (r, c) = m.shape();
    tensor_from_elems(m.transpose().as_slice().to_vec(), [r, c], device)
}

/// A 2-d tensor as a host matrix in the backend's float type (no conversion).
pub fn to_dmatrix_elems<B: Backend>(t: Tensor<B, 2>) -> DMatrix<B::FloatElem>
where
    B::FloatElem: nalgebra::Scalar,
{
    let [r, c] = t.dims();
    DMatrix::from_row_slice(r, c, &to_vec_elem(t))
}

/// A 2-d tensor built from row-major `f64` values.
pub fn tensor_from_f64<B: Backend>(
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values, [rows, cols]).convert::<B::FloatElem>(),
        float_opts::<B>(device),
    )
}

/// A 1-d tensor built from `f64` values, in the backend's float type.
///
pub fn tensor1_from_f64<B: Backend>(values: Vec<f64>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(
        TensorData::new(values, [n]).convert::<B::FloatElem>(),
        float_opts::<B>(device),
    )
}

/// A 2-d tensor as a host matrix of `f64`.
pub fn to_dmatrix_f64<B: Backend>(t: Tensor<B, 2>) -> DMatrix<f64> {
    let [r, c] = t.dims();
    DMatrix::from_row_slice(r, c, &to_vec_f64(t))
}

/// A host matrix as a 2-d tensor.
pub fn from_dmatrix_f64<B: Backend>(m: &DMatrix<f64>, device: &B::Device) -> Tensor<B, 2> {
    let (r, c) = m.shape();
    tensor_from_f64(m.transpose().as_slice().to_vec(), r, c, device)
}

/// Whether every entry is finite, with one reduction on the device:
/// $\sum_i 0 \cdot x_i$ is $0$ exactly when no entry is NaN or ±Inf.
pub fn all_finite<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    let s: f64 = t.clone().mul_scalar(0.0).sum().into_scalar().elem();
    s == 0.0
}

/// A typed error if `t` holds NaN or Inf (the first bad index is located on the host).
pub fn check_finite<B: Backend, const D: usize>(t: &Tensor<B, D>, what: &str) -> Result<()> {
    if all_finite(t) {
        return Ok(());
    }
    let index = to_vec_f64(t.clone()).iter().position(|x| !x.is_finite());
    Err(OpsError::NonFinite {
        what: what.to_string(),
        index,
    })
}

/// A typed error unless `t` has shape `expected`.
pub fn check_shape<B: Backend, const D: usize>(
    t: &Tensor<B, D>,
    expected: [usize; D],
    what: &str,
) -> Result<()> {
    let found = t.dims();
    if found != expected {
        return Err(OpsError::ShapeMismatch {
            what: what.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}
