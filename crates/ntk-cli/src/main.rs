//! `ntk`: adapt a trained network to new data, with uncertainty, from the shell.
//!
//! The command line lives in the library ([`ntk_cli::app`]), so that the end-to-end tests run
//! the very same code as a process.

fn main() -> std::process::ExitCode {
    ntk_cli::app::main()
}
