//! The experiment harness of ntk-rs: each experiment of the paper is a module with its
//! configuration, data, baselines, figures and report.
//!
//! - [`harness`]: the [`Experiment`](harness::Experiment) trait, [`Profile`](harness::Profile)s
//!   (the paper's settings or a quick smoke test), the [`RunContext`](harness::RunContext) that
//!   seeds random numbers, draws progress bars and writes JSON and CSV to `results/<name>/`, and
//!   the registry `ntk-bench reproduce` runs from.
//! - [`report`]: the Markdown report of a run. [`plot`]: figures as PNG and SVG.
//! - [`metrics`]: RMSE, NLPD and 95% coverage of Gaussian predictives; mean ± standard error.
//! - [`sinusoid`]: the sinusoid task distribution; [`rbf_baseline`]: the RBF-GP baseline on it.
//! - [`sinusoid_transfer`], [`precipitation`], [`spatial_transfer`]: the paper's experiments
//!   (registered): sinusoid, precipitation and spatial (malaria) transfer.
//! - [`scaling`]: time of the log marginal likelihood against n and width (Figure 4);
//!   [`fisher`]: finite-difference vs exact Fisher-vector products (Figures 5, 6);
//!   [`perf`]: peak memory, load, GEMM peak, power-law fits.
//! - [`compare`]: the Python anchors' problems solved by ntk-rs (`ntk-bench compare`).
//! - [`data`]: the precipitation and spatial data sets: parsers, downloads' readers, preprocessing.
//!
//! ```
//! use ntk_bench::harness::{self, Experiment, ExperimentConfig, Profile, RunContext, Summary};
//! use ntk_bench::BenchError;
//! use rand::RngExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Config { draws: usize }
//! impl Default for Config { fn default() -> Self { Self { draws: 1000 } } }
//! impl ExperimentConfig for Config { fn quick() -> Self { Self { draws: 10 } } }
//!
//! struct Mean(Config);
//! impl Experiment for Mean {
//!     const NAME: &'static str = "mean";
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, BenchError> { Ok(Self(config)) }
//!     fn run(&self, ctx: &mut RunContext) -> Result<Summary, BenchError> {
//!         let mut rng = ctx.rng();
//!         let xs: Vec<f64> = (0..self.0.draws).map(|_| rng.random()).collect();
//!         ctx.write_csv("draws", &["x"], xs.iter().map(|x| [x]))?;
//!         Ok(Summary::default().metric("mean", xs.iter().sum::<f64>() / xs.len() as f64))
//!     }
//! }
//!
//! let root = tempfile::tempdir().unwrap();
//! let mut ctx = RunContext::new(root.path(), Mean::NAME, 0, Profile::Quick)?;
//! let record = harness::run::<Mean>(&mut ctx)?;
//! assert!(root.path().join("mean/draws.csv").is_file());
//! assert!((0.0..1.0).contains(&record.summary.metrics["mean"]));
//! # Ok::<(), BenchError>(())
//! ```

pub mod compare;
pub mod data;
pub mod device_bench;
pub mod distributed;
pub mod error;
pub mod fisher;
pub mod harness;
pub mod metrics;
pub mod perf;
pub mod plot;
pub mod precipitation;
pub mod rbf_baseline;
pub mod report;
pub mod scaling;
pub mod sinusoid;
pub mod sinusoid_transfer;
pub mod spatial_transfer;

pub use error::BenchError;

/// The experiments this harness knows how to run, by name: the names of
/// [`harness::REGISTRY`].
///
/// `ntk-bench reproduce` (which `cargo xtask reproduce` runs) takes these names.
pub const EXPERIMENTS: &[&str] = &["sinusoid", "precipitation", "malaria", "scaling", "fisher"];

/// The experiments of the paper, in the order the paper presents them.
pub const PAPER_EXPERIMENTS: &[&str] =
    &["sinusoid", "precipitation", "malaria", "scaling", "fisher"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_match_the_registry_and_the_paper() {
        let registered: Vec<&str> = harness::REGISTRY.iter().map(|e| e.name).collect();
        assert_eq!(registered, EXPERIMENTS);
        assert!(EXPERIMENTS.iter().all(|e| PAPER_EXPERIMENTS.contains(e)));
    }
}
