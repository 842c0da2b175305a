//! Batched CG on a dense 4096×4096 SPD operator with 16 right-hand sides
//! (f64), next to this machine's dense matrix-product peak measured in the
//! same run.
//!
//! `cargo bench -p ntk-krylov` first prints a one-shot summary (achieved
//! GFLOP/s of CG, of the operator's own gemm shape, of a large gemm, and the
//! share of CG time spent inside the operator), then runs the divan benches,
//! whose throughput column reads as FLOP/s ("item/s").

use std::cell::Cell;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use divan::Bencher;
use divan::counter::ItemsCount;
use krylov::{CgParams, LinearOperator, cg};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const N: usize = 4096;
const K: usize = 16;
const ITERS: usize = 30;
/// Columns of the right factor in the peak gemm ($N \times N$ by $N \times$ `PEAK_COLS`).
const PEAK_COLS: usize = 512;

/// $A = W + 3 I$ with a Wigner matrix $W = (G + G^\top)/\sqrt{2n}$: spectrum
/// close to $[1, 5]$, SPD, dense.
fn operator() -> &'static DMatrix<f64> {
    static A: OnceLock<DMatrix<f64>> = OnceLock::new();
    A.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(1);
        let g = DMatrix::<f64>::from_fn(N, N, |_, _| 2.0 * rng.random::<f64>() - 1.0);
        // Uniform(-1, 1) entries have variance 1/3.
        let s = (3.0 / (2.0 * N as f64)).sqrt();
        let mut a = (&g + g.transpose()) * s;
        for i in 0..N {
            a[(i, i)] += 3.0;
        }
        a
    })
}

fn rhs(cols: usize) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(2);
    DMatrix::from_fn(N, cols, |_, _| rng.random::<f64>() - 0.5)
}

fn params() -> CgParams {
    // A fixed number of iterations: no tolerance, no final residual check.
    CgParams {
        abs_tolerance: 0.0,
        rel_tolerance: 0.0,
        max_iters: ITERS,
        verify_residual: false,
        ..CgParams::default()
    }
}

/// Operator flops of one CG run: one product per iteration.
fn cg_flops() -> u64 {
    (ITERS * 2 * N * N * K) as u64
}

/// The dense operator, timing its own products.
struct Timed<'a> {
    a: &'a DMatrix<f64>,
    spent: Cell<Duration>,
}

impl LinearOperator<DMatrix<f64>> for Timed<'_> {
    fn nrows(&self) -> usize {
        N
    }
    fn ncols(&self) -> usize {
        N
    }
    fn apply(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let t = Instant::now();
        let y = self.a.apply(x);
        self.spent.set(self.spent.get() + t.elapsed());
        y
    }
}

fn gemm(a: &DMatrix<f64>, b: &DMatrix<f64>, c: &mut DMatrix<f64>) {
    c.gemm(1.0, a, b, 0.0);
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn summary() {
    let a = operator();
    let gflops = |flops: f64, d: Duration| flops / d.as_secs_f64() / 1e9;

    let b_peak = rhs(PEAK_COLS);
    let mut c_peak = DMatrix::zeros(N, PEAK_COLS);
    gemm(a, &b_peak, &mut c_peak);
    let t_peak = best_of(3, || gemm(a, &b_peak, &mut c_peak));
    let peak = gflops((2 * N * N * PEAK_COLS) as f64, t_peak);

    let b = rhs(K);
    let mut c = DMatrix::zeros(N, K);
    let t_op = best_of(5, || gemm(a, &b, &mut c));
    let op = gflops((2 * N * N * K) as f64, t_op);

    let mut best = (Duration::MAX, Duration::ZERO);
    for _ in 0..3 {
        let timed = Timed {
            a,
            spent: Cell::new(Duration::ZERO),
        };
        let t = Instant::now();
        let out = cg(&timed, &b, &params()).unwrap();
        let total = t.elapsed();
        assert_eq!(out.info.iterations, ITERS);
        if total < best.0 {
            best = (total, timed.spent.get());
        }
    }
    let (total, in_op) = best;
    let achieved = gflops(cg_flops() as f64, total);
    println!("== krylov batched CG, dense {N}x{N} SPD, k = {K}, f64, {ITERS} iterations ==");
    println!("gemm peak    ({N}x{N} * {N}x{PEAK_COLS}): {peak:7.2} GFLOP/s");
    println!("operator gemm ({N}x{N} * {N}x{K}):  {op:7.2} GFLOP/s");
    println!(
        "CG: {:.3} s, {achieved:7.2} GFLOP/s (operator flops) = {:.0}% of gemm peak, {:.0}% of the operator gemm rate",
        total.as_secs_f64(),
        100.0 * achieved / peak,
        100.0 * achieved / op
    );
    println!(
        "CG time in the operator: {:.1}% ({:.3} s of {:.3} s)",
        100.0 * in_op.as_secs_f64() / total.as_secs_f64(),
        in_op.as_secs_f64(),
        total.as_secs_f64()
    );
}

fn main() {
    summary();
    divan::main();
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn cg_dense_4096_k16(bencher: Bencher) {
    let a = operator();
    let b = rhs(K);
    bencher
        .counter(ItemsCount::new(cg_flops()))
        .bench_local(|| cg(black_box(a), black_box(&b), &params()).unwrap());
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn gemm_4096x4096x16(bencher: Bencher) {
    let a = operator();
    let b = rhs(K);
    let mut c = DMatrix::zeros(N, K);
    bencher
        .counter(ItemsCount::new((2 * N * N * K) as u64))
        .bench_local(|| gemm(black_box(a), black_box(&b), &mut c));
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn gemm_peak_4096x4096x512(bencher: Bencher) {
    let a = operator();
    let b = rhs(PEAK_COLS);
    let mut c = DMatrix::zeros(N, PEAK_COLS);
    bencher
        .counter(ItemsCount::new((2 * N * N * PEAK_COLS) as u64))
        .bench_local(|| gemm(black_box(a), black_box(&b), &mut c));
}
