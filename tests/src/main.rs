//! The `ntk` command, built inside the end-to-end test package (see Cargo.toml).

fn main() -> std::process::ExitCode {
    ntk_cli::app::main()
}
