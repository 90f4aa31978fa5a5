//! Outbox operations on a real PostgreSQL database: the `mes-api outbox` commands run
//! as an administrator runs them (the `mes-api` binary, its settings from the
//! environment).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use chrono::Duration;
use mes_core::db::{self, DbConnection, outbox};
use mes_e2e::database_url;
use mes_e2e::db::PgSchema;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// `mes-api-proc ARGS` on the database at `url`, with no other `MES_*` setting.
fn cli(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    command
        .env("MES_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("USER", "ops")
        .args(args)
        .output()
        .unwrap()
}

/// Its standard output, asserting it succeeded.
fn cli_ok(url: &str, args: &[&str]) -> String {
    let out = cli(url, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Its standard error, asserting it failed.
fn cli_err(url: &str, args: &[&str]) -> String {
    let out = cli(url, args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn enqueue(conn: &mut DbConnection, key: &str) -> i64 {
    let row = outbox::NewOutboxRow {
        topic: "BLK_Rec",
        dedup_key: key,
        ordering_key: key,
        payload: r#"{"action": "update_properties", "id": "PT10"}"#,
        traceparent: None,
    };
    assert!(outbox::enqueue(conn, &row).unwrap());
    outbox::get_by_dedup_key(conn, key).unwrap().unwrap().id
}

/// Claims row `id` alone (its key is its own).
fn claim(conn: &mut DbConnection, key: &str) -> i64 {
    outbox::claim_next_of_key(conn, db::now(), key, Duration::seconds(30), &[])
        .unwrap()
        .unwrap()
        .id
}

#[test]
fn the_outbox_commands_list_retry_discard_and_purge() {
    let schema = PgSchema::create_in(&database_url());
    let url = schema.url();
    let mut conn = db::connect(url).unwrap();
    let refused = enqueue(&mut conn, "unit-PT10-status-1");
    claim(&mut conn, "unit-PT10-status-1");
    outbox::mark_failed(&mut conn, refused, "record PT10 does not exist").unwrap();
    let scrapped = enqueue(&mut conn, "unit-PT11-status-1");
    claim(&mut conn, "unit-PT11-status-1");
    outbox::mark_failed(&mut conn, scrapped, "record PT11 does not exist").unwrap();
    let delivered = enqueue(&mut conn, "day-PT10-2026-11-01");
    claim(&mut conn, "day-PT10-2026-11-01");
    outbox::mark_done(&mut conn, delivered, Some("Day report created")).unwrap();
    let waiting = enqueue(&mut conn, "unit-PT12-create");

    // list, all and by status.
    let all = cli_ok(url, &["outbox", "list"]);
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("id\tstatus\tattempts"), "{all}");
    assert_eq!(lines.len(), 5, "{all}");
    assert!(
        lines[1].starts_with(&format!("{waiting}\tpending\t0\tBLK_Rec")),
        "{all}"
    );
    let failed = cli_ok(url, &["outbox", "list", "--status", "failed"]);
    let ids: Vec<&str> = failed
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, [scrapped.to_string(), refused.to_string()], "{failed}");
    assert!(failed.contains("record PT10 does not exist"), "{failed}");
    let bad = cli_err(url, &["outbox", "list", "--status", "lost"]);
    assert!(bad.contains("lost"), "{bad}");

    // retry: the failed row is pending again; a row that is not failed is refused.
    let out = cli(
        url,
        &[
            "outbox",
            "retry",
            &refused.to_string(),
            &delivered.to_string(),
        ],
    );
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("retried {refused} (pending)")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("outbox row {delivered} is done")),
        "{stderr}"
    );
    let row = outbox::get(&mut conn, refused).unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), (outbox::PENDING, 1));
    let missing = cli_err(url, &["outbox", "retry", "999999"]);
    assert!(missing.contains("no outbox row 999999"), "{missing}");

    // discard: with who and why; a blank reason is refused.
    let blank = cli_err(
        url,
        &["outbox", "discard", &scrapped.to_string(), "--reason", " "],
    );
    assert!(blank.contains("--reason"), "{blank}");
    let no_reason = cli_err(url, &["outbox", "discard", &scrapped.to_string()]);
    assert!(no_reason.contains("--reason"), "{no_reason}");
    let out = cli_ok(
        url,
        &[
            "outbox",
            "discard",
            &scrapped.to_string(),
            "--reason",
            "PT11 was scrapped",
        ],
    );
    assert!(
        out.contains(&format!("discarded {scrapped} (discarded)")),
        "{out}"
    );
    let row = outbox::get(&mut conn, scrapped).unwrap().unwrap();
    assert_eq!(row.status, outbox::DISCARDED);
    assert_eq!(row.discarded_by.as_deref(), Some("cli:ops"));
    assert_eq!(row.discard_reason.as_deref(), Some("PT11 was scrapped"));

    // purge: nothing is 30 days old; everything delivered is older than no time at all.
    let out = cli_ok(url, &["outbox", "purge", "--older-than", "30d"]);
    assert!(
        out.starts_with("purged 0 delivered rows older than 30days"),
        "{out}"
    );
    let bad = cli_err(url, &["outbox", "purge", "--older-than", "a while"]);
    assert!(bad.contains("not a duration"), "{bad}");
    let out = cli_ok(url, &["outbox", "purge", "--older-than", "0s"]);
    assert!(out.starts_with("purged 1 delivered rows"), "{out}");
    let tombstone = outbox::get(&mut conn, delivered).unwrap().unwrap();
    assert_eq!(tombstone.payload, "");
    assert!(tombstone.purged_at.is_some());
    // The tombstone keeps its key: the same day's report is not enqueued again.
    let again = outbox::NewOutboxRow {
        topic: "BLK_Rec",
        dedup_key: "day-PT10-2026-11-01",
        ordering_key: "day-PT10-2026-11-01",
        payload: "{}",
        traceparent: None,
    };
    assert!(!outbox::enqueue(&mut conn, &again).unwrap());
    // Only delivered rows are purged.
    for id in [refused, scrapped, waiting] {
        let row = outbox::get(&mut conn, id).unwrap().unwrap();
        assert!(
            row.purged_at.is_none() && !row.payload.is_empty(),
            "{row:?}"
        );
    }
}
