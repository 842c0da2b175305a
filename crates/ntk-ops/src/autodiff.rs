//! The generic Jacobian path: any burn [`Module`] through burn-autodiff.
//!
//! Reverse mode is one backward pass of $\langle u, f(X) \rangle$. Forward
//! mode, absent from burn, is the VJP of a VJP under nested autodiff
//! ([`Nested`]): $g(u) = J^\top u$ is linear in $u$, so
//! $\nabla_u \langle v, g(u) \rangle = J v$ for any $u$ (zero is used).
//! Slower than the hand-written [`MlpJacobian`](crate::MlpJacobian), but it
//! needs nothing from the model beyond its forward pass, and serves as the
//! test oracle for the fast path.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::chunk::{RowCost, RowPlan};
use crate::convert::check_finite;
use crate::error::{OpsError, Result};
use crate::jacobian::{JacobianOperator, JacobianParams, check_output_block, check_param_block};

/// Autodiff nested twice, on which the generic path runs models.
pub(crate) type Nested<B> = Autodiff<Autodiff<B>>;

/// Collects each float parameter's gradient, flattened, in visit order.
struct GradCollector<'a, AB: AutodiffBackend> {
    grads: &'a AB::Gradients,
    out: Vec<Tensor<AB::InnerBackend, 1>>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for GradCollector<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let t = param.val();
        let g = t.grad(self.grads).unwrap_or_else(|| t.inner().zeros_like());
        self.out.push(g.reshape([-1]));
    }
}

/// Collects each float parameter, flattened, in visit order.
struct ParamCollector<B: Backend> {
    out: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for ParamCollector<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push(param.val().reshape([-1]));
    }
}

/// A module's parameters as one flat vector, in the order the module visits
/// them (field declaration order; for burn's own `nn::Linear` the weight is
/// stored `[in, out]`, unlike PyTorch).
pub fn flat_params<B: Backend, M: Module<B>>(model: &M) -> Tensor<B, 1> {
    let mut c = ParamCollector { out: Vec::new() };
    model.visit(&mut c);
    Tensor::cat(c.out, 0)
}

/// The Jacobian of any burn module `M` (on `Autodiff<Autodiff<B>>`) with forward pass
/// `forward: Fn(&M, X) -> f(X)` (`[n, d] → [n, o]`), parameters flattened in
/// visit order.
pub struct AutodiffJacobian<B: Backend, M, F> {
    model: M,
    forward: F,
    x: Tensor<B, 2>,
    n_outputs: usize,
    n_params: usize,
    plan: RowPlan,
}

impl<B, M, F> AutodiffJacobian<B, M, F>
where
    B: Backend,
    M: Module<Nested<B>>,
    F: Fn(&M, Tensor<Nested<B>, 2>) -> Tensor<Nested<B>, 2>,
{
    /// The Jacobian of `model` at inputs `x`; `x` is checked for emptiness and
    /// NaN/Inf, and the forward pass is run once on its first row to learn $o$.
    pub fn new(model: M, forward: F, x: Tensor<B, 2>) -> Result<Self> {
        let n = x.dims()[0];
        if n == 0 {
            return Err(OpsError::Empty {
                what: "X has no rows".into(),
            });
        }
        check_finite(&x, "X")?;
        let probe = forward(&model, lift(x.clone().narrow(0, 0, 1)));
        let [r, n_outputs] = probe.dims();
        if r != 1 {
            return Err(OpsError::ShapeMismatch {
                what: "forward output for one row".into(),
                expected: vec![1, n_outputs],
                found: vec![r, n_outputs],
            });
        }
        let n_params = model.num_params();
        let [_, d] = x.dims();
        let elem = std::mem::size_of::<B::FloatElem>();
        let plan = RowPlan::new(
            n,
            Self::row_cost(elem * 16 * (d + n_outputs)),
            Default::default(),
        );
        Ok(Self {
            model,
            forward,
            x,
            n_outputs,
            n_params,
            plan,
        })
    }

    /// The tape of one row costs `bytes` (both passes; the default guesses sixteen times
    /// the row's inputs and outputs, as the module's activations are unknown): rows are
    /// chunked by the one row planner under `options` (nothing is cached).
    pub fn with_options(mut self, options: JacobianParams, bytes: usize) -> Result<Self> {
        options.check()?;
        self.plan = RowPlan::new(self.x.dims()[0], Self::row_cost(bytes), options);
        Ok(self)
    }

    fn row_cost(bytes: usize) -> RowCost {
        RowCost {
            saved: 0,
            work: bytes.max(1),
        }
    }

    /// Chunks for a product with `k` columns: the tape of $k$ backward passes per row.
    fn chunks(&self, k: usize) -> impl Iterator<Item = (usize, usize)> + use<B, M, F> {
        self.plan.chunks(self.plan.product_rows(k, false))
    }

    /// $\nabla_\theta \langle u, f(X_c) \rangle$ on the inner level, for a chunk.
    fn grad_inner(&self, xc: Tensor<B, 2>, u: Tensor<Autodiff<B>, 2>) -> Tensor<Autodiff<B>, 1> {
        let out = (self.forward)(&self.model, lift(xc));
        let loss = (out * Tensor::from_inner(u)).sum();
        let grads = loss.backward();
        let mut c = GradCollector::<Nested<B>> {
            grads: &grads,
            out: Vec::new(),
        };
        self.model.visit(&mut c);
        Tensor::cat(c.out, 0)
    }
}

/// A constant on the nested backend.
fn lift<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<Nested<B>, D> {
    Tensor::from_inner(Tensor::from_inner(t))
}

impl<B, M, F> JacobianOperator<B> for AutodiffJacobian<B, M, F>
where
    B: Backend,
    M: Module<Nested<B>>,
    F: Fn(&M, Tensor<Nested<B>, 2>) -> Tensor<Nested<B>, 2>,
{
    fn n_points(&self) -> usize {
        self.x.dims()[0]
    }

    fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    fn n_params(&self) -> usize {
        self.n_params
    }

    fn device(&self) -> B::Device {
        self.x.device()
    }

    fn outputs(&self) -> Result<Tensor<B, 2>> {
        Ok(Tensor::cat(
            self.chunks(1)
                .map(|(s, m)| {
                    (self.forward)(&self.model, lift(self.x.clone().narrow(0, s, m)))
                        .inner()
                        .inner()
                })
                .collect(),
            0,
        ))
    }

    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_output_block(&u, self.n_rows())?;
        let k = u.dims()[1];
        let o = self.n_outputs;
        let cols = (0..k)
            .map(|c| {
                let mut acc: Option<Tensor<B, 1>> = None;
                for (s, m) in self.chunks(1) {
                    let uc = u
                        .clone()
                        .narrow(0, s * o, m * o)
                        .narrow(1, c, 1)
                        .reshape([m, o]);
                    let g = self
                        .grad_inner(self.x.clone().narrow(0, s, m), Tensor::from_inner(uc))
                        .inner();
                    acc = Some(match acc {
                        None => g,
                        Some(a) => a + g,
                    });
                }
                acc.expect("a chunk").reshape([self.n_params, 1])
            })
            .collect();
        Ok(Tensor::cat(cols, 1))
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params)?;
        let k = v.dims()[1];
        let o = self.n_outputs;
        let dev = self.device();
        let cols = (0..k)
            .map(|c| {
                let vc = Tensor::<Autodiff<B>, 1>::from_inner(
                    v.clone().narrow(1, c, 1).reshape([self.n_params]),
                );
                let parts = self
                    .chunks(1)
                    .map(|(s, m)| {
                        let u =
                            crate::convert::zeros::<Autodiff<B>, 2>([m, o], &dev).require_grad();
                        let g = self.grad_inner(self.x.clone().narrow(0, s, m), u.clone());
                        let grads = (g * vc.clone()).sum().backward();
                        u.grad(&grads)
                            .unwrap_or_else(|| crate::convert::zeros([m, o], &dev))
                            .reshape([m * o, 1])
                    })
                    .collect();
                Tensor::cat(parts, 0)
            })
            .collect();
        Ok(Tensor::cat(cols, 1))
    }
}

/// `nn.Linear` as PyTorch stores it (weight `[out, in]`, then bias).
#[cfg(test)]
#[derive(Module, Debug)]
pub(crate) struct TorchLinear<B: Backend> {
    /// Weight, `[out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias, `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

/// An [`Mlp`](crate::Mlp) as a burn [`Module`], visiting its parameters in
/// `state_dict` order: the generic path's view of the same network, for
/// cross-checks (an oracle independent of [`Network`](crate::Network)'s forward pass).
#[cfg(test)]
#[derive(Module, Debug)]
pub(crate) struct MlpModule<B: Backend> {
    layers: Vec<TorchLinear<B>>,
    #[module(skip)]
    config: crate::mlp::MlpConfig,
}

#[cfg(test)]
impl<B: Backend> MlpModule<B> {
    /// The network of `mlp` on the nested autodiff backend.
    pub fn from_mlp<B0: Backend<Device = B::Device>>(
        mlp: &crate::Mlp<B0>,
    ) -> MlpModule<Nested<B0>> {
        MlpModule {
            layers: mlp
                .layers()
                .iter()
                .map(|d| TorchLinear {
                    weight: Param::from_tensor(lift(d.weight.clone())),
                    bias: Param::from_tensor(lift(d.bias.clone())),
                })
                .collect(),
            config: mlp.config().clone(),
        }
    }

    /// $f(X)$, with the same activation and head as the [`Mlp`](crate::Mlp).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        let mut a = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let z = a.matmul(layer.weight.val().transpose()) + layer.bias.val().unsqueeze::<2>();
            a = if l < last {
                self.config.activation.apply(z)
            } else {
                match self.config.head {
                    crate::Head::Heteroscedastic { min_scale } => {
                        let mean = z.clone().narrow(1, 0, 1);
                        let scale =
                            crate::activation::softplus(z.narrow(1, 1, 1)).add_scalar(min_scale);
                        Tensor::cat(vec![mean, scale], 1)
                    }
                    _ => z,
                }
            };
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::dense::MlpJacobian;
    use crate::mlp::{Head, MlpConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, rel_err};

    #[test]
    fn generic_path_matches_fast_path() {
        let dev = Default::default();
        let mlp = MlpConfig::new(&[3, 6, 5, 2])
            .with_activation(Activation::Gelu)
            .with_head(Head::Heteroscedastic { min_scale: 1e-3 })
            .init::<TestBackend>(8, &dev)
            .unwrap();
        let mut rng = SplitMix64::new(1);
        let n = 7;
        let x = tensor_from_f64(rng.normal_vec(n * 3), n, 3, &dev);
        let fast = MlpJacobian::new(mlp.clone(), x.clone(), Default::default()).unwrap();
        let generic = AutodiffJacobian::new(
            MlpModule::<Nested<TestBackend>>::from_mlp(&mlp),
            MlpModule::forward,
            x,
        )
        .unwrap()
        .with_options(
            JacobianParams {
                max_chunk_rows: 3,
                ..Default::default()
            },
            1 << 10,
        )
        .unwrap();
        assert_eq!(generic.n_params(), fast.n_params());
        assert_eq!(generic.n_outputs(), 2);
        assert_eq!(
            to_vec_f64(
                flat_params(&MlpModule::<Nested<TestBackend>>::from_mlp(&mlp))
                    .inner()
                    .inner()
            ),
            mlp.flatten_f64()
        );
        let p = fast.n_params();
        let v = tensor_from_f64(rng.normal_vec(p * 2), p, 2, &dev);
        let u = tensor_from_f64(rng.normal_vec(n * 2 * 2), n * 2, 2, &dev);
        let e = rel_err(
            &to_vec_f64(generic.jvp(v.clone()).unwrap()),
            &to_vec_f64(fast.jvp(v).unwrap()),
        );
        assert!(e < 1e-12, "jvp {e}");
        let e = rel_err(
            &to_vec_f64(generic.vjp(u.clone()).unwrap()),
            &to_vec_f64(fast.vjp(u).unwrap()),
        );
        assert!(e < 1e-12, "vjp {e}");
        let e = rel_err(
            &to_vec_f64(generic.outputs().unwrap()),
            &to_vec_f64(fast.outputs().unwrap()),
        );
        assert!(e < 1e-14, "outputs {e}");
    }
}
