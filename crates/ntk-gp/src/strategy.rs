//! Choosing an inference strategy by a cost model.
//!
//! The three strategies compute the same posterior; their costs differ by orders of
//! magnitude (see the architecture page of the book). For $N = no$ outputs in all, $p$
//! parameters, $S = \sum_l (h_{l-1} + h_l)$ for an MLP of widths $h_l$, flops are:
//!
//! | strategy | time (flops) | memory (bytes, f64) |
//! |---|---|---|
//! | [`Strategy::Dense`] | $2N^2 S + N^3/3$ | $8N^2$ |
//! | [`Strategy::ParameterSpace`] (Gram accumulated over chunks) | $2Np^2 + p^3/3$ | $8p^2$ |
//! | [`Strategy::FunctionSpace`] (CG + SLQ) | $k\,c\,8Np$ | $8 n \sum_l h_l$ (activations) |
//!
//! with $k$ CG iterations and $c$ right-hand sides (targets + probes). [`choose`] takes the
//! cheapest strategy whose memory fits the budget and says why.

use serde::{Deserialize, Serialize};

/// How the posterior is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Pick by [`choose`].
    Auto,
    /// Dense function space: structured NTK matrix and Cholesky.
    Dense,
    /// Matrix-free function space: preconditioned CG and stochastic Lanczos quadrature.
    FunctionSpace,
    /// Parameter space: $J^\top J$ (or the Fisher) and Woodbury.
    ParameterSpace,
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
}

/// Assumptions of the matrix-free estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostAssumptions {
    /// CG iterations $k$ expected with preconditioning.
    pub cg_iterations: usize,
    /// Right-hand sides $c$ (targets + SLQ probes).
    pub columns: usize,
    /// Memory budget in bytes.
    pub memory_budget: f64,
}

impl Default for CostAssumptions {
    fn default() -> Self {
        Self {
            cg_iterations: 50,
            columns: 11,
            memory_budget: 8.0 * (1u64 << 30) as f64,
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

/// The three estimates for `size`.
pub fn estimates(size: &ProblemSize, a: &CostAssumptions) -> Vec<Estimate> {
    let big_n = (size.n * size.outputs) as f64;
    let p = size.params as f64;
    vec![
        Estimate {
            strategy: Strategy::Dense,
            flops: 2.0 * big_n * big_n * size.layer_sum as f64 + big_n.powi(3) / 3.0,
            bytes: 8.0 * big_n * big_n,
        },
        Estimate {
            strategy: Strategy::ParameterSpace,
            flops: 2.0 * big_n * p * p + p.powi(3) / 3.0,
            bytes: 8.0 * p * p,
        },
        Estimate {
            strategy: Strategy::FunctionSpace,
            flops: (a.cg_iterations * a.columns) as f64 * 8.0 * big_n * p,
            bytes: 8.0 * size.n as f64 * size.activations as f64,
        },
    ]
}

/// Picks the cheapest strategy in flops among those that fit the memory budget (the
/// matrix-free one always qualifies: its memory is only the activations, chunked if needed).
pub fn choose(size: &ProblemSize, a: &CostAssumptions) -> Choice {
    let estimates = estimates(size, a);
    let best = estimates
        .iter()
        .filter(|e| e.strategy == Strategy::FunctionSpace || e.bytes <= a.memory_budget)
        .min_by(|x, y| x.flops.total_cmp(&y.flops))
        .copied()
        .expect("the matrix-free estimate always qualifies");
    let over: Vec<String> = estimates
        .iter()
        .filter(|e| e.bytes > a.memory_budget && e.strategy != Strategy::FunctionSpace)
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
        let params = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
        ProblemSize {
            n,
            outputs: 1,
            params,
            layer_sum: widths.windows(2).map(|w| w[0] + w[1]).sum(),
            activations: widths.iter().sum(),
        }
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
        assert_eq!(c.strategy, Strategy::FunctionSpace);
        assert!(c.reason.contains("over the memory budget"), "{}", c.reason);
    }
}
