//! The dense-chain Jacobian in burn tensor operations: an MLP's per-layer factors
//! ([`Factors`]) on any backend, the path [`Jacobian`](crate::Jacobian) takes for a dense
//! chain off the host.

use burn::prelude::Backend;
use burn::tensor::Tensor;

use crate::chunk::{Chunked, RowCost, RowPlan};
use crate::error::Result;
use crate::jacobian::{
    JacobianOperator, JacobianParams, check_output_block, check_param_block, transposed_copy,
};
use crate::mlp::{Factors, Mlp};

/// The hand-written (tape-free) Jacobian of an [`Mlp`] at inputs $X$.
///
/// Products use the per-layer factors ([`Factors`]): for a block of $k$
/// columns, $J^\top U$ costs one matrix product per layer,
/// $\nabla_{W_l} = \delta_l^\top A_l$ with $\delta_l\[i\] = \sum_j U_{ij} \Delta_l\[i, j\]$,
/// and $J V$ one more, $\sum_l \langle \Delta_l\[i, j\],\ \dot W_l a_{l-1}\[i\] + \dot b_l \rangle$:
/// about $2 n p k$ flops each once the factors are known.
#[derive(Clone, Debug)]
pub struct MlpJacobian<B: Backend> {
    mlp: Mlp<B>,
    x: Tensor<B, 2>,
    factors: Chunked<Factors<B>>,
}

impl<B: Backend> MlpJacobian<B> {
    /// The Jacobian of `mlp` at `x` (`[n, h_0]`), checked for shape, emptiness and
    /// NaN/Inf. Computes and caches the factors if [`JacobianParams`] allow.
    pub fn new(mlp: Mlp<B>, x: Tensor<B, 2>, options: JacobianParams) -> Result<Self> {
        mlp.check_inputs(&x, "X")?;
        options.check()?;
        let plan = RowPlan::new(x.dims()[0], Self::row_cost(&mlp), options);
        let factors = Chunked::new(plan, |s, len| mlp.factors(x.clone().narrow(0, s, len)));
        Ok(Self { mlp, x, factors })
    }

    /// The model.
    pub fn mlp(&self) -> &Mlp<B> {
        &self.mlp
    }

    /// The inputs $X$.
    pub fn inputs(&self) -> &Tensor<B, 2> {
        &self.x
    }

    /// Whether the factors of all of $X$ are cached.
    pub fn is_cached(&self) -> bool {
        self.factors.cached().is_some()
    }

    /// Per row: factors $\sum_l h_{l-1} + o \sum_l h_l + o + \max_l h_l$ entries; work per
    /// column $3 \max_l h_l + o$.
    fn row_cost(mlp: &Mlp<B>) -> RowCost {
        let elem = std::mem::size_of::<B::FloatElem>();
        let w = &mlp.config().widths;
        let o = mlp.n_outputs();
        let widest = w.iter().copied().max().unwrap_or(1);
        let ins: usize = w[..w.len() - 1].iter().sum();
        let outs: usize = w[1..].iter().sum();
        RowCost {
            saved: elem * (ins + o * outs + o + widest),
            work: elem * (3 * widest + o),
        }
    }

    /// Runs `f(start, factors)` over row chunks of $X$ sized for a product with
    /// `k` columns under the memory budget.
    pub fn for_each_chunk(
        &self,
        k: usize,
        mut f: impl FnMut(usize, &Factors<B>) -> Result<()>,
    ) -> Result<()> {
        self.factors.for_each(
            k,
            |s, len| self.mlp.factors(self.x.clone().narrow(0, s, len)),
            Some(&|fac: &Factors<B>, s, len| fac.narrow(s, len)),
            Factors::n_points,
            &mut f,
        )
    }

    /// The explicit Jacobian $J$ (`[n·o, p]`), from per-layer outer products.
    pub fn jacobian(&self) -> Result<Tensor<B, 2>> {
        let mut rows = Vec::new();
        let p = self.mlp.n_params();
        self.for_each_chunk(p, |_, fac| {
            rows.push(jacobian_rows(fac));
            Ok(())
        })?;
        Ok(Tensor::cat(rows, 0))
    }

    /// $J^\top U$ where `u_of(start, outputs)` gives the function-space block
    /// (`[m·o, k]`) of each chunk from that chunk's network outputs; used for
    /// gradients of losses that depend on $f(X)$ (the finite-difference Fisher).
    pub fn vjp_with(
        &self,
        k: usize,
        mut u_of: impl FnMut(usize, &Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>> {
        let mut acc: Option<Vec<(Tensor<B, 2>, Tensor<B, 2>)>> = None;
        self.for_each_chunk(k, |start, fac| {
            let u = u_of(start, &fac.output);
            let g = vjp_chunk(fac, u);
            add_pairs(&mut acc, g);
            Ok(())
        })?;
        Ok(assemble_param_block(
            &self.mlp,
            acc.expect("at least one chunk"),
            k,
        ))
    }
}

/// Adds per-layer `(weight, bias)` blocks `g` into `acc` (the first chunk's become it).
fn add_pairs<B: Backend>(
    acc: &mut Option<Vec<(Tensor<B, 2>, Tensor<B, 2>)>>,
    g: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
) {
    *acc = Some(match acc.take() {
        None => g,
        Some(a) => a
            .into_iter()
            .zip(g)
            .map(|((aw, ab), (gw, gb))| (aw + gw, ab + gb))
            .collect(),
    });
}

/// Rows of $J$ for one chunk: per layer $\Delta_l\[i,j\] \otimes a_{l-1}\[i\]$ then $\Delta_l\[i,j\]$.
fn jacobian_rows<B: Backend>(fac: &Factors<B>) -> Tensor<B, 2> {
    let mut cols = Vec::with_capacity(2 * fac.sens.len());
    for (a, d) in fac.inputs.iter().zip(&fac.sens) {
        let [m, o, h] = d.dims();
        let h_in = a.dims()[1];
        let w = d.clone().unsqueeze_dim::<4>(3) * a.clone().reshape([m, 1, 1, h_in]);
        cols.push(w.reshape([m * o, h * h_in]));
        cols.push(d.clone().reshape([m * o, h]));
    }
    Tensor::cat(cols, 1)
}

/// Per-layer gradients of one chunk: $(\delta_l^\top A_l$ as `[k·h_l, h_{l-1}]`,
/// $\sum_i \delta_l\[i\]$ as `[k, h_l]`$)$, with
/// $\delta_l\[i, c\] = \sum_j U[(i, j), c]\, \Delta_l\[i, j\]$.
///
/// The weight gradient is contracted over the data so that only the narrower
/// of $\delta_l$ (width $k h_l$) and $U \odot A_l$ (width $k h_{l-1}$) is formed
/// and transposed; the wide factor enters the matrix product as stored.
fn vjp_chunk<B: Backend>(fac: &Factors<B>, u: Tensor<B, 2>) -> Vec<(Tensor<B, 2>, Tensor<B, 2>)> {
    let m = fac.n_points();
    let o = fac.output.dims()[1];
    let k = u.dims()[1];
    let ut = transposed_copy(u.clone()); // [k, m·o]
    let u4 = u.reshape([m, o, k, 1]);
    fac.inputs
        .iter()
        .zip(&fac.sens)
        .map(|(a, d)| {
            let h = d.dims()[2];
            let h_in = a.dims()[1];
            let d2 = d.clone().reshape([m * o, h]);
            let gb = ut.clone().matmul(d2.clone()); // [k, h]
            let gw = if h <= h_in {
                let delta = (u4.clone() * d.clone().reshape([m, o, 1, h]))
                    .sum_dim(1)
                    .reshape([m, k * h]);
                transposed_copy(delta).matmul(a.clone()) // [k·h, h_in]
            } else {
                let ua =
                    (u4.clone() * a.clone().reshape([m, 1, 1, h_in])).reshape([m * o, k * h_in]);
                transposed_copy(ua)
                    .matmul(d2) // [k·h_in, h]
                    .reshape([k, h_in, h])
                    .swap_dims(1, 2)
                    .reshape([k * h, h_in])
            };
            (gw, gb)
        })
        .collect()
}

/// Per-layer gradients (`[k·h, h_in]`, `[k, h]`) as one `[p, k]` block.
fn assemble_param_block<B: Backend>(
    mlp: &Mlp<B>,
    grads: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    k: usize,
) -> Tensor<B, 2> {
    let w = &mlp.config().widths;
    let parts = grads
        .into_iter()
        .zip(w.windows(2))
        .flat_map(|((gw, gb), hw)| [gw.reshape([k, hw[1] * hw[0]]).transpose(), gb.transpose()])
        .collect();
    Tensor::cat(parts, 0)
}

/// One layer's slice of a parameter block, arranged for [`jvp_chunk`].
struct LayerTangent<B: Backend> {
    /// $\dot W$ as `[h, k·h_in]` (when $h_{\text{in}} < h$) or
    /// $\dot W^\top$ as `[h_in, k·h]` (otherwise).
    w: Tensor<B, 2>,
    /// $\dot b$ as `[h, k]`.
    b: Tensor<B, 2>,
}

/// The parameter block `v` (`[p, k]`) split per layer.
fn split_param_block<B: Backend>(mlp: &Mlp<B>, v: &Tensor<B, 2>) -> Vec<LayerTangent<B>> {
    let k = v.dims()[1];
    let layout = mlp.layout();
    layout
        .specs()
        .chunks(2)
        .map(|wb| {
            let (ws, bs) = (&wb[0], &wb[1]);
            let (h, h_in) = (ws.shape[0], ws.shape[1]);
            let wdot = v
                .clone()
                .narrow(0, ws.offset, h * h_in)
                .reshape([h, h_in, k]);
            let w = if h_in < h {
                wdot.swap_dims(1, 2).reshape([h, k * h_in])
            } else {
                wdot.permute([1, 2, 0]).reshape([h_in, k * h])
            };
            LayerTangent {
                w,
                b: v.clone().narrow(0, bs.offset, h),
            }
        })
        .collect()
}

/// $J V$ on one chunk from the split parameter block, `[m·o, k]`:
/// $\sum_l \langle \Delta_l\[i, j\],\ \dot W_l a_{l-1}\[i\] + \dot b_l \rangle$, with the
/// matrix product taken on the narrower side of each layer so that no
/// `[m, k·max(h)]` intermediate is formed.
fn jvp_chunk<B: Backend>(fac: &Factors<B>, split: &[LayerTangent<B>]) -> Tensor<B, 2> {
    let m = fac.n_points();
    let o = fac.output.dims()[1];
    let k = split[0].b.dims()[1];
    let mut acc: Option<Tensor<B, 2>> = None;
    for ((a, d), t) in fac.inputs.iter().zip(&fac.sens).zip(split) {
        let h = d.dims()[2];
        let h_in = a.dims()[1];
        let d2 = d.clone().reshape([m * o, h]);
        let yb = d2.clone().matmul(t.b.clone()); // [m·o, k]
        let yw = if h_in < h {
            // (Δ Ẇ_c)[i, j] · a_i
            let s = d2.matmul(t.w.clone()).reshape([m, o, k, h_in]);
            (s * a.clone().reshape([m, 1, 1, h_in])).sum_dim(3)
        } else {
            // Δ[i, j] · (Ẇ_c a_i)
            let s = a.clone().matmul(t.w.clone()).reshape([m, 1, k, h]);
            (s * d.clone().reshape([m, o, 1, h])).sum_dim(3)
        }
        .reshape([m * o, k]);
        let y = yw + yb;
        acc = Some(match acc {
            None => y,
            Some(s) => s + y,
        });
    }
    acc.expect("at least one layer")
}

impl<B: Backend> JacobianOperator<B> for MlpJacobian<B> {
    fn n_points(&self) -> usize {
        self.x.dims()[0]
    }

    fn ntk_row(&self, i: usize) -> Option<Tensor<B, 1>> {
        if self.is_cached() {
            crate::ntk::structured_row(self, i).ok()
        } else {
            None
        }
    }

    fn n_outputs(&self) -> usize {
        self.mlp.n_outputs()
    }

    fn n_params(&self) -> usize {
        self.mlp.n_params()
    }

    fn device(&self) -> B::Device {
        self.x.device()
    }

    fn outputs(&self) -> Result<Tensor<B, 2>> {
        let parts = self.factors.per_chunk(
            |f| f.output.clone(),
            |s, len| self.mlp.forward(self.x.clone().narrow(0, s, len)),
        );
        Ok(Tensor::cat(parts, 0))
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.n_params())?;
        let k = v.dims()[1];
        let split = split_param_block(&self.mlp, &v);
        let mut parts = Vec::new();
        self.for_each_chunk(k, |_, fac| {
            parts.push(jvp_chunk(fac, &split));
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

    fn ntk_diagonal(&self) -> Option<Tensor<B, 1>> {
        crate::ntk::ntk_diagonal(self).ok()
    }

    /// $\operatorname{diag}(J^\top J)$: for weight $(r, c)$ of layer $l$,
    /// $\sum_{i,j} \Delta_l\[i,j,r\]^2 A_l\[i,c\]^2$; for bias $r$, $\sum_{i,j} \Delta_l\[i,j,r\]^2$.
    fn gram_diagonal(&self) -> Option<Tensor<B, 1>> {
        let mut acc: Option<Vec<(Tensor<B, 2>, Tensor<B, 2>)>> = None;
        self.for_each_chunk(1, |_, fac| {
            let g: Vec<_> = fac
                .inputs
                .iter()
                .zip(&fac.sens)
                .map(|(a, d)| {
                    let [m, _, h] = d.dims();
                    let d2 = d.clone().square().sum_dim(1).reshape([m, h]);
                    let gb = d2.clone().sum_dim(0); // [1, h]
                    (d2.transpose().matmul(a.clone().square()), gb)
                })
                .collect();
            add_pairs(&mut acc, g);
            Ok(())
        })
        .ok()?;
        Some(Tensor::cat(
            acc?.into_iter()
                .flat_map(|(w, b)| [w.reshape([-1]), b.reshape([-1])])
                .collect(),
            0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::error::OpsError;
    use crate::mlp::{Head, MlpConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, dot, rel_err};
    use proptest::prelude::*;

    fn setup(
        widths: &[usize],
        act: Activation,
        head: Head,
        n: usize,
        seed: u64,
        options: JacobianParams,
    ) -> MlpJacobian<TestBackend> {
        let dev = Default::default();
        let mlp = MlpConfig::new(widths)
            .with_activation(act)
            .with_head(head)
            .init::<TestBackend>(seed, &dev)
            .unwrap();
        let mut rng = SplitMix64::new(seed ^ 0xABCD);
        let x = tensor_from_f64(rng.normal_vec(n * widths[0]), n, widths[0], &dev);
        MlpJacobian::new(mlp, x, options).unwrap()
    }

    const ACTS: [Activation; 6] = Activation::ALL;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn adjointness(
            h0 in 1usize..5, h1 in 1usize..9, h2 in 1usize..7, o in 1usize..4,
            n in 1usize..9, k in 1usize..4, seed in 0u64..1000, act in 0usize..6,
            small_budget in any::<bool>(), hetero in any::<bool>(),
        ) {
            // the heteroscedastic head needs exactly two outputs
            let (o, head) = if hetero {
                (2, Head::Heteroscedastic { min_scale: 1e-3 })
            } else {
                (o, Head::Plain)
            };
            let opts = JacobianParams {
                memory_budget: if small_budget { 600 } else { 1 << 24 },
                cache_factors: !small_budget,
                max_chunk_rows: if small_budget { 2 } else { usize::MAX },
                ..Default::default()
            };
            let jac = setup(&[h0, h1, h2, o], ACTS[act], head, n, seed, opts);
            let dev = jac.device();
            let mut rng = SplitMix64::new(seed + 7);
            let p = jac.n_params();
            let v = tensor_from_f64(rng.normal_vec(p * k), p, k, &dev);
            let u = tensor_from_f64(rng.normal_vec(n * o * k), n * o, k, &dev);
            let jv = jac.jvp(v.clone()).unwrap();
            let jtu = jac.vjp(u.clone()).unwrap();
            prop_assert_eq!(jv.dims(), [n * o, k]);
            prop_assert_eq!(jtu.dims(), [p, k]);
            let lhs = dot(&jv, &u);
            let rhs = dot(&v, &jtu);
            prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    /// Central finite differences of $f(X; \theta + t v)$ at $t = 0$.
    fn fd_jvp(jac: &MlpJacobian<TestBackend>, v: &[f64], h: f64) -> Vec<f64> {
        let dev = jac.device();
        let vt = crate::convert::tensor1_from_f64::<TestBackend>(v.to_vec(), &dev);
        let fp = jac
            .mlp()
            .perturbed(vt.clone(), h)
            .unwrap()
            .forward(jac.inputs().clone());
        let fm = jac
            .mlp()
            .perturbed(vt, -h)
            .unwrap()
            .forward(jac.inputs().clone());
        to_vec_f64((fp - fm).div_scalar(2.0 * h))
    }

    #[test]
    fn jvp_matches_central_differences_for_every_activation_and_head() {
        for (i, act) in ACTS.iter().enumerate() {
            for head in [Head::Plain, Head::Heteroscedastic { min_scale: 1e-5 }] {
                let jac = setup(&[3, 7, 5, 2], *act, head, 6, i as u64, Default::default());
                let mut rng = SplitMix64::new(99);
                let p = jac.n_params();
                let v = rng.normal_vec(p);
                let jv = to_vec_f64(
                    jac.jvp(tensor_from_f64(v.clone(), p, 1, &jac.device()))
                        .unwrap(),
                );
                let fd = fd_jvp(&jac, &v, 1e-5);
                let err = rel_err(&jv, &fd);
                // relu has kinks; its inputs here stay away from them almost surely
                assert!(err < 1e-7, "{act:?} {head:?}: {err}");
            }
        }
    }

    #[test]
    fn explicit_jacobian_matches_products_and_finite_differences() {
        let jac = setup(
            &[2, 6, 4, 3],
            Activation::Tanh,
            Head::Plain,
            5,
            3,
            Default::default(),
        );
        let dev = jac.device();
        let (p, r) = (jac.n_params(), jac.n_rows());
        let j = jac.jacobian().unwrap();
        assert_eq!(j.dims(), [r, p]);
        let mut rng = SplitMix64::new(5);
        let v = tensor_from_f64(rng.normal_vec(p * 2), p, 2, &dev);
        let u = tensor_from_f64(rng.normal_vec(r * 2), r, 2, &dev);
        let jv_dense = to_vec_f64(j.clone().matmul(v.clone()));
        let jtu_dense = to_vec_f64(j.clone().transpose().matmul(u.clone()));
        assert!(rel_err(&to_vec_f64(jac.jvp(v).unwrap()), &jv_dense) < 1e-12);
        assert!(rel_err(&to_vec_f64(jac.vjp(u).unwrap()), &jtu_dense) < 1e-12);
        let gram_diag = to_vec_f64(j.clone().square().sum_dim(0));
        assert!(rel_err(&to_vec_f64(jac.gram_diagonal().unwrap()), &gram_diag) < 1e-12);
        // column q of J against central differences along e_q
        for q in [0, 7, p / 2, p - 1] {
            let mut e = vec![0.0; p];
            e[q] = 1.0;
            let fd = fd_jvp(&jac, &e, 1e-6);
            let col = to_vec_f64(j.clone().narrow(1, q, 1));
            assert!(rel_err(&col, &fd) < 1e-7, "column {q}");
        }
    }

    #[test]
    fn chunked_and_uncached_products_agree_with_cached() {
        let big = setup(
            &[3, 8, 8, 2],
            Activation::Gelu,
            Head::Plain,
            13,
            1,
            Default::default(),
        );
        let small = MlpJacobian::new(
            big.mlp().clone(),
            big.inputs().clone(),
            JacobianParams {
                memory_budget: 2000,
                cache_factors: true,
                max_chunk_rows: 5,
                ..Default::default()
            },
        )
        .unwrap();
        let uncached = MlpJacobian::new(
            big.mlp().clone(),
            big.inputs().clone(),
            JacobianParams {
                memory_budget: 1000,
                cache_factors: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(big.is_cached() && !uncached.is_cached());
        let dev = big.device();
        let mut rng = SplitMix64::new(2);
        let p = big.n_params();
        let v = tensor_from_f64(rng.normal_vec(p * 3), p, 3, &dev);
        let want = to_vec_f64(big.jvp(v.clone()).unwrap());
        for other in [&small, &uncached] {
            assert!(rel_err(&to_vec_f64(other.jvp(v.clone()).unwrap()), &want) < 1e-13);
            let u = big.jvp(v.clone()).unwrap();
            let a = to_vec_f64(big.vjp(u.clone()).unwrap());
            assert!(rel_err(&to_vec_f64(other.vjp(u).unwrap()), &a) < 1e-13);
        }
        assert!(
            rel_err(
                &to_vec_f64(uncached.outputs().unwrap()),
                &to_vec_f64(big.outputs().unwrap())
            ) < 1e-15
        );
    }

    #[test]
    fn f32_backend_computes_in_f32() {
        type B32 = burn_ndarray::NdArray<f32>;
        let dev = Default::default();
        let mlp = MlpConfig::new(&[2, 5, 1]).init::<B32>(0, &dev).unwrap();
        assert_eq!(mlp.flatten().dtype(), burn::tensor::DType::F32);
        let x = tensor_from_f64(vec![0.3, -0.2, 1.0, 0.5], 2, 2, &dev);
        assert_eq!(x.dtype(), burn::tensor::DType::F32);
        let jac = MlpJacobian::new(mlp, x, Default::default()).unwrap();
        let p = jac.n_params();
        let v = tensor_from_f64(vec![0.1; p], p, 1, &dev);
        let jv = jac.jvp(v.clone()).unwrap();
        assert_eq!(jv.dtype(), burn::tensor::DType::F32);
        let u = tensor_from_f64(vec![1.0, -1.0], 2, 1, &dev);
        let lhs: f64 = to_vec_f64(jv * u.clone()).iter().sum();
        let rhs: f64 = to_vec_f64(v * jac.vjp(u).unwrap()).iter().sum();
        assert!((lhs - rhs).abs() < 1e-5 * (1.0 + lhs.abs()));
    }

    #[test]
    fn typed_errors_for_bad_inputs() {
        let dev = Default::default();
        let mlp = MlpConfig::new(&[3, 4, 1])
            .init::<TestBackend>(0, &dev)
            .unwrap();
        let x_bad_shape = tensor_from_f64(vec![0.0; 8], 4, 2, &dev);
        assert!(matches!(
            MlpJacobian::new(mlp.clone(), x_bad_shape, Default::default()),
            Err(OpsError::ShapeMismatch { .. })
        ));
        let mut vals = vec![0.5; 12];
        vals[7] = f64::NAN;
        let x_nan = tensor_from_f64(vals, 4, 3, &dev);
        assert!(matches!(
            MlpJacobian::new(mlp.clone(), x_nan, Default::default()),
            Err(OpsError::NonFinite { index: Some(7), .. })
        ));
        let x_empty = crate::convert::zeros::<TestBackend, 2>([0, 3], &dev);
        assert!(matches!(
            MlpJacobian::new(mlp.clone(), x_empty, Default::default()),
            Err(OpsError::Empty { .. })
        ));
        let x = tensor_from_f64(vec![0.1; 12], 4, 3, &dev);
        let jac = MlpJacobian::new(mlp, x, Default::default()).unwrap();
        let p = jac.n_params();
        let mut v = vec![1.0; p];
        v[2] = f64::INFINITY;
        assert!(matches!(
            jac.jvp(tensor_from_f64(v, p, 1, &dev)),
            Err(OpsError::NonFinite { .. })
        ));
        assert!(matches!(
            jac.vjp(tensor_from_f64(vec![1.0; 5], 5, 1, &dev)),
            Err(OpsError::ShapeMismatch { .. })
        ));
    }
}
