//! The `mes-api` binary as a user runs it: the embedded default with nothing
//! configured (or, built without the demo, its refusal), the administration commands,
//! and a start-up problem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Built without the demo, its test is left out and its HTTP helpers go unused.
#![cfg_attr(not(feature = "embedded"), allow(dead_code, unused_imports))]

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

#[cfg(feature = "embedded")]
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
fn operators_are_added_rotated_removed_and_listed_and_secrets_come_from_files() {
    let dir = Dir::new();
    let run_with = |args: &[&str], stdin: Option<&str>| {
        let mut child = command(&dir, &[])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let run = |args: &[&str]| {
        let out = run_with(args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key_of = |out: &str| out.lines().last().unwrap().to_owned();

    let ada = key_of(&run(&["operator", "add", "ada", "--role", "admin"]));
    let olga = key_of(&run(&["operator", "add", "olga"]));
    assert!(ada.starts_with("mesk_") && olga.starts_with("mesk_"));
    let listed = run(&["operator", "list"]);
    assert!(
        listed.starts_with("id\tname\trole\tcreated\tlast used"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.contains("\tada\tadmin\t") && l.ends_with("\tnever")),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l.contains("\tolga\toperator\t")),
        "{listed}"
    );

    let rotated = run(&["operator", "rotate", "olga"]);
    let new = key_of(&rotated);
    assert!(new.starts_with("mesk_") && new != olga, "{rotated}");
    let url = dir.0.join("mes-data/mes.db").display().to_string();
    let mut conn = mes_core::db::connect(&url).unwrap();
    use mes_core::db::operators;
    assert_eq!(
        operators::by_key_hash(&mut conn, &operators::hash_key(&olga)).unwrap(),
        None,
        "the old key stops working"
    );
    assert!(
        operators::by_key_hash(&mut conn, &operators::hash_key(&new))
            .unwrap()
            .is_some()
    );

    run(&["operator", "remove", "olga"]);
    assert!(!run(&["operator", "list"]).contains("olga"));
    for args in [
        &["operator", "remove", "olga"][..],
        &["operator", "rotate", "nobody"][..],
    ] {
        let out = run_with(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no operator called"),
            "{args:?}"
        );
    }
    let out = run_with(&["operator", "add", "x", "--role", "root"], None);
    assert!(!out.status.success(), "an unknown role is refused");

    // Secrets from standard input and from a file, never from the command line.
    std::fs::write(dir.0.join("pw.txt"), "pw-from-file\n").unwrap();
    let out = run_with(
        &[
            "token",
            "put",
            "--instance-type",
            "Master",
            "--token-file",
            "-",
            "--password-file",
            "pw.txt",
        ],
        Some("tok-from-stdin\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let master = mes_core::db::tokens::master(&mut conn).unwrap().unwrap();
    assert_eq!(master.token, "tok-from-stdin");
    assert_eq!(master.password.as_deref(), Some("pw-from-file"));
    let out = run_with(
        &[
            "token",
            "put",
            "--instance-type",
            "Master",
            "--token-file",
            "-",
        ],
        Some("\n"),
    );
    assert_eq!(out.status.code(), Some(2), "an empty secret is refused");
    let out = run_with(&["token", "put", "--instance-type", "Master"], None);
    assert!(!out.status.success(), "a token is required");

    // A signing key readable by others is refused by keygen (even with --force) and
    // by the server.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let generated = run(&["keygen", "--out", "signing.key"]);
        assert!(generated.contains("public key"), "{generated}");
        let path = dir.0.join("signing.key");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run_with(&["keygen", "--out", "signing.key", "--force"], None);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
        let out = command(&dir, &[("MES_SIGNING_KEY_FILE", "signing.key")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("mes-api: error: MES_SIGNING_KEY_FILE")
                && stderr.contains("chmod 600"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_setting_ends_with_one_line_naming_it() {
    let dir = Dir::new();
    #[cfg_attr(feature = "embedded", allow(unused_mut))]
    let mut cases: Vec<(&[(&str, &str)], &str)> = vec![
        (
            &[("MES_REQUEST_TIMEOUT_MS", "soon")],
            "MES_REQUEST_TIMEOUT_MS",
        ),
        (&[("MES_CORRELATION", "sometimes")], "MES_CORRELATION"),
        (&[("MES_LOG_FORMAT", "xml")], "MES_LOG_FORMAT"),
        (
            // The demo asked for by name on a database that cannot be reached (a
            // build without the demo refuses the demo first).
            &[
                ("MES_KAFKA_BROKERS", "embedded"),
                ("MES_DATABASE_URL", "postgres://nobody@127.0.0.1:1/x"),
            ],
            if cfg!(feature = "embedded") {
                "MES_DATABASE_URL"
            } else {
                "MES_KAFKA_BROKERS"
            },
        ),
        (
            &[("MES_SIGNING_KEY_FILE", "missing.key")],
            "MES_SIGNING_KEY_FILE",
        ),
        // A real broker without a gateway key nor MES_REPLY_TRUST=unsigned: refused
        // before anything is contacted.
        (
            &[("MES_KAFKA_BROKERS", "127.0.0.1:1")],
            "MES_GATEWAY_KEY_FILE/MES_REPLY_TRUST",
        ),
    ];
    // Built without the demo, nothing configured is a start-up problem too.
    #[cfg(not(feature = "embedded"))]
    cases.push((&[], "MES_KAFKA_BROKERS"));
    for (env, setting) in cases {
        let out = command(&dir, env).output().unwrap();
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
    assert!(
        !dir.0.join("mes-data").exists(),
        "a start-up problem opens no database"
    );
}
