//! The tape-free Jacobian of a [`Network`].

use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::layer::{Batch, Grads, Saved};
use super::{Network, pass};
use crate::chunk::{RowCost, RowPlan};
use crate::convert::zeros;
use crate::error::{OpsError, Result};
use crate::jacobian::{
    JacobianOperator, JacobianOptions, check_output_block, check_param_block, transposed_copy,
};

/// The saved factors of one chunk of points, and its outputs `[m, o]`.
#[derive(Clone, Debug)]
struct Tape<B: Backend> {
    saved: Vec<Saved<B>>,
    output: Tensor<B, 2>,
    m: usize,
}

/// The tape-free Jacobian of a [`Network`] at inputs $X$.
///
/// The forward pass of each row chunk saves what the tangent and adjoint rules need
/// (layer inputs, $\sigma'(z)$, max-pool arg-maxes, normalized activations); these are
/// cached for all of $X$ when the row planner allows, else recomputed per chunk and
/// product. A product with $k$ columns costs about one forward pass with a batch of
/// $k m$ points per chunk.
#[derive(Clone, Debug)]
pub struct NetworkJacobian<B: Backend> {
    net: Network<B>,
    x: Tensor<B, 2>,
    plan: RowPlan,
    cache: Option<Vec<(usize, Tape<B>)>>,
}

impl<B: Backend> NetworkJacobian<B> {
    /// The Jacobian of `net` at `x` (`[n, n_inputs]`), checked for shape,
    /// emptiness and NaN/Inf.
    pub fn new(net: Network<B>, x: Tensor<B, 2>, options: JacobianOptions) -> Result<Self> {
        net.check_inputs(&x, "X")?;
        options.check()?;
        let elem = std::mem::size_of::<B::FloatElem>();
        let cost = RowCost {
            saved: elem * net.saved_entries_per_point(),
            work: elem * 4 * net.widest_per_point(),
        };
        let n = x.dims()[0];
        let plan = RowPlan::new(n, cost, options);
        let mut this = Self {
            net,
            x,
            plan,
            cache: None,
        };
        if plan.caches() {
            let cache = plan
                .chunks(plan.cache_rows())
                .map(|(s, len)| (s, this.tape(s, len)))
                .collect();
            this.cache = Some(cache);
        }
        Ok(this)
    }

    /// The network.
    pub fn network(&self) -> &Network<B> {
        &self.net
    }

    /// The inputs $X$.
    pub fn inputs(&self) -> &Tensor<B, 2> {
        &self.x
    }

    /// Whether the saved factors of all of $X$ are cached.
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    fn tape(&self, start: usize, len: usize) -> Tape<B> {
        let plan = &self.net.plan;
        let x = self.x.clone().narrow(0, start, len);
        let (y, saved) = pass::forward_saving(
            &plan.nodes,
            &self.net.values(),
            x.reshape(plan.input.batch(len)),
        );
        Tape {
            saved,
            output: y.reshape([len, plan.output.numel()]),
            m: len,
        }
    }

    fn for_each_chunk(
        &self,
        k: usize,
        mut f: impl FnMut(usize, &Tape<B>) -> Result<()>,
    ) -> Result<()> {
        match &self.cache {
            Some(chunks) => {
                for (start, tape) in chunks {
                    f(*start, tape)?;
                }
            }
            None => {
                for (s, len) in self.plan.chunks(self.plan.product_rows(k, false)) {
                    f(s, &self.tape(s, len))?;
                }
            }
        }
        Ok(())
    }

    /// The parameter block `[p, k]` split per layout entry as `[k, numel]`.
    fn split_block(&self, v: &Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.net
            .plan
            .layout
            .specs()
            .iter()
            .map(|s| transposed_copy(v.clone().narrow(0, s.offset, s.numel())))
            .collect()
    }
}

impl<B: Backend> NetworkJacobian<B> {
    /// $J^\top U$ where `u_of(start, outputs)` gives each chunk's function-space block
    /// (`[m·o, k]`) from that chunk's network outputs (`[m, o]`): gradients of losses of
    /// $f(X)$, one forward and one adjoint pass per chunk.
    pub(crate) fn vjp_with(
        &self,
        k: usize,
        mut u_of: impl FnMut(usize, &Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>> {
        let specs = self.net.plan.layout.specs();
        let mut grads = Grads(vec![None; specs.len()]);
        let values = self.net.values();
        self.for_each_chunk(k, |start, tape| {
            let m = tape.m;
            let uc = transposed_copy(u_of(start, &tape.output))
                .reshape(self.net.plan.output.batch(k * m));
            pass::adjoint(
                &self.net.plan.nodes,
                &tape.saved,
                &values,
                Batch { k, m },
                uc,
                &mut grads,
                false,
            );
            Ok(())
        })?;
        let dev = self.device();
        let parts = grads
            .0
            .into_iter()
            .zip(specs)
            .map(|(g, s)| g.unwrap_or_else(|| zeros([k, s.numel()], &dev)))
            .collect();
        Ok(transposed_copy(Tensor::cat(parts, 1)))
    }
}

impl JacobianOptions {
    /// A typed error for a zero memory budget.
    pub(crate) fn check(&self) -> Result<()> {
        if self.memory_budget == 0 {
            return Err(OpsError::InvalidConfig(
                "memory_budget must be positive".into(),
            ));
        }
        Ok(())
    }
}

impl<B: Backend> JacobianOperator<B> for NetworkJacobian<B> {
    fn n_points(&self) -> usize {
        self.x.dims()[0]
    }

    fn n_outputs(&self) -> usize {
        self.net.n_outputs()
    }

    fn n_params(&self) -> usize {
        self.net.n_params()
    }

    fn device(&self) -> B::Device {
        self.x.device()
    }

    fn outputs(&self) -> Result<Tensor<B, 2>> {
        let parts = match &self.cache {
            Some(chunks) => chunks.iter().map(|(_, t)| t.output.clone()).collect(),
            None => self
                .plan
                .chunks(self.plan.forward_rows())
                .map(|(s, len)| self.net.forward(self.x.clone().narrow(0, s, len)))
                .collect(),
        };
        Ok(Tensor::cat(parts, 0))
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params())?;
        let k = v.dims()[1];
        let o = self.n_outputs();
        let split = self.split_block(&v);
        let values = self.net.values();
        let mut parts = Vec::new();
        self.for_each_chunk(k, |_, tape| {
            let m = tape.m;
            let t = pass::tangent(
                &self.net.plan.nodes,
                &tape.saved,
                &values,
                Batch { k, m },
                None,
                &split,
            )
            .expect("a network with parameters has a nonzero tangent");
            parts.push(transposed_copy(t.reshape([k, m * o])));
            Ok(())
        })?;
        Ok(Tensor::cat(parts, 0))
    }

    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_output_block(&u, self.n_rows())?;
        let k = u.dims()[1];
        let o = self.n_outputs();
        self.vjp_with(k, |start, out| {
            let m = out.dims()[0];
            u.clone().narrow(0, start * o, m * o)
        })
    }
}
