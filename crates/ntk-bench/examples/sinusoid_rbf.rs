//! The RBF-GP baseline on sinusoid tasks through the whole harness, written to
//! `results/sinusoid-rbf/`.
//!
//! `cargo run --release -p ntk-bench --example sinusoid_rbf -- [standard|full|quick] [SEED]`

use ntk_bench::BenchError;
use ntk_bench::harness::{self, DEFAULT_SEED, Experiment, Profile, RunContext};
use ntk_bench::rbf_baseline::SinusoidRbf;

fn main() -> Result<(), BenchError> {
    let mut args = std::env::args().skip(1);
    let profile = match args.next().as_deref() {
        None | Some("standard") => Profile::Standard,
        Some("full") => Profile::Full,
        Some("quick") => Profile::Quick,
        Some(other) => {
            return Err(BenchError::invalid(
                "profile",
                format!("`{other}`: use standard, full or quick"),
            ));
        }
    };
    let seed = match args.next() {
        None => DEFAULT_SEED,
        Some(s) => s
            .parse()
            .map_err(|e| BenchError::invalid("seed", format!("`{s}`: {e}")))?,
    };
    let mut ctx = RunContext::new("results", SinusoidRbf::NAME, seed, profile)?;
    let record = harness::run::<SinusoidRbf>(&mut ctx)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&record.summary).unwrap_or_default()
    );
    println!("outputs in {}", ctx.dir().display());
    Ok(())
}
