//! Dense nalgebra references and random SPD matrices for the tests.
#![allow(dead_code)]

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.sample::<f64, _>(StandardNormal))
}

/// A Haar-ish random orthogonal matrix (Q of a Gaussian matrix's QR).
pub fn random_orthogonal(n: usize, rng: &mut StdRng) -> DMatrix<f64> {
    gaussian(n, n, rng).qr().q()
}

/// $Q \operatorname{diag}(\lambda) Q^\top$ with a random orthogonal $Q$, symmetrized.
pub fn spd_with_spectrum(eigs: &[f64], rng: &mut StdRng) -> DMatrix<f64> {
    let q = random_orthogonal(eigs.len(), rng);
    let mut qd = q.clone();
    for (j, &l) in eigs.iter().enumerate() {
        qd.column_mut(j).scale_mut(l);
    }
    let a = qd * q.transpose();
    (&a + a.transpose()) * 0.5
}

/// $n$ eigenvalues log-spaced from 1 down to 1/cond.
pub fn log_spaced(n: usize, cond: f64) -> Vec<f64> {
    if n == 1 {
        return vec![1.0];
    }
    (0..n)
        .map(|i| cond.powf(-(i as f64) / (n as f64 - 1.0)))
        .collect()
}

pub fn dense_solve(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    a.clone().cholesky().expect("SPD").solve(b)
}

pub fn dense_logdet(a: &DMatrix<f64>) -> f64 {
    let c = a.clone().cholesky().expect("SPD");
    c.l_dirty().diagonal().iter().map(|v| 2.0 * v.ln()).sum()
}

pub fn sorted_eigenvalues(a: &DMatrix<f64>) -> Vec<f64> {
    let mut e: Vec<f64> = SymmetricEigen::new(a.clone())
        .eigenvalues
        .iter()
        .copied()
        .collect();
    e.sort_by(f64::total_cmp);
    e
}

pub fn col_norms(x: &DMatrix<f64>) -> Vec<f64> {
    x.column_iter().map(|c| c.norm()).collect()
}

pub fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

pub fn diag(v: &[f64]) -> DMatrix<f64> {
    DMatrix::from_diagonal(&DVector::from_vec(v.to_vec()))
}

/// An NTK-like kernel matrix: eigenvalues decaying as $100 (i+1)^{-3}$ with
/// random eigenvectors.
pub fn ntk_like_kernel(n: usize, rng: &mut StdRng) -> DMatrix<f64> {
    let eigs: Vec<f64> = (0..n).map(|i| 100.0 * ((i + 1) as f64).powi(-3)).collect();
    spd_with_spectrum(&eigs, rng)
}

/// A well-conditioned dense SPD matrix $G G^\top / p + c I$ with Gaussian $G$.
pub fn wishart_plus_shift(n: usize, p: usize, c: f64, rng: &mut StdRng) -> DMatrix<f64> {
    let g = gaussian(n, p, rng);
    let mut a = DMatrix::zeros(n, n);
    a.gemm(1.0 / p as f64, &g, &g.transpose(), 0.0);
    let a = (&a + a.transpose()) * 0.5;
    a + DMatrix::identity(n, n) * c
}
