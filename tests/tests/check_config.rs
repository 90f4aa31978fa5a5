//! `mes-api check-config` against a real PostgreSQL and the real broker: a site set up
//! right passes every check with exit code 0, and each thing it reports is shown
//! failing on its own (the other checks passing), with exit code 1 and a fix. Also the
//! command line's help (every setting with its variable and default) and completions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kafka_bridge::kafka::TopicNames;
use mes_core::db;
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, TempDir, put_master};
use mes_e2e::server::topic_env;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// `mes-api-proc ARGS` with only `env` for settings (none of the test run's own).
fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap()
}

/// A site set up right: a migrated database with a master token, the chain's topics
/// on the broker, a signing key readable by its owner only and the gateway's public key.
struct Site {
    schema: PgSchema,
    dir: TempDir,
    topics: TopicNames,
    signing_key: String,
    gateway_key: String,
}

impl Site {
    async fn new() -> Site {
        let schema = PgSchema::create_in(&mes_e2e::database_url());
        let mut conn = db::connect(schema.url()).unwrap();
        put_master(&mut conn, "site-master-token").unwrap();
        let topics = TopicNames::with_suffix(&format!("-{}", uuid::Uuid::new_v4().simple()));
        mes_e2e::create_topics(&mes_e2e::kafka_brokers(), &topics.all(), 1)
            .await
            .unwrap();
        let dir = TempDir::create().unwrap();
        let signing_key = dir.path().join("signing.key");
        std::fs::write(&signing_key, SigningKey::generate().to_hex()).unwrap();
        set_mode(&signing_key, 0o600);
        let gateway_key = dir.path().join("gateway.pub");
        std::fs::write(&gateway_key, SigningKey::generate().agent_key().to_string()).unwrap();
        set_mode(&gateway_key, 0o644);
        Site {
            schema,
            signing_key: signing_key.display().to_string(),
            gateway_key: gateway_key.display().to_string(),
            dir,
            topics,
        }
    }

    /// The site's settings, `changes` applied (an empty value removes a setting).
    fn env(&self, changes: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("MES_DATABASE_URL".to_owned(), self.schema.url().to_owned()),
            ("MES_KAFKA_BROKERS".to_owned(), mes_e2e::kafka_brokers()),
            ("MES_SIGNING_KEY_FILE".to_owned(), self.signing_key.clone()),
            ("MES_GATEWAY_KEY_FILE".to_owned(), self.gateway_key.clone()),
            (
                "MES_DATA_DIR".to_owned(),
                self.dir.path().display().to_string(),
            ),
        ];
        env.extend(topic_env(&self.topics));
        for (name, value) in changes {
            env.retain(|(n, _)| n != name);
            if !value.is_empty() {
                env.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        env
    }

    /// `check-config` with `changes`: its exit code and the table's lines.
    fn check(&self, changes: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
        let output = run(&["check-config"], &self.env(changes));
        let stdout = String::from_utf8(output.stdout).unwrap();
        (
            output.status.code(),
            stdout.lines().map(str::to_owned).collect(),
        )
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts that exactly `failed` fail (each with its fix on the next line, unless it
/// was not checked because another failed) and every other check passes.
fn assert_only((code, lines): &(Option<i32>, Vec<String>), failed: &[&str], says: &[&str]) {
    let table = lines.join("\n");
    assert_eq!(
        *code,
        Some(if failed.is_empty() { 0 } else { 1 }),
        "{table}"
    );
    let checks = [
        "settings",
        "database",
        "migrations",
        "master token",
        "brokers",
        "topics",
        "signing key",
        "gateway key",
        "reply trust",
    ];
    for check in checks {
        let at = lines
            .iter()
            .position(|l| {
                l.get(4..)
                    .unwrap_or_default()
                    .starts_with(&format!("{check} "))
            })
            .unwrap_or_else(|| panic!("no row for {check}:\n{table}"));
        let line = &lines[at];
        if failed.contains(&check) {
            assert!(line.starts_with("✗ "), "{check} should fail:\n{table}");
            let not_checked = line.contains("not checked");
            let has_fix = lines
                .get(at + 1)
                .is_some_and(|l| l.trim_start().starts_with("fix: "));
            assert!(not_checked || has_fix, "{check} has no fix:\n{table}");
        } else {
            assert!(line.starts_with("✔ "), "{check} should pass:\n{table}");
        }
    }
    for text in says {
        assert!(table.contains(text), "{text:?} not in:\n{table}");
    }
    let passed = checks.len() - failed.len();
    assert!(
        table.ends_with(&format!("{passed} of {} checks passed", checks.len())),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_set_up_right_passes_every_check() {
    let site = Site::new().await;
    assert_only(
        &site.check(&[]),
        &[],
        &["all 7 present", "signed: only replies"],
    );
    // Flags take the place of the variables they name.
    let mut env = site.env(&[("MES_DATABASE_URL", "")]);
    env.push(("MES_REQUEST_TIMEOUT_MS".to_owned(), "0".to_owned()));
    let output = run(
        &[
            "--database-url",
            site.schema.url(),
            "--request-timeout-ms",
            "5000",
            "check-config",
        ],
        &env,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_out_of_range_fails_first_and_nothing_else_is_checked() {
    let site = Site::new().await;
    let report = site.check(&[("MES_REQUEST_TIMEOUT_MS", "0")]);
    assert_eq!(report.0, Some(1));
    let table = report.1.join("\n");
    assert!(
        table.starts_with("✗ settings      MES_REQUEST_TIMEOUT_MS: must be"),
        "{table}"
    );
    assert!(
        table.contains("fix: correct MES_REQUEST_TIMEOUT_MS"),
        "{table}"
    );
    assert!(table.ends_with("0 of 9 checks passed"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_and_its_checks_are_not_run() {
    let site = Site::new().await;
    let port = mes_e2e::free_port().unwrap();
    let url = format!("postgres://mes:hunter2@127.0.0.1:{port}/mes");
    let report = site.check(&[("MES_DATABASE_URL", &url)]);
    assert_only(
        &report,
        &["database", "migrations", "master token"],
        &["fix: check MES_DATABASE_URL"],
    );
    // The password is never shown.
    assert!(!report.1.join("\n").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_not_migrated_and_one_without_a_master_token_fail() {
    let site = Site::new().await;
    let empty = PgSchema::create_in(&mes_e2e::database_url());
    assert_only(
        &site.check(&[("MES_DATABASE_URL", empty.url())]),
        &["migrations", "master token"],
        &["pending, the first", "fix: start mes-api"],
    );
    let migrated = PgSchema::create_in(&mes_e2e::database_url());
    db::connect(migrated.url()).unwrap();
    assert_only(
        &site.check(&[("MES_DATABASE_URL", migrated.url())]),
        &["master token"],
        &["fix: mes-api token put --instance-type Master"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_fail_and_topics_are_not_checked() {
    let site = Site::new().await;
    let port = mes_e2e::free_port().unwrap();
    assert_only(
        &site.check(&[("MES_KAFKA_BROKERS", &format!("127.0.0.1:{port}"))]),
        &["brokers", "topics"],
        &["fix: check MES_KAFKA_BROKERS"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_when_the_server_may_not_create_it() {
    let site = Site::new().await;
    let missing = mes_e2e::unique_topic("check-config-missing");
    assert_only(
        &site.check(&[
            ("MES_TOPIC_REPLY", &missing),
            ("MES_CREATE_TOPICS", "false"),
        ]),
        &["topics"],
        &[&format!("missing: {missing}"), "fix: create them"],
    );
    // The server may create it: the broker is asked whether it would (CreateTopics with
    // validate_only; tansu 0.6.0, the test broker, creates it anyway, as the server's
    // start would).
    let report = site.check(&[("MES_TOPIC_REPLY", &missing)]);
    assert_only(&report, &[], &["the broker accepts their creation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_others_may_read_or_write_fail_with_their_chmod() {
    let site = Site::new().await;
    set_mode(Path::new(&site.signing_key), 0o644);
    assert_only(
        &site.check(&[]),
        &["signing key"],
        &[&format!("fix: chmod 600 {}", site.signing_key)],
    );
    set_mode(Path::new(&site.signing_key), 0o600);
    set_mode(Path::new(&site.gateway_key), 0o666);
    assert_only(
        &site.check(&[]),
        &["gateway key"],
        &[&format!("fix: chmod go-w {}", site.gateway_key)],
    );
    set_mode(Path::new(&site.gateway_key), 0o644);
    std::fs::write(&site.gateway_key, "not a key").unwrap();
    assert_only(
        &site.check(&[]),
        &["gateway key"],
        &["does not hold a public key"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_trust_left_undecided_fails_and_unsigned_by_choice_passes() {
    let site = Site::new().await;
    assert_only(
        &site.check(&[("MES_GATEWAY_KEY_FILE", "")]),
        &["reply trust"],
        &["fix: set MES_GATEWAY_KEY_FILE"],
    );
    assert_only(
        &site.check(&[
            ("MES_GATEWAY_KEY_FILE", ""),
            ("MES_REPLY_TRUST", "unsigned"),
        ]),
        &[],
        &["decided by MES_REPLY_TRUST=unsigned"],
    );
}

#[test]
fn help_lists_every_setting_with_its_variable_and_default_and_no_value() {
    let env = vec![(
        "MES_DATABASE_URL".to_owned(),
        "postgres://mes:hunter2@db/mes".to_owned(),
    )];
    let output = run(&["--help"], &env);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // Every setting example.env lists (it lists them all: a unit test checks it).
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../example.env")).unwrap();
    let listed: Vec<&str> = example
        .lines()
        .filter_map(|l| l.trim_start_matches('#').trim().split_once('='))
        .map(|(name, _)| name.trim())
        .filter(|name| {
            name.starts_with("MES_") && !name.starts_with("MES_KAFKA_")
                || *name == "MES_KAFKA_BROKERS"
        })
        .collect();
    assert!(listed.len() > 30, "{listed:?}");
    for name in listed {
        assert!(
            help.contains(&format!("[env: {name}]")),
            "{name} missing from --help"
        );
    }
    assert!(
        help.contains("[default: 10000]"),
        "request timeout's default"
    );
    assert!(help.contains("[default: embedded]"));
    assert!(help.contains("MES_KAFKA_<PROPERTY>"));
    assert!(!help.contains("hunter2"), "an environment value was shown");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef mes-api"),
        ("fish", "complete -c mes-api"),
    ] {
        let output = run(&["completions", shell], &[]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("check-config"), "{shell}");
        assert!(script.contains("database-url"), "{shell}");
    }
    let output = run(&["completions", "tcsh"], &[]);
    assert_eq!(output.status.code(), Some(2));
}
