//! The experiment harness of ntk-rs: each experiment of the paper is a module
//! with its configuration, data, baselines, figures and report.

pub mod data;

/// The experiments this harness knows how to run, by name.
///
/// Empty until the first experiment lands; `cargo xtask reproduce` reads it.
pub const EXPERIMENTS: &[&str] = &[];

/// The experiments of the paper, in the order the paper presents them.
pub const PAPER_EXPERIMENTS: &[&str] =
    &["sinusoid", "precipitation", "malaria", "scaling", "fisher"];
