//! Gaussian-process style inference with the `krylov` crate: solve
//! $(K + \sigma^2 I) x = y$, estimate $\log\lvert K + \sigma^2 I \rvert$, and build
//! a LOVE cache for predictive variances, all through matrix products.
//!
//! Run with `cargo run -p ntk-krylov --example solve`.

use krylov::cg::{CgParams, pcg};
use krylov::lanczos::LanczosParams;
use krylov::ops::Shifted;
use krylov::precond::{Identity, PivotedCholesky};
use krylov::root::inv_root_decomposition;
use krylov::slq::{InvQuadLogdetParams, inv_quad_logdet};
use nalgebra::DMatrix;

fn main() -> Result<(), krylov::KrylovError> {
    // An RBF kernel on 500 points of [0, 10] plus a test block of 5 points.
    let n = 500;
    let xs: Vec<f64> = (0..n).map(|i| 10.0 * i as f64 / n as f64).collect();
    let xt = [0.5, 2.25, 5.0, 7.75, 9.9];
    let rbf = |a: f64, b: f64| (-0.5 * (a - b).powi(2)).exp();
    let k = DMatrix::from_fn(n, n, |i, j| rbf(xs[i], xs[j]));
    let k_star = DMatrix::from_fn(n, xt.len(), |i, j| rbf(xs[i], xt[j]));
    let y = DMatrix::from_fn(n, 1, |i, _| xs[i].sin());
    let sigma2 = 1e-3;
    let a = Shifted::new(&k, sigma2)?;

    // Solve with and without the pivoted Cholesky preconditioner.
    let params = CgParams {
        rel_tolerance: 1e-8,
        max_iters: 5000,
        ..Default::default()
    };
    let plain = pcg(&a, &Identity, &y, None, &params)?;
    let pc = PivotedCholesky::new(&k, sigma2, 20, &y)?;
    let pre = pcg(&a, &pc, &y, None, &params)?;
    println!(
        "CG iterations: {} plain, {} with rank-{} pivoted Cholesky (residual {:.2e})",
        plain.info.iterations,
        pre.info.iterations,
        pc.rank(),
        pre.info.rel_residuals()[0]
    );

    // y' A^{-1} y and log|A| from one batched CG call.
    let iql = inv_quad_logdet(
        &a,
        &pc,
        &y,
        &InvQuadLogdetParams {
            cg: params.clone(),
            probes: 16,
            ..Default::default()
        },
    )?;
    let exact = (&k + DMatrix::identity(n, n) * sigma2).cholesky().unwrap();
    let exact_logdet: f64 = exact
        .l_dirty()
        .diagonal()
        .iter()
        .map(|v| 2.0 * v.ln())
        .sum();
    println!(
        "y'A^-1 y = {:.6}, log|A| = {:.3} ± {:.3} (exact {:.3})",
        iql.inv_quad[0], iql.logdet.value, iql.logdet.std_error, exact_logdet
    );

    // LOVE: cache an inverse root once, then each predictive variance is O(n m).
    let cache = inv_root_decomposition(
        &a,
        &y,
        &LanczosParams {
            steps: 100,
            ..Default::default()
        },
    )?;
    let reduction = cache.quad_diag(&k_star);
    let exact_red = exact.solve(&k_star);
    for (j, x) in xt.iter().enumerate() {
        let var = 1.0 - reduction[j];
        let var_exact = 1.0 - k_star.column(j).dot(&exact_red.column(j));
        println!("x* = {x:5.2}: predictive variance {var:.3e} (exact {var_exact:.3e})");
    }
    Ok(())
}
