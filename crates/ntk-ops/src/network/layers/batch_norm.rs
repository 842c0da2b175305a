//! `nn.BatchNorm2d` in eval mode: $y = \gamma \hat x + \beta$,
//! $\hat x = (x - \mu)/\sqrt{v + \epsilon}$ with the running $\mu, v$ (buffers, not
//! parameters), a per-channel affine map.
//!
//! Tangent $\dot y = \dot\gamma \hat x + \dot\beta + \gamma \dot x / \sqrt{v + \epsilon}$;
//! adjoint $\bar\gamma = \sum \bar y \hat x$, $\bar\beta = \sum \bar y$,
//! $\bar x = \gamma \bar y / \sqrt{v + \epsilon}$.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values, init_norm, invalid};
use crate::network::shape::Shape;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// `nn.BatchNorm2d(channels, eps)` in eval mode: weight and bias `[c]`, buffers
/// `running_mean` and `running_var` `[c]`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchNorm2d {
    /// Channels.
    pub channels: usize,
    /// $\epsilon$ (PyTorch default `1e-5`).
    pub eps: f64,
}

impl LayerSpec for BatchNorm2d {
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        let (ch, eps) = (self.channels, self.eps);
        if !input.image || input.dims[0] != ch || eps <= 0.0 || !eps.is_finite() {
            return Err(invalid(format!(
                "{name}: BatchNorm2d({ch}, eps = {eps}) on input of shape {:?}",
                input.torch()
            )));
        }
        let param = c.affine(name, vec![ch], vec![ch]);
        let buffer = c.running_stats(name, ch);
        Ok(Node::new(Op::BatchNorm2d(*self), input, input)
            .with_param(param)
            .with_buffer(buffer))
    }
}

impl BatchNorm2d {
    /// $1/\sqrt{v + \epsilon}$ as `[1, c, 1, 1]`.
    fn inv_std<B: Backend>(&self, site: &Site, values: &Values<B>) -> Tensor<B, 4> {
        let b = site.buffer.expect("compiled with buffers");
        values.buffers[b + 1]
            .clone()
            .reshape([1, self.channels, 1, 1])
            .add_scalar(self.eps)
            .sqrt()
            .recip()
    }

    fn channel<B: Backend>(&self, t: &Tensor<B, 1>) -> Tensor<B, 4> {
        t.clone().reshape([1, self.channels, 1, 1])
    }
}

impl LayerRule for BatchNorm2d {
    fn forward<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        self.forward_saving(site, values, x).0
    }

    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        let i = site.weight();
        let mean = self.channel(&values.buffers[site.buffer.expect("compiled with buffers")]);
        let inv_std = self.inv_std(site, values);
        let xhat = (x - mean) * inv_std.clone();
        let y =
            xhat.clone() * self.channel(&values.params[i]) + self.channel(&values.params[i + 1]);
        (y, Saved::Norm(xhat, inv_std))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        let (xhat, inv_std) = saved.norm();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let [c, h, w] = cx.site.input.dims;
        let mut z = xhat.clone().reshape([1, m, c, h * w]) * v[i].clone().reshape([k, 1, c, 1])
            + v[i + 1].clone().reshape([k, 1, c, 1]);
        if let Some(t) = xdot {
            let scale = inv_std.clone() * self.channel(&cx.values.params[i]);
            z = z + (t * scale).reshape([k, m, c, h * w]);
        }
        Some(z.reshape([k * m, c, h, w]))
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        grads: &mut Grads<B>,
        _: bool,
    ) -> Option<Tensor<B, 4>> {
        let (xhat, inv_std) = saved.norm();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let [c, h, w] = cx.site.input.dims;
        let y4 = ybar.clone().reshape([k, m, c, h * w]);
        let gg = (y4.clone() * xhat.clone().reshape([1, m, c, h * w]))
            .sum_dim(3)
            .sum_dim(1);
        grads.add(i, gg.reshape([k, c]));
        grads.add(i + 1, y4.sum_dim(3).sum_dim(1).reshape([k, c]));
        let scale = inv_std.clone() * self.channel(&cx.values.params[i]);
        Some(ybar * scale)
    }

    fn init(&self, site: &Site, layout: &ParamLayout, _: &mut SplitMix64, theta: &mut Vec<f64>) {
        init_norm(layout, site.weight(), theta);
    }
}
