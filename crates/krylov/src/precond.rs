//! Preconditioners: $P \approx A$ with cheap $P^{-1} r$, $\log\lvert P \rvert$
//! and samples $z \sim \mathcal{N}(0, P)$.
//!
//! The sampling hook follows Gardner et al. (2018, §4): to estimate
//! $\log\lvert A \rvert = \log\lvert P \rvert + \log\lvert P^{-1} A \rvert$ by
//! preconditioned CG, the probes must have covariance $P$, so that
//! $\varepsilon = P^{-1/2} z$ has identity covariance. A preconditioner exposes
//! a factor $F$ with $F F^\top = P$ ($n \times w$) and the product $F \varepsilon$.

use nalgebra::{Cholesky, DMatrix, Dyn};

use crate::block::{Block, Scalar, to_scalar_matrix};
use crate::error::KrylovError;
use crate::operator::LinearOperator;

/// A symmetric positive-definite preconditioner $P$.
pub trait Preconditioner<B: Block> {
    /// $Z = P^{-1} R$ for a block $R$.
    fn apply_inverse(&self, r: &B) -> B;
    /// $\log\lvert P \rvert$, if known exactly.
    fn log_det(&self) -> Option<f64> {
        None
    }
    /// Width $w$ of a factor $F$ ($n \times w$, $F F^\top = P$) for an
    /// operator of size `n`, if the preconditioner can sample.
    fn factor_cols(&self, _n: usize) -> Option<usize> {
        None
    }
    /// $F E$ for a host block $E$ ($w \times k$), placed like `like`: with
    /// $E$ of i.i.d. zero-mean unit-variance entries, the columns have
    /// covariance $P$; with $E = I_w$ they satisfy $\sum_i z_i z_i^\top = P$.
    fn factor_mul(&self, _eps: &DMatrix<B::Scalar>, _like: &B) -> Option<B> {
        None
    }
}

/// No preconditioning, $P = I$.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<B: Block> Preconditioner<B> for Identity {
    fn apply_inverse(&self, r: &B) -> B {
        r.clone()
    }
    fn log_det(&self) -> Option<f64> {
        Some(0.0)
    }
    fn factor_cols(&self, n: usize) -> Option<usize> {
        Some(n)
    }
    fn factor_mul(&self, eps: &DMatrix<B::Scalar>, like: &B) -> Option<B> {
        Some(like.from_host_like(eps))
    }
}

impl<B: Block, P: Preconditioner<B> + ?Sized> Preconditioner<B> for &P {
    fn apply_inverse(&self, r: &B) -> B {
        (**self).apply_inverse(r)
    }
    fn log_det(&self) -> Option<f64> {
        (**self).log_det()
    }
    fn factor_cols(&self, n: usize) -> Option<usize> {
        (**self).factor_cols(n)
    }
    fn factor_mul(&self, eps: &DMatrix<B::Scalar>, like: &B) -> Option<B> {
        (**self).factor_mul(eps, like)
    }
}

/// The partial pivoted Cholesky preconditioner $P = L L^\top + \sigma^2 I$ for
/// $K + \sigma^2 I$ (Harbrecht, Peters & Schneider 2012; Gardner et al. 2018).
///
/// $L$ ($n \times r$) is built greedily from the diagonal of $K$ and $r$ of its
/// rows: at each step the pivot is the largest remaining diagonal entry of
/// $K - L L^\top$. Then, by the Woodbury identity and the matrix determinant
/// lemma with $M = \sigma^2 I_r + L^\top L$,
///
/// $$P^{-1} r = \sigma^{-2}\left(r - L M^{-1} L^\top r\right), \qquad
///   \log\lvert P \rvert = (n - r)\log\sigma^2 + \log\lvert M \rvert ,$$
///
/// and $F = [\,L \;\; \sigma I\,]$ is a factor, $F F^\top = P$, so samples are
/// $z = L \varepsilon_1 + \sigma \varepsilon_2$. $L$ lives on the block's device;
/// $M$'s Cholesky factor ($r \times r$) on the host.
#[derive(Debug, Clone)]
pub struct PivotedCholesky<B: Block> {
    l: B,
    l_host: DMatrix<f64>,
    pivots: Vec<usize>,
    residual_trace: f64,
    sigma2: f64,
    m_chol: Option<Cholesky<f64, Dyn>>,
    log_det: f64,
}

impl<B: Block> PivotedCholesky<B> {
    /// Factors `k` (square, with [`diagonal`](LinearOperator::diagonal) and
    /// [`row`](LinearOperator::row)) to rank at most `rank` (fewer when the
    /// remaining diagonal vanishes), for $P = L L^\top + $ `sigma2` $I$.
    /// Pass the kernel $K$ itself, not $K + \sigma^2 I$. Costs `rank` rows of
    /// $K$ and $O(n r^2)$ host work.
    /// `like` is any block on the device where $L$ should live.
    pub fn new<A: LinearOperator<B> + ?Sized>(
        k: &A,
        sigma2: f64,
        rank: usize,
        like: &B,
    ) -> Result<Self, KrylovError> {
        let n = k.nrows();
        if k.ncols() != n {
            return Err(KrylovError::DimensionMismatch {
                what: "pivoted Cholesky operator must be square",
                expected: n,
                got: k.ncols(),
            });
        }
        if !(sigma2 > 0.0 && sigma2.is_finite()) {
            return Err(KrylovError::InvalidParameter {
                name: "sigma2",
                reason: format!("must be positive and finite, got {sigma2}"),
            });
        }
        let mut d: Vec<f64> = k
            .diagonal()
            .ok_or(KrylovError::MissingHook { hook: "diagonal" })?
            .into_iter()
            .map(|v| v.to_f64())
            .collect();
        if d.len() != n {
            return Err(KrylovError::DimensionMismatch {
                what: "diagonal length",
                expected: n,
                got: d.len(),
            });
        }
        if let Some(c) = d.iter().position(|v| !v.is_finite()) {
            return Err(KrylovError::NonFiniteOperatorOutput {
                iteration: 0,
                column: c,
            });
        }
        let rank = rank.min(n);
        let scale = d.iter().fold(0.0f64, |m, &v| m.max(v.abs()));
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(rank);
        let mut pivots = Vec::with_capacity(rank);
        for step in 0..rank {
            let (piv, &dmax) = d
                .iter()
                .enumerate()
                .filter(|(i, _)| !pivots.contains(i))
                .max_by(|a, b| a.1.total_cmp(b.1))
                .expect("rank <= n leaves a candidate");
            // Stop when what is left of K is negligible (or K is not PSD).
            if dmax <= 1e-14 * scale || dmax <= 0.0 {
                break;
            }
            let row = k.row(piv).ok_or(KrylovError::MissingHook { hook: "row" })?;
            if row.len() != n {
                return Err(KrylovError::DimensionMismatch {
                    what: "row length",
                    expected: n,
                    got: row.len(),
                });
            }
            let s = dmax.sqrt();
            let mut col: Vec<f64> = row.into_iter().map(|v| v.to_f64()).collect();
            for prev in &cols {
                let lp = prev[piv];
                col.iter_mut().zip(prev).for_each(|(c, p)| *c -= lp * p);
            }
            col.iter_mut().for_each(|c| *c /= s);
            for &p in &pivots {
                col[p] = 0.0;
            }
            col[piv] = s;
            if let Some(c) = col.iter().position(|v| !v.is_finite()) {
                return Err(KrylovError::NonFiniteOperatorOutput {
                    iteration: step,
                    column: c,
                });
            }
            d.iter_mut().zip(&col).for_each(|(di, c)| *di -= c * c);
            d[piv] = 0.0;
            pivots.push(piv);
            cols.push(col);
        }
        let r = cols.len();
        let l_host = DMatrix::from_fn(n, r, |i, j| cols[j][i]);
        let residual_trace = d.iter().map(|v| v.max(0.0)).sum();
        let (m_chol, log_det) = if r == 0 {
            (None, n as f64 * sigma2.ln())
        } else {
            let m = l_host.tr_mul(&l_host) + DMatrix::identity(r, r) * sigma2;
            let chol = Cholesky::new(m).ok_or(KrylovError::NotPositiveDefinite {
                iteration: 0,
                column: 0,
                curvature: f64::NAN,
            })?;
            let logdet_m: f64 = chol.l_dirty().diagonal().iter().map(|v| 2.0 * v.ln()).sum();
            (Some(chol), (n - r) as f64 * sigma2.ln() + logdet_m)
        };
        Ok(Self {
            l: like.from_host_like(&to_scalar_matrix(&l_host)),
            l_host,
            pivots,
            residual_trace,
            sigma2,
            m_chol,
            log_det,
        })
    }

    /// The rank $r$ actually reached.
    pub fn rank(&self) -> usize {
        self.pivots.len()
    }

    /// The pivots, in order.
    pub fn pivots(&self) -> &[usize] {
        &self.pivots
    }

    /// The factor $L$ on the host ($n \times r$).
    pub fn factor(&self) -> &DMatrix<f64> {
        &self.l_host
    }

    /// $\operatorname{tr}(K - L L^\top)$, the trace of what the factor misses.
    pub fn residual_trace(&self) -> f64 {
        self.residual_trace
    }

    /// $\sigma^2$.
    pub fn sigma2(&self) -> f64 {
        self.sigma2
    }
}

impl<B: Block> Preconditioner<B> for PivotedCholesky<B> {
    fn apply_inverse(&self, r: &B) -> B {
        let mut z = r.clone();
        if let Some(chol) = &self.m_chol {
            let t = self.l.t_mul(r).map(|v| v.to_f64());
            let u = chol.solve(&t);
            z.add_mul(&self.l, &to_scalar_matrix(&(-u)));
        }
        z.scale_cols(&vec![
            <B::Scalar as Scalar>::from_f64(1.0 / self.sigma2);
            r.ncols()
        ]);
        z
    }

    fn log_det(&self) -> Option<f64> {
        Some(self.log_det)
    }

    fn factor_cols(&self, n: usize) -> Option<usize> {
        Some(self.rank() + n)
    }

    fn factor_mul(&self, eps: &DMatrix<B::Scalar>, like: &B) -> Option<B> {
        let r = self.rank();
        let n = self.l_host.nrows();
        if eps.nrows() != r + n {
            return None;
        }
        let sigma = <B::Scalar as Scalar>::from_f64(self.sigma2.sqrt());
        let e2 = eps.rows(r, n).map(|v| v * sigma);
        let mut z = like.from_host_like(&e2);
        if r > 0 {
            z.add_mul(&self.l, &eps.rows(0, r).into_owned());
        }
        Some(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cg::{CgParams, cg, pcg};
    use crate::ops::{FnOperator, Shifted};
    use crate::testing::*;

    #[test]
    fn pivoted_cholesky_matches_dense_woodbury_and_logdet() {
        let mut rng = rng(31);
        let n = 50;
        let k = ntk_like_kernel(n, &mut rng);
        let sigma2 = 0.01;
        let pc = PivotedCholesky::new(&k, sigma2, 8, &k).unwrap();
        assert_eq!(pc.rank(), 8);
        let l = pc.factor();
        let p = l * l.transpose() + DMatrix::identity(n, n) * sigma2;
        let r = gaussian(n, 3, &mut rng);
        let z = pc.apply_inverse(&r);
        assert!((&p * &z - &r).norm() < 1e-9 * r.norm());
        assert!(
            (Preconditioner::<DMatrix<f64>>::log_det(&pc).unwrap() - dense_logdet(&p)).abs() < 1e-9
        );
        // F F' = P with E = I.
        let w = Preconditioner::<DMatrix<f64>>::factor_cols(&pc, n).unwrap();
        let f = pc.factor_mul(&DMatrix::identity(w, w), &r).unwrap();
        assert!((&f * f.transpose() - &p).norm() < 1e-12);
        // Pivots pick distinct rows and the residual trace is tr(K - LL').
        let mut piv = pc.pivots().to_vec();
        piv.sort_unstable();
        piv.dedup();
        assert_eq!(piv.len(), 8);
        assert!((pc.residual_trace() - (k.trace() - (l * l.transpose()).trace())).abs() < 1e-9);
    }

    #[test]
    fn full_rank_pivoted_cholesky_reproduces_k() {
        let mut rng = rng(32);
        let k = spd_with_spectrum(&log_spaced(20, 100.0), &mut rng);
        let pc = PivotedCholesky::new(&k, 1.0, 40, &k).unwrap();
        assert_eq!(pc.rank(), 20);
        assert!((pc.factor() * pc.factor().transpose() - &k).norm() < 1e-10);
        assert!(pc.residual_trace() < 1e-10);
        // Rank 0 is sigma^2 I.
        let p0 = PivotedCholesky::new(&k, 2.0, 0, &k).unwrap();
        assert_eq!(p0.apply_inverse(&k), &k * 0.5);
        assert!(
            (Preconditioner::<DMatrix<f64>>::log_det(&p0).unwrap() - 20.0 * 2f64.ln()).abs()
                < 1e-12
        );
    }

    #[test]
    fn pivoted_cholesky_errors_are_typed() {
        let k = DMatrix::<f64>::identity(4, 4);
        let op = FnOperator::new(4, |x: &DMatrix<f64>| x.clone());
        let like = DMatrix::<f64>::zeros(4, 1);
        assert_eq!(
            PivotedCholesky::new(&op, 0.1, 2, &like).unwrap_err(),
            KrylovError::MissingHook { hook: "diagonal" }
        );
        assert!(matches!(
            PivotedCholesky::new(&k, 0.0, 2, &like),
            Err(KrylovError::InvalidParameter { .. })
        ));
        assert!(matches!(
            PivotedCholesky::new(&k, f64::NAN, 2, &like),
            Err(KrylovError::InvalidParameter { .. })
        ));
    }

    /// On an NTK-like spectrum (fast decay plus a small noise variance) the
    /// pivoted Cholesky preconditioner cuts the CG iteration count.
    #[test]
    fn preconditioning_cuts_iterations_on_ntk_like_spectrum() {
        let mut rng = rng(33);
        let n = 300;
        let k = ntk_like_kernel(n, &mut rng);
        let b = gaussian(n, 4, &mut rng);
        for sigma2 in [1e-2, 1e-3, 1e-4] {
            let a = Shifted::new(&k, sigma2).unwrap();
            let params = CgParams {
                rel_tolerance: 1e-8,
                max_iters: 3000,
                ..Default::default()
            };
            let plain = cg(&a, &b, &params).unwrap();
            let pc = PivotedCholesky::new(&k, sigma2, 30, &b).unwrap();
            let pre = pcg(&a, &pc, &b, None, &params).unwrap();
            assert!(plain.info.all_converged() && pre.info.all_converged());
            eprintln!(
                "sigma2 {sigma2:e}: CG iterations plain {}, pivoted Cholesky (rank 30) {}",
                plain.info.iterations, pre.info.iterations
            );
            assert!(pre.info.iterations * 2 < plain.info.iterations);
            let x_ref = dense_solve(&(&k + DMatrix::identity(n, n) * sigma2), &b);
            assert!((&pre.solution - &x_ref).norm() < 1e-4 * x_ref.norm());
        }
    }

    /// The preconditioner runs on f32 blocks too.
    #[test]
    fn f32_pivoted_cholesky_pcg() {
        let mut rng = rng(34);
        let n = 100;
        let k64 = ntk_like_kernel(n, &mut rng);
        let k: DMatrix<f32> = k64.map(|v| v as f32);
        let b: DMatrix<f32> = gaussian(n, 2, &mut rng).map(|v| v as f32);
        let a = Shifted::new(&k, 1e-2f32).unwrap();
        let pc = PivotedCholesky::new(&k, 1e-2, 20, &b).unwrap();
        let params = CgParams {
            rel_tolerance: 1e-4,
            ..Default::default()
        };
        let out = pcg(&a, &pc, &b, None, &params).unwrap();
        assert!(out.info.all_converged());
        let x_ref = dense_solve(&(&k64 + DMatrix::identity(n, n) * 1e-2), &b.map(f64::from));
        assert!((out.solution.map(f64::from) - &x_ref).norm() < 1e-3 * x_ref.norm());
    }
}
