//! The heteroscedastic Gaussian head: two outputs, a mean and a scale,
//! $y = (z_0,\ s_{\min} + \operatorname{softplus}(z_1))$.
//!
//! Tangent and adjoint multiply by the elementwise derivative
//! $(1, \operatorname{sigmoid}(z_1))$.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::activation::{sigmoid, softplus};
use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved, by_derivative};
use crate::network::plan::{Compiler, Node, Site, Values, invalid};
use crate::network::shape::Shape;

/// The head of the malaria experiment's $\mathcal N(y \mid \mu, \sigma^2)$: on a vector of
/// two, $(\mu, \sigma) = (z_0,\ s_{\min} + \operatorname{softplus}(z_1))$ ($s_{\min} = 10^{-5}$
/// there). No parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Heteroscedastic {
    /// The floor $s_{\min} \ge 0$ added to the scale.
    pub min_scale: f64,
}

impl LayerSpec for Heteroscedastic {
    fn compile(&self, _: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        if input.image || input.dims[0] != 2 {
            return Err(invalid(format!(
                "{name}: a heteroscedastic head needs 2 outputs (mean, scale), not {:?}",
                input.torch()
            )));
        }
        if !(self.min_scale >= 0.0 && self.min_scale.is_finite()) {
            return Err(invalid(format!(
                "{name}: min_scale = {} must be >= 0",
                self.min_scale
            )));
        }
        Ok(Node::new(Op::Heteroscedastic(*self), input, input))
    }
}

impl LayerRule for Heteroscedastic {
    fn forward<B: Backend>(&self, _: &Site, _: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mean = x.clone().narrow(1, 0, 1);
        let scale = softplus(x.narrow(1, 1, 1)).add_scalar(self.min_scale);
        Tensor::cat(vec![mean, scale], 1)
    }

    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        let ds = sigmoid(x.clone().narrow(1, 1, 1));
        let d = Tensor::cat(vec![ds.ones_like(), ds], 1);
        (self.forward(site, values, x), Saved::Derivative(d))
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
