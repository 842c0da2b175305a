//! Communicators: what the solvers need to run with their vectors split across processes.
//!
//! A Krylov solver combines its vectors column by column (local work) and reads back small
//! matrices of inner products (a sum over the rows). When the rows are spread over $N$
//! processes, only those sums cross process boundaries: each process computes the partial
//! sums over its rows and an *all-reduce* adds them, so every process holds the same scalars
//! and takes the same branch. That is all a [`Communicator`] does.
//!
//! - [`SingleProcess`]: one process, no communication (the sum of one term).
//! - [`LocalGroup`]: $N$ threads of one process acting as $N$ ranks; it makes every
//!   distributed code path testable without MPI, with sums in rank order, so every rank gets
//!   bit-identical results.
//! - `MpiCommunicator` (cargo feature `mpi`): ranks of an MPI job, over the system's MPI.
//! - [`Counted`]: wraps any communicator and counts calls, bytes and the time spent in them.
//!
//! [`Sharded`](crate::sharded::Sharded) blocks use a communicator so that CG, Lanczos and
//! SLQ run unchanged on vectors whose rows are split by a [`RowPartition`].

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

/// A group of processes (ranks) that can sum buffers across the group.
///
/// Every rank must make the same calls in the same order with buffers of the same length
/// (they are collective), as MPI requires.
pub trait Communicator: Clone {
    /// This process's rank, $0 \le r <$ [`size`](Self::size).
    fn rank(&self) -> usize;
    /// Number of ranks $N$.
    fn size(&self) -> usize;
    /// $b \leftarrow \sum_{r=0}^{N-1} b_r$ in place: every rank ends with the sum.
    fn all_reduce_sum(&self, buf: &mut [f64]);
}

/// One process: nothing to communicate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f64]) {}
}

/// $N$ threads of this process as $N$ ranks: for tests and for trying the distributed code
/// paths on one machine without MPI.
///
/// Sums are taken in rank order, so all ranks receive bit-identical results.
///
/// ```
/// use krylov::comm::{Communicator, LocalGroup};
///
/// let sums = LocalGroup::run(3, |comm| {
///     let mut b = [comm.rank() as f64, 1.0];
///     comm.all_reduce_sum(&mut b);
///     b
/// });
/// assert_eq!(sums, vec![[3.0, 3.0]; 3]);
/// ```
#[derive(Clone, Debug)]
pub struct LocalGroup {
    rank: usize,
    shared: Arc<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    size: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

impl LocalGroup {
    /// Runs `f` on `size` scoped threads, one per rank, and returns their results in rank
    /// order. `size` is at least 1.
    pub fn run<T: Send>(size: usize, f: impl Fn(LocalGroup) -> T + Sync) -> Vec<T> {
        let size = size.max(1);
        let shared = Arc::new(GroupState {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let comm = LocalGroup {
                        rank,
                        shared: shared.clone(),
                    };
                    let f = &f;
                    s.spawn(move || f(comm))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

impl Communicator for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn all_reduce_sum(&self, buf: &mut [f64]) {
        let st = &self.shared;
        if st.size == 1 {
            return;
        }
        st.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = buf.to_vec();
        st.barrier.wait();
        {
            let slots = st.slots.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                slots.iter().all(|s| s.len() == buf.len()),
                "LocalGroup::all_reduce_sum: ranks passed buffers of different lengths"
            );
            for (i, b) in buf.iter_mut().enumerate() {
                *b = slots.iter().fold(0.0, |acc, s| acc + s[i]);
            }
        }
        // Nobody writes the next call's slot before every rank has read this one.
        st.barrier.wait();
    }
}

/// What a [`Counted`] communicator has seen: all-reduce calls, the `f64` bytes each rank sent
/// into them, and the wall time spent inside them (waiting for other ranks included). All
/// zero on one rank, where nothing is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Number of all-reduce calls.
    pub calls: u64,
    /// Bytes passed to all-reduce by this rank ($8\times$ the buffer lengths).
    pub bytes: u64,
    /// Seconds spent in all-reduce calls.
    pub seconds: f64,
}

/// A communicator that counts what passes through it (see [`CommStats`]).
///
/// Clones share the counters, so the operator and the blocks of one solve add to one tally.
#[derive(Clone, Debug)]
pub struct Counted<C> {
    inner: C,
    stats: Rc<Cell<CommStats>>,
}

impl<C: Communicator> Counted<C> {
    /// Wraps `inner` with zeroed counters.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            stats: Rc::new(Cell::new(CommStats::default())),
        }
    }
    /// The counts so far.
    pub fn stats(&self) -> CommStats {
        self.stats.get()
    }
    /// Zeroes the counters.
    pub fn reset(&self) {
        self.stats.set(CommStats::default());
    }
    /// The wrapped communicator.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: Communicator> Communicator for Counted<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    /// Counts calls on more than one rank only: with one rank nothing is sent.
    fn all_reduce_sum(&self, buf: &mut [f64]) {
        if self.inner.size() == 1 {
            return;
        }
        let t = Instant::now();
        self.inner.all_reduce_sum(buf);
        let mut s = self.stats.get();
        s.calls += 1;
        s.bytes += 8 * buf.len() as u64;
        s.seconds += t.elapsed().as_secs_f64();
        self.stats.set(s);
    }
}

/// How $n$ rows are split over $N$ ranks: contiguous ranges, the first $n \bmod N$ ranks one
/// row longer.
///
/// ```
/// use krylov::comm::RowPartition;
///
/// let p = RowPartition::even(10, 4);
/// assert_eq!(p.range(0), 0..3);
/// assert_eq!(p.range(3), 8..10);
/// assert_eq!(p.rows(), 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowPartition {
    starts: Vec<usize>,
}

impl RowPartition {
    /// $n$ rows over `ranks` ranks (at least 1), as evenly as possible.
    pub fn even(n: usize, ranks: usize) -> Self {
        let ranks = ranks.max(1);
        let (q, r) = (n / ranks, n % ranks);
        let mut starts = Vec::with_capacity(ranks + 1);
        let mut at = 0;
        starts.push(0);
        for i in 0..ranks {
            at += q + usize::from(i < r);
            starts.push(at);
        }
        Self { starts }
    }

    /// From the row counts of each rank, in rank order.
    pub fn from_counts(counts: &[usize]) -> Self {
        let mut starts = vec![0];
        for c in counts {
            starts.push(starts.last().copied().unwrap_or(0) + c);
        }
        Self { starts }
    }

    /// The rows held by `rank`.
    pub fn range(&self, rank: usize) -> Range<usize> {
        self.starts[rank]..self.starts[rank + 1]
    }

    /// Total number of rows $n$.
    pub fn rows(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Number of ranks.
    pub fn ranks(&self) -> usize {
        self.starts.len() - 1
    }
}

/// Whether `flag` holds on any rank (collective): how ranks agree to stop together when
/// one of them meets an error, so that none is left waiting in an all-reduce.
///
/// ```
/// use krylov::comm::{Communicator, LocalGroup, any_rank};
///
/// let got = LocalGroup::run(3, |comm| any_rank(&comm, comm.rank() == 2));
/// assert_eq!(got, vec![true; 3]);
/// ```
pub fn any_rank<C: Communicator>(comm: &C, flag: bool) -> bool {
    let mut b = [f64::from(u8::from(flag))];
    comm.all_reduce_sum(&mut b);
    b[0] > 0.0
}

/// Every rank's `local` values, in rank order (collective; every rank passes the same
/// number of values): an all-gather by one sum, each rank filling its slot of a zeroed
/// buffer. For per-rank counts and timings, not for bulk data.
///
/// ```
/// use krylov::comm::{Communicator, LocalGroup, all_gather};
///
/// let got = LocalGroup::run(2, |comm| all_gather(&comm, &[comm.rank() as f64, 7.0]));
/// assert_eq!(got[1], vec![vec![0.0, 7.0], vec![1.0, 7.0]]);
/// ```
pub fn all_gather<C: Communicator>(comm: &C, local: &[f64]) -> Vec<Vec<f64>> {
    let (k, rank) = (local.len(), comm.rank());
    let mut buf = vec![0.0; k * comm.size()];
    buf[k * rank..k * (rank + 1)].copy_from_slice(local);
    comm.all_reduce_sum(&mut buf);
    buf.chunks(k.max(1))
        .take(comm.size())
        .map(<[f64]>::to_vec)
        .collect()
}

/// Whether this process was started by `mpirun` (Open MPI, MPICH or PMIx set these
/// variables in every process they start), with or without the `mpi` feature: a program
/// built without it can refuse to run $N$ independent copies.
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

#[cfg(feature = "mpi")]
pub use self::mpi_comm::{MpiCommunicator, with_world};

#[cfg(feature = "mpi")]
mod mpi_comm {
    use super::Communicator;
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator as _, CommunicatorCollectives};
    use std::rc::Rc;

    /// The ranks of an MPI communicator (usually `MPI_COMM_WORLD`) over the system's MPI
    /// (rsmpi).
    ///
    /// ```no_run
    /// use krylov::comm::{Communicator, MpiCommunicator};
    ///
    /// let universe = mpi::initialize().expect("MPI initialized once");
    /// let comm = MpiCommunicator::new(universe.world());
    /// let mut b = [1.0];
    /// comm.all_reduce_sum(&mut b);
    /// assert_eq!(b[0], comm.size() as f64);
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
    #[derive(Clone)]
    pub struct MpiCommunicator {
        comm: Rc<SimpleCommunicator>,
        rank: usize,
        size: usize,
    }

    impl MpiCommunicator {
        /// Wraps an MPI communicator.
        pub fn new(comm: SimpleCommunicator) -> Self {
            let (rank, size) = (comm.rank() as usize, comm.size() as usize);
            Self {
                comm: Rc::new(comm),
                rank,
                size,
            }
        }
    }

    /// Initializes MPI, runs `f` on the ranks of `MPI_COMM_WORLD`, then finalizes MPI;
    /// `None` if MPI was already initialized in this process.
    #[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
    pub fn with_world<R>(f: impl FnOnce(MpiCommunicator) -> R) -> Option<R> {
        let universe = mpi::initialize()?;
        Some(f(MpiCommunicator::new(universe.world())))
    }

    impl std::fmt::Debug for MpiCommunicator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "MpiCommunicator(rank {} of {})", self.rank, self.size)
        }
    }

    impl Communicator for MpiCommunicator {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_sum(&self, buf: &mut [f64]) {
            if self.size == 1 || buf.is_empty() {
                return;
            }
            let send = buf.to_vec();
            self.comm
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_the_rows_in_order() {
        for n in 0..20 {
            for ranks in 1..6 {
                let p = RowPartition::even(n, ranks);
                assert_eq!(p.rows(), n);
                assert_eq!(p.ranks(), ranks);
                let lens: Vec<usize> = (0..ranks).map(|r| p.range(r).len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
                for r in 1..ranks {
                    assert_eq!(p.range(r - 1).end, p.range(r).start);
                }
                assert_eq!(RowPartition::from_counts(&lens), p);
            }
        }
    }

    #[test]
    fn local_group_sums_many_calls_in_rank_order() {
        let out = LocalGroup::run(4, |comm| {
            let mut total = Vec::new();
            for call in 0..50 {
                let mut b = vec![(comm.rank() * 10 + call) as f64; 3];
                comm.all_reduce_sum(&mut b);
                total.push(b[0]);
            }
            total
        });
        for call in 0..50 {
            let expect = (0..4).map(|r| (r * 10 + call) as f64).sum::<f64>();
            assert!(out.iter().all(|t| t[call] == expect));
        }
    }

    #[test]
    fn counted_tallies_calls_and_bytes() {
        let stats = LocalGroup::run(2, |comm| {
            let c = Counted::new(comm);
            let d = c.clone();
            c.all_reduce_sum(&mut [1.0; 4]);
            d.all_reduce_sum(&mut [1.0; 2]);
            let before = c.stats();
            c.reset();
            (before, d.stats())
        });
        for (before, after) in stats {
            assert_eq!((before.calls, before.bytes), (2, 48));
            assert_eq!(after.calls, 0);
        }
        let one = Counted::new(SingleProcess);
        one.all_reduce_sum(&mut [1.0; 4]);
        assert_eq!(one.stats(), CommStats::default(), "one rank sends nothing");
    }
}
