//! The sinusoid task distribution of the paper's first experiment (Figure 1), after Finn et al.
//! (2017): $y = A\sin(w x + b) + \varepsilon$ with
//! $A \sim \mathcal U(0.1, 5)$, $b \sim \mathcal U(0, 2\pi)$, $x \sim \mathcal U(-5, 5)$,
//! $\varepsilon \sim \mathcal N(0, (0.01A)^2)$, and $w$ from a [`FrequencyPrior`].
//!
//! The paper's appendix draws $w \sim \mathcal U(0, 2\pi)$; the authors' code (amzn/xfer
//! `finite_ntk`), which made Figure 1, draws $w \sim \mathcal U(0.5, 2)$. The code's prior is
//! the default here, since it produced the published figure; the appendix's is one setting away.
//! Predictions go on a grid over $[\min x - 2, \max x + 2]$, as in the authors' code.

use std::f64::consts::PI;

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::harness::stream_rng;

/// The prior of the frequency $w$.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrequencyPrior {
    /// $w \sim \mathcal U(0.5, 2)$, as in the authors' code (the default).
    #[default]
    AuthorsCode,
    /// $w \sim \mathcal U(0, 2\pi)$, as in the paper's appendix F.
    PaperAppendix,
}

impl FrequencyPrior {
    /// The interval $[\text{low}, \text{high})$ of the uniform prior.
    pub fn range(self) -> (f64, f64) {
        match self {
            Self::AuthorsCode => (0.5, 2.0),
            Self::PaperAppendix => (0.0, 2.0 * PI),
        }
    }
}

/// The distribution of sinusoid tasks; [`Default`] is the paper's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinusoidTasks {
    /// Bounds of the uniform amplitude prior.
    pub amplitude: (f64, f64),
    /// The frequency prior.
    pub frequency: FrequencyPrior,
    /// Bounds of the uniform input distribution.
    pub x_range: (f64, f64),
    /// Noise standard deviation as a fraction of the amplitude.
    pub noise_fraction: f64,
    /// Context (training) points per task.
    pub context_points: usize,
    /// Points of the prediction grid.
    pub grid_points: usize,
    /// How far the grid extends beyond the context points on each side.
    pub grid_margin: f64,
}

impl Default for SinusoidTasks {
    fn default() -> Self {
        Self {
            amplitude: (0.1, 5.0),
            frequency: FrequencyPrior::AuthorsCode,
            x_range: (-5.0, 5.0),
            noise_fraction: 0.01,
            context_points: 10,
            grid_points: 1000,
            grid_margin: 2.0,
        }
    }
}

/// One sinusoid task: its parameters and its sorted context points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SineTask {
    /// Amplitude $A$.
    pub amplitude: f64,
    /// Frequency $w$.
    pub frequency: f64,
    /// Phase $b$.
    pub phase: f64,
    /// Noise standard deviation $0.01A$.
    pub noise_sd: f64,
    /// Context inputs, increasing.
    pub x: Vec<f64>,
    /// Noisy context targets.
    pub y: Vec<f64>,
}

impl SineTask {
    /// The noise-free function $A\sin(wx + b)$.
    pub fn f(&self, x: f64) -> f64 {
        self.amplitude * (self.frequency * x + self.phase).sin()
    }

    /// `n` equally spaced points over $[\min x - \text{margin}, \max x + \text{margin}]$.
    pub fn grid(&self, n: usize, margin: f64) -> Vec<f64> {
        let lo = self.x.first().copied().unwrap_or(0.0) - margin;
        let hi = self.x.last().copied().unwrap_or(0.0) + margin;
        linspace(lo, hi, n)
    }
}

/// `n` equally spaced points from `lo` to `hi` inclusive (just `lo` when `n == 1`).
pub fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

impl SinusoidTasks {
    /// Checks the settings: proper, finite intervals, non-negative noise, at least one point.
    pub fn validate(&self) -> Result<(), BenchError> {
        let interval = |what: &'static str, (lo, hi): (f64, f64)| {
            if lo.is_finite() && hi.is_finite() && lo < hi {
                Ok(())
            } else {
                Err(BenchError::invalid(
                    what,
                    format!("[{lo}, {hi}) is not a proper interval"),
                ))
            }
        };
        interval("amplitude prior", self.amplitude)?;
        interval("input range", self.x_range)?;
        if !(self.noise_fraction.is_finite() && self.noise_fraction >= 0.0) {
            return Err(BenchError::invalid(
                "noise fraction",
                "must be finite and ≥ 0",
            ));
        }
        if self.context_points == 0 || self.grid_points == 0 {
            return Err(BenchError::invalid(
                "point counts",
                "context and grid need ≥ 1 point",
            ));
        }
        if !(self.grid_margin.is_finite() && self.grid_margin >= 0.0) {
            return Err(BenchError::invalid("grid margin", "must be finite and ≥ 0"));
        }
        Ok(())
    }

    /// Draws one task from `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<SineTask, BenchError> {
        self.validate()?;
        let (w_lo, w_hi) = self.frequency.range();
        let amplitude = rng.random_range(self.amplitude.0..self.amplitude.1);
        let frequency = rng.random_range(w_lo..w_hi);
        let phase = rng.random_range(0.0..2.0 * PI);
        let noise_sd = self.noise_fraction * amplitude;
        let mut x: Vec<f64> = (0..self.context_points)
            .map(|_| rng.random_range(self.x_range.0..self.x_range.1))
            .collect();
        x.sort_by(f64::total_cmp);
        let mut task = SineTask {
            amplitude,
            frequency,
            phase,
            noise_sd,
            x,
            y: Vec::new(),
        };
        task.y = self.noisy(&task, &task.x, rng)?;
        Ok(task)
    }

    /// Noisy observations $A\sin(wx_i + b) + \varepsilon_i$ of `task` at `xs`.
    pub fn noisy<R: Rng + ?Sized>(
        &self,
        task: &SineTask,
        xs: &[f64],
        rng: &mut R,
    ) -> Result<Vec<f64>, BenchError> {
        let noise = Normal::new(0.0, task.noise_sd)
            .map_err(|e| BenchError::invalid("noise standard deviation", e.to_string()))?;
        Ok(xs.iter().map(|&x| task.f(x) + noise.sample(rng)).collect())
    }

    /// `n` tasks, task `i` drawn from sub-stream `i` of `seed` (so task `i` does not depend on
    /// how many tasks are drawn).
    pub fn sample_tasks(&self, n: usize, seed: u64) -> Result<Vec<SineTask>, BenchError> {
        (0..n as u64)
            .map(|i| self.sample(&mut stream_rng(seed, i)))
            .collect()
    }

    /// The prediction grid of `task` ([`Self::grid_points`] over the context range widened by
    /// [`Self::grid_margin`]).
    pub fn grid(&self, task: &SineTask) -> Vec<f64> {
        task.grid(self.grid_points, self.grid_margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tasks() {
        let d = SinusoidTasks::default();
        let a = d.sample_tasks(5, 42).unwrap();
        assert_eq!(a, d.sample_tasks(5, 42).unwrap());
        assert_ne!(a, d.sample_tasks(5, 43).unwrap());
        // Task i does not depend on how many tasks are drawn.
        assert_eq!(a[..3], d.sample_tasks(3, 42).unwrap()[..]);
    }

    #[test]
    fn tasks_follow_the_priors() {
        for prior in [FrequencyPrior::AuthorsCode, FrequencyPrior::PaperAppendix] {
            let d = SinusoidTasks {
                frequency: prior,
                ..SinusoidTasks::default()
            };
            let (w_lo, w_hi) = prior.range();
            for t in d.sample_tasks(50, 1).unwrap() {
                assert!((0.1..5.0).contains(&t.amplitude));
                assert!((w_lo..w_hi).contains(&t.frequency));
                assert!((0.0..2.0 * PI).contains(&t.phase));
                assert_eq!(t.noise_sd, 0.01 * t.amplitude);
                assert_eq!(t.x.len(), 10);
                assert!(t.x.windows(2).all(|w| w[0] <= w[1]));
                assert!(t.x.iter().all(|x| (-5.0..5.0).contains(x)));
                for (x, y) in t.x.iter().zip(&t.y) {
                    // Noise beyond 6 sd has probability ~1e-9.
                    assert!((y - t.f(*x)).abs() <= 6.0 * t.noise_sd);
                }
            }
        }
    }

    #[test]
    fn grid_spans_context_plus_margin() {
        let d = SinusoidTasks::default();
        let t = d.sample_tasks(1, 0).unwrap().remove(0);
        let g = d.grid(&t);
        assert_eq!(g.len(), 1000);
        assert_eq!(g[0], t.x[0] - 2.0);
        assert!((g[999] - (t.x[9] + 2.0)).abs() < 1e-12);
        assert_eq!(linspace(0.0, 1.0, 3), [0.0, 0.5, 1.0]);
        assert!(linspace(0.0, 1.0, 0).is_empty());
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad = SinusoidTasks {
            amplitude: (5.0, 0.1),
            ..SinusoidTasks::default()
        };
        assert!(bad.sample_tasks(1, 0).is_err());
        let bad = SinusoidTasks {
            context_points: 0,
            ..SinusoidTasks::default()
        };
        assert!(bad.validate().is_err());
        let json = r#"{"frequency": "paper_appendix", "context_points": 5}"#;
        let d: SinusoidTasks = serde_json::from_str(json).unwrap();
        assert_eq!(d.frequency, FrequencyPrior::PaperAppendix);
        assert_eq!(d.context_points, 5);
        assert_eq!(d.grid_points, 1000);
    }
}
