//! The matrix-free NTK GP with its training data split across ranks (threads or MPI
//! processes): the same solves as [`Strategy::MatrixFree`], sharded.
//!
//! Each rank holds the network and its rows $(X_r, y_r)$. The training system
//! $A = s^2 J J^\top + \sigma^2 I$ is a [`ShardedNtk`] (each product all-reduces one
//! $p \times k$ block $J^\top V$), its vectors are [`Sharded`] by the same rows, and `krylov`'s
//! preconditioned batched CG and SLQ run on them unchanged: one call over $[r, z_1, \dots,
//! z_s]$ gives $r^\top A^{-1} r$ and $\log\lvert A\rvert$, as in the single-process strategy,
//! with the same pivoted-Cholesky preconditioner (its rows of $K$ come from the shards) and
//! the same probes (drawn from one seed, each rank keeping its rows). The numbers equal the
//! single-process run's up to the order of the sums (1e-10 relative is checked).
//!
//! Test points are replicated: every rank evaluates the network and its Jacobian at all of
//! them; the cross-kernel $K(X, X_*)$ is sharded by training rows, so the predictive mean
//! $\mu_* + s^2 K_*^\top\alpha$ is an all-reduce of $m$ values and the variances come from one
//! sharded CG solve per test point, as in the single-process strategy.
//!
//! Free hyper-parameters ($\sigma^2$, $s^2$, a constant mean) are fitted as in the
//! single-process strategy, by the same Adam ascent on stochastic-trace gradients: each step's
//! batched CG solve runs on the shards, and its inner products are all-reduced, so every rank
//! takes the same steps.
//!
//! What is not distributed (yet): LOVE variances, multi-output networks and the
//! parameter-space strategies (the operator for them is [`ntk_ops::ShardedGram`]).
//!
//! [`Strategy::MatrixFree`]: crate::Strategy::MatrixFree

use std::time::{Duration, Instant};

use burn::prelude::Backend;
use krylov::comm::{Communicator, Counted, RowPartition, any_rank};
use krylov::ops::{Scaled, Shifted};
use krylov::precond::PivotedCholesky;
use krylov::slq::{SlqEstimate, inv_quad_logdet};
use krylov::{Block, CgInfo, Scalar, Sharded, pcg};
use nalgebra::{DMatrix, DVector};
use ntk_ops::{Jacobian, JacobianParams, Network, ShardedNtk, TensorBlock, convert};

use crate::error::GpError;
use crate::exact::{Hyper, Prediction};
use crate::fit::{FitParams, Param};
use crate::ntk::{
    MatrixFreeParams, MeanFunction, check_param, clock, fit_matrix_free_on, slq_report,
};
use crate::optimize::Maximum;
use crate::strategy::Strategy;

/// $A = s^2 K + \sigma^2 I$ over the shards.
type System<B, C> = Shifted<
    Scaled<ShardedNtk<B, Jacobian<B>, C>, <B as burn::tensor::backend::BackendTypes>::FloatElem>,
    <B as burn::tensor::backend::BackendTypes>::FloatElem,
>;

/// Where one rank's time went in [`DistributedNtkGp::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTimings {
    /// Seconds for the network outputs and the Jacobian's set-up at this rank's rows.
    pub setup_s: f64,
    /// Seconds of the hyper-parameter fit (0 when nothing is free; communication included).
    pub fit_s: f64,
    /// Of those, seconds inside all-reduce calls.
    pub fit_comm_s: f64,
    /// Bytes this rank passed to all-reduce during the fit.
    pub fit_comm_bytes: u64,
    /// Seconds for the pivoted-Cholesky preconditioner (its rows of $K$ are collective).
    pub precond_s: f64,
    /// Bytes this rank passed to all-reduce while building the preconditioner.
    pub precond_comm_bytes: u64,
    /// Seconds of the batched CG/SLQ solve (communication included).
    pub solve_s: f64,
    /// Of those, seconds inside all-reduce calls (waiting for other ranks included).
    pub comm_s: f64,
    /// All-reduce calls of the solve.
    pub comm_calls: u64,
    /// Bytes this rank passed to all-reduce during the solve.
    pub comm_bytes: u64,
}

/// The settings of a [`DistributedNtkGp`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedParams {
    /// Noise variance $\sigma^2$: fixed, or fitted.
    pub noise: Param,
    /// Prior scale $s^2$: fixed, or fitted.
    pub prior_scale: Param,
    /// The prior mean: the network's outputs (the default), zero, or a constant (fixed or
    /// fitted).
    pub mean: MeanFunction,
    /// CG, SLQ and preconditioner settings, and the Adam steps of a fit, as for
    /// [`Strategy::MatrixFree`].
    pub matrix_free: MatrixFreeParams,
    /// The Jacobian's memory and path settings.
    pub jacobian: JacobianParams,
    /// Wall-clock limit of the hyper-parameter fit, on rank 0's clock (every rank stops at
    /// the same step); `None` for none.
    pub time_limit: Option<Duration>,
}

impl Default for DistributedParams {
    fn default() -> Self {
        Self {
            noise: Param::Fixed(0.1),
            prior_scale: Param::Fixed(1.0),
            mean: MeanFunction::Network,
            matrix_free: MatrixFreeParams::default(),
            jacobian: JacobianParams::default(),
            time_limit: None,
        }
    }
}

/// The matrix-free NTK GP posterior, over training rows split across the ranks of `C`.
///
/// Every method is collective: all ranks call it together, with the same test points.
///
/// ```
/// use krylov::comm::{Communicator, LocalGroup, RowPartition};
/// use nalgebra::{DMatrix, DVector};
/// use ntk_gp::Param;
/// use ntk_gp::distributed::{DistributedNtkGp, DistributedParams};
/// use ntk_ops::{DefaultBackend, MlpConfig};
///
/// let n = 40;
/// let x = DMatrix::from_fn(n, 1, |i, _| i as f64 / 10.0 - 2.0);
/// let y = DVector::from_fn(n, |i, _| (x[(i, 0)] * 2.0).sin());
/// let params = DistributedParams {
///     noise: Param::Fixed(0.05),
///     ..DistributedParams::default()
/// };
/// let lmls = LocalGroup::run(2, |comm| {
///     let net = MlpConfig::new(&[1, 16, 1]).init::<DefaultBackend>(0, &Default::default()).unwrap();
///     let rows = RowPartition::even(n, comm.size()).range(comm.rank());
///     let gp = DistributedNtkGp::new(
///         net,
///         &x.rows_range(rows.clone()).into_owned(),
///         &y.rows_range(rows).into_owned(),
///         &params,
///         comm,
///     )
///     .unwrap();
///     gp.log_marginal_likelihood()
/// });
/// assert_eq!(lmls[0], lmls[1]); // every rank holds the same number
/// ```
pub struct DistributedNtkGp<B: Backend, C: Communicator> {
    network: Network<B>,
    jacobian: JacobianParams,
    /// The constant prior mean, or `None` for the network's outputs.
    constant: Option<f64>,
    /// How the fit of the free hyper-parameters ended; `None` when all were fixed.
    report: Option<Maximum>,
    system: System<B, Counted<C>>,
    comm: Counted<C>,
    hyper: Hyper,
    settings: MatrixFreeParams,
    alpha: DVector<f64>,
    inv_quad: f64,
    logdet: SlqEstimate,
    info: CgInfo,
    precond_rank: usize,
    timings: RankTimings,
}

impl<B: Backend, C: Communicator> DistributedNtkGp<B, C>
where
    B::FloatElem: Scalar,
{
    /// Conditions on this rank's training rows `x` (`[n_r, d]`) and targets `y` (`n_r`):
    /// fits the free hyper-parameters, then the residual $r = y - \mu(X)$, $\alpha =
    /// A^{-1}r$, $r^\top A^{-1}r$ and the SLQ $\log\lvert A\rvert$ over all ranks' rows.
    /// Collective.
    ///
    /// Fails on every rank alike on bad shapes or values on any rank, a rank with no rows,
    /// ranks holding different networks, a network with more than one output, bad
    /// hyper-parameter settings, LOVE variances, or a solve that does not converge.
    pub fn new(
        network: impl Into<Network<B>>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        params: &DistributedParams,
        comm: C,
    ) -> Result<Self, GpError> {
        let network = network.into();
        let settings = &params.matrix_free;
        let jacobian = params.jacobian;
        let spec = FitParams {
            noise: params.noise,
            prior_scale: params.prior_scale,
            constant_mean: match params.mean {
                MeanFunction::Constant(p) => Some(p),
                MeanFunction::Zero | MeanFunction::Network => None,
            },
        };
        check_param("noise", &spec.noise, true)?;
        check_param("prior_scale", &spec.prior_scale, true)?;
        if let Some(c) = &spec.constant_mean {
            check_param("mean", c, false)?;
        }
        settings.check()?;
        if settings.love_rank.is_some() {
            return Err(GpError::NotSupported {
                strategy: Strategy::MatrixFree,
                what: "LOVE variances over distributed data",
                instead: "set matrix_free.love_rank to None (one CG solve per test point)",
            });
        }
        // Bad data on one rank must stop every rank before the first collective product
        // (a rank that returned early would leave the others waiting in an all-reduce).
        let local = Self::check_rows(&network, x, y, comm.rank()).err();
        if any_rank(&comm, local.is_some()) {
            return Err(local.unwrap_or_else(|| GpError::InvalidParam {
                name: "data",
                reason: "another rank's training rows were refused (its error names them)".into(),
            }));
        }
        let comm = Counted::new(comm);
        let t0 = Instant::now();
        let dev = network.device();
        let xt = convert::from_dmatrix_f64(x, &dev);
        let jac = Jacobian::new(network.clone(), xt.clone(), jacobian)?;
        let r0 = match params.mean {
            MeanFunction::Network => y - convert::to_dmatrix_f64(network.forward(xt)).column(0),
            MeanFunction::Zero | MeanFunction::Constant(_) => y.clone(),
        };
        let ntk = ShardedNtk::new(jac, comm.clone())?;
        let partition = ntk.partition().clone();
        let block = |v: &DVector<f64>| {
            Sharded::new(
                TensorBlock::new(convert::from_dmatrix_f64(
                    &DMatrix::from_column_slice(v.len(), 1, v.as_slice()),
                    &dev,
                )),
                partition.clone(),
                comm.clone(),
            )
        };
        let setup_s = t0.elapsed().as_secs_f64();

        comm.reset();
        let t1 = Instant::now();
        let (hyper, c, report) = if spec.has_free() {
            // Rank 0's clock decides, so that every rank stops at the same step.
            let mut expired = clock(params.time_limit);
            let stop =
                || params.time_limit.is_some() && any_rank(&comm, comm.rank() == 0 && expired());
            fit_matrix_free_on(&ntk, &block(&r0), &spec, settings, stop)?
        } else {
            let hyper = Hyper {
                noise: spec.noise.start(),
                prior_scale: spec.prior_scale.start(),
            };
            (hyper, spec.constant_mean.map_or(0.0, |p| p.start()), None)
        };
        let fit_s = t1.elapsed().as_secs_f64();
        let fit_comm = comm.stats();
        let constant = match params.mean {
            MeanFunction::Network => None,
            MeanFunction::Zero | MeanFunction::Constant(_) => Some(c),
        };
        let r = r0.add_scalar(-c);
        let system = Shifted::new::<Sharded<TensorBlock<B>, Counted<C>>>(
            Scaled {
                inner: ntk,
                factor: B::FloatElem::from_f64(hyper.prior_scale),
            },
            B::FloatElem::from_f64(hyper.noise),
        )?;

        comm.reset();
        let t1 = Instant::now();
        let rhs = block(&r);
        let precond =
            PivotedCholesky::new(&system.inner, hyper.noise, settings.precond_rank, &rhs)?;
        let precond_s = t1.elapsed().as_secs_f64();
        let precond_comm_bytes = comm.stats().bytes;
        comm.reset();
        let t1 = Instant::now();
        let out = inv_quad_logdet(&system, &precond, &rhs, &settings.slq())?;
        let solve_s = t1.elapsed().as_secs_f64();
        let alpha = DVector::from_vec(convert::to_vec_f64(out.solution.into_local().into_tensor()));
        let stats = comm.stats();
        // The fit's value: the SLQ log marginal likelihood at the fitted point, as for one
        // process.
        let report = report.map(|m| slq_report(m, out.inv_quad[0], &out.logdet, partition.rows()));
        Ok(Self {
            network,
            jacobian,
            constant,
            report,
            system,
            comm,
            hyper,
            settings: *settings,
            alpha,
            inv_quad: out.inv_quad[0],
            logdet: out.logdet,
            info: out.info,
            precond_rank: precond.rank(),
            timings: RankTimings {
                setup_s,
                fit_s,
                fit_comm_s: fit_comm.seconds,
                fit_comm_bytes: fit_comm.bytes,
                precond_s,
                precond_comm_bytes,
                solve_s,
                comm_s: stats.seconds,
                comm_calls: stats.calls,
                comm_bytes: stats.bytes,
            },
        })
    }

    /// This rank's checks of its rows: shapes, finite values, at least one row.
    fn check_rows(
        network: &Network<B>,
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        rank: usize,
    ) -> Result<(), GpError> {
        if network.n_outputs() != 1 {
            return Err(GpError::NotSupported {
                strategy: Strategy::MatrixFree,
                what: "a network with more than one output over distributed data",
                instead: "adapt one output at a time",
            });
        }
        if x.nrows() == 0 {
            return Err(GpError::InvalidParam {
                name: "data",
                reason: format!("rank {rank} holds no training rows; give every rank one"),
            });
        }
        if x.nrows() != y.len() {
            return Err(GpError::Shape {
                what: "targets of this rank's rows",
                expected: x.nrows(),
                got: y.len(),
            });
        }
        if let Some(index) = y.iter().position(|v| !v.is_finite()) {
            return Err(GpError::NonFinite {
                what: "targets",
                index,
            });
        }
        network.check_inputs(&convert::from_dmatrix_f64(x, &network.device()), "X")?;
        Ok(())
    }

    /// $\log p(y) = -\tfrac12 r^\top A^{-1} r - \tfrac12\log\lvert A\rvert - \tfrac n2\log
    /// 2\pi$ (the SLQ estimate of the log-determinant).
    pub fn log_marginal_likelihood(&self) -> f64 {
        -0.5 * self.inv_quad
            - 0.5 * self.logdet.value
            - 0.5 * self.n() as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// $r^\top A^{-1} r$.
    pub fn inv_quad(&self) -> f64 {
        self.inv_quad
    }

    /// The SLQ estimate of $\log\lvert A\rvert$, with its standard error and per-probe values.
    pub fn log_det(&self) -> &SlqEstimate {
        &self.logdet
    }

    /// How the training solve's CG ended.
    pub fn cg_info(&self) -> &CgInfo {
        &self.info
    }

    /// Rank of the pivoted-Cholesky preconditioner built.
    pub fn precond_rank(&self) -> usize {
        self.precond_rank
    }

    /// The number of training points $n$ over all ranks.
    pub fn n(&self) -> usize {
        self.system.inner.inner.partition().rows()
    }

    /// The number of network parameters $p$.
    pub fn n_params(&self) -> usize {
        self.network.n_params()
    }

    /// The training rows each rank holds.
    pub fn partition(&self) -> &RowPartition {
        self.system.inner.inner.partition()
    }

    /// This rank's entries of $\alpha = A^{-1} r$.
    pub fn alpha(&self) -> &DVector<f64> {
        &self.alpha
    }

    /// The hyper-parameters in use (fitted where free).
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// The constant prior mean in use (fitted where free; 0 for a zero mean and for the
    /// network's outputs).
    pub fn constant_mean(&self) -> f64 {
        self.constant.unwrap_or(0.0)
    }

    /// How the fit of the free hyper-parameters ended (its value is the SLQ log marginal
    /// likelihood at the fitted point); `None` when all were fixed.
    pub fn fit_report(&self) -> Option<&Maximum> {
        self.report.as_ref()
    }

    /// Where this rank's time went while conditioning.
    pub fn timings(&self) -> RankTimings {
        self.timings
    }

    /// The predictive mean $f(x_*) + s^2 K_*^\top\alpha$ and latent variance
    /// $s^2 k_{**} - s^4 k_*^\top A^{-1} k_*$ at `x_test` (the same on every rank; each passes
    /// all test points). Collective.
    pub fn predict(&self, x_test: &DMatrix<f64>) -> Result<Prediction, GpError> {
        let dev = self.network.device();
        let xt = convert::from_dmatrix_f64(x_test, &dev);
        self.network.check_inputs(&xt, "test inputs")?;
        let m = x_test.nrows();
        let prior = match self.constant {
            Some(c) => DVector::from_element(m, c),
            None => convert::to_dmatrix_f64(self.network.forward(xt.clone()))
                .column(0)
                .into_owned(),
        };
        let jt = Jacobian::new(self.network.clone(), xt, self.jacobian)?;
        let ntk = &self.system.inner.inner;
        let cross = ntk.jacobian().ntk_matrix(&jt)?;
        let s2 = self.hyper.prior_scale;
        let mut reduced = convert::to_dmatrix_f64(cross.clone())
            .tr_mul(&self.alpha)
            .column(0)
            .iter()
            .copied()
            .collect::<Vec<f64>>();
        self.comm.all_reduce_sum(&mut reduced);
        let mean = prior + DVector::from_vec(reduced) * s2;
        let rhs = Sharded::new(
            TensorBlock::new(cross.mul_scalar(s2)),
            ntk.partition().clone(),
            self.comm.clone(),
        );
        let precond = PivotedCholesky::new(
            &self.system.inner,
            self.hyper.noise,
            self.settings.precond_rank,
            &rhs,
        )?;
        let sol = pcg(&self.system, &precond, &rhs, None, &self.settings.cg())?.check()?;
        let reduction: Vec<f64> = rhs
            .col_dots(&sol.solution)
            .into_iter()
            .map(Scalar::to_f64)
            .collect();
        let diag = convert::to_vec_f64(jt.ntk_diagonal()?);
        let mut clamped = 0;
        let var = DVector::from_iterator(
            m,
            (0..m).map(|j| {
                let v = s2 * diag[j] - reduction[j];
                if v < 0.0 {
                    clamped += 1;
                    0.0
                } else {
                    v
                }
            }),
        );
        Ok(Prediction { mean, var, clamped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::Param;
    use crate::ntk::{MeanFunction, NtkGp, NtkGpParams};
    use krylov::comm::LocalGroup;
    use ntk_ops::{DefaultBackend, MlpConfig};

    type B = DefaultBackend;

    fn data(n: usize) -> (DMatrix<f64>, DVector<f64>) {
        let x = DMatrix::from_fn(n, 2, |i, j| ((i * 7 + j * 3) as f64 * 0.61).sin() * 1.5);
        let y = DVector::from_fn(n, |i, _| (x[(i, 0)] * 1.3).sin() + 0.5 * x[(i, 1)]);
        (x, y)
    }

    fn mlp() -> ntk_ops::Mlp<B> {
        MlpConfig::new(&[2, 8, 8, 1])
            .init::<B>(3, &Default::default())
            .unwrap()
    }

    fn settings() -> MatrixFreeParams {
        MatrixFreeParams {
            cg_tolerance: 1e-9,
            probes: 16,
            precond_rank: 5,
            seed: 7,
            ..MatrixFreeParams::default()
        }
    }

    fn params(hyper: Hyper, matrix_free: MatrixFreeParams) -> DistributedParams {
        DistributedParams {
            noise: Param::Fixed(hyper.noise),
            prior_scale: Param::Fixed(hyper.prior_scale),
            matrix_free,
            ..DistributedParams::default()
        }
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    fn rel_vec(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
        (a - b).norm() / b.norm()
    }

    /// On 1–4 ranks the log marginal likelihood, its SLQ terms (and every probe's value),
    /// the CG iterations and the predictive means and variances equal the single-process
    /// matrix-free strategy's to 1e-10 relative.
    #[test]
    fn sharded_gp_equals_the_single_process_strategy() {
        let n = 37;
        let (x, y) = data(n);
        let xt = DMatrix::from_fn(6, 2, |i, j| (i as f64 - 2.5) * 0.4 + j as f64 * 0.1);
        let hyper = Hyper {
            noise: 0.05,
            prior_scale: 0.7,
        };
        for mean in [
            MeanFunction::Network,
            MeanFunction::Constant(Param::Fixed(0.3)),
        ] {
            agree_with_single_process(&x, &y, &xt, hyper, mean);
        }
    }

    fn agree_with_single_process(
        x: &DMatrix<f64>,
        y: &DVector<f64>,
        xt: &DMatrix<f64>,
        hyper: Hyper,
        mean: MeanFunction,
    ) {
        let n = y.len();
        let single = NtkGp::new(
            mlp(),
            x,
            y,
            NtkGpParams {
                strategy: Strategy::MatrixFree,
                noise: Param::Fixed(hyper.noise),
                prior_scale: Param::Fixed(hyper.prior_scale),
                mean,
                matrix_free: settings(),
                ..NtkGpParams::default()
            },
        )
        .unwrap();
        assert_eq!(single.choice().strategy, Strategy::MatrixFree);
        let st = single.matrix_free_state().unwrap();
        let pred = single.predict(xt).unwrap();
        for ranks in 1..=4 {
            let out = LocalGroup::run(ranks, |comm| {
                let rows = RowPartition::even(n, comm.size()).range(comm.rank());
                let gp = DistributedNtkGp::new(
                    mlp(),
                    &x.rows_range(rows.clone()).into_owned(),
                    &y.rows_range(rows).into_owned(),
                    &DistributedParams {
                        mean,
                        ..params(hyper, settings())
                    },
                    comm,
                )
                .unwrap();
                let p = gp.predict(xt).unwrap();
                (
                    gp.log_marginal_likelihood(),
                    gp.inv_quad(),
                    gp.log_det().clone(),
                    gp.cg_info().iterations,
                    gp.precond_rank(),
                    p,
                    gp.timings(),
                )
            });
            for (lml, quad, logdet, iters, prank, p, t) in &out {
                assert!(
                    rel(*lml, single.log_marginal_likelihood()) < 1e-10,
                    "{ranks} ranks"
                );
                assert!(rel(*quad, single.inv_quad()) < 1e-10);
                assert!(rel(logdet.value, st.logdet.value) < 1e-10);
                for (a, b) in logdet.samples.iter().zip(&st.logdet.samples) {
                    assert!(rel(*a, *b) < 1e-10);
                }
                assert_eq!(*iters, st.info.iterations, "{ranks} ranks: CG iterations");
                assert_eq!(*prank, st.precond_rank);
                assert!(rel_vec(&p.mean, &pred.mean) < 1e-10);
                assert!(rel_vec(&p.var, &pred.var) < 1e-10);
                if ranks > 1 {
                    // Each product all-reduces p values per column, besides the solver's scalars.
                    assert!(t.comm_bytes >= 8 * single.n_params() as u64 * *iters as u64);
                }
            }
        }
    }

    /// A fit of σ², s² and a constant mean over 1–3 ranks takes the single-process fit's
    /// steps: the same hyper-parameters, constant, Adam steps and log marginal likelihood.
    #[test]
    fn sharded_fit_equals_the_single_process_fit() {
        let n = 29;
        let (x, y) = data(n);
        let mean = MeanFunction::Constant(Param::Fit {
            init: 0.0,
            lower: -10.0,
            upper: 10.0,
        });
        let settings = MatrixFreeParams {
            fit_steps: 40,
            ..settings()
        };
        let single = NtkGp::new(
            mlp(),
            &x,
            &y,
            NtkGpParams {
                strategy: Strategy::MatrixFree,
                noise: Param::fit_variance(0.3),
                prior_scale: Param::fit_variance(1.0),
                mean,
                matrix_free: settings,
                ..NtkGpParams::default()
            },
        )
        .unwrap();
        let want = single.fit_report().unwrap();
        for ranks in 1..=3 {
            let out = LocalGroup::run(ranks, |comm| {
                let rows = RowPartition::even(n, comm.size()).range(comm.rank());
                let gp = DistributedNtkGp::new(
                    mlp(),
                    &x.rows_range(rows.clone()).into_owned(),
                    &y.rows_range(rows).into_owned(),
                    &DistributedParams {
                        noise: Param::fit_variance(0.3),
                        prior_scale: Param::fit_variance(1.0),
                        mean,
                        matrix_free: settings,
                        ..DistributedParams::default()
                    },
                    comm,
                )
                .unwrap();
                (
                    gp.hyper(),
                    gp.constant_mean(),
                    gp.fit_report().cloned().unwrap(),
                    gp.log_marginal_likelihood(),
                    gp.timings().fit_s,
                )
            });
            for (hyper, c, report, lml, fit_s) in &out {
                assert!(
                    rel(hyper.noise, single.hyper().noise) < 1e-9,
                    "{ranks} ranks"
                );
                assert!(rel(hyper.prior_scale, single.hyper().prior_scale) < 1e-9);
                assert!(rel(*c, single.constant_mean()) < 1e-9);
                assert_eq!(report.iterations, want.iterations);
                assert_eq!(report.converged, want.converged);
                assert_eq!(report.at_bound, want.at_bound);
                assert!(rel(report.value, want.value) < 1e-9);
                assert!(rel(*lml, single.log_marginal_likelihood()) < 1e-9);
                assert!(*fit_s > 0.0);
            }
            // Every rank holds the same fitted values, bit for bit.
            assert!(out.iter().all(|o| o.0 == out[0].0 && o.1 == out[0].1));
        }
        // The fit moved: σ² and s² left their starts.
        assert!(
            rel(single.hyper().noise, 0.3) > 1e-3 && rel(single.hyper().prior_scale, 1.0) > 1e-3
        );
    }

    /// A time limit stops the matrix-free fit, on one process and over ranks (at the same
    /// step on every rank, by rank 0's clock), and the report says so.
    #[test]
    fn the_time_limit_stops_the_matrix_free_fit() {
        let (x, y) = data(20);
        let limit = Some(std::time::Duration::from_nanos(1));
        let single = NtkGp::new(
            mlp(),
            &x,
            &y,
            NtkGpParams {
                strategy: Strategy::MatrixFree,
                noise: Param::fit_variance(0.3),
                matrix_free: settings(),
                optimizer: crate::optimize::MaximizeParams {
                    time_limit: limit,
                    ..Default::default()
                },
                ..NtkGpParams::default()
            },
        )
        .unwrap();
        let reports = LocalGroup::run(3, |comm| {
            let rows = RowPartition::even(20, comm.size()).range(comm.rank());
            let gp = DistributedNtkGp::new(
                mlp(),
                &x.rows_range(rows.clone()).into_owned(),
                &y.rows_range(rows).into_owned(),
                &DistributedParams {
                    noise: Param::fit_variance(0.3),
                    matrix_free: settings(),
                    time_limit: limit,
                    ..DistributedParams::default()
                },
                comm,
            )
            .unwrap();
            gp.fit_report().cloned().unwrap()
        });
        for f in reports.iter().chain([single.fit_report().unwrap()]) {
            assert!(!f.converged && f.iterations == 1, "{f:?}");
            assert!(f.termination.contains("time limit"), "{}", f.termination);
        }
    }

    /// Bad rows on one rank stop every rank with an error (none is left waiting).
    #[test]
    fn bad_rows_on_one_rank_stop_every_rank() {
        let (x, mut y) = data(10);
        y[7] = f64::NAN;
        let hyper = Hyper {
            noise: 0.1,
            prior_scale: 1.0,
        };
        let errs = LocalGroup::run(2, |comm| {
            let rows = RowPartition::even(10, 2).range(comm.rank());
            DistributedNtkGp::new(
                mlp(),
                &x.rows_range(rows.clone()).into_owned(),
                &y.rows_range(rows).into_owned(),
                &params(hyper, settings()),
                comm,
            )
            .err()
            .map(|e| e.to_string())
        });
        assert!(errs[0].as_deref().unwrap().contains("another rank"));
        assert!(errs[1].as_deref().unwrap().contains("non-finite"));
        let love = MatrixFreeParams {
            love_rank: Some(4),
            ..settings()
        };
        let err = LocalGroup::run(1, |comm| {
            DistributedNtkGp::new(mlp(), &x, &y, &params(hyper, love), comm).err()
        });
        assert!(matches!(err[0], Some(GpError::NotSupported { .. })));
    }
}
