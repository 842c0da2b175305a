//! Integration tests of ntk-bench, in one binary to keep links few.

mod cli;
mod distributed;
mod sinusoid_rbf;
