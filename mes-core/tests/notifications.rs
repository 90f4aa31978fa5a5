//! Storage of webhook notifications (`mes_core::db::notifications`): each test is
//! written once and runs on PostgreSQL and on SQLite; the concurrent claim runs on
//! PostgreSQL, where `FOR UPDATE SKIP LOCKED` is what keeps two workers apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use chrono::Duration;
use diesel::result::Error as DieselError;
use mes_core::db::notifications::{self as n, Failure, NewNotification};
use mes_core::db::{self, DbConnection};

use common::backend_tests;

const HOOK: &str = "https://api.example.org/bot123:secret/sendMessage";
const OTHER: &str = "https://hooks.example.com/other";

fn event<'a>(event_id: &'a str, url: &'a str) -> NewNotification<'a> {
    NewNotification {
        event_id,
        kind: "new_request",
        url,
        target: "https://api.example.org",
        payload: r#"{"text":"New partner request"}"#,
    }
}

fn lease() -> Duration {
    Duration::seconds(15)
}

backend_tests! {
    fn the_same_event_for_the_same_webhook_is_one_row(conn: &mut DbConnection) {
        let id = n::new_request_event_id("partner", "9df8");
        assert_eq!(id, "new_request:partner:9df8");
        assert_eq!(n::insert(conn, &[event(&id, HOOK), event(&id, OTHER)]).unwrap(), 2);
        // A second instance that saw the same request.
        assert_eq!(n::insert(conn, &[event(&id, HOOK), event(&id, OTHER)]).unwrap(), 0);
        let rows = n::list(conn, None, 50, 0).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.status == n::PENDING && r.attempts == 0));
        let counts = n::counts(conn).unwrap();
        assert_eq!(counts.pending, 2);
        assert_eq!(counts.oldest_pending, Some(rows[1].created_at));
    }

    fn a_worker_claims_only_its_webhooks_due_rows_oldest_first(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK), event("e2", OTHER), event("e3", HOOK)]).unwrap();
        let now = db::now();
        let claimed = n::claim_due(conn, HOOK, now, 10, lease()).unwrap();
        let ids: Vec<&str> = claimed.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e3"]);
        assert!(claimed.iter().all(|r| r.attempts == 1 && r.locked_until == Some(now + lease())));
        assert!(n::claim_due(conn, HOOK, now, 10, lease()).unwrap().is_empty(), "claimed rows are not due");
        assert_eq!(n::claim_due(conn, OTHER, now, 1, lease()).unwrap().len(), 1);
    }

    fn a_crashed_workers_rows_come_back_when_the_lease_ends(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK)]).unwrap();
        let now = db::now();
        let first = n::claim_due(conn, HOOK, now, 10, lease()).unwrap().remove(0);
        let later = now + lease() + Duration::seconds(1);
        let second = n::claim_due(conn, HOOK, later, 10, lease()).unwrap().remove(0);
        assert_eq!(second.id, first.id);
        assert_eq!(second.attempts, 2);
        // The first worker comes back: its claim is gone, it settles nothing.
        assert!(matches!(n::mark_delivered(conn, &first), Err(DieselError::NotFound)));
        let delivered = n::mark_delivered(conn, &second).unwrap();
        assert_eq!(delivered.status, n::DELIVERED);
        assert!(delivered.delivered_at.is_some());
        assert_eq!(delivered.locked_until, None);
        assert!(n::claim_due(conn, HOOK, later + lease() * 10, 10, lease()).unwrap().is_empty());
        let counts = n::counts(conn).unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.oldest_pending), (0, 1, None));
    }

    fn pending_rows_of_a_webhook_no_longer_configured_fail_unless_claimed(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK), event("e1", OTHER), event("e2", OTHER), event("e3", OTHER)]).unwrap();
        // e1 to OTHER is being sent by a worker (of an instance still configured so).
        let claimed = n::claim_due(conn, OTHER, db::now(), 1, lease()).unwrap().remove(0);
        assert_eq!(claimed.event_id, "e1");
        let delivered = n::claim_due(conn, OTHER, db::now(), 1, lease()).unwrap().remove(0);
        n::mark_delivered(conn, &delivered).unwrap();
        // OTHER is taken out of the configuration: its unclaimed pending row fails.
        assert_eq!(n::fail_orphans(conn, &[HOOK], "gone").unwrap(), 1);
        let rows = n::list(conn, None, 50, 0).unwrap();
        let status = |event: &str, url: &str| {
            let row = rows.iter().find(|r| r.event_id == event && r.url == url).unwrap();
            (row.status.clone(), row.last_error.clone())
        };
        assert_eq!(status("e3", OTHER), (n::FAILED.to_owned(), Some("gone".to_owned())));
        assert_eq!(status("e1", OTHER).0, n::PENDING, "a claimed row is its worker's");
        assert_eq!(status("e2", OTHER).0, n::DELIVERED);
        assert_eq!(status("e1", HOOK), (n::PENDING.to_owned(), None));
        // No webhook at all: every unclaimed pending row fails.
        assert_eq!(n::fail_orphans(conn, &[], "none").unwrap(), 1);
        assert_eq!(n::counts(conn).unwrap().pending, 1, "the claimed one");
    }

    fn delivered_rows_are_deleted_after_retention_in_batches_and_others_kept(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK), event("e2", HOOK), event("e3", HOOK), event("e4", HOOK)]).unwrap();
        for _ in 0..3 {
            let claimed = n::claim_due(conn, HOOK, db::now(), 1, lease()).unwrap().remove(0);
            n::mark_delivered(conn, &claimed).unwrap();
        }
        let failed = n::claim_due(conn, HOOK, db::now(), 1, lease()).unwrap().remove(0);
        n::record_failure(conn, &failed, "answered 404", Failure::Final).unwrap();
        // Delivered just now: not older than a day.
        assert_eq!(n::purge_delivered(conn, db::now() - Duration::days(1), 500).unwrap(), 0);
        let later = db::now() + Duration::seconds(1);
        assert_eq!(n::purge_delivered(conn, later, 2).unwrap(), 2, "a batch at a time");
        assert_eq!(n::purge_delivered(conn, later, 2).unwrap(), 1);
        assert_eq!(n::purge_delivered(conn, later, 2).unwrap(), 0);
        let rows = n::list(conn, None, 50, 0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, n::FAILED, "a failed row is never deleted");
        assert_eq!(n::counts(conn).unwrap().delivered, 0);
    }

    fn a_retry_waits_for_the_backoff_or_retry_after(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK)]).unwrap();
        let claimed = n::claim_due(conn, HOOK, db::now(), 1, lease()).unwrap().remove(0);
        let retried = n::record_failure(conn, &claimed, "answered 503", Failure::Retry(None)).unwrap();
        assert_eq!(retried.status, n::PENDING);
        assert_eq!(retried.last_error.as_deref(), Some("answered 503"));
        assert_eq!(retried.locked_until, None);
        assert_eq!(retried.next_attempt_at, retried.updated_at + Duration::seconds(1));
        assert!(n::claim_due(conn, HOOK, retried.updated_at, 1, lease()).unwrap().is_empty(), "not due before its backoff");

        let again = n::claim_due(conn, HOOK, retried.next_attempt_at, 1, lease()).unwrap().remove(0);
        assert_eq!(again.attempts, 2);
        let asked = std::time::Duration::from_secs(30);
        let retried = n::record_failure(conn, &again, "answered 429", Failure::Retry(Some(asked))).unwrap();
        assert_eq!(retried.next_attempt_at, retried.updated_at + Duration::seconds(30));

        let again = n::claim_due(conn, HOOK, retried.next_attempt_at, 1, lease()).unwrap().remove(0);
        let huge = std::time::Duration::from_secs(86_400);
        let retried = n::record_failure(conn, &again, "answered 503", Failure::Retry(Some(huge))).unwrap();
        assert_eq!(retried.next_attempt_at, retried.updated_at + Duration::minutes(10), "Retry-After is capped");
    }

    fn a_final_answer_or_too_many_attempts_fail_it_with_the_last_error(conn: &mut DbConnection) {
        n::insert(conn, &[event("refused", HOOK), event("flaky", HOOK)]).unwrap();
        let mut at = db::now();
        let rows = n::claim_due(conn, HOOK, at, 2, lease()).unwrap();
        let refused = n::record_failure(conn, &rows[0], "answered 404 Not Found", Failure::Final).unwrap();
        assert_eq!(refused.status, n::FAILED);
        assert_eq!(refused.attempts, 1);
        assert_eq!(refused.last_error.as_deref(), Some("answered 404 Not Found"));

        let mut row = rows[1].clone();
        for attempt in 1..=n::MAX_ATTEMPTS {
            assert_eq!(row.attempts, attempt);
            let settled = n::record_failure(conn, &row, &format!("timed out ({attempt})"), Failure::Retry(None)).unwrap();
            if attempt == n::MAX_ATTEMPTS {
                assert_eq!(settled.status, n::FAILED);
                assert_eq!(settled.last_error.as_deref(), Some("timed out (12)"));
                break;
            }
            assert_eq!(settled.status, n::PENDING);
            at = settled.next_attempt_at;
            row = n::claim_due(conn, HOOK, at, 1, lease()).unwrap().remove(0);
        }
        assert!(n::claim_due(conn, HOOK, at + Duration::days(1), 10, lease()).unwrap().is_empty());
        let failed = n::list(conn, Some(n::FAILED), 50, 0).unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(n::counts(conn).unwrap().failed, 2);
    }

    fn a_released_row_is_due_again_without_an_attempt_charged(conn: &mut DbConnection) {
        n::insert(conn, &[event("e1", HOOK)]).unwrap();
        let now = db::now();
        let claimed = n::claim_due(conn, HOOK, now, 1, lease()).unwrap().remove(0);
        let released = n::release(conn, &claimed).unwrap();
        assert_eq!((released.attempts, released.locked_until), (0, None));
        assert_eq!(n::claim_due(conn, HOOK, now, 1, lease()).unwrap().len(), 1);
    }

    fn the_list_pages_newest_first_and_filters_by_status(conn: &mut DbConnection) {
        let ids: Vec<String> = (0..5).map(|i| n::outbox_failed_event_id(i, 3)).collect();
        let new: Vec<_> = ids.iter().map(|id| event(id, HOOK)).collect();
        n::insert(conn, &new).unwrap();
        let first = n::claim_due(conn, HOOK, db::now(), 1, lease()).unwrap().remove(0);
        n::mark_delivered(conn, &first).unwrap();
        let page: Vec<String> = n::list(conn, None, 2, 1).unwrap().into_iter().map(|r| r.event_id).collect();
        assert_eq!(page, ["outbox_failed:3:3", "outbox_failed:2:3"]);
        let delivered = n::list(conn, Some(n::DELIVERED), 50, 0).unwrap();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].event_id, "outbox_failed:0:3");
        assert_eq!(n::list(conn, Some(n::PENDING), 50, 0).unwrap().len(), 4);
    }
}

/// Two workers on one PostgreSQL database never claim the same row and together
/// claim everything: the `FOR UPDATE SKIP LOCKED` path.
#[test]
fn postgres_concurrent_workers_never_claim_the_same_row() {
    const ROWS: usize = 200;
    let schema = common::PgSchema::create();
    let mut setup = db::connect(schema.url()).unwrap();
    let ids: Vec<String> = (0..ROWS).map(|i| format!("e{i}")).collect();
    let new: Vec<_> = ids.iter().map(|id| event(id, HOOK)).collect();
    assert_eq!(n::insert(&mut setup, &new).unwrap(), ROWS);
    let now = db::now();
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let url = schema.url().to_owned();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut conn = db::establish(&url).unwrap();
                let mut claimed = Vec::new();
                start.wait();
                loop {
                    let rows = n::claim_due(&mut conn, HOOK, now, 3, lease()).unwrap();
                    if rows.is_empty() {
                        break claimed;
                    }
                    claimed.extend(rows.iter().map(|r| r.id));
                }
            })
        })
        .collect();
    let claims: Vec<Vec<i64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut seen = HashSet::new();
    for id in claims.iter().flatten() {
        assert!(seen.insert(*id), "row {id} was claimed twice");
    }
    assert_eq!(seen.len(), ROWS, "together the workers claim every row");
}
