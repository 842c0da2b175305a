//! The scaling experiment's function-space log marginal likelihood with the data split across
//! ranks: `mpirun -np N ntk-bench reproduce scaling --distributed` (built with the `mpi`
//! feature), or `ntk-bench distributed --threads N` on one machine without MPI.
//!
//! Every rank builds the same network (same seed) and generates the scaling experiment's data
//! (the same stream, so the points equal those of `reproduce scaling`), keeping only its rows;
//! [`DistributedNtkGp`] then runs the preconditioned CG/SLQ with each NTK product
//! all-reducing one $p \times k$ block. Rank 0 reports, per $n$: the value and its SLQ terms,
//! CG iterations, the slowest rank's time, the share of it spent in all-reduce, and the bytes
//! each rank all-reduced per CG iteration. With `check`, rank 0 also runs the
//! single-process [`Strategy::MatrixFree`](ntk_gp::Strategy::MatrixFree) on all the rows and
//! reports the relative differences.

use burn::prelude::Backend;
use krylov::comm::{Communicator, RowPartition};
use nalgebra::{DMatrix, DVector};
use ntk_gp::distributed::{DistributedNtkGp, DistributedParams};
use ntk_gp::{GpError, MatrixFreeParams, MeanFunction, Param};
use ntk_ops::{JacobianParams, MlpConfig};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::stream_rng;
use crate::scaling::{
    Dtype, Method, Nonlinearity, ScalingConfig, SolverParams, anchor_like_data, lml_by,
};

/// What a distributed run measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributedConfig {
    /// Layer widths of the MLP.
    pub widths: Vec<usize>,
    /// Its nonlinearity.
    pub activation: Nonlinearity,
    /// Training-set sizes.
    pub ns: Vec<usize>,
    /// Precision of the network and its products.
    pub dtype: Dtype,
    /// Noise variance $\sigma^2$ (prior scale 1, zero mean, as in the scaling experiment).
    pub noise: f64,
    /// Relative CG tolerance.
    pub cg_tolerance: f64,
    /// CG iteration cap.
    pub max_iters: usize,
    /// SLQ probes.
    pub probes: usize,
    /// Rank of the pivoted-Cholesky preconditioner.
    pub precond_rank: usize,
    /// Jacobian memory budget per rank, bytes.
    pub memory_budget: usize,
    /// Seed of the data and the network (the run's `--seed`).
    pub seed: u64,
    /// Also solve on one process (rank 0, all rows) and report the differences.
    pub check: bool,
}

impl DistributedConfig {
    /// The scaling experiment's $n$ sweep, function-space method, with its settings.
    pub fn of_scaling(c: &ScalingConfig, seed: u64) -> Self {
        Self {
            widths: c.widths.clone(),
            activation: c.activation,
            ns: c.ns.clone(),
            dtype: c.dtype,
            noise: c.noise,
            cg_tolerance: c.cg_tolerance,
            max_iters: c.max_iters,
            probes: c.probes,
            precond_rank: c.precond_rank,
            memory_budget: c.memory_budget,
            seed,
            check: false,
        }
    }

    fn params(&self) -> DistributedParams {
        DistributedParams {
            noise: Param::Fixed(self.noise),
            prior_scale: Param::Fixed(1.0),
            mean: MeanFunction::Zero,
            matrix_free: MatrixFreeParams {
                cg_tolerance: self.cg_tolerance,
                max_iters: self.max_iters,
                probes: self.probes,
                precond_rank: self.precond_rank,
                seed: 0,
                dense_fallback_max_n: 0,
                ..MatrixFreeParams::default()
            },
            jacobian: JacobianParams {
                memory_budget: self.memory_budget,
                ..JacobianParams::default()
            },
            time_limit: None,
        }
    }
}

/// One rank's times at one $n$.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankRow {
    /// Rows of $X$ this rank held.
    pub rows: usize,
    /// Seconds from the data to the number (set-up and solve).
    pub seconds: f64,
    /// Seconds of the solve (preconditioner, CG/SLQ).
    pub solve_s: f64,
    /// Seconds inside all-reduce calls during the solve.
    pub comm_s: f64,
}

/// One $n$ of a distributed run (as rank 0 reports it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributedRow {
    /// Training points.
    pub n: usize,
    /// Ranks.
    pub ranks: usize,
    /// Parameters of the network.
    pub p: usize,
    /// $\log p(y)$.
    pub lml: f64,
    /// $y^\top A^{-1} y$.
    pub inv_quad: f64,
    /// SLQ $\log\lvert A\rvert$.
    pub logdet: f64,
    /// Its standard error.
    pub logdet_std_error: f64,
    /// CG iterations.
    pub cg_iterations: usize,
    /// The slowest rank's seconds (what the run took).
    pub seconds: f64,
    /// The slowest rank's solve seconds over its CG iterations.
    pub seconds_per_iteration: f64,
    /// Mean over ranks of the share of the solve spent in all-reduce.
    pub comm_share: f64,
    /// Bytes rank 0 passed to all-reduce per CG iteration (0 on one rank).
    pub bytes_per_iteration: f64,
    /// Bytes rank 0 passed to all-reduce for the preconditioner (its rows of $K$).
    pub precond_bytes: f64,
    /// Every rank's times.
    pub per_rank: Vec<RankRow>,
    /// With `check`: the single-process run's value, iterations, and the relative difference
    /// of the value.
    pub check: Option<Check>,
}

/// The single-process comparison of one row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The single-process $\log p(y)$.
    pub lml: f64,
    /// Its CG iterations.
    pub cg_iterations: Option<usize>,
    /// $|\log p_N - \log p_1| / |\log p_1|$.
    pub lml_rel_diff: f64,
    /// The single-process run's seconds.
    pub seconds: f64,
}

/// Runs every $n$ of `config` over the ranks of `comm` (collective); every rank returns the
/// same rows.
pub fn run<C: Communicator>(
    config: &DistributedConfig,
    comm: C,
) -> Result<Vec<DistributedRow>, BenchError> {
    if config.ns.is_empty() || config.widths.len() < 2 || config.widths.last() != Some(&1) {
        return Err(BenchError::invalid(
            "distributed config",
            "needs at least one n and widths ending in one output",
        ));
    }
    match config.dtype {
        Dtype::F32 => run_on::<burn_ndarray::NdArray<f32>, C>(config, comm),
        Dtype::F64 => run_on::<burn_ndarray::NdArray<f64>, C>(config, comm),
    }
}

fn run_on<B: Backend, C: Communicator>(
    config: &DistributedConfig,
    comm: C,
) -> Result<Vec<DistributedRow>, BenchError>
where
    B::FloatElem: krylov::Scalar + nalgebra::RealField + Copy + Into<f64>,
{
    let mlp_config = MlpConfig::new(&config.widths).with_activation(config.activation.into());
    let p = mlp_config.layout().n_params();
    let max_n = config.ns.iter().copied().max().unwrap_or(1);
    // The scaling experiment's data stream (nested in n); each rank keeps its rows of each n.
    let (x_all, y_all) = anchor_like_data(max_n, config.widths[0], &mut stream_rng(config.seed, 0));
    let params = config.params();
    let (size, rank) = (comm.size(), comm.rank());
    let mut rows = Vec::new();
    for &n in &config.ns {
        let part = RowPartition::even(n, size);
        let range = part.range(rank);
        let x = x_all.rows_range(range.clone()).into_owned();
        let y = y_all.rows_range(range.clone()).into_owned();
        let mlp = mlp_config
            .init::<B>(config.seed, &Default::default())
            .map_err(GpError::from)?;
        let t = std::time::Instant::now();
        let gp = DistributedNtkGp::new(mlp, &x, &y, &params, comm.clone())?;
        let seconds = t.elapsed().as_secs_f64();
        let timing = gp.timings();
        let per_rank: Vec<RankRow> = krylov::comm::all_gather(
            &comm,
            &[range.len() as f64, seconds, timing.solve_s, timing.comm_s],
        )
        .into_iter()
        .map(|s| RankRow {
            rows: s[0] as usize,
            seconds: s[1],
            solve_s: s[2],
            comm_s: s[3],
        })
        .collect();
        let iterations = gp.cg_info().iterations;
        let slowest = per_rank.iter().map(|r| r.seconds).fold(0.0, f64::max);
        let slowest_solve = per_rank.iter().map(|r| r.solve_s).fold(0.0, f64::max);
        let comm_share = per_rank
            .iter()
            .map(|r| r.comm_s / r.solve_s.max(1e-12))
            .sum::<f64>()
            / size as f64;
        let check = if config.check && rank == 0 {
            Some(single_process_check::<B>(
                &mlp_config,
                config,
                &x_all,
                &y_all,
                n,
                gp.log_marginal_likelihood(),
            )?)
        } else {
            None
        };
        rows.push(DistributedRow {
            n,
            ranks: size,
            p,
            lml: gp.log_marginal_likelihood(),
            inv_quad: gp.inv_quad(),
            logdet: gp.log_det().value,
            logdet_std_error: gp.log_det().std_error,
            cg_iterations: iterations,
            seconds: slowest,
            seconds_per_iteration: slowest_solve / iterations.max(1) as f64,
            comm_share,
            bytes_per_iteration: timing.comm_bytes as f64 / iterations.max(1) as f64,
            precond_bytes: timing.precond_comm_bytes as f64,
            per_rank,
            check,
        });
    }
    Ok(rows)
}

fn single_process_check<B: Backend>(
    mlp_config: &MlpConfig,
    config: &DistributedConfig,
    x_all: &DMatrix<f64>,
    y_all: &DVector<f64>,
    n: usize,
    lml: f64,
) -> Result<Check, BenchError>
where
    B::FloatElem: krylov::Scalar + nalgebra::RealField + Copy + Into<f64>,
{
    let mlp = mlp_config
        .init::<B>(config.seed, &Default::default())
        .map_err(GpError::from)?;
    let x = x_all.rows_range(0..n).into_owned();
    let y = y_all.rows_range(0..n).into_owned();
    let settings = SolverParams {
        noise: config.noise,
        cg_tolerance: config.cg_tolerance,
        max_iters: config.max_iters,
        probes: config.probes,
        precond_rank: config.precond_rank,
        seed: 0,
        memory_budget: config.memory_budget,
    };
    let t = std::time::Instant::now();
    let one = lml_by(Method::FunctionSpace, mlp, &x, &y, &settings)?;
    Ok(Check {
        lml: one.value.lml,
        cg_iterations: one.cg.map(|c| c.iterations),
        lml_rel_diff: (lml - one.value.lml).abs() / one.value.lml.abs(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The rows as a plain-text table.
pub fn table(rows: &[DistributedRow]) -> String {
    let mut out = String::from(
        "     n  ranks        p        log p(y)  CG it   seconds  s/iter  comm share  bytes/iter  single-process Δ\n",
    );
    for r in rows {
        let check = match &r.check {
            Some(c) => format!(
                "{:.1e} (it {}, {:.2} s)",
                c.lml_rel_diff,
                c.cg_iterations.map_or("-".into(), |i| i.to_string()),
                c.seconds
            ),
            None => "-".into(),
        };
        out += &format!(
            "{:>6} {:>6} {:>8} {:>15.6} {:>6} {:>9.3} {:>7.4} {:>10.1}% {:>11.0}  {}\n",
            r.n,
            r.ranks,
            r.p,
            r.lml,
            r.cg_iterations,
            r.seconds,
            r.seconds_per_iteration,
            100.0 * r.comm_share,
            r.bytes_per_iteration,
            check
        );
        let ranks: Vec<String> = r
            .per_rank
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "rank {i}: {} rows, {:.3} s, all-reduce {:.3} s",
                    t.rows, t.seconds, t.comm_s
                )
            })
            .collect();
        out += &format!("{:>14}{}\n", "", ranks.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use krylov::comm::LocalGroup;

    fn config() -> DistributedConfig {
        DistributedConfig {
            ns: vec![60, 90],
            dtype: Dtype::F64,
            cg_tolerance: 1e-8,
            probes: 8,
            check: true,
            ..DistributedConfig::of_scaling(
                &ScalingConfig {
                    widths: vec![5, 16, 16, 1],
                    ..ScalingConfig::default()
                },
                3,
            )
        }
    }

    /// Over 1–3 threads as ranks, rank 0's rows match the single-process scaling method, and
    /// all ranks return the same numbers.
    #[test]
    fn distributed_rows_match_the_single_process_method() {
        let c = config();
        for ranks in 1..=3 {
            let out = LocalGroup::run(ranks, |comm| run(&c, comm).unwrap());
            let rows = &out[0];
            assert_eq!(rows.len(), 2);
            for r in rows {
                let check = r.check.unwrap();
                assert!(check.lml_rel_diff < 1e-10, "{ranks} ranks, n = {}", r.n);
                assert_eq!(check.cg_iterations, Some(r.cg_iterations));
                assert_eq!(r.per_rank.iter().map(|t| t.rows).sum::<usize>(), r.n);
                if ranks > 1 {
                    // At least one all-reduce of p values per iteration.
                    assert!(r.bytes_per_iteration >= 8.0 * r.p as f64);
                }
            }
            for other in &out[1..] {
                assert_eq!(other[0].lml, rows[0].lml);
            }
            assert!(table(rows).contains("rank 0"));
        }
    }
}
