//! `nn.Linear`: $y = x W^\top + b$.
//!
//! Tangent $\dot y = \dot x W^\top + x \dot W^\top + \dot b$; adjoint $\bar x = \bar y W$,
//! $\bar W = \bar y^\top x$, $\bar b = \sum \bar y$. The $k$ columns of $\dot W$ (and of
//! $\bar W$) are contracted in one matrix product each.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::jacobian::transposed_copy;
use crate::network::layer::{Ctx, Grads, LayerRule, LayerSpec, Op, Saved};
use crate::network::plan::{Compiler, Node, Site, Values, init_uniform, invalid};
use crate::network::shape::Shape;
use crate::params::ParamLayout;
use crate::rng::SplitMix64;

/// `nn.Linear(in_features, out_features)`: weight `[out, in]`, bias `[out]`; its input is
/// a vector (after `Flatten`, another `Linear`, or a vector input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Linear {
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
}

impl LayerSpec for Linear {
    fn compile(&self, c: &mut Compiler, name: &str, input: Shape) -> Result<Node> {
        let (i, o) = (self.in_features, self.out_features);
        if input.image || input.dims[0] != i {
            return Err(invalid(format!(
                "{name}: Linear({i}, {o}) on input of shape {:?}",
                input.torch()
            )));
        }
        if o == 0 {
            return Err(invalid(format!("{name}: Linear with no outputs")));
        }
        let param = c.affine(name, vec![o, i], vec![o]);
        Ok(Node::new(Op::Linear(*self), input, Shape::vector(o)).with_param(param))
    }
}

impl LayerRule for Linear {
    fn forward<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let m = x.dims()[0];
        let i = site.weight();
        let z = x
            .reshape([m, self.in_features])
            .matmul(values.shaped::<2>(i).transpose())
            + values.params[i + 1].clone().unsqueeze::<2>();
        z.reshape(site.output.batch(m))
    }

    fn forward_saving<B: Backend>(
        &self,
        site: &Site,
        values: &Values<B>,
        x: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Saved<B>) {
        (self.forward(site, values, x.clone()), Saved::Input(x))
    }

    fn tangent<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        xdot: Option<Tensor<B, 4>>,
        v: &[Tensor<B, 2>],
    ) -> Option<Tensor<B, 4>> {
        let a = saved.input();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let (o, d) = (self.out_features, self.in_features);
        // x Ẇ_cᵀ for all columns at once: [m, d] × [d, k·o]
        let wdot = v[i].clone().reshape([k * o, d]);
        let mut z = a
            .clone()
            .reshape([m, d])
            .matmul(transposed_copy(wdot))
            .reshape([m, k, o])
            .swap_dims(0, 1)
            + v[i + 1].clone().reshape([k, 1, o]);
        if let Some(t) = xdot {
            let w = cx.values.shaped::<2>(i);
            z = z + t
                .reshape([k * m, d])
                .matmul(w.transpose())
                .reshape([k, m, o]);
        }
        Some(z.reshape([k * m, o, 1, 1]))
    }

    fn adjoint<B: Backend>(
        &self,
        cx: &Ctx<B>,
        saved: &Saved<B>,
        ybar: Tensor<B, 4>,
        grads: &mut Grads<B>,
        need_input: bool,
    ) -> Option<Tensor<B, 4>> {
        let a = saved.input();
        let (k, m) = (cx.batch.k, cx.batch.m);
        let i = cx.site.weight();
        let (o, d) = (self.out_features, self.in_features);
        let y3 = ybar.reshape([k, m, o]);
        // W̄_c = ȳ_cᵀ a, all columns in one product: [k·o, m] × [m, d]
        let yt = y3.clone().swap_dims(1, 2).reshape([k * o, m]);
        grads.add(i, yt.matmul(a.clone().reshape([m, d])).reshape([k, o * d]));
        grads.add(i + 1, y3.clone().sum_dim(1).reshape([k, o]));
        need_input.then(|| {
            y3.reshape([k * m, o])
                .matmul(cx.values.shaped::<2>(i))
                .reshape([k * m, d, 1, 1])
        })
    }

    fn init(&self, site: &Site, layout: &ParamLayout, rng: &mut SplitMix64, theta: &mut Vec<f64>) {
        init_uniform(layout, site.weight(), rng, theta);
    }
}
