//! The dense empirical NTK of an MLP on the host: its structured factors copied out of the
//! backend once, then kernel blocks by direct matrix products written straight into a
//! column-major matrix (the storage a Cholesky factorization works in).
//!
//! Per Dense layer $l$ with inputs $A_l$ ($n\times h_{l-1}$) and output sensitivities
//! $\Delta_l$ ($n o\times h_l$), write $\tilde A_l = [A_l, \mathbf 1]$ (the bias as one more
//! input); then
//! $$K = \sum_l (\Delta_l \Delta_l^\top) \odot (\tilde A_l \tilde A_l^\top),$$
//! with the rows of $\tilde A_l$ repeated $o$ times to match $\Delta_l$'s. A layer is kept in
//! one of two forms, whichever moves fewer numbers:
//! - **Hadamard**: two products of inner sizes $h_l$ and $h_{l-1}+1$ and one elementwise
//!   product of the results (a middle layer: $40\times 40$, $200\times 2000$);
//! - **Khatri–Rao**: the row-wise Kronecker product $G_l = \Delta_l \ast \tilde A_l$, of width
//!   $h_l (h_{l-1}+1)$, so that $K_l = G_l G_l^\top$ — one product and no elementwise pass (a
//!   layer with one output, or one input; all such layers share one product).
//!
//! Against the structured blocks in backend tensors (one temporary per product and per
//! elementwise step, then a copy into host storage) this computes only the
//! lower triangle by column panels, each product written in place with its strides, which is
//! what makes the kernel of a small network take microseconds and a large one run at the
//! matrix-product rate.

use burn::prelude::Backend;
use nalgebra::{DMatrix, Dyn, MatrixView, MatrixViewMut, RealField};
use rayon::prelude::*;

use crate::Activation;
use crate::error::{OpsError, Result};
use crate::matmul;
use crate::mlp::{Head, Mlp, MlpConfig};

/// A layer whose Khatri–Rao factor is at most this many numbers wider than its two Hadamard
/// factors together is kept in Khatri–Rao form (an elementwise pass costs about as much as a
/// product of this inner size).
const HADAMARD_COST: usize = 64;

/// Elementwise passes over fewer entries run on the calling thread: handing work to rayon's
/// pool wakes a thread (tens of microseconds), more than such a pass takes.
const PARALLEL_MIN_ENTRIES: usize = 1 << 15;

/// Rows per block of a Hadamard-form kernel block (see `HostNtk::block_into`).
const ROW_BLOCK: usize = 256;

/// $D \mathrel{+}= A \odot B$ on the CPU's widest vectors.
fn hadamard_add_wide<T: RealField + Copy>(d: &mut [T], a: &[T], b: &[T]) {
    crate::wide!([RealField + Copy] hadamard_add(d: &mut [T], a: &[T], b: &[T]) -> ());
}

#[inline(always)]
fn hadamard_add<T: RealField + Copy>(d: &mut [T], a: &[T], b: &[T]) {
    for ((k, x), y) in d.iter_mut().zip(a).zip(b) {
        *k += *x * *y;
    }
}

/// A good panel width for [`HostNtk::lower_into`] at side $n$: 256 columns, 512 from
/// $n = 4096$ on (measured on the 2-core reference machine: 5 % faster there, while at small
/// $n$ wider panels leave too few tasks to balance the cores).
pub fn panel_for(n: usize) -> usize {
    if n >= 4096 { 512 } else { 256 }
}

/// A row-major $r\times c$ host matrix.
#[derive(Debug, Clone)]
pub(crate) struct RowMajor<T> {
    pub(crate) data: Vec<T>,
    pub(crate) cols: usize,
}

/// A strided matrix view (any row and column strides).
pub(crate) type View<'a, T> = MatrixView<'a, T, Dyn, Dyn, Dyn, Dyn>;
/// A strided mutable matrix view.
pub(crate) type ViewMut<'a, T> = MatrixViewMut<'a, T, Dyn, Dyn, Dyn, Dyn>;

impl<T: RealField + Copy> RowMajor<T> {
    pub(crate) fn rows(&self) -> usize {
        self.data.len() / self.cols.max(1)
    }

    /// Rows `start..start + len` as an `len × cols` view.
    pub(crate) fn rows_view(&self, start: usize, len: usize) -> View<'_, T> {
        let c = self.cols;
        View::from_slice_with_strides_generic(
            &self.data[start * c..(start + len) * c],
            Dyn(len),
            Dyn(c),
            Dyn(c),
            Dyn(1),
        )
    }

    /// The transpose of rows `start..start + len`, a `cols × len` view.
    pub(crate) fn rows_view_t(&self, start: usize, len: usize) -> View<'_, T> {
        let c = self.cols;
        View::from_slice_with_strides_generic(
            &self.data[start * c..(start + len) * c],
            Dyn(c),
            Dyn(len),
            Dyn(1),
            Dyn(c),
        )
    }

    fn view_mut(&mut self) -> ViewMut<'_, T> {
        let (r, c) = (self.rows(), self.cols);
        ViewMut::from_slice_with_strides_generic(&mut self.data, Dyn(r), Dyn(c), Dyn(c), Dyn(1))
    }
}

/// $D = M_1[\text{rows}]\, M_2[\text{cols}]^\top$ into the column-major block `dst` (column
/// stride `ld`): one matrix product.
fn gram_into<T: RealField + Copy>(
    dst: &mut [T],
    ld: usize,
    m1: &RowMajor<T>,
    rows: (usize, usize),
    m2: &RowMajor<T>,
    cols: (usize, usize),
) {
    let (r, c) = (rows.1, cols.1);
    if r == 0 || c == 0 {
        return;
    }
    let mut v = matmul::col_major_mut(dst, r, c, ld);
    matmul::gemm(
        T::zero(),
        &mut v,
        T::one(),
        &m1.rows_view(rows.0, r),
        &m2.rows_view_t(cols.0, c),
    );
}

/// One layer in Hadamard form: $\Delta$ (`[n·o, h_l]`) and $\tilde A$ (`[n·o, h_{l-1}+1]`,
/// rows repeated per output).
#[derive(Debug, Clone)]
struct HadamardLayer<T> {
    delta: RowMajor<T>,
    inputs: RowMajor<T>,
}

/// An MLP's parameters on the host, for its structured factors without a tensor backend:
/// one forward and one backward pass of plain matrix products ([`matmul::gemm`]) and
/// elementwise loops.
///
/// Supports every [`Activation`] (GELU's $\operatorname{erf}$ is libm's, in `f64`) and both
/// heads.
#[derive(Debug, Clone)]
pub struct HostMlp<T> {
    /// Per layer: $W$ (`[out, in]`, row-major, as PyTorch stores it) and $b$.
    layers: Vec<(RowMajor<T>, Vec<T>)>,
    activation: Activation,
    head: Head,
}

/// Host factors of one input set: $A_l$ (`[n, h_{l-1}]`) and $\Delta_l$ (`[n·o, h_l]`).
#[derive(Debug, Clone)]
pub(crate) struct HostFactors<T> {
    pub(crate) inputs: Vec<RowMajor<T>>,
    pub(crate) sens: Vec<RowMajor<T>>,
    pub(crate) n: usize,
    /// The last layer's output $z_L$ (`[n, o]`, before the head), when the host pass ran.
    pub(crate) last: Option<RowMajor<T>>,
}

impl<T: RealField + Copy> HostMlp<T> {
    /// From the configuration and flat parameters (PyTorch `state_dict` order), converted to
    /// `T`.
    pub fn new(config: &MlpConfig, theta: &[f64]) -> Result<Self> {
        config.check()?;
        let p = config.layout().n_params();
        if theta.len() != p {
            return Err(OpsError::ShapeMismatch {
                what: "theta".into(),
                expected: vec![p],
                found: vec![theta.len()],
            });
        }
        let mut at = 0;
        let layers = config
            .widths
            .windows(2)
            .map(|w| {
                let (inp, out) = (w[0], w[1]);
                let conv = |s: &[f64]| s.iter().map(|v| nalgebra::convert(*v)).collect::<Vec<T>>();
                let weight = conv(&theta[at..at + out * inp]);
                let bias = conv(&theta[at + out * inp..at + out * inp + out]);
                at += out * inp + out;
                (
                    RowMajor {
                        data: weight,
                        cols: inp,
                    },
                    bias,
                )
            })
            .collect();
        Ok(Self {
            layers,
            activation: config.activation,
            head: config.head,
        })
    }

    /// The factors at `x` (`[n, h_0]`, row-major): a forward pass keeping every layer's input
    /// and $\sigma'(z)$, then $\Delta_L$ from the head and
    /// $\Delta_l = (\Delta_{l+1} W_{l+1}) \odot \sigma'(z_l)$.
    pub(crate) fn factors(&self, x: RowMajor<T>) -> HostFactors<T> {
        let n = x.rows();
        let last = self.layers.len() - 1;
        let mut inputs = vec![x];
        let mut derivs = Vec::with_capacity(last);
        let mut z_last = None;
        for (l, (w, b)) in self.layers.iter().enumerate() {
            let out = w.rows();
            let mut data = Vec::with_capacity(n * out);
            for _ in 0..n {
                data.extend_from_slice(b);
            }
            let mut z = RowMajor { data, cols: out };
            let a = &inputs[l];
            // z = b (every row) + A Wᵀ.
            matmul::gemm(
                T::one(),
                &mut z.view_mut(),
                T::one(),
                &a.rows_view(0, n),
                &w.rows_view_t(0, out),
            );
            if l < last {
                let mut d = vec![T::zero(); z.data.len()];
                let act = self.activation;
                let apply = |(zs, ds): (&mut [T], &mut [T])| {
                    if act == Activation::Tanh {
                        crate::vmath::tanh_in_place(zs, ds);
                        return;
                    }
                    for (v, dv) in zs.iter_mut().zip(ds) {
                        (*v, *dv) = act.scalar_with_derivative(*v);
                    }
                };
                if z.data.len() < PARALLEL_MIN_ENTRIES {
                    z.data
                        .chunks_mut(4096)
                        .zip(d.chunks_mut(4096))
                        .for_each(apply);
                } else {
                    z.data
                        .par_chunks_mut(4096)
                        .zip(d.par_chunks_mut(4096))
                        .for_each(apply);
                }
                derivs.push(d);
                inputs.push(z);
            } else {
                z_last = Some(z);
            }
        }
        let z = z_last.expect("at least one layer");
        let o = z.cols;
        // Δ_L[(i, j), r] = δ_jr ∂f_j/∂z_j(x_i).
        let mut delta = RowMajor {
            data: vec![T::zero(); n * o * o],
            cols: o,
        };
        for i in 0..n {
            for j in 0..o {
                let d = match (self.head, j) {
                    (Head::Heteroscedastic { .. }, 1) => {
                        crate::activation::sigmoid_scalar(z.data[i * o + 1])
                    }
                    _ => T::one(),
                };
                delta.data[(i * o + j) * o + j] = d;
            }
        }
        let mut sens = vec![delta];
        for l in (0..last).rev() {
            let (w, _) = &self.layers[l + 1];
            let up = &sens[sens.len() - 1];
            let (out, inp) = (w.rows(), w.cols);
            let mut back = RowMajor {
                data: vec![T::zero(); n * o * inp],
                cols: inp,
            };
            matmul::gemm(
                T::zero(),
                &mut back.view_mut(),
                T::one(),
                &up.rows_view(0, n * o),
                &w.rows_view(0, out),
            );
            let d = &derivs[l];
            for (r, row) in back.data.chunks_exact_mut(inp).enumerate() {
                let i = r / o;
                for (v, dv) in row.iter_mut().zip(&d[i * inp..(i + 1) * inp]) {
                    *v *= *dv;
                }
            }
            sens.push(back);
        }
        sens.reverse();
        HostFactors {
            inputs,
            sens,
            n,
            last: Some(z),
        }
    }
}

/// Checks inputs `x` against a network with `d` inputs: columns, at least one row, finite.
fn check_inputs(x: &DMatrix<f64>, d: usize) -> Result<()> {
    if x.ncols() != d {
        return Err(OpsError::ShapeMismatch {
            what: "inputs (columns)".into(),
            expected: vec![d],
            found: vec![x.ncols()],
        });
    }
    if x.nrows() == 0 {
        return Err(OpsError::Empty {
            what: "no input points".into(),
        });
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(OpsError::NonFinite {
            what: "inputs".into(),
            index: x.iter().position(|v| !v.is_finite()),
        });
    }
    Ok(())
}

/// `x` as a row-major host matrix in precision `T`.
fn row_major<T: RealField + Copy>(x: &DMatrix<f64>) -> RowMajor<T> {
    RowMajor {
        data: x
            .transpose()
            .iter()
            .map(|v| nalgebra::convert(*v))
            .collect(),
        cols: x.ncols(),
    }
}

/// An MLP's structured NTK factors on the host, in precision `T` (`f32` or `f64`, whatever
/// the backend's).
///
/// ```
/// use burn_ndarray::NdArray;
/// use ntk_ops::{Execution, HostNtk, Jacobian, JacobianParams, MlpConfig, convert};
///
/// let dev = Default::default();
/// let mlp = MlpConfig::new(&[2, 16, 16, 1]).init::<NdArray<f64>>(0, &dev)?;
/// let x = nalgebra::DMatrix::from_fn(30, 2, |i, j| ((i * 2 + j) as f64 * 0.3).sin());
/// let host = HostNtk::new(&mlp, &x)?;
/// let k = host.cross(&host)?; // K(X, X), 30 × 30
///
/// // the structured kernel in tensor operations
/// let opts = JacobianParams { execution: Execution::DenseTensor, ..Default::default() };
/// let jac = Jacobian::new(mlp, convert::from_dmatrix_f64(&x, &dev), opts)?;
/// let reference = convert::to_dmatrix_f64(jac.ntk_matrix(&jac)?);
/// assert!((k - &reference).norm() < 1e-12 * reference.norm());
/// # Ok::<(), ntk_ops::OpsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HostNtk<T> {
    rows: usize,
    /// The Khatri–Rao layers' factors side by side (`[n·o, Σ h_l (h_{l-1}+1)]`), if any.
    low_rank: Option<RowMajor<T>>,
    hadamard: Vec<HadamardLayer<T>>,
}

impl<T: RealField + Copy> HostNtk<T> {
    /// The structured factors of `mlp` at the inputs `x` (`[n, h_0]`), computed on the host
    /// in `T` from the parameters ([`HostMlp`]).
    pub fn new<B: Backend>(mlp: &Mlp<B>, x: &DMatrix<f64>) -> Result<Self> {
        let d = mlp.n_inputs();
        check_inputs(x, d)?;
        let config = mlp.config();
        let o = mlp.n_outputs();
        let factors = HostMlp::<T>::new(config, &mlp.flatten_f64())?.factors(row_major(x));
        Ok(Self::from_factors(factors, o))
    }

    /// The factors of `network` at the inputs `x` when it is a dense chain
    /// ([`Network::is_dense_chain`](crate::Network::is_dense_chain)); `None` otherwise.
    pub fn of_network<B: Backend>(
        network: &crate::Network<B>,
        x: &DMatrix<f64>,
    ) -> Result<Option<Self>> {
        // From the flat parameters: no Mlp (and no reshaped copies of its tensors) in between.
        crate::MlpConfig::of_network(network.config())
            .map(|config| Self::from_params(&config, network.host_params(), x))
            .transpose()
    }

    /// The factors of the MLP `config` with flat parameters `theta` (the layout of
    /// [`crate::ParamLayout`], PyTorch's `state_dict` order) at the inputs `x`, with no tensor
    /// backend at all: what a caller holding the parameters as numbers (a checkpoint, the
    /// anchors' problem files) needs.
    ///
    /// Fails like [`Self::new`], and on a `theta` of the wrong length.
    pub fn from_params(config: &MlpConfig, theta: &[f64], x: &DMatrix<f64>) -> Result<Self> {
        check_inputs(x, config.widths[0])?;
        let host = HostMlp::<T>::new(config, theta)?;
        let o = *config.widths.last().expect("an MLP has layers");
        Ok(Self::from_factors(host.factors(row_major(x)), o))
    }

    pub(crate) fn from_factors(f: HostFactors<T>, o: usize) -> Self {
        let rows = f.n * o;
        let mut low_cols = 0;
        let mut kr_layers = Vec::new();
        let mut hadamard = Vec::new();
        for (a, delta) in f.inputs.into_iter().zip(f.sens) {
            let (h_in, h_out) = (a.cols, delta.cols);
            // Ã with its rows repeated per output.
            let tilde = |a: &RowMajor<T>| {
                let mut data = Vec::with_capacity(rows * (h_in + 1));
                for row in a.data.chunks_exact(h_in.max(1)).take(f.n) {
                    for _ in 0..o {
                        data.extend_from_slice(&row[..h_in]);
                        data.push(T::one());
                    }
                }
                RowMajor {
                    data,
                    cols: h_in + 1,
                }
            };
            if h_out * (h_in + 1) <= h_out + h_in + 1 + HADAMARD_COST {
                low_cols += h_out * (h_in + 1);
                kr_layers.push((tilde(&a), delta));
            } else {
                hadamard.push(HadamardLayer {
                    inputs: tilde(&a),
                    delta,
                });
            }
        }
        let low_rank = (low_cols > 0).then(|| {
            // Row r of G: per layer, Δ[r] ⊗ Ã[r], written in place.
            let mut data = vec![T::zero(); rows * low_cols];
            for (r, out) in data.chunks_exact_mut(low_cols).enumerate() {
                let mut at = 0;
                for (a, delta) in &kr_layers {
                    let a_row = &a.data[r * a.cols..(r + 1) * a.cols];
                    let d_row = &delta.data[r * delta.cols..(r + 1) * delta.cols];
                    let block = &mut out[at..at + d_row.len() * a.cols];
                    for (&dv, chunk) in d_row.iter().zip(block.chunks_exact_mut(a.cols)) {
                        for (o, &av) in chunk.iter_mut().zip(a_row) {
                            *o = dv * av;
                        }
                    }
                    at += block.len();
                }
            }
            RowMajor {
                data,
                cols: low_cols,
            }
        });
        Self {
            rows,
            low_rank,
            hadamard,
        }
    }

    /// Rows of $J$ ($n o$), the side of $K(X, X)$.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The width of the shared Khatri–Rao factor and, per Hadamard layer, the inner sizes of
    /// its two products.
    pub fn inner_sizes(&self) -> (usize, Vec<(usize, usize)>) {
        (
            self.low_rank.as_ref().map_or(0, |g| g.cols),
            self.hadamard
                .iter()
                .map(|l| (l.delta.cols, l.inputs.cols))
                .collect(),
        )
    }

    /// Flops of the matrix products of an $r\times c$ kernel block:
    /// $2rc\,(w + \sum_{\text{Hadamard } l} (h_l + h_{l-1} + 1))$, $w$ the Khatri–Rao width.
    pub fn block_flops(&self, r: usize, c: usize) -> f64 {
        let (w, had) = self.inner_sizes();
        let inner: usize = w + had.iter().map(|(a, b)| a + b).sum::<usize>();
        2.0 * (r * c * inner) as f64
    }

    fn check_same_layers(&self, other: &Self) -> Result<()> {
        if self.inner_sizes() != other.inner_sizes() {
            return Err(OpsError::ShapeMismatch {
                what: "structured factors of two input sets (not the same network)".into(),
                expected: vec![self.hadamard.len()],
                found: vec![other.hadamard.len()],
            });
        }
        Ok(())
    }

    /// $K(X_1, X_2)$ rows `rows = (start, len)` by columns `cols = (start, len)`, written
    /// into the column-major block `dst` (first entry at `dst[0]`, column stride `ld`).
    /// `scratch` grows as needed.
    fn block_into(
        &self,
        other: &Self,
        rows: (usize, usize),
        cols: (usize, usize),
        dst: &mut [T],
        ld: usize,
        scratch: &mut (Vec<T>, Vec<T>),
    ) {
        let (r, c) = (rows.1, cols.1);
        match (&self.low_rank, &other.low_rank) {
            (Some(g1), Some(g2)) => gram_into(dst, ld, g1, rows, g2, cols),
            _ => (0..c).for_each(|j| dst[j * ld..j * ld + r].fill(T::zero())),
        }
        if self.hadamard.is_empty() {
            return;
        }
        // Row blocks of at most ROW_BLOCK rows: the two Hadamard factors of a block stay in
        // cache for the elementwise product, and the scratch stays small.
        let (s1, s2) = scratch;
        let rb = ROW_BLOCK.min(r);
        if s1.len() < rb * c {
            s1.resize(rb * c, T::zero());
            s2.resize(rb * c, T::zero());
        }
        for i0 in (0..r).step_by(ROW_BLOCK) {
            let h = ROW_BLOCK.min(r - i0);
            let (t1, t2) = (&mut s1[..h * c], &mut s2[..h * c]);
            let block_rows = (rows.0 + i0, h);
            for (l1, l2) in self.hadamard.iter().zip(&other.hadamard) {
                gram_into(t1, h, &l1.delta, block_rows, &l2.delta, cols);
                gram_into(t2, h, &l1.inputs, block_rows, &l2.inputs, cols);
                for j in 0..c {
                    let (a, b) = (&t1[j * h..(j + 1) * h], &t2[j * h..(j + 1) * h]);
                    let out = &mut dst[j * ld + i0..j * ld + i0 + h];
                    hadamard_add_wide(out, a, b);
                }
            }
        }
    }

    /// The dense kernel $K(X_1, X_2)$ (`[n_1 o, n_2 o]`) between `self`'s inputs and
    /// `other`'s (factors of the same network).
    pub fn cross(&self, other: &Self) -> Result<DMatrix<T>> {
        self.check_same_layers(other)?;
        let (n1, n2) = (self.rows, other.rows);
        let mut k = DMatrix::zeros(n1, n2);
        let mut scratch = (Vec::new(), Vec::new());
        self.block_into(other, (0, n1), (0, n2), k.as_mut_slice(), n1, &mut scratch);
        Ok(k)
    }

    /// Writes the lower triangle of $K(X, X)$ into `k` (`[n o, n o]`, column-major), by
    /// column panels of `panel` columns, computed in parallel; the strict upper triangle of each panel's diagonal
    /// block gets its (symmetric) values too, the rest of the upper triangle is left alone.
    pub fn lower_into(&self, k: &mut DMatrix<T>, panel: usize) -> Result<()> {
        let n = self.rows;
        if k.shape() != (n, n) {
            return Err(OpsError::ShapeMismatch {
                what: "kernel matrix".into(),
                expected: vec![n, n],
                found: vec![k.nrows(), k.ncols()],
            });
        }
        let pb = panel.max(1);
        if n <= pb {
            // One panel: no task to share (handing it to rayon's pool costs a wake-up).
            let mut scratch = (Vec::new(), Vec::new());
            self.block_into(self, (0, n), (0, n), k.as_mut_slice(), n, &mut scratch);
            return Ok(());
        }
        // Column panels are disjoint slices of the column-major storage: one task each, taken
        // one at a time (their heights fall from n to one panel), scratch kept per worker.
        k.as_mut_slice()
            .par_chunks_mut(pb * n.max(1))
            .enumerate()
            .with_max_len(1)
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |scratch, (p, chunk)| {
                    let j = p * pb;
                    let (r, b) = (n - j, pb.min(n - j));
                    // Block K[j.., j..j+b]: row j of the panel, column stride n.
                    self.block_into(self, (j, r), (j, b), &mut chunk[j..], n, scratch);
                },
            );
        Ok(())
    }

    /// The full symmetric $K(X, X)$ (`[n o, n o]`): its lower triangle by [`Self::lower_into`]
    /// (half the products of [`Self::cross`] with itself), mirrored.
    pub fn symmetric(&self) -> Result<DMatrix<T>> {
        let mut k = DMatrix::zeros(self.rows, self.rows);
        self.lower_into(&mut k, panel_for(self.rows))?;
        k.fill_upper_triangle_with_lower_triangle();
        Ok(k)
    }

    /// The diagonal of $K(X, X)$: $K_{ii} = \sum_l \lVert \Delta_l\[i\]\rVert^2 \lVert \tilde
    /// A_l\[i\]\rVert^2$ (and $\lVert G\[i\]\rVert^2$ for the Khatri–Rao layers).
    pub fn diagonal(&self) -> Vec<T> {
        let sq = |m: &RowMajor<T>, i: usize| {
            m.data[i * m.cols..(i + 1) * m.cols]
                .iter()
                .fold(T::zero(), |s, v| s + *v * *v)
        };
        (0..self.rows)
            .map(|i| {
                let lr = self.low_rank.as_ref().map_or(T::zero(), |g| sq(g, i));
                self.hadamard
                    .iter()
                    .fold(lr, |s, l| s + sq(&l.delta, i) * sq(&l.inputs, i))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JacobianParams;
    use crate::convert::{from_dmatrix_f64, to_dmatrix_f64};
    use crate::dense::MlpJacobian;
    use crate::ntk::ntk_matrix;
    use burn_ndarray::NdArray;

    fn setup<B: Backend>(
        widths: &[usize],
        act: Activation,
        head: Head,
        n: usize,
        seed: u64,
    ) -> (Mlp<B>, DMatrix<f64>) {
        let dev = Default::default();
        let mlp = MlpConfig::new(widths)
            .with_activation(act)
            .with_head(head)
            .init::<B>(seed, &dev)
            .unwrap();
        let x = DMatrix::from_fn(n, widths[0], |i, j| {
            ((i * 7 + j * 3 + seed as usize) as f64 * 0.41).sin() * 2.0
        });
        (mlp, x)
    }

    fn reference<B: Backend>(mlp: &Mlp<B>, x1: &DMatrix<f64>, x2: &DMatrix<f64>) -> DMatrix<f64> {
        let dev = Default::default();
        let j = |x: &DMatrix<f64>| {
            MlpJacobian::new(
                mlp.clone(),
                from_dmatrix_f64(x, &dev),
                JacobianParams::default(),
            )
            .unwrap()
        };
        to_dmatrix_f64(ntk_matrix(&j(x1), &j(x2)).unwrap())
    }

    #[test]
    fn host_kernel_equals_the_structured_kernel_in_every_form() {
        // Layers in both forms (1 → 12 and 12 → 9 Hadamard, 9 → 1 Khatri–Rao; 2 → 1
        // Khatri–Rao only), products with small and large sides, every activation (GELU with
        // libm's erf) and both heads.
        let cases = [
            (vec![1, 12, 9, 1], Activation::Tanh, Head::Plain),
            (vec![2, 1], Activation::Tanh, Head::Plain),
            (vec![3, 8, 2], Activation::Relu, Head::Plain),
            (vec![4, 7, 7, 1], Activation::Elu, Head::Plain),
            (vec![2, 9, 1], Activation::Sigmoid, Head::Plain),
            (vec![2, 6, 3], Activation::Softplus, Head::Plain),
            (vec![2, 8, 1], Activation::Gelu, Head::Plain),
            (
                vec![2, 6, 2],
                Activation::Tanh,
                Head::Heteroscedastic { min_scale: 1e-5 },
            ),
        ];
        for (widths, act, head) in cases {
            let (mlp, x1) = setup::<NdArray<f64>>(&widths, act, head, 23, 1);
            let (_, x2) = setup::<NdArray<f64>>(&widths, act, head, 11, 2);
            let (h1, h2) = (
                HostNtk::new(&mlp, &x1).unwrap(),
                HostNtk::new(&mlp, &x2).unwrap(),
            );
            let k12 = reference(&mlp, &x1, &x2);
            let k = h1.cross(&h2).unwrap();
            assert!(
                (&k - &k12).norm() <= 1e-13 * k12.norm(),
                "{widths:?} {act:?}: {:e}",
                (&k - &k12).norm() / k12.norm()
            );
            let kk = reference(&mlp, &x1, &x1);
            for panel in [1, 5, 64] {
                let mut lower = DMatrix::from_element(h1.rows(), h1.rows(), f64::NAN);
                h1.lower_into(&mut lower, panel).unwrap();
                for c in 0..lower.ncols() {
                    for r in c..lower.nrows() {
                        assert!((lower[(r, c)] - kk[(r, c)]).abs() <= 1e-13 * kk.norm());
                    }
                }
            }
            for (i, d) in h1.diagonal().iter().enumerate() {
                assert!((d - kk[(i, i)]).abs() <= 1e-12 * kk[(i, i)].abs());
            }
        }
    }

    #[test]
    fn from_params_equals_new_gelu_included() {
        let (mlp, x) = setup::<NdArray<f64>>(&[2, 9, 6, 1], Activation::Tanh, Head::Plain, 40, 5);
        let a = HostNtk::<f64>::new(&mlp, &x).unwrap();
        let b = HostNtk::<f64>::from_params(mlp.config(), &mlp.flatten_f64(), &x).unwrap();
        assert_eq!(a.symmetric().unwrap(), b.symmetric().unwrap());
        let short = &mlp.flatten_f64()[1..];
        assert!(HostNtk::<f64>::from_params(mlp.config(), short, &x).is_err());
        // GELU on the host (libm's erf) against the backend's structured kernel
        let gelu = mlp.config().clone().with_activation(Activation::Gelu);
        let h = HostNtk::<f64>::from_params(&gelu, &mlp.flatten_f64(), &x).unwrap();
        let net = gelu
            .with_params::<NdArray<f64>>(&mlp.flatten_f64(), &Default::default())
            .unwrap();
        let jac = crate::dense::MlpJacobian::new(
            net,
            crate::convert::from_dmatrix_f64(&x, &Default::default()),
            Default::default(),
        )
        .unwrap();
        let want = crate::convert::to_dmatrix_f64(crate::ntk::ntk_matrix(&jac, &jac).unwrap());
        let got = h.symmetric().unwrap();
        assert!((&got - &want).amax() < 1e-13 * want.amax());
        let wide = DMatrix::zeros(3, 5);
        assert!(HostNtk::<f64>::from_params(mlp.config(), &mlp.flatten_f64(), &wide).is_err());
    }

    #[test]
    fn symmetric_kernel_equals_the_cross_kernel_with_itself() {
        let (mlp, x) = setup::<NdArray<f64>>(&[2, 9, 6, 1], Activation::Tanh, Head::Plain, 300, 4);
        let h = HostNtk::<f64>::new(&mlp, &x).unwrap();
        let (full, cross) = (h.symmetric().unwrap(), h.cross(&h).unwrap());
        assert!((&full - &cross).amax() < 1e-12 * cross.amax());
        assert_eq!(full, full.transpose());
    }

    #[test]
    fn host_kernel_in_f32_and_errors() {
        let (mlp, x) = setup::<NdArray<f32>>(&[2, 10, 10, 1], Activation::Tanh, Head::Plain, 17, 3);
        let h = HostNtk::new(&mlp, &x).unwrap();
        let k = h.cross(&h).unwrap().map(f64::from);
        let k64 = reference(&mlp, &x, &x);
        assert!((&k - &k64).norm() <= 1e-5 * k64.norm());
        // The host pass may run in f64 on an f32 backend's network.
        let h64 = HostNtk::<f64>::new(&mlp, &x).unwrap();
        assert!((h64.cross(&h64).unwrap() - &k64).norm() <= 1e-5 * k64.norm());
        let mut wrong = DMatrix::<f32>::zeros(3, 3);
        assert!(h.lower_into(&mut wrong, 4).is_err());
        let (other_mlp, _) =
            setup::<NdArray<f32>>(&[2, 10, 1], Activation::Tanh, Head::Plain, 5, 3);
        let other = HostNtk::new(&other_mlp, &x).unwrap();
        assert!(h.cross(&other).is_err());
        // Bad inputs: wrong width, no rows, NaN.
        assert!(matches!(
            HostNtk::<f32>::new(&mlp, &DMatrix::zeros(4, 3)),
            Err(OpsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            HostNtk::<f32>::new(&mlp, &DMatrix::zeros(0, 2)),
            Err(OpsError::Empty { .. })
        ));
        let mut bad = x.clone();
        bad[(4, 1)] = f64::NAN;
        assert!(matches!(
            HostNtk::<f32>::new(&mlp, &bad),
            Err(OpsError::NonFinite { .. })
        ));
    }
}
