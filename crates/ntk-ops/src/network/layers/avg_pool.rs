//! `nn.AvgPool2d(kernel)`: the mean of each window, a linear map (its own tangent).
//!
//! Adjoint: each window's $\bar y$ spread evenly over the window.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values};
use crate::network::shape::Shape;
use crate::network::tensor::{unwindows, windows};

/// `nn.AvgPool2d(kernel)`: stride = kernel, no padding, trailing rows and columns that do
/// not fill a window dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AvgPool2d {
    /// Window `[k_h, k_w]`.
    pub kernel: [usize; 2],
}

/// The output shape of a `kernel`-pooling (stride = kernel) of `input`.
pub(crate) fn pooled(name: &str, kernel: [usize; 2], input: Shape) -> Result<Shape> {
    let [c, h, w] = input.dims;
    let (ho, wo) = (
        h.checked_div(kernel[0]).unwrap_or(0),
        w.checked_div(kernel[1]).unwrap_or(0),
    );
    if !input.image || ho == 0 || wo == 0 {
        return Err(crate::network::plan::invalid(format!(
            "{name}: pooling window {kernel:?} on input of shape {:?}",
            input.torch()
        )));
    }
    Ok(Shape::image(c, ho, wo))
}

impl LayerSpec for AvgPool2d {
    fn compile(&self, _: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        Ok(Node::new(
            Op::AvgPool2d(*self),
            input,
            pooled(name, self.kernel, input)?,
        ))
    }
}

impl AvgPool2d {
    fn pool<B: Backend>(&self, x: Tensor<B, 4>, out: Shape) -> Tensor<B, 4> {
        let m = x.dims()[0];
        windows(x, self.kernel, out)
            .mean_dim(3)
            .reshape(out.batch(m))
    }
}

impl LayerRule for AvgPool2d {
    fn forward<B: Backend>(&self, site: &Site, _: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.pool(x, site.output)
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        _: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        _: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        xdot.map(|t| self.pool(t, cx.site.output))
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        _: &Saved<B>,
        ybar: Tensor<B, 4>,
        _: &mut Grads<B>,
        _: bool,
    ) -> Option<Tensor<B, 4>> {
        let km = ybar.dims()[0];
        let [c, ho, wo] = cx.site.output.dims;
        let [kh, kw] = self.kernel;
        let spread = ybar
            .reshape([km, c, ho * wo, 1])
            .div_scalar((kh * kw) as f64)
            .repeat_dim(3, kh * kw);
        Some(unwindows(
            spread,
            self.kernel,
            cx.site.input,
            cx.site.output,
        ))
    }

    fn saved_entries(&self, _: &Site) -> usize {
        0
    }
}
