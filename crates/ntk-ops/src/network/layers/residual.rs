//! A residual block $y = x + g(x)$ around a nested sequence of layers.
//!
//! Tangent $\dot y = \dot x + \dot g$; adjoint $\bar x = \bar y + \bar x_g$.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::network::layer::{Batch, Ctx, Grads, Layer, LayerRule, LayerSpec, Op, Saved};
use crate::network::pass;
use crate::network::plan::{Compiler, Node, Site, Values, invalid};
use crate::network::shape::Shape;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// A residual block $x \mapsto x + g(x)$: `body` ($g$) must keep the point's shape. In
/// PyTorch, a module at index $i$ whose `nn.Sequential` attribute `body` holds $g$: its
/// parameters are named `i.body.j.weight`, `i.body.j.bias`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Residual {
    /// The layers of $g$.
    pub body: Vec<Layer>,
}

/// A compiled residual block.
#[derive(Clone, Debug)]
pub(crate) struct ResidualBlock {
    body: Vec<Node>,
}

impl LayerSpec for Residual {
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        let body = c.sequence(&self.body, &format!("{name}.body."), input)?;
        let out = body.last().map_or(input, |n| n.site.output);
        if out != input {
            return Err(invalid(format!(
                "{name}: residual body maps {:?} to {:?}",
                input.torch(),
                out.torch()
            )));
        }
        Ok(Node::new(
            Op::Residual(ResidualBlock { body }),
            input,
            input,
        ))
    }
}

impl LayerRule for ResidualBlock {
    fn forward<B: Backend>(&self, _: &Site, values: &Values<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        x.clone() + pass::forward(&self.body, values, x)
    }

    fn forward_saving<B: Backend>(
        &self,
        _: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        let (g, saved) = pass::forward_saving(&self.body, values, x.clone());
        (x + g, Saved::Residual(saved))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        let s = saved.body();
        let g = pass::tangent(&self.body, s, cx.values, cx.batch, xdot.clone(), v);
        match (xdot, g) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        }
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        grads: &mut Grads<B>,
        need_input: bool,
    ) -> Option<Tensor<B, 4>> {
        let s = saved.body();
        let batch: Batch = cx.batch;
        match pass::adjoint(
            &self.body,
            s,
            cx.values,
            batch,
            ybar.clone(),
            grads,
            need_input,
        ) {
            Some(g) => Some(ybar + g),
            None => Some(ybar),
        }
    }

    fn init(&self, _: &Site, layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
        for node in &self.body {
            node.init(layout, rng, theta);
        }
    }

    fn saved_entries(&self, site: &Site) -> usize {
        site.output.numel() + self.body.iter().map(Node::saved_entries).sum::<usize>()
    }

    fn widest(&self, site: &Site) -> usize {
        self.body
            .iter()
            .map(Node::widest)
            .max()
            .unwrap_or(0)
            .max(site.output.numel())
    }
}
