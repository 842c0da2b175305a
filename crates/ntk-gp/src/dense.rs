//! The dense strategy on a structured NTK, in `f64` or `f32`.
//!
//! For a dense chain (an MLP, optionally with its (mean, scale) head) the kernel's lower
//! triangle comes from the structured factors ([`HostNtk::lower_into`]: $2N^2 S$ flops for
//! $S = \sum_l (h_{l-1} + h_l)$) straight into the storage of a blocked Cholesky
//! ([`cholesky_blocked`]) of $A = s^2K + \sigma^2 I = LL^\top$, in the precision `T`. With
//! $z = L^{-1}r$ (in f64):
//!
//! - $\log p(y) = -\tfrac12\lVert z\rVert^2 - \sum_i \log L_{ii} - \tfrac n2\log 2\pi$;
//! - with $V = L^{-1}K(X, X_*)$ (one blocked triangular solve, $n^2m$ flops), the predictive
//!   mean $\mu_* + s^2 V^\top z$ and latent variance
//!   $s^2 k(x_*, x_*) - s^4\lVert V_{:,j}\rVert^2$, with no solve by $L^\top$.
//!
//! `f32` halves the memory and doubles the GEMM rate of the kernel and the factorization (the
//! anchors' precision for large networks); its error is that of f32 rounding amplified by the
//! conditioning of $A$ (measured in `docs/src/performance.md`).

use std::time::Instant;

use nalgebra::{DMatrix, DVector, RealField};
use ntk_ops::HostNtk;
use serde::{Deserialize, Serialize};

use crate::chol::{block_for, cholesky_blocked, solve_lower_blocked, solve_vector};
use crate::error::GpError;
use crate::exact::{Hyper, Prediction};

/// The floating-point precision of the dense strategy's kernel and factorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// `f64` (the default).
    #[default]
    F64,
    /// `f32`: half the memory, twice the matrix-product rate.
    F32,
}

/// How the dense solve went: seconds and flops of its two stages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DenseReport {
    /// The precision it ran in.
    pub precision: Precision,
    /// Seconds for the structured factors (the training points' forward and backward passes)
    /// and the kernel's lower triangle.
    pub kernel_s: f64,
    /// Flops of the kernel's blocks ($2rcS$ per $r\times c$ block).
    pub kernel_flops: f64,
    /// Seconds of the Cholesky factorization ($n^3/3$ flops).
    pub factor_s: f64,
}

/// The conditioned dense GP on structured factors.
#[derive(Debug, Clone)]
pub(crate) struct DenseGp<T> {
    /// The training points' factors, for the cross-kernels.
    host: HostNtk<T>,
    /// The lower Cholesky factor of $s^2K + \sigma^2 I$ (upper triangle: scratch).
    l: DMatrix<T>,
    /// $z = L^{-1}r$.
    z: DVector<f64>,
    hyper: Hyper,
    report: DenseReport,
}

/// The test points' kernels against the training points: $K(X, X_*)$ and $\operatorname{diag}
/// K(X_*, X_*)$.
pub(crate) type TestKernels<T> = (DMatrix<T>, Vec<T>);

impl<T> DenseGp<T>
where
    T: RealField + Copy + Into<f64>,
{
    /// Conditions on the residuals `r` at `hyper`: the kernel from `host` (or `kernel`, its full
    /// matrix when the caller already formed it), then the factorization. With `test`, that
    /// set's kernels are formed while the factorization runs (it leaves part of the second
    /// core idle below $n \approx 10^4$) and returned. `factors_s`, the seconds the caller spent
    /// on `host`, is counted in the report's kernel time.
    pub(crate) fn new(
        host: HostNtk<T>,
        kernel: Option<DMatrix<T>>,
        r: &DVector<f64>,
        hyper: Hyper,
        test: Option<&HostNtk<T>>,
        factors_s: f64,
    ) -> Result<(Self, Option<TestKernels<T>>), GpError> {
        hyper.check()?;
        let n = r.len();
        if host.rows() != n {
            return Err(GpError::Shape {
                what: "kernel rows vs targets",
                expected: n,
                got: host.rows(),
            });
        }
        let t0 = Instant::now();
        let panel = ntk_ops::host_ntk::panel_for(n);
        let (mut a, kernel_flops) = match kernel {
            Some(k) => (k, 0.0),
            None => {
                let mut k = DMatrix::<T>::zeros(n, n);
                host.lower_into(&mut k, panel)?;
                let flops = (0..n)
                    .step_by(panel)
                    .map(|j| host.block_flops(n - j, panel.min(n - j)))
                    .sum();
                (k, flops)
            }
        };
        let (s2, noise) = (
            nalgebra::convert::<f64, T>(hyper.prior_scale),
            nalgebra::convert::<f64, T>(hyper.noise),
        );
        for j in 0..n {
            let col = &mut a.as_mut_slice()[j * n..(j + 1) * n];
            if hyper.prior_scale != 1.0 {
                col[j..].iter_mut().for_each(|v| *v *= s2);
            }
            col[j] += noise;
        }
        let kernel_s = factors_s + t0.elapsed().as_secs_f64();
        let factor = |a: &mut DMatrix<T>| {
            let t1 = Instant::now();
            cholesky_blocked(a, block_for(n))
                .map_err(|e| match e {
                    GpError::NotPositiveDefinite { .. } => GpError::NotPositiveDefinite {
                        what: "s²K + σ²I",
                    },
                    other => other,
                })
                .map(|()| t1.elapsed().as_secs_f64())
        };
        let kernels = || {
            test.map(|t| Ok::<_, GpError>((host.cross(t)?, t.diagonal())))
                .transpose()
        };
        // Small problems stay on this thread (a rayon hand-off costs more than they take).
        let (factor_s, test) = if n >= 256 && test.is_some() {
            rayon::join(|| factor(&mut a), kernels)
        } else {
            (factor(&mut a), kernels())
        };
        let (factor_s, test) = (factor_s?, test?);
        let z = solve_vector(&a, r, false);
        Ok((
            Self {
                host,
                l: a,
                z,
                hyper,
                report: DenseReport {
                    precision: if std::mem::size_of::<T>() == 4 {
                        Precision::F32
                    } else {
                        Precision::F64
                    },
                    kernel_s,
                    kernel_flops,
                    factor_s,
                },
            },
            test,
        ))
    }

    pub(crate) fn report(&self) -> &DenseReport {
        &self.report
    }

    /// $\log\lvert A\rvert = 2\sum_i\log L_{ii}$.
    pub(crate) fn log_det(&self) -> f64 {
        let n = self.z.len();
        2.0 * (0..n)
            .map(|i| Into::<f64>::into(self.l[(i, i)]).ln())
            .sum::<f64>()
    }

    /// $r^\top A^{-1} r = \lVert z\rVert^2$.
    pub(crate) fn inv_quad(&self) -> f64 {
        self.z.norm_squared()
    }

    pub(crate) fn log_marginal_likelihood(&self) -> f64 {
        -0.5 * self.inv_quad()
            - 0.5 * self.log_det()
            - 0.5 * self.z.len() as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// The test points' kernels.
    pub(crate) fn test_kernels(&self, test: &HostNtk<T>) -> Result<TestKernels<T>, GpError> {
        Ok((self.host.cross(test)?, test.diagonal()))
    }

    /// $V = L^{-1}K(X, X_*)$, in place.
    fn whiten(&self, mut cross: DMatrix<T>) -> Result<DMatrix<T>, GpError> {
        solve_lower_blocked(&self.l, &mut cross, block_for(self.z.len()))?;
        Ok(cross)
    }

    /// Predictive mean and latent variance from the test kernels, with prior mean `prior`.
    pub(crate) fn predict(
        &self,
        (cross, diag): TestKernels<T>,
        prior: DVector<f64>,
    ) -> Result<Prediction, GpError> {
        let m = cross.ncols();
        let v = self.whiten(cross)?;
        let s2 = self.hyper.prior_scale;
        let (mut mean, mut var, mut clamped) = (prior, DVector::zeros(m), 0);
        for j in 0..m {
            let col = v.column(j);
            let (dot, sq) = col
                .iter()
                .zip(self.z.iter())
                .fold((0.0, 0.0), |(d, q), (a, z)| {
                    let a: f64 = (*a).into();
                    (d + a * z, q + a * a)
                });
            mean[j] += s2 * dot;
            let vj = s2 * Into::<f64>::into(diag[j]) - s2 * s2 * sq;
            var[j] = if vj < 0.0 {
                clamped += 1;
                0.0
            } else {
                vj
            };
        }
        Ok(Prediction { mean, var, clamped })
    }

    /// Predictive mean and full latent covariance
    /// $s^2K(X_*, X_*) - s^4 V^\top V$.
    pub(crate) fn predict_cov(
        &self,
        cross: DMatrix<T>,
        test: DMatrix<T>,
        prior: DVector<f64>,
    ) -> Result<(DVector<f64>, DMatrix<f64>), GpError> {
        let v = self.whiten(cross)?.map(Into::<f64>::into);
        let s2 = self.hyper.prior_scale;
        let mean = prior + v.tr_mul(&self.z) * s2;
        let cov = test.map(Into::<f64>::into) * s2 - v.tr_mul(&v) * (s2 * s2);
        Ok((mean, cov))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_ops::{DefaultBackend, MlpConfig};

    /// The structured solve in f64 against an explicit kernel and nalgebra's Cholesky; f32
    /// within its rounding.
    #[test]
    fn matches_a_dense_f64_reference_in_both_precisions() {
        let cfg = MlpConfig::new(&[2, 12, 12, 1]);
        let mlp = cfg.init::<DefaultBackend>(1, &Default::default()).unwrap();
        let (n, m) = (300, 9);
        let x = DMatrix::from_fn(n, 2, |i, j| ((i * 3 + j * 7) as f64 * 0.13).sin());
        let xt = DMatrix::from_fn(m, 2, |i, j| ((i * 5 + j) as f64 * 0.29).cos());
        let r = DVector::from_fn(n, |i, _| (x[(i, 0)] * 2.0).sin() - x[(i, 1)]);
        let hyper = Hyper {
            noise: 0.03,
            prior_scale: 0.6,
        };
        // Reference.
        let h = HostNtk::<f64>::new(&mlp, &x).unwrap();
        let ht = HostNtk::<f64>::new(&mlp, &xt).unwrap();
        let k = h.symmetric().unwrap();
        let a = &k * hyper.prior_scale + DMatrix::identity(n, n) * hyper.noise;
        let chol = a.clone().cholesky().unwrap();
        let alpha = chol.solve(&r);
        let cross = h.cross(&ht).unwrap();
        let mean = cross.tr_mul(&alpha) * hyper.prior_scale;
        let kss = ht.cross(&ht).unwrap();
        let cov = &kss * hyper.prior_scale
            - cross.tr_mul(&chol.solve(&cross)) * hyper.prior_scale.powi(2);
        let lml = -0.5 * r.dot(&alpha)
            - chol.l().diagonal().map(f64::ln).sum()
            - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        let rel = |a: &DVector<f64>, b: &DVector<f64>| (a - b).amax() / b.amax();

        let (gp, test) = DenseGp::new(h.clone(), None, &r, hyper, Some(&ht), 0.0).unwrap();
        let p = gp.predict(test.unwrap(), DVector::zeros(m)).unwrap();
        assert!(rel(&p.mean, &mean) < 1e-10, "{}", rel(&p.mean, &mean));
        assert!(rel(&p.var, &cov.diagonal()) < 1e-9);
        assert!((gp.log_marginal_likelihood() - lml).abs() < 1e-9 * lml.abs());
        let (m2, c2) = gp
            .predict_cov(h.cross(&ht).unwrap(), kss.clone(), DVector::zeros(m))
            .unwrap();
        assert!(rel(&m2, &mean) < 1e-10);
        assert!((c2 - &cov).amax() < 1e-9 * cov.amax());
        // From a kernel formed by the caller: the same numbers.
        let (gk, _) = DenseGp::new(h, Some(k), &r, hyper, None, 0.0).unwrap();
        assert!((gk.log_marginal_likelihood() - lml).abs() < 1e-9 * lml.abs());

        let h32 = HostNtk::<f32>::new(&mlp, &x).unwrap();
        let ht32 = HostNtk::<f32>::new(&mlp, &xt).unwrap();
        let (g32, t32) = DenseGp::new(h32, None, &r, hyper, Some(&ht32), 0.0).unwrap();
        assert_eq!(g32.report().precision, Precision::F32);
        let p32 = g32.predict(t32.unwrap(), DVector::zeros(m)).unwrap();
        let (em, el) = (
            rel(&p32.mean, &mean),
            (g32.log_marginal_likelihood() - lml).abs() / lml.abs(),
        );
        println!("f32: mean {em:.1e}, lml {el:.1e}");
        assert!(em < 1e-3 && el < 1e-4, "mean {em:e}, lml {el:e}");
    }
}
