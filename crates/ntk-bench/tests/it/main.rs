//! Integration tests of ntk-bench, in one binary to keep links few.

mod cli;
mod sinusoid_rbf;
