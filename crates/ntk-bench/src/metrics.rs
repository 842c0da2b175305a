//! Test metrics of Gaussian predictives, and their mean ± standard error over tasks.
//!
//! Each prediction is $\mathcal N(\mu_i, v_i)$ with $v_i$ the predictive variance of the
//! observation (latent variance plus noise $\sigma^2$).

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// The two-sided 97.5% quantile of the standard normal: $\Phi^{-1}(0.975)$.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Root-mean-square error $\sqrt{\tfrac1n\sum_i (y_i - \mu_i)^2}$.
pub fn rmse(y: &[f64], mean: &[f64]) -> Result<f64, BenchError> {
    check(y, mean, None)?;
    let sse: f64 = y.iter().zip(mean).map(|(y, m)| (y - m).powi(2)).sum();
    Ok((sse / y.len() as f64).sqrt())
}

/// Mean negative log predictive density
/// $\tfrac1n\sum_i \big[\tfrac12\log(2\pi v_i) + (y_i-\mu_i)^2/(2v_i)\big]$.
/// `var` is the observation variance (noise included); every $v_i$ must be $> 0$.
pub fn nlpd(y: &[f64], mean: &[f64], var: &[f64]) -> Result<f64, BenchError> {
    check(y, mean, Some(var))?;
    let total: f64 = y
        .iter()
        .zip(mean)
        .zip(var)
        .map(|((y, m), v)| {
            0.5 * (2.0 * std::f64::consts::PI * v).ln() + (y - m).powi(2) / (2.0 * v)
        })
        .sum();
    Ok(total / y.len() as f64)
}

/// The fraction of targets inside the central 95% predictive interval
/// $|y_i - \mu_i| \le z_{0.975}\sqrt{v_i}$ (ideally 0.95).
pub fn coverage95(y: &[f64], mean: &[f64], var: &[f64]) -> Result<f64, BenchError> {
    check(y, mean, Some(var))?;
    let inside = y
        .iter()
        .zip(mean)
        .zip(var)
        .filter(|((y, m), v)| (*y - *m).abs() <= Z_95 * v.sqrt())
        .count();
    Ok(inside as f64 / y.len() as f64)
}

/// The three test metrics of one task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// [`rmse`].
    pub rmse: f64,
    /// [`nlpd`].
    pub nlpd: f64,
    /// [`coverage95`].
    pub coverage95: f64,
}

impl TaskMetrics {
    /// All three metrics of targets `y` under predictives $\mathcal N(\mu_i, v_i)$.
    pub fn evaluate(y: &[f64], mean: &[f64], var: &[f64]) -> Result<Self, BenchError> {
        Ok(Self {
            rmse: rmse(y, mean)?,
            nlpd: nlpd(y, mean, var)?,
            coverage95: coverage95(y, mean, var)?,
        })
    }
}

/// A mean over tasks with its standard error $s/\sqrt n$ ($s$ the sample standard deviation,
/// denominator $n-1$).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStderr {
    /// The mean.
    pub mean: f64,
    /// The standard error of the mean.
    pub stderr: f64,
    /// How many values.
    pub n: usize,
}

impl MeanStderr {
    /// Mean and standard error of `values` (at least two, all finite).
    pub fn of(values: &[f64]) -> Result<Self, BenchError> {
        let n = values.len();
        if n < 2 {
            return Err(BenchError::invalid(
                "values for a standard error",
                format!("need at least 2, got {n}"),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(BenchError::invalid(
                "values for a standard error",
                format!("non-finite value at index {i}"),
            ));
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Ok(Self {
            mean,
            stderr: (var / n as f64).sqrt(),
            n,
        })
    }
}

impl std::fmt::Display for MeanStderr {
    /// `mean ± stderr`, with the precision given (default 3 significant decimals).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(3);
        write!(f, "{:.p$} ± {:.p$}", self.mean, self.stderr)
    }
}

/// Checks equal, non-zero lengths, finite values and positive variances.
fn check(y: &[f64], mean: &[f64], var: Option<&[f64]>) -> Result<(), BenchError> {
    if y.is_empty() {
        return Err(BenchError::invalid("test targets", "no points"));
    }
    let lengths_ok = mean.len() == y.len() && var.is_none_or(|v| v.len() == y.len());
    if !lengths_ok {
        return Err(BenchError::invalid(
            "predictions",
            format!(
                "lengths differ: {} targets, {} means, {} variances",
                y.len(),
                mean.len(),
                var.map_or(0, <[f64]>::len)
            ),
        ));
    }
    if let Some(i) = y.iter().chain(mean).position(|v| !v.is_finite()) {
        return Err(BenchError::invalid(
            "targets or means",
            format!("non-finite value at index {i}"),
        ));
    }
    if let Some(i) = var.and_then(|v| v.iter().position(|v| !(v.is_finite() && *v > 0.0))) {
        return Err(BenchError::invalid(
            "predictive variances",
            format!("variance {i} is not positive and finite"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const Y: [f64; 3] = [1.0, 2.0, 3.0];
    const MU: [f64; 3] = [1.0, 1.0, 5.0];
    const VAR: [f64; 3] = [1.0, 1.0, 4.0];

    #[test]
    fn rmse_by_hand() {
        // Errors 0, 1, −2: MSE = 5/3.
        assert!((rmse(&Y, &MU).unwrap() - 1.290_994_448_735_805_6).abs() < 1e-15);
    }

    #[test]
    fn nlpd_by_hand() {
        // ½log 2π + 0, ½log 2π + ½, ½log 8π + 4/8: mean = ½log 2π + (log 2 + 1)/3.
        let expected = 0.918_938_533_204_672_7 + 0.564_382_393_519_981_8;
        assert!((nlpd(&Y, &MU, &VAR).unwrap() - expected).abs() < 1e-14);
    }

    #[test]
    fn coverage_by_hand() {
        // Standardized errors 0, 1, 1: all inside ±1.96.
        assert_eq!(coverage95(&Y, &MU, &VAR).unwrap(), 1.0);
        // |e| = 0, 1.9, 2.0, 3 with unit variance: two of four inside.
        let c = coverage95(&[0.0; 4], &[0.0, 1.9, 2.0, -3.0], &[1.0; 4]).unwrap();
        assert_eq!(c, 0.5);
    }

    #[test]
    fn mean_stderr_by_hand() {
        // Sample variance of 1..4 is 5/3; stderr = sqrt(5/3)/2.
        let m = MeanStderr::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m.mean, 2.5);
        assert!((m.stderr - 0.645_497_224_367_902_8).abs() < 1e-15);
        assert_eq!(m.n, 4);
        assert_eq!(format!("{m:.2}"), "2.50 ± 0.65");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(rmse(&[], &[]).is_err());
        assert!(rmse(&[1.0], &[1.0, 2.0]).is_err());
        assert!(nlpd(&[1.0], &[1.0], &[0.0]).is_err());
        assert!(nlpd(&[1.0], &[1.0], &[]).is_err());
        assert!(coverage95(&[f64::NAN], &[1.0], &[1.0]).is_err());
        assert!(MeanStderr::of(&[1.0]).is_err());
        assert!(MeanStderr::of(&[1.0, f64::INFINITY]).is_err());
        let all = TaskMetrics::evaluate(&Y, &MU, &VAR).unwrap();
        assert_eq!(all.coverage95, 1.0);
    }
}
