//! A recursive, GEMM-based Cholesky factorization and the dense log marginal likelihood on it.
//!
//! nalgebra's `Cholesky` is unblocked and single-threaded (a few GFLOP/s); for the dense
//! function-space strategy at $n$ in the thousands the factorization dominates. The recursive
//! form below splits $A$ in halves,
//! $$\begin{pmatrix} A_{11} & \\ A_{21} & A_{22}\end{pmatrix}:\quad
//! L_{11} = \operatorname{chol}(A_{11}),\ L_{21} = A_{21}L_{11}^{-\top},\
//! L_{22} = \operatorname{chol}(A_{22} - L_{21}L_{21}^\top),$$
//! with the triangular solve and the symmetric update recursing the same way, so that all but
//! $O(n^2 b)$ of its $n^3/3$ flops are a few large matrix products on
//! [`ntk_ops::matmul::gemm`] (AVX-512 kernels, multi-threaded), and it works in place on the
//! column-major storage with no copy larger than one diagonal block.
//!
//! Products under [`gemm`]'s threading threshold (every step at $n \lesssim 2000$) would leave
//! the other cores idle, so such steps split themselves: the triangular solve into halves of
//! rows (independent), the symmetric update into column panels (disjoint), run by rayon.

use nalgebra::{DMatrix, DVector, RealField};
use ntk_ops::matmul::{ColMajorMut, col_major, col_major_mut, col_major_t, gemm};
use rayon::prelude::*;

use crate::error::GpError;

/// Default leaf size of [`cholesky_blocked`].
pub const DEFAULT_BLOCK: usize = 32;

/// A good leaf size for [`cholesky_blocked`] and [`solve_lower_blocked`] at order $n$
/// (measured on the 2-core AVX-512 reference machine: 32 up to $n = 8192$, 64 above).
pub fn block_for(n: usize) -> usize {
    if n <= 8192 { 32 } else { 64 }
}

/// Overwrites the lower triangle of the symmetric positive-definite `a` ($n\times n$; only
/// its lower triangle is read) with its Cholesky factor $L$, $A = LL^\top$, and zeroes the
/// strict upper triangle.
///
/// Recursive halving (see the module documentation) down to diagonal blocks of at most
/// `leaf` (clamped to at least 8), which are factored by plain column loops. Fails with
/// [`GpError::NotPositiveDefinite`] when a pivot is not positive (or not finite).
pub fn cholesky_blocked<T>(a: &mut DMatrix<T>, leaf: usize) -> Result<(), GpError>
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
    chol_rec(a.as_mut_slice(), n, n, leaf.max(8))?;
    for j in 1..n {
        for i in 0..j {
            a[(i, j)] = T::zero();
        }
    }
    Ok(())
}

/// Rows per chunk of a triangular-solve leaf (a leaf of 64 columns of f64 then fits in L1).
const ROW_CHUNK: usize = 64;

/// Multiply–adds under which a triangular solve or a symmetric update stays on one thread
/// (waking a second one costs tens of microseconds).
const SPLIT_MIN_MACS: usize = 1 << 20;

/// Rows of the smallest half of a threaded [`trsm_right_lt`] (fewer make the products thin).
const SPLIT_MIN_ROWS: usize = 32;

/// Columns per task of a threaded [`syrk_lower`].
const SYRK_PANEL: usize = 32;

/// Error of a pivot that is not positive.
fn not_pd() -> GpError {
    GpError::NotPositiveDefinite {
        what: "the dense kernel matrix plus noise",
    }
}

/// The Cholesky factor of the `n × n` block at `a[0]` (column stride `ld`), in place.
fn chol_rec<T: RealField + Copy>(
    a: &mut [T],
    n: usize,
    ld: usize,
    leaf: usize,
) -> Result<(), GpError> {
    if n <= leaf {
        return chol_leaf(a, n, ld);
    }
    let n1 = (n / 2).next_multiple_of(8).min(n - 1);
    let n2 = n - n1;
    let (left, right) = a.split_at_mut(n1 * ld);
    chol_rec(left, n1, ld, leaf)?;
    // L21 = A21 L11^{-T}, with L11 copied out (it shares columns with A21).
    let mut l11 = DMatrix::<T>::zeros(n1, n1);
    for (j, col) in l11.as_mut_slice().chunks_exact_mut(n1).enumerate() {
        col.copy_from_slice(&left[j * ld..j * ld + n1]);
    }
    trsm_right_lt(col_major_mut(&mut left[n1..], n2, n1, ld), &l11, leaf);
    // A22 -= L21 L21ᵀ on the lower triangle.
    syrk_lower(&mut right[n1..], n2, &left[n1..], n1, ld, leaf);
    chol_rec(&mut right[n1..], n2, ld, leaf)
}

/// Unblocked right-looking Cholesky of a small block, column by column.
fn chol_leaf<T: RealField + Copy>(a: &mut [T], n: usize, ld: usize) -> Result<(), GpError> {
    for j in 0..n {
        let split = ((j + 1) * ld).min(a.len());
        let (done, rest) = a.split_at_mut(split);
        let col = &mut done[j * ld..j * ld + n];
        let d = col[j];
        if !d.is_finite() || d <= T::zero() {
            return Err(not_pd());
        }
        let ljj = d.sqrt();
        col[j] = ljj;
        for x in &mut col[j + 1..n] {
            *x /= ljj;
        }
        for c in j + 1..n {
            let target = &mut rest[(c - j - 1) * ld + c..(c - j - 1) * ld + n];
            let lcj = col[c];
            for (t, l) in target.iter_mut().zip(&col[c..n]) {
                *t -= *l * lcj;
            }
        }
    }
    Ok(())
}

/// $X \leftarrow X L^{-\top}$ for the `m × k` block `x` and the lower-triangular `k × k`
/// `l`. The rows of $X$ are independent: a solve too small for [`gemm`]'s own threads (its
/// first product under [`PARALLEL_MIN_MACS`](ntk_ops::matmul::PARALLEL_MIN_MACS)) but worth a
/// second core runs on halves of its rows at once.
fn trsm_right_lt<T: RealField + Copy>(mut x: ColMajorMut<'_, T>, l: &DMatrix<T>, leaf: usize) {
    let (m, k) = x.shape();
    if m * (k / 2) * (k / 2) >= ntk_ops::matmul::PARALLEL_MIN_MACS {
        trsm_rec(&mut x, l, 0, leaf)
    } else {
        by_row_halves(&mut x, SPLIT_MIN_ROWS, k * k / 2, &|x| {
            trsm_rec(x, l, 0, leaf)
        })
    }
}

/// `f(x)`, or `f` on the two halves of `x`'s rows at once (and so on down), while the halves
/// keep about `min_rows` rows or more and the work, `macs_per_row` multiply–adds per row, is
/// worth waking a second core.
fn by_row_halves<T, F>(x: &mut ColMajorMut<'_, T>, min_rows: usize, macs_per_row: usize, f: &F)
where
    T: RealField + Copy,
    F: Fn(&mut ColMajorMut<'_, T>) + Sync,
{
    let m = x.nrows();
    if m < 2 * min_rows || m * macs_per_row < SPLIT_MIN_MACS {
        return f(x);
    }
    let m1 = (m / 2).next_multiple_of(8);
    let (mut top, mut bottom) = x.rows_range_pair_mut(0..m1, m1..);
    rayon::join(
        || by_row_halves(&mut top, min_rows, macs_per_row, f),
        || by_row_halves(&mut bottom, min_rows, macs_per_row, f),
    );
}

/// [`trsm_right_lt`] on one thread (but for [`gemm`]'s own), for the columns `off..off + k`
/// of the solution against the diagonal block `l[off.., off..]`: recursive on the block's
/// halves, the off-diagonal part a product.
fn trsm_rec<T: RealField + Copy>(
    x: &mut ColMajorMut<'_, T>,
    l: &DMatrix<T>,
    off: usize,
    leaf: usize,
) {
    let (m, k) = x.shape();
    if m == 0 || k == 0 {
        return;
    }
    if k <= leaf {
        // Many rows (the leaves of a solve whose products gemm threads: 5000 rows at
        // n = 10⁴) split across the cores too.
        return by_row_halves(x, ROW_CHUNK, k * k / 2, &|x| trsm_leaf_wide(x, l, off));
    }
    let k1 = (k / 2).next_multiple_of(8).min(k - 1);
    let (mut x1, mut x2) = x.columns_range_pair_mut(0..k1, k1..);
    trsm_rec(&mut x1, l, off, leaf);
    // X2 -= X1 L21ᵀ, with L21 = l[off + k1.., off..off + k1].
    let ldl = l.nrows();
    let l21t = col_major_t(&l.as_slice()[off * ldl + off + k1..], k - k1, k1, ldl);
    gemm(T::one(), &mut x2, -T::one(), &x1, &l21t);
    trsm_rec(&mut x2, l, off + k1, leaf);
}

/// [`trsm_leaf`] on the CPU's widest vectors.
fn trsm_leaf_wide<T: RealField + Copy>(x: &mut ColMajorMut<'_, T>, l: &DMatrix<T>, off: usize) {
    ntk_ops::wide!([RealField + Copy] trsm_leaf(x: &mut ColMajorMut<'_, T>, l: &DMatrix<T>, off: usize) -> ());
}

/// The leaf of [`trsm_rec`]: column $j$ of $X$ is $(B_j - \sum_{q<j} X_q L_{jq}) / L_{jj}$, on
/// chunks of rows that stay in the L1 cache.
#[inline(always)]
fn trsm_leaf<T: RealField + Copy>(x: &mut ColMajorMut<'_, T>, l: &DMatrix<T>, off: usize) {
    let (m, k) = x.shape();
    for r0 in (0..m).step_by(ROW_CHUNK) {
        let mut rows = x.rows_mut(r0, ROW_CHUNK.min(m - r0));
        for j in 0..k {
            let (done, mut rest) = rows.columns_range_pair_mut(0..j, j..);
            let mut col = rest.column_mut(0);
            let xj = col.as_mut_slice();
            for q in 0..j {
                let ljq = l[(off + j, off + q)];
                for (t, s) in xj.iter_mut().zip(done.column(q).as_slice()) {
                    *t -= *s * ljq;
                }
            }
            let inv = T::one() / l[(off + j, off + j)];
            for t in xj.iter_mut() {
                *t *= inv;
            }
        }
    }
}

/// $C \leftarrow C - A A^\top$ on the lower triangle of the `m × m` block `c`, with `a`
/// `m × k`, both column stride `ld`.
///
/// A product too small for [`gemm`]'s own threads but worth a second core runs as column
/// panels at once, each panel's trapezoid one product (which also overwrites the strict upper
/// part of its diagonal block: never read by the factorization, a fraction `panel / m` of
/// the work). Otherwise: recursive halving of `c`, full products off the diagonal, and one
/// product per diagonal leaf.
fn syrk_lower<T: RealField + Copy>(
    c: &mut [T],
    m: usize,
    a: &[T],
    k: usize,
    ld: usize,
    leaf: usize,
) {
    if m == 0 {
        return;
    }
    let threaded_gemm = (m / 2) * (m / 2) * k >= ntk_ops::matmul::PARALLEL_MIN_MACS;
    if !threaded_gemm && m >= 4 * SYRK_PANEL && m * m * k / 2 >= SPLIT_MIN_MACS {
        c.par_chunks_mut(SYRK_PANEL * ld)
            .take(m.div_ceil(SYRK_PANEL))
            .enumerate()
            .with_max_len(1)
            .for_each(|(p, panel)| {
                let j = p * SYRK_PANEL;
                let w = SYRK_PANEL.min(m - j);
                gemm(
                    T::one(),
                    &mut col_major_mut(&mut panel[j..], m - j, w, ld),
                    -T::one(),
                    &col_major(&a[j..], m - j, k, ld),
                    &col_major_t(&a[j..], w, k, ld),
                );
            });
        return;
    }
    if m <= 2 * leaf {
        let mut block = DMatrix::<T>::zeros(m, m);
        gemm(
            T::zero(),
            &mut block,
            T::one(),
            &col_major(a, m, k, ld),
            &col_major_t(a, m, k, ld),
        );
        for j in 0..m {
            for i in j..m {
                c[j * ld + i] -= block[(i, j)];
            }
        }
        return;
    }
    let m1 = (m / 2).next_multiple_of(8).min(m - 1);
    let (c1, c2) = c.split_at_mut(m1 * ld);
    syrk_lower(c1, m1, a, k, ld, leaf);
    // C21 -= A2 A1ᵀ.
    gemm(
        T::one(),
        &mut col_major_mut(&mut c1[m1..], m - m1, m1, ld),
        -T::one(),
        &col_major(&a[m1..], m - m1, k, ld),
        &col_major_t(a, m1, k, ld),
    );
    syrk_lower(&mut c2[m1..], m - m1, &a[m1..], k, ld, leaf);
}

/// $L^{-1} B$ in place for the lower-triangular factor `l` of [`cholesky_blocked`] and a block
/// of right-hand sides `b` ($n\times m$, $n^2 m$ flops): solved as $X^\top = B^\top L^{-\top}$
/// on a transposed copy, whose columns split without aliasing, by the same recursion as the
/// factorization (leaves of `leaf` columns, the rest matrix products).
pub fn solve_lower_blocked<T>(
    l: &DMatrix<T>,
    b: &mut DMatrix<T>,
    leaf: usize,
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
    if (0..n).any(|i| l[(i, i)] == T::zero() || !l[(i, i)].is_finite()) {
        return Err(GpError::NotPositiveDefinite {
            what: "the Cholesky factor",
        });
    }
    let m = b.ncols();
    let mut bt = b.transpose();
    trsm_right_lt(
        col_major_mut(bt.as_mut_slice(), m, n, m.max(1)),
        l,
        leaf.max(8),
    );
    b.copy_from(&bt.transpose());
    Ok(())
}

/// $L^{-1} y$ (`transpose = false`) or $L^{-\top} y$ (`true`) for a lower-triangular `l`, in
/// f64, reading `l` column by column (contiguous).
pub fn solve_vector<T>(l: &DMatrix<T>, y: &DVector<f64>, transpose: bool) -> DVector<f64>
where
    T: RealField + Copy + Into<f64>,
{
    let z = y.clone();
    ntk_ops::wide!([RealField + Copy + Into<f64>] solve_vector_in_place(l: &DMatrix<T>, z: DVector<f64>, transpose: bool) -> DVector<f64>);
}

/// The loops of [`solve_vector`], on slices.
#[inline(always)]
fn solve_vector_in_place<T>(l: &DMatrix<T>, mut z: DVector<f64>, transpose: bool) -> DVector<f64>
where
    T: RealField + Copy + Into<f64>,
{
    let n = l.nrows();
    let ls = l.as_slice();
    let zs = z.as_mut_slice();
    if transpose {
        for i in (0..n).rev() {
            let col = &ls[i * n..(i + 1) * n];
            let below = dot(&col[i + 1..], &zs[i + 1..]);
            zs[i] = (zs[i] - below) / Into::<f64>::into(col[i]);
        }
    } else {
        for j in 0..n {
            let col = &ls[j * n..(j + 1) * n];
            zs[j] /= Into::<f64>::into(col[j]);
            let zj = zs[j];
            for (zi, a) in zs[j + 1..].iter_mut().zip(&col[j + 1..]) {
                *zi -= Into::<f64>::into(*a) * zj;
            }
        }
    }
    z
}

/// $\sum_i a_i b_i$ in f64 with eight independent partial sums (so that the loop vectorizes).
#[inline(always)]
fn dot<T: Copy + Into<f64>>(a: &[T], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, ar) = (a.chunks_exact(8), a.len() - a.len() % 8);
    for (x, y) in ac.zip(b.chunks_exact(8)) {
        for q in 0..8 {
            acc[q] += Into::<f64>::into(x[q]) * y[q];
        }
    }
    let tail: f64 = a[ar..]
        .iter()
        .zip(&b[ar..])
        .map(|(x, y)| Into::<f64>::into(*x) * y)
        .sum();
    acc.iter().sum::<f64>() + tail
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Every split of the recursion (odd sizes, leaves from 8 up, condition numbers to
        /// 1e8) against nalgebra's unblocked factor, and the blocked solve against it.
        #[test]
        fn recursive_cholesky_and_solve_match_nalgebra(n in 1usize..260, leaf in 8usize..80,
                                                      m in 1usize..9, seed in 0u64..1000,
                                                      log_cond in 0.0f64..8.0) {
            let q = DMatrix::from_fn(n, n, |i, j| ((i * 37 + j * 11) as f64 * 0.13 + seed as f64).sin());
            let q = q.qr().q();
            let d = DVector::from_fn(n, |i, _| 10f64.powf(-log_cond * i as f64 / n.max(2) as f64));
            let a = &q * DMatrix::from_diagonal(&d) * q.transpose();
            let a = (&a + a.transpose()) * 0.5;
            let reference = nalgebra::Cholesky::new(a.clone()).unwrap().unpack();
            let mut l = a.clone();
            cholesky_blocked(&mut l, leaf).unwrap();
            let err = (&l - &reference).norm() / reference.norm();
            proptest::prop_assert!(err < 1e-12 * 10f64.powf(log_cond / 2.0), "{err:e}");
            let b = DMatrix::from_fn(n, m, |i, j| ((i + 7 * j) as f64 * 0.3 + seed as f64).cos());
            let mut x = b.clone();
            solve_lower_blocked(&l, &mut x, leaf).unwrap();
            let want = reference.solve_lower_triangular(&b).unwrap();
            proptest::prop_assert!((&x - &want).norm() / want.norm() < 1e-12 * 10f64.powf(log_cond));
        }
    }

    /// Sizes whose triangular solves and symmetric updates run on two threads (row halves,
    /// column panels), in f64 and f32.
    #[test]
    fn threaded_cholesky_and_solve_match_nalgebra() {
        let n = 700;
        let a = spd(n);
        let reference = nalgebra::Cholesky::new(a.clone()).unwrap().unpack();
        let mut l = a.clone();
        cholesky_blocked(&mut l, block_for(n)).unwrap();
        let err = (&l - &reference).norm() / reference.norm();
        assert!(err < 1e-12, "{err:e}");
        let mut l32 = a.map(|v| v as f32);
        cholesky_blocked(&mut l32, 16).unwrap();
        // Backward error within a few units of f32's roundoff (6e-8).
        let l64 = l32.map(f64::from);
        let backward = (&l64 * l64.transpose() - &a).norm() / a.norm();
        assert!(backward < 1e-6, "{backward:e}");
        let b = DMatrix::from_fn(n, 150, |i, j| ((i + 7 * j) as f64 * 0.3).cos());
        let mut x = b.clone();
        solve_lower_blocked(&l, &mut x, 32).unwrap();
        // L is ill-conditioned here: the residual, not the distance to another solver's answer.
        let residual = (&l * &x - &b).norm() / b.norm();
        assert!(residual < 1e-14, "{residual:e}");
    }

    /// A tall solve whose products [`gemm`] threads itself, so that its leaves split rows.
    #[test]
    fn tall_triangular_solve_splits_its_leaves() {
        let (m, k) = (8192, 128);
        let l = spd(k).cholesky().unwrap().unpack();
        let b = DMatrix::from_fn(m, k, |i, j| ((i * 3 + j * 7) as f64 * 0.01).sin());
        let mut x = b.clone();
        trsm_right_lt(col_major_mut(x.as_mut_slice(), m, k, m), &l, 32);
        let residual = (&x * l.transpose() - &b).norm() / b.norm();
        assert!(residual < 1e-14, "{residual:e}");
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
