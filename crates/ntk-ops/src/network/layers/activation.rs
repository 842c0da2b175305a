//! Elementwise activations as layers: $y = \sigma(z)$.
//!
//! Tangent $\dot y = \sigma'(z) \odot \dot z$; adjoint $\bar z = \sigma'(z) \odot \bar y$.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::activation::Activation;
use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved, by_derivative};
use crate::network::plan::{Compiler, Node, Site, Values};
use crate::network::shape::Shape;

impl LayerSpec for Activation {
    fn compile(&self, _: &mut Compiler, _: &str, input: Shape) -> Result<Node> {
        Ok(Node::new(Op::Act(*self), input, input))
    }
}

impl LayerRule for Activation {
    fn forward<B: Backend>(&self, _: &Site, _: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.apply(x)
    }

    fn forward_saving<B: Backend>(
        &self,
        _: &Site,
        _: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        let (y, d) = self.apply_with_derivative(x);
        (y, Saved::Derivative(d))
    }

    fn tangent<B: Backend>(
        &self,
        _: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        _: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        xdot.map(|t| by_derivative(saved, t))
    }

    fn adjoint<B: Backend>(
        &self,
        _: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        _: &mut Grads<B>,
        _: bool,
    ) -> Option<Tensor<B, 4>> {
        Some(by_derivative(saved, ybar))
    }
}
