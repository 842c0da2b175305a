//! Measuring performance: peak memory, machine load, the matrix-product peak (roofline), and
//! power-law fits of time against size.

use std::time::Instant;

use burn::prelude::Backend;
use burn::tensor::{Distribution, Tensor};
use ntk_ops::convert::float_opts;
use serde::{Deserialize, Serialize};

/// Resets the process's peak resident set size (`VmHWM`) to the current one, so the next
/// [`peak_rss_mib`] is the peak of what runs in between. Linux only (`/proc/self/clear_refs`);
/// returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident set size (`VmHWM` in `/proc/self/status`) in MiB, `NaN` where unknown.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:").map_or(f64::NAN, |k| k / 1024.0)
}

/// The current resident set size (`VmRSS`) in MiB, `NaN` where unknown.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:").map_or(f64::NAN, |k| k / 1024.0)
}

fn status_kib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The 1-minute load average (`/proc/loadavg`), `NaN` where unknown: recorded next to every
/// timing, since the machine is shared.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Seconds taken by `f`, with its result.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = Instant::now();
    let out = f();
    (out, t0.elapsed().as_secs_f64())
}

/// A least-squares power law $t \approx a\,n^b$ fitted on $\log t$ against $\log n$.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    /// The exponent $b$.
    pub exponent: f64,
    /// The prefactor $a$.
    pub prefactor: f64,
    /// How many points were fitted.
    pub points: usize,
}

/// Fits [`PowerLaw`] to the points with positive `n` and `t`; `None` for fewer than two
/// distinct sizes.
pub fn fit_power_law(n: &[f64], t: &[f64]) -> Option<PowerLaw> {
    let pts: Vec<(f64, f64)> = n
        .iter()
        .zip(t)
        .filter(|(n, t)| **n > 0.0 && **t > 0.0 && n.is_finite() && t.is_finite())
        .map(|(n, t)| (n.ln(), t.ln()))
        .collect();
    let m = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / m;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / m;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if pts.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    Some(PowerLaw {
        exponent: b,
        prefactor: (my - b * mx).exp(),
        points: pts.len(),
    })
}

/// The best of `reps` timings of a square `size`² matrix product on backend `B` (burn-ndarray:
/// the `matrixmultiply` GEMM the products run on), in GFLOP/s ($2\,\text{size}^3$ flops).
pub fn gemm_gflops<B: Backend>(size: usize, reps: usize) -> f64 {
    let dev = Default::default();
    let a = Tensor::<B, 2>::random([size, size], Distribution::Default, float_opts::<B>(&dev));
    let b = Tensor::<B, 2>::random([size, size], Distribution::Default, float_opts::<B>(&dev));
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let (c, s) = timed(|| {
            let c = a.clone().matmul(b.clone());
            let _ = B::sync(&dev);
            c
        });
        drop(c);
        best = best.min(s);
    }
    2.0 * (size as f64).powi(3) / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_recovers_an_exponent() {
        let n = [100.0, 200.0, 400.0, 800.0];
        let t: Vec<f64> = n.iter().map(|n: &f64| 3e-6 * n.powf(2.5)).collect();
        let fit = fit_power_law(&n, &t).unwrap();
        assert!((fit.exponent - 2.5).abs() < 1e-12);
        assert!((fit.prefactor / 3e-6 - 1.0).abs() < 1e-9);
        assert_eq!(fit.points, 4);
        assert!(fit_power_law(&[100.0], &[1.0]).is_none());
        assert!(fit_power_law(&[100.0, 100.0], &[1.0, 2.0]).is_none());
        assert!(
            fit_power_law(&[100.0, 200.0, -1.0], &[1.0, 2.0, 3.0])
                .unwrap()
                .points
                == 2
        );
    }

    #[test]
    fn memory_and_load_are_readable_on_linux() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        assert!(rss_mib() > 0.0);
        let _big = vec![1u8; 64 << 20].iter().map(|&b| b as u64).sum::<u64>();
        assert!(peak_rss_mib() >= rss_mib() - 1.0);
        assert!(load_average() >= 0.0);
    }
}
