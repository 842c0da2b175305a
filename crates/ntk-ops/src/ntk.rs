//! The empirical neural tangent kernel $K(X_1, X_2) = J_1 J_2^\top$: dense by
//! structured per-layer products, its exact diagonal, and as a matrix-free
//! operator.

use std::marker::PhantomData;

use burn::prelude::Backend;
use burn::tensor::Tensor;
use krylov::LinearOperator;

use crate::block::TensorBlock;
use crate::convert::to_vec_elem;
use crate::dense::MlpJacobian;
use crate::error::{OpsError, Result};
use crate::jacobian::{JacobianOperator, transposed_copy};
use crate::mlp::Factors;

/// $\sum_l (\Delta_{1,l} \Delta_{2,l}^\top) \odot (A_{1,l} A_{2,l}^\top + 1)$ for one pair of chunks,
/// `[m1·o, m2·o]`.
fn ntk_block<B: Backend>(f1: &Factors<B>, f2: &Factors<B>) -> Tensor<B, 2> {
    let (m1, m2) = (f1.n_points(), f2.n_points());
    let o = f1.output.dims()[1];
    let mut acc: Option<Tensor<B, 2>> = None;
    for ((a1, d1), (a2, d2)) in f1
        .inputs
        .iter()
        .zip(&f1.sens)
        .zip(f2.inputs.iter().zip(&f2.sens))
    {
        let h = d1.dims()[2];
        // Row-major copies of the right operands' transposes: NN products run
        // markedly faster than NT ones on burn-ndarray.
        let aa = a1
            .clone()
            .matmul(transposed_copy(a2.clone()))
            .add_scalar(1.0);
        let dd = d1
            .clone()
            .reshape([m1 * o, h])
            .matmul(transposed_copy(d2.clone().reshape([m2 * o, h])));
        let k = if o == 1 {
            dd * aa
        } else {
            (dd.reshape([m1, o, m2, o]) * aa.reshape([m1, 1, m2, 1])).reshape([m1 * o, m2 * o])
        };
        acc = Some(match acc {
            None => k,
            Some(s) => s + k,
        });
    }
    acc.expect("at least one layer")
}

/// The dense empirical NTK $K(X_1, X_2) = J_1 J_2^\top$ (`[n1·o, n2·o]`) of the same
/// MLP at two input sets, by structured per-layer products (neural-tangents'
/// "structured derivatives"): for each Dense layer
/// $K_l = (\Delta_{1} \Delta_{2}^\top) \odot (A_{1} A_{2}^\top + 1)$,
/// which costs $O(n_1 n_2 o^2 \sum_l (h_{l-1} + h_l))$ instead of $O(n_1 n_2 o^2 p)$.
///
/// Pass the same operator twice for $K(X, X)$.
pub fn ntk_matrix<B: Backend>(j1: &MlpJacobian<B>, j2: &MlpJacobian<B>) -> Result<Tensor<B, 2>> {
    if j1.mlp().config() != j2.mlp().config() {
        return Err(OpsError::InvalidConfig(
            "the two Jacobians must belong to the same architecture".into(),
        ));
    }
    let mut rows = Vec::new();
    j1.for_each_chunk(1, |_, f1| {
        let mut cols = Vec::new();
        j2.for_each_chunk(1, |_, f2| {
            cols.push(ntk_block(f1, f2));
            Ok(())
        })?;
        rows.push(Tensor::cat(cols, 1));
        Ok(())
    })?;
    Ok(Tensor::cat(rows, 0))
}

/// Row `i` of $K(X, X)$ (row order of $J$: point $i / o$, output $i \bmod o$) from the
/// structured factors, $K_{i\cdot} = \sum_l (\Delta_l\[i\] \Delta_l^\top) \odot (a_{l-1}\[i\] A_{l-1}^\top + 1)$:
/// $O(n o \sum_l (h_{l-1} + o h_l))$ flops instead of the $\approx 4 n p$ of $K e_i$.
pub(crate) fn structured_row<B: Backend>(j: &MlpJacobian<B>, i: usize) -> Result<Tensor<B, 1>> {
    let o = j.n_outputs();
    let rows = j.n_points() * o;
    if i >= rows {
        return Err(OpsError::ShapeMismatch {
            what: "NTK row index".into(),
            expected: vec![rows],
            found: vec![i],
        });
    }
    let (point, out) = (i / o, i % o);
    let mut own = None;
    j.for_each_chunk(1, |start, f| {
        if (start..start + f.n_points()).contains(&point) {
            own = Some(f.narrow(point - start, 1));
        }
        Ok(())
    })?;
    let own = own.expect("every point lies in a chunk");
    let mut parts = Vec::new();
    j.for_each_chunk(1, |_, f| {
        parts.push(ntk_block(&own, f).narrow(0, out, 1));
        Ok(())
    })?;
    Ok(Tensor::cat(parts, 1).reshape([rows]))
}

/// The exact diagonal of $K(X, X)$ ($n o$ entries, row order of $J$):
/// $K_{(i,j),(i,j)} = \sum_l \lVert \Delta_l\[i,j\] \rVert^2 (\lVert a_{l-1}\[i\] \rVert^2 + 1)$,
/// in $O(n o \sum_l h_l + n \sum_l h_{l-1})$.
pub fn ntk_diagonal<B: Backend>(j: &MlpJacobian<B>) -> Result<Tensor<B, 1>> {
    let mut parts = Vec::new();
    j.for_each_chunk(1, |_, f| {
        let m = f.n_points();
        let o = f.output.dims()[1];
        let mut acc: Option<Tensor<B, 2>> = None;
        for (a, d) in f.inputs.iter().zip(&f.sens) {
            let dn = d.clone().square().sum_dim(2).reshape([m, o]);
            let an = a.clone().square().sum_dim(1).add_scalar(1.0);
            let t = dn * an;
            acc = Some(match acc {
                None => t,
                Some(s) => s + t,
            });
        }
        parts.push(acc.expect("a layer").reshape([m * o]));
        Ok(())
    })?;
    Ok(Tensor::cat(parts, 0))
}

/// The NTK as a matrix-free operator, $U \mapsto J_1 (J_2^\top U)$.
///
/// Square ($X_1 = X_2$, from [`new`](Self::new)) for training-set solves, or a
/// cross-kernel $K(X_*, X)$ ([`cross`](Self::cross)) for predictions. With
/// cached factors one product costs about $4 n p k$ flops for $k$ columns.
///
/// [`apply`](LinearOperator::apply) panics on a block of the wrong height
/// (the solver owns the blocks; use [`try_apply`](Self::try_apply) to get an error).
pub struct NtkOperator<B: Backend, J> {
    left: J,
    right: Option<J>,
    _backend: PhantomData<B>,
}

impl<B: Backend, J: JacobianOperator<B>> NtkOperator<B, J> {
    /// $K(X, X) = J J^\top$.
    pub fn new(jac: J) -> Self {
        Self {
            left: jac,
            right: None,
            _backend: PhantomData,
        }
    }

    /// $K(X_1, X_2) = J_1 J_2^\top$ (`left` at $X_1$, `right` at $X_2$).
    pub fn cross(left: J, right: J) -> Result<Self> {
        if left.n_params() != right.n_params() || left.n_outputs() != right.n_outputs() {
            return Err(OpsError::ShapeMismatch {
                what: "cross-kernel Jacobians (params, outputs)".into(),
                expected: vec![left.n_params(), left.n_outputs()],
                found: vec![right.n_params(), right.n_outputs()],
            });
        }
        Ok(Self {
            left,
            right: Some(right),
            _backend: PhantomData,
        })
    }

    fn right(&self) -> &J {
        self.right.as_ref().unwrap_or(&self.left)
    }

    /// $K U$ with checked shapes.
    pub fn try_apply(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.left.jvp(self.right().vjp(u)?)
    }
}

impl<B: Backend, J: JacobianOperator<B>> LinearOperator<TensorBlock<B>> for NtkOperator<B, J>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.left.n_rows()
    }

    fn ncols(&self) -> usize {
        self.right().n_rows()
    }

    fn apply(&self, x: &TensorBlock<B>) -> TensorBlock<B> {
        TensorBlock::new(
            self.try_apply(x.tensor().clone())
                .unwrap_or_else(|e| panic!("NtkOperator::apply: {e}")),
        )
    }

    fn diagonal(&self) -> Option<Vec<B::FloatElem>> {
        if self.right.is_some() {
            return None;
        }
        self.left.ntk_diagonal().map(to_vec_elem)
    }

    fn row(&self, i: usize) -> Option<Vec<B::FloatElem>> {
        // Row i of K is K e_i (K symmetric) — or J_2 J_1ᵀ e_i for a cross-kernel.
        if i >= self.nrows() {
            return None;
        }
        if self.right.is_none()
            && let Some(row) = self.left.ntk_row(i)
        {
            return Some(to_vec_elem(row));
        }
        let mut e = crate::convert::zeros::<B, 2>([self.nrows(), 1], &self.left.device());
        e = e.slice_fill([i..i + 1, 0..1], 1.0);
        let g = self.left.vjp(e).ok()?;
        Some(to_vec_elem(self.right().jvp(g).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::convert::{tensor_from_f64, to_vec_f64};
    use crate::jacobian::JacobianParams;
    use crate::mlp::{Head, MlpConfig};
    use crate::rng::SplitMix64;
    use crate::testing::{TestBackend, rel_err};
    use krylov::Block;

    fn jac_at(
        widths: &[usize],
        act: Activation,
        head: Head,
        n: usize,
        seed: u64,
        opts: JacobianParams,
    ) -> MlpJacobian<TestBackend> {
        let dev = Default::default();
        let mlp = MlpConfig::new(widths)
            .with_activation(act)
            .with_head(head)
            .init::<TestBackend>(1, &dev)
            .unwrap();
        let mut rng = SplitMix64::new(seed);
        let x = tensor_from_f64(rng.normal_vec(n * widths[0]), n, widths[0], &dev);
        MlpJacobian::new(mlp, x, opts).unwrap()
    }

    #[test]
    fn structured_rows_equal_products_with_unit_vectors() {
        for (widths, head) in [
            (vec![3, 9, 7, 1], Head::Plain),
            (vec![2, 8, 2], Head::Heteroscedastic { min_scale: 1e-5 }),
        ] {
            let opts = JacobianParams {
                max_chunk_rows: 4,
                ..Default::default()
            };
            let jac = jac_at(&widths, Activation::Tanh, head, 13, 5, opts);
            assert!(jac.is_cached());
            let k = crate::convert::to_dmatrix_f64(ntk_matrix(&jac, &jac).unwrap());
            let op = NtkOperator::new(jac.clone());
            for i in [0, 5, k.nrows() - 1] {
                let row = to_vec_f64(jac.ntk_row(i).expect("cached factors give rows"));
                let via_op: Vec<f64> = op.row(i).unwrap().into_iter().collect();
                for (c, v) in row.iter().enumerate() {
                    assert!((v - k[(i, c)]).abs() < 1e-12 * (1.0 + k[(i, c)].abs()));
                    assert!((via_op[c] - v).abs() < 1e-15 * (1.0 + v.abs()));
                }
            }
            assert!(structured_row(&jac, k.nrows()).is_err());
        }
    }

    #[test]
    fn structured_ntk_equals_j_jt() {
        let cases = [
            (vec![1, 40, 40, 1], Activation::Tanh, Head::Plain),
            (vec![3, 9, 7, 3], Activation::Elu, Head::Plain),
            (
                vec![2, 8, 2],
                Activation::Softplus,
                Head::Heteroscedastic { min_scale: 1e-5 },
            ),
        ];
        for (widths, act, head) in cases {
            for opts in [
                JacobianParams::default(),
                JacobianParams {
                    memory_budget: 3000,
                    cache_factors: false,
                    max_chunk_rows: 4,
                    ..Default::default()
                },
            ] {
                let j1 = jac_at(&widths, act, head, 11, 2, opts);
                let j2 = jac_at(&widths, act, head, 7, 3, opts);
                let (d1, d2) = (j1.jacobian().unwrap(), j2.jacobian().unwrap());
                let want = to_vec_f64(d1.clone().matmul(d2.transpose()));
                let got = to_vec_f64(ntk_matrix(&j1, &j2).unwrap());
                assert!(rel_err(&got, &want) < 1e-10, "{widths:?} cross");
                let kself = to_vec_f64(d1.clone().matmul(d1.clone().transpose()));
                let got = to_vec_f64(ntk_matrix(&j1, &j1).unwrap());
                assert!(rel_err(&got, &kself) < 1e-10, "{widths:?} self");
                let diag_want = to_vec_f64(d1.clone().square().sum_dim(1));
                let diag = to_vec_f64(ntk_diagonal(&j1).unwrap());
                assert!(rel_err(&diag, &diag_want) < 1e-10, "{widths:?} diag");
            }
        }
    }

    #[test]
    fn operator_matches_dense_kernel() {
        let j1 = jac_at(
            &[2, 6, 5, 2],
            Activation::Tanh,
            Head::Plain,
            9,
            4,
            Default::default(),
        );
        let j2 = jac_at(
            &[2, 6, 5, 2],
            Activation::Tanh,
            Head::Plain,
            5,
            8,
            Default::default(),
        );
        let dev = j1.device();
        let k11 = ntk_matrix(&j1, &j1).unwrap();
        let k12 = ntk_matrix(&j1, &j2).unwrap();
        let mut rng = SplitMix64::new(1);
        let u = tensor_from_f64(rng.normal_vec(18 * 3), 18, 3, &dev);
        let w = tensor_from_f64(rng.normal_vec(10 * 3), 10, 3, &dev);

        let op = NtkOperator::new(j1.clone());
        assert_eq!((op.nrows(), op.ncols()), (18, 18));
        let got = op.apply(&TensorBlock::new(u.clone())).to_host();
        let want = to_vec_f64(k11.clone().matmul(u.clone()));
        assert!(rel_err(got.transpose().as_slice(), &want) < 1e-12);
        let diag: Vec<f64> = op.diagonal().unwrap();
        let k11h = crate::convert::to_dmatrix_f64(k11.clone());
        assert!(rel_err(&diag, k11h.diagonal().as_slice()) < 1e-12);
        let row = op.row(5).unwrap();
        assert!(rel_err(&row, k11h.row(5).transpose().as_slice()) < 1e-12);

        let cross = NtkOperator::cross(j1, j2).unwrap();
        assert_eq!((cross.nrows(), cross.ncols()), (18, 10));
        let got = to_vec_f64(cross.try_apply(w.clone()).unwrap());
        assert!(rel_err(&got, &to_vec_f64(k12.matmul(w))) < 1e-12);
        assert!(cross.diagonal().is_none());
    }
}
