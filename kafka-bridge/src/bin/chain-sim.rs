//! `chain-sim`: the chain and its gateway for development, tests and demos. Its command
//! line lives in the library ([`kafka_bridge::sim::cli`]) so that other packages' tests
//! can build the same binary under a name of their own (Cargo gives a test the
//! binaries of its own package only).

fn main() -> std::process::ExitCode {
    kafka_bridge::sim::cli::main()
}
