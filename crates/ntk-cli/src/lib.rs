//! The library behind the `ntk` command: the command line and its readers and writers.
//!
//! The binary (`src/main.rs`) calls [`app::main`]; the modules are kept in a library so that
//! the end-to-end tests and the fuzzing harness (`cargo xtask fuzz`) can drive them:
//! - [`app`]: the commands and their flags;
//! - [`model`]: the network file (ONNX, or safetensors with `--arch` and `--layers`);
//! - [`classify`]: `ntk adapt --likelihood categorical`;
//! - [`distributed`]: `ntk adapt --distributed` (training rows split across ranks);
//! - [`table`]: the CSV tables (a header, numeric rows, the target column by name);
//! - [`spec`]: the `--arch` SPEC (`1-40-40-1:tanh`);
//! - [`output`]: prediction tables and all-or-nothing file writes;
//! - [`memory`]: `--max-memory` sizes, available and peak resident memory;
//! - [`progress`]: the delayed progress line of long runs;
//! - [`error`]: the command's error type and its exit codes.

pub mod app;
pub mod classify;
pub mod distributed;
pub mod error;
pub mod memory;
pub mod model;
pub mod output;
pub mod progress;
pub mod spec;
pub mod table;
