//! Test metrics of Gaussian predictives: ntk-gp's [`ntk_gp::metrics`], which the experiments
//! and the `ntk` command share.

pub use ntk_gp::metrics::*;
