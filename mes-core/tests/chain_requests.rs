//! The mirror of the chain's requests (`chain_requests`, `chain_scans`): each test is
//! written once and runs on PostgreSQL and on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Barrier};

use mes_core::db::chain_requests::{
    self as mirror, KIND_ORDER, KIND_PARTNER, RequestFilter, SeenRequest,
};
use mes_core::db::{self, DbConnection};

use common::backend_tests;

/// An owned list item, as the poller makes from the chain's JSON.
struct Item {
    id: String,
    status: String,
    agent: String,
    timestamp: i64,
    description: String,
    json: String,
}

fn item(id: &str, status: &str, timestamp: i64) -> Item {
    Item {
        id: id.to_owned(),
        status: status.to_owned(),
        agent: format!("agent-of-{id}"),
        timestamp,
        description: String::new(),
        json: format!(
            r#"{{"partner_request_id":"{id}","status":"{status}","timestamp":{timestamp}}}"#
        ),
    }
}

fn seen(items: &[Item]) -> Vec<SeenRequest<'_>> {
    items
        .iter()
        .map(|i| SeenRequest {
            chain_id: &i.id,
            status: &i.status,
            issuing_agent: &i.agent,
            chain_timestamp: i.timestamp,
            description: &i.description,
            item: &i.json,
        })
        .collect()
}

fn upsert(
    conn: &mut DbConnection,
    kind: &str,
    items: &[Item],
    scan: Option<i64>,
) -> mirror::UpsertOutcome {
    mirror::upsert(conn, kind, &seen(items), scan).unwrap()
}

fn ids(rows: &[mirror::ChainRequest]) -> Vec<&str> {
    rows.iter().map(|r| r.chain_id.as_str()).collect()
}

fn all(kind: Option<&str>) -> RequestFilter<'_> {
    RequestFilter {
        kind,
        limit: 100,
        ..RequestFilter::default()
    }
}

backend_tests! {
    fn upsert_reports_new_rows_once_and_keeps_the_item_as_sent(conn: &mut DbConnection) {
        let first = upsert(conn, KIND_PARTNER, &[item("A1", "OPEN", 10), item("b2", "ACCEPTED", 20)], Some(1));
        assert_eq!(ids(&first.inserted), ["A1", "b2"]);
        assert!(first.changed.is_empty());
        let row = &first.inserted[0];
        assert_eq!(row.kind, KIND_PARTNER);
        assert_eq!(row.chain_id, "A1", "the chain's spelling is kept");
        assert_eq!(row.status, "OPEN");
        assert_eq!(row.issuing_agent, "agent-of-A1");
        assert_eq!(row.chain_timestamp, 10);
        assert_eq!(row.item, r#"{"partner_request_id":"A1","status":"OPEN","timestamp":10}"#);
        assert_eq!(row.last_scan, Some(1));
        assert_eq!(row.first_seen, row.last_seen);

        let again = upsert(conn, KIND_PARTNER, &[item("A1", "OPEN", 10), item("b2", "ACCEPTED", 20)], Some(2));
        assert_eq!(again, mirror::UpsertOutcome::default(), "nothing new, nothing changed");
        let stored = mirror::get(conn, KIND_PARTNER, "A1").unwrap().unwrap();
        assert_eq!(stored.last_scan, Some(2), "the scan that saw it is recorded");
        assert_eq!(stored.first_seen, row.first_seen);
        assert!(stored.last_seen >= row.last_seen);

        // A LIST reply (no scan) does not move last_scan.
        let listed = upsert(conn, KIND_PARTNER, &[item("A1", "OPEN", 10)], None);
        assert_eq!(listed, mirror::UpsertOutcome::default());
        assert_eq!(mirror::get(conn, KIND_PARTNER, "A1").unwrap().unwrap().last_scan, Some(2));

        // The same id of the other kind is another request; ids differ by case too.
        let other = upsert(conn, KIND_ORDER, &[item("A1", "OPEN", 10), item("a1", "OPEN", 11)], None);
        assert_eq!(ids(&other.inserted), ["A1", "a1"]);
        assert_eq!(other.inserted[0].last_scan, None);
        assert!(mirror::get(conn, KIND_PARTNER, "a1").unwrap().is_none());

        // An id repeated in one reply counts once.
        let twice = upsert(conn, KIND_PARTNER, &[item("c3", "OPEN", 30), item("c3", "OPEN", 30)], None);
        assert_eq!(ids(&twice.inserted), ["c3"]);
    }

    fn upsert_reports_each_status_change_once_with_the_previous_status(conn: &mut DbConnection) {
        upsert(conn, KIND_ORDER, &[item("o1", "OPEN", 1), item("o2", "OPEN", 2)], Some(1));
        let accepted = upsert(conn, KIND_ORDER, &[item("o1", "ACCEPTED", 1), item("o2", "OPEN", 2)], Some(2));
        assert!(accepted.inserted.is_empty());
        assert_eq!(accepted.changed.len(), 1);
        let change = &accepted.changed[0];
        assert_eq!(change.previous, "OPEN");
        assert_eq!(change.request.chain_id, "o1");
        assert_eq!(change.request.status, "ACCEPTED");
        assert!(change.request.item.contains("ACCEPTED"), "the new item is stored");
        assert_eq!(change.request.last_scan, Some(2));

        let repeat = upsert(conn, KIND_ORDER, &[item("o1", "ACCEPTED", 1)], Some(3));
        assert!(repeat.changed.is_empty(), "a change is reported once");

        // A new item text with the same status is stored without being a change.
        let mut edited = item("o2", "OPEN", 2);
        edited.description = "Rush order".to_owned();
        let quiet = upsert(conn, KIND_ORDER, &[edited], None);
        assert_eq!(quiet, mirror::UpsertOutcome::default());
        assert_eq!(mirror::get(conn, KIND_ORDER, "o2").unwrap().unwrap().description, "Rush order");
    }

    fn list_filters_pages_newest_first_and_counts_the_whole_filter(conn: &mut DbConnection) {
        let partners: Vec<Item> = (0..30)
            .map(|n| item(&format!("p{n:02}"), if n % 3 == 1 { "OPEN" } else { "ACCEPTED" }, 1000 + n))
            .collect();
        upsert(conn, KIND_PARTNER, &partners, Some(1));
        let mut order = item("Order_X", "OPEN", 5);
        order.description = "100% Steering_wheel".to_owned();
        order.agent = "02ABCDEF".to_owned();
        upsert(conn, KIND_ORDER, &[order, item("o2", "REJECTED", 6)], Some(1));

        let open = mirror::list(conn, &RequestFilter {
            kind: Some(KIND_PARTNER),
            status: Some("OPEN"),
            limit: 4,
            offset: 0,
            q: None,
        }).unwrap();
        assert_eq!(open.total, 10, "every OPEN partner, not one page");
        assert_eq!(ids(&open.items), ["p28", "p25", "p22", "p19"], "newest first");
        let last = mirror::list(conn, &RequestFilter {
            kind: Some(KIND_PARTNER),
            status: Some("OPEN"),
            limit: 4,
            offset: 8,
            q: None,
        }).unwrap();
        assert_eq!(ids(&last.items), ["p04", "p01"]);
        assert_eq!(last.total, 10);

        let everything = mirror::list(conn, &all(None)).unwrap();
        assert_eq!(everything.total, 32);
        assert_eq!(everything.items[0].chain_id, "p29");

        // q: case-insensitive over id, agent and description; wildcards are literal.
        let by = |conn: &mut DbConnection, q: &str| {
            ids(&mirror::list(conn, &RequestFilter { q: Some(q), ..all(None) }).unwrap().items)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(conn, "order_x"), ["Order_X"]);
        assert_eq!(by(conn, "abcdef"), ["Order_X"]);
        assert_eq!(by(conn, "STEERING"), ["Order_X"]);
        assert_eq!(by(conn, "100%"), ["Order_X"]);
        assert_eq!(by(conn, "0% s"), ["Order_X"]);
        assert!(by(conn, "p_1").is_empty(), "_ is no wildcard");
        assert!(by(conn, "%").len() == 1, "% is no wildcard");
        assert_eq!(by(conn, "agent-of-p1").len(), 10);

        let none = mirror::list(conn, &RequestFilter { kind: Some(KIND_ORDER), status: Some("OPEN"), q: Some("nothing"), ..all(None) }).unwrap();
        assert_eq!(none.total, 0);
        assert!(none.items.is_empty());
    }

    fn counts_are_per_kind_and_status(conn: &mut DbConnection) {
        assert!(mirror::counts(conn).unwrap().is_empty());
        upsert(conn, KIND_PARTNER, &[item("a", "OPEN", 1), item("b", "OPEN", 2), item("c", "REJECTED", 3)], None);
        upsert(conn, KIND_ORDER, &[item("d", "ACCEPTED", 1)], None);
        let counts: Vec<(String, String, i64)> = mirror::counts(conn)
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.status, c.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("order".to_owned(), "ACCEPTED".to_owned(), 1),
                ("partner".to_owned(), "OPEN".to_owned(), 2),
                ("partner".to_owned(), "REJECTED".to_owned(), 1),
            ]
        );
    }

    fn scans_complete_once_and_resume_only_the_scan_in_progress(conn: &mut DbConnection) {
        let fresh = mirror::scan_state(conn, KIND_PARTNER).unwrap();
        assert_eq!(fresh.completed_scan, 0);
        assert!(!fresh.has_baseline());
        assert_eq!(fresh.completed_at, None);
        assert_eq!((fresh.next_scan(), fresh.next_start()), (1, 0));
        assert_eq!(mirror::scan_state(conn, KIND_PARTNER).unwrap(), fresh, "reading twice makes one row");

        let stopped = mirror::save_progress(conn, KIND_PARTNER, 1, 5000).unwrap();
        assert_eq!((stopped.next_scan(), stopped.next_start()), (1, 5000));

        let done = mirror::complete_scan(conn, KIND_PARTNER, 1).unwrap();
        assert_eq!(done.completed_scan, 1);
        assert!(done.has_baseline());
        let at = done.completed_at.expect("a completed scan has a time");
        assert_eq!((done.next_scan(), done.next_start()), (2, 0));

        // Another instance finishing the same scan, or saving a stale position.
        let twice = mirror::complete_scan(conn, KIND_PARTNER, 1).unwrap();
        assert_eq!(twice.completed_scan, 1);
        assert_eq!(twice.completed_at, Some(at));
        let stale = mirror::save_progress(conn, KIND_PARTNER, 1, 700).unwrap();
        assert_eq!(stale.next_start(), 0, "a finished scan's position is ignored");

        // The kinds are independent.
        assert!(!mirror::scan_state(conn, KIND_ORDER).unwrap().has_baseline());
        let kinds: Vec<String> = mirror::scan_states(conn).unwrap().into_iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["order", "partner"]);
    }

    fn a_chain_id_longer_than_128_characters_is_refused(conn: &mut DbConnection) {
        let long = item(&"x".repeat(129), "OPEN", 1);
        assert!(mirror::upsert(conn, KIND_PARTNER, &seen(&[long]), None).is_err());
        let longest = item(&"x".repeat(128), "OPEN", 1);
        assert_eq!(upsert(conn, KIND_PARTNER, &[longest], None).inserted.len(), 1);
    }
}

/// Two instances upserting the same items at once: each new row and each status
/// change is reported by exactly one of them.
fn concurrent_upserts_report_each_row_once(url: &str) {
    const INSTANCES: usize = 4;
    let items: Arc<Vec<Item>> =
        Arc::new((0..50).map(|n| item(&format!("r{n}"), "OPEN", n)).collect());
    let run = |status: &'static str| {
        let barrier = Arc::new(Barrier::new(INSTANCES));
        let handles: Vec<_> = (0..INSTANCES)
            .map(|_| {
                let (url, barrier, items) = (url.to_owned(), barrier.clone(), items.clone());
                std::thread::spawn(move || {
                    let mut conn = db::connect(&url).unwrap();
                    let changed: Vec<Item> = items
                        .iter()
                        .map(|i| item(&i.id, status, i.timestamp))
                        .collect();
                    barrier.wait();
                    mirror::upsert(&mut conn, KIND_PARTNER, &seen(&changed), None).unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    };
    let inserted: usize = run("OPEN").iter().map(|o| o.inserted.len()).sum();
    assert_eq!(inserted, 50, "every row announced once");
    let changed: usize = run("ACCEPTED").iter().map(|o| o.changed.len()).sum();
    assert_eq!(changed, 50, "every change announced once");
}

mod concurrency {
    use super::*;
    use common::{PgSchema, SqliteFile};

    #[test]
    fn postgres() {
        let schema = PgSchema::create();
        drop(db::connect(schema.url()).unwrap());
        concurrent_upserts_report_each_row_once(schema.url());
    }

    #[test]
    fn sqlite() {
        let file = SqliteFile::create();
        drop(db::connect(&file.url()).unwrap());
        concurrent_upserts_report_each_row_once(&file.url());
    }
}
