//! Tensor helpers shared by the layer rules.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::shape::Shape;
use crate::convert::zeros;

/// `t` (`[k·m, …]`) times `d` (`[m, …]`), `d` shared by the $k$ columns.
pub(crate) fn mul_shared<B: Backend>(t: Tensor<B, 4>, d: Tensor<B, 4>) -> Tensor<B, 4> {
    let dims = t.dims();
    let [m, c, h, w] = d.dims();
    let k = dims[0] / m;
    (t.reshape([k, m, c * h * w]) * d.reshape([1, m, c * h * w])).reshape(dims)
}

/// A weight tensor of shape `shape` from a flat one.
pub(crate) fn shaped<B: Backend, const D: usize>(
    t: &Tensor<B, 1>,
    shape: &[usize],
) -> Tensor<B, D> {
    let dims: [usize; D] = shape.try_into().expect("weight rank");
    t.clone().reshape(dims)
}

/// Windows of a `kernel`-pooling (stride = kernel) as `[m, c, h_o w_o, k_h k_w]`.
pub(crate) fn windows<B: Backend>(x: Tensor<B, 4>, kernel: [usize; 2], out: Shape) -> Tensor<B, 4> {
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
pub(crate) fn unwindows<B: Backend>(
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
pub(crate) fn pad_zeros<B: Backend>(
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
