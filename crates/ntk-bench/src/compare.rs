//! `ntk-bench compare`: the problems of the Python anchors (`anchors/` in the repository), read from the
//! files `xtask/compare/compare.py` dumps (the anchors' own parameters and data, bit for bit),
//! solved by ntk-rs, timed and printed as one JSON line.
//!
//! A problem directory holds `meta.json` (`widths`, `n`, `n_test`, `sigma2`, `task`) and raw
//! little-endian f64 arrays: `X.bin` ($n\times d$, row-major), `y.bin`, `Xs.bin`
//! ($n_*\times d$) and `theta.bin` (PyTorch `state_dict` order: per layer $W$ `[out, in]`,
//! then $b$). The anchors' GP: zero mean, prior scale 1, noise $\sigma^2$, latent variances.
//!
//! Strategy: ntk-gp's dense strategy through its public API ([`NtkGp::fit_predict`]) — the
//! structured NTK, only its lower triangle, written straight into the storage of a blocked
//! Cholesky, the test points' kernels computed meanwhile — in f64 for the small sine MLP and
//! in f32 (the anchors' precision) for the 803k-parameter MLP, where $n \le 10^4$ keeps
//! $4n^2$ bytes and $n^3/3$ flops affordable (see `DESIGN-NOTES`).

use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
pub use ntk_gp::Precision;
use ntk_gp::chol::DenseLml;
use ntk_gp::{GpError, MeanFunction, NtkGp, NtkGpParams, Param, Strategy};
use ntk_ops::{DefaultBackend, MlpConfig};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::perf;

/// What a problem directory's `meta.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemMeta {
    /// Layer widths.
    pub widths: Vec<usize>,
    /// Training points.
    pub n: usize,
    /// Test points.
    pub n_test: usize,
    /// Noise variance.
    pub sigma2: f64,
    /// `"predict"` (mean, variance, lml) or `"logprob"` (lml only).
    pub task: String,
}

/// A problem: the network's parameters and the data.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Sizes and settings.
    pub meta: ProblemMeta,
    /// Flat parameters.
    pub theta: Vec<f64>,
    /// Training inputs.
    pub x: DMatrix<f64>,
    /// Training targets.
    pub y: DVector<f64>,
    /// Test inputs.
    pub xs: DMatrix<f64>,
}

fn read_f64(path: &Path, len: usize) -> Result<Vec<f64>, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(path, e))?;
    if bytes.len() != 8 * len {
        return Err(BenchError::invalid(
            "problem file",
            format!(
                "{} has {} bytes, expected {}",
                path.display(),
                bytes.len(),
                8 * len
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

impl Problem {
    /// Reads a problem directory (see the [module docs](self)).
    pub fn load(dir: &Path) -> Result<Self, BenchError> {
        let meta_path = dir.join("meta.json");
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| BenchError::io(&meta_path, e))?;
        let meta: ProblemMeta = serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: meta_path.clone(),
            source,
        })?;
        if meta.widths.len() < 2 || meta.n == 0 {
            return Err(BenchError::invalid("problem", "need widths and n > 0"));
        }
        let d = meta.widths[0];
        let p = MlpConfig::new(&meta.widths).layout().n_params();
        let theta = read_f64(&dir.join("theta.bin"), p)?;
        let x = DMatrix::from_row_slice(meta.n, d, &read_f64(&dir.join("X.bin"), meta.n * d)?);
        let y = DVector::from_vec(read_f64(&dir.join("y.bin"), meta.n)?);
        let xs = DMatrix::from_row_slice(
            meta.n_test,
            d,
            &read_f64(&dir.join("Xs.bin"), meta.n_test * d)?,
        );
        Ok(Self {
            meta,
            theta,
            x,
            y,
            xs,
        })
    }
}

/// The result of dense GP inference.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseResult {
    /// Log marginal likelihood and its pieces.
    pub lml: DenseLml,
    /// Predictive means and latent variances at the test points, when asked.
    pub predict: Option<(Vec<f64>, Vec<f64>)>,
    /// Seconds for the factors (forward and backward pass) and the structured NTK blocks.
    pub kernel_s: f64,
    /// Flops of the NTK blocks' matrix products ($2 r c S$ per block).
    pub kernel_flops: f64,
    /// Seconds for the Cholesky factorization.
    pub factor_s: f64,
}

/// Dense function-space inference for the network's NTK GP (zero mean, prior scale 1, noise
/// fixed at `noise`) through ntk-gp's public API: [`NtkGp::fit_predict`] (or [`NtkGp::new`]
/// without test points) with [`Strategy::Dense`] in `precision` — the structured kernel's
/// lower triangle, a blocked Cholesky, and the test kernels formed during the factorization.
pub fn dense_ntk_gp<B: Backend>(
    network: impl Into<ntk_ops::Network<B>>,
    x: &DMatrix<f64>,
    y: &DVector<f64>,
    xs: Option<&DMatrix<f64>>,
    noise: f64,
    precision: Precision,
) -> Result<DenseResult, GpError>
where
    B::FloatElem: krylov::Scalar,
{
    let config = NtkGpParams {
        strategy: Strategy::Dense,
        noise: Param::Fixed(noise),
        prior_scale: Param::Fixed(1.0),
        mean: MeanFunction::Zero,
        precision,
        ..NtkGpParams::default()
    };
    let (gp, predict) = match xs {
        Some(xs) => {
            let (gp, p) = NtkGp::fit_predict(network, x, y, xs, config)?;
            (
                gp,
                Some((p.mean.as_slice().to_vec(), p.var.as_slice().to_vec())),
            )
        }
        None => (NtkGp::new(network, x, y, config)?, None),
    };
    let report = *gp.dense_report().ok_or(GpError::NotSupported {
        strategy: gp.choice().strategy,
        what: "a dense report",
        instead: "it comes from the Dense strategy on a dense chain",
    })?;
    Ok(DenseResult {
        lml: DenseLml {
            lml: gp.log_marginal_likelihood(),
            logdet: gp.log_det(),
            inv_quad: gp.inv_quad(),
        },
        predict,
        kernel_s: report.kernel_s,
        kernel_flops: report.kernel_flops,
        factor_s: report.factor_s,
    })
}

/// One compare row's result, printed as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRecord {
    /// Always `"ntk-rs"`.
    pub kind: String,
    /// The problem directory.
    pub problem: PathBuf,
    /// What was computed and how.
    pub method: String,
    /// Precision.
    pub dtype: Precision,
    /// First run (cold caches, thread-pool start).
    pub t_first: f64,
    /// Median of the repetitions after the first (the first when none).
    pub t_median: f64,
    /// Every repetition after the first.
    pub t_all: Vec<f64>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Log marginal likelihood.
    pub lml: f64,
    /// Log-determinant.
    pub logdet: f64,
    /// $y^\top A^{-1} y$.
    pub quad: f64,
    /// Predictive means (predict task).
    pub mean: Option<Vec<f64>>,
    /// Latent variances (predict task).
    pub var: Option<Vec<f64>>,
    /// The f64 dense log marginal likelihood, when a reference was asked.
    pub lml_f64_reference: Option<f64>,
    /// Load average at the end.
    pub load: f64,
    /// Last run: seconds for the factors and the structured NTK.
    pub kernel_s: f64,
    /// Last run: GFLOP/s of the NTK blocks' matrix products (factors' time included).
    pub kernel_gflops: f64,
    /// Last run: seconds of the Cholesky factorization.
    pub factor_s: f64,
    /// Last run: GFLOP/s of the Cholesky factorization ($n^3/3$ flops).
    pub factor_gflops: f64,
    /// Square-GEMM rate of this backend measured in the same process (f32, f64), GFLOP/s.
    pub gemm_gflops: Option<(f64, f64)>,
}

fn run_once(p: &Problem, precision: Precision) -> Result<DenseResult, GpError> {
    // The network's tensors only carry the parameters: the dense solve runs on host factors
    // in `precision`.
    let network = MlpConfig::new(&p.meta.widths)
        .network()
        .with_params::<DefaultBackend>(&p.theta, &[], &Default::default())?;
    let xs = (p.meta.task == "predict").then_some(&p.xs);
    dense_ntk_gp(network, &p.x, &p.y, xs, p.meta.sigma2, precision)
}

/// Solves `problem` `1 + reps` times in `dtype` (the first reported apart), optionally with an
/// untimed f64 reference for the log marginal likelihood.
pub fn compare(
    dir: &Path,
    dtype: Option<Precision>,
    reps: usize,
    reference: bool,
    gemm_size: usize,
) -> Result<CompareRecord, BenchError> {
    let problem = Problem::load(dir)?;
    let gemm_gflops = (gemm_size > 0).then(|| {
        (
            perf::gemm_gflops::<burn_ndarray::NdArray<f32>>(gemm_size, 3),
            perf::gemm_gflops::<burn_ndarray::NdArray<f64>>(gemm_size, 3),
        )
    });
    // f32 for the big network (as the anchors), f64 for the small one.
    let p = problem.theta.len();
    let dtype = dtype.unwrap_or(if p > 100_000 {
        Precision::F32
    } else {
        Precision::F64
    });
    perf::reset_peak_rss();
    let run = |p: &Problem| run_once(p, dtype);
    let (first, t_first) = perf::timed(|| run(&problem));
    let mut out = first?;
    let mut t_all = Vec::new();
    for _ in 0..reps {
        let (r, s) = perf::timed(|| run(&problem));
        out = r?;
        t_all.push(s);
    }
    let peak = perf::peak_rss_mib();
    let t_median = if t_all.is_empty() {
        t_first
    } else {
        let mut s = t_all.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let lml_f64_reference = if reference {
        Some(run_once(&problem, Precision::F64)?.lml.lml)
    } else {
        None
    };
    let n = problem.meta.n as f64;
    let (kernel_s, kernel_flops, factor_s) = (out.kernel_s, out.kernel_flops, out.factor_s);
    let (mean, var) = match out.predict {
        Some((m, v)) => (Some(m), Some(v)),
        None => (None, None),
    };
    Ok(CompareRecord {
        kind: "ntk-rs".into(),
        problem: dir.to_path_buf(),
        method: format!(
            "dense: structured NTK (lower blocks) + blocked Cholesky, {dtype:?}{}",
            if mean.is_some() {
                ", mean + latent variance"
            } else {
                ""
            }
        ),
        dtype,
        t_first,
        t_median,
        t_all,
        peak_rss_mib: peak,
        lml: out.lml.lml,
        logdet: out.lml.logdet,
        quad: out.lml.inv_quad,
        mean,
        var,
        lml_f64_reference,
        load: perf::load_average(),
        kernel_s,
        kernel_gflops: kernel_flops / kernel_s / 1e9,
        factor_s,
        factor_gflops: n.powi(3) / 3.0 / factor_s / 1e9,
        gemm_gflops,
    })
}

/// Per-product timings of the Jacobian operators on a problem's network and inputs (the
/// benchmark against the anchors' `matvec` and `fvp` tasks), printed as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductsRecord {
    /// Always `"ntk-rs-products"`.
    pub kind: String,
    /// The Jacobian path timed: `"host"` ([`ntk_ops::Execution::DenseHost`], one GEMM per
    /// layer on host factors) or `"tensor"` ([`ntk_ops::Execution::DenseTensor`], burn tensor
    /// ops).
    pub operator: String,
    /// The problem directory.
    pub problem: PathBuf,
    /// Precision.
    pub dtype: Precision,
    /// Points $n$ and parameters $p$.
    pub n: usize,
    /// Parameters.
    pub p: usize,
    /// Median seconds: the factors (one forward and one backward pass, cached afterwards).
    pub factors_s: f64,
    /// Median seconds of $Jv$ (one column, factors cached).
    pub jvp_s: f64,
    /// Median seconds of $J^\top u$ (one column, factors cached).
    pub vjp_s: f64,
    /// Median seconds of $Ku = J(J^\top u)$, factors cached.
    pub ntk_warm_s: f64,
    /// Median seconds of $Ku$ from scratch (factors, then the product): the anchors' `matvec`.
    pub ntk_cold_s: f64,
    /// Median seconds of the GGN product $J^\top H J v$ (Gaussian, $\sigma^2 = 1$), factors cached.
    pub ggn_warm_s: f64,
    /// Median seconds of the GGN product from scratch: the anchors' `fvp-ggn`.
    pub ggn_cold_s: f64,
    /// GFLOP/s of $Jv$ and of $J^\top u$ ($2np$ flops each).
    pub jvp_gflops: f64,
    /// GFLOP/s of $J^\top u$.
    pub vjp_gflops: f64,
    /// $\lvert\langle Jv, u\rangle - \langle v, J^\top u\rangle\rvert / (\lVert Jv\rVert \lVert u\rVert)$.
    pub adjoint_relerr: f64,
    /// Square-GEMM rate of this backend in the same process (f32, f64), GFLOP/s.
    pub gemm_gflops: Option<(f64, f64)>,
    /// Load average at the end.
    pub load: f64,
}

fn median_of(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn products_in<B: Backend>(
    problem: &Problem,
    dir: &Path,
    dtype: Precision,
    reps: usize,
    (operator, execution): (&str, ntk_ops::Execution),
) -> Result<ProductsRecord, BenchError>
where
    B::FloatElem: nalgebra::RealField + Copy,
{
    use burn::tensor::Tensor;
    use ntk_ops::{
        GgnOperator, JacobianOperator, JacobianParams, Likelihood, NtkOperator, convert,
    };
    let dev = Default::default();
    let mlp = MlpConfig::new(&problem.meta.widths).with_params::<B>(&problem.theta, &dev)?;
    let x = convert::from_dmatrix_f64(&problem.x, &dev);
    let (n, p) = (problem.meta.n, problem.theta.len());
    let opts = JacobianParams {
        memory_budget: 8 << 30,
        execution,
        ..Default::default()
    };
    let make = |mlp: ntk_ops::Mlp<B>, x, opts| ntk_ops::Jacobian::new(mlp, x, opts);
    let sync = |t: &Tensor<B, 2>| {
        B::sync(&t.device()).map_err(|e| BenchError::invalid("sync", format!("{e:?}")))
    };
    // Unit-norm probes, as the anchors' `--unit-v`.
    let unit = |len: usize, phase: f64| {
        let v: Vec<f64> = (0..len)
            .map(|i| ((i as f64 + phase) * 0.618).sin())
            .collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        convert::tensor_from_f64::<B>(v.iter().map(|a| a / norm).collect(), len, 1, &dev)
    };
    let (v, u) = (unit(p, 0.3), unit(n, 0.7));
    let gaussian = Likelihood::Gaussian { noise_var: 1.0 };
    let mut t = [(); 7].map(|_| Vec::new());
    let mut jac = None;
    for rep in 0..=reps.max(1) {
        let (j, s0) = perf::timed(|| make(mlp.clone(), x.clone(), opts));
        let j = j?;
        let (r, s1) = perf::timed(|| j.jvp(v.clone()));
        sync(&r?)?;
        let (r, s2) = perf::timed(|| j.vjp(u.clone()));
        sync(&r?)?;
        let ntk = NtkOperator::new(j.clone());
        let (r, s3) = perf::timed(|| ntk.try_apply(u.clone()));
        sync(&r?)?;
        let ggn = GgnOperator::new(j.clone(), gaussian)?;
        let (r, s4) = perf::timed(|| ggn.try_apply(v.clone()));
        sync(&r?)?;
        let (r, s5) = perf::timed(|| {
            let j = make(mlp.clone(), x.clone(), opts)?;
            NtkOperator::new(j).try_apply(u.clone())
        });
        sync(&r?)?;
        let (r, s6) = perf::timed(|| {
            let j = make(mlp.clone(), x.clone(), opts)?;
            GgnOperator::new(j, gaussian)?.try_apply(v.clone())
        });
        sync(&r?)?;
        if rep > 0 {
            for (acc, s) in t.iter_mut().zip([s0, s1, s2, s3, s4, s5, s6]) {
                acc.push(s);
            }
        }
        jac = Some(j);
    }
    let j = jac.expect("at least one repetition");
    let jv = convert::to_vec_f64(j.jvp(v.clone())?);
    let jtu = convert::to_vec_f64(j.vjp(u.clone())?);
    let (uv, vv) = (convert::to_vec_f64(u), convert::to_vec_f64(v));
    let lhs: f64 = jv.iter().zip(&uv).map(|(a, b)| a * b).sum();
    let rhs: f64 = vv.iter().zip(&jtu).map(|(a, b)| a * b).sum();
    let scale = jv.iter().map(|a| a * a).sum::<f64>().sqrt();
    let [
        factors_s,
        jvp_s,
        vjp_s,
        ntk_warm_s,
        ggn_warm_s,
        ntk_cold_s,
        ggn_cold_s,
    ] = t.map(median_of);
    let flops = 2.0 * (n * p) as f64;
    Ok(ProductsRecord {
        kind: "ntk-rs-products".into(),
        operator: operator.into(),
        problem: dir.to_path_buf(),
        dtype,
        n,
        p,
        factors_s,
        jvp_s,
        vjp_s,
        ntk_warm_s,
        ntk_cold_s,
        ggn_warm_s,
        ggn_cold_s,
        jvp_gflops: flops / jvp_s / 1e9,
        vjp_gflops: flops / vjp_s / 1e9,
        adjoint_relerr: (lhs - rhs).abs() / scale.max(f64::MIN_POSITIVE),
        gemm_gflops: None,
        load: perf::load_average(),
    })
}

/// Times $Jv$, $J^\top u$, the NTK product and the GGN product (warm: factors cached; cold:
/// from scratch) on the network and inputs of the problem in `dir`, `reps` repetitions after
/// a warm-up (medians), and checks adjointness; on the host path of [`ntk_ops::Jacobian`], or
/// on its tensor path when `tensor`.
pub fn products(
    dir: &Path,
    dtype: Option<Precision>,
    reps: usize,
    gemm_size: usize,
    tensor: bool,
) -> Result<ProductsRecord, BenchError> {
    use burn_ndarray::NdArray;
    use ntk_ops::Execution;
    let problem = Problem::load(dir)?;
    let dtype = dtype.unwrap_or(if problem.theta.len() > 100_000 {
        Precision::F32
    } else {
        Precision::F64
    });
    let gemm_gflops = (gemm_size > 0).then(|| {
        (
            perf::gemm_gflops::<burn_ndarray::NdArray<f32>>(gemm_size, 3),
            perf::gemm_gflops::<burn_ndarray::NdArray<f64>>(gemm_size, 3),
        )
    });
    let mut rec = match (dtype, tensor) {
        (Precision::F32, false) => {
            products_in::<NdArray<f32>>(&problem, dir, dtype, reps, ("host", Execution::DenseHost))?
        }
        (Precision::F64, false) => {
            products_in::<NdArray<f64>>(&problem, dir, dtype, reps, ("host", Execution::DenseHost))?
        }
        (Precision::F32, true) => products_in::<NdArray<f32>>(
            &problem,
            dir,
            dtype,
            reps,
            ("tensor", Execution::DenseTensor),
        )?,
        (Precision::F64, true) => products_in::<NdArray<f64>>(
            &problem,
            dir,
            dtype,
            reps,
            ("tensor", Execution::DenseTensor),
        )?,
    };
    rec.gemm_gflops = gemm_gflops;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_ops::{Jacobian, convert};

    fn write(dir: &Path, name: &str, v: &[f64]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn dense_gp_on_a_problem_directory_matches_the_explicit_jacobian() {
        let dir = tempfile::tempdir().unwrap();
        let widths = vec![2, 7, 5, 1];
        let cfg = MlpConfig::new(&widths);
        let theta = cfg
            .init::<burn_ndarray::NdArray<f64>>(3, &Default::default())
            .unwrap()
            .flatten_f64();
        let (n, m) = (40, 6);
        let x: Vec<f64> = (0..n * 2).map(|i| (i as f64 * 0.37).sin() * 2.0).collect();
        let y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.2).cos()).collect();
        let xs: Vec<f64> = (0..m * 2).map(|i| (i as f64 * 0.53).cos()).collect();
        write(dir.path(), "theta.bin", &theta);
        write(dir.path(), "X.bin", &x);
        write(dir.path(), "y.bin", &y);
        write(dir.path(), "Xs.bin", &xs);
        let meta = ProblemMeta {
            widths: widths.clone(),
            n,
            n_test: m,
            sigma2: 0.05,
            task: "predict".into(),
        };
        std::fs::write(
            dir.path().join("meta.json"),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let rec = compare(dir.path(), None, 1, true, 0).unwrap();
        // Reference: explicit J, K = J Jᵀ, nalgebra Cholesky.
        type F = burn_ndarray::NdArray<f64>;
        let dev = Default::default();
        let jac_of = |rows: &[f64], k: usize| {
            let mlp = cfg.with_params::<F>(&theta, &dev).unwrap();
            let xm = DMatrix::from_row_slice(k, 2, rows);
            let j = Jacobian::new(
                mlp,
                convert::from_dmatrix_f64(&xm, &dev),
                Default::default(),
            )
            .unwrap();
            convert::to_dmatrix_f64(j.jacobian().unwrap())
        };
        let j = jac_of(&x, n);
        let js = jac_of(&xs, m);
        let a = &j * j.transpose() + DMatrix::identity(n, n) * 0.05;
        let ch = a.clone().cholesky().unwrap();
        let yv = DVector::from_vec(y.clone());
        let alpha = ch.solve(&yv);
        let lml = -0.5 * yv.dot(&alpha)
            - ch.l().diagonal().map(f64::ln).sum()
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        assert!(
            (rec.lml - lml).abs() < 1e-10 * lml.abs(),
            "{} vs {lml}",
            rec.lml
        );
        assert!((rec.lml_f64_reference.unwrap() - lml).abs() < 1e-10 * lml.abs());
        let ks = &js * j.transpose();
        let mean = &ks * &alpha;
        let var = (&js * js.transpose()).diagonal() - (&ks * ch.solve(&ks.transpose())).diagonal();
        for i in 0..m {
            assert!((rec.mean.as_ref().unwrap()[i] - mean[i]).abs() < 1e-9);
            assert!((rec.var.as_ref().unwrap()[i] - var[i]).abs() < 1e-9);
        }
        assert_eq!(rec.dtype, Precision::F64);
        assert_eq!(rec.t_all.len(), 1);
        // A wrong file size is a typed error.
        write(dir.path(), "y.bin", &y[..n - 1]);
        assert!(matches!(
            compare(dir.path(), None, 0, false, 0),
            Err(BenchError::Invalid { .. })
        ));
    }
}
