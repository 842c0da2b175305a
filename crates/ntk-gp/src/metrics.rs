//! Test metrics of Gaussian predictives, and their mean ± standard error over tasks.
//!
//! Each prediction is $\mathcal N(\mu_i, v_i)$ with $v_i$ the predictive variance of the
//! observation (latent variance plus noise $\sigma^2$: [`NtkGp::noise_at`] gives the noise at
//! each test point).
//!
//! ```
//! use ntk_gp::metrics::{TaskMetrics, calibration};
//! let (y, mean, var) = ([1.0, 2.0, 3.0], [1.0, 1.0, 5.0], [1.0, 1.0, 4.0]);
//! let m = TaskMetrics::evaluate(&y, &mean, &var)?;
//! assert!((m.rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
//! assert_eq!(m.coverage95, 1.0);
//! // Standardized errors 0, 1, 1: the central 50% interval (±0.674) holds only the first,
//! // the 80% one (±1.282) all three.
//! let c = calibration(&y, &mean, &var, &[0.5, 0.8])?;
//! assert_eq!(c.observed, vec![1.0 / 3.0, 1.0]);
//! # Ok::<(), ntk_gp::GpError>(())
//! ```
//!
//! [`NtkGp::noise_at`]: crate::ntk::NtkGp::noise_at

use serde::{Deserialize, Serialize};

use crate::error::GpError;

/// The two-sided 97.5% quantile of the standard normal: $\Phi^{-1}(0.975)$.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Root-mean-square error $\sqrt{\tfrac1n\sum_i (y_i - \mu_i)^2}$.
pub fn rmse(y: &[f64], mean: &[f64]) -> Result<f64, GpError> {
    check(y, mean, None)?;
    let sse: f64 = y.iter().zip(mean).map(|(y, m)| (y - m).powi(2)).sum();
    Ok((sse / y.len() as f64).sqrt())
}

/// Mean negative log predictive density
/// $\tfrac1n\sum_i \big[\tfrac12\log(2\pi v_i) + (y_i-\mu_i)^2/(2v_i)\big]$.
/// `var` is the observation variance (noise included); every $v_i$ must be $> 0$.
pub fn nlpd(y: &[f64], mean: &[f64], var: &[f64]) -> Result<f64, GpError> {
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
pub fn coverage95(y: &[f64], mean: &[f64], var: &[f64]) -> Result<f64, GpError> {
    check(y, mean, Some(var))?;
    let inside = y
        .iter()
        .zip(mean)
        .zip(var)
        .filter(|((y, m), v)| (*y - *m).abs() <= Z_95 * v.sqrt())
        .count();
    Ok(inside as f64 / y.len() as f64)
}

/// Observed coverage of central predictive intervals at several nominal levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The nominal levels $q$ (each in $(0, 1)$).
    pub levels: Vec<f64>,
    /// The fraction of targets inside the central interval of each level.
    pub observed: Vec<f64>,
    /// The mean absolute miscalibration $\frac1L\sum_l \lvert \text{observed}_l - q_l\rvert$.
    pub error: f64,
}

/// The levels of [`calibration`] by default: $0.1, 0.2, \dots, 0.9$.
pub const CALIBRATION_LEVELS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Calibration of Gaussian predictives: for each level $q$, the fraction of targets inside
/// the central $q$ interval, i.e. with probability integral transform
/// $u_i = \Phi((y_i - \mu_i)/\sqrt{v_i})$ in $[\tfrac{1-q}2, \tfrac{1+q}2]$, using
/// $\lvert 2u_i - 1\rvert = \operatorname{erf}(\lvert z_i\rvert/\sqrt2) \le q$ (no quantile needed).
/// A calibrated model observes each level; an overconfident one observes less.
pub fn calibration(
    y: &[f64],
    mean: &[f64],
    var: &[f64],
    levels: &[f64],
) -> Result<Calibration, GpError> {
    check(y, mean, Some(var))?;
    if let Some(&value) = levels.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
        return Err(GpError::NonPositive {
            what: "calibration level (in (0, 1))",
            value,
        });
    }
    let spread: Vec<f64> = y
        .iter()
        .zip(mean)
        .zip(var)
        .map(|((y, m), v)| libm::erf((y - m).abs() / (2.0 * v).sqrt()))
        .collect();
    let observed: Vec<f64> = levels
        .iter()
        .map(|q| spread.iter().filter(|s| **s <= *q).count() as f64 / y.len() as f64)
        .collect();
    let error = if levels.is_empty() {
        0.0
    } else {
        observed
            .iter()
            .zip(levels)
            .map(|(o, q)| (o - q).abs())
            .sum::<f64>()
            / levels.len() as f64
    };
    Ok(Calibration {
        levels: levels.to_vec(),
        observed,
        error,
    })
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
    pub fn evaluate(y: &[f64], mean: &[f64], var: &[f64]) -> Result<Self, GpError> {
        Ok(Self {
            rmse: rmse(y, mean)?,
            nlpd: nlpd(y, mean, var)?,
            coverage95: coverage95(y, mean, var)?,
        })
    }
}

/// Test metrics of class probabilities: accuracy, mean negative log-likelihood and the
/// expected calibration error.
///
/// With $p_i$ the predicted probabilities of point $i$, $\hat y_i = \arg\max_c p_{ic}$ and
/// confidence $q_i = \max_c p_{ic}$: accuracy $\tfrac1m\sum_i [\hat y_i = y_i]$, NLL
/// $-\tfrac1m\sum_i \log \max(p_{i y_i}, 2^{-1022})$, and ECE $\sum_b \tfrac{|B_b|}{m}\,
/// \lvert \operatorname{acc}(B_b) - \operatorname{conf}(B_b)\rvert$ over 10 equal-width
/// confidence bins $B_b = \{i : q_i \in (b/10, (b+1)/10]\}$ (Guo et al. 2017).
///
/// ```
/// use ntk_gp::metrics::ClassMetrics;
/// let proba = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]];
/// let m = ClassMetrics::evaluate(&[0, 1, 1], &proba.map(|p| p.to_vec()))?;
/// assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-15);
/// // One point per bin: right at confidence 0.9 and 0.8, wrong at 0.6.
/// // ECE = (|1 − 0.9| + |1 − 0.8| + |0 − 0.6|) / 3.
/// assert!((m.ece - 0.3).abs() < 1e-12);
/// # Ok::<(), ntk_gp::GpError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Fraction of points whose most probable class is the label.
    pub accuracy: f64,
    /// Mean negative log probability of the label.
    pub nll: f64,
    /// Expected calibration error, 10 equal-width bins.
    pub ece: f64,
}

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

impl ClassMetrics {
    /// The metrics of labels `y` under probabilities `proba` (one row of $C$ per point).
    pub fn evaluate(y: &[usize], proba: &[Vec<f64>]) -> Result<Self, GpError> {
        if y.is_empty() {
            return Err(GpError::EmptyTask);
        }
        if proba.len() != y.len() {
            return Err(GpError::Shape {
                what: "probability rows vs labels",
                expected: y.len(),
                got: proba.len(),
            });
        }
        let mut bins = [(0usize, 0.0f64, 0.0f64); ECE_BINS];
        let (mut correct, mut nll) = (0usize, 0.0);
        for (&label, p) in y.iter().zip(proba) {
            let Some(&p_label) = p.get(label) else {
                return Err(GpError::Shape {
                    what: "a class label (must be below the number of classes)",
                    expected: p.len(),
                    got: label,
                });
            };
            crate::error::check_finite("class probabilities", p.iter())?;
            let (best, conf) =
                p.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |a, (c, v)| if v > a.1 { (c, v) } else { a },
                    );
            let hit = best == label;
            correct += usize::from(hit);
            // A probability that underflowed to 0 counts as the smallest positive one.
            nll -= p_label.max(f64::MIN_POSITIVE).ln();
            // Bin b holds (b/10, (b+1)/10]; counted by comparison, since 0.3 * 10 > 3.
            let b = (1..ECE_BINS)
                .filter(|&k| conf > k as f64 / ECE_BINS as f64)
                .count();
            bins[b].0 += 1;
            bins[b].1 += f64::from(u8::from(hit));
            bins[b].2 += conf;
        }
        let m = y.len() as f64;
        let ece = bins
            .iter()
            .filter(|b| b.0 > 0)
            .map(|&(_, hits, conf)| (hits - conf).abs() / m)
            .sum();
        Ok(Self {
            accuracy: correct as f64 / m,
            nll: nll / m,
            ece,
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
    pub fn of(values: &[f64]) -> Result<Self, GpError> {
        let n = values.len();
        if n < 2 {
            return Err(GpError::Shape {
                what: "values for a standard error (at least 2)",
                expected: 2,
                got: n,
            });
        }
        crate::error::check_finite("values for a standard error", values.iter())?;
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
fn check(y: &[f64], mean: &[f64], var: Option<&[f64]>) -> Result<(), GpError> {
    if y.is_empty() {
        return Err(GpError::EmptyTask);
    }
    let length = |what, got: usize| {
        if got == y.len() {
            Ok(())
        } else {
            Err(GpError::Shape {
                what,
                expected: y.len(),
                got,
            })
        }
    };
    length("predictive means vs test targets", mean.len())?;
    crate::error::check_finite("test targets", y.iter())?;
    crate::error::check_finite("predictive means", mean.iter())?;
    if let Some(var) = var {
        length("predictive variances vs test targets", var.len())?;
        if let Some(&value) = var.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(GpError::NonPositive {
                what: "predictive variance",
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_bins_are_half_open_on_the_left_and_nll_stays_finite() {
        // Confidence 0.3 (right) belongs to (0.2, 0.3], not with 0.35 (wrong) in (0.3, 0.4]:
        // ECE = (|1 − 0.3| + |0 − 0.35|) / 2, where one shared bin would give 0.175.
        let proba = [vec![0.3, 0.25, 0.25, 0.2], vec![0.35, 0.25, 0.2, 0.2]];
        let m = ClassMetrics::evaluate(&[0, 1], &proba).unwrap();
        assert!((m.ece - 0.525).abs() < 1e-15, "{}", m.ece);
        assert_eq!(m.accuracy, 0.5);
        // A label given probability 0 has a large, finite NLL.
        let m = ClassMetrics::evaluate(&[1], &[vec![1.0, 0.0]]).unwrap();
        assert!(m.nll.is_finite() && m.nll > 700.0, "{}", m.nll);
        assert!(ClassMetrics::evaluate(&[2], &[vec![0.5, 0.5]]).is_err());
    }

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
    fn calibration_by_hand_and_at_the_95_percent_level() {
        // |z| = 0, 1, 1: erf(|z|/√2) = 0, 0.6827, 0.6827.
        let c = calibration(&Y, &MU, &VAR, &[0.5, 0.7]).unwrap();
        assert_eq!(c.observed, vec![1.0 / 3.0, 1.0]);
        assert!((c.error - (0.5 - 1.0 / 3.0 + 0.3) / 2.0).abs() < 1e-15);
        // At q = 0.95 the interval is ±1.959964σ: the same count as coverage95.
        let (y, m, v) = ([0.0; 4], [0.0, 1.9, 1.97, -3.0], [1.0; 4]);
        let c = calibration(&y, &m, &v, &[0.95]).unwrap();
        assert_eq!(c.observed[0], coverage95(&y, &m, &v).unwrap());
        assert!(calibration(&Y, &MU, &VAR, &[1.0]).is_err());
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
