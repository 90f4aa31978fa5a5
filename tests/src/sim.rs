//! `chain-sim` as a process, for the tests that must run the chain's gateway the way
//! the field does (tansu, PostgreSQL, chain-sim and mes-api as processes) and
//! observe it only from outside: through what it answers on Kafka and the ledger it
//! dumps (`--ledger-dump`, request counters included).
//!
//! Cargo gives a test the path of its own package's binaries only, so this package
//! builds `chain-sim`'s `main` (`chain_sim::cli::main`) as its binary
//! `chain-sim-proc`; tests pass `env!("CARGO_BIN_EXE_chain-sim-proc")` to
//! [`ChainSimProc::spawn`]. Cargo rebuilds it with the test, from the same sources,
//! so a test never runs a stale or missing `chain-sim` (which looking for
//! `target/debug/chain-sim` next to the test executable could).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chain_sim::LedgerState;
use mes_core::signing::SigningKey;

use crate::db::TempDir;
use crate::server::DEADLINE;

/// A `chain-sim` process with its key, starting ledger and ledger dump in a directory of
/// its own; SIGKILLed if the test ends before it is stopped.
pub struct ChainSimProc {
    child: Option<Child>,
    dump: PathBuf,
    log: PathBuf,
    /// What it printed before `ready`: its public key, the MES agent, its topics.
    pub banner: Vec<String>,
    // Last: removed after the process is gone.
    _dir: TempDir,
}

impl ChainSimProc {
    /// Starts `bin` (the `chain-sim` binary) on the test broker with signing key `key`
    /// (through `--key-file`), starting from `ledger` if given (through `--ledger`),
    /// dumping its ledger (`--ledger-dump`), and with the flags `args` (tokens, topics,
    /// gateway behaviour); returns once it printed `ready`, i.e. once a request sent
    /// to it is answered. No `MES_*`, `CHAIN_SIM_*` or `RUST_LOG` variable of the test's
    /// environment reaches it; its log (stderr, level `warn`) is kept for failures.
    pub async fn spawn(
        bin: &str,
        key: &SigningKey,
        ledger: Option<&LedgerState>,
        args: &[String],
    ) -> ChainSimProc {
        Self::spawn_on(&crate::kafka_brokers(), bin, key, ledger, args).await
    }

    /// [`ChainSimProc::spawn`] on the broker `brokers`: for the benchmarks, which take
    /// the broker as an argument.
    pub async fn spawn_on(
        brokers: &str,
        bin: &str,
        key: &SigningKey,
        ledger: Option<&LedgerState>,
        args: &[String],
    ) -> ChainSimProc {
        let dir = TempDir::create().unwrap();
        let key_file = dir.path().join("chain-sim.key");
        write_secret(&key_file, &key.to_hex());
        let dump = dir.path().join("ledger-dump.json");
        let log = dir.path().join("chain-sim.log");
        let mut command = Command::new(bin);
        for (name, _) in std::env::vars() {
            if name.starts_with("MES_") || name.starts_with("CHAIN_SIM_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command
            .env("RUST_LOG", "warn")
            .args(["--brokers", brokers])
            .arg("--key-file")
            .arg(&key_file)
            .arg("--ledger-dump")
            .arg(&dump);
        if let Some(ledger) = ledger {
            let path = dir.path().join("ledger.json");
            std::fs::write(&path, serde_json::to_vec_pretty(ledger).unwrap()).unwrap();
            command.arg("--ledger").arg(path);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting chain-sim");
        let mut sim = ChainSimProc {
            child: Some(child),
            dump,
            log,
            banner: Vec::new(),
            _dir: dir,
        };
        sim.wait_ready().await;
        sim
    }

    async fn wait_ready(&mut self) {
        let stdout = self.child.as_mut().unwrap().stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        // Reads to the end, so the process never writes into a closed pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let waited = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let mut banner = Vec::new();
            loop {
                let left = DEADLINE.saturating_sub(start.elapsed());
                match lines_rx.recv_timeout(left) {
                    Ok(line) if line == "ready" => return Ok(banner),
                    Ok(line) => banner.push(line),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(format!(
                            "chain-sim exited before `ready`; it printed {banner:?}"
                        ));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        return Err(format!(
                            "chain-sim not ready within {DEADLINE:?}; it printed {banner:?}"
                        ));
                    }
                }
            }
        })
        .await
        .unwrap();
        match waited {
            Ok(banner) => self.banner = banner,
            Err(why) => panic!("{why}; its log:\n{}", self.log_text()),
        }
    }

    /// The ledger as last dumped, waiting until the first dump is there.
    pub async fn ledger(&self) -> LedgerState {
        self.wait_ledger("the first dump", |_| true).await
    }

    /// Waits until the dumped ledger satisfies `done` (the dump is rewritten after
    /// every request the simulator handles) and returns it; fails the test after
    /// [`DEADLINE`], saying it waited for `what`.
    pub async fn wait_ledger(
        &self,
        what: &str,
        done: impl Fn(&LedgerState) -> bool,
    ) -> LedgerState {
        let start = tokio::time::Instant::now();
        loop {
            let state = std::fs::read(&self.dump)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<LedgerState>(&bytes).ok());
            if let Some(state) = state {
                if done(&state) {
                    return state;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "chain-sim's ledger never showed {what}; its counters: {:?}",
                    state.counters
                );
            } else {
                assert!(
                    start.elapsed() < DEADLINE,
                    "chain-sim never dumped its ledger to {}; its log:\n{}",
                    self.dump.display(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and waits (bounded by [`DEADLINE`]) for a clean exit: it publishes the
    /// replies it still owes, leaves the broker and writes its last dump. Fails the test
    /// if it does not stop or exits with an error.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let start = tokio::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chain-sim did not stop on SIGTERM; its log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "chain-sim exited with {status}; its log:\n{}",
            self.log_text()
        );
    }

    /// The process id, while it runs: the benchmarks read its CPU time from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChainSimProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a secret file readable by its owner only.
fn write_secret(path: &Path, text: &str) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).unwrap();
    writeln!(file, "{text}").unwrap();
}
