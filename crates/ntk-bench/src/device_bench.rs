//! Timing of the matrix-free log marginal likelihood on a chosen device (`ntk-bench
//! device-bench`), the GPU half of `scripts/device-check.sh`.
//!
//! The problem is the paper's scaling study (Figure 4): the 803,601-parameter MLP
//! 5-200-2000-200-1 (tanh, as in the anchors; ELU in the authors' notebook), inputs
//! $x \sim \mathcal N(0, I_5)$, targets $y \sim \mathcal N(0, 1)$, fixed $\sigma^2$ and $s^2$.
//! For each $n$ one [`NtkGp`] is built with [`Strategy::MatrixFree`]: a batched,
//! preconditioned CG solve of $A\alpha = y$ with $A = s^2 JJ^\top + \sigma^2 I$ next to `probes`
//! SLQ probes for $\log\lvert A\rvert$, every vector on the device and every product of $A$
//! through the structured NTK (no $n\times n$ matrix, no $n \times p$ Jacobian). The reported
//! time covers the Jacobian set-up (one forward pass), the preconditioner, CG and SLQ; the
//! accuracy columns are CG's largest relative residual and the SLQ standard error, as the
//! design notes ask for every matrix-free number.

use std::fmt::Write as _;
use std::time::Instant;

use burn::prelude::Backend;
use nalgebra::{DMatrix, DVector};
use ntk_gp::GpError;
use ntk_gp::fit::Param;
use ntk_gp::ntk::{MatrixFreeParams, MeanFunction, NtkGp, NtkGpParams};
use ntk_gp::strategy::Strategy;
use ntk_ops::DefaultBackend as CpuBackend;
use ntk_ops::device::Device;
use ntk_ops::rng::SplitMix64;
use ntk_ops::{Activation, MlpConfig};

use crate::error::BenchError;

/// The scaling study's network: 5-200-2000-200-1, 803,601 parameters.
pub const SCALING_WIDTHS: [usize; 5] = [5, 200, 2000, 200, 1];

/// What `device-bench` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceBenchConfig {
    /// Layer widths of the MLP (tanh).
    pub widths: Vec<usize>,
    /// Training-set sizes, timed in this order.
    pub sizes: Vec<usize>,
    /// Matrix-free settings (CG tolerance, probes, preconditioner rank, …).
    pub settings: MatrixFreeParams,
    /// Noise variance $\sigma^2$.
    pub noise: f64,
    /// Seed of the network and the data.
    pub seed: u64,
}

impl Default for DeviceBenchConfig {
    /// The 803k MLP at $n \in \{1000, 10^4, 10^5\}$, $\sigma^2 = 0.1$, $s^2 = 1$, CG to
    /// $10^{-2}$ relative residual with 4 SLQ probes and a rank-10 pivoted Cholesky
    /// preconditioner (the anchors use tolerance $10^{-2}$ with 2 probes).
    fn default() -> Self {
        Self {
            widths: SCALING_WIDTHS.to_vec(),
            sizes: vec![1_000, 10_000, 100_000],
            settings: MatrixFreeParams {
                cg_tolerance: 1e-2,
                max_iters: 200,
                probes: 4,
                precond_rank: 10,
                seed: 0,
                dense_fallback_max_n: 0,
                ..MatrixFreeParams::default()
            },
            noise: 0.1,
            seed: 0,
        }
    }
}

/// One timed size.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceBenchRow {
    /// Training points.
    pub n: usize,
    /// Wall-clock seconds of the matrix-free log-likelihood.
    pub seconds: f64,
    /// The log marginal likelihood ($\mathrm{NaN}$ if CG failed).
    pub lml: f64,
    /// CG iterations.
    pub iterations: usize,
    /// CG's largest relative residual over the right-hand sides.
    pub max_residual: f64,
    /// Standard error of the SLQ $\log\lvert A\rvert$ estimate.
    pub logdet_std_error: f64,
    /// Why the size failed, if it did (CG non-convergence is reported, not fatal).
    pub failure: Option<String>,
}

/// Times the matrix-free log-likelihood at every size on `device` (checked first).
pub fn run_device_bench(
    device: Device,
    config: &DeviceBenchConfig,
) -> Result<Vec<DeviceBenchRow>, BenchError> {
    device.check()?;
    match device {
        Device::Cpu => run_on::<CpuBackend>(&Default::default(), config),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            run_on::<ntk_ops::device::CudaBackend>(&ntk_ops::device::CudaDevice::new(i), config)
        }
        #[cfg(not(feature = "cuda"))]
        d @ Device::Cuda(_) => Err(ntk_ops::DeviceError::NotCompiled(d).into()),
    }
}

/// [`run_device_bench`] on backend `B`.
pub fn run_on<B: Backend>(
    device: &B::Device,
    config: &DeviceBenchConfig,
) -> Result<Vec<DeviceBenchRow>, BenchError>
where
    B::FloatElem: krylov::Scalar,
{
    let inputs = *config.widths.first().unwrap_or(&0);
    let mlp = MlpConfig::new(&config.widths)
        .with_activation(Activation::Tanh)
        .init::<B>(config.seed, device)
        .map_err(GpError::from)?;
    let gp_config = NtkGpParams {
        strategy: Strategy::MatrixFree,
        noise: Param::Fixed(config.noise),
        prior_scale: Param::Fixed(1.0),
        mean: MeanFunction::Zero,
        matrix_free: config.settings,
        ..NtkGpParams::default()
    };
    let mut rows = Vec::with_capacity(config.sizes.len());
    for &n in &config.sizes {
        let mut rng = SplitMix64::new(config.seed ^ (n as u64).wrapping_mul(0x9E37));
        let x = DMatrix::from_vec(n, inputs, rng.normal_vec(n * inputs));
        let y = DVector::from_vec(rng.normal_vec(n));
        let t0 = Instant::now();
        let gp = NtkGp::new(mlp.clone(), &x, &y, gp_config);
        let seconds = t0.elapsed().as_secs_f64();
        rows.push(match gp {
            Ok(gp) => {
                let lml = gp.log_marginal_likelihood();
                let st = gp
                    .matrix_free_state()
                    .ok_or_else(|| BenchError::invalid("device-bench", "no matrix-free state"))?;
                DeviceBenchRow {
                    n,
                    seconds,
                    lml,
                    iterations: st.info.iterations,
                    max_residual: st
                        .info
                        .residual_norms
                        .iter()
                        .zip(&st.info.rhs_norms)
                        .map(|(r, b)| r / b.max(f64::MIN_POSITIVE))
                        .fold(0.0, f64::max),
                    logdet_std_error: st.logdet.std_error,
                    failure: None,
                }
            }
            Err(GpError::Krylov(e)) => DeviceBenchRow {
                n,
                seconds,
                lml: f64::NAN,
                iterations: 0,
                max_residual: f64::NAN,
                logdet_std_error: f64::NAN,
                failure: Some(e.to_string()),
            },
            Err(e) => return Err(e.into()),
        });
    }
    Ok(rows)
}

/// The rows as a fixed-width text table.
pub fn table(device: Device, params: usize, rows: &[DeviceBenchRow]) -> String {
    let mut s = format!(
        "matrix-free log marginal likelihood, {params} parameters, device {device}\n{:>8} {:>10} {:>16} {:>6} {:>10} {:>10}\n",
        "n", "seconds", "log-lik", "iters", "max-resid", "logdet-se"
    );
    for r in rows {
        let _ = write!(
            s,
            "{:>8} {:>10.3} {:>16.6e} {:>6} {:>10.2e} {:>10.2e}",
            r.n, r.seconds, r.lml, r.iterations, r.max_residual, r.logdet_std_error
        );
        if let Some(f) = &r.failure {
            let _ = write!(s, "  FAILED: {}", f.lines().next().unwrap_or_default());
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_bench_matches_the_dense_likelihood_on_the_cpu() {
        let config = DeviceBenchConfig {
            widths: vec![5, 16, 16, 1],
            sizes: vec![30, 60],
            settings: MatrixFreeParams {
                cg_tolerance: 1e-10,
                probes: 200,
                ..DeviceBenchConfig::default().settings
            },
            ..DeviceBenchConfig::default()
        };
        let rows = run_device_bench(Device::Cpu, &config).unwrap();
        assert_eq!(rows.len(), 2);
        // The dense reference on the same data.
        let mlp = MlpConfig::new(&config.widths)
            .with_activation(Activation::Tanh)
            .init::<CpuBackend>(config.seed, &Default::default())
            .unwrap();
        for row in &rows {
            let n = row.n;
            let mut rng = SplitMix64::new(config.seed ^ (n as u64).wrapping_mul(0x9E37));
            let x = DMatrix::from_vec(n, 5, rng.normal_vec(n * 5));
            let y = DVector::from_vec(rng.normal_vec(n));
            let dense = NtkGp::new(
                mlp.clone(),
                &x,
                &y,
                NtkGpParams {
                    strategy: Strategy::Dense,
                    noise: Param::Fixed(config.noise),
                    ..NtkGpParams::default()
                },
            )
            .unwrap();
            let want = dense.log_marginal_likelihood();
            assert!(row.failure.is_none(), "{row:?}");
            assert!(row.max_residual <= 1e-10, "{row:?}");
            assert!(
                (row.lml - want).abs() <= 4.0 * row.logdet_std_error + 1e-6,
                "n = {n}: {} vs dense {want} (SLQ se {})",
                row.lml,
                row.logdet_std_error
            );
        }
        let t = table(Device::Cpu, mlp.n_params(), &rows);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.contains("device cpu"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn device_bench_on_cuda_without_the_feature_is_a_typed_error() {
        let e = run_device_bench(Device::Cuda(0), &DeviceBenchConfig::default()).unwrap_err();
        assert!(matches!(e, BenchError::Device(_)), "{e:?}");
        assert!(
            e.to_string().contains("rebuild with --features cuda"),
            "{e}"
        );
    }
}
