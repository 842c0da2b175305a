//! Blocks whose rows are split across ranks: the solvers, unchanged, on distributed vectors.
//!
//! A [`Sharded`] block holds rows `range` of a global $n \times k$ block $X$ and a
//! [`Communicator`]. Column updates ($x_j \leftarrow x_j + \alpha_j y_j$, $X + YC$) act on
//! the local rows alone; inner products ($X^\top Y$, $x_j^\top y_j$) are the local partial
//! sums all-reduced, so every rank holds the same $k \times k$ scalars and the solvers take
//! the same steps on every rank. An operator on sharded blocks (in `ntk-ops`: $K v =
//! J(J^\top v)$ with $J^\top v$ all-reduced) is all a distributed CG, Lanczos or SLQ needs.
//!
//! Per iteration of a CG over $k$ columns this costs one all-reduce of $k$ scalars (two with
//! the Lanczos coefficients) for the solver itself, besides what the operator sends.
//!
//! ```
//! use krylov::comm::{Communicator, LocalGroup, RowPartition};
//! use krylov::sharded::Sharded;
//! use krylov::{Block, CgParams, Identity, LinearOperator, pcg};
//! use nalgebra::DMatrix;
//!
//! // A diagonal operator acts row by row, so each rank applies it to its own rows.
//! struct Diag(Vec<f64>, RowPartition);
//! impl<C: Communicator> LinearOperator<Sharded<DMatrix<f64>, C>> for Diag {
//!     fn nrows(&self) -> usize { self.1.rows() }
//!     fn ncols(&self) -> usize { self.1.rows() }
//!     fn apply(&self, x: &Sharded<DMatrix<f64>, C>) -> Sharded<DMatrix<f64>, C> {
//!         let r = x.range();
//!         let mut y = x.local().clone();
//!         for (i, mut row) in y.row_iter_mut().enumerate() { row *= self.0[r.start + i]; }
//!         x.with_local(y)
//!     }
//! }
//!
//! let n = 7;
//! let d: Vec<f64> = (1..=n).map(|i| i as f64).collect();
//! let b = DMatrix::from_element(n, 1, 1.0);
//! let answers = LocalGroup::run(3, |comm| {
//!     let part = RowPartition::even(n, comm.size());
//!     let rhs = Sharded::scatter(&b, part.clone(), comm);
//!     let out = pcg(&Diag(d.clone(), part), &Identity, &rhs, None, &CgParams::default()).unwrap();
//!     out.solution.to_host()
//! });
//! for x in answers {
//!     for i in 0..n { assert!((x[(i, 0)] - 1.0 / d[i]).abs() < 1e-10); }
//! }
//! ```

use std::ops::Range;

use nalgebra::DMatrix;

use crate::block::{Block, Scalar};
use crate::comm::{Communicator, RowPartition};

/// Rows [`range`](Self::range) of a global block, on one rank of a [`Communicator`].
///
/// [`nrows`](Block::nrows) is the global $n$, so operators and checks see the global
/// problem; [`to_host`](Block::to_host) gathers the whole block on every rank (collective,
/// $O(nk)$ communication: used only to report a failed solve's iterate) and
/// [`from_host_like`](Block::from_host_like) takes this rank's rows of a global host
/// block (how probes drawn from one seed reach every rank).
#[derive(Clone, Debug)]
pub struct Sharded<B, C> {
    local: B,
    comm: C,
    partition: RowPartition,
    rank: usize,
}

impl<B: Block, C: Communicator> Sharded<B, C> {
    /// Wraps this rank's rows of a block split by `partition`.
    ///
    /// # Panics
    /// If `partition` does not have one range per rank of `comm` or `local` does not have
    /// this rank's number of rows (a wiring error, not bad data).
    pub fn new(local: B, partition: RowPartition, comm: C) -> Self {
        let rank = comm.rank();
        assert_eq!(
            partition.ranks(),
            comm.size(),
            "Sharded: one row range per rank"
        );
        assert_eq!(
            local.nrows(),
            partition.range(rank).len(),
            "Sharded: local rows must match the partition"
        );
        Self {
            local,
            comm,
            partition,
            rank,
        }
    }

    /// This rank's rows of a global host block `global` (every rank passes the same block).
    pub fn scatter(global: &B, partition: RowPartition, comm: C) -> Self
    where
        B: Block,
    {
        let host = global.to_host();
        let range = partition.range(comm.rank());
        let rows = host.rows_range(range).into_owned();
        Self::new(global.from_host_like(&rows), partition, comm)
    }

    /// The local rows.
    pub fn local(&self) -> &B {
        &self.local
    }

    /// The local rows, by value.
    pub fn into_local(self) -> B {
        self.local
    }

    /// A block with the same partition and communicator holding `local` (this rank's rows).
    pub fn with_local(&self, local: B) -> Self {
        Self::new(local, self.partition.clone(), self.comm.clone())
    }

    /// The global rows this rank holds.
    pub fn range(&self) -> Range<usize> {
        self.partition.range(self.rank)
    }

    /// How the rows are split.
    pub fn partition(&self) -> &RowPartition {
        &self.partition
    }

    /// The communicator.
    pub fn comm(&self) -> &C {
        &self.comm
    }

    fn reduce(&self, v: Vec<B::Scalar>) -> Vec<B::Scalar> {
        let mut buf: Vec<f64> = v.into_iter().map(Scalar::to_f64).collect();
        self.comm.all_reduce_sum(&mut buf);
        buf.into_iter().map(B::Scalar::from_f64).collect()
    }
}

impl<B: Block, C: Communicator> Block for Sharded<B, C> {
    type Scalar = B::Scalar;

    fn nrows(&self) -> usize {
        self.partition.rows()
    }

    fn ncols(&self) -> usize {
        self.local.ncols()
    }

    fn zeros_like(&self, ncols: usize) -> Self {
        self.with_local(self.local.zeros_like(ncols))
    }

    fn col_dots(&self, other: &Self) -> Vec<B::Scalar> {
        self.reduce(self.local.col_dots(&other.local))
    }

    fn t_mul(&self, other: &Self) -> DMatrix<B::Scalar> {
        let m = self.local.t_mul(&other.local);
        let (r, c) = m.shape();
        DMatrix::from_vec(r, c, self.reduce(m.as_slice().to_vec()))
    }

    fn axpy_cols(&mut self, alpha: &[B::Scalar], y: &Self) {
        self.local.axpy_cols(alpha, &y.local);
    }

    fn scale_cols(&mut self, s: &[B::Scalar]) {
        self.local.scale_cols(s);
    }

    fn add_mul(&mut self, y: &Self, c: &DMatrix<B::Scalar>) {
        self.local.add_mul(&y.local, c);
    }

    fn columns(&self, start: usize, len: usize) -> Self {
        self.with_local(self.local.columns(start, len))
    }

    fn hcat(&self, other: &Self) -> Self {
        self.with_local(self.local.hcat(&other.local))
    }

    fn to_host(&self) -> DMatrix<B::Scalar> {
        let local = self.local.to_host();
        let (n, k) = (self.nrows(), self.ncols());
        let range = self.range();
        let mut buf = vec![0.0; n * k];
        for j in 0..k {
            for (i, row) in range.clone().enumerate() {
                buf[j * n + row] = local[(i, j)].to_f64();
            }
        }
        self.comm.all_reduce_sum(&mut buf);
        DMatrix::from_iterator(n, k, buf.into_iter().map(B::Scalar::from_f64))
    }

    /// # Panics
    /// If `m` does not have the global number of rows.
    fn from_host_like(&self, m: &DMatrix<B::Scalar>) -> Self {
        assert_eq!(
            m.nrows(),
            self.nrows(),
            "Sharded::from_host_like: a global block has n rows"
        );
        let rows = m.rows_range(self.range()).into_owned();
        self.with_local(self.local.from_host_like(&rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::{Counted, LocalGroup};
    use crate::operator::LinearOperator;
    use crate::precond::Identity;
    use crate::slq::{InvQuadLogdetParams, Probes, inv_quad_logdet};
    use crate::{CgParams, pcg};
    use proptest::prelude::*;

    /// A dense SPD matrix known to every rank, applied to sharded blocks: each rank forms its
    /// rows of $A X$ from the gathered $X$ (a test operator; real ones send $p$-vectors).
    struct Dense(DMatrix<f64>);

    impl<C: Communicator> LinearOperator<Sharded<DMatrix<f64>, C>> for Dense {
        fn nrows(&self) -> usize {
            self.0.nrows()
        }
        fn ncols(&self) -> usize {
            self.0.ncols()
        }
        fn apply(&self, x: &Sharded<DMatrix<f64>, C>) -> Sharded<DMatrix<f64>, C> {
            let full = &self.0 * x.to_host();
            x.with_local(full.rows_range(x.range()).into_owned())
        }
    }

    impl LinearOperator<DMatrix<f64>> for Dense {
        fn nrows(&self) -> usize {
            self.0.nrows()
        }
        fn ncols(&self) -> usize {
            self.0.ncols()
        }
        fn apply(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
            &self.0 * x
        }
    }

    /// $A = c\,GG^\top/r + I$ with a Gaussian $G$ ($n\times r$): the shape of a GP system
    /// $s^2K + \sigma^2 I$ with a kernel of rank $r$, on which CG ends in about $r + 1$ steps.
    fn spd(n: usize, rank: usize, c: f64, seed: u64) -> DMatrix<f64> {
        let g = crate::slq::draw_probes(n, rank, Probes::Gaussian, seed);
        &g * g.transpose() * (c / rank as f64) + DMatrix::identity(n, n)
    }

    /// Relative difference, absolute below 1 (a log-determinant of a near-identity is ≈ 0).
    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1.0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// CG and SLQ on sharded blocks over 1–4 ranks give the single-process numbers: the
        /// same iterations, and values to 1e-10 relative (only the order of the sums differs).
        #[test]
        fn sharded_solves_equal_the_single_process_run(
            n in 6usize..60, ranks in 1usize..5, rank in 1usize..12, log_c in 0.0f64..4.0,
            seed in 0u64..1000
        ) {
            // A rank well below n: CG ends long before n steps, where rounding would decide.
            let a = Dense(spd(n, rank.min(n / 2), 10f64.powf(log_c), seed));
            let b = crate::slq::draw_probes(n, 2, Probes::Gaussian, seed + 1);
            let params = InvQuadLogdetParams {
                // A tolerance above the rounding floor: at the floor (≈ 1e-12 here), whether the
                // last step meets it depends on the order of the sums, and so may the count.
                cg: CgParams { rel_tolerance: 1e-8, max_iters: 2 * n, ..CgParams::default() },
                probes: 6,
                distribution: Probes::Rademacher,
                seed,
            };
            let single = inv_quad_logdet(&a, &Identity, &b, &params).unwrap();
            let sharded = LocalGroup::run(ranks, |comm| {
                let part = RowPartition::even(n, comm.size());
                let rhs = Sharded::scatter(&b, part, comm);
                let out = inv_quad_logdet(&a, &Identity, &rhs, &params).unwrap();
                (out.inv_quad.clone(), out.logdet.value, out.info.iterations,
                 out.solution.to_host())
            });
            for (quad, logdet, iters, x) in &sharded {
                prop_assert_eq!(*iters, single.info.iterations);
                prop_assert!(rel(*logdet, single.logdet.value) < 1e-10);
                for j in 0..2 {
                    prop_assert!(rel(quad[j], single.inv_quad[j]) < 1e-10);
                }
                prop_assert!((x - &single.solution).norm() <= 1e-10 * single.solution.norm());
            }
            // Every rank holds bit-identical scalars.
            prop_assert!(sharded.iter().all(|s| s.1 == sharded[0].1));
        }
    }

    #[test]
    fn solver_traffic_is_counted() {
        let n = 12;
        let a = Dense(spd(n, 3, 100.0, 3));
        let b = DMatrix::from_element(n, 1, 1.0);
        let stats = LocalGroup::run(2, |comm| {
            let comm = Counted::new(comm);
            let rhs = Sharded::scatter(&b, RowPartition::even(n, 2), comm.clone());
            let out = pcg(&a, &Identity, &rhs, None, &CgParams::default()).unwrap();
            (comm.stats(), out.info.iterations)
        });
        for (s, iterations) in stats {
            // A few scalars per iteration (plus the test operator's gathers of n·k values).
            assert!(s.calls as usize >= 2 * iterations);
            assert!(s.bytes > 0);
        }
    }

    #[test]
    fn from_host_like_takes_this_ranks_rows() {
        let m = DMatrix::from_fn(5, 2, |i, j| (i * 10 + j) as f64);
        let got = LocalGroup::run(2, |comm| {
            let part = RowPartition::even(5, 2);
            let z = Sharded::new(DMatrix::zeros(part.range(comm.rank()).len(), 1), part, comm);
            z.from_host_like(&m).into_local()
        });
        assert_eq!(got[0], m.rows_range(0..3).into_owned());
        assert_eq!(got[1], m.rows_range(3..5).into_owned());
    }
}
