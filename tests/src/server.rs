//! `mes-api` as a process for the tests that stop, kill and restart a server or watch
//! it from outside: spawn it on a free port with a clean environment, wait until it is
//! ready, talk plain HTTP to it.
//!
//! Cargo gives a test the path of its own package's binaries only, through
//! `env!("CARGO_BIN_EXE_mes-api-proc")`; tests pass that path to [`ServerProc::spawn`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait for a server to start, stop or deliver in these tests: a broken server
/// fails a test after this long, never hangs it.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The `MES_TOPIC_*` settings that point a server at the chain topics `names` (a
/// simulator's, on topics of its own).
pub fn topic_env(names: &kafka_bridge::kafka::TopicNames) -> Vec<(String, String)> {
    [
        ("MES_TOPIC_PARTNER_LIST", &names.partner_list),
        ("MES_TOPIC_PARTNER_ANSWER", &names.partner_answer),
        ("MES_TOPIC_ORDER_LIST", &names.order_list),
        ("MES_TOPIC_ORDER_ANSWER", &names.order_answer),
        ("MES_TOPIC_RECORD_TYPE", &names.record_type),
        ("MES_TOPIC_RECORD", &names.record),
        ("MES_TOPIC_REPLY", &names.reply),
    ]
    .into_iter()
    .map(|(setting, name)| (setting.to_owned(), name.clone()))
    .collect()
}

/// A server process; SIGKILLed if the test ends before it is stopped.
pub struct ServerProc {
    child: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
}

impl ServerProc {
    /// Starts `bin` (the `mes-api` binary) with `env` and no other `MES_*`/`ROCKET_*`
    /// variable from the test's environment, on a free port. Unless `env` says
    /// otherwise (`MES_REPLY_TRUST`, `MES_GATEWAY_KEY_FILE`), the server accepts
    /// unsigned replies, as the simulator sends them by default.
    pub fn spawn(bin: &str, env: &[(String, String)]) -> ServerProc {
        let (mut command, port) = command(bin, env);
        command.env("ROCKET_LOG_LEVEL", "off");
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "warn");
        }
        let child = command.spawn().expect("starting mes-api");
        ServerProc {
            child: Some(child),
            port,
        }
    }

    /// Starts `bin` as [`ServerProc::spawn`] does, but with the server's own logging
    /// defaults (no `RUST_LOG` nor `ROCKET_LOG_LEVEL` unless `env` has them: what a user
    /// sees) and everything it writes collected into the returned [`Output`].
    pub fn spawn_with_output(bin: &str, env: &[(String, String)]) -> (ServerProc, Output) {
        let (mut command, port) = command(bin, env);
        if !env.iter().any(|(k, _)| k == "RUST_LOG") {
            command.env_remove("RUST_LOG");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mes-api");
        let output = Output::default();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            output.collect(Stream::Stdout, stdout),
            output.collect(Stream::Stderr, stderr),
        ];
        *output.readers.lock().unwrap() = readers;
        let server = ServerProc {
            child: Some(child),
            port,
        };
        (server, output)
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("mes-api exited early: {status}");
        }
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self) {
        let start = tokio::time::Instant::now();
        loop {
            self.assert_running();
            if let Ok((200, _)) = http(self.port, "GET", "/health/ready", None, None).await {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "mes-api did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: no clean-up, like a crash or a power cut.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed, not stopped: {status}");
    }

    /// SIGTERM: Rocket's graceful shutdown (relay, daily job, bridge).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let start = tokio::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("mes-api did not stop on SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `bin` with `env` and no other `MES_*`/`ROCKET_*` variable from the test's
/// environment, on a free port, accepting unsigned replies unless `env` decides.
fn command(bin: &str, env: &[(String, String)]) -> (Command, u16) {
    let port = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut command = Command::new(bin);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_PORT", port.to_string());
    if !env
        .iter()
        .any(|(k, _)| k == "MES_REPLY_TRUST" || k == "MES_GATEWAY_KEY_FILE")
    {
        command.env("MES_REPLY_TRUST", "unsigned");
    }
    (command, port)
}

/// Which of a process's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What a [`ServerProc::spawn_with_output`] process wrote, line by line, in the order
/// the lines were read (each stream in its own order).
#[derive(Clone, Default)]
pub struct Output {
    lines: Arc<Mutex<Vec<(Stream, String)>>>,
    readers: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Output {
    fn collect(
        &self,
        stream: Stream,
        from: impl Read + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let lines = Arc::clone(&self.lines);
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((stream, line));
            }
        })
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<(Stream, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines of `stream` so far.
    pub fn of(&self, stream: Stream) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, line)| line)
            .collect()
    }

    /// Waits until the process closed both streams (it exited), for at most
    /// [`DEADLINE`]; then every line it wrote is in.
    pub fn wait_closed(&self) {
        let readers: Vec<_> = self.readers.lock().unwrap().drain(..).collect();
        let start = std::time::Instant::now();
        for reader in readers {
            while !reader.is_finished() {
                assert!(start.elapsed() < DEADLINE, "mes-api's output did not end");
                std::thread::sleep(Duration::from_millis(20));
            }
            reader.join().unwrap();
        }
    }

    /// Waits (at most [`DEADLINE`]) for a line that `matches`, and returns it.
    pub async fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        let start = tokio::time::Instant::now();
        loop {
            if let Some((_, line)) = self.lines().into_iter().find(|(_, l)| matches(l)) {
                return line;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no such line in mes-api's output: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A plain HTTP/1.1 request on the blocking pool; the status and the body.
///
/// # Errors
///
/// When the server cannot be reached or does not answer within 30 s.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let request = {
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let body = body.unwrap_or("");
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    })
    .await
    .map_err(std::io::Error::other)?
}
