//! `chain-sim-proc`: the `chain-sim` binary, built inside this package so that its tests
//! get its path (`CARGO_BIN_EXE_chain-sim-proc`; Cargo gives a test the binaries of its
//! own package only). Its `main` is `chain-sim`'s own (`chain_sim::cli::main`):
//! the same flags, start-up, ledger dump and shutdown, built from the same sources as the
//! test, so a test never runs a stale or missing binary.

fn main() -> std::process::ExitCode {
    chain_sim::cli::main()
}
