//! `nn.Flatten()`: `[c, h, w]` to a vector of $c h w$ (row-major), a reshape both ways.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values};
use crate::network::shape::Shape;

/// `nn.Flatten()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Flatten;

impl LayerSpec for Flatten {
    fn compile(&self, _: &mut Compiler, _: &str, input: Shape) -> Result<Node> {
        Ok(Node::new(
            Op::Flatten(*self),
            input,
            Shape::vector(input.numel()),
        ))
    }
}

impl LayerRule for Flatten {
    fn forward<B: Backend>(&self, site: &Site, _: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = x.dims()[0];
        x.reshape(site.output.batch(m))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        _: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        _: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        xdot.map(|t| t.reshape(cx.site.output.batch(cx.batch.k * cx.batch.m)))
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        _: &Saved<B>,
        ybar: Tensor<B, 4>,
        _: &mut Grads<B>,
        _: bool,
    ) -> Option<Tensor<B, 4>> {
        Some(ybar.reshape(cx.site.input.batch(cx.batch.k * cx.batch.m)))
    }

    fn saved_entries(&self, _: &Site) -> usize {
        0
    }
}
