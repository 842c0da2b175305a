//! `nn.LayerNorm` over all of a point's $D$ features: $y = \gamma \odot \hat x + \beta$,
//! $\hat x = (x - \bar x)/s$, $s = \sqrt{\operatorname{var}(x) + \epsilon}$.
//!
//! Tangent $\dot{\hat x} = (\dot x - \operatorname{mean}(\dot x) - \hat x\,
//! \operatorname{mean}(\hat x \odot \dot x))/s$, a self-adjoint map, so the adjoint is
//! $\bar x = (g - \operatorname{mean}(g) - \hat x\, \operatorname{mean}(\hat x \odot g))/s$
//! with $g = \gamma \odot \bar y$.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values, init_norm, invalid};
use crate::network::shape::Shape;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// `nn.LayerNorm(shape, eps)` with `shape` the point's whole shape at this layer (`[d]` or
/// `[c, h, w]`): weight and bias of that shape.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerNorm {
    /// $\epsilon$ (PyTorch default `1e-5`).
    pub eps: f64,
}

impl LayerSpec for LayerNorm {
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        if self.eps <= 0.0 || !self.eps.is_finite() {
            return Err(invalid(format!("{name}: LayerNorm eps = {}", self.eps)));
        }
        let param = c.affine(name, input.torch(), input.torch());
        Ok(Node::new(Op::LayerNorm(*self), input, input).with_param(param))
    }
}

/// $\hat x$ and $1/s$ per point of `[m, D]` (`[m, D]`, `[m, 1]`).
fn normalize<B: Backend>(x: Tensor<B, 2>, eps: f64) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let mean = x.clone().mean_dim(1);
    let centered = x - mean;
    let inv_std = centered
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    (centered * inv_std.clone(), inv_std)
}

impl LayerRule for LayerNorm {
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
        let m = x.dims()[0];
        let i = site.weight();
        let d = site.input.numel();
        let (xhat, inv_std) = normalize(x.reshape([m, d]), self.eps);
        let y = xhat.clone() * values.params[i].clone().unsqueeze::<2>()
            + values.params[i + 1].clone().unsqueeze();
        (
            y.reshape(site.output.batch(m)),
            Saved::Norm(
                xhat.reshape(site.input.batch(m)),
                inv_std.reshape([m, 1, 1, 1]),
            ),
        )
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
        let d = cx.site.input.numel();
        let xhat = xhat.clone().reshape([1, m, d]);
        let mut z =
            xhat.clone() * v[i].clone().reshape([k, 1, d]) + v[i + 1].clone().reshape([k, 1, d]);
        if let Some(t) = xdot {
            let t = t.reshape([k, m, d]);
            let proj = t.clone() - t.clone().mean_dim(2) - xhat.clone() * (xhat * t).mean_dim(2);
            let gamma = cx.values.params[i].clone().reshape([1, 1, d]);
            z = z + proj * inv_std.clone().reshape([1, m, 1]) * gamma;
        }
        Some(z.reshape(cx.site.output.batch(k * m)))
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
        let d = cx.site.input.numel();
        let y3 = ybar.reshape([k, m, d]);
        let xhat = xhat.clone().reshape([1, m, d]);
        grads.add(i, (y3.clone() * xhat.clone()).sum_dim(1).reshape([k, d]));
        grads.add(i + 1, y3.clone().sum_dim(1).reshape([k, d]));
        let g = y3 * cx.values.params[i].clone().reshape([1, 1, d]);
        let proj = g.clone() - g.clone().mean_dim(2) - xhat.clone() * (xhat * g).mean_dim(2);
        Some((proj * inv_std.clone().reshape([1, m, 1])).reshape(cx.site.input.batch(k * m)))
    }

    fn init(&self, site: &Site, layout: &ParamLayout, _: &mut SplitMix64, theta: &mut Vec<f64>) {
        init_norm(layout, site.weight(), theta);
    }
}
