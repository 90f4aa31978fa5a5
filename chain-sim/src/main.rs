//! `chain-sim`: the chain and its gateway for development, tests and demos. Its command
//! line lives in the library ([`chain_sim::cli`]) so that other packages' tests
//! can build the same binary under a name of their own (Cargo gives a test the
//! binaries of its own package only).

fn main() -> std::process::ExitCode {
    chain_sim::cli::main()
}
