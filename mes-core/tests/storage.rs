//! Storage tests: each is written once and runs on PostgreSQL and on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use chrono::{Duration, NaiveDate};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use mes_core::db::{
    self, DbConnection, day_reports, decisions, operators, orders, outbox, schema, sessions,
    tokens, units,
};

use common::backend_tests;

fn master(token: &str) -> tokens::NewKafkaToken<'_> {
    tokens::NewKafkaToken {
        instance_type: tokens::MASTER,
        token,
        ..Default::default()
    }
}

/// The trace [`message`]s are enqueued with.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn message<'a>(dedup_key: &'a str, ordering_key: &'a str) -> outbox::NewOutboxRow<'a> {
    outbox::NewOutboxRow {
        topic: "BLK_Rec",
        dedup_key,
        ordering_key,
        payload: r#"{"record":"PT10"}"#,
        traceparent: Some(TRACE),
    }
}

fn unit(code: &str) -> units::NewProductionUnit<'_> {
    units::NewProductionUnit {
        code,
        name: "Press",
        status: "idle",
        process_name: None,
    }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2021, 1, d).unwrap()
}

fn is_violation(result: &QueryResult<impl std::fmt::Debug>, kind: DatabaseErrorKind) -> bool {
    matches!(result, Err(DieselError::DatabaseError(k, _)) if std::mem::discriminant(k) == std::mem::discriminant(&kind))
}

fn claimed_ids(rows: &[outbox::OutboxRow]) -> Vec<i64> {
    rows.iter().map(|row| row.id).collect()
}

backend_tests! {
    fn master_token_put_twice_replaces_the_master(conn: &mut DbConnection) {
        let first = tokens::put(
            conn,
            &tokens::NewKafkaToken {
                password: Some("pw1"),
                name: Some("MES 1"),
                ..master("T1")
            },
        )
        .unwrap();
        let second = tokens::put(conn, &master("T2")).unwrap();

        assert_eq!(second.id, first.id, "the master row is updated in place");
        assert_eq!(second.token, "T2");
        assert_eq!(second.password, None, "a put replaces every field");
        assert_eq!(second.name, None);
        assert_eq!(second.created_at, first.created_at);
        assert_eq!(tokens::master(conn).unwrap(), Some(second));
        assert_eq!(tokens::list(conn).unwrap().len(), 1);
    }

    fn only_one_master_row_can_exist(conn: &mut DbConnection) {
        tokens::put(conn, &master("T1")).unwrap();
        let now = db::now();
        let raw = diesel::insert_into(schema::kafka_tokens::table)
            .values((
                schema::kafka_tokens::instance_type.eq(tokens::MASTER),
                schema::kafka_tokens::token.eq("T2"),
                schema::kafka_tokens::created_at.eq(now),
                schema::kafka_tokens::updated_at.eq(now),
            ))
            .execute(conn);
        assert!(is_violation(&raw, DatabaseErrorKind::UniqueViolation), "{raw:?}");

        // Other instance types are not limited.
        let other = tokens::NewKafkaToken {
            instance_type: "Reporter",
            token: "R",
            ..Default::default()
        };
        tokens::put(conn, &other).unwrap();
        tokens::put(conn, &other).unwrap();
        let all = tokens::list(conn).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(tokens::master(conn).unwrap().unwrap().token, "T1");
    }

    fn token_debug_redacts_secrets(conn: &mut DbConnection) {
        let new = tokens::NewKafkaToken {
            password: Some("hunter2-password"),
            public_key: Some("02abc"),
            ..master("s3cret-token")
        };
        let stored = tokens::put(conn, &new).unwrap();
        for shown in [format!("{stored:?}"), format!("{stored:#?}"), format!("{new:?}")] {
            assert!(!shown.contains("s3cret-token"), "{shown}");
            assert!(!shown.contains("hunter2-password"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("02abc"), "non-secret fields stay visible: {shown}");
        }
    }

    fn deleting_the_master_leaves_none(conn: &mut DbConnection) {
        let stored = tokens::put(conn, &master("T1")).unwrap();
        assert!(tokens::delete(conn, stored.id).unwrap());
        assert!(!tokens::delete(conn, stored.id).unwrap());
        assert_eq!(tokens::master(conn).unwrap(), None);
        // The index allows a new master once the old one is gone.
        assert_eq!(tokens::put(conn, &master("T3")).unwrap().token, "T3");
    }

    fn unit_update_returns_the_new_row(conn: &mut DbConnection) {
        let created = units::create(conn, &unit("PT10")).unwrap();
        let updated =
            units::update_status_and_process(conn, created.id, "running", Some("drilling")).unwrap();
        assert_eq!(updated.id, created.id);
        assert_eq!(updated.status, "running");
        assert_eq!(updated.process_name.as_deref(), Some("drilling"));
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(units::get(conn, created.id).unwrap().as_ref(), Some(&updated));
        assert_eq!(units::get_by_code(conn, "PT10").unwrap(), Some(updated));

        let cleared = units::update_status_and_process(conn, created.id, "idle", None).unwrap();
        assert_eq!(cleared.process_name, None);
    }

    fn unit_update_of_a_missing_unit_is_not_found(conn: &mut DbConnection) {
        let result = units::update_status_and_process(conn, 4242, "running", None);
        assert!(matches!(result, Err(DieselError::NotFound)), "{result:?}");
        assert_eq!(units::get(conn, 4242).unwrap(), None);
        assert_eq!(units::get_by_code(conn, "NOPE").unwrap(), None);
    }

    fn unit_codes_are_unique_and_listed_in_order(conn: &mut DbConnection) {
        units::create(conn, &unit("PT20")).unwrap();
        units::create(conn, &unit("PT10")).unwrap();
        let again = units::create(conn, &unit("PT10"));
        assert!(is_violation(&again, DatabaseErrorKind::UniqueViolation), "{again:?}");
        let codes: Vec<_> = units::list(conn).unwrap().into_iter().map(|u| u.code).collect();
        assert_eq!(codes, ["PT10", "PT20"]);
    }

    fn day_report_upsert_replaces_the_values(conn: &mut DbConnection) {
        units::create(conn, &unit("PT10")).unwrap();
        let first = day_reports::upsert(
            conn,
            &day_reports::NewDayReport {
                unit_code: "PT10",
                report_date: day(11),
                shift: day_reports::SHIFT_A,
                inputs: day_reports::InputColumns {
                    failure_count: Some(2),
                    ..Default::default()
                },
                kpis: day_reports::KpiColumns {
                    availability: Some(0.9),
                    oee: Some(0.5),
                    ..Default::default()
                },
            },
        )
        .unwrap();
        let second = day_reports::upsert(
            conn,
            &day_reports::NewDayReport {
                unit_code: "PT10",
                report_date: day(11),
                shift: day_reports::SHIFT_A,
                kpis: day_reports::KpiColumns { oee: Some(0.7), ..Default::default() },
                ..Default::default()
            },
        )
        .unwrap();

        assert_eq!(second.id, first.id);
        assert_eq!(second.kpis.oee, Some(0.7));
        assert_eq!(second.kpis.availability, None, "a recomputed day keeps no stale value");
        assert_eq!(second.inputs.failure_count, None);
        assert_eq!(second.created_at, first.created_at);
        assert_eq!(day_reports::for_unit_and_date(conn, "PT10", day(11)).unwrap(), [second]);
    }

    fn day_reports_are_found_by_unit_and_date(conn: &mut DbConnection) {
        units::create(conn, &unit("PT10")).unwrap();
        units::create(conn, &unit("PT20")).unwrap();
        for (code, date, shift) in [
            ("PT20", day(11), day_reports::DAY_AVERAGE),
            ("PT10", day(11), day_reports::SHIFT_B),
            ("PT10", day(11), day_reports::SHIFT_A),
            ("PT10", day(12), day_reports::SHIFT_A),
        ] {
            let new = day_reports::NewDayReport {
                unit_code: code,
                report_date: date,
                shift,
                ..Default::default()
            };
            day_reports::upsert(conn, &new).unwrap();
        }
        let shifts: Vec<_> = day_reports::for_unit_and_date(conn, "PT10", day(11))
            .unwrap()
            .into_iter()
            .map(|r| r.shift)
            .collect();
        assert_eq!(shifts, [1, 2]);
        let keys: Vec<_> = day_reports::for_date(conn, day(11))
            .unwrap()
            .into_iter()
            .map(|r| (r.unit_code, r.shift))
            .collect();
        assert_eq!(keys, [("PT10".into(), 1), ("PT10".into(), 2), ("PT20".into(), 4)]);
        assert_eq!(day_reports::units_with_reports_on(conn, day(11)).unwrap(), ["PT10", "PT20"]);
        assert_eq!(day_reports::units_with_reports_on(conn, day(12)).unwrap(), ["PT10"]);
        assert!(day_reports::units_with_reports_on(conn, day(13)).unwrap().is_empty());
    }

    fn day_reports_need_a_known_unit_and_a_valid_shift(conn: &mut DbConnection) {
        let orphan = day_reports::upsert(
            conn,
            &day_reports::NewDayReport {
                unit_code: "NOPE",
                report_date: day(11),
                shift: 1,
                ..Default::default()
            },
        );
        assert!(is_violation(&orphan, DatabaseErrorKind::ForeignKeyViolation), "{orphan:?}");

        units::create(conn, &unit("PT10")).unwrap();
        let bad_shift = day_reports::upsert(
            conn,
            &day_reports::NewDayReport {
                unit_code: "PT10",
                report_date: day(11),
                shift: 5,
                ..Default::default()
            },
        );
        assert!(bad_shift.is_err(), "{bad_shift:?}");
    }

    fn outbox_enqueue_is_idempotent(conn: &mut DbConnection) {
        assert!(outbox::enqueue(conn, &message("unit-PT10-1", "unit-PT10")).unwrap());
        let again = outbox::NewOutboxRow {
            payload: "{}",
            ..message("unit-PT10-1", "unit-PT10")
        };
        assert!(!outbox::enqueue(conn, &again).unwrap());

        let row = outbox::get_by_dedup_key(conn, "unit-PT10-1").unwrap().unwrap();
        assert_eq!(row.payload, r#"{"record":"PT10"}"#, "the first enqueue wins");
        assert_eq!(row.traceparent.as_deref(), Some(TRACE), "its trace is kept");
        assert_eq!(row.status, outbox::PENDING);
        assert_eq!(row.attempts, 0);
        assert_eq!(outbox::get_by_dedup_key(conn, "other").unwrap(), None);
        assert_eq!(outbox::depth(conn).unwrap(), outbox::OutboxDepth { pending: 1, ..Default::default() });
    }

    fn outbox_enqueue_joins_the_callers_transaction(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("m1", "k")).unwrap();
        // A duplicate inside a transaction must not abort it (PostgreSQL would).
        conn.transaction::<_, DieselError, _>(|conn| {
            units::create(conn, &unit("PT10"))?;
            assert!(!outbox::enqueue(conn, &message("m1", "k"))?);
            assert!(outbox::enqueue(conn, &message("m2", "k"))?);
            Ok(())
        })
        .unwrap();
        assert!(units::get_by_code(conn, "PT10").unwrap().is_some());

        // A rolled-back transaction takes its messages with it.
        let rolled_back = conn.transaction::<(), DieselError, _>(|conn| {
            outbox::enqueue(conn, &message("m3", "k"))?;
            Err(DieselError::RollbackTransaction)
        });
        assert!(rolled_back.is_err());
        assert_eq!(outbox::get_by_dedup_key(conn, "m3").unwrap(), None);
        assert_eq!(outbox::depth(conn).unwrap().pending, 2);
    }

    fn outbox_delivers_one_row_per_ordering_key_at_a_time(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("a1", "unit-A")).unwrap();
        outbox::enqueue(conn, &message("a2", "unit-A")).unwrap();
        outbox::enqueue(conn, &message("b1", "unit-B")).unwrap();
        let a1 = outbox::get_by_dedup_key(conn, "a1").unwrap().unwrap().id;
        let a2 = outbox::get_by_dedup_key(conn, "a2").unwrap().unwrap().id;
        let b1 = outbox::get_by_dedup_key(conn, "b1").unwrap().unwrap().id;
        let now = db::now();
        let lease = Duration::seconds(30);

        let claimed = outbox::claim_due(conn, now, 10, lease).unwrap();
        assert_eq!(claimed_ids(&claimed), [a1, b1], "a2 waits behind a1");
        for row in &claimed {
            assert_eq!(row.status, outbox::IN_FLIGHT);
            assert_eq!(row.attempts, 1);
            assert_eq!(row.locked_until, Some(now + lease));
        }
        assert!(outbox::claim_due(conn, now, 10, lease).unwrap().is_empty());

        let done = outbox::mark_done(conn, a1, Some("record updated")).unwrap();
        assert_eq!(done.status, outbox::DONE);
        assert_eq!(done.chain_message.as_deref(), Some("record updated"));
        assert!(done.delivered_at.is_some());
        assert_eq!(done.locked_until, None);

        assert_eq!(claimed_ids(&outbox::claim_due(conn, now, 10, lease).unwrap()), [a2]);
        assert_eq!(
            outbox::depth(conn).unwrap(),
            outbox::OutboxDepth { pending: 0, in_flight: 2, done: 1, failed: 0, discarded: 0 }
        );
    }

    fn outbox_claim_takes_the_oldest_up_to_the_limit(conn: &mut DbConnection) {
        for i in 0..5 {
            let key = format!("m{i}");
            outbox::enqueue(conn, &message(&key, &key)).unwrap();
        }
        let now = db::now();
        let first = outbox::claim_due(conn, now, 2, Duration::seconds(30)).unwrap();
        let second = outbox::claim_due(conn, now, 10, Duration::seconds(30)).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(second.len(), 3);
        assert!(first.iter().all(|a| second.iter().all(|b| a.id < b.id)));

        let in_flight = outbox::list(conn, Some(outbox::IN_FLIGHT), 3, 0).unwrap();
        assert_eq!(claimed_ids(&in_flight), [second[2].id, second[1].id, second[0].id]);
        let page = outbox::list(conn, None, 10, 3).unwrap();
        assert_eq!(claimed_ids(&page), [first[1].id, first[0].id]);
        assert!(outbox::list(conn, Some(outbox::DONE), 10, 0).unwrap().is_empty());
    }

    fn outbox_expired_lease_makes_a_row_claimable_again(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("m1", "k")).unwrap();
        let t0 = db::now();
        let lease = Duration::seconds(30);
        let first = outbox::claim_due(conn, t0, 10, lease).unwrap();
        assert_eq!(first.len(), 1);

        let during = t0 + Duration::seconds(29);
        assert!(outbox::claim_due(conn, during, 10, lease).unwrap().is_empty());

        let after = t0 + Duration::seconds(31);
        let again = outbox::claim_due(conn, after, 10, lease).unwrap();
        assert_eq!(claimed_ids(&again), claimed_ids(&first));
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].locked_until, Some(after + lease));
    }

    fn outbox_retry_later_waits_for_next_attempt_at(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("m1", "k")).unwrap();
        outbox::enqueue(conn, &message("m2", "k")).unwrap();
        let t0 = db::now();
        let lease = Duration::seconds(30);
        let id = outbox::claim_due(conn, t0, 10, lease).unwrap()[0].id;

        let retry_at = t0 + Duration::seconds(60);
        let row = outbox::retry_later(conn, id, retry_at, "broker unavailable").unwrap();
        assert_eq!(row.status, outbox::PENDING);
        assert_eq!(row.next_attempt_at, retry_at);
        assert_eq!(row.last_error.as_deref(), Some("broker unavailable"));
        assert_eq!(row.locked_until, None);

        // Neither m1 (not yet due) nor m2 (behind m1) can go before retry_at.
        let early = t0 + Duration::seconds(59);
        assert!(outbox::claim_due(conn, early, 10, lease).unwrap().is_empty());
        let due = outbox::claim_due(conn, retry_at, 10, lease).unwrap();
        assert_eq!(claimed_ids(&due), [id]);
        assert_eq!(due[0].attempts, 2);

        // Only an in-flight row can be sent back.
        let m2 = outbox::get_by_dedup_key(conn, "m2").unwrap().unwrap();
        let not_in_flight = outbox::retry_later(conn, m2.id, retry_at, "x");
        assert!(matches!(not_in_flight, Err(DieselError::NotFound)), "{not_in_flight:?}");
    }

    fn outbox_claims_a_keys_next_row_after_its_previous(conn: &mut DbConnection) {
        for (dedup, key) in [("a1", "unit-A"), ("b1", "unit-B"), ("a2", "unit-A"), ("a3", "unit-A")] {
            outbox::enqueue(conn, &message(dedup, key)).unwrap();
        }
        let id = |conn: &mut DbConnection, dedup: &str| {
            outbox::get_by_dedup_key(conn, dedup).unwrap().unwrap().id
        };
        let (a1, a2, a3) = (id(conn, "a1"), id(conn, "a2"), id(conn, "a3"));
        let now = db::now();
        let lease = Duration::seconds(30);

        // a1 is due, but only for its key; b1 is never taken by a claim for unit-A.
        let first = outbox::claim_next_of_key(conn, now, "unit-A", lease, &[]).unwrap();
        assert_eq!(first.as_ref().map(|r| r.id), Some(a1));
        assert_eq!(first.map(|r| (r.status, r.attempts)), Some((outbox::IN_FLIGHT.to_owned(), 1)));
        assert_eq!(
            outbox::claim_next_of_key(conn, now, "unit-A", lease, &[]).unwrap(),
            None,
            "a2 waits while a1 is in flight"
        );
        outbox::mark_done(conn, a1, None).unwrap();
        let next = outbox::claim_next_of_key(conn, now, "unit-A", lease, &[]).unwrap();
        assert_eq!(next.map(|r| r.id), Some(a2));
        // A failed row no longer holds its key back.
        outbox::mark_failed(conn, a2, "refused").unwrap();
        let held = ["BLK_Rec".to_owned()];
        assert_eq!(
            outbox::claim_next_of_key(conn, now, "unit-A", lease, &held).unwrap(),
            None,
            "a held topic is not claimed"
        );
        let last = outbox::claim_next_of_key(conn, now, "unit-A", lease, &[]).unwrap();
        assert_eq!(last.map(|r| r.id), Some(a3));
        assert_eq!(outbox::claim_next_of_key(conn, now, "unit-Z", lease, &[]).unwrap(), None);
        let b = outbox::get_by_dedup_key(conn, "b1").unwrap().unwrap();
        assert_eq!((b.status.as_str(), b.attempts), (outbox::PENDING, 0));
    }

    fn outbox_settles_a_row_and_claims_its_keys_next_at_once(conn: &mut DbConnection) {
        for (dedup, key) in [("a1", "unit-A"), ("a2", "unit-A"), ("b1", "unit-B")] {
            outbox::enqueue(conn, &message(dedup, key)).unwrap();
        }
        let lease = Duration::seconds(30);
        let a1 = outbox::claim_next_of_key(conn, db::now(), "unit-A", lease, &[]).unwrap().unwrap();
        let next = |now| outbox::NextOfKey { ordering_key: "unit-A", now, lease, held: &[] };
        let (settled, claimed) = outbox::settle_then_claim_next(conn, |c| outbox::mark_done(c, a1.id, Some("ok")), next(db::now())).unwrap();
        assert_eq!((settled.id, settled.status.as_str()), (a1.id, outbox::DONE));
        let a2 = claimed.unwrap().expect("a2 is due once a1 is done");
        assert_eq!((a2.dedup_key.as_str(), a2.status.as_str(), a2.attempts), ("a2", outbox::IN_FLIGHT, 1));
        // A settlement that finds its row no longer in flight claims nothing.
        let gone = outbox::settle_then_claim_next(conn, |c| outbox::mark_failed(c, a1.id, "late"), next(db::now()));
        assert!(matches!(gone, Err(diesel::result::Error::NotFound)), "{gone:?}");
        // The key has nothing due after a2: the settlement stands, and no row is claimed.
        let (_, claimed) = outbox::settle_then_claim_next(conn, |c| outbox::mark_done(c, a2.id, None), next(db::now())).unwrap();
        assert_eq!(claimed.unwrap(), None);
        let depth = outbox::depth(conn).unwrap();
        assert_eq!((depth.done, depth.pending, depth.in_flight), (2, 1, 0), "b1 was never touched");
    }

    fn outbox_held_topics_wait_and_unsent_rows_spend_no_attempt(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("rec", "a")).unwrap();
        let rty = outbox::NewOutboxRow {
            topic: "BLK_Rty",
            ..message("rty", "b")
        };
        outbox::enqueue(conn, &rty).unwrap();
        let t0 = db::now();
        let lease = Duration::seconds(30);
        let held = ["BLK_Rec".to_owned()];
        let claimed = outbox::claim_due_except(conn, t0, 10, lease, &held).unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].topic, "BLK_Rty");
        let rec = outbox::get_by_dedup_key(conn, "rec").unwrap().unwrap();
        assert_eq!((rec.status.as_str(), rec.attempts), (outbox::PENDING, 0));

        // Claimed, then put back unsent: the attempt does not count.
        let rec = outbox::claim_due_except(conn, t0, 10, lease, &[]).unwrap();
        assert_eq!(claimed_ids(&rec), [rec[0].id]);
        assert_eq!(rec[0].attempts, 1);
        let back = outbox::release_unsent(conn, rec[0].id, t0, "on hold").unwrap();
        assert_eq!(back.status, outbox::PENDING);
        assert_eq!(back.attempts, 0);
        assert_eq!(back.last_error.as_deref(), Some("on hold"));
        assert_eq!(back.locked_until, None);
        let again = outbox::release_unsent(conn, rec[0].id, t0, "on hold");
        assert!(matches!(again, Err(DieselError::NotFound)), "{again:?}");
    }

    fn outbox_mark_failed_is_permanent(conn: &mut DbConnection) {
        outbox::enqueue(conn, &message("m1", "k")).unwrap();
        outbox::enqueue(conn, &message("m2", "k")).unwrap();
        let t0 = db::now();
        let lease = Duration::seconds(30);
        let id = outbox::claim_due(conn, t0, 10, lease).unwrap()[0].id;

        let failed = outbox::mark_failed(conn, id, "record type unknown").unwrap();
        assert_eq!(failed.status, outbox::FAILED);
        assert_eq!(failed.last_error.as_deref(), Some("record type unknown"));

        // The failed row never comes back, even long after its lease; it no longer
        // holds back the rest of its ordering key.
        let later = t0 + Duration::days(1);
        let next = outbox::claim_due(conn, later, 10, lease).unwrap();
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].id, id);
        let much_later = later + Duration::days(1);
        let rest = outbox::claim_due(conn, much_later, 10, lease).unwrap();
        assert_eq!(claimed_ids(&rest), [next[0].id], "only the expired m2 lease comes back");
        assert_eq!(outbox::depth(conn).unwrap().failed, 1);
        assert!(matches!(outbox::mark_failed(conn, id, "again"), Err(DieselError::NotFound)));
    }

    fn an_unknown_decision_is_settled_once_and_each_scan_counts_once(conn: &mut DbConnection) {
        let new = decisions::NewDecision {
            kind: decisions::KIND_ORDER,
            request_id: "Order_XY-9",
            response: decisions::ACCEPT,
            operator: "olga",
            correlation_id: None,
        };
        let d = decisions::record(conn, &new).unwrap();
        decisions::complete(conn, d.id, decisions::OUTCOME_UNKNOWN, None, Some("timeout")).unwrap().unwrap();
        let far_past = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let unsettled = decisions::unsettled(conn, decisions::KIND_ORDER, far_past).unwrap();
        assert_eq!(unsettled.len(), 1);
        assert!(decisions::unsettled(conn, decisions::KIND_PARTNER, far_past).unwrap().is_empty());
        // Scan 7 counts once, however many instances see it; scan 8 counts again.
        let counted = decisions::count_open_scan(conn, d.id, 7).unwrap().unwrap();
        assert_eq!((counted.open_scans, counted.last_scan), (1, Some(7)));
        assert!(decisions::count_open_scan(conn, d.id, 7).unwrap().is_none());
        assert_eq!(decisions::count_open_scan(conn, d.id, 8).unwrap().unwrap().open_scans, 2);
        // Settled once: the second instance gets None.
        let settled = decisions::settle_unknown(conn, d.id, decisions::OUTCOME_ACCEPTED, Some("confirmed"))
            .unwrap()
            .unwrap();
        assert_eq!(settled.outcome, decisions::OUTCOME_ACCEPTED);
        assert!(decisions::settle_unknown(conn, d.id, decisions::OUTCOME_ACCEPTED, None).unwrap().is_none());
        assert!(decisions::count_open_scan(conn, d.id, 9).unwrap().is_none());
        assert_eq!(decisions::latest(conn, decisions::KIND_ORDER, "Order_XY-9").unwrap().unwrap().id, d.id);
        assert!(decisions::latest(conn, decisions::KIND_ORDER, "order_xy-9").unwrap().is_none());
        // A pending decision left by a dead server becomes unknown.
        let pending = decisions::record(conn, &new).unwrap();
        let later = mes_core::db::now() + chrono::Duration::seconds(1);
        assert_eq!(decisions::expire_pending(conn, decisions::KIND_ORDER, later).unwrap(), 1);
        assert_eq!(decisions::get(conn, pending.id).unwrap().unwrap().outcome, decisions::OUTCOME_UNKNOWN);
    }

    fn decisions_are_recorded_then_completed(conn: &mut DbConnection) {
        let new = decisions::NewDecision {
            kind: decisions::KIND_PARTNER,
            request_id: "0123456789abcdef0123456789abcdef",
            response: decisions::ACCEPT,
            operator: "alice",
            correlation_id: Some("6f1c"),
        };
        let first = decisions::record(conn, &new).unwrap();
        assert_eq!(first.outcome, decisions::OUTCOME_PENDING);
        assert_eq!(first.operator, "alice");

        let completed = decisions::complete(
            conn,
            first.id,
            decisions::OUTCOME_CHAIN_ERROR,
            None,
            Some("unknown partner"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(completed.id, first.id);
        assert_eq!(completed.outcome, decisions::OUTCOME_CHAIN_ERROR);
        assert_eq!(completed.chain_error.as_deref(), Some("unknown partner"));
        assert_eq!(completed.created_at, first.created_at);

        let retry = decisions::record(conn, &new).unwrap();
        let other = decisions::record(
            conn,
            &decisions::NewDecision {
                kind: decisions::KIND_ORDER,
                request_id: "ffffffffffffffffffffffffffffffff",
                response: decisions::REJECT,
                correlation_id: None,
                ..new
            },
        )
        .unwrap();

        let newest_first: Vec<_> = decisions::list(conn, 10, 0).unwrap().iter().map(|d| d.id).collect();
        assert_eq!(newest_first, [other.id, retry.id, first.id]);
        let second_page: Vec<_> = decisions::list(conn, 2, 2).unwrap().iter().map(|d| d.id).collect();
        assert_eq!(second_page, [first.id]);
        let history = decisions::for_request(conn, new.request_id).unwrap();
        assert_eq!(history, [completed, retry]);

        let missing = decisions::complete(conn, 4242, decisions::OUTCOME_ACCEPTED, None, None);
        assert!(matches!(missing, Ok(None)), "{missing:?}");
        // Only a pending decision is completed: a settled one is never overwritten.
        let again = decisions::complete(conn, first.id, decisions::OUTCOME_UNKNOWN, None, None);
        assert!(matches!(again, Ok(None)), "{again:?}");
        assert_eq!(decisions::get(conn, first.id).unwrap().unwrap().outcome, decisions::OUTCOME_CHAIN_ERROR);
    }

    fn a_late_reply_settles_its_decision_once_by_correlation_id(conn: &mut DbConnection) {
        let new = decisions::NewDecision {
            kind: decisions::KIND_ORDER,
            request_id: "late-1",
            response: decisions::ACCEPT,
            operator: "olga",
            correlation_id: Some("corr-late-1"),
        };
        let d = decisions::record(conn, &new).unwrap();
        assert!(decisions::by_correlation_id(conn, "corr-other").unwrap().is_none());
        assert_eq!(decisions::by_correlation_id(conn, "corr-late-1").unwrap().unwrap().id, d.id);
        // The late reply overtakes the call's own bookkeeping: it settles the pending
        // decision, and the call's `complete` then changes nothing.
        let settled = decisions::settle_late(conn, d.id, decisions::OUTCOME_ACCEPTED, Some("ok"), None)
            .unwrap()
            .unwrap();
        assert_eq!((settled.outcome.as_str(), settled.chain_message.as_deref()), (decisions::OUTCOME_ACCEPTED, Some("ok")));
        assert!(decisions::complete(conn, d.id, decisions::OUTCOME_UNKNOWN, None, Some("timeout")).unwrap().is_none());
        assert!(decisions::settle_late(conn, d.id, decisions::OUTCOME_ACCEPTED, None, None).unwrap().is_none());
        // From unknown, once.
        let u = decisions::record(conn, &decisions::NewDecision { correlation_id: Some("corr-late-2"), ..new }).unwrap();
        decisions::complete(conn, u.id, decisions::OUTCOME_UNKNOWN, None, Some("timeout")).unwrap().unwrap();
        let settled = decisions::settle_late(conn, u.id, decisions::OUTCOME_CHAIN_ERROR, None, Some("not_open"))
            .unwrap()
            .unwrap();
        assert_eq!(settled.chain_error.as_deref(), Some("not_open"));
        assert!(decisions::settle_late(conn, u.id, decisions::OUTCOME_ACCEPTED, None, None).unwrap().is_none());
    }

    fn production_order_creation_is_idempotent(conn: &mut DbConnection) {
        let decision = decisions::record(
            conn,
            &decisions::NewDecision {
                kind: decisions::KIND_ORDER,
                request_id: "0123456789abcdef0123456789abcdef",
                response: decisions::ACCEPT,
                operator: "alice",
                correlation_id: None,
            },
        )
        .unwrap();
        let new = orders::NewProductionOrder {
            chain_order_id: "0123456789abcdef0123456789abcdef",
            issuing_agent: "02c0ffee",
            order_type: "production",
            description: "100 brackets",
            metadata: r#"{"quantity":100}"#,
            chain_timestamp: 1_610_000_000,
            decision_id: Some(decision.id),
            status: orders::STATUS_PLANNED,
        };
        let first = orders::create_from_chain(conn, &new).unwrap();
        let second = orders::create_from_chain(
            conn,
            &orders::NewProductionOrder {
                description: "changed",
                ..new
            },
        )
        .unwrap();
        assert_eq!(second, first, "a repeated order changes nothing");
        assert_eq!(first.description, "100 brackets");
        assert_eq!(orders::list(conn, 10, 0).unwrap(), std::slice::from_ref(&first));
        assert_eq!(orders::get_by_chain_id(conn, new.chain_order_id).unwrap(), Some(first));
        assert_eq!(orders::get_by_chain_id(conn, "other").unwrap(), None);

        let dangling = orders::create_from_chain(
            conn,
            &orders::NewProductionOrder {
                chain_order_id: "another",
                decision_id: Some(4242),
                ..new
            },
        );
        assert!(is_violation(&dangling, DatabaseErrorKind::ForeignKeyViolation), "{dangling:?}");
    }

    fn operators_are_found_by_the_hash_of_their_key_only(conn: &mut DbConnection) {
        let key = operators::new_key();
        assert!(key.starts_with(operators::KEY_PREFIX));
        assert_ne!(key, operators::new_key(), "keys are random");
        let hash = operators::hash_key(&key);
        assert_eq!(hash.len(), 64);
        let stored = operators::create(
            conn,
            &operators::NewOperator { name: "alice", role: operators::ROLE_OPERATOR, key_hash: &hash },
        )
        .unwrap();
        assert_eq!(stored.name, "alice");
        assert!(!format!("{stored:?}").contains(&hash), "Debug leaves the hash out");
        assert_eq!(operators::by_key_hash(conn, &hash).unwrap(), Some(stored.clone()));
        assert_eq!(operators::by_key_hash(conn, &key).unwrap(), None, "the key itself is not stored");
        assert_eq!(operators::by_name(conn, "alice").unwrap(), Some(stored.clone()));

        let again = operators::create(
            conn,
            &operators::NewOperator { name: "alice", role: operators::ROLE_VIEWER, key_hash: "other" },
        );
        assert!(is_violation(&again, DatabaseErrorKind::UniqueViolation), "{again:?}");
        let bad_role = operators::create(
            conn,
            &operators::NewOperator { name: "bob", role: "root", key_hash: "h2" },
        );
        assert!(is_violation(&bad_role, DatabaseErrorKind::CheckViolation), "{bad_role:?}");
        for role in operators::ROLES {
            let name = format!("has-{role}");
            let stored = operators::create(
                conn,
                &operators::NewOperator { name: &name, role, key_hash: &format!("h-{role}") },
            )
            .unwrap();
            assert_eq!(stored.role, role);
            assert_eq!(stored.last_used_at, None);
        }
    }

    fn rotating_or_removing_an_operator_ends_its_key_and_sessions(conn: &mut DbConnection) {
        let new = |name, hash| operators::NewOperator { name, role: operators::ROLE_OPERATOR, key_hash: hash };
        let rita = operators::create(conn, &new("rita", "k1")).unwrap();
        let omar = operators::create(conn, &new("omar", "k2")).unwrap();
        let now = db::now();
        let later = now + chrono::TimeDelta::hours(12);
        let rita_session = sessions::hash_id(&sessions::new_id());
        let omar_session = sessions::hash_id(&sessions::new_id());
        sessions::create(conn, &rita_session, rita.id, now, later).unwrap();
        sessions::create(conn, &omar_session, omar.id, now, later).unwrap();
        assert_eq!(sessions::operator_of(conn, &rita_session, now).unwrap().map(|o| o.name), Some("rita".to_owned()));
        assert_eq!(sessions::operator_of(conn, &rita_session, later).unwrap(), None, "ended at its expiry");

        // Last use is written once a minute at most.
        assert!(operators::needs_touch(&rita, now));
        operators::touch(conn, rita.id, now).unwrap();
        let touched = operators::by_name(conn, "rita").unwrap().unwrap();
        assert_eq!(touched.last_used_at, Some(now));
        assert!(!operators::needs_touch(&touched, now + chrono::TimeDelta::seconds(30)));
        operators::touch(conn, rita.id, now + chrono::TimeDelta::seconds(30)).unwrap();
        assert_eq!(operators::by_name(conn, "rita").unwrap().unwrap().last_used_at, Some(now));

        let rotated = operators::rotate(conn, "rita", "k3").unwrap().unwrap();
        assert_eq!(rotated.id, rita.id);
        assert_eq!(operators::by_key_hash(conn, "k1").unwrap(), None, "the old key stops working");
        assert_eq!(operators::by_key_hash(conn, "k3").unwrap().map(|o| o.id), Some(rita.id));
        assert_eq!(sessions::operator_of(conn, &rita_session, now).unwrap(), None, "rotation ends the sessions");
        assert_eq!(operators::rotate(conn, "nobody", "k4").unwrap(), None);

        assert!(operators::remove(conn, "omar").unwrap());
        assert!(!operators::remove(conn, "omar").unwrap());
        assert_eq!(operators::by_key_hash(conn, "k2").unwrap(), None);
        assert_eq!(sessions::operator_of(conn, &omar_session, now).unwrap(), None, "removal ends the sessions");
        assert_eq!(sessions::count_for(conn, omar.id, now).unwrap(), 0);

        // Sign-out ends one session; ended sessions are purged when a new one starts.
        let one = sessions::hash_id(&sessions::new_id());
        sessions::create(conn, &one, rita.id, now, later).unwrap();
        assert!(sessions::delete(conn, &one).unwrap());
        assert!(!sessions::delete(conn, &one).unwrap());
        let old = sessions::hash_id(&sessions::new_id());
        sessions::create(conn, &old, rita.id, now - chrono::TimeDelta::hours(13), now - chrono::TimeDelta::hours(1)).unwrap();
        sessions::create(conn, &sessions::hash_id(&sessions::new_id()), rita.id, now, later).unwrap();
        assert!(!sessions::delete(conn, &old).unwrap(), "purged");
        assert_eq!(sessions::count_for(conn, rita.id, now).unwrap(), 1);
    }

    fn putting_an_operator_again_replaces_its_key_and_role(conn: &mut DbConnection) {
        let first = operators::put(
            conn,
            &operators::NewOperator { name: "demo", role: operators::ROLE_VIEWER, key_hash: "h1" },
        )
        .unwrap();
        let second = operators::put(
            conn,
            &operators::NewOperator { name: "demo", role: operators::ROLE_OPERATOR, key_hash: "h2" },
        )
        .unwrap();
        assert_eq!(second.id, first.id);
        assert_eq!(second.role, operators::ROLE_OPERATOR);
        assert_eq!(operators::by_key_hash(conn, "h1").unwrap(), None, "the old key stops working");
        assert_eq!(operators::list(conn).unwrap(), vec![second.clone()]);
        assert!(operators::delete(conn, second.id).unwrap());
        assert!(!operators::delete(conn, second.id).unwrap());
        assert!(operators::list(conn).unwrap().is_empty());
    }

    fn migrations_are_idempotent(conn: &mut DbConnection) {
        tokens::put(conn, &master("T1")).unwrap();
        db::run_migrations(conn).unwrap();
        assert_eq!(tokens::master(conn).unwrap().unwrap().token, "T1");
    }
}

/// Two relays on one PostgreSQL database never claim the same row and together claim
/// everything: the `FOR UPDATE SKIP LOCKED` path.
#[test]
fn postgres_concurrent_relays_never_claim_the_same_row() {
    const ROWS: usize = 200;
    let schema = common::PgSchema::create();
    let mut setup = db::connect(schema.url()).unwrap();
    for i in 0..ROWS {
        let key = format!("m{i}");
        outbox::enqueue(&mut setup, &message(&key, &key)).unwrap();
    }
    let now = db::now();
    let start = Arc::new(Barrier::new(2));
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let url = schema.url().to_owned();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut conn = db::establish(&url).unwrap();
                let mut claimed = Vec::new();
                start.wait();
                loop {
                    let rows = outbox::claim_due(&mut conn, now, 7, Duration::minutes(5)).unwrap();
                    if rows.is_empty() {
                        break claimed;
                    }
                    claimed.extend(claimed_ids(&rows));
                }
            })
        })
        .collect();
    let claims: Vec<Vec<i64>> = relays.into_iter().map(|r| r.join().unwrap()).collect();

    let mut seen = HashSet::new();
    for id in claims.iter().flatten() {
        assert!(seen.insert(*id), "row {id} was claimed twice");
    }
    assert_eq!(seen.len(), ROWS, "together the relays claim every row");
    let depth = outbox::depth(&mut setup).unwrap();
    assert_eq!(depth.in_flight, ROWS as i64);
    eprintln!("relay claims: {} + {}", claims[0].len(), claims[1].len());
}

/// A PostgreSQL URL that cannot connect must say why, not "invalid URL".
#[test]
fn postgres_connection_errors_are_reported_as_postgres_errors() {
    let err = match db::connect("postgres://postgres@127.0.0.1:1/postgres") {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(err) => err,
    };
    assert!(matches!(err, mes_core::Error::Connection(_)), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("127.0.0.1") || shown.contains("refused"),
        "{shown}"
    );
}

#[test]
fn postgres_pool_serves_migrated_connections() {
    let schema = common::PgSchema::create();
    let pool = db::pool(schema.url(), 2).unwrap();
    let mut a = pool.get().unwrap();
    let mut b = pool.get().unwrap();
    tokens::put(&mut a, &master("T1")).unwrap();
    assert_eq!(tokens::master(&mut b).unwrap().unwrap().token, "T1");
}

#[test]
fn sqlite_pool_serves_migrated_connections() {
    let file = common::SqliteFile::create();
    let pool = db::pool(&file.url(), 2).unwrap();
    let mut a = pool.get().unwrap();
    let mut b = pool.get().unwrap();
    tokens::put(&mut a, &master("T1")).unwrap();
    assert_eq!(tokens::master(&mut b).unwrap().unwrap().token, "T1");
    let foreign_keys: Vec<i32> = diesel::sql_query("PRAGMA foreign_keys")
        .load::<ForeignKeys>(&mut *b)
        .unwrap()
        .into_iter()
        .map(|row| row.foreign_keys)
        .collect();
    assert_eq!(
        foreign_keys,
        [1],
        "every pooled SQLite connection enforces foreign keys"
    );
}

#[derive(QueryableByName)]
struct ForeignKeys {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    foreign_keys: i32,
}

/// Operators' actions on the outbox, retention and the age cap.
mod outbox_operations {
    use super::*;

    /// A row claimed and failed by the chain, as the relay leaves it.
    fn failed_row(conn: &mut DbConnection, dedup_key: &str) -> outbox::OutboxRow {
        outbox::enqueue(conn, &message(dedup_key, dedup_key)).unwrap();
        let id = outbox::get_by_dedup_key(conn, dedup_key)
            .unwrap()
            .unwrap()
            .id;
        let claimed = outbox::claim_due(conn, db::now(), 10, Duration::seconds(30)).unwrap();
        assert_eq!(claimed_ids(&claimed), [id]);
        outbox::mark_failed(conn, id, "record PT10 does not exist").unwrap()
    }

    backend_tests! {
        fn outbox_a_failed_row_retried_is_due_at_once_with_its_attempts_and_key(conn: &mut DbConnection) {
            let failed = failed_row(conn, "unit-PT10-1");
            assert_eq!((failed.status.as_str(), failed.attempts), (outbox::FAILED, 1));
            let before = db::now();

            let outbox::Acted::Done(row) = outbox::retry_failed(conn, failed.id).unwrap() else {
                panic!("a failed row can be retried");
            };
            assert_eq!(row.status, outbox::PENDING);
            assert_eq!(row.attempts, 1, "attempts are kept");
            assert_eq!(row.dedup_key, failed.dedup_key, "the dedup key is kept");
            // The chain refused it: its key would only fetch the refusal again.
            assert!(failed.refused);
            assert_eq!(row.idem_key(), "unit-PT10-1#retry-1");
            assert!(!row.refused);
            assert_eq!(row.payload, failed.payload);
            assert!(row.next_attempt_at >= before && row.next_attempt_at <= db::now());
            assert_eq!(row.retried_at, Some(row.next_attempt_at));
            assert_eq!(row.last_error, failed.last_error, "why it failed stays visible");

            let again = outbox::claim_due(conn, db::now(), 10, Duration::seconds(30)).unwrap();
            assert_eq!(claimed_ids(&again), [failed.id]);
            assert_eq!(again[0].attempts, 2);

            // Only failed rows: an in-flight one is not, a missing one is not there.
            assert_eq!(
                outbox::retry_failed(conn, failed.id).unwrap(),
                outbox::Acted::NotFailed(outbox::IN_FLIGHT.to_owned())
            );
            assert_eq!(outbox::retry_failed(conn, failed.id + 1000).unwrap(), outbox::Acted::Missing);

            // Given up on a cap (never answered), it keeps the key it was last sent under.
            let capped = outbox::give_up(conn, failed.id, "not delivered after 2 attempts").unwrap();
            assert_eq!((capped.status.as_str(), capped.refused), (outbox::FAILED, false));
            let outbox::Acted::Done(row) = outbox::retry_failed(conn, failed.id).unwrap() else {
                panic!("a capped row can be retried");
            };
            assert_eq!(row.idem_key(), "unit-PT10-1#retry-1");
            assert_eq!(row.attempts, 2);
        }

        fn outbox_a_discarded_row_keeps_who_and_why_and_is_never_claimed(conn: &mut DbConnection) {
            let failed = failed_row(conn, "unit-PT10-1");
            let outbox::Acted::Done(row) =
                outbox::discard_failed(conn, failed.id, "alice", "unit removed from the chain").unwrap()
            else {
                panic!("a failed row can be discarded");
            };
            assert_eq!(row.status, outbox::DISCARDED);
            assert_eq!(row.discarded_by.as_deref(), Some("alice"));
            assert_eq!(row.discard_reason.as_deref(), Some("unit removed from the chain"));
            assert!(row.discarded_at.is_some());
            assert_eq!(outbox::get(conn, failed.id).unwrap(), Some(*row));

            assert!(outbox::claim_due(conn, db::now(), 10, Duration::seconds(30)).unwrap().is_empty());
            assert_eq!(
                outbox::retry_failed(conn, failed.id).unwrap(),
                outbox::Acted::NotFailed(outbox::DISCARDED.to_owned()),
                "a discarded row stays discarded"
            );
            assert_eq!(
                outbox::discard_failed(conn, failed.id, "bob", "again").unwrap(),
                outbox::Acted::NotFailed(outbox::DISCARDED.to_owned())
            );
            assert_eq!(outbox::depth(conn).unwrap().discarded, 1);
            assert_eq!(outbox::list(conn, Some(outbox::DISCARDED), 10, 0).unwrap().len(), 1);
            // Its dedup key still holds.
            assert!(!outbox::enqueue(conn, &message("unit-PT10-1", "unit-PT10-1")).unwrap());
        }

        fn outbox_purge_empties_old_delivered_rows_and_keeps_their_keys(conn: &mut DbConnection) {
            for key in ["day-PT10-2026-11-01", "day-PT10-2026-11-02", "unit-PT10"] {
                outbox::enqueue(conn, &message(key, key)).unwrap();
            }
            let rows = outbox::claim_due(conn, db::now(), 10, Duration::seconds(30)).unwrap();
            outbox::mark_done(conn, rows[0].id, Some("ok")).unwrap();
            outbox::mark_done(conn, rows[1].id, Some("ok")).unwrap();
            outbox::mark_failed(conn, rows[2].id, "refused").unwrap();
            let later = db::now() + Duration::seconds(1);

            assert_eq!(outbox::purge_delivered(conn, db::now() - Duration::hours(1), 10).unwrap(), 0);
            // In batches: one row, then the other, then nothing.
            assert_eq!(outbox::purge_delivered(conn, later, 1).unwrap(), 1);
            assert_eq!(outbox::purge_delivered(conn, later, 1).unwrap(), 1);
            assert_eq!(outbox::purge_delivered(conn, later, 1).unwrap(), 0);

            for row in &rows[..2] {
                let purged = outbox::get(conn, row.id).unwrap().unwrap();
                assert_eq!(purged.payload, "");
                assert!(purged.purged_at.is_some());
                assert_eq!(purged.status, outbox::DONE);
                assert_eq!(purged.dedup_key, row.dedup_key);
                assert!(
                    !outbox::enqueue(conn, &message(&row.dedup_key, &row.ordering_key)).unwrap(),
                    "the tombstone still refuses {}",
                    row.dedup_key
                );
            }
            let failed = outbox::get(conn, rows[2].id).unwrap().unwrap();
            assert_eq!((failed.payload.as_str(), failed.purged_at), (rows[2].payload.as_str(), None), "failed rows are never purged");
            assert_eq!(outbox::depth(conn).unwrap().done, 2);
        }

        fn outbox_overdue_pending_rows_fail_with_the_reason_and_a_retry_restarts_the_clock(conn: &mut DbConnection) {
            outbox::enqueue(conn, &message("m1", "k1")).unwrap();
            outbox::enqueue(conn, &message("m2", "k2")).unwrap();
            let m1 = outbox::get_by_dedup_key(conn, "m1").unwrap().unwrap();
            // m2 is in flight: the relay settles it, the sweep leaves it alone.
            let m2 = outbox::claim_next_of_key(conn, db::now(), "k2", Duration::seconds(30), &[]).unwrap().unwrap();
            let why = "not delivered within 7d (MES_OUTBOX_MAX_AGE)";

            assert!(outbox::fail_overdue(conn, m1.created_at, why, 10).unwrap().is_empty());
            let cutoff = db::now() + Duration::seconds(1);
            let failed = outbox::fail_overdue(conn, cutoff, why, 10).unwrap();
            assert_eq!(claimed_ids(&failed), [m1.id]);
            assert_eq!(failed[0].status, outbox::FAILED);
            assert_eq!(failed[0].last_error.as_deref(), Some(why));
            assert_eq!(outbox::get(conn, m2.id).unwrap().unwrap().status, outbox::IN_FLIGHT);

            // Retried, its age counts from the retry.
            outbox::retry_failed(conn, m1.id).unwrap();
            assert!(outbox::fail_overdue(conn, cutoff - Duration::seconds(1), why, 10).unwrap().is_empty());
            let m1 = outbox::claim_next_of_key(conn, db::now(), "k1", Duration::seconds(30), &[]).unwrap().unwrap();
            outbox::retry_later(conn, m1.id, db::now(), "no answer within 10s").unwrap();
            let failed = outbox::fail_overdue(conn, db::now() + Duration::seconds(1), why, 10).unwrap();
            assert_eq!(
                failed[0].last_error.as_deref(),
                Some("not delivered within 7d (MES_OUTBOX_MAX_AGE) (last error: no answer within 10s)")
            );
        }

        fn outbox_oldest_unsettled_is_the_oldest_pending_or_in_flight_row(conn: &mut DbConnection) {
            assert_eq!(outbox::oldest_unsettled(conn).unwrap(), None);
            outbox::enqueue(conn, &message("m1", "k1")).unwrap();
            outbox::enqueue(conn, &message("m2", "k2")).unwrap();
            let m1 = outbox::get_by_dedup_key(conn, "m1").unwrap().unwrap();
            let m2 = outbox::get_by_dedup_key(conn, "m2").unwrap().unwrap();
            assert_eq!(outbox::oldest_unsettled(conn).unwrap(), Some(m1.created_at));
            outbox::claim_next_of_key(conn, db::now(), "k1", Duration::seconds(30), &[]).unwrap();
            assert_eq!(outbox::oldest_unsettled(conn).unwrap(), Some(m1.created_at));
            outbox::mark_done(conn, m1.id, None).unwrap();
            assert_eq!(outbox::oldest_unsettled(conn).unwrap(), Some(m2.created_at));
        }
    }
}
