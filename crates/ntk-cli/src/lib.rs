//! The library behind the `ntk` command: its input readers and output writers.
//!
//! The binary (`src/main.rs`) is the command line; these modules are what it reads and
//! writes, kept in a library so that tests and the fuzzing harness (`cargo xtask fuzz`) can
//! drive them without a process per input:
//! - [`table`]: the CSV tables (a header, numeric rows, the target column by name);
//! - [`spec`]: the `--arch` SPEC (`1-40-40-1:tanh`);
//! - [`output`]: prediction tables and all-or-nothing file writes;
//! - [`memory`]: `--max-memory` sizes, available and peak resident memory;
//! - [`progress`]: the delayed progress line of long runs;
//! - [`error`]: the command's error type and its exit codes.

pub mod error;
pub mod memory;
pub mod output;
pub mod progress;
pub mod spec;
pub mod table;
