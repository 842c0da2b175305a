//! Choosing an inference strategy by a cost model.
//!
//! The four strategies compute the same posterior; their costs differ by orders of
//! magnitude (see the architecture page of the book). For $N = no$ outputs in all, $p$
//! parameters, $S = \sum_l (h_{l-1} + h_l)$ for an MLP of widths $h_l$, flops are:
//!
//! | strategy | time (flops) | peak memory (bytes, f64) |
//! |---|---|---|
//! | [`Strategy::Dense`] | $2N^2 S + N^3/3$ | $8(4N^2 + 2(N+m)A)$ |
//! | [`Strategy::ParameterSpace`] | $2Np^2 + p^3/3$ | $8(2Np + 4p^2)$ |
//! | [`Strategy::MatrixFree`] (CG + SLQ) | $k\,c\,8Np$ | factors, product chunks, $8N(6c + 2r)$ |
//! | [`Strategy::MatrixFreeParameterSpace`] | $(k\,c + 2r)\,8Np$ | factors, product chunks, $8p(6c + 3r)$ |
//!
//! with $k$ CG iterations, $c$ right-hand sides (targets + probes), $r$ the preconditioner's
//! rank, $m$ test points and $A = \sum_l h_l$ the activations of a point. The memory
//! column is what each strategy really holds at its peak: the dense one keeps the kernel,
//! its eigen-decomposition for the fit and its Cholesky factor; the parameter-space one
//! builds the $N \times p$ Jacobian (twice, on the device and on the host) and the
//! $p \times p$ Gram matrix with its decomposition; the matrix-free one holds the cached
//! per-layer factors (at most half the Jacobian's memory budget), one product's working
//! chunk, and the CG and preconditioner vectors. Predictions run in chunks of test points
//! that hold at most a quarter of the Jacobian's budget. [`estimates`] adds the process's
//! own footprint ([`PROCESS_BYTES`]); the estimates were checked against measured peak
//! resident memory (`docs/src/cli.md`). [`choose`] takes the cheapest strategy whose memory
//! fits the budget and says why.

use serde::{Deserialize, Serialize};

/// How the posterior is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Pick by [`choose`].
    Auto,
    /// Dense function space: structured NTK matrix and Cholesky.
    Dense,
    /// Parameter space: the explicit $p\times p$ matrix $J^\top J$ and Woodbury (small $p$).
    ParameterSpace,
    /// Matrix-free function space: $n\times n$ systems by pivoted-Cholesky-preconditioned CG,
    /// $\log\lvert A\rvert$ by stochastic Lanczos quadrature, variances by CG or LOVE.
    #[serde(alias = "FunctionSpace")]
    MatrixFree,
    /// Matrix-free parameter space: $p\times p$ systems $s^2 J^\top J + \sigma^2 I$ by
    /// Nyström-preconditioned CG and SLQ, for $n \gg p$.
    MatrixFreeParameterSpace,
}

/// The sizes that decide the cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProblemSize {
    /// Training points $n$.
    pub n: usize,
    /// Outputs per point $o$.
    pub outputs: usize,
    /// Parameters $p$.
    pub params: usize,
    /// $S = \sum_l (h_{l-1} + h_l)$, the structured-NTK cost per kernel entry.
    pub layer_sum: usize,
    /// $\sum_l h_l$, the activations stored per point.
    pub activations: usize,
    /// The widest layer $\max_l h_l$.
    pub max_width: usize,
    /// Test points $m$ predicted after the fit (0 if unknown).
    pub n_test: usize,
    /// Whether the network has a structured NTK (a dense chain): otherwise the dense
    /// strategy forms the kernel from explicit Jacobian blocks ($S = p$ per entry, plus the
    /// blocks' memory).
    pub structured: bool,
}

impl ProblemSize {
    /// The size of an MLP of `widths` (inputs first) with `n` training and `n_test` test
    /// points and one output per point; `None` if the parameter count overflows `usize`.
    pub fn mlp(widths: &[usize], n: usize, n_test: usize) -> Option<Self> {
        let params = widths.windows(2).try_fold(0usize, |acc, w| {
            acc.checked_add(w[0].checked_mul(w[1])?.checked_add(w[1])?)
        })?;
        Some(Self {
            n,
            outputs: 1,
            params,
            layer_sum: widths.windows(2).map(|w| w[0].saturating_add(w[1])).sum(),
            activations: widths.iter().fold(0usize, |a, &w| a.saturating_add(w)),
            max_width: widths.iter().copied().max().unwrap_or(0),
            n_test,
            structured: true,
        })
    }

    /// The size of any network with `n` training and `n_test` test points: a dense chain's
    /// by [`Self::mlp`]; any other network's with $S = p$ (the kernel from explicit
    /// Jacobian blocks) and the values its forward pass keeps per point as its activations.
    pub fn network<B: burn::prelude::Backend>(
        network: &ntk_ops::Network<B>,
        n: usize,
        n_test: usize,
    ) -> Option<Self> {
        if let Some(widths) = network.dense_widths() {
            return Self::mlp(&widths, n, n_test);
        }
        let saved = network.saved_per_point();
        Some(Self {
            n,
            outputs: network.n_outputs(),
            params: network.n_params(),
            layer_sum: network.n_params(),
            activations: saved,
            max_width: saved,
            n_test,
            structured: false,
        })
    }
}

/// The process's own resident memory before any data: the program, its libraries and the
/// thread pools (measured: about 8 MiB for `ntk` on Linux).
pub const PROCESS_BYTES: f64 = 12.0 * (1u64 << 20) as f64;

/// Assumptions of the matrix-free estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostAssumptions {
    /// CG iterations $k$ expected with preconditioning.
    pub cg_iterations: usize,
    /// Right-hand sides $c$ (targets + SLQ probes).
    pub columns: usize,
    /// Memory budget in bytes.
    pub memory_budget: f64,
    /// The Jacobian operator's memory budget (`JacobianParams::memory_budget`): cached
    /// factors take at most half, one product's chunk at most half.
    pub jacobian_budget: f64,
    /// Rank of the matrix-free preconditioner.
    pub precond_rank: usize,
}

impl Default for CostAssumptions {
    fn default() -> Self {
        Self {
            cg_iterations: 50,
            columns: 17,
            memory_budget: 8.0 * (1u64 << 30) as f64,
            jacobian_budget: (1u64 << 30) as f64,
            precond_rank: 30,
        }
    }
}

/// A strategy's estimated cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The strategy.
    pub strategy: Strategy,
    /// Floating-point operations.
    pub flops: f64,
    /// Peak memory in bytes.
    pub bytes: f64,
}

/// The chosen strategy, every estimate, and the reason in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The strategy chosen.
    pub strategy: Strategy,
    /// The estimates it was chosen from.
    pub estimates: Vec<Estimate>,
    /// Why, in one sentence.
    pub reason: String,
}

/// The four estimates for `size`: flops and peak bytes (see the module docs).
pub fn estimates(size: &ProblemSize, a: &CostAssumptions) -> Vec<Estimate> {
    let big_n = (size.n * size.outputs) as f64;
    let (n, m) = (size.n as f64, size.n_test as f64);
    let p = size.params as f64;
    let acts = size.activations as f64;
    let cols = a.columns.max(1) as f64;
    let budget = a.jacobian_budget;
    // Predictions run in chunks of test points holding at most a quarter of the budget.
    let test = |per_point: f64| (per_point * m).min(budget / 4.0);
    // Per point: cached factors (activations in, derivatives out, the widest layer) and one
    // product's working memory per column (a row of the widest layer).
    let factors = 8.0 * (2.0 * acts + size.max_width as f64) * n;
    let work = 8.0 * size.max_width as f64 * n * cols;
    vec![
        Estimate {
            strategy: Strategy::Dense,
            flops: 2.0 * big_n * big_n * size.layer_sum as f64 + big_n.powi(3) / 3.0,
            bytes: PROCESS_BYTES
                + 8.0 * (4.0 * big_n * big_n + 2.0 * (n + m) * acts)
                + test(8.0 * 3.0 * big_n)
                + if size.structured {
                    0.0
                } else {
                    (8.0 * big_n * p).min(budget / 2.0)
                },
        },
        Estimate {
            strategy: Strategy::ParameterSpace,
            flops: 2.0 * big_n * p * p + p.powi(3) / 3.0,
            bytes: PROCESS_BYTES + 8.0 * (2.0 * big_n * p + 4.0 * p * p) + test(8.0 * 3.0 * p),
        },
        Estimate {
            strategy: Strategy::MatrixFree,
            flops: (a.cg_iterations * a.columns) as f64 * 8.0 * big_n * p,
            bytes: PROCESS_BYTES
                + factors.min(budget / 2.0)
                + work.min(budget / 2.0)
                + 8.0 * big_n * (6.0 * cols + 2.0 * a.precond_rank as f64)
                + test(8.0 * 8.0 * big_n),
        },
        Estimate {
            strategy: Strategy::MatrixFreeParameterSpace,
            // The same products per CG column; the sketch adds 2r of them once.
            flops: (a.cg_iterations * a.columns + 2 * a.precond_rank) as f64 * 8.0 * big_n * p,
            bytes: PROCESS_BYTES
                + factors.min(budget / 2.0)
                + work.min(budget / 2.0)
                + 8.0 * p * (6.0 * cols + 3.0 * a.precond_rank as f64)
                + test(8.0 * 8.0 * p),
        },
    ]
}

/// Whether `s` is one of the matrix-free strategies, which qualify at any memory budget.
fn matrix_free(s: Strategy) -> bool {
    matches!(s, Strategy::MatrixFree | Strategy::MatrixFreeParameterSpace)
}

/// Picks the cheapest strategy in flops among those that fit the memory budget (the
/// matrix-free ones always qualify: their memory is only the activations, chunked if
/// needed, and Krylov vectors); between the two matrix-free ones, the one holding less.
pub fn choose(size: &ProblemSize, a: &CostAssumptions) -> Choice {
    let estimates = estimates(size, a);
    // The matrix-free strategy qualifies even over the budget (nothing else would), so that
    // a caller refusing plans over the budget sees its estimate.
    let mut best = estimates
        .iter()
        .filter(|e| matrix_free(e.strategy) || e.bytes <= a.memory_budget)
        .min_by(|x, y| x.flops.total_cmp(&y.flops))
        .copied()
        .expect("the matrix-free estimates always qualify");
    // Between the two matrix-free strategies the flops are alike (the same products per CG
    // column); the one whose Krylov vectors are shorter (n·o or p entries) holds less.
    if matrix_free(best.strategy) {
        best = estimates
            .iter()
            .filter(|e| matrix_free(e.strategy))
            .min_by(|x, y| x.bytes.total_cmp(&y.bytes))
            .copied()
            .expect("two matrix-free estimates");
    }
    let over: Vec<String> = estimates
        .iter()
        .filter(|e| e.bytes > a.memory_budget && !matrix_free(e.strategy))
        .map(|e| {
            format!(
                "{:?} needs {:.1} GiB",
                e.strategy,
                e.bytes / (1u64 << 30) as f64
            )
        })
        .collect();
    let mut reason = format!(
        "{:?}: {:.2e} flops, {:.1} MiB for n = {}, o = {}, p = {}",
        best.strategy,
        best.flops,
        best.bytes / (1u64 << 20) as f64,
        size.n,
        size.outputs,
        size.params
    );
    if !over.is_empty() {
        reason.push_str(&format!("; over the memory budget: {}", over.join(", ")));
    }
    Choice {
        strategy: best.strategy,
        estimates,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(n: usize, widths: &[usize]) -> ProblemSize {
        ProblemSize::mlp(widths, n, 0).unwrap()
    }

    #[test]
    fn sizes_that_overflow_are_none() {
        assert!(ProblemSize::mlp(&[2, usize::MAX, 1], 10, 0).is_none());
        assert_eq!(
            ProblemSize::mlp(&[1, 40, 40, 1], 1, 0).unwrap().params,
            1761
        );
    }

    #[test]
    fn every_strategy_is_charged_what_it_allocates() {
        let a = CostAssumptions::default();
        // Parameter space builds the n x p Jacobian: at n = 20 000, p = 4353 that is 0.7 GB,
        // far above the 8p^2 = 0.15 GB it was once charged.
        let e = estimates(&mlp(20_000, &[1, 64, 64, 1]), &a);
        let bytes = |s| e.iter().find(|x| x.strategy == s).unwrap().bytes;
        assert!(bytes(Strategy::ParameterSpace) > 8.0 * 20_000.0 * 4353.0);
        assert!(bytes(Strategy::Dense) > 4.0 * 8.0 * 20_000f64.powi(2));
        // Matrix-free: CG vectors alone are 17 columns x 6 vectors x n x 8 bytes.
        assert!(bytes(Strategy::MatrixFree) > 8.0 * 20_000.0 * 17.0 * 6.0);
        assert!(bytes(Strategy::MatrixFree) < 1.6 * (1u64 << 30) as f64);
    }

    #[test]
    fn the_choices_of_the_design_notes() {
        let a = CostAssumptions::default();
        // The sine MLP (p = 1761): parameter space at any large n, dense for a few points.
        assert_eq!(
            choose(&mlp(10, &[1, 40, 40, 1]), &a).strategy,
            Strategy::Dense
        );
        assert_eq!(
            choose(&mlp(100_000, &[1, 40, 40, 1]), &a).strategy,
            Strategy::ParameterSpace
        );
        // The 803k MLP: dense in function space at n = 1000, matrix-free at 100k (n² too big).
        let big = [5, 200, 2000, 200, 1];
        assert_eq!(mlp(1, &big).params, 803_601);
        assert_eq!(choose(&mlp(1000, &big), &a).strategy, Strategy::Dense);
        let c = choose(&mlp(100_000, &big), &a);
        assert_eq!(c.strategy, Strategy::MatrixFree);
        assert!(c.reason.contains("over the memory budget"), "{}", c.reason);
    }
}
