//! `mes-api-proc`: the `mes-api` binary, built inside this package so that its tests
//! get its path (`CARGO_BIN_EXE_mes-api-proc`; Cargo gives a test the binaries of its
//! own package only). Its `main` is `mes-api`'s own: the same command line, settings,
//! start-up and shutdown, for the tests that kill a server process and restart it.

fn main() -> std::process::ExitCode {
    mes_api::cli::main()
}
