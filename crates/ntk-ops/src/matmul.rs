//! Dense matrix products on the host, for every host-side kernel of the workspace (the
//! structured NTK, the blocked Cholesky and its solves, the host Jacobian products).
//!
//! $D \leftarrow \beta D + \alpha A B$ on nalgebra matrices and views of any strides. For
//! `f32` and `f64` the product runs on the [`gemm`](https://docs.rs/gemm) crate, which picks
//! its micro-kernels at run time (AVX-512 where the CPU has it, AVX2 + FMA otherwise) and
//! splits the work over rayon's threads. On the 2-core AVX-512 machine this workspace is
//! measured on it reaches about 210 GFLOP/s in f32 and 100–115 in f64, against 110–150 and
//! 45–75 for `matrixmultiply` (nalgebra's product), which has no AVX-512 kernels.
//! Other scalar types run plain loops. (nalgebra's own product is not used for them: for a
//! side of 5 or less its loops index past the end of a strided operand, since nalgebra 0.35's
//! `axcpy_uninit` passes a strided slice's length as the element count.)
//!
//! ```
//! use nalgebra::DMatrix;
//! let a = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
//! let b = DMatrix::from_row_slice(3, 1, &[1.0, 0.0, -1.0]);
//! let mut d = DMatrix::from_element(2, 1, 10.0);
//! // D = 1·D − 2·AB
//! ntk_ops::matmul::gemm(1.0, &mut d, -2.0, &a, &b);
//! assert_eq!(d.as_slice(), &[14.0, 14.0]);
//! ```

use std::any::TypeId;

use nalgebra::{
    Dim, Dyn, Matrix, MatrixView, MatrixViewMut, RealField, Scalar, Storage, StorageMut, U1,
};

/// Products of fewer multiply–adds ($mnk$) than this run on one thread: waking rayon's
/// workers costs tens of microseconds on a small VM, more than a second core saves on a
/// product of a millisecond or less.
pub const PARALLEL_MIN_MACS: usize = 1 << 25;

/// A column-major block whose columns are contiguous: row stride 1, column stride `ld`.
pub type ColMajor<'a, T> = MatrixView<'a, T, Dyn, Dyn, U1, Dyn>;
/// The mutable [`ColMajor`].
pub type ColMajorMut<'a, T> = MatrixViewMut<'a, T, Dyn, Dyn, U1, Dyn>;

/// Entries a column-major `rows × cols` block with column stride `ld` spans:
/// $(c - 1)\,\mathrm{ld} + r$, or 0 when it is empty.
pub fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (cols - 1) * ld + rows
    }
}

/// The `rows × cols` block at `data[0]`, column stride `ld`.
///
/// # Panics
/// When `data` is shorter than the block's [`span`] (a programming error inside the
/// workspace).
pub fn col_major<T: Scalar>(data: &[T], rows: usize, cols: usize, ld: usize) -> ColMajor<'_, T> {
    let len = span(rows, cols, ld);
    MatrixView::from_slice_with_strides_generic(&data[..len], Dyn(rows), Dyn(cols), U1, Dyn(ld))
}

/// The transpose of [`col_major`]'s block: `cols × rows`, row stride `ld`.
pub fn col_major_t<T: Scalar>(
    data: &[T],
    rows: usize,
    cols: usize,
    ld: usize,
) -> MatrixView<'_, T, Dyn, Dyn, Dyn, U1> {
    let len = span(rows, cols, ld);
    MatrixView::from_slice_with_strides_generic(&data[..len], Dyn(cols), Dyn(rows), Dyn(ld), U1)
}

/// The mutable [`col_major`].
pub fn col_major_mut<T: Scalar>(
    data: &mut [T],
    rows: usize,
    cols: usize,
    ld: usize,
) -> ColMajorMut<'_, T> {
    let len = span(rows, cols, ld);
    MatrixViewMut::from_slice_with_strides_generic(
        &mut data[..len],
        Dyn(rows),
        Dyn(cols),
        U1,
        Dyn(ld),
    )
}

/// Whether `T` has the fast product (`f32` or `f64`).
fn fast<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>()
}

/// $D \leftarrow \beta D + \alpha A B$, for any strides. With $\beta = 0$ the old contents of
/// $D$ are not read (NaN there does not leak).
///
/// # Panics
/// When the shapes do not chain ($D$ is $m\times n$, $A$ is $m\times k$, $B$ is $k\times n$);
/// this is a programming error inside the workspace, never a user input.
pub fn gemm<T, R1, C1, S1, R2, C2, S2, R3, C3, S3>(
    beta: T,
    dst: &mut Matrix<T, R1, C1, S1>,
    alpha: T,
    a: &Matrix<T, R2, C2, S2>,
    b: &Matrix<T, R3, C3, S3>,
) where
    T: RealField + Copy,
    R1: Dim,
    C1: Dim,
    S1: StorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    S2: Storage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    S3: Storage<T, R3, C3>,
{
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert_eq!(
        (dst.nrows(), dst.ncols(), b.nrows()),
        (m, n, k),
        "matmul::gemm: shapes do not chain"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == T::zero() {
            dst.fill(T::zero());
        } else {
            *dst *= beta;
        }
        return;
    }
    if fast::<T>() {
        let (d_rs, d_cs) = dst.strides();
        let (a_rs, a_cs) = a.strides();
        let (b_rs, b_cs) = b.strides();
        let read_dst = beta != T::zero();
        // SAFETY: the pointers and strides come from live nalgebra matrices of the checked
        // shapes; `dst` is borrowed mutably, so it cannot alias `a` or `b`. `gemm` reads only
        // the m×k, k×n and (when `read_dst`) m×n elements they describe, and dispatches on
        // `T`'s type id, which is f32 or f64 here.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                d_cs as isize,
                d_rs as isize,
                read_dst,
                a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                beta,
                alpha,
                false,
                false,
                false,
                if m * n * k < PARALLEL_MIN_MACS {
                    gemm::Parallelism::None
                } else {
                    gemm::Parallelism::Rayon(0)
                },
            );
        }
        return;
    }
    gemm_generic(beta, dst, alpha, a, b);
}

/// [`gemm`] for scalar types without the fast product: plain loops.
fn gemm_generic<T, R1, C1, S1, R2, C2, S2, R3, C3, S3>(
    beta: T,
    dst: &mut Matrix<T, R1, C1, S1>,
    alpha: T,
    a: &Matrix<T, R2, C2, S2>,
    b: &Matrix<T, R3, C3, S3>,
) where
    T: RealField + Copy,
    R1: Dim,
    C1: Dim,
    S1: StorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    S2: Storage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    S3: Storage<T, R3, C3>,
{
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    for j in 0..n {
        for i in 0..m {
            let mut s = T::zero();
            for q in 0..k {
                s += a[(i, q)] * b[(q, j)];
            }
            dst[(i, j)] = if beta == T::zero() {
                alpha * s
            } else {
                beta * dst[(i, j)] + alpha * s
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{DMatrix, Dyn, MatrixView, MatrixViewMut};
    use proptest::prelude::*;

    fn reference(
        beta: f64,
        d: &DMatrix<f64>,
        alpha: f64,
        a: &DMatrix<f64>,
        b: &DMatrix<f64>,
    ) -> DMatrix<f64> {
        let mut out = d * beta;
        for i in 0..a.nrows() {
            for j in 0..b.ncols() {
                let s: f64 = (0..a.ncols()).map(|q| a[(i, q)] * b[(q, j)]).sum();
                out[(i, j)] += alpha * s;
            }
        }
        out
    }

    fn filled(r: usize, c: usize, seed: u64) -> DMatrix<f64> {
        DMatrix::from_fn(r, c, |i, j| {
            let x = (i as u64 * 31 + j as u64 * 17 + seed * 7919) % 1009;
            x as f64 / 1009.0 - 0.5
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every path (f64 and f32 on `gemm`, other types on the loops)
        /// against the plain triple loop, on transposed and strided operands of every size
        /// from 1, with β = 0 over a NaN-filled destination.
        #[test]
        fn matches_the_triple_loop(m in 1usize..40, k in 1usize..40, n in 1usize..40,
                                   seed in 0u64..1000, beta in prop_oneof![Just(0.0), Just(1.0), Just(-0.5)]) {
            let a = filled(m, k, seed);
            let bt = filled(n, k, seed + 1); // B stored transposed
            let b = bt.transpose();
            let d0 = filled(m, n, seed + 2);
            let want = reference(beta, &d0, 1.5, &a, &b);

            // B as a strided view of its stored transpose; D inside a larger buffer.
            let ld = m + 3;
            let mut buf = vec![f64::NAN; ld * n];
            for j in 0..n { for i in 0..m { buf[j * ld + i] = d0[(i, j)]; } }
            if beta == 0.0 { buf.iter_mut().for_each(|x| *x = f64::NAN); }
            {
                let bv = MatrixView::<f64, Dyn, Dyn, Dyn, Dyn>::from_slice_with_strides_generic(
                    bt.as_slice(), Dyn(k), Dyn(n), Dyn(n), Dyn(1));
                let mut dv = MatrixViewMut::<f64, Dyn, Dyn, Dyn, Dyn>::from_slice_with_strides_generic(
                    &mut buf[..(n - 1) * ld + m], Dyn(m), Dyn(n), Dyn(1), Dyn(ld));
                gemm(beta, &mut dv, 1.5, &a, &bv);
            }
            for j in 0..n { for i in 0..m {
                prop_assert!((buf[j * ld + i] - want[(i, j)]).abs() < 1e-12);
            } }

            let mut d32 = d0.map(|x| x as f32);
            gemm(beta as f32, &mut d32, 1.5, &a.map(|x| x as f32), &b.map(|x| x as f32));
            prop_assert!((d32.map(f64::from) - &want).amax() < 1e-4);

            // The path of scalar types without the fast product.
            let mut dg = d0.clone();
            gemm_generic(beta, &mut dg, 1.5, &a, &b);
            prop_assert!((dg - &want).amax() < 1e-12);
        }
    }

    #[test]
    fn empty_inner_dimension_scales_the_destination() {
        let a = DMatrix::<f64>::zeros(2, 0);
        let b = DMatrix::<f64>::zeros(0, 3);
        let mut d = DMatrix::from_element(2, 3, 2.0);
        gemm(0.5, &mut d, 1.0, &a, &b);
        assert_eq!(d, DMatrix::from_element(2, 3, 1.0));
        gemm(0.0, &mut d, 1.0, &a, &b);
        assert_eq!(d, DMatrix::zeros(2, 3));
    }
}
