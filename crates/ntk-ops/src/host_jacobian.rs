//! Jacobian products of an MLP on the host: one matrix product per layer on cached
//! structured factors, for the CPU backends.
//!
//! With $A_l$ (`[n, h_{l-1}]`) the inputs of Dense layer $l$ and $\Delta_l$ (`[n·o, h_l]`)
//! the output sensitivities (as in [`HostNtk`](crate::HostNtk)), row $r = (i, j)$ of $J$
//! restricted to layer $l$'s weight $W_l$ and bias $b_l$ is
//! $\Delta_l\[r\] \otimes [A_l\[i\], 1]$. So, per layer,
//! $$ (Jv)_r \mathrel{+}= \Delta_l\[r\] \cdot \big(\dot W_l A_l\[i\] + \dot b_l\big), \qquad
//! \dot W_l \mathrel{+}= U_l^\top A_l,\ \dot b_l \mathrel{+}= U_l^\top \mathbf 1
//! \ \text{ with } U_l\[i\] = \textstyle\sum_j u_{(i,j)} \Delta_l[(i,j)]$$
//! for $J^\top u$: one product of $2 n h_{l-1} h_l$ flops each way and row-wise dot
//! products, $2np$ flops per product in all, against about three times that for a pass
//! that recomputes the activations ([`MlpJacobian`](crate::dense::MlpJacobian) without its cache,
//! or JAX's `jvp`/`vjp`). Rows are processed in chunks under
//! [`JacobianParams::memory_budget`]; the factors of all rows are kept when they fit in
//! half of it.
//!
//! ```
//! use burn_ndarray::NdArray;
//! use ntk_ops::{Execution, Jacobian, JacobianOperator, JacobianParams, MlpConfig, convert};
//!
//! let dev = Default::default();
//! let mlp = MlpConfig::new(&[2, 16, 16, 1]).init::<NdArray<f64>>(0, &dev)?;
//! let x = convert::tensor_from_f64::<NdArray<f64>>((0..40).map(|i| (i as f64 * 0.3).sin()).collect(), 20, 2, &dev);
//! let on = |execution| JacobianParams { execution, ..Default::default() };
//! let host = Jacobian::new(mlp.clone(), x.clone(), on(Execution::DenseHost))?;
//! let tensor = Jacobian::new(mlp, x, on(Execution::DenseTensor))?;
//! let v = convert::tensor_from_f64::<NdArray<f64>>((0..host.n_params()).map(|i| (i as f64).cos()).collect(), host.n_params(), 1, &dev);
//! let (a, b) = (host.jvp(v.clone())?, tensor.jvp(v)?);
//! assert!((a - b).abs().max().into_scalar() < 1e-12);
//! # Ok::<(), ntk_ops::OpsError>(())
//! ```

use burn::prelude::Backend;
use burn::tensor::Tensor;
use krylov::LinearOperator;
use nalgebra::{DMatrix, Dyn, RealField};
use rayon::prelude::*;
use std::sync::Arc;

use crate::chunk::{RowCost, RowPlan};
use crate::convert::{check_finite, check_shape, tensor_from_elems, to_vec_elem};
use crate::error::{OpsError, Result};
use crate::host_ntk::{HostFactors, HostMlp, HostNtk, RowMajor, View, ViewMut};
use crate::jacobian::{JacobianOperator, JacobianParams, check_output_block, check_param_block};
use crate::matmul;
use crate::mlp::Mlp;

/// Rows per parallel block of [`HostJacobian`]'s $Jv$.
const JVP_ROWS: usize = 128;

/// Where one Dense layer's parameters sit in the flat vector (read from
/// [`MlpConfig::layout`](crate::MlpConfig::layout)).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Offset of $W$ (`[out, in]`, row-major); $b$ follows it.
    offset: usize,
    inputs: usize,
    outputs: usize,
}

/// Jacobian products of an [`Mlp`] on the host (see the [module docs](self)), for backends
/// whose float type is `f32` or `f64` on the CPU; every [`crate::Activation`].
#[derive(Debug, Clone)]
pub struct HostJacobian<B: Backend> {
    mlp: Mlp<B>,
    host: Arc<HostMlp<B::FloatElem>>,
    x: Arc<RowMajor<B::FloatElem>>,
    n: usize,
    o: usize,
    p: usize,
    slots: Vec<Slot>,
    chunk_rows: usize,
    cache: Option<Arc<HostFactors<B::FloatElem>>>,
}

impl<B: Backend> HostJacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    /// The operator of `mlp` at the inputs `x` (`[n, d]`).
    ///
    /// Fails on a shape mismatch, NaN/Inf or no rows in `x`.
    pub fn new(mlp: Mlp<B>, x: Tensor<B, 2>, options: JacobianParams) -> Result<Self> {
        let [n, d] = x.dims();
        check_shape(&x, [n, mlp.n_inputs()], "inputs x")?;
        if n == 0 {
            return Err(OpsError::Empty {
                what: "no input points".into(),
            });
        }
        check_finite(&x, "inputs x")?;
        let config = mlp.config().clone();
        let host = HostMlp::new(&config, &mlp.flatten_f64())?;
        // The `state_dict` layout: per layer the weight `[out, in]`, then the bias.
        let layout = config.layout();
        let slots: Vec<Slot> = layout
            .specs()
            .chunks_exact(2)
            .map(|wb| Slot {
                offset: wb[0].offset,
                inputs: wb[0].shape[1],
                outputs: wb[0].shape[0],
            })
            .collect();
        let o = mlp.n_outputs();
        // Factors per row: every layer's inputs, and o rows of every layer's sensitivities;
        // a product's work per row and column: a layer's widest activation, twice.
        let per_row: usize = slots.iter().map(|s| s.inputs + o * s.outputs).sum();
        let widest = slots
            .iter()
            .map(|s| s.inputs.max(s.outputs))
            .max()
            .unwrap_or(1);
        let elem = std::mem::size_of::<B::FloatElem>();
        options.check()?;
        let plan = RowPlan::new(
            n,
            RowCost {
                saved: per_row * elem,
                work: 2 * widest * elem,
            },
            options,
        );
        let chunk_rows = plan.product_rows(1, false);
        let mut op = Self {
            x: Arc::new(RowMajor {
                data: to_vec_elem(x),
                cols: d,
            }),
            mlp,
            host: Arc::new(host),
            n,
            o,
            p: layout.n_params(),
            slots,
            chunk_rows,
            cache: None,
        };
        // the host products read cached factors as one chunk
        if plan.caches() && plan.cache_rows() >= n {
            op.cache = Some(Arc::new(op.factors(0, n)));
        }
        Ok(op)
    }

    /// The network.
    #[cfg(test)]
    pub fn mlp(&self) -> &Mlp<B> {
        &self.mlp
    }

    /// The inputs $X$ (`[n, d]`), as a new tensor.
    pub fn inputs(&self) -> Tensor<B, 2> {
        tensor_from_elems::<B, 2>(
            self.x.data.clone(),
            [self.n, self.x.cols],
            &self.mlp.device(),
        )
    }

    /// The explicit Jacobian (`[n·o, p]`): row $r = (i, j)$ holds
    /// $\Delta_l\[r\] \otimes A_l\[i\]$ at each weight and $\Delta_l\[r\]$ at each bias. For small
    /// problems ($n o p$ numbers).
    pub fn jacobian(&self) -> Result<Tensor<B, 2>> {
        let (o, p) = (self.o, self.p);
        let mut jac = vec![nalgebra::zero::<B::FloatElem>(); self.n * o * p];
        self.for_chunks(|start, f| {
            for (l, s) in self.slots.iter().enumerate() {
                let (h_in, h_out) = (s.inputs, s.outputs);
                let (a, delta) = (&f.inputs[l], &f.sens[l]);
                for r in 0..f.n * o {
                    let row = &mut jac[(start * o + r) * p..(start * o + r + 1) * p];
                    let ai = &a.data[(r / o) * h_in..(r / o + 1) * h_in];
                    let dr = &delta.data[r * h_out..(r + 1) * h_out];
                    for (q, &dq) in dr.iter().enumerate() {
                        let w = &mut row[s.offset + q * h_in..s.offset + (q + 1) * h_in];
                        for (e, &av) in w.iter_mut().zip(ai) {
                            *e = dq * av;
                        }
                        row[s.offset + h_out * h_in + q] = dq;
                    }
                }
            }
        });
        Ok(tensor_from_elems::<B, 2>(
            jac,
            [self.n * o, p],
            &self.mlp.device(),
        ))
    }

    /// $JV$ for a host block `v` (`[p, k]`, one parameter vector per column), with no tensor
    /// in between: the product a solver on host blocks ([`krylov::Block`] for `DMatrix`)
    /// calls. Fails on a wrong row count, no columns, or NaN/Inf in `v`.
    pub fn jvp_host(&self, v: &DMatrix<B::FloatElem>) -> Result<DMatrix<B::FloatElem>> {
        check_host_block(v, self.p, "v")?;
        Ok(self.jvp_cols(v))
    }

    /// $J^\top U$ for a host block `u` (`[n·o, k]`), as [`Self::jvp_host`].
    pub fn vjp_host(&self, u: &DMatrix<B::FloatElem>) -> Result<DMatrix<B::FloatElem>> {
        check_host_block(u, self.n * self.o, "u")?;
        Ok(self.vjp_cols(u))
    }

    /// $JV$, column by column, with no checks (`v` has $p$ rows).
    fn jvp_cols(&self, v: &DMatrix<B::FloatElem>) -> DMatrix<B::FloatElem> {
        let mut out = DMatrix::zeros(self.n * self.o, v.ncols());
        for (vc, mut oc) in v.column_iter().zip(out.column_iter_mut()) {
            self.jvp_one(vc.as_slice(), oc.as_mut_slice());
        }
        out
    }

    /// $J^\top U$, column by column, with no checks (`u` has $n o$ rows).
    fn vjp_cols(&self, u: &DMatrix<B::FloatElem>) -> DMatrix<B::FloatElem> {
        let mut g = DMatrix::zeros(self.p, u.ncols());
        for (uc, mut gc) in u.column_iter().zip(g.column_iter_mut()) {
            self.vjp_one(uc.as_slice(), gc.as_mut_slice());
        }
        g
    }

    /// The structured NTK factors of all rows, from the cached factors when there are
    /// (no second forward and backward pass).
    pub(crate) fn host_ntk(&self) -> HostNtk<B::FloatElem> {
        let factors = match &self.cache {
            Some(all) => HostFactors::clone(all),
            None => self.factors(0, self.n),
        };
        HostNtk::from_factors(factors, self.o)
    }

    /// $K_{rr} = \sum_l \lVert \Delta_l\[r\]\rVert^2 (\lVert A_l\[i\]\rVert^2 + 1)$, chunk by chunk
    /// (factors recomputed per chunk when they are not cached).
    pub(crate) fn diagonal(&self) -> Tensor<B, 1> {
        let o = self.o;
        let mut diag = vec![nalgebra::zero::<B::FloatElem>(); self.n * o];
        let sq = |v: &[B::FloatElem]| {
            v.iter()
                .fold(nalgebra::zero::<B::FloatElem>(), |s, x| s + *x * *x)
        };
        self.for_chunks(|start, f| {
            let part = &mut diag[start * o..(start + f.n) * o];
            for (a, delta) in f.inputs.iter().zip(&f.sens) {
                let (h_in, h_out) = (a.cols, delta.cols);
                for (r, d) in part.iter_mut().enumerate() {
                    let i = r / o;
                    let arow =
                        sq(&a.data[i * h_in..(i + 1) * h_in]) + nalgebra::one::<B::FloatElem>();
                    *d += sq(&delta.data[r * h_out..(r + 1) * h_out]) * arow;
                }
            }
        });
        let dev = self.mlp.device();
        let len = diag.len();
        tensor_from_elems::<B, 1>(diag, [len], &dev)
    }

    /// Whether the factors of all rows are kept between products.
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// The factors of rows `start..start + len`.
    fn factors(&self, start: usize, len: usize) -> HostFactors<B::FloatElem> {
        let d = self.x.cols;
        self.host.factors(RowMajor {
            data: self.x.data[start * d..(start + len) * d].to_vec(),
            cols: d,
        })
    }

    /// Calls `f(start, factors)` for each chunk of rows.
    fn for_chunks(&self, mut f: impl FnMut(usize, &HostFactors<B::FloatElem>)) {
        match &self.cache {
            Some(all) => f(0, all),
            None => {
                for start in (0..self.n).step_by(self.chunk_rows) {
                    let len = self.chunk_rows.min(self.n - start);
                    f(start, &self.factors(start, len));
                }
            }
        }
    }

    /// $J v$ for one parameter vector, added into `out` (`n·o` entries): blocks of
    /// [`JVP_ROWS`] rows in parallel, so that each block's $Z$ stays in cache for the dots.
    fn jvp_one(&self, v: &[B::FloatElem], out: &mut [B::FloatElem]) {
        let o = self.o;
        self.for_chunks(|start, f| {
            let len = f.n;
            out[start * o..(start + len) * o]
                .par_chunks_mut(JVP_ROWS * o)
                .enumerate()
                .for_each(|(bi, ob)| {
                    let (r0, h) = (bi * JVP_ROWS, ob.len() / o);
                    let mut z = Vec::new();
                    for (l, s) in self.slots.iter().enumerate() {
                        let (h_in, h_out) = (s.inputs, s.outputs);
                        let w = &v[s.offset..s.offset + h_out * h_in];
                        let b = &v[s.offset + h_out * h_in..s.offset + h_out * h_in + h_out];
                        // Z = A Ẇᵀ + 1 ḃᵀ, [h, h_out].
                        z.clear();
                        for _ in 0..h {
                            z.extend_from_slice(b);
                        }
                        let wt = View::from_slice_with_strides_generic(
                            w,
                            Dyn(h_in),
                            Dyn(h_out),
                            Dyn(1),
                            Dyn(h_in),
                        );
                        let mut zv = ViewMut::from_slice_with_strides_generic(
                            &mut z,
                            Dyn(h),
                            Dyn(h_out),
                            Dyn(h_out),
                            Dyn(1),
                        );
                        matmul::gemm(
                            nalgebra::one::<B::FloatElem>(),
                            &mut zv,
                            nalgebra::one::<B::FloatElem>(),
                            &f.inputs[l].rows_view(r0, h),
                            &wt,
                        );
                        let delta = &f.sens[l].data[r0 * o * h_out..(r0 + h) * o * h_out];
                        row_dots_wide(ob, delta, &z, h_out, o);
                    }
                });
        });
    }

    /// $J^\top u$ for one output vector (`n·o` entries), written into `g` (`p` entries).
    fn vjp_one(&self, u: &[B::FloatElem], g: &mut [B::FloatElem]) {
        let o = self.o;
        g.fill(nalgebra::zero::<B::FloatElem>());
        self.for_chunks(|start, f| {
            let len = f.n;
            let uc = &u[start * o..(start + len) * o];
            for (l, s) in self.slots.iter().enumerate() {
                let (h_in, h_out) = (s.inputs, s.outputs);
                let delta = &f.sens[l];
                if o == 1 && h_in < h_out {
                    // Ẇ += Δᵀ (diag(u) A), ḃ += Δᵀ u: the scaled copy is the narrower side.
                    let a = &f.inputs[l];
                    let mut sa = a.data.clone();
                    for (row, &ui) in sa.chunks_exact_mut(h_in.max(1)).zip(uc) {
                        row.iter_mut().for_each(|e| *e *= ui);
                    }
                    let sa = RowMajor {
                        data: sa,
                        cols: h_in,
                    };
                    let (gw, gb) =
                        g[s.offset..s.offset + h_out * h_in + h_out].split_at_mut(h_out * h_in);
                    let one = nalgebra::one::<B::FloatElem>();
                    let dt = delta.rows_view_t(0, len);
                    let mut gwv = ViewMut::from_slice_with_strides_generic(
                        gw,
                        Dyn(h_out),
                        Dyn(h_in),
                        Dyn(h_in),
                        Dyn(1),
                    );
                    matmul::gemm(one, &mut gwv, one, &dt, &sa.rows_view(0, len));
                    let mut gbv = ViewMut::from_slice_with_strides_generic(
                        gb,
                        Dyn(h_out),
                        Dyn(1),
                        Dyn(1),
                        Dyn(1),
                    );
                    let uv =
                        View::from_slice_with_strides_generic(uc, Dyn(len), Dyn(1), Dyn(1), Dyn(1));
                    matmul::gemm(one, &mut gbv, one, &dt, &uv);
                    continue;
                }
                // U[i] = Σ_j u_(i,j) Δ[(i,j)], [len, h_out].
                let mut us = vec![nalgebra::zero::<B::FloatElem>(); len * h_out];
                combine_rows_wide(&mut us, &delta.data, uc, h_out, o);
                let (gw, gb) =
                    g[s.offset..s.offset + h_out * h_in + h_out].split_at_mut(h_out * h_in);
                let mut gwv = ViewMut::from_slice_with_strides_generic(
                    gw,
                    Dyn(h_out),
                    Dyn(h_in),
                    Dyn(h_in),
                    Dyn(1),
                );
                let ut = View::from_slice_with_strides_generic(
                    &us,
                    Dyn(h_out),
                    Dyn(len),
                    Dyn(1),
                    Dyn(h_out),
                );
                matmul::gemm(
                    nalgebra::one::<B::FloatElem>(),
                    &mut gwv,
                    nalgebra::one::<B::FloatElem>(),
                    &ut,
                    &f.inputs[l].rows_view(0, len),
                );
                for row in us.chunks_exact(h_out) {
                    for (acc, v) in gb.iter_mut().zip(row) {
                        *acc += *v;
                    }
                }
            }
        });
    }
}

/// Checks a host block: `rows` rows, at least one column, finite.
fn check_host_block<T: RealField + Copy>(m: &DMatrix<T>, rows: usize, what: &str) -> Result<()> {
    if m.nrows() != rows {
        return Err(OpsError::ShapeMismatch {
            what: what.to_string(),
            expected: vec![rows, m.ncols()],
            found: vec![m.nrows(), m.ncols()],
        });
    }
    if m.ncols() == 0 {
        return Err(OpsError::Empty {
            what: format!("{what} has no columns"),
        });
    }
    match m.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(OpsError::NonFinite {
            what: what.to_string(),
            // Row-major, as the tensor checks report it.
            index: Some((i % rows) * m.ncols() + i / rows),
        }),
    }
}

/// The Gram matrix $J^\top J$ ($p\times p$) of a [`Jacobian`](crate::Jacobian) on the host
/// path as an operator on host blocks: $V \mapsto J^\top (J V)$ by the products of
/// [`Jacobian::jvp_host`](crate::Jacobian::jvp_host) and
/// [`Jacobian::vjp_host`](crate::Jacobian::vjp_host) without their input checks (a non-finite entry propagates), so
/// that a parameter-space solver's $p \times k$ vectors never pass through tensors (the host
/// counterpart of [`GramOperator`](crate::GramOperator)).
#[derive(Debug, Clone)]
pub struct HostGram<B: Backend>(HostJacobian<B>);

impl<B: Backend> HostGram<B>
where
    B::FloatElem: RealField + Copy,
{
    /// The Gram operator of `jac`, which must run on the host path
    /// ([`Execution::DenseHost`](crate::Execution::DenseHost)); a typed error otherwise.
    pub fn new(jac: crate::Jacobian<B>) -> Result<Self> {
        let path = jac.execution();
        jac.into_host().map(Self).ok_or_else(|| {
            OpsError::InvalidConfig(format!(
                "HostGram needs a Jacobian on the host path, not {path:?}"
            ))
        })
    }
}

impl<B: Backend> LinearOperator<DMatrix<B::FloatElem>> for HostGram<B>
where
    B::FloatElem: krylov::Scalar,
{
    fn nrows(&self) -> usize {
        self.0.p
    }
    fn ncols(&self) -> usize {
        self.0.p
    }
    /// $J^\top J X$. Non-finite entries of `x` propagate into the result (where a solver
    /// reports them) instead of failing here.
    ///
    /// # Panics
    /// If `x` does not have $p$ rows (the operator's contract).
    fn apply(&self, x: &DMatrix<B::FloatElem>) -> DMatrix<B::FloatElem> {
        assert_eq!(
            x.nrows(),
            self.0.p,
            "HostGram::apply: a block of {} rows for an operator of size {}",
            x.nrows(),
            self.0.p
        );
        self.0.vjp_cols(&self.0.jvp_cols(x))
    }
}

/// `out\[r\] += Δ\[r\] · Z[r / o]` for every row $r$ ($\Delta$ `[·, h]`, $Z$ `[·, h]`).
fn row_dots_wide<T: RealField + Copy>(out: &mut [T], delta: &[T], z: &[T], h: usize, o: usize) {
    crate::wide!([RealField + Copy] row_dots(out: &mut [T], delta: &[T], z: &[T], h: usize, o: usize) -> ());
}

#[inline(always)]
fn row_dots<T: RealField + Copy>(out: &mut [T], delta: &[T], z: &[T], h: usize, o: usize) {
    for (r, acc) in out.iter_mut().enumerate() {
        let d = &delta[r * h..(r + 1) * h];
        let zr = &z[(r / o) * h..(r / o + 1) * h];
        let mut part = [T::zero(); 8];
        for (dc, zc) in d.chunks_exact(8).zip(zr.chunks_exact(8)) {
            for q in 0..8 {
                part[q] += dc[q] * zc[q];
            }
        }
        let tail = h - h % 8;
        let mut s = part.iter().fold(T::zero(), |a, b| a + *b);
        for q in tail..h {
            s += d[q] * zr[q];
        }
        *acc += s;
    }
}

/// `us\[i\] = Σ_j u[i·o + j] Δ[i·o + j]` ($\Delta$ `[·, h]`).
fn combine_rows_wide<T: RealField + Copy>(us: &mut [T], delta: &[T], u: &[T], h: usize, o: usize) {
    crate::wide!([RealField + Copy] combine_rows(us: &mut [T], delta: &[T], u: &[T], h: usize, o: usize) -> ());
}

#[inline(always)]
fn combine_rows<T: RealField + Copy>(us: &mut [T], delta: &[T], u: &[T], h: usize, o: usize) {
    for (r, &ur) in u.iter().enumerate() {
        let i = r / o;
        let dst = &mut us[i * h..(i + 1) * h];
        for (t, d) in dst.iter_mut().zip(&delta[r * h..(r + 1) * h]) {
            *t += ur * *d;
        }
    }
}

impl<B: Backend> JacobianOperator<B> for HostJacobian<B>
where
    B::FloatElem: RealField + Copy,
{
    fn n_points(&self) -> usize {
        self.n
    }

    fn n_outputs(&self) -> usize {
        self.o
    }

    fn n_params(&self) -> usize {
        self.p
    }

    fn device(&self) -> B::Device {
        self.mlp.device()
    }

    fn outputs(&self) -> Result<Tensor<B, 2>> {
        let dev = self.mlp.device();
        // A plain head's outputs are the last layer's, kept from the host pass.
        let last = self.cache.as_ref().and_then(|f| f.last.as_ref());
        if let (crate::Head::Plain, Some(z)) = (self.mlp.config().head, last) {
            return Ok(tensor_from_elems::<B, 2>(
                z.data.clone(),
                [self.n, self.o],
                &dev,
            ));
        }
        Ok(self.mlp.forward(self.inputs()))
    }

    fn jvp(&self, v: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        check_param_block(&v, self.p)?;
        let k = v.dims()[1];
        let dev = self.mlp.device();
        let vh = to_vec_elem(v);
        let rows = self.n * self.o;
        let mut out = vec![nalgebra::zero::<B::FloatElem>(); rows * k];
        if k == 1 {
            self.jvp_one(&vh, &mut out);
        } else {
            let mut col = vec![nalgebra::zero::<B::FloatElem>(); self.p];
            let mut res = vec![nalgebra::zero::<B::FloatElem>(); rows];
            for c in 0..k {
                col.iter_mut()
                    .enumerate()
                    .for_each(|(i, e)| *e = vh[i * k + c]);
                res.fill(nalgebra::zero::<B::FloatElem>());
                self.jvp_one(&col, &mut res);
                res.iter()
                    .enumerate()
                    .for_each(|(r, e)| out[r * k + c] = *e);
            }
        }
        Ok(tensor_from_elems::<B, 2>(out, [rows, k], &dev))
    }

    fn vjp(&self, u: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let rows = self.n * self.o;
        check_output_block(&u, rows)?;
        let k = u.dims()[1];
        let dev = self.mlp.device();
        let uh = to_vec_elem(u);
        let mut g = vec![nalgebra::zero::<B::FloatElem>(); self.p * k];
        if k == 1 {
            self.vjp_one(&uh, &mut g);
        } else {
            let mut col = vec![nalgebra::zero::<B::FloatElem>(); rows];
            let mut res = vec![nalgebra::zero::<B::FloatElem>(); self.p];
            for c in 0..k {
                col.iter_mut()
                    .enumerate()
                    .for_each(|(r, e)| *e = uh[r * k + c]);
                self.vjp_one(&col, &mut res);
                res.iter().enumerate().for_each(|(i, e)| g[i * k + c] = *e);
            }
        }
        Ok(tensor_from_elems::<B, 2>(g, [self.p, k], &dev))
    }

    /// Row $r = (i, j)$ of $K$ from the cached factors:
    /// $K_{r r'} = \sum_l (\Delta_l[r'] \cdot \Delta_l\[r\]) (A_l[i'] \cdot A_l\[i\] + 1)$, two
    /// matrix–vector products per layer.
    fn ntk_row(&self, r: usize) -> Option<Tensor<B, 1>> {
        let f = self.cache.as_ref()?;
        let (o, rows) = (self.o, self.n * self.o);
        if r >= rows {
            return None;
        }
        let one = nalgebra::one::<B::FloatElem>();
        let zero = nalgebra::zero::<B::FloatElem>();
        let mut row = vec![zero; rows];
        let (mut dd, mut aa) = (vec![zero; rows], vec![zero; self.n]);
        for (a, delta) in f.inputs.iter().zip(&f.sens) {
            let mut ddv = ViewMut::from_slice_with_strides_generic(
                &mut dd,
                Dyn(rows),
                Dyn(1),
                Dyn(1),
                Dyn(1),
            );
            matmul::gemm(
                zero,
                &mut ddv,
                one,
                &delta.rows_view(0, rows),
                &delta.rows_view_t(r, 1),
            );
            let mut aav = ViewMut::from_slice_with_strides_generic(
                &mut aa,
                Dyn(self.n),
                Dyn(1),
                Dyn(1),
                Dyn(1),
            );
            matmul::gemm(
                zero,
                &mut aav,
                one,
                &a.rows_view(0, self.n),
                &a.rows_view_t(r / o, 1),
            );
            for (q, k) in row.iter_mut().enumerate() {
                *k += dd[q] * (aa[q / o] + one);
            }
        }
        let dev = self.mlp.device();
        Some(tensor_from_elems::<B, 1>(row, [rows], &dev))
    }

    fn ntk_diagonal(&self) -> Option<Tensor<B, 1>> {
        Some(self.diagonal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{tensor_from_f64, to_dmatrix_f64};
    use crate::dense::MlpJacobian;
    use crate::{Activation, Head, MlpConfig};
    use burn_ndarray::NdArray;

    type B64 = NdArray<f64>;

    fn data(n: usize, d: usize, seed: f64) -> Tensor<B64, 2> {
        tensor_from_f64::<B64>(
            (0..n * d)
                .map(|i| (i as f64 * 0.37 + seed).sin() * 1.5)
                .collect(),
            n,
            d,
            &Default::default(),
        )
    }

    /// Against the tensor operator for every activation it supports and both heads, with the
    /// factors cached and recomputed in small chunks, blocks of several columns, and
    /// adjointness.
    #[test]
    fn matches_the_tensor_operator_cached_and_chunked() {
        let dev = Default::default();
        let cases = [
            (vec![3, 9, 7, 1], Activation::Tanh, Head::Plain),
            (vec![2, 8, 2], Activation::Relu, Head::Plain),
            (
                vec![3, 6, 5, 2],
                Activation::Softplus,
                Head::Heteroscedastic { min_scale: 1e-3 },
            ),
            (vec![1, 5, 1], Activation::Sigmoid, Head::Plain),
            (vec![2, 7, 4, 1], Activation::Elu, Head::Plain),
        ];
        for (seed, (widths, act, head)) in cases.into_iter().enumerate() {
            let mlp = MlpConfig::new(&widths)
                .with_activation(act)
                .with_head(head)
                .init::<B64>(seed as u64, &dev)
                .unwrap();
            let n = 13;
            let x = data(n, widths[0], seed as f64);
            let reference =
                MlpJacobian::new(mlp.clone(), x.clone(), JacobianParams::default()).unwrap();
            let p = reference.n_params();
            let rows = reference.n_rows();
            let v = tensor_from_f64::<B64>(
                (0..p * 3).map(|i| (i as f64 * 0.61).cos()).collect(),
                p,
                3,
                &dev,
            );
            let u = tensor_from_f64::<B64>(
                (0..rows * 2).map(|i| (i as f64 * 0.29).sin()).collect(),
                rows,
                2,
                &dev,
            );
            let jv = to_dmatrix_f64(reference.jvp(v.clone()).unwrap());
            let jtu = to_dmatrix_f64(reference.vjp(u.clone()).unwrap());
            for options in [
                JacobianParams::default(),
                JacobianParams {
                    max_chunk_rows: 4,
                    ..JacobianParams::default()
                },
                JacobianParams {
                    cache_factors: false,
                    ..JacobianParams::default()
                },
            ] {
                let host = HostJacobian::new(mlp.clone(), x.clone(), options).unwrap();
                assert_eq!(
                    host.is_cached(),
                    options.cache_factors && options.max_chunk_rows >= n
                );
                assert_eq!((host.n_params(), host.n_rows()), (p, rows));
                let a = to_dmatrix_f64(host.jvp(v.clone()).unwrap());
                let b = to_dmatrix_f64(host.vjp(u.clone()).unwrap());
                assert!(
                    (&a - &jv).amax() < 1e-12 * jv.amax().max(1.0),
                    "{act:?} jvp {:e}",
                    (&a - &jv).amax()
                );
                assert!(
                    (&b - &jtu).amax() < 1e-12 * jtu.amax().max(1.0),
                    "{act:?} vjp {:e}",
                    (&b - &jtu).amax()
                );
                // ⟨Jv, u⟩ = ⟨v, Jᵀu⟩ column by column.
                let (vm, um) = (to_dmatrix_f64(v.clone()), to_dmatrix_f64(u.clone()));
                let lhs = a.column(0).dot(&um.column(1));
                let rhs = vm.column(0).dot(&b.column(1));
                assert!((lhs - rhs).abs() < 1e-11 * lhs.abs().max(1.0));
            }
            let host =
                HostJacobian::new(mlp.clone(), x.clone(), JacobianParams::default()).unwrap();
            let diag = crate::convert::to_vec_f64(host.ntk_diagonal().unwrap());
            let want = crate::convert::to_vec_f64(reference.ntk_diagonal().unwrap());
            for (g, w) in diag.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12 * w.abs().max(1.0));
            }
            let full = to_dmatrix_f64(host.jacobian().unwrap());
            let want = to_dmatrix_f64(reference.jacobian().unwrap());
            assert!(
                (&full - &want).amax() < 1e-12 * want.amax(),
                "{act:?} explicit J"
            );
            let xs = to_dmatrix_f64(host.inputs());
            assert_eq!(xs, to_dmatrix_f64(x.clone()));
            for r in [0, rows / 2, rows - 1] {
                let got = crate::convert::to_vec_f64(host.ntk_row(r).unwrap());
                let want = crate::convert::to_vec_f64(reference.ntk_row(r).unwrap());
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-12 * w.abs().max(1.0),
                        "row {r}: {g} vs {w}"
                    );
                }
            }
            assert!(host.ntk_row(rows).is_none());
            let out = to_dmatrix_f64(host.outputs().unwrap());
            assert!((out - to_dmatrix_f64(reference.outputs().unwrap())).amax() < 1e-14);
        }
    }

    /// The host-block products against the tensor ones (two outputs, chunked factors), the
    /// Gram operator against $J^\top J V$ from the explicit Jacobian, and typed errors.
    #[test]
    fn host_blocks_match_the_tensor_products() {
        let dev = Default::default();
        let mlp = MlpConfig::new(&[3, 6, 5, 2]).init::<B64>(4, &dev).unwrap();
        let opts = JacobianParams {
            memory_budget: 2000,
            ..JacobianParams::default()
        };
        let host = HostJacobian::new(mlp, data(9, 3, 0.2), opts).unwrap();
        assert!(!host.is_cached());
        let (p, rows) = (host.n_params(), host.n_rows());
        let v = DMatrix::from_fn(p, 3, |i, j| ((i * 3 + j) as f64 * 0.71).sin());
        let u = DMatrix::from_fn(rows, 2, |i, j| ((i + 5 * j) as f64 * 0.43).cos());
        let via_tensor =
            |m: &DMatrix<f64>, f: &dyn Fn(Tensor<B64, 2>) -> Result<Tensor<B64, 2>>| {
                to_dmatrix_f64(f(crate::convert::from_dmatrix_f64(m, &dev)).unwrap())
            };
        let jv = host.jvp_host(&v).unwrap();
        assert!((&jv - via_tensor(&v, &|t| host.jvp(t))).norm() < 1e-12 * jv.norm());
        let jtu = host.vjp_host(&u).unwrap();
        assert!((&jtu - via_tensor(&u, &|t| host.vjp(t))).norm() < 1e-12 * jtu.norm());
        let j = to_dmatrix_f64(host.jacobian().unwrap());
        let gram =
            HostGram::new(crate::Jacobian::new(host.mlp().clone(), host.inputs(), opts).unwrap())
                .unwrap();
        let layers = crate::Jacobian::new(
            host.mlp().clone(),
            host.inputs(),
            JacobianParams {
                execution: crate::Execution::Layers,
                ..opts
            },
        )
        .unwrap();
        assert!(matches!(
            HostGram::new(layers),
            Err(OpsError::InvalidConfig(_))
        ));
        assert_eq!((gram.nrows(), gram.ncols()), (p, p));
        let want = j.transpose() * (&j * &v);
        assert!((gram.apply(&v) - &want).norm() < 1e-12 * want.norm());
        // As an operator it neither checks nor fails: no columns give none, and a NaN
        // propagates to the caller (a solver reports non-finite products as typed errors).
        assert_eq!(gram.apply(&DMatrix::zeros(p, 0)).shape(), (p, 0));
        let mut nan_v = v.clone();
        nan_v[(0, 2)] = f64::NAN;
        let out = gram.apply(&nan_v);
        assert!(out.column(2).iter().any(|x| x.is_nan()));
        assert!((out.columns(0, 2) - want.columns(0, 2)).norm() < 1e-12 * want.norm());
        assert!(matches!(
            host.jvp_host(&DMatrix::zeros(p + 1, 1)),
            Err(OpsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            host.vjp_host(&DMatrix::zeros(rows, 0)),
            Err(OpsError::Empty { .. })
        ));
        let mut bad = u.clone();
        bad[(4, 1)] = f64::INFINITY;
        assert!(matches!(
            host.vjp_host(&bad),
            Err(OpsError::NonFinite { index: Some(9), .. })
        ));
    }

    #[test]
    fn errors_for_bad_inputs_and_gelu_on_the_host() {
        let dev = Default::default();
        let mlp = MlpConfig::new(&[2, 4, 1]).init::<B64>(0, &dev).unwrap();
        assert!(matches!(
            HostJacobian::new(mlp.clone(), data(5, 3, 0.0), JacobianParams::default()),
            Err(OpsError::ShapeMismatch { .. })
        ));
        let mut bad = to_dmatrix_f64(data(5, 2, 0.0));
        bad[(2, 1)] = f64::NAN;
        let bad = crate::convert::from_dmatrix_f64::<B64>(&bad, &dev);
        assert!(matches!(
            HostJacobian::new(mlp.clone(), bad, JacobianParams::default()),
            Err(OpsError::NonFinite { .. })
        ));
        let gelu = MlpConfig::new(&[2, 4, 1])
            .with_activation(Activation::Gelu)
            .init::<B64>(0, &dev)
            .unwrap();
        // GELU runs on the host now (libm's erf), equal to the tensor path
        let host =
            HostJacobian::new(gelu.clone(), data(5, 2, 0.0), JacobianParams::default()).unwrap();
        let tensor = MlpJacobian::new(gelu, data(5, 2, 0.0), JacobianParams::default()).unwrap();
        let u = tensor_from_f64::<B64>((0..5).map(|i| i as f64 - 2.0).collect(), 5, 1, &dev);
        let (a, b) = (
            to_dmatrix_f64(host.vjp(u.clone()).unwrap()),
            to_dmatrix_f64(tensor.vjp(u).unwrap()),
        );
        assert!((&a - &b).amax() < 1e-13 * b.amax());
        let host = HostJacobian::new(mlp, data(5, 2, 0.0), JacobianParams::default()).unwrap();
        let wrong = tensor_from_f64::<B64>(vec![1.0; 7], 7, 1, &dev);
        assert!(host.jvp(wrong.clone()).is_err());
        assert!(host.vjp(wrong).is_err());
        let nan = tensor_from_f64::<B64>(vec![f64::NAN; 5], 5, 1, &dev);
        assert!(matches!(host.vjp(nan), Err(OpsError::NonFinite { .. })));
    }
}
