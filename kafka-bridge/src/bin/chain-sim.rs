//! `chain-sim`: the chain and its gateway for development, tests and demos.

fn main() {}
