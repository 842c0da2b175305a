//! The NTK and the Gram matrix with the data split across ranks (data parallelism).
//!
//! Each rank holds the network and a shard $X_r$ of the rows of $X$, so its Jacobian is the
//! block of rows $J_r$ of $J$. Then
//!
//! - function space: $K v = J (J^\top v)$ with $J^\top v = \sum_r J_r^\top v_r$, one
//!   all-reduce of a $p \times k$ block, after which each rank forms its rows $J_r (J^\top v)$:
//!   [`ShardedNtk`], an operator on [`Sharded`] blocks;
//! - parameter space: $J^\top J w = \sum_r J_r^\top (J_r w)$, one all-reduce of $p \times k$,
//!   with $w$ replicated on every rank: [`ShardedGram`], an operator on ordinary blocks.
//!
//! With these, `krylov`'s CG, Lanczos and SLQ run unchanged (their inner products over
//! sharded blocks are all-reduced by [`Sharded`] itself). Per product each rank sends
//! $8pk$ bytes; the flops, $4 n_r p k$, shrink with the shard. On a GPU backend the
//! products run on the device and only the $p \times k$ block is staged through the host.

use std::marker::PhantomData;

use burn::prelude::Backend;
use burn::tensor::Tensor;
use krylov::comm::{Communicator, RowPartition};
use krylov::{LinearOperator, Sharded};

use crate::block::TensorBlock;
use crate::convert::{tensor_from_f64, to_vec_f64};
use crate::error::{OpsError, Result};
use crate::jacobian::JacobianOperator;

/// $\sum_r T_r$ over the ranks, for a tensor of the same shape on every rank.
pub fn all_reduce_tensor<B: Backend, C: Communicator>(t: Tensor<B, 2>, comm: &C) -> Tensor<B, 2> {
    if comm.size() == 1 {
        return t;
    }
    let [r, c] = t.dims();
    let dev = t.device();
    let mut buf = to_vec_f64(t);
    comm.all_reduce_sum(&mut buf);
    tensor_from_f64(buf, r, c, &dev)
}

/// The row partition of a distributed Jacobian: every rank's number of rows $n_r o$, and a
/// check that all ranks have the same $p$ and $o$ (the same network).
pub fn row_partition<B: Backend, J: JacobianOperator<B>, C: Communicator>(
    jac: &J,
    comm: &C,
) -> Result<RowPartition> {
    let (size, rank) = (comm.size(), comm.rank());
    let mut buf = vec![0.0; size + 2];
    buf[rank] = jac.n_rows() as f64;
    buf[size] = jac.n_params() as f64;
    buf[size + 1] = jac.n_outputs() as f64;
    comm.all_reduce_sum(&mut buf);
    let (p, o) = (jac.n_params() as f64, jac.n_outputs() as f64);
    if buf[size] != p * size as f64 || buf[size + 1] != o * size as f64 {
        return Err(OpsError::InvalidConfig(format!(
            "the ranks hold different networks: rank {rank} has p = {p}, o = {o}, the ranks' \
             means are p = {}, o = {}",
            buf[size] / size as f64,
            buf[size + 1] / size as f64
        )));
    }
    let counts: Vec<usize> = buf[..size].iter().map(|&c| c as usize).collect();
    Ok(RowPartition::from_counts(&counts))
}

/// $K = J J^\top$ over rows split across ranks: $U \mapsto J_r\sum_{r'} J_{r'}^\top U_{r'}$
/// on [`Sharded`] blocks.
///
/// Every method is collective: all ranks call it together (the solvers do).
/// [`apply`](LinearOperator::apply) panics on a block of the wrong height, as
/// [`NtkOperator`](crate::NtkOperator)'s does.
pub struct ShardedNtk<B: Backend, J, C> {
    jac: J,
    comm: C,
    partition: RowPartition,
    _backend: PhantomData<B>,
}

impl<B: Backend, J: JacobianOperator<B>, C: Communicator> ShardedNtk<B, J, C> {
    /// The NTK over the shards: `jac` is this rank's Jacobian, at its rows of $X$.
    /// Collective; fails if the ranks hold different networks.
    pub fn new(jac: J, comm: C) -> Result<Self> {
        let partition = row_partition(&jac, &comm)?;
        Ok(Self {
            jac,
            comm,
            partition,
            _backend: PhantomData,
        })
    }

    /// The rows of $J$ ($n o$ in all) each rank holds.
    pub fn partition(&self) -> &RowPartition {
        &self.partition
    }

    /// This rank's Jacobian.
    pub fn jacobian(&self) -> &J {
        &self.jac
    }

    /// The communicator.
    pub fn comm(&self) -> &C {
        &self.comm
    }

    /// $J^\top U = \sum_r J_r^\top U_r$ ($p \times k$, on every rank) for this rank's rows
    /// `u` of $U$.
    pub fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        Ok(all_reduce_tensor(self.jac.vjp(u)?, &self.comm))
    }

    /// This rank's rows of $K U$ for its rows `u` of $U$.
    pub fn try_apply(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        self.jac.jvp(self.vjp(u)?)
    }

    /// A global vector from each rank's entries at its rows.
    fn gather(&self, local: Vec<f64>) -> Vec<f64> {
        let range = self.partition.range(self.comm.rank());
        let mut buf = vec![0.0; self.partition.rows()];
        buf[range].copy_from_slice(&local);
        self.comm.all_reduce_sum(&mut buf);
        buf
    }
}

impl<B: Backend, J: JacobianOperator<B>, C: Communicator> LinearOperator<Sharded<TensorBlock<B>, C>>
    for ShardedNtk<B, J, C>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.partition.rows()
    }

    fn ncols(&self) -> usize {
        self.partition.rows()
    }

    fn apply(&self, x: &Sharded<TensorBlock<B>, C>) -> Sharded<TensorBlock<B>, C> {
        let y = self
            .try_apply(x.local().tensor().clone())
            .unwrap_or_else(|e| panic!("ShardedNtk::apply: {e}"));
        x.with_local(TensorBlock::new(y))
    }

    /// The global diagonal (each rank's $\operatorname{diag} J_r J_r^\top$, gathered).
    fn diagonal(&self) -> Option<Vec<B::FloatElem>> {
        let local = self.jac.ntk_diagonal().map(to_vec_f64)?;
        Some(elems::<B>(self.gather(local)))
    }

    /// Row $i$ of $K$: $J(J_{r_i}^\top e_i)$, with $J^\top e_i$ from the rank that holds row
    /// $i$ (two all-reduces: $p$ values, then $n o$).
    fn row(&self, i: usize) -> Option<Vec<B::FloatElem>> {
        if i >= self.partition.rows() {
            return None;
        }
        let range = self.partition.range(self.comm.rank());
        let dev = self.jac.device();
        let mut e = crate::convert::zeros::<B, 2>([range.len(), 1], &dev);
        if range.contains(&i) {
            let at = i - range.start;
            e = e.slice_fill([at..at + 1, 0..1], 1.0);
        }
        // Every rank takes part in both all-reduces, whether or not it holds row i.
        let g = if range.is_empty() {
            crate::convert::zeros::<B, 2>([self.jac.n_params(), 1], &dev)
        } else {
            self.jac.vjp(e).ok()?
        };
        let g = all_reduce_tensor(g, &self.comm);
        let local = if range.is_empty() {
            Vec::new()
        } else {
            to_vec_f64(self.jac.jvp(g).ok()?)
        };
        Some(elems::<B>(self.gather(local)))
    }
}

/// The Gram matrix $J^\top J = \sum_r J_r^\top J_r$ ($p \times p$) over rows split across
/// ranks, on blocks replicated on every rank: $W \mapsto \sum_r J_r^\top (J_r W)$.
///
/// Every method is collective.
pub struct ShardedGram<B: Backend, J, C> {
    jac: J,
    comm: C,
    _backend: PhantomData<B>,
}

impl<B: Backend, J: JacobianOperator<B>, C: Communicator> ShardedGram<B, J, C> {
    /// $J^\top J$ over the shards: `jac` is this rank's Jacobian. Collective; fails if the
    /// ranks hold different networks.
    pub fn new(jac: J, comm: C) -> Result<Self> {
        row_partition(&jac, &comm)?;
        Ok(Self {
            jac,
            comm,
            _backend: PhantomData,
        })
    }

    /// $J^\top J W$ (on every rank).
    pub fn try_apply(&self, w: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let local = if self.jac.n_rows() == 0 {
            w.zeros_like()
        } else {
            self.jac.vjp(self.jac.jvp(w)?)?
        };
        Ok(all_reduce_tensor(local, &self.comm))
    }
}

impl<B: Backend, J: JacobianOperator<B>, C: Communicator> LinearOperator<TensorBlock<B>>
    for ShardedGram<B, J, C>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.jac.n_params()
    }
    fn ncols(&self) -> usize {
        self.jac.n_params()
    }
    fn apply(&self, x: &TensorBlock<B>) -> TensorBlock<B> {
        TensorBlock::new(
            self.try_apply(x.tensor().clone())
                .unwrap_or_else(|e| panic!("ShardedGram::apply: {e}")),
        )
    }
    fn diagonal(&self) -> Option<Vec<B::FloatElem>> {
        let p = self.jac.n_params();
        let mut d = self.jac.gram_diagonal().map(to_vec_f64)?;
        d.resize(p, 0.0);
        self.comm.all_reduce_sum(&mut d);
        Some(elems::<B>(d))
    }
}

fn elems<B: Backend>(v: Vec<f64>) -> Vec<B::FloatElem>
where
    B::FloatElem: krylov::Scalar,
{
    v.into_iter()
        .map(<B::FloatElem as krylov::Scalar>::from_f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::to_dmatrix_f64;
    use crate::jacobian::JacobianParams;
    use crate::mlp::MlpConfig;
    use crate::operator::Jacobian;
    use crate::rng::SplitMix64;
    use crate::testing::TestBackend;
    use crate::{GramOperator, NtkOperator};
    use krylov::Block;
    use krylov::comm::LocalGroup;
    use nalgebra::DMatrix;

    type B = TestBackend;

    fn rel(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
        (a - b).norm() / b.norm()
    }

    /// The sharded NTK and Gram products, diagonals and rows equal the single-process ones
    /// on 1–4 ranks (one holding a single row).
    #[test]
    fn sharded_products_equal_the_whole_operator() {
        let dev = Default::default();
        let n = 9;
        let mlp = MlpConfig::new(&[3, 6, 5, 1]).init::<B>(4, &dev).unwrap();
        let mut rng = SplitMix64::new(11);
        let x = DMatrix::from_vec(n, 3, rng.normal_vec(3 * n));
        let u = DMatrix::from_vec(n, 2, rng.normal_vec(2 * n));
        let p = mlp.n_params();
        let w = DMatrix::from_vec(p, 2, rng.normal_vec(2 * p));
        let opts = JacobianParams::default();
        let whole = Jacobian::new(
            mlp.clone(),
            crate::convert::from_dmatrix_f64(&x, &dev),
            opts,
        )
        .unwrap();
        let ntk = NtkOperator::new(whole.clone());
        let ku = to_dmatrix_f64(
            ntk.try_apply(crate::convert::from_dmatrix_f64(&u, &dev))
                .unwrap(),
        );
        let gram = GramOperator::new(whole.clone());
        let gw = to_dmatrix_f64(
            gram.try_apply(crate::convert::from_dmatrix_f64(&w, &dev))
                .unwrap(),
        );
        let diag: Vec<f64> = LinearOperator::<TensorBlock<B>>::diagonal(&ntk)
            .unwrap()
            .into_iter()
            .collect();
        let row4: Vec<f64> = LinearOperator::<TensorBlock<B>>::row(&ntk, 4).unwrap();
        for counts in [vec![9], vec![4, 5], vec![3, 1, 5], vec![2, 2, 2, 3]] {
            let ranks = counts.len();
            let results = LocalGroup::run(ranks, |comm| {
                let part = RowPartition::from_counts(&counts);
                let range = part.range(comm.rank());
                let xr = x.rows_range(range.clone()).into_owned();
                let jac = Jacobian::new(
                    mlp.clone(),
                    crate::convert::from_dmatrix_f64(&xr, &dev),
                    opts,
                )
                .unwrap();
                let op = ShardedNtk::new(jac.clone(), comm.clone()).unwrap();
                assert_eq!(op.partition(), &part);
                let ub = Sharded::scatter(
                    &TensorBlock::<B>::new(crate::convert::from_dmatrix_f64(&u, &dev)),
                    part,
                    comm.clone(),
                );
                let ku = op.apply(&ub).to_host();
                let diag = op.diagonal().unwrap();
                let row4 = op.row(4).unwrap();
                let g = ShardedGram::new(jac, comm).unwrap();
                let gw = to_dmatrix_f64(
                    g.try_apply(crate::convert::from_dmatrix_f64(&w, &dev))
                        .unwrap(),
                );
                (ku, diag, row4, gw)
            });
            for (k, d, r, g) in results {
                assert!(rel(&k, &ku) < 1e-12, "{ranks} ranks: K U");
                assert!(rel(&g, &gw) < 1e-12, "{ranks} ranks: JᵀJ W");
                let dv = DMatrix::from_vec(n, 1, d);
                assert!(rel(&dv, &DMatrix::from_vec(n, 1, diag.clone())) < 1e-12);
                let rv = DMatrix::from_vec(n, 1, r);
                assert!(rel(&rv, &DMatrix::from_vec(n, 1, row4.clone())) < 1e-12);
            }
        }
    }

    #[test]
    fn ranks_with_different_networks_are_refused() {
        let dev = Default::default();
        let errs = LocalGroup::run(2, |comm| {
            let widths: &[usize] = if comm.rank() == 0 {
                &[2, 4, 1]
            } else {
                &[2, 5, 1]
            };
            let mlp = MlpConfig::new(widths).init::<B>(1, &dev).unwrap();
            let x = crate::convert::from_dmatrix_f64(&DMatrix::from_element(3, 2, 0.5), &dev);
            let jac = Jacobian::new(mlp, x, JacobianParams::default()).unwrap();
            ShardedNtk::new(jac, comm).err().map(|e| e.to_string())
        });
        for e in errs {
            assert!(e.unwrap().contains("different networks"));
        }
    }
}
