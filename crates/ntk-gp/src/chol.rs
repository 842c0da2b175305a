//! A blocked, GEMM-based Cholesky factorization and the dense log marginal likelihood on it.
//!
//! nalgebra's `Cholesky` is unblocked and single-threaded (a few GFLOP/s); for the dense
//! function-space strategy at $n$ in the thousands the factorization dominates. The blocked
//! right-looking form below spends $n^3/3$ of its $n^3/3 + O(n^2 b)$ flops in matrix products
//! ($A_{22} \mathrel{-}= L_{21} L_{21}^\top$, block column by block column, so only the lower
//! triangle is updated), which nalgebra hands to `matrixmultiply` (multi-threaded in this
//! workspace) for `f32` and `f64`.

use nalgebra::{DMatrix, DVector, RealField};

use crate::error::GpError;

/// Default block size $b$ of [`cholesky_blocked`].
pub const DEFAULT_BLOCK: usize = 256;

/// A good block size for [`cholesky_blocked`] at order $n$ (measured on a 2-core AVX2
/// machine: 128 up to $n = 2048$, 256 above).
pub fn block_for(n: usize) -> usize {
    if n <= 2048 { 128 } else { DEFAULT_BLOCK }
}

/// Diagonal blocks up to twice this size are factored unblocked (by nalgebra); larger ones
/// recurse with a quarter of their size as the block.
const LEAF: usize = 32;

/// Overwrites the lower triangle of the symmetric positive-definite `a` ($n\times n$; only
/// its lower triangle is read) with its Cholesky factor $L$, $A = LL^\top$, and zeroes the
/// strict upper triangle.
///
/// Per block column $k$ (width $b$): $L_{11} = \operatorname{chol}(A_{11})$ (unblocked),
/// $L_{21} = A_{21} L_{11}^{-\top}$ (one product with the explicit inverse of the small
/// triangular $L_{11}$), then $A_{22} \mathrel{-}= L_{21}L_{21}^\top$ on the lower triangle.
/// Fails with [`GpError::NotPositiveDefinite`] when a diagonal block is not positive definite.
pub fn cholesky_blocked<T>(a: &mut DMatrix<T>, block: usize) -> Result<(), GpError>
where
    T: RealField + Copy,
{
    let n = a.nrows();
    if a.ncols() != n {
        return Err(GpError::Shape {
            what: "Cholesky of a non-square matrix (columns vs rows)",
            expected: n,
            got: a.ncols(),
        });
    }
    let nb = block.max(1);
    let not_pd = || GpError::NotPositiveDefinite {
        what: "the dense kernel matrix plus noise",
    };
    let mut k = 0;
    while k < n {
        let kb = nb.min(n - k);
        // L11 = chol(A11), from the lower triangle only.
        let a11 = DMatrix::from_fn(kb, kb, |i, j| {
            if i >= j {
                a[(k + i, k + j)]
            } else {
                a[(k + j, k + i)]
            }
        });
        // Large diagonal blocks recurse, so that they too run on matrix products.
        let l11 = if kb > 2 * LEAF {
            let mut l11 = a11;
            cholesky_blocked(&mut l11, (kb / 4).max(LEAF))?;
            l11
        } else {
            nalgebra::Cholesky::new(a11).ok_or_else(not_pd)?.unpack()
        };
        a.view_mut((k, k), (kb, kb)).copy_from(&l11);
        let rest = n - k - kb;
        if rest > 0 {
            // L21 = A21 L11^{-T}.
            let l11_inv = lower_inverse(l11)?;
            let a21 = a.view((k + kb, k), (rest, kb)).clone_owned();
            let mut l21 = DMatrix::zeros(rest, kb);
            l21.gemm(T::one(), &a21, &l11_inv.transpose(), T::zero());
            a.view_mut((k + kb, k), (rest, kb)).copy_from(&l21);
            // A22 -= L21 L21ᵀ, lower triangle, one block column at a time.
            let l21t = l21.transpose();
            let mut j = 0;
            while j < rest {
                let jb = nb.min(rest - j);
                let mut target = a.view_mut((k + kb + j, k + kb + j), (rest - j, jb));
                target.gemm(
                    -T::one(),
                    &l21.rows(j, rest - j),
                    &l21t.columns(j, jb),
                    T::one(),
                );
                j += jb;
            }
        }
        k += kb;
    }
    for j in 1..n {
        for i in 0..j {
            a[(i, j)] = T::zero();
        }
    }
    Ok(())
}

/// $L^{-1}$ of a small lower-triangular `l`: unblocked up to $2\cdot$[`LEAF`], by
/// [`solve_lower_blocked`] on the identity (matrix products, leaves of [`LEAF`]) above.
fn lower_inverse<T: RealField + Copy>(l: DMatrix<T>) -> Result<DMatrix<T>, GpError> {
    let kb = l.nrows();
    if kb > 2 * LEAF {
        let mut inv = DMatrix::identity(kb, kb);
        solve_lower_blocked(&l, &mut inv, LEAF)?;
        Ok(inv)
    } else {
        l.solve_lower_triangular(&DMatrix::identity(kb, kb))
            .ok_or(GpError::NotPositiveDefinite {
                what: "the Cholesky factor",
            })
    }
}

/// $L^{-1} B$ in place for the lower-triangular factor `l` of [`cholesky_blocked`] and a block
/// of right-hand sides `b` ($n\times m$), by blocks of `block` rows:
/// $X_k = L_{kk}^{-1}(B_k - L_{k,<k} X_{<k})$, both steps matrix products ($n^2 m$ flops).
pub fn solve_lower_blocked<T>(
    l: &DMatrix<T>,
    b: &mut DMatrix<T>,
    block: usize,
) -> Result<(), GpError>
where
    T: RealField + Copy,
{
    let n = l.nrows();
    if b.nrows() != n || l.ncols() != n {
        return Err(GpError::Shape {
            what: "right-hand side rows vs factor",
            expected: n,
            got: b.nrows(),
        });
    }
    let m = b.ncols();
    let nb = block.max(1);
    let mut k = 0;
    while k < n {
        let kb = nb.min(n - k);
        if k > 0 {
            let done = b.rows(0, k).clone_owned();
            b.rows_mut(k, kb)
                .gemm(-T::one(), &l.view((k, 0), (kb, k)), &done, T::one());
        }
        let inv = lower_inverse(l.view((k, k), (kb, kb)).clone_owned())?;
        let rhs = b.rows(k, kb).clone_owned();
        let mut out = DMatrix::zeros(kb, m);
        out.gemm(T::one(), &inv, &rhs, T::zero());
        b.rows_mut(k, kb).copy_from(&out);
        k += kb;
    }
    Ok(())
}

/// $L^{-1} y$ (`transpose = false`) or $L^{-\top} y$ (`true`) for a lower-triangular `l`, in
/// f64, reading `l` column by column (contiguous).
pub fn solve_vector<T>(l: &DMatrix<T>, y: &DVector<f64>, transpose: bool) -> DVector<f64>
where
    T: RealField + Copy + Into<f64>,
{
    let n = l.nrows();
    let mut z = y.clone();
    if transpose {
        for i in (0..n).rev() {
            let col = l.column(i);
            let below: f64 = col
                .iter()
                .zip(z.iter())
                .skip(i + 1)
                .map(|(a, b)| Into::<f64>::into(*a) * b)
                .sum();
            z[i] = (z[i] - below) / Into::<f64>::into(col[i]);
        }
    } else {
        for j in 0..n {
            let col = l.column(j);
            z[j] /= Into::<f64>::into(col[j]);
            let zj = z[j];
            for (zi, a) in z.iter_mut().zip(col.iter()).skip(j + 1) {
                *zi -= Into::<f64>::into(*a) * zj;
            }
        }
    }
    z
}

/// The pieces of a dense Gaussian log marginal likelihood.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseLml {
    /// $\log p(y) = -\tfrac12 y^\top A^{-1} y - \tfrac12\log\lvert A\rvert - \tfrac n2 \log 2\pi$.
    pub lml: f64,
    /// $\log\lvert A\rvert = 2\sum_i \log L_{ii}$.
    pub logdet: f64,
    /// $y^\top A^{-1} y = \lVert L^{-1} y\rVert^2$.
    pub inv_quad: f64,
}

/// $\log \mathcal N(y \mid 0, K + \sigma^2 I)$ by [`cholesky_blocked`] in the precision of
/// `k` (consumed: it becomes the factor), with the triangular solve and the sums in `f64`.
pub fn dense_lml<T>(mut k: DMatrix<T>, y: &DVector<f64>, noise: f64) -> Result<DenseLml, GpError>
where
    T: RealField + Copy + Into<f64>,
{
    let n = k.nrows();
    if y.len() != n {
        return Err(GpError::Shape {
            what: "targets vs kernel rows",
            expected: n,
            got: y.len(),
        });
    }
    crate::error::check_positive("noise variance", noise)?;
    let shift = nalgebra::convert::<f64, T>(noise);
    for i in 0..n {
        k[(i, i)] += shift;
    }
    cholesky_blocked(&mut k, DEFAULT_BLOCK)?;
    let z = solve_vector(&k, y, false);
    let logdet = 2.0
        * (0..n)
            .map(|i| Into::<f64>::into(k[(i, i)]).ln())
            .sum::<f64>();
    let inv_quad = z.norm_squared();
    Ok(DenseLml {
        lml: -0.5 * inv_quad - 0.5 * logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln(),
        logdet,
        inv_quad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> DMatrix<f64> {
        let g = DMatrix::from_fn(n, n + 3, |i, j| ((i * 31 + j * 17) as f64 * 0.37).sin());
        &g * g.transpose() + DMatrix::identity(n, n) * 0.5
    }

    #[test]
    fn blocked_cholesky_matches_nalgebra() {
        for (n, b) in [(1, 4), (7, 3), (50, 16), (130, 32), (97, 200)] {
            let a = spd(n);
            let mut l = a.clone();
            cholesky_blocked(&mut l, b).unwrap();
            let reference = nalgebra::Cholesky::new(a.clone()).unwrap().unpack();
            let err = (&l - &reference).norm() / reference.norm();
            assert!(err < 1e-12, "n = {n}, b = {b}: {err:e}");
            assert!((&l * l.transpose() - &a).norm() / a.norm() < 1e-13);
        }
    }

    #[test]
    fn blocked_cholesky_in_f32_and_errors() {
        let a = spd(80);
        let mut l32 = a.map(|v| v as f32);
        cholesky_blocked(&mut l32, 16).unwrap();
        let reference = nalgebra::Cholesky::new(a.clone()).unwrap().unpack();
        let err = (l32.map(f64::from) - &reference).norm() / reference.norm();
        assert!(err < 1e-4, "{err:e}");
        let mut indefinite = DMatrix::<f64>::identity(40, 40);
        indefinite[(30, 30)] = -1.0;
        assert!(matches!(
            cholesky_blocked(&mut indefinite, 8),
            Err(GpError::NotPositiveDefinite { .. })
        ));
        let mut rect = DMatrix::<f64>::zeros(3, 4);
        assert!(matches!(
            cholesky_blocked(&mut rect, 8),
            Err(GpError::Shape { .. })
        ));
    }

    #[test]
    fn blocked_and_vector_solves_match_dense_solves() {
        let n = 90;
        let a = spd(n);
        let mut l = a.clone();
        cholesky_blocked(&mut l, 16).unwrap();
        let b = DMatrix::from_fn(n, 5, |i, j| ((i + 3 * j) as f64 * 0.11).sin());
        let mut x = b.clone();
        solve_lower_blocked(&l, &mut x, 16).unwrap();
        assert!((&l * &x - &b).norm() / b.norm() < 1e-12);
        let y = b.column(2).into_owned();
        let z = solve_vector(&l, &y, false);
        assert!((&l * &z - &y).norm() < 1e-10);
        let w = solve_vector(&l, &y, true);
        assert!((l.transpose() * &w - &y).norm() < 1e-10);
        let mut wrong = DMatrix::<f64>::zeros(n + 1, 2);
        assert!(solve_lower_blocked(&l, &mut wrong, 16).is_err());
    }

    #[test]
    fn dense_lml_matches_the_exact_gp() {
        let n = 120;
        let k = spd(n);
        let y = DVector::from_fn(n, |i, _| (i as f64 * 0.3).cos());
        let noise = 0.7;
        let ours = dense_lml(k.clone(), &y, noise).unwrap();
        let gp = crate::exact::ExactGp::new(
            k,
            y.clone(),
            crate::exact::Hyper {
                noise,
                prior_scale: 1.0,
            },
        )
        .unwrap();
        assert!(
            (ours.lml - gp.log_marginal_likelihood()).abs()
                < 1e-9 * gp.log_marginal_likelihood().abs()
        );
        assert!((ours.logdet - gp.log_det()).abs() < 1e-9 * gp.log_det().abs());
        assert!(dense_lml(DMatrix::<f64>::identity(3, 3), &y, 1.0).is_err());
        assert!(dense_lml(DMatrix::<f64>::identity(n, n), &y, -1.0).is_err());
    }
}
