//! Backend conformance: the same checks on every burn backend the pipeline runs on.
//!
//! [`run`] is written once, generically over the backend `B`, and measures on one small
//! problem (a 2-16-16-1 tanh MLP, $n = 40$ training and $8$ test points, $\sigma^2 = 0.05$,
//! $s^2 = 0.7$):
//!
//! - adjointness $\lvert\langle JV, U\rangle - \langle V, J^\top U\rangle\rvert /
//!   (\lVert JV\rVert_F \lVert U\rVert_F)$ for random blocks $V$ ($p\times 3$), $U$ ($n\times 3$);
//! - $JV$ and $J^\top U$ against the `NdArray<f64>` reference built from the same `f64`
//!   parameters (relative Frobenius errors);
//! - the dense NTK $K$ against the matrix-free operator applied to $I_n$ (max error / max $\lvert K\rvert$);
//! - the GP: `Dense` against matrix-free `FunctionSpace` (preconditioned CG, SLQ) and against
//!   `ParameterSpace`, in predictive mean, predictive variance (max error / max value) and
//!   log marginal likelihood (absolute), plus the dense predictive mean against the `f64`
//!   reference.
//!
//! Instances: `NdArray<f64>` (tight tolerances), `NdArray<f32>` (the f32 tolerances, measured
//! here on the CPU) and, with the `cuda` feature and `NTK_TEST_CUDA=1`, `Cuda<f32>` with the
//! same f32 tolerances. Without `NTK_TEST_CUDA=1` the CUDA instance prints that it was skipped.
//!
//! f32 tolerances ([`F32_BOUNDS`], measured values in `docs/src/architecture.md`): products and
//! $K$ carry $10^{-7}$ relative rounding; the GP solves amplify it by the conditioning of
//! $A = s^2K + \sigma^2 I$, and CG in f32 runs to a relative residual $10^{-5}$, so means get
//! $10^{-6}$ and variances $10^{-4}$. The bounds keep 10–20× head-room over the measured errors.

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_ops::{
    Jacobian, JacobianOperator, JacobianParams, MlpConfig, NtkOperator, TensorBlock, convert,
};

use krylov::LinearOperator;

use crate::fit::Param;
use crate::ntk::{MatrixFreeParams, MeanFunction, NtkGp, NtkGpParams};
use crate::strategy::Strategy;

/// Errors measured by [`run`] (all relative except the log-likelihood's, which is absolute).
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Adjointness of the Jacobian products.
    pub adjoint: f64,
    /// $JV$ against the f64 reference.
    pub jvp_vs_f64: f64,
    /// $J^\top U$ against the f64 reference.
    pub vjp_vs_f64: f64,
    /// Dense NTK against the operator applied to $I$.
    pub ntk_dense_vs_operator: f64,
    /// Dense vs matrix-free predictive mean.
    pub mean_dense_vs_mf: f64,
    /// Dense vs matrix-free predictive variance.
    pub var_dense_vs_mf: f64,
    /// Dense vs matrix-free log marginal likelihood (absolute).
    pub lml_dense_vs_mf: f64,
    /// Dense vs parameter-space predictive mean.
    pub mean_dense_vs_param: f64,
    /// Dense vs parameter-space predictive variance.
    pub var_dense_vs_param: f64,
    /// Dense vs parameter-space log marginal likelihood (absolute).
    pub lml_dense_vs_param: f64,
    /// Dense predictive mean against the f64 reference.
    pub mean_vs_f64: f64,
}

impl Measured {
    fn fields(&self) -> [(&'static str, f64); 11] {
        [
            ("adjoint", self.adjoint),
            ("jvp_vs_f64", self.jvp_vs_f64),
            ("vjp_vs_f64", self.vjp_vs_f64),
            ("ntk_dense_vs_operator", self.ntk_dense_vs_operator),
            ("mean_dense_vs_mf", self.mean_dense_vs_mf),
            ("var_dense_vs_mf", self.var_dense_vs_mf),
            ("lml_dense_vs_mf", self.lml_dense_vs_mf),
            ("mean_dense_vs_param", self.mean_dense_vs_param),
            ("var_dense_vs_param", self.var_dense_vs_param),
            ("lml_dense_vs_param", self.lml_dense_vs_param),
            ("mean_vs_f64", self.mean_vs_f64),
        ]
    }

    /// Prints every measured error and asserts each is within `bound`.
    pub fn assert_within(&self, bound: &Measured, label: &str) {
        for ((name, got), (_, max)) in self.fields().into_iter().zip(bound.fields()) {
            println!("conformance {label}: {name} = {got:.3e} (bound {max:.0e})");
        }
        for ((name, got), (_, max)) in self.fields().into_iter().zip(bound.fields()) {
            assert!(
                got.is_finite() && got <= max,
                "{label}: {name} = {got:.3e} > {max:.0e}"
            );
        }
    }
}

/// Bounds for `f64` backends. The log-likelihoods of the matrix-free path carry the SLQ
/// error of 64 probes (measured $\approx 10^{-3}$ here), in both precisions.
pub const F64_BOUNDS: Measured = Measured {
    adjoint: 1e-14,
    jvp_vs_f64: 1e-13,
    vjp_vs_f64: 1e-13,
    ntk_dense_vs_operator: 1e-13,
    mean_dense_vs_mf: 1e-9,
    var_dense_vs_mf: 1e-9,
    lml_dense_vs_mf: 1e-2,
    mean_dense_vs_param: 1e-12,
    var_dense_vs_param: 1e-11,
    lml_dense_vs_param: 1e-11,
    mean_vs_f64: 1e-13,
};

/// Bounds for `f32` backends: 10–20× the errors measured on `NdArray<f32>` (adjointness
/// 1.7e-8; $JV$, $J^\top U$, $K$ 1–2e-7; dense vs matrix-free mean 4.1e-6, variance 1.1e-4,
/// log-likelihood 9.3e-4; dense vs parameter space 7.4e-7, 2.6e-5, 1.6e-5; mean vs f64 7.3e-7).
/// A GPU matmul in TF32 (10-bit mantissa, relative error $\approx 5\cdot10^{-4}$) would fail
/// the product checks, on purpose.
pub const F32_BOUNDS: Measured = Measured {
    adjoint: 1e-6,
    jvp_vs_f64: 2e-6,
    vjp_vs_f64: 2e-6,
    ntk_dense_vs_operator: 2e-6,
    mean_dense_vs_mf: 1e-4,
    var_dense_vs_mf: 2e-3,
    lml_dense_vs_mf: 1e-2,
    mean_dense_vs_param: 1e-5,
    var_dense_vs_param: 5e-4,
    lml_dense_vs_param: 2e-4,
    mean_vs_f64: 1e-5,
};

/// Bounds for `Cuda<f32>`, an estimate until the first device run measures them: burn-cubecl
/// 0.21 without autotune sends every matmul through cubek-matmul's `Auto` strategy, which on
/// tensor-core GPUs (Ampere and later, so the H200) stages `f32` operands as TF32 (10-bit
/// mantissa, unit roundoff $2^{-11}$ instead of $2^{-24}$). First-order errors scale with the
/// unit roundoff, so these are the `NdArray<f32>` measurements times $2^{13}$, rounded up
/// (about 4× head-room); variances, a difference of two close terms, suffer most.
/// `Cuda<f64>` (no TF32) is held to [`CUDA_F64_BOUNDS`].
#[cfg(feature = "cuda")]
pub const CUDA_F32_BOUNDS: Measured = Measured {
    adjoint: 1e-3,
    jvp_vs_f64: 5e-3,
    vjp_vs_f64: 5e-3,
    ntk_dense_vs_operator: 5e-3,
    mean_dense_vs_mf: 0.1,
    var_dense_vs_mf: 0.5,
    lml_dense_vs_mf: 0.5,
    mean_dense_vs_param: 2e-2,
    var_dense_vs_param: 0.5,
    lml_dense_vs_param: 0.5,
    mean_vs_f64: 2e-2,
};

/// Bounds for `Cuda<f64>`: the `f64` bounds with 100× room for other summation orders.
#[cfg(feature = "cuda")]
pub const CUDA_F64_BOUNDS: Measured = Measured {
    adjoint: 1e-12,
    jvp_vs_f64: 1e-11,
    vjp_vs_f64: 1e-11,
    ntk_dense_vs_operator: 1e-11,
    mean_dense_vs_mf: 1e-7,
    var_dense_vs_mf: 1e-7,
    lml_dense_vs_mf: 1e-2,
    mean_dense_vs_param: 1e-10,
    var_dense_vs_param: 1e-9,
    lml_dense_vs_param: 1e-9,
    mean_vs_f64: 1e-11,
};

const WIDTHS: [usize; 4] = [2, 16, 16, 1];
const N: usize = 40;
const M: usize = 8;

fn data(n: usize, shift: usize) -> (DMatrix<f64>, DVector<f64>) {
    let x = DMatrix::from_fn(n, 2, |i, j| {
        (((i + shift) * 7 + j * 3) as f64 * 0.61).sin() * 1.5
    });
    let y = DVector::from_fn(n, |i, _| (x[(i, 0)] * 1.3).sin() + 0.5 * x[(i, 1)]);
    (x, y)
}

fn config(strategy: Strategy, f32_like: bool) -> NtkGpParams {
    NtkGpParams {
        strategy,
        noise: Param::Fixed(0.05),
        prior_scale: Param::Fixed(0.7),
        mean: MeanFunction::Network,
        matrix_free: MatrixFreeParams {
            cg_tolerance: if f32_like { 1e-5 } else { 1e-11 },
            probes: 64,
            precond_rank: 10,
            // Non-convergence must fail the test, not fall back to the dense path.
            dense_fallback_max_n: 0,
            ..MatrixFreeParams::default()
        },
        ..NtkGpParams::default()
    }
}

fn fro(m: &DMatrix<f64>) -> f64 {
    m.norm()
}

fn rel_max(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    (a - b).amax() / b.amax().max(1e-300)
}

/// Runs every check on backend `B` at `device` and returns the measured errors.
pub fn run<B: Backend>(device: &B::Device) -> Measured
where
    B::FloatElem: krylov::Scalar,
{
    type R = ntk_ops::DefaultBackend;
    let f32_like = std::mem::size_of::<B::FloatElem>() < 8;
    let cfg = MlpConfig::new(&WIDTHS);
    let theta = cfg
        .init::<R>(11, &Default::default())
        .unwrap()
        .flatten_f64();
    let net = cfg.with_params::<B>(&theta, device).unwrap();
    let net_ref = cfg.with_params::<R>(&theta, &Default::default()).unwrap();
    let (x, y) = data(N, 0);
    let (xt, _) = data(M, 100);
    let p = net.n_params();
    let mut rng = ntk_ops::rng::SplitMix64::new(5);
    let v = DMatrix::from_vec(p, 3, rng.normal_vec(3 * p));
    let u = DMatrix::from_vec(N, 3, rng.normal_vec(3 * N));

    let jac = Jacobian::new(
        net.clone(),
        convert::from_dmatrix_f64(&x, device),
        JacobianParams::default(),
    )
    .unwrap();
    let jac_ref = Jacobian::new(
        net_ref,
        convert::from_dmatrix_f64(&x, &Default::default()),
        JacobianParams::default(),
    )
    .unwrap();
    let jv = convert::to_dmatrix_f64(jac.jvp(convert::from_dmatrix_f64(&v, device)).unwrap());
    let jtu = convert::to_dmatrix_f64(jac.vjp(convert::from_dmatrix_f64(&u, device)).unwrap());
    let jv_ref = convert::to_dmatrix_f64(
        jac_ref
            .jvp(convert::from_dmatrix_f64(&v, &Default::default()))
            .unwrap(),
    );
    let jtu_ref = convert::to_dmatrix_f64(
        jac_ref
            .vjp(convert::from_dmatrix_f64(&u, &Default::default()))
            .unwrap(),
    );
    let adjoint = (jv.dot(&u) - v.dot(&jtu)).abs() / (fro(&jv) * fro(&u));

    // The dense NTK against the matrix-free operator, whose products stay on the device.
    let k = convert::to_dmatrix_f64(jac.ntk_matrix(&jac).unwrap());
    let eye = TensorBlock::new(convert::from_dmatrix_f64(
        &DMatrix::<f64>::identity(N, N),
        device,
    ));
    let k_op = convert::to_dmatrix_f64(NtkOperator::new(jac.clone()).apply(&eye).into_tensor());

    let dense = NtkGp::new(net.clone(), &x, &y, config(Strategy::Dense, f32_like)).unwrap();
    let mf = NtkGp::new(net.clone(), &x, &y, config(Strategy::MatrixFree, f32_like)).unwrap();
    assert_eq!(mf.choice().strategy, Strategy::MatrixFree);
    assert!(mf.matrix_free_state().is_some(), "the matrix-free path ran");
    let param = NtkGp::new(net, &x, &y, config(Strategy::ParameterSpace, f32_like)).unwrap();
    let dense_ref = NtkGp::new(
        cfg.with_params::<R>(&theta, &Default::default()).unwrap(),
        &x,
        &y,
        config(Strategy::Dense, false),
    )
    .unwrap();
    let (d, m, pp, r) = (
        dense.predict(&xt).unwrap(),
        mf.predict(&xt).unwrap(),
        param.predict(&xt).unwrap(),
        dense_ref.predict(&xt).unwrap(),
    );
    let lml = dense.log_marginal_likelihood();
    Measured {
        adjoint,
        jvp_vs_f64: fro(&(&jv - &jv_ref)) / fro(&jv_ref),
        vjp_vs_f64: fro(&(&jtu - &jtu_ref)) / fro(&jtu_ref),
        ntk_dense_vs_operator: (&k - &k_op).amax() / k.amax(),
        mean_dense_vs_mf: rel_max(&m.mean, &d.mean),
        var_dense_vs_mf: rel_max(&m.var, &d.var),
        lml_dense_vs_mf: (mf.log_marginal_likelihood() - lml).abs(),
        mean_dense_vs_param: rel_max(&pp.mean, &d.mean),
        var_dense_vs_param: rel_max(&pp.var, &d.var),
        lml_dense_vs_param: (param.log_marginal_likelihood() - lml).abs(),
        mean_vs_f64: rel_max(&d.mean, &r.mean),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_ndarray_f64() {
        run::<burn::backend::NdArray<f64>>(&Default::default())
            .assert_within(&F64_BOUNDS, "NdArray<f64>");
    }

    #[test]
    fn conformance_ndarray_f32() {
        run::<burn::backend::NdArray<f32>>(&Default::default())
            .assert_within(&F32_BOUNDS, "NdArray<f32>");
    }

    /// Whether the CUDA cases should run (`NTK_TEST_CUDA=1`, see `scripts/device-check.sh`).
    #[cfg(feature = "cuda")]
    fn cuda_wanted(name: &str) -> bool {
        if std::env::var("NTK_TEST_CUDA").as_deref() != Ok("1") {
            println!("{name}: skipped (set NTK_TEST_CUDA=1 on a machine with a GPU)");
            return false;
        }
        ntk_ops::device::Device::Cuda(0)
            .check()
            .expect("NTK_TEST_CUDA=1 needs a usable cuda:0");
        true
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn conformance_cuda_f32() {
        if cuda_wanted("conformance_cuda_f32") {
            run::<ntk_ops::device::CudaBackend>(&ntk_ops::device::CudaDevice::new(0))
                .assert_within(&CUDA_F32_BOUNDS, "Cuda<f32>");
        }
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn conformance_cuda_f64() {
        if cuda_wanted("conformance_cuda_f64") {
            run::<ntk_ops::device::CudaBackendF64>(&ntk_ops::device::CudaDevice::new(0))
                .assert_within(&CUDA_F64_BOUNDS, "Cuda<f64>");
        }
    }
}
