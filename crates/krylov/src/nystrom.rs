//! The Nyström preconditioner for $A = A_0 + \mu I$, $A_0$ positive semi-definite, from a
//! sketch $Y = A_0 \Omega$ (Frangella, Tropp & Udell 2023, "Randomized Nyström
//! preconditioning", Algorithm 2.1).
//!
//! With a test block $\Omega$ ($n\times r$), the Nyström approximation
//! $$\hat A_0 = Y (\Omega^\top Y)^{+} Y^\top \preceq A_0$$
//! is computed stably as $\hat A_0 = B B^\top$, $B = Y_\nu R^{-1}$, where $Y_\nu = Y + \nu\Omega$
//! for a tiny shift $\nu$ and $R^\top R = \Omega^\top Y_\nu$ (Cholesky); then $B = V S W^\top$
//! (from the eigen-decomposition of the small $B^\top B$) and
//! $\hat A_0 = V \Lambda V^\top$ with $\Lambda = \max(S^2 - \nu, 0)$. The preconditioner is
//! $$P = V \Lambda V^\top + \mu I, \qquad
//! P^{-1} = V \big((\Lambda + \mu)^{-1} - \mu^{-1}\big) V^\top + \mu^{-1} I,$$
//! with $\log\lvert P\rvert = \sum_i \log(\lambda_i + \mu) + (n - r)\log\mu$ and the symmetric
//! square root $F = V\big((\Lambda+\mu)^{1/2} - \mu^{1/2}\big)V^\top + \mu^{1/2} I$ as the
//! factor for probes ($F F^\top = P$, since $V$ has orthonormal columns).
//!
//! In f32 the inverse cancels in the directions of $V$ ($\mu^{-1} - (\mu^{-1} - (\lambda+\mu)^{-1})$),
//! so it is sound while $\lambda_{\max}/\mu$ stays well below $1/\varepsilon \approx 10^7$; past
//! that, PCG stops with [`KrylovError::NotPositiveDefinitePreconditioner`] rather than give a
//! wrong answer.
//!
//! Its use: an operator with a fast-decaying spectrum whose rows are not at hand (so
//! [`PivotedCholesky`](crate::PivotedCholesky) does not apply), such as the parameter-space
//! Gram matrix $J^\top J + \sigma^2 I$ of a network, where $\Omega = J^\top G$ for a Gaussian
//! $G$ makes $Y = J^\top J J^\top G$ one power iteration.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::block::{Block, Scalar, scalar_eps, to_scalar_matrix};
use crate::error::KrylovError;
use crate::precond::Preconditioner;

/// The Nyström preconditioner $P = V\Lambda V^\top + \mu I$ (see the [module docs](self)).
///
/// ```
/// use krylov::{CgParams, Nystrom, pcg};
/// use krylov::ops::Shifted;
/// use nalgebra::DMatrix;
///
/// // A₀ with a decaying spectrum, A = A₀ + 0.01 I, and a sketch of A₀.
/// let n = 60;
/// let g = DMatrix::from_fn(n, n, |i, j| ((i * i * 7 + j * j * 3 + i * j) as f64 * 0.37).sin());
/// let d = DMatrix::from_fn(n, n, |i, j| if i == j { 1.0 / (1.0 + i as f64).powi(2) } else { 0.0 });
/// let a0 = &g * d * g.transpose();
/// let omega = DMatrix::from_fn(n, 10, |i, j| ((i * i * 5 + j * j * 11 + i * j) as f64 * 0.71).cos());
/// let p = Nystrom::from_sketch(&a0 * &omega, omega.clone(), 0.01)?;
/// let b = DMatrix::from_element(n, 1, 1.0);
/// let out = pcg(&Shifted::new(&a0, 0.01)?, &p, &b, None, &CgParams::default())?;
/// assert!(out.info.all_converged());
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Nystrom<B: Block> {
    /// $V$ ($n\times r$, orthonormal columns).
    v: B,
    /// $\Lambda$, the eigenvalues of $\hat A_0$ (descending).
    lambda: Vec<f64>,
    mu: f64,
    /// The stabilizing shift $\nu$.
    nu: f64,
    log_det: f64,
}

impl<B: Block> Nystrom<B> {
    /// From `y` $= A_0\Omega$ and `omega` $=\Omega$ (both $n\times r$, on the same device) and
    /// the shift `mu` $=\mu > 0$ of $A = A_0 + \mu I$. Costs $r\times r$ factorizations on the
    /// host and $O(n r^2)$ block work (four products $X^\top Y$, four $X + YC$). Directions
    /// whose singular value the rounding of the block's scalar type cannot resolve are
    /// dropped, so the rank may come out below $r$.
    ///
    /// Both blocks are taken by value and freed as soon as they are used: at most three
    /// $n\times r$ blocks are alive at once, these two included (four, briefly, for blocks
    /// whose $X + YC$ forms $YC$ first). At $n = 1.2\cdot 10^7$, $r = 30$ in f32 each is 1.4 GB.
    ///
    /// Fails on mismatched shapes, a non-positive or non-finite `mu`, non-finite entries, and
    /// an $\Omega^\top Y$ that is not positive semi-definite (`y` is not $A_0\Omega$ for a PSD
    /// $A_0$) or stays singular under the shift ($\Omega$ of lower rank than $r$).
    pub fn from_sketch(y: B, omega: B, mu: f64) -> Result<Self, KrylovError> {
        let (n, r) = (y.nrows(), y.ncols());
        if omega.nrows() != n || omega.ncols() != r {
            return Err(KrylovError::DimensionMismatch {
                what: "Nyström sketch: omega vs y",
                expected: n * r,
                got: omega.nrows() * omega.ncols(),
            });
        }
        if !(mu > 0.0 && mu.is_finite()) {
            return Err(KrylovError::InvalidParameter {
                name: "mu",
                reason: format!("must be positive and finite, got {mu}"),
            });
        }
        if r > n {
            return Err(KrylovError::InvalidParameter {
                name: "omega",
                reason: format!("a sketch of {r} columns of an operator of size {n}"),
            });
        }
        let to64 = |m: DMatrix<B::Scalar>| m.map(|v| v.to_f64());
        // Column norms of Ω and Y, in f64.
        let norms =
            |m: &B| -> Vec<f64> { m.col_dots(m).iter().map(|v| v.to_f64().sqrt()).collect() };
        let (omega_norms, y_norms) = (norms(&omega), norms(&y));
        if let Some(c) = y_norms
            .iter()
            .chain(&omega_norms)
            .position(|v| !v.is_finite())
        {
            return Err(KrylovError::NonFiniteInput {
                column: c % r.max(1),
            });
        }
        if r == 0 || y_norms.iter().all(|&v| v == 0.0) {
            // No sketch, or A₀Ω = 0: P = μI.
            return Ok(Self {
                v: y.zeros_like(0),
                lambda: Vec::new(),
                mu,
                nu: 0.0,
                log_det: n as f64 * mu.ln(),
            });
        }
        let omega_y = to64(omega.t_mul(&y));
        if let Some(c) = omega_y.iter().position(|v| !v.is_finite()) {
            return Err(KrylovError::NonFiniteInput {
                column: c / r.max(1),
            });
        }
        // Ωᵀ Y_ν = Ωᵀ Y + ν ΩᵀΩ (symmetrized) must factor. The approximation does not change
        // when Ω's columns are rescaled, so ν is set in units of A₀'s eigenvalues:
        // ν = ε ‖A₀ Ω D‖_F with D scaling Ω's columns to unit length (ε of the block's scalar
        // type; Frangella et al.'s √n ε ‖Y‖ for an orthonormal Ω is the same size), raised
        // tenfold while rounding still leaves the factorization indefinite.
        let eps = scalar_eps::<B::Scalar>();
        let omega_omega = to64(omega.t_mul(&omega));
        let mut nu = eps
            * y_norms
                .iter()
                .zip(&omega_norms)
                .map(|(y, w)| if *w > 0.0 { (y / w).powi(2) } else { 0.0 })
                .sum::<f64>()
                .sqrt();
        let mut tries = 0;
        let chol = loop {
            let core = &omega_y + &omega_omega * nu;
            if let Some(c) = nalgebra::Cholesky::new((&core + core.transpose()) * 0.5) {
                break c;
            }
            tries += 1;
            if tries == 8 || nu == 0.0 {
                return Err(KrylovError::NotPositiveDefinite {
                    iteration: 0,
                    column: 0,
                    curvature: f64::NAN,
                });
            }
            nu *= 10.0;
        };
        // B = Y_ν R⁻¹ (R = Lᵀ) = Y R⁻¹ + Ω (ν R⁻¹), then BᵀB = W S² Wᵀ and V = B W S⁻¹.
        let r_inv = chol
            .l()
            .transpose()
            .solve_upper_triangular(&DMatrix::identity(r, r))
            .ok_or(KrylovError::NotPositiveDefinite {
                iteration: 0,
                column: 0,
                curvature: 0.0,
            })?;
        let mut b = y.zeros_like(r);
        b.add_mul(&y, &to_scalar_matrix(&r_inv));
        b.add_mul(&omega, &to_scalar_matrix(&(&r_inv * nu)));
        drop((y, omega));
        let gram = to64(b.t_mul(&b));
        let not_finite = KrylovError::NonFiniteOperatorOutput {
            iteration: 0,
            column: 0,
        };
        if gram.iter().any(|v| !v.is_finite()) {
            return Err(not_finite);
        }
        let eig = SymmetricEigen::try_new((&gram + gram.transpose()) * 0.5, f64::EPSILON, 10_000)
            .ok_or(not_finite)?;
        let mut order: Vec<usize> = (0..r).collect();
        order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
        let top = order.first().map_or(0.0, |&i| eig.eigenvalues[i].max(0.0));
        // Keep the directions the Gram matrix resolves (its rounding is about ε s²_max).
        let keep: Vec<usize> = order
            .into_iter()
            .filter(|&i| eig.eigenvalues[i] > 100.0 * eps * top && eig.eigenvalues[i] > 0.0)
            .collect();
        let w_scaled = DMatrix::from_fn(r, keep.len(), |i, j| {
            let c = keep[j];
            eig.eigenvectors[(i, c)] / eig.eigenvalues[c].sqrt()
        });
        let mut v0 = b.zeros_like(keep.len());
        v0.add_mul(&b, &to_scalar_matrix(&w_scaled));
        drop(b);
        // V = B W S⁻¹ loses orthogonality in the directions of small S (by ε s²_max / s²);
        // one Cholesky QR step restores it, so that P stays positive definite.
        let k = keep.len();
        let vtv = to64(v0.t_mul(&v0));
        let chol_v = nalgebra::Cholesky::new((&vtv + vtv.transpose()) * 0.5).ok_or(
            KrylovError::NotPositiveDefinite {
                iteration: 0,
                column: 0,
                curvature: f64::NAN,
            },
        )?;
        let l_inv_t = chol_v
            .l()
            .transpose()
            .solve_upper_triangular(&DMatrix::identity(k, k))
            .expect("a Cholesky factor is invertible");
        let mut v = v0.zeros_like(k);
        v.add_mul(&v0, &to_scalar_matrix(&l_inv_t));
        let lambda: Vec<f64> = keep
            .iter()
            .map(|&c| (eig.eigenvalues[c] - nu).max(0.0))
            .collect();
        let log_det = lambda.iter().map(|l| (l + mu).ln()).sum::<f64>()
            + n.saturating_sub(lambda.len()) as f64 * mu.ln();
        Ok(Self {
            v,
            lambda,
            mu,
            nu,
            log_det,
        })
    }

    /// The rank kept.
    pub fn rank(&self) -> usize {
        self.lambda.len()
    }

    /// The eigenvalues $\lambda_i$ of the approximation $\hat A_0$, descending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.lambda
    }

    /// The shift $\mu$.
    pub fn mu(&self) -> f64 {
        self.mu
    }

    /// The stabilizing shift $\nu$ the factorization of $\Omega^\top Y_\nu$ took.
    pub fn nu(&self) -> f64 {
        self.nu
    }

    /// $s X + V\,\mathrm{diag}\big(c(\lambda_i)\big)\,V^\top X$: the one shape both the inverse
    /// and the factor take.
    fn apply_spectral(&self, x: &B, s: f64, c: impl Fn(f64) -> f64) -> B {
        let mut z = x.clone();
        z.scale_cols(&vec![<B::Scalar as Scalar>::from_f64(s); x.ncols()]);
        if self.lambda.is_empty() {
            return z;
        }
        let mut t = self.v.t_mul(x);
        for (i, &l) in self.lambda.iter().enumerate() {
            let ci = <B::Scalar as Scalar>::from_f64(c(l));
            t.row_mut(i).iter_mut().for_each(|e| *e *= ci);
        }
        z.add_mul(&self.v, &t);
        z
    }
}

impl<B: Block> Preconditioner<B> for Nystrom<B> {
    fn apply_inverse(&self, r: &B) -> B {
        let mu = self.mu;
        self.apply_spectral(r, 1.0 / mu, |l| 1.0 / (l + mu) - 1.0 / mu)
    }

    fn log_det(&self) -> Option<f64> {
        Some(self.log_det)
    }

    fn factor_cols(&self, n: usize) -> Option<usize> {
        Some(n)
    }

    fn factor_mul(&self, eps: &DMatrix<B::Scalar>, like: &B) -> Option<B> {
        if eps.nrows() != self.v.nrows() {
            return None;
        }
        let root_mu = self.mu.sqrt();
        let x = like.from_host_like(eps);
        Some(self.apply_spectral(&x, root_mu, |l| (l + self.mu).sqrt() - root_mu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cg::{CgParams, cg, pcg};
    use crate::ops::Shifted;
    use crate::slq::{InvQuadLogdetParams, Probes, inv_quad_logdet};
    use crate::testing::*;

    /// $P$ against its dense formula: $P P^{-1} = I$, $\log\lvert P\rvert$, $F F^\top = P$, and
    /// $\hat A_0 \preceq A_0$ with equality on an exact low-rank $A_0$ when $r$ covers its rank.
    #[test]
    fn nystrom_matches_its_dense_formulas() {
        let mut rng = rng(41);
        let n = 40;
        let a0 = ntk_like_kernel(n, &mut rng);
        let omega = gaussian(n, 12, &mut rng);
        let mu = 0.05;
        let p = Nystrom::from_sketch(&a0 * &omega, omega.clone(), mu).unwrap();
        assert!(p.rank() > 0 && p.rank() <= 12);
        let v = &p.v;
        assert!((v.tr_mul(v) - DMatrix::identity(p.rank(), p.rank())).norm() < 1e-8);
        let lam = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(p.lambda.clone()));
        let hat = v * lam * v.transpose();
        let dense = &hat + DMatrix::identity(n, n) * mu;
        // Â₀ ⪯ A₀: the smallest eigenvalue of A₀ − Â₀ is not negative (up to rounding).
        let gap = SymmetricEigen::new(&a0 - &hat).eigenvalues.min();
        // (A₀ + νI − Â_ν ⪰ 0, so A₀ − Â₀ ⪰ −νI.)
        assert!(
            gap > -p.nu - 1e-12 * a0.norm(),
            "A0 - Â0 has eigenvalue {gap}"
        );
        // Rescaling Ω's columns changes neither Â₀ nor the shift.
        let d = DMatrix::from_diagonal(&nalgebra::DVector::from_fn(12, |j, _| {
            10f64.powi(j as i32 % 3 - 1)
        }));
        let scaled = &omega * d;
        let q = Nystrom::from_sketch(&a0 * &scaled, scaled.clone(), mu).unwrap();
        assert_eq!(q.rank(), p.rank());
        assert!(
            (q.nu() - p.nu()).abs() < 1e-6 * p.nu(),
            "nu {} vs {}",
            q.nu(),
            p.nu()
        );
        let hat_q = &q.v * DMatrix::from_diagonal(&q.lambda.clone().into()) * q.v.transpose();
        assert!((&hat_q - &hat).norm() < 1e-6 * hat.norm());
        let r = gaussian(n, 3, &mut rng);
        let z = p.apply_inverse(&r);
        assert!((&dense * &z - &r).norm() < 1e-9 * r.norm());
        assert!((p.log_det().unwrap() - dense_logdet(&dense)).abs() < 1e-9);
        let f = p.factor_mul(&DMatrix::identity(n, n), &r).unwrap();
        assert!((&f * f.transpose() - &dense).norm() < 1e-9 * dense.norm());

        // A₀ of rank 5, sketched with 8 columns: Â₀ = A₀.
        let g = gaussian(n, 5, &mut rng);
        let low = &g * g.transpose();
        let omega = gaussian(n, 8, &mut rng);
        let p = Nystrom::from_sketch(&low * &omega, omega.clone(), mu).unwrap();
        assert_eq!(p.rank(), 5);
        let hat = &p.v * DMatrix::from_diagonal(&p.lambda.clone().into()) * p.v.transpose();
        assert!((&hat - &low).norm() < 1e-6 * low.norm());
    }

    /// On an NTK-like spectrum it cuts the CG iterations, and the preconditioned SLQ log
    /// determinant agrees with the dense one.
    #[test]
    fn nystrom_cuts_iterations_and_keeps_the_logdet() {
        let mut rng = rng(42);
        let n = 300;
        let k = ntk_like_kernel(n, &mut rng);
        let sigma2 = 1e-3;
        let a = Shifted::new(&k, sigma2).unwrap();
        let b = gaussian(n, 2, &mut rng);
        let params = CgParams {
            rel_tolerance: 1e-8,
            max_iters: 3000,
            ..Default::default()
        };
        // Ω = K G: one power iteration, as Ω = Jᵀ G does in parameter space.
        let omega = &k * gaussian(n, 30, &mut rng);
        let p = Nystrom::from_sketch(&k * &omega, omega.clone(), sigma2).unwrap();
        let plain = cg(&a, &b, &params).unwrap();
        let pre = pcg(&a, &p, &b, None, &params).unwrap();
        assert!(plain.info.all_converged() && pre.info.all_converged());
        assert!(
            pre.info.iterations * 3 < plain.info.iterations,
            "iterations: plain {}, Nyström {}",
            plain.info.iterations,
            pre.info.iterations
        );
        let dense = &k + DMatrix::identity(n, n) * sigma2;
        let x_ref = dense_solve(&dense, &b);
        assert!((&pre.solution - &x_ref).norm() < 1e-5 * x_ref.norm());
        let est = inv_quad_logdet(
            &a,
            &p,
            &b.columns(0, 1).into_owned(),
            &InvQuadLogdetParams {
                cg: params.clone(),
                probes: 32,
                distribution: Probes::Rademacher,
                seed: 5,
            },
        )
        .unwrap();
        let want = dense_logdet(&dense);
        assert!(
            (est.logdet.value - want).abs() < 4.0 * est.logdet.std_error + 1e-6 * want.abs(),
            "logdet {} ± {} vs dense {want}",
            est.logdet.value,
            est.logdet.std_error
        );
    }

    /// f32 blocks: the rank drops to what f32 resolves and PCG still converges (to 1e-3: with
    /// $\kappa(A) = 10^4$, f32's true residual stalls near $10^{-4}$).
    #[test]
    fn nystrom_on_f32_blocks() {
        let mut rng = rng(43);
        let n = 100;
        let k64 = ntk_like_kernel(n, &mut rng);
        let omega64 = gaussian(n, 20, &mut rng);
        let k = k64.map(|v| v as f32);
        let omega = omega64.map(|v| v as f32);
        let p = Nystrom::from_sketch(&k * &omega, omega.clone(), 1e-2).unwrap();
        assert!(p.rank() >= 5);
        let b = gaussian(n, 2, &mut rng).map(|v| v as f32);
        let a = Shifted::new(&k, 1e-2f32).unwrap();
        let out = pcg(
            &a,
            &p,
            &b,
            None,
            &CgParams {
                rel_tolerance: 1e-3,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(out.info.all_converged());
        let x_ref = dense_solve(&(&k64 + DMatrix::identity(n, n) * 1e-2), &b.map(f64::from));
        assert!((out.solution.map(f64::from) - &x_ref).norm() < 1e-2 * x_ref.norm());
    }

    /// A large f32 operator whose spectrum spans seven decades (as $J^\top J$ of a network with
    /// $p \approx 10^6$): $V$ from f32 products must stay orthonormal and the shift must not
    /// swamp the middle of the spectrum. Before the Cholesky QR step and with
    /// $\nu = \sqrt n\,\varepsilon\lVert Y\rVert$, PCG took 156 iterations here against plain CG's 99.
    #[test]
    fn nystrom_resolves_a_wide_f32_spectrum() {
        let mut rng = rng(45);
        let (n, r) = (200_000, 20);
        let lam: Vec<f32> = (0..n)
            .map(|i| 1e5 * 0.5f32.powi(i.min(60) as i32))
            .collect();
        let diag =
            |x: &DMatrix<f32>| DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| lam[i] * x[(i, j)]);
        let omega = gaussian(n, r, &mut rng).map(|v| v as f32);
        let p = Nystrom::from_sketch(diag(&omega), omega.clone(), 1.0).unwrap();
        assert!(p.rank() >= 10, "rank {}: {:?}", p.rank(), p.eigenvalues());
        let a = crate::ops::FnOperator::new(n, |x: &DMatrix<f32>| diag(x) + x);
        let b = gaussian(n, 1, &mut rng).map(|v| v as f32);
        let params = CgParams {
            rel_tolerance: 1e-3,
            max_iters: 500,
            ..Default::default()
        };
        let plain = cg(&a, &b, &params).unwrap();
        let pre = pcg(&a, &p, &b, None, &params).unwrap();
        assert!(pre.info.all_converged());
        assert!(
            pre.info.iterations * 3 < plain.info.iterations,
            "iterations: plain {}, Nyström {}",
            plain.info.iterations,
            pre.info.iterations
        );
    }

    #[test]
    fn nystrom_errors_are_typed() {
        let mut rng = rng(44);
        let y = gaussian(10, 3, &mut rng);
        let omega = gaussian(10, 2, &mut rng);
        assert!(matches!(
            Nystrom::from_sketch(y.clone(), omega.clone(), 1.0),
            Err(KrylovError::DimensionMismatch { .. })
        ));
        let omega = gaussian(10, 3, &mut rng);
        for mu in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Nystrom::from_sketch(y.clone(), omega.clone(), mu),
                Err(KrylovError::InvalidParameter { .. })
            ));
        }
        // y = −Ω: Ωᵀ y is negative definite, not a sketch of a PSD matrix.
        assert!(matches!(
            Nystrom::from_sketch(-&omega, omega.clone(), 1.0),
            Err(KrylovError::NotPositiveDefinite { .. })
        ));
        // More sketch columns than rows.
        let (tall_y, tall_omega) = (gaussian(2, 3, &mut rng), gaussian(2, 3, &mut rng));
        assert!(matches!(
            Nystrom::from_sketch(tall_y.clone(), tall_omega.clone(), 1.0),
            Err(KrylovError::InvalidParameter { .. })
        ));
        // No columns, or A₀Ω = 0: P = μI.
        for (y0, o0) in [
            (DMatrix::<f64>::zeros(10, 0), DMatrix::zeros(10, 0)),
            (DMatrix::zeros(10, 3), omega.clone()),
        ] {
            let p = Nystrom::from_sketch(y0.clone(), o0.clone(), 2.0).unwrap();
            assert_eq!(p.rank(), 0);
            assert!((p.log_det().unwrap() - 10.0 * 2f64.ln()).abs() < 1e-12);
            assert_eq!(p.apply_inverse(&y), &y * 0.5);
        }
        let mut bad = y.clone();
        bad[(3, 1)] = f64::NAN;
        assert!(matches!(
            Nystrom::from_sketch(bad.clone(), omega.clone(), 1.0),
            Err(KrylovError::NonFiniteInput { .. })
        ));
    }
}
