//! A fuzzing harness for the parsers of ntk-rs that read files a user hands over, on the
//! stable toolchain: `cargo xtask fuzz [--seconds N] [TARGET]`.
//!
//! The coverage-guided engines (cargo-fuzz / libFuzzer, AFL++'s `cargo afl`) need a nightly
//! toolchain or instrumentation this workspace does not build with, so this harness is
//! property-based: it mutates seed corpora with arbitrary-byte mutations and with mutations
//! that know each format's structure, and keeps a mutant in its in-memory corpus when the
//! parser's answer is of a kind not seen before (a new error message, or a new kind of
//! accepted input): a cheap stand-in for coverage feedback.
//!
//! - [`targets`]: what is fuzzed and what each target checks ([`Target`]): the CSV table
//!   reader, the safetensors reader, the GHCN `.dly` and station-list parsers, the GeoTIFF
//!   reader, the `--arch` SPEC parser, and the ONNX graph reader. A target must return, never panic or abort.
//! - [`mutate`]: the mutations.
//! - [`engine`]: the fuzzing loop, run in a child process.
//! - [`runner`]: the parent that runs the child under a memory cap and a per-input time
//!   limit, and turns a panic, an abort (a failed allocation, a stack overflow) or a hang into
//!   a finding saved under `target/fuzz/crashes/TARGET/`.
//!
//! A finding, once fixed, is kept as a regression test under `regressions/TARGET/`; these files
//! and the seed corpus (`corpus/TARGET/`) are replayed by `cargo test -p ntk-fuzz`.
//!
//! `cargo xtask fuzz --seconds 600 csv` fuzzes one target (all five without a name; `cargo
//! xtask ci` gives each 5 s). The binary also replays inputs (`cargo run -p ntk-fuzz --
//! replay TARGET FILE…`), shrinks a finding (`minimize TARGET FILE`), and rewrites the
//! generated binary seeds (`seeds`).
//!
//! ```
//! use ntk_fuzz::Target;
//!
//! // A target answers every input with Ok or Err.
//! assert!(Target::Arch.run(b"1-40-40-1:tanh").is_ok());
//! assert!(Target::Arch.run(b"1-18446744073709551616-1:tanh").is_err());
//! assert!(Target::Csv.run(b"x,y\n1,2\n").is_ok());
//! ```

#![warn(missing_docs)]

pub mod engine;
pub mod mutate;
pub mod runner;
pub mod targets;

pub use targets::{Outcome, Target};

/// FNV-1a, 64 bits: names saved inputs by their content, stably across runs and toolchains.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
