//! The tape-free Jacobian of a [`Network`].

use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::layer::{Batch, Grads, Saved};
use super::{Network, pass};
use crate::chunk::{Chunked, RowCost, RowPlan};
use crate::convert::zeros;
use crate::error::{OpsError, Result};
use crate::jacobian::{
    JacobianOperator, JacobianParams, check_output_block, check_param_block, transposed_copy,
};

/// The saved factors of one chunk of points, and its outputs `[m, o]`.
#[derive(Clone, Debug)]
struct Tape<B: Backend> {
    saved: Vec<Saved<B>>,
    output: Tensor<B, 2>,
    m: usize,
}

/// The forward pass over rows `start..start + len` of `x`, keeping what the rules need.
fn tape<B: Backend>(net: &Network<B>, x: &Tensor<B, 2>, start: usize, len: usize) -> Tape<B> {
    let plan = &net.plan;
    let x = x.clone().narrow(0, start, len);
    let (y, saved) =
        pass::forward_saving(&plan.nodes, &net.values(), x.reshape(plan.input.batch(len)));
    Tape {
        saved,
        output: y.reshape([len, plan.output.numel()]),
        m: len,
    }
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
    tapes: Chunked<Tape<B>>,
}

impl<B: Backend> NetworkJacobian<B> {
    /// The Jacobian of `net` at `x` (`[n, n_inputs]`), checked for shape,
    /// emptiness and NaN/Inf.
    pub fn new(net: Network<B>, x: Tensor<B, 2>, options: JacobianParams) -> Result<Self> {
        net.check_inputs(&x, "X")?;
        options.check()?;
        let elem = std::mem::size_of::<B::FloatElem>();
        let cost = RowCost {
            saved: elem * net.saved_entries_per_point(),
            work: elem * 4 * net.widest_per_point(),
        };
        let plan = RowPlan::new(x.dims()[0], cost, options);
        let tapes = Chunked::new(plan, |s, len| tape(&net, &x, s, len));
        Ok(Self { net, x, tapes })
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
        self.tapes.cached().is_some()
    }

    /// Columns per pass of a product: a cached chunk of $m$ rows carries $k m$ tangents, which
    /// must fit in half the budget beside the cache; uncached chunks are sized per product.
    fn column_group(&self, k: usize) -> usize {
        match self.tapes.cached() {
            Some(chunks) => {
                let m = chunks.iter().map(|(_, t)| t.m).max().unwrap_or(1);
                self.tapes.plan().columns_for(m).min(k)
            }
            None => k,
        }
    }

    /// `op` on groups of at most [`Self::column_group`] columns of `block`, side by side.
    fn by_column_groups(
        &self,
        block: Tensor<B, 2>,
        op: impl Fn(Tensor<B, 2>) -> Result<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        let k = block.dims()[1];
        let kc = self.column_group(k);
        if kc >= k {
            return op(block);
        }
        let parts = (0..k)
            .step_by(kc)
            .map(|c| op(block.clone().narrow(1, c, kc.min(k - c))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 1))
    }

    fn for_each_chunk(&self, k: usize, f: impl FnMut(usize, &Tape<B>) -> Result<()>) -> Result<()> {
        let make = |s, len| tape(&self.net, &self.x, s, len);
        self.tapes.for_each(k, make, None, |t: &Tape<B>| t.m, f)
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

impl JacobianParams {
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
        let parts = self.tapes.per_chunk(
            |t| t.output.clone(),
            |s, len| self.net.forward(self.x.clone().narrow(0, s, len)),
        );
        Ok(Tensor::cat(parts, 0))
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params())?;
        if self.column_group(v.dims()[1]) < v.dims()[1] {
            return self.by_column_groups(v, |g| self.jvp(g));
        }
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
        if self.column_group(u.dims()[1]) < u.dims()[1] {
            return self.by_column_groups(u, |g| self.vjp(g));
        }
        let k = u.dims()[1];
        let o = self.n_outputs();
        self.vjp_with(k, |start, out| {
            let m = out.dims()[0];
            u.clone().narrow(0, start * o, m * o)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::network::{Layer, NetworkConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, rel_err};

    /// Cached factors whose chunk cannot carry all columns at once within the budget: the
    /// product runs its columns in groups, and equals the uncached one.
    #[test]
    fn cached_products_split_their_columns_under_the_budget() {
        let cfg = NetworkConfig::new(
            &[2, 6, 6],
            vec![
                Layer::conv2d(2, 3, 3),
                Layer::act(Activation::Tanh),
                Layer::flatten(),
                Layer::linear(48, 2),
            ],
        );
        let dev = Default::default();
        let net = cfg.init::<TestBackend>(1, &dev).unwrap();
        let n = 9;
        let x = tensor_from_f64(SplitMix64::new(2).normal_vec(n * 72), n, 72, &dev);
        let saved = 8 * net.saved_entries_per_point();
        let tight = JacobianParams {
            memory_budget: 2 * n * saved,
            ..Default::default()
        };
        let cached = NetworkJacobian::new(net.clone(), x.clone(), tight).unwrap();
        assert!(cached.is_cached());
        let k = 40;
        assert!(cached.column_group(k) < k, "{}", cached.column_group(k));
        let free = JacobianParams {
            cache_factors: false,
            ..Default::default()
        };
        let reference = NetworkJacobian::new(net, x, free).unwrap();
        let mut rng = SplitMix64::new(3);
        let (p, r) = (reference.n_params(), reference.n_rows());
        let v = tensor_from_f64(rng.normal_vec(p * k), p, k, &dev);
        let u = tensor_from_f64(rng.normal_vec(r * k), r, k, &dev);
        let pairs = [
            (cached.jvp(v.clone()).unwrap(), reference.jvp(v).unwrap()),
            (cached.vjp(u.clone()).unwrap(), reference.vjp(u).unwrap()),
        ];
        for (a, b) in pairs {
            assert_eq!(a.dims(), b.dims());
            assert!(rel_err(&to_vec_f64(a), &to_vec_f64(b)) < 1e-14);
        }
    }
}
