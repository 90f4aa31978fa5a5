//! `mes-api check-config`: reads the settings as the server would and checks them live,
//! so that whoever installs or changes a site learns what would stop the server (or
//! make it unsafe) before starting it, with the fix for each problem.
//!
//! It changes nothing: no migration, no topic, no file. (Whether a missing topic could
//! be created is asked with `CreateTopics` and `validate_only`; a broker that ignores
//! that flag, as tansu 0.6.0 does, creates the topic, as the server's start would.) Each check is a [`Row`]: a pass
//! with what was found, or a failure with what is wrong and how to fix it. A check that
//! depends on one that failed (the migrations on the database being reachable, say)
//! fails as "not checked", so the exit code is 0 only when every check passed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use kafka_bridge::kafka::{self, KafkaConfig};
use mes_core::db::{self, tokens};
use rocket::figment::Figment;

use crate::config::{self, ReplyTrust, ReplyVerification, Settings, owner_only};

/// Longest wait for the database or the brokers to answer one check.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; what was found.
    Pass(String),
    /// It failed: what is wrong, and what to do about it (nothing for a check that
    /// did not run because another failed).
    Fail {
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was checked.
    pub check: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

impl Row {
    fn pass(check: &'static str, found: impl Into<String>) -> Row {
        Row {
            check,
            outcome: Outcome::Pass(found.into()),
        }
    }

    fn fail(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Row {
        Row {
            check,
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    /// A check that could not run because `because` failed.
    fn not_checked(check: &'static str, because: &str) -> Row {
        Row::fail(
            check,
            format!("not checked, since the {because} check failed"),
            String::new(),
        )
    }

    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass(_))
    }
}

/// Every check, in order, as the table lists them.
const CHECKS: [&str; 9] = [
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

/// Runs `mes-api check-config`: prints the table and returns 0 only if every check
/// passed, 1 otherwise.
pub fn main(figment: &Figment) -> ExitCode {
    let rows = run(figment);
    print!("{}", table(&rows));
    if rows.iter().all(Row::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every check against the settings in `figment`.
pub fn run(figment: &Figment) -> Vec<Row> {
    let settings = match settings(figment) {
        Ok(settings) => settings,
        Err(row) => {
            let mut rows = vec![row];
            rows.extend(CHECKS[1..].iter().map(|c| Row::not_checked(c, "settings")));
            return rows;
        }
    };
    let mut rows = vec![Row::pass(
        "settings",
        "read from the flags, MES_* and Rocket.toml; every value valid",
    )];
    rows.extend(database(&settings));
    rows.extend(brokers(&settings));
    rows.extend(key_files(&settings));
    rows.push(reply_trust(&settings));
    rows
}

/// The table: one line per check, `✔` or `✗`, and under each `✗` its fix.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for row in rows {
        let _ = match &row.outcome {
            Outcome::Pass(found) => writeln!(out, "✔ {:width$}  {found}", row.check),
            Outcome::Fail { problem, fix } if fix.is_empty() => {
                writeln!(out, "✗ {:width$}  {problem}", row.check)
            }
            Outcome::Fail { problem, fix } => writeln!(
                out,
                "✗ {:width$}  {problem}\n  {:width$}  fix: {fix}",
                row.check, ""
            ),
        };
    }
    let passed = rows.iter().filter(|r| r.passed()).count();
    let _ = writeln!(out, "{passed} of {} checks passed", rows.len());
    out
}

/// The settings, read and checked as the server's start reads and checks them.
fn settings(figment: &Figment) -> Result<Settings, Row> {
    let fix = |e: &config::ConfigError| {
        format!(
            "correct {} (`mes-api --help` says what each setting takes)",
            e.setting
        )
    };
    let settings =
        config::extract(figment).map_err(|e| Row::fail("settings", e.to_string(), fix(&e)))?;
    settings
        .check_embedded_built()
        .and_then(|()| settings.check_demo_database())
        .map_err(|e| Row::fail("settings", e.to_string(), fix(&e)))?;
    Ok(settings)
}

/// Reachable, migrated, with a master token.
fn database(settings: &Settings) -> Vec<Row> {
    let shown = settings.database_display();
    let url = settings.database_url();
    let not_checked = |rows: &mut Vec<Row>| {
        rows.push(Row::not_checked("migrations", "database"));
        rows.push(Row::not_checked("master token", "database"));
    };
    let mut rows = Vec::with_capacity(3);
    if settings.database_kind() == "sqlite" && !sqlite_exists(&url) {
        rows.push(Row::fail(
            "database",
            format!("{shown}: the file does not exist yet"),
            "start mes-api once (it creates and migrates the file), or set MES_DATABASE_URL",
        ));
        not_checked(&mut rows);
        return rows;
    }
    let mut conn = match db::establish(&with_connect_timeout(&url)) {
        Ok(conn) => conn,
        Err(e) => {
            rows.push(Row::fail(
                "database",
                format!("{shown}: {}", one_line(&e.to_string())),
                "check MES_DATABASE_URL (host, port, database, user) and that the database server runs",
            ));
            not_checked(&mut rows);
            return rows;
        }
    };
    rows.push(Row::pass("database", format!("{shown}: reachable")));
    rows.push(match db::pending_migrations(&mut conn) {
        Ok(pending) if pending.is_empty() => Row::pass("migrations", "up to date"),
        Ok(pending) => Row::fail(
            "migrations",
            format!(
                "{} pending, the first {}",
                pending.len(),
                pending.first().map(String::as_str).unwrap_or_default()
            ),
            "start mes-api (or run any mes-api command such as `mes-api token list`): it applies them",
        ),
        Err(e) => Row::fail(
            "migrations",
            one_line(&e.to_string()),
            "check that MES_DATABASE_URL names the MES's database",
        ),
    });
    rows.push(match tokens::master(&mut conn) {
        Ok(Some(_)) => Row::pass("master token", "present (kafka_tokens)"),
        Ok(None) if settings.is_embedded() => Row::pass(
            "master token",
            "none yet: the embedded demo writes one at start",
        ),
        Ok(None) => Row::fail(
            "master token",
            "none: every chain request carries the master token, so none can be sent",
            "mes-api token put --instance-type Master --token-file FILE",
        ),
        Err(e) => Row::fail(
            "master token",
            format!("cannot read kafka_tokens: {}", one_line(&e.to_string())),
            "apply the migrations first (start mes-api once)",
        ),
    });
    rows
}

/// Whether the SQLite database in `url` exists (`:memory:` and `file:` URIs count as
/// existing: SQLite makes them on demand).
fn sqlite_exists(url: &str) -> bool {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    path == ":memory:" || path.starts_with("file:") || Path::new(path).exists()
}

/// `url` with libpq's `connect_timeout` (unless it sets one), so an address that drops
/// packets fails the check rather than hanging it.
fn with_connect_timeout(url: &str) -> String {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        || url.contains("connect_timeout=")
    {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={}", TIMEOUT.as_secs())
}

/// Reachable, and every topic present or creatable.
fn brokers(settings: &Settings) -> Vec<Row> {
    if settings.is_embedded() {
        return vec![
            Row::pass(
                "brokers",
                "embedded: the in-process broker and chain of the demo",
            ),
            Row::pass("topics", "embedded: created at start"),
        ];
    }
    let mut kafka_config = KafkaConfig::new(settings.kafka_brokers.clone());
    kafka_config.settings = settings.kafka.clone();
    let topics = settings.topics();
    let names = topics.all();
    let runtime = match rocket::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return vec![
                Row::fail("brokers", format!("cannot start a runtime: {e}"), "retry"),
                Row::not_checked("topics", "brokers"),
            ];
        }
    };
    let probe = runtime.block_on(kafka::probe_topics(&kafka_config, &names, TIMEOUT));
    let probe = match probe {
        Ok(probe) => probe,
        Err(e) => {
            return vec![
                Row::fail(
                    "brokers",
                    format!("{}: {e}", settings.kafka_brokers),
                    "check MES_KAFKA_BROKERS and the MES_KAFKA_* client settings (security.protocol, sasl.*)",
                ),
                Row::not_checked("topics", "brokers"),
            ];
        }
    };
    let reached = Row::pass(
        "brokers",
        format!(
            "{}: reachable, {} broker(s)",
            settings.kafka_brokers, probe.brokers
        ),
    );
    let missing = probe.missing.join(", ");
    let topics_row = if probe.missing.is_empty() {
        Row::pass("topics", format!("all {} present", names.len()))
    } else if !settings.create_topics {
        Row::fail(
            "topics",
            format!("missing: {missing} (and MES_CREATE_TOPICS=false)"),
            "create them on the cluster, or set MES_CREATE_TOPICS=true",
        )
    } else {
        let missing_names: Vec<&str> = probe.missing.iter().map(String::as_str).collect();
        let defaults = kafka_bridge::bridge::BridgeConfig::new(kafka_config.clone());
        match runtime.block_on(kafka::validate_topic_creation(
            &kafka_config,
            &missing_names,
            defaults.topic_partitions,
            defaults.topic_replication,
            TIMEOUT,
        )) {
            Ok(()) => Row::pass(
                "topics",
                format!("missing: {missing}; the broker accepts their creation at start"),
            ),
            Err(e) => Row::fail(
                "topics",
                format!("missing: {missing}; {e}"),
                "create them on the cluster, or let the server's principal create topics",
            ),
        }
    };
    vec![reached, topics_row]
}

/// The signing key (owner-only, a key) and the gateway's public key (a key, writable
/// by its owner only: whoever can replace it decides which replies are trusted).
fn key_files(settings: &Settings) -> Vec<Row> {
    let signing = match &settings.signing_key_file {
        None => Row::pass(
            "signing key",
            "none: requests are not signed (MES_SIGNING_KEY_FILE)",
        ),
        Some(path) => match owner_only(path) {
            Err(e) => Row::fail("signing key", e, format!("chmod 600 {}", path.display())),
            Ok(()) => match settings.signing_key() {
                Ok(_) => Row::pass(
                    "signing key",
                    format!(
                        "{}: a secp256k1 key, readable by its owner only",
                        path.display()
                    ),
                ),
                Err(e) => Row::fail(
                    "signing key",
                    e.message,
                    "point MES_SIGNING_KEY_FILE at the key `mes-api keygen` wrote",
                ),
            },
        },
    };
    let gateway = match &settings.gateway_key_file {
        None => Row::pass("gateway key", "none (see reply trust)"),
        Some(path) => match writable_by_others(path) {
            Err(e) => Row::fail(
                "gateway key",
                e,
                "point MES_GATEWAY_KEY_FILE at the gateway's public key file",
            ),
            Ok(true) => Row::fail(
                "gateway key",
                format!(
                    "{}: group or others may write it, and so choose which replies are trusted",
                    path.display()
                ),
                format!("chmod go-w {}", path.display()),
            ),
            Ok(false) => match settings.gateway_key() {
                Ok(_) => Row::pass("gateway key", format!("{}: a public key", path.display())),
                Err(e) => Row::fail(
                    "gateway key",
                    e.message,
                    "put the gateway's public key (66 hex digits) in the file",
                ),
            },
        },
    };
    vec![signing, gateway]
}

/// Whether group or others may write `path`.
fn writable_by_others(path: &Path) -> Result<bool, String> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(metadata.permissions().mode() & 0o022 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        Ok(false)
    }
}

/// Whether the operator decided whom to trust for replies.
fn reply_trust(settings: &Settings) -> Row {
    match settings.reply_verification() {
        Ok(ReplyVerification::On) => Row::pass(
            "reply trust",
            "signed: only replies signed by the gateway's key are taken",
        ),
        Ok(ReplyVerification::Off) if settings.is_embedded() => {
            Row::pass("reply trust", "embedded demo: its own chain answers")
        }
        Ok(ReplyVerification::Off) => {
            debug_assert_eq!(settings.reply_trust, ReplyTrust::Unsigned);
            Row::pass(
                "reply trust",
                "unsigned, decided by MES_REPLY_TRUST=unsigned: replies are not verified",
            )
        }
        Err(_) => Row::fail(
            "reply trust",
            "not decided: replies cannot be verified (no MES_GATEWAY_KEY_FILE) and unsigned ones were not accepted",
            "set MES_GATEWAY_KEY_FILE to the gateway's public key, or MES_REPLY_TRUST=unsigned for a gateway that cannot sign",
        ),
    }
}

/// A multi-line error (libpq's) as one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_a_fix_under_each_failure_and_counts_passes() {
        let rows = [
            Row::pass("database", "reachable"),
            Row::fail("topics", "missing: BLK_Res", "create it"),
        ];
        let table = table(&rows);
        assert_eq!(
            table,
            "✔ database  reachable\n✗ topics    missing: BLK_Res\n            fix: create it\n1 of 2 checks passed\n"
        );
    }

    #[test]
    fn a_postgres_url_gets_a_connect_timeout_once() {
        assert_eq!(
            with_connect_timeout("postgres://h/db"),
            "postgres://h/db?connect_timeout=10"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require&connect_timeout=10"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=3"),
            "postgres://h/db?connect_timeout=3"
        );
        assert_eq!(with_connect_timeout("mes-data/mes.db"), "mes-data/mes.db");
    }
}
