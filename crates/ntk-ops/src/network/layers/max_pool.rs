//! `nn.MaxPool2d(kernel)`: the maximum of each window.
//!
//! Tangent: $\dot x$ gathered at each window's arg-max; adjoint: $\bar y$ scattered back
//! there (the arg-max is fixed at the linearization point).

use burn::prelude::Backend;
use burn::tensor::{IndexingUpdateOp, Tensor};

use crate::convert::zeros;
use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::layers::avg_pool::pooled;
use crate::network::plan::{Compiler, Node, Site, Values};
use crate::network::shape::Shape;
use crate::network::tensor::{unwindows, windows};

/// `nn.MaxPool2d(kernel)`, with the geometry of
/// [`AvgPool2d`](super::avg_pool::AvgPool2d).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaxPool2d {
    /// Window `[k_h, k_w]`.
    pub kernel: [usize; 2],
}

impl LayerSpec for MaxPool2d {
    fn compile(&self, _: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        Ok(Node::new(
            Op::MaxPool2d(*self),
            input,
            pooled(name, self.kernel, input)?,
        ))
    }
}

impl LayerRule for MaxPool2d {
    fn forward<B: Backend>(&self, site: &Site, _: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = x.dims()[0];
        windows(x, self.kernel, site.output)
            .max_dim(3)
            .reshape(site.output.batch(m))
    }

    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        _: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        let m = x.dims()[0];
        let (y, idx) = windows(x, self.kernel, site.output).max_dim_with_indices(3);
        (y.reshape(site.output.batch(m)), Saved::ArgMax(idx))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        _: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        let idx = saved.arg_max();
        let (k, m) = (cx.batch.k, cx.batch.m);
        xdot.map(|t| {
            windows(t, self.kernel, cx.site.output)
                .gather(3, idx.clone().repeat_dim(0, k))
                .reshape(cx.site.output.batch(k * m))
        })
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        _: &mut Grads<B>,
        _: bool,
    ) -> Option<Tensor<B, 4>> {
        let idx = saved.arg_max();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let [c, ho, wo] = cx.site.output.dims;
        let [kh, kw] = self.kernel;
        let z = zeros::<B, 4>([k * m, c, ho * wo, kh * kw], &ybar.device()).scatter(
            3,
            idx.clone().repeat_dim(0, k),
            ybar.reshape([k * m, c, ho * wo, 1]),
            IndexingUpdateOp::Add,
        );
        Some(unwindows(z, self.kernel, cx.site.input, cx.site.output))
    }
}
