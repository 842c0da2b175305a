//! The matrix-free parameter-space strategy ([`Strategy::MatrixFreeParameterSpace`]).
//!
//! With $\Phi = sJ$ ($n\times p$) the GP's kernel is $K = \Phi\Phi^\top$ and, by Woodbury, every
//! quantity of the $n\times n$ system $C = \Phi\Phi^\top + \sigma^2 I_n$ follows from the
//! $p\times p$ system $B = \Phi^\top\Phi + \sigma^2 I_p$, solved by CG on products
//! $J^\top(Jv)$ alone, preconditioned by a randomized Nyström approximation of $J^\top J$
//! (from $J^\top J\Omega$ with $\Omega = J^\top G$, $G$ Gaussian $n\times r$, or a Gaussian
//! $p\times r$ $\Omega$ where that sketch is too ill-conditioned; Frangella et al. 2023).
//! With $w = B^{-1}\Phi^\top r$:
//!
//! - $r^\top C^{-1} r = (\lVert r\rVert^2 - (\Phi^\top r)^\top w)/\sigma^2$ and
//!   $\log\lvert C\rvert = \log\lvert B\rvert + (n - p)\log\sigma^2$ (SLQ on $B$);
//! - the predictive mean $\mu_* + \Phi_* w$ and latent variance
//!   $\sigma^2\,\phi_*^\top B^{-1}\phi_*$ (the weights' posterior is
//!   $\mathcal N(w, \sigma^2 B^{-1})$), one CG column per test point;
//! - for the hyper-parameter fit, $\alpha = C^{-1}r = (r - \Phi w)/\sigma^2$, so
//!   $\Phi^\top\alpha = w$, $r^\top\alpha$ as above, $\lVert\alpha\rVert^2 = (r^\top\alpha -
//!   \lVert w\rVert^2)/\sigma^2$, $\mathbf 1^\top\alpha = (\mathbf 1^\top r - (\Phi^\top\mathbf
//!   1)^\top w)/\sigma^2$ and $\operatorname{tr}C^{-1} = (n - p + \sigma^2\operatorname{tr}
//!   B^{-1})/\sigma^2$, with $\operatorname{tr}B^{-1}$ by Hutchinson on $p$-vectors.
//!
//! It pays when $n \gg p$: the Krylov vectors have $p$ entries instead of $n$, and $B$'s
//! spectrum is $J^\top J$'s, which a rank-$r$ Nyström preconditioner flattens.
//!
//! [`Strategy::MatrixFreeParameterSpace`]: crate::strategy::Strategy::MatrixFreeParameterSpace

use burn::prelude::Backend;
use krylov::cg::{CgParams, pcg};
use krylov::ops::{Scaled, Shifted};
use krylov::slq::{Probes, SlqEstimate, inv_quad_logdet};
use krylov::{Block, Nystrom, Scalar};
use nalgebra::{DMatrix, DVector};
use ntk_ops::{GramOperator, Jacobian, JacobianOperator, TensorBlock, convert};

use crate::error::GpError;
use crate::exact::{Hyper, Prediction};
use crate::fit::{FitParams, Param};
use crate::ntk::{LmlPieces, MatrixFreeParams, MatrixFreeState, adam_fit, clock};
use crate::optimize::Maximum;

/// $B = s^2 J^\top J + \sigma^2 I$ on device blocks.
type System<B> = Shifted<
    Scaled<GramOperator<B, Jacobian<B>>, <B as burn::tensor::backend::BackendTypes>::FloatElem>,
    <B as burn::tensor::backend::BackendTypes>::FloatElem,
>;

fn system<B: Backend>(jac: &Jacobian<B>, hyper: Hyper) -> Result<System<B>, GpError>
where
    B::FloatElem: Scalar,
{
    let scaled = Scaled {
        inner: GramOperator::new(jac.clone()),
        factor: B::FloatElem::from_f64(hyper.prior_scale),
    };
    Ok(Shifted::new::<TensorBlock<B>>(
        scaled,
        B::FloatElem::from_f64(hyper.noise),
    )?)
}

/// The Nyström sketch of $J^\top J$: a test matrix $\Omega$ and $J^\top J\,\Omega$
/// ($p\times r$ each, $r \le \min(n, p)$, the rank of $J^\top J$ at most), drawn once and
/// rescaled for every $s^2$.
#[derive(Debug, Clone)]
pub(crate) struct Sketch<B: Backend> {
    omega: TensorBlock<B>,
    gram_omega: TensorBlock<B>,
}

impl<B: Backend> Sketch<B>
where
    B::FloatElem: Scalar,
{
    pub(crate) fn new(jac: &Jacobian<B>, rank: usize, seed: u64) -> Result<Self, GpError> {
        let (n, p) = (jac.n_points() * jac.n_outputs(), jac.n_params());
        let r = rank.min(n).min(p);
        let dev = jac.device();
        let gram = GramOperator::new(jac.clone());
        let sketch = |omega: burn::tensor::Tensor<B, 2>| -> Result<Self, GpError> {
            let gram_omega = if r == 0 {
                omega.clone()
            } else {
                gram.try_apply(omega.clone())?
            };
            Ok(Self {
                omega: TensorBlock::new(omega),
                gram_omega: TensorBlock::new(gram_omega),
            })
        };
        // First Ω = JᵀG (G Gaussian n × r): one power step, so the sketch holds the top of
        // JᵀJ's spectrum best. Its core ΩᵀJᵀJΩ = Gᵀ(JJᵀ)²G squares the conditioning, which
        // rounding cannot resolve once r reaches the rank of J; then a Gaussian p × r Ω.
        if r == 0 {
            return sketch(convert::from_dmatrix_f64(&DMatrix::zeros(p, 0), &dev));
        }
        let g = krylov::slq::draw_probes(n, r, Probes::Gaussian, seed ^ 0x9e37);
        let first = sketch(jac.vjp(convert::from_dmatrix_f64(&g, &dev))?)?;
        let factors =
            |s: &Self| Nystrom::from_sketch(s.gram_omega.clone(), s.omega.clone(), 1.0).is_ok();
        if factors(&first) {
            return Ok(first);
        }
        let omega = krylov::slq::draw_probes(p, r, Probes::Gaussian, seed ^ 0x7f4a);
        sketch(convert::from_dmatrix_f64(&omega, &dev))
    }

    /// The preconditioner of $B = s^2 J^\top J + \sigma^2 I$ (rank 0: $\sigma^2 I$).
    fn precond(&self, hyper: Hyper) -> Result<Nystrom<TensorBlock<B>>, GpError> {
        let scaled = TensorBlock::new(
            self.gram_omega
                .tensor()
                .clone()
                .mul_scalar(hyper.prior_scale),
        );
        Ok(Nystrom::from_sketch(
            scaled,
            self.omega.clone(),
            hyper.noise,
        )?)
    }
}

fn column<B: Backend>(v: &DVector<f64>, dev: &B::Device) -> TensorBlock<B> {
    TensorBlock::new(convert::from_dmatrix_f64(
        &DMatrix::from_column_slice(v.len(), 1, v.as_slice()),
        dev,
    ))
}

fn dot<B: Backend>(a: &TensorBlock<B>, b: &TensorBlock<B>) -> f64
where
    B::FloatElem: Scalar,
{
    a.col_dots(b)[0].to_f64()
}

/// Maximizes $\log p(y)$ over the free parameters of `spec` by [`adam_fit`] with the
/// parameter-space gradients of the module docs: one batched CG on $B$ per step over
/// $[\,sJ^\top r_0,\ sJ^\top\mathbf 1,\ z_1, \dots, z_s]$ ($z_i$ Rademacher $p$-vectors, the
/// same at every step); a free constant mean is profiled out exactly.
pub(crate) fn fit<B: Backend>(
    jac: &Jacobian<B>,
    sketch: &Sketch<B>,
    r0: &DVector<f64>,
    spec: &FitParams,
    settings: &MatrixFreeParams,
    time_limit: Option<std::time::Duration>,
) -> Result<(Hyper, f64, Option<Maximum>), GpError>
where
    B::FloatElem: Scalar,
{
    let (n, p) = (r0.len(), jac.n_params());
    let dev = jac.device();
    let probes = if settings.exact_trace {
        DMatrix::identity(p, p)
    } else {
        krylov::slq::draw_probes(p, settings.probes.max(1), Probes::Rademacher, settings.seed)
    };
    let trace_div = if settings.exact_trace {
        1.0
    } else {
        probes.ncols() as f64
    };
    let probes = TensorBlock::<B>::new(convert::from_dmatrix_f64(&probes, &dev));
    // Jᵀr₀ and Jᵀ1 once: the residual at any c is r₀ − c1.
    let u = TensorBlock::<B>::new(jac.vjp(convert::from_dmatrix_f64(
        &DMatrix::from_fn(n, 2, |i, j| if j == 0 { r0[i] } else { 1.0 }),
        &dev,
    ))?);
    let (r0_sq, r0_sum) = (r0.norm_squared(), r0.sum());
    let c_free = spec.constant_mean.as_ref().and_then(Param::bounds);
    let cg = CgParams {
        rel_tolerance: settings.cg_tolerance.max(1e-10),
        ..settings.cg()
    };
    adam_fit(spec, settings, clock(time_limit), |hyper, c_adam| {
        let (s, s2n) = (hyper.prior_scale.sqrt(), hyper.noise);
        let a = system(jac, hyper)?;
        let precond = sketch.precond(hyper)?;
        let su = TensorBlock::new(u.tensor().clone().mul_scalar(s));
        let x = pcg(&a, &precond, &su.hcat(&probes), None, &cg)?.solution;
        let tr_inv_b = x
            .columns(2, probes.ncols())
            .col_dots(&probes)
            .into_iter()
            .map(Scalar::to_f64)
            .sum::<f64>()
            / trace_div;
        let (u0, u1, w0, w1) = (
            su.columns(0, 1),
            su.columns(1, 1),
            x.columns(0, 1),
            x.columns(1, 1),
        );
        let (u0w0, u0w1, u1w0, u1w1) = (dot(&u0, &w0), dot(&u0, &w1), dot(&u1, &w0), dot(&u1, &w1));
        let c = match c_free {
            Some((lo, hi)) => ((r0_sum - u1w0) / (n as f64 - u1w1)).clamp(lo, hi),
            None => c_adam,
        };
        // r = r₀ − c1, sJᵀr = u₀ − c u₁, w = w₀ − c w₁: every piece is bilinear in c.
        let r_sq = r0_sq - 2.0 * c * r0_sum + c * c * n as f64;
        let uw = u0w0 - c * (u0w1 + u1w0) + c * c * u1w1;
        let w_sq = dot(&w0, &w0) - 2.0 * c * dot(&w0, &w1) + c * c * dot(&w1, &w1);
        let alpha_r = (r_sq - uw) / s2n;
        Ok(LmlPieces {
            c,
            alpha_sq: (alpha_r - w_sq) / s2n,
            alpha_r,
            alpha_sum: (r0_sum - c * n as f64 - (u1w0 - c * u1w1)) / s2n,
            tr_inv: (n as f64 - p as f64 + s2n * tr_inv_b) / s2n,
            n,
        })
    })
}

/// Solves $Bw = sJ^\top r$ and estimates $\log\lvert B\rvert$ in one batched CG call; returns
/// the state (its `alpha` holds $w$).
pub(crate) fn solve<B: Backend>(
    jac: &Jacobian<B>,
    sketch: &Sketch<B>,
    r: &DVector<f64>,
    hyper: Hyper,
    settings: &MatrixFreeParams,
) -> Result<MatrixFreeState, GpError>
where
    B::FloatElem: Scalar,
{
    let (n, p) = (r.len(), jac.n_params());
    let a = system(jac, hyper)?;
    let precond = sketch.precond(hyper)?;
    let su = TensorBlock::<B>::new(
        jac.vjp(column::<B>(r, &jac.device()).into_tensor())?
            .mul_scalar(hyper.prior_scale.sqrt()),
    );
    let out = inv_quad_logdet(&a, &precond, &su, &settings.slq())?;
    let shift = (n as f64 - p as f64) * hyper.noise.ln();
    Ok(MatrixFreeState {
        alpha: DVector::from_vec(convert::to_vec_f64(out.solution.into_tensor())),
        inv_quad: (r.norm_squared() - out.inv_quad[0]) / hyper.noise,
        residual: r.clone(),
        logdet: SlqEstimate {
            value: out.logdet.value + shift,
            ..out.logdet
        },
        info: out.info,
        precond_rank: precond.rank(),
    })
}

/// Predictive mean $\mu_* + sJ_*w$ and latent variance $\sigma^2 s^2\,j_*^\top B^{-1} j_*$ at the
/// test Jacobian `jt`, with one preconditioned CG column per test point.
pub(crate) fn predict<B: Backend>(
    jac: &Jacobian<B>,
    jt: &Jacobian<B>,
    state: &MatrixFreeState,
    sketch: &Sketch<B>,
    hyper: Hyper,
    settings: &MatrixFreeParams,
    prior: DVector<f64>,
) -> Result<Prediction, GpError>
where
    B::FloatElem: Scalar,
{
    let dev = jt.device();
    let m = jt.n_points();
    let s = hyper.prior_scale.sqrt();
    let f = jt.jvp(column::<B>(&state.alpha, &dev).into_tensor())?;
    let mean = prior + DVector::from_vec(convert::to_vec_f64(f)) * s;
    // sJ*ᵀ, one column per test point.
    let rhs = TensorBlock::<B>::new(
        jt.vjp(convert::from_dmatrix_f64(&DMatrix::identity(m, m), &dev))?
            .mul_scalar(s),
    );
    let a = system(jac, hyper)?;
    let precond = sketch.precond(hyper)?;
    let sol = pcg(&a, &precond, &rhs, None, &settings.cg())?.check()?;
    let var = DVector::from_iterator(
        m,
        rhs.col_dots(&sol.solution)
            .into_iter()
            .map(|v| hyper.noise * v.to_f64().max(0.0)),
    );
    Ok(Prediction {
        mean,
        var,
        clamped: 0,
    })
}
