//! Lanczos tridiagonalization with full reorthogonalization.
//!
//! From a start vector $q_1 = b / \lVert b \rVert$, $m$ steps of Lanczos build an
//! orthonormal basis $Q_m = [q_1, \dots, q_m]$ of the Krylov space
//! $\mathcal{K}_m(A, b)$ and the symmetric tridiagonal $T_m = Q_m^\top A Q_m$
//! (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, §10.1):
//!
//! $$A Q_m = Q_m T_m + \beta_m q_{m+1} e_m^\top .$$
//!
//! In floating point the plain three-term recurrence loses orthogonality
//! (Paige 1971) and produces spurious copies of converged Ritz values; here
//! every new vector is orthogonalized again against all previous ones, twice
//! (classical Gram-Schmidt with reorthogonalization, "CGS2"), at $O(n m^2)$
//! extra work. A *breakdown* ($\beta_j \approx 0$: the Krylov space is
//! invariant) ends that column's recurrence early; the Ritz values are then
//! exact eigenvalues of $A$.

use nalgebra::{DMatrix, Dyn, SymmetricEigen};

use crate::block::{Block, Scalar, hcat_all, scalar_eps, to_scalars};
use crate::error::KrylovError;
use crate::operator::LinearOperator;

/// A symmetric tridiagonal matrix on the host, in `f64`: diagonal
/// $\alpha_1..\alpha_m$ and off-diagonal $\beta_1..\beta_{m-1}$.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SymTridiagonal {
    /// Diagonal entries ($m$).
    pub diag: Vec<f64>,
    /// Off-diagonal entries ($m - 1$, or none when $m = 0$).
    pub off: Vec<f64>,
}

impl SymTridiagonal {
    /// Dimension $m$.
    pub fn dim(&self) -> usize {
        self.diag.len()
    }

    /// The dense $m \times m$ matrix.
    pub fn to_dense(&self) -> DMatrix<f64> {
        let m = self.dim();
        DMatrix::from_fn(m, m, |i, j| {
            if i == j {
                self.diag[i]
            } else if i + 1 == j {
                self.off[i]
            } else if j + 1 == i {
                self.off[j]
            } else {
                0.0
            }
        })
    }

    /// The eigen-decomposition $T = V \Theta V^\top$ (by nalgebra).
    pub fn eigen(&self) -> SymmetricEigen<f64, Dyn> {
        SymmetricEigen::new(self.to_dense())
    }

    /// Eigenvalues in ascending order and the matching eigenvectors (columns of
    /// an $m \times m$ matrix); empty for $m = 0$.
    pub fn sorted_eigen(&self) -> (Vec<f64>, DMatrix<f64>) {
        let m = self.dim();
        if m == 0 {
            return (Vec::new(), DMatrix::zeros(0, 0));
        }
        let eig = self.eigen();
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
        let values = order.iter().map(|&k| eig.eigenvalues[k]).collect();
        let vectors = DMatrix::from_fn(m, m, |i, j| eig.eigenvectors[(i, order[j])]);
        (values, vectors)
    }

    /// Gauss quadrature nodes and weights: the Ritz values $\theta_k$ and the
    /// squared first components $\tau_k = V_{1k}^2$, so that
    /// $e_1^\top f(T) e_1 = \sum_k \tau_k f(\theta_k)$ (Golub & Meurant 1997).
    pub fn gauss_quadrature(&self) -> (Vec<f64>, Vec<f64>) {
        if self.dim() == 0 {
            return (Vec::new(), Vec::new());
        }
        let eig = self.eigen();
        let weights = (0..self.dim())
            .map(|k| eig.eigenvectors[(0, k)].powi(2))
            .collect();
        (eig.eigenvalues.iter().copied().collect(), weights)
    }

    /// $e_1^\top f(T) e_1$ (zero for an empty matrix).
    pub fn quadrature(&self, f: impl Fn(f64) -> f64) -> f64 {
        let (nodes, weights) = self.gauss_quadrature();
        nodes.iter().zip(&weights).map(|(&t, &w)| w * f(t)).sum()
    }
}

/// Parameters of [`lanczos`].
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosParams {
    /// Number of steps $m$ (the size of $T$), at most $n$.
    pub steps: usize,
    /// Breakdown guard: the recurrence of a column stops when
    /// $\beta_j \le \text{tol} \cdot \lVert A q_j \rVert$ (raised to
    /// $100\,\varepsilon$ of the scalar type if smaller).
    pub breakdown_tol: f64,
}

impl Default for LanczosParams {
    fn default() -> Self {
        Self {
            steps: 30,
            breakdown_tol: 1e-10,
        }
    }
}

/// The result of Lanczos from one start vector: $A Q \approx Q T$.
#[derive(Debug, Clone)]
pub struct LanczosDecomposition<B> {
    /// Orthonormal basis $Q$ ($n \times m$, $m$ = `tridiagonal.dim()`).
    pub basis: B,
    /// $T = Q^\top A Q$.
    pub tridiagonal: SymTridiagonal,
    /// $\lVert b \rVert$ of the start vector.
    pub start_norm: f64,
    /// $\beta_m$, the norm of the part of $A q_m$ outside the basis (zero up to
    /// round-off after a breakdown).
    pub residual: f64,
    /// Whether the recurrence stopped early on an invariant subspace.
    pub breakdown: bool,
    /// Ritz values $\theta_k$ (eigenvalues of $T$), ascending.
    pub ritz_values: Vec<f64>,
    /// Eigenvectors $V$ of $T$ (columns, matching `ritz_values`); the Ritz
    /// vectors of $A$ are $Q V$.
    pub ritz_vectors: DMatrix<f64>,
}

/// Lanczos on a tridiagonal only (the basis is dropped), as used by
/// stochastic Lanczos quadrature.
#[derive(Debug, Clone)]
pub struct LanczosTridiagonal {
    /// $T = Q^\top A Q$.
    pub tridiagonal: SymTridiagonal,
    /// $\lVert b \rVert$ of the start vector.
    pub start_norm: f64,
}

/// Runs `params.steps` steps of Lanczos with full reorthogonalization from
/// each column of `start` at once (independent recurrences sharing one
/// block product $A Q_j$ per step), returning $Q$, $T$, the eigen-decomposition
/// of $T$ and the residual $\beta_m$ for each column. A zero start column gives an empty
/// decomposition.
///
/// ```
/// use krylov::lanczos::{lanczos, LanczosParams};
/// use nalgebra::DMatrix;
/// let a = DMatrix::<f64>::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 2.0, 3.0, 4.0]));
/// let b = DMatrix::from_element(4, 1, 1.0);
/// let dec = &lanczos(&a, &b, &LanczosParams { steps: 4, ..Default::default() }).unwrap()[0];
/// let ritz = &dec.ritz_values;
/// assert!((ritz[0] - 1.0).abs() < 1e-12 && (ritz[3] - 4.0).abs() < 1e-12);
/// ```
pub fn lanczos<B, A>(
    a: &A,
    start: &B,
    params: &LanczosParams,
) -> Result<Vec<LanczosDecomposition<B>>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    let run = run(&a_dyn(a), start, params, true)?;
    let steps = run.basis.unwrap_or_default();
    Ok(run
        .tridiagonals
        .into_iter()
        .enumerate()
        .map(|(c, t)| {
            let m = t.tridiagonal.dim();
            let basis = match &run.single_basis {
                Some(q) if m > 0 => q.columns(0, m),
                _ => {
                    let cols: Vec<B> = steps[..m].iter().map(|q| q.columns(c, 1)).collect();
                    hcat_all(cols).unwrap_or_else(|| start.zeros_like(0))
                }
            };
            let (ritz_values, ritz_vectors) = t.tridiagonal.sorted_eigen();
            LanczosDecomposition {
                ritz_values,
                ritz_vectors,
                basis,
                tridiagonal: t.tridiagonal,
                start_norm: t.start_norm,
                residual: run.residuals[c],
                breakdown: run.breakdowns[c],
            }
        })
        .collect())
}

/// Like [`lanczos`] but keeps only the tridiagonals and start norms.
pub fn lanczos_tridiagonals<B, A>(
    a: &A,
    start: &B,
    params: &LanczosParams,
) -> Result<Vec<LanczosTridiagonal>, KrylovError>
where
    B: Block,
    A: LinearOperator<B> + ?Sized,
{
    Ok(run(&a_dyn(a), start, params, false)?.tridiagonals)
}

/// Wraps a possibly unsized operator reference as a trait object, so that the
/// recurrence is compiled once per block type.
fn a_dyn<'a, B: Block, A: LinearOperator<B> + ?Sized>(a: &'a A) -> DynOp<'a, B, A> {
    DynOp(a, std::marker::PhantomData)
}

struct DynOp<'a, B, A: ?Sized>(&'a A, std::marker::PhantomData<B>);

impl<B: Block, A: LinearOperator<B> + ?Sized> LinearOperator<B> for DynOp<'_, B, A> {
    fn nrows(&self) -> usize {
        self.0.nrows()
    }
    fn ncols(&self) -> usize {
        self.0.ncols()
    }
    fn apply(&self, x: &B) -> B {
        self.0.apply(x)
    }
}

struct Run<B> {
    tridiagonals: Vec<LanczosTridiagonal>,
    residuals: Vec<f64>,
    breakdowns: Vec<bool>,
    basis: Option<Vec<B>>,
    /// For one start vector: the basis as one block (`m` or `m + 1` columns).
    single_basis: Option<B>,
}

fn norms<B: Block>(x: &B) -> Vec<f64> {
    x.col_dots(x)
        .into_iter()
        .map(|d| d.to_f64().sqrt())
        .collect()
}

fn run<B: Block>(
    a: &dyn LinearOperator<B>,
    start: &B,
    params: &LanczosParams,
    keep_basis: bool,
) -> Result<Run<B>, KrylovError> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(KrylovError::DimensionMismatch {
            what: "Lanczos operator must be square",
            expected: n,
            got: a.ncols(),
        });
    }
    if start.nrows() != n {
        return Err(KrylovError::DimensionMismatch {
            what: "Lanczos start rows",
            expected: n,
            got: start.nrows(),
        });
    }
    if params.steps > n {
        return Err(KrylovError::InvalidParameter {
            name: "steps",
            reason: format!("{} steps exceed the dimension {n}", params.steps),
        });
    }
    let tol = params.breakdown_tol.max(100.0 * scalar_eps::<B::Scalar>());
    let k = start.ncols();
    let start_norms = norms(start);
    if let Some(c) = start_norms.iter().position(|v| !v.is_finite()) {
        return Err(KrylovError::NonFiniteInput { column: c });
    }
    let mut active: Vec<bool> = start_norms.iter().map(|&v| v > 0.0).collect();
    let mut alphas = vec![Vec::new(); k];
    let mut betas = vec![Vec::new(); k];
    let mut residuals = vec![0.0; k];
    let mut breakdowns = vec![false; k];

    let inv: Vec<f64> = start_norms
        .iter()
        .map(|&v| if v > 0.0 { 1.0 / v } else { 0.0 })
        .collect();
    let mut q0 = start.clone();
    q0.scale_cols(&to_scalars(&inv));
    // With a single start vector the basis is also kept as one n × j block,
    // so that each reorthogonalization pass is two block products (one
    // host round trip) instead of 2j vector operations.
    let mut q_all: Option<B> = (k == 1).then(|| q0.clone());
    let mut qs: Vec<B> = vec![q0];
    let mut prev_beta = vec![0.0; k];

    for j in 0..params.steps {
        if !active.iter().any(|&x| x) {
            break;
        }
        let mut w = a.apply(&qs[j]);
        crate::cg::check_shape("operator output", &w, n, k)?;
        let wnorm = norms(&w);
        let alpha: Vec<f64> = qs[j].col_dots(&w).into_iter().map(|v| v.to_f64()).collect();
        if let Some(c) = (0..k).find(|&c| !(alpha[c].is_finite() && wnorm[c].is_finite())) {
            return Err(KrylovError::NonFiniteOperatorOutput {
                iteration: j,
                column: c,
            });
        }
        let neg = |v: &[f64]| -> Vec<B::Scalar> {
            v.iter()
                .map(|&x| <B::Scalar as Scalar>::from_f64(-x))
                .collect()
        };
        w.axpy_cols(&neg(&alpha), &qs[j]);
        if j > 0 {
            w.axpy_cols(&neg(&prev_beta), &qs[j - 1]);
        }
        // Full reorthogonalization, twice ("twice is enough", Parlett 1980).
        for _ in 0..2 {
            if let Some(q_all) = &q_all {
                let c = q_all.t_mul(&w);
                w.add_mul(q_all, &(-c));
            } else {
                for q in &qs {
                    let c: Vec<f64> = q.col_dots(&w).into_iter().map(|v| v.to_f64()).collect();
                    w.axpy_cols(&neg(&c), q);
                }
            }
        }
        let beta = norms(&w);
        if let Some(c) = (0..k).find(|&c| !beta[c].is_finite()) {
            return Err(KrylovError::NonFiniteOperatorOutput {
                iteration: j,
                column: c,
            });
        }
        let last = j + 1 == params.steps;
        let mut scale = vec![0.0; k];
        for c in 0..k {
            if !active[c] {
                continue;
            }
            alphas[c].push(alpha[c]);
            residuals[c] = beta[c];
            if beta[c] <= tol * wnorm[c] {
                active[c] = false;
                breakdowns[c] = true;
            } else if last {
                active[c] = false;
            } else {
                betas[c].push(beta[c]);
                scale[c] = 1.0 / beta[c];
            }
        }
        if !last {
            w.scale_cols(&to_scalars(&scale));
            if let Some(q_all) = q_all.as_mut()
                && active[0]
            {
                *q_all = q_all.hcat(&w);
            }
            qs.push(w);
        }
        prev_beta = beta;
        for c in 0..k {
            if !active[c] {
                prev_beta[c] = 0.0;
            }
        }
    }

    let tridiagonals = alphas
        .into_iter()
        .zip(betas)
        .zip(&start_norms)
        .map(|((diag, mut off), &start_norm)| {
            off.truncate(diag.len().saturating_sub(1));
            LanczosTridiagonal {
                tridiagonal: SymTridiagonal { diag, off },
                start_norm,
            }
        })
        .collect();
    Ok(Run {
        tridiagonals,
        residuals,
        breakdowns,
        basis: keep_basis.then_some(qs),
        single_basis: if keep_basis { q_all } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::FnOperator;
    use crate::testing::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Lanczos vs `SymmetricEigen` on random SPD matrices: Q orthonormal,
        /// Q'AQ = T, Ritz values inside the spectrum, and the extreme ones
        /// exact once the Krylov space is exhausted.
        #[test]
        fn lanczos_matches_symmetric_eigen(
            n in 1usize..=120,
            log_cond in 0.0f64..8.0,
            frac in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            let mut rng = rng(seed);
            let a = spd_with_spectrum(&log_spaced(n, 10f64.powf(log_cond)), &mut rng);
            let b = gaussian(n, 1, &mut rng);
            let m = ((frac * n as f64).ceil() as usize).clamp(1, n);
            let dec = lanczos(&a, &b, &LanczosParams { steps: m, ..Default::default() }).unwrap().remove(0);
            let q = &dec.basis;
            let mm = dec.tridiagonal.dim();
            prop_assert!(mm <= m && mm >= 1);
            prop_assert!((q.transpose() * q - DMatrix::identity(mm, mm)).norm() < 1e-10 * mm as f64);
            let anorm = a.norm();
            prop_assert!((q.transpose() * &a * q - dec.tridiagonal.to_dense()).norm() < 1e-10 * anorm);
            let eig = sorted_eigenvalues(&a);
            let ritz = dec.ritz_values.clone();
            // Ritz pairs: T V = V Θ.
            let t = dec.tridiagonal.to_dense();
            let v = &dec.ritz_vectors;
            prop_assert!((&t * v - v * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(ritz.clone()))).norm() < 1e-10 * anorm);
            let (lmin, lmax) = (eig[0], eig[n - 1]);
            for &t in &ritz {
                prop_assert!(t >= lmin - 1e-10 * lmax && t <= lmax * (1.0 + 1e-10));
            }
            if mm == n || dec.breakdown {
                prop_assert!((ritz[mm - 1] - lmax).abs() <= 1e-8 * lmax);
                prop_assert!((ritz[0] - lmin).abs() <= 1e-8 * lmax, "{} vs {lmin}", ritz[0]);
            }
        }
    }

    /// The largest eigenvalue converges long before n steps.
    #[test]
    fn extreme_ritz_values_converge_early() {
        let mut rng = rng(21);
        let a = spd_with_spectrum(&log_spaced(300, 1e4), &mut rng);
        let b = gaussian(300, 3, &mut rng);
        let eig = sorted_eigenvalues(&a);
        let decs = lanczos(
            &a,
            &b,
            &LanczosParams {
                steps: 40,
                ..Default::default()
            },
        )
        .unwrap();
        for dec in &decs {
            let ritz = dec.tridiagonal.eigen().eigenvalues;
            let top = ritz.iter().copied().fold(f64::MIN, f64::max);
            assert!((top - eig[299]).abs() < 1e-10 * eig[299]);
            assert!(!dec.breakdown);
            assert_eq!(dec.tridiagonal.dim(), 40);
        }
    }

    #[test]
    fn breakdown_on_an_invariant_subspace() {
        // Start vector in a 3-dimensional eigenspace: breakdown after 3 steps.
        let a = diag(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = DMatrix::from_column_slice(6, 1, &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        let dec = lanczos(
            &a,
            &b,
            &LanczosParams {
                steps: 6,
                ..Default::default()
            },
        )
        .unwrap()
        .remove(0);
        assert!(dec.breakdown);
        assert_eq!(dec.tridiagonal.dim(), 3);
        assert!(dec.residual < 1e-12);
        let mut ritz: Vec<f64> = dec
            .tridiagonal
            .eigen()
            .eigenvalues
            .iter()
            .copied()
            .collect();
        ritz.sort_by(f64::total_cmp);
        for (r, e) in ritz.iter().zip([1.0, 2.0, 3.0]) {
            assert!((r - e).abs() < 1e-12);
        }
        // A zero start column gives an empty decomposition next to a good one.
        let mut b2 = DMatrix::zeros(6, 2);
        b2.column_mut(1).fill(1.0);
        let decs = lanczos(
            &a,
            &b2,
            &LanczosParams {
                steps: 4,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(decs[0].tridiagonal.dim(), 0);
        assert_eq!(decs[0].basis.ncols(), 0);
        assert_eq!(decs[1].tridiagonal.dim(), 4);
    }

    #[test]
    fn lanczos_errors_are_typed() {
        let a = diag(&[1.0, 2.0, 3.0]);
        let b = DMatrix::from_element(3, 1, 1.0);
        let too_many = LanczosParams {
            steps: 4,
            ..Default::default()
        };
        assert!(matches!(
            lanczos(&a, &b, &too_many),
            Err(KrylovError::InvalidParameter { .. })
        ));
        let short = DMatrix::from_element(2, 1, 1.0);
        assert!(matches!(
            lanczos(&a, &short, &LanczosParams::default()),
            Err(KrylovError::DimensionMismatch { .. })
        ));
        let mut nan = b.clone();
        nan[(1, 0)] = f64::NAN;
        let p = LanczosParams {
            steps: 2,
            ..Default::default()
        };
        assert!(matches!(
            lanczos(&a, &nan, &p),
            Err(KrylovError::NonFiniteInput { column: 0 })
        ));
        let wrong = FnOperator::new(3, |x: &DMatrix<f64>| DMatrix::zeros(2, x.ncols()));
        assert!(matches!(
            lanczos(&wrong, &b, &p),
            Err(KrylovError::DimensionMismatch { .. })
        ));
        let bad = FnOperator::new(3, |x: &DMatrix<f64>| x * f64::NAN);
        assert!(matches!(
            lanczos(&bad, &b, &p),
            Err(KrylovError::NonFiniteOperatorOutput { .. })
        ));
    }

    #[test]
    fn quadrature_of_tridiagonal() {
        let t = SymTridiagonal {
            diag: vec![2.0, 3.0],
            off: vec![1.0],
        };
        let dense = t.to_dense();
        let e = SymmetricEigen::new(dense.clone());
        let f_t = &e.eigenvectors
            * DMatrix::from_diagonal(&e.eigenvalues.map(f64::ln))
            * e.eigenvectors.transpose();
        assert!((t.quadrature(f64::ln) - f_t[(0, 0)]).abs() < 1e-14);
        assert_eq!(SymTridiagonal::default().quadrature(f64::ln), 0.0);
    }
}
