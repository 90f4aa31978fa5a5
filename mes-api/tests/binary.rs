//! The `mes-api` binary as a user runs it: the embedded default with nothing
//! configured, the administration commands, and a start-up problem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mes-api");

/// A working directory of its own, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let path =
            std::env::temp_dir().join(format!("mes-api-bin-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mes-api` in `dir` with only `env` set among our settings.
fn command(dir: &Dir, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(&dir.0);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn get(port: u16, path: &str, key: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The body of a chunked answer, decoded enough for JSON: the chunks joined.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    if out.is_empty() { body.to_owned() } else { out }
}

#[test]
fn the_embedded_default_runs_with_nothing_configured() {
    let dir = Dir::new();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_text = port.to_string();
    let child = command(&dir, &[("ROCKET_PORT", &port_text)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut key = None;
    let mut url = None;
    while key.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server printed no demo key within 90 s");
        if let Some(at) = line.find("http://") {
            url.get_or_insert_with(|| line[at..].to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("mesk_") {
            key = Some(format!("mesk_{k}"));
        }
    }
    let key = key.unwrap();
    assert_eq!(
        url.as_deref(),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert!(
        dir.0.join("mes-data/mes.db").exists(),
        "SQLite in the data dir"
    );

    // The URL is printed before Rocket binds: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(port, "/health/ready", None).0, 200);
    let (status, body) = get(port, "/api/KafkaPartner/LIST?limit=100", Some(&key));
    assert_eq!(
        status,
        200,
        "{}",
        &body.chars().take(300).collect::<String>()
    );
    let partners: serde_json::Value = serde_json::from_str(&dechunk(&body)).unwrap();
    assert!(partners.as_array().unwrap().len() >= 10, "demo partners");
    let (status, _) = get(port, "/api/KafkaPartner/LIST", None);
    assert_eq!(status, 401);
}

#[test]
fn commands_migrate_a_new_database_and_never_print_secrets() {
    let dir = Dir::new();
    let run = |args: &[&str]| {
        let out = command(&dir, &[]).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "token",
        "put",
        "--instance-type",
        "Master",
        "--token",
        "tok-s3cret",
        "--password",
        "pw-s3cret",
        "--name",
        "MES 1",
    ]);
    let listed = run(&["token", "list"]);
    assert!(
        listed.contains("Master") && listed.contains("MES 1"),
        "{listed}"
    );
    assert!(!listed.contains("s3cret"), "{listed}");

    let added = run(&["operator", "add", "alice", "--role", "viewer"]);
    let key = added.lines().last().unwrap();
    assert!(key.starts_with("mesk_"), "{added}");
    let listed = run(&["operator", "list"]);
    assert!(listed.contains("alice") && listed.contains("viewer"));
    assert!(!listed.contains(key), "the key is shown once only");

    let generated = run(&["keygen"]);
    assert!(generated.contains("public key"), "{generated}");
    let secret = std::fs::read_to_string(dir.0.join("mes-data/signing.key")).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert!(
        !generated.contains(secret.trim()),
        "the secret is not printed"
    );
    // Not overwritten by accident.
    let again = command(&dir, &[]).arg("keygen").output().unwrap();
    assert!(!again.status.success());
}

#[test]
fn a_bad_setting_ends_with_one_line_naming_it() {
    let dir = Dir::new();
    for (env, setting) in [
        (("MES_REQUEST_TIMEOUT_MS", "soon"), "MES_REQUEST_TIMEOUT_MS"),
        (("MES_CORRELATION", "sometimes"), "MES_CORRELATION"),
        (
            ("MES_DATABASE_URL", "postgres://nobody@127.0.0.1:1/x"),
            "MES_DATABASE_URL",
        ),
        (
            ("MES_SIGNING_KEY_FILE", "missing.key"),
            "MES_SIGNING_KEY_FILE",
        ),
        // A real broker without a gateway key nor MES_REPLY_TRUST=unsigned: refused
        // before anything is contacted.
        (
            ("MES_KAFKA_BROKERS", "127.0.0.1:1"),
            "MES_GATEWAY_KEY_FILE/MES_REPLY_TRUST",
        ),
    ] {
        let out = command(&dir, &[env]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: {stderr}");
        assert!(
            lines[0].starts_with(&format!("mes-api: error: {setting}")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    }
}
