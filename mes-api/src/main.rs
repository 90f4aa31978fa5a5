//! The `mes-api` binary; everything lives in the library (`mes_api::cli`).

fn main() -> std::process::ExitCode {
    mes_api::cli::main()
}
