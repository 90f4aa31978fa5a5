//! The `mes-api` binary, built inside this package so that the console's end-to-end
//! tests can run the real server as a process (`CARGO_BIN_EXE_console-server`): its
//! `main` is `mes-api`'s, line for line.

fn main() -> std::process::ExitCode {
    mes_api::cli::main()
}
