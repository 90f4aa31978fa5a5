//! The `mes-api` binary: the HTTP server, operator console and jobs of mes-bridge.
//!
//! The server lands with issue 4 ("mes-api: the Rocket server"). Until then this
//! binary exists so that the README's command works and says where things stand.

fn main() {
    println!(
        "mes-api {}: the server is not built yet.\n\
         What exists today: the wire codec, signing, day-report coding and storage in\n\
         mes-core (see docs/protocol.md), and the test setup (./scripts/test).\n\
         The embedded demo (SQLite, in-process broker and simulated chain) arrives with\n\
         the server issue; this command will then start it.",
        env!("CARGO_PKG_VERSION")
    );
}
