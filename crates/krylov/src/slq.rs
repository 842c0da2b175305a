//! Stochastic Lanczos quadrature (SLQ) for $\log\lvert A \rvert$ and
//! $\operatorname{tr} f(A)$.
//!
//! Hutchinson's estimator (1989) with probes $z_i$, $\mathbb{E}[z z^\top] = I$,
//! combined with Gauss quadrature from $m$ Lanczos steps started at
//! $z_i / \lVert z_i \rVert$ (Golub & Meurant 1997; Ubaru, Chen & Saad,
//! *Fast Estimation of tr(f(A)) via Stochastic Lanczos Quadrature*, SIAM J.
//! Matrix Anal. Appl. 2017):
//!
//! $$\operatorname{tr} f(A) \approx \frac{1}{s}\sum_{i=1}^{s} \lVert z_i \rVert^2\,
//!   e_1^\top f(T_i)\, e_1 = \frac{1}{s}\sum_{i=1}^{s} \lVert z_i \rVert^2
//!   \sum_k \tau_{ik} f(\theta_{ik}) .$$
//!
//! The reported standard error is the sample standard deviation of the $s$
//! per-probe values divided by $\sqrt{s}$. With [`Probes::Basis`] the probes
//! are the unit vectors and the estimate is the exact sum
//! $\sum_i e_i^\top f(A) e_i$ (to round-off, given enough steps).
//!
//! [`inv_quad_logdet`] gets $y^\top A^{-1} y$ and $\log\lvert A \rvert$ from one
//! preconditioned batched CG call over $[y, z_1, \dots, z_s]$, reading the
//! Lanczos tridiagonals off the CG coefficients (Gardner et al. 2018):
//! with $z_i \sim P^{1/2}\varepsilon_i$,
//! $\log\lvert A \rvert = \log\lvert P \rvert + \log\lvert P^{-1} A \rvert$ and
//! $\log\lvert P^{-1}A\rvert \approx \frac1s \sum_i (z_i^\top P^{-1} z_i)\,
//! e_1^\top \log(T_i)\, e_1$.

use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::block::{Block, Scalar, to_scalar_matrix};
use crate::cg::{CgInfo, CgParams, pcg};
use crate::error::KrylovError;
use crate::lanczos::{LanczosParams, SymTridiagonal, lanczos_tridiagonals};
use crate::operator::LinearOperator;
use crate::precond::Preconditioner;

/// How probe vectors are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probes {
    /// Entries $\pm 1$ with equal probability (the lowest-variance Hutchinson
    /// probes for a fixed matrix, Hutchinson 1989).
    #[default]
    Rademacher,
    /// Standard normal entries.
    Gaussian,
    /// Deterministic: all unit vectors $e_1..e_w$ (the probe count is ignored),
    /// giving the exact trace. Costs $w$ probes; for small problems and tests.
    Basis,
}

/// Parameters of [`logdet`] and [`trace_fn`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlqParams {
    /// Number of probes $s$ (ignored for [`Probes::Basis`]).
    pub probes: usize,
    /// Probe distribution.
    pub distribution: Probes,
    /// Seed of the `StdRng` that draws the probes.
    pub seed: u64,
    /// Lanczos steps per probe (capped at $n$) and breakdown guard.
    pub lanczos: LanczosParams,
}

impl Default for SlqParams {
    fn default() -> Self {
        Self {
            probes: 16,
            distribution: Probes::Rademacher,
            seed: 0,
            lanczos: LanczosParams::default(),
        }
    }
}

/// A stochastic estimate with its standard error.
#[derive(Debug, Clone, PartialEq)]
pub struct SlqEstimate {
    /// The estimate.
    pub value: f64,
    /// Sample standard deviation of the per-probe values over $\sqrt{s}$
    /// (zero for [`Probes::Basis`], which is not random).
    pub std_error: f64,
    /// The per-probe values (their mean is `value`, except for
    /// [`Probes::Basis`], where `value` is their sum).
    pub samples: Vec<f64>,
}

/// Draws a host $w \times s$ probe matrix ($s = w$ for [`Probes::Basis`]).
pub fn draw_probes(dim: usize, count: usize, distribution: Probes, seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    match distribution {
        Probes::Rademacher => {
            DMatrix::from_fn(
                dim,
                count,
                |_, _| if rng.random::<bool>() { 1.0 } else { -1.0 },
            )
        }
        Probes::Gaussian => {
            DMatrix::from_fn(dim, count, |_, _| rng.sample::<f64, _>(StandardNormal))
        }
        Probes::Basis => DMatrix::identity(dim, dim),
    }
}

fn combine(samples: Vec<f64>, distribution: Probes) -> SlqEstimate {
    let s = samples.len() as f64;
    if distribution == Probes::Basis {
        return SlqEstimate {
            value: samples.iter().sum(),
            std_error: 0.0,
            samples,
        };
    }
    let mean = samples.iter().sum::<f64>() / s;
    let var = if samples.len() > 1 {
        samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (s - 1.0)
    } else {
        f64::INFINITY
    };
    SlqEstimate {
        value: mean,
        std_error: (var / s).sqrt(),
        samples,
    }
}

/// $e_1^\top \log(T) e_1$, erring on a non-positive Ritz value.
fn log_quadrature(t: &SymTridiagonal, column: usize) -> Result<f64, KrylovError> {
    let (nodes, weights) = t.gauss_quadrature();
    if let Some((k, &theta)) = nodes
        .iter()
        .enumerate()
        .find(|(_, th)| th.partial_cmp(&&0.0) != Some(std::cmp::Ordering::Greater))
    {
        return Err(KrylovError::NotPositiveDefinite {
            iteration: k,
            column,
            curvature: theta,
        });
    }
    Ok(nodes
        .iter()
        .zip(&weights)
        .map(|(&th, &w)| w * th.ln())
        .sum())
}

fn validate_probes(params_probes: usize, distribution: Probes) -> Result<(), KrylovError> {
    if params_probes == 0 && distribution != Probes::Basis {
        return Err(KrylovError::InvalidParameter {
            name: "probes",
            reason: "at least one probe is needed".into(),
        });
    }
    Ok(())
}

/// $\operatorname{tr} f(A)$ by SLQ on a symmetric $A$; `f` must be defined on
/// the spectrum. `like` is any block on the device where the probes should
/// live (only its device is used).
pub fn trace_fn<B, A>(
    a: &A,
    f: impl Fn(f64) -> f64,
    like: &B,
    params: &SlqParams,
) -> Result<SlqEstimate, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    slq(a, like, params, |t, _| Ok(t.quadrature(&f)))
}

/// $\log\lvert A \rvert$ by SLQ on an SPD $A$ (errs on a non-positive Ritz
/// value). See [`trace_fn`].
///
/// ```
/// use krylov::slq::{logdet, Probes, SlqParams};
/// use krylov::lanczos::LanczosParams;
/// use nalgebra::{DMatrix, DVector};
/// let a = DMatrix::<f64>::from_diagonal(&DVector::from_vec(vec![1.0, 2.0, 4.0]));
/// let p = SlqParams { distribution: Probes::Basis, lanczos: LanczosParams { steps: 3, ..Default::default() }, ..Default::default() };
/// let est = logdet(&a, &a, &p).unwrap();
/// assert!((est.value - 8f64.ln()).abs() < 1e-12);
/// ```
pub fn logdet<B, A>(a: &A, like: &B, params: &SlqParams) -> Result<SlqEstimate, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    slq(a, like, params, log_quadrature)
}

fn slq<B, A>(
    a: &A,
    like: &B,
    params: &SlqParams,
    quad: impl Fn(&SymTridiagonal, usize) -> Result<f64, KrylovError>,
) -> Result<SlqEstimate, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    validate_probes(params.probes, params.distribution)?;
    let n = a.nrows();
    let eps = draw_probes(n, params.probes, params.distribution, params.seed);
    let z = like.from_host_like(&to_scalar_matrix(&eps));
    let lp = LanczosParams {
        steps: params.lanczos.steps.min(n),
        ..params.lanczos.clone()
    };
    let runs = lanczos_tridiagonals(a, &z, &lp)?;
    let samples = runs
        .iter()
        .enumerate()
        .map(|(c, run)| Ok(run.start_norm.powi(2) * quad(&run.tridiagonal, c)?))
        .collect::<Result<Vec<f64>, KrylovError>>()?;
    Ok(combine(samples, params.distribution))
}

/// Parameters of [`inv_quad_logdet`].
#[derive(Debug, Clone, PartialEq)]
pub struct InvQuadLogdetParams {
    /// CG parameters (`lanczos_columns` is set internally).
    pub cg: CgParams,
    /// Number of probes $s$ (ignored for [`Probes::Basis`]).
    pub probes: usize,
    /// Distribution of $\varepsilon$; probes are $z = F\varepsilon$ with
    /// $F F^\top = P$.
    pub distribution: Probes,
    /// Seed of the `StdRng` that draws the probes.
    pub seed: u64,
}

impl Default for InvQuadLogdetParams {
    fn default() -> Self {
        Self {
            cg: CgParams::default(),
            probes: 16,
            distribution: Probes::Rademacher,
            seed: 0,
        }
    }
}

/// The result of [`inv_quad_logdet`].
#[derive(Debug, Clone)]
pub struct InvQuadLogdet<B> {
    /// $y_j^\top A^{-1} y_j$ per column of $y$.
    pub inv_quad: Vec<f64>,
    /// $\log\lvert A \rvert = \log\lvert P \rvert + $ the SLQ estimate of
    /// $\log\lvert P^{-1} A \rvert$, with that estimate's standard error.
    pub logdet: SlqEstimate,
    /// $A^{-1} y$.
    pub solution: B,
    /// How the CG run ended (all columns, $y$ first).
    pub info: CgInfo,
}

/// $y^\top A^{-1} y$ and $\log\lvert A \rvert$ from one preconditioned batched CG
/// call over $[y, z_1, \dots, z_s]$ (Gardner et al. 2018, §4).
///
/// The columns of $y$ must converge (else [`KrylovError::NoConvergence`] with
/// their iterate); the probe columns need not: a probe stopped by `max_iters`
/// still gives a (lower-degree) Gauss quadrature. The preconditioner must
/// provide [`log_det`](Preconditioner::log_det) and a factor
/// ([`factor_mul`](Preconditioner::factor_mul)); [`Identity`](crate::precond::Identity) and
/// [`PivotedCholesky`](crate::precond::PivotedCholesky) do.
pub fn inv_quad_logdet<B, A, P>(
    a: &A,
    precond: &P,
    y: &B,
    params: &InvQuadLogdetParams,
) -> Result<InvQuadLogdet<B>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
    P: Preconditioner<B> + ?Sized,
{
    validate_probes(params.probes, params.distribution)?;
    let n = a.nrows();
    if y.nrows() != n {
        return Err(KrylovError::DimensionMismatch {
            what: "y rows",
            expected: n,
            got: y.nrows(),
        });
    }
    let log_p = precond
        .log_det()
        .ok_or(KrylovError::MissingHook { hook: "log_det" })?;
    let w = precond.factor_cols(n).ok_or(KrylovError::MissingHook {
        hook: "factor_cols",
    })?;
    let eps = draw_probes(w, params.probes, params.distribution, params.seed);
    let z = precond
        .factor_mul(&to_scalar_matrix(&eps), y)
        .ok_or(KrylovError::MissingHook { hook: "factor_mul" })?;
    let ky = y.ncols();
    let s = z.ncols();
    let rhs = y.hcat(&z);
    let cg_params = CgParams {
        lanczos_columns: ky..ky + s,
        ..params.cg.clone()
    };
    let out = pcg(a, precond, &rhs, None, &cg_params)?;
    let solution = out.solution.columns(0, ky);
    let unconverged: Vec<usize> = (0..ky).filter(|&j| !out.info.converged[j]).collect();
    if !unconverged.is_empty() {
        return Err(KrylovError::NoConvergence {
            iterations: out.info.iterations,
            max_residual: unconverged
                .iter()
                .map(|&j| out.info.residual_norms[j])
                .fold(0.0, f64::max),
            residuals: out.info.residual_norms[..ky].to_vec(),
            unconverged,
            best: Box::new(solution.to_host().map(|v| v.to_f64())),
        });
    }
    let inv_quad = y
        .col_dots(&solution)
        .into_iter()
        .map(|v| v.to_f64())
        .collect();
    let samples = out
        .lanczos
        .iter()
        .enumerate()
        .map(|(i, l)| Ok(l.start_norm_sq * log_quadrature(&l.tridiagonal, ky + i)?))
        .collect::<Result<Vec<f64>, KrylovError>>()?;
    let mut logdet = combine(samples, params.distribution);
    logdet.value += log_p;
    Ok(InvQuadLogdet {
        inv_quad,
        logdet,
        solution,
        info: out.info,
    })
}
