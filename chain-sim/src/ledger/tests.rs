#![allow(clippy::unwrap_used, clippy::panic)]

use mes_core::codec::{
    AnswerBody, DayReportRecord, PropertyValue, RecordAction, RecordTypeAction, record_types,
};
use secp256k1::ecdsa::Signature;
use secp256k1::{Message, PublicKey};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;
use crate::erp::{ErpOrder, ErpPartner};

const T: &str = "4f1c2a9e7b";
const NOW: i64 = 1_700_000_000;

struct Fixture {
    ledger: Ledger,
    key: SigningKey,
    mes: AgentKey,
}

fn fixture() -> Fixture {
    let key = SigningKey::generate();
    let mes = SigningKey::generate().agent_key();
    let mut ledger = Ledger::new(key.clone(), mes.clone(), [T.to_owned()]);
    ledger.set_clock(Some(NOW));
    Fixture { ledger, key, mes }
}

fn head() -> Head {
    Head {
        auth: T.into(),
        ..Head::default()
    }
}

fn head_idem(key: &str) -> Head {
    Head {
        idem: Some(key.into()),
        ..head()
    }
}

fn signed_by(agent: &AgentKey) -> Head {
    Head {
        signer: Some(agent.to_string()),
        ..head()
    }
}

fn code(body: &ReplyBody) -> Option<&str> {
    match body {
        ReplyBody::Error { code, .. } => code.as_deref(),
        _ => None,
    }
}

fn text(body: &ReplyBody) -> String {
    body.text()
}

fn apply(l: &mut Ledger, head: &Head, request: Request) -> ReplyBody {
    l.apply(request.topic(), head, &request)
}

fn answer_partner(id: &RequestId, response: Answer) -> Request {
    Request::AnswerPartner(AnswerBody {
        id: id.clone(),
        response,
    })
}

fn answer_order(id: &RequestId, response: Answer) -> Request {
    Request::AnswerOrder(AnswerBody {
        id: id.clone(),
        response,
    })
}

fn pv(name: &str, value: Value) -> PropertyValue {
    PropertyValue {
        name: name.into(),
        value,
    }
}

fn production_unit(l: &mut Ledger) {
    let r = apply(
        l,
        &head(),
        Request::RecordType(record_types::production_unit()),
    );
    assert_eq!(code(&r), None, "{r:?}");
}

fn create_pt10(l: &mut Ledger, head: &Head) -> ReplyBody {
    apply(
        l,
        head,
        Request::Record(RecordAction::CreateRecord {
            record_id: "PT10".into(),
            record_type: "ProductionUnit".into(),
            properties: vec![
                pv("name", json!("Press 10")),
                pv("status", json!("RUNNING")),
            ],
        }),
    )
}

fn update_status(l: &mut Ledger, head: &Head, status: &str) -> ReplyBody {
    apply(
        l,
        head,
        Request::Record(RecordAction::UpdateProperties {
            record_id: "PT10".into(),
            properties: vec![pv("status", json!(status))],
        }),
    )
}

fn add_reporter(l: &mut Ledger, head: &Head, reporter: &AgentKey) -> ReplyBody {
    apply(
        l,
        head,
        Request::Record(RecordAction::AddReporter {
            record_id: "PT10".into(),
            reporter: reporter.clone(),
            properties: vec!["status".into()],
        }),
    )
}

fn day_report(report_id: &str, shift: &str) -> Request {
    Request::Record(RecordAction::CreateDayReport {
        report_id: report_id.into(),
        unit: "PT10".into(),
        date: "2021-01-11".into(),
        records: vec![
            DayReportRecord {
                record_id: format!("{report_id}_101"),
                shift: "A".into(),
                indicator: "availability".into(),
                value: Some(0.875),
            },
            DayReportRecord {
                record_id: format!("{report_id}_406"),
                shift: shift.into(),
                indicator: "mttr".into(),
                value: None,
            },
        ],
    })
}

fn verifies(key: &AgentKey, tx: &Transaction) -> bool {
    let public: PublicKey = key.public_key().unwrap();
    let raw = hex::decode(tx.id.as_str()).unwrap();
    let sig = Signature::from_compact(&raw).unwrap();
    let digest: [u8; 32] = Sha256::digest(tx.payload.as_bytes()).into();
    secp256k1::ecdsa::verify(&sig, Message::from_digest(digest), &public).is_ok()
}

#[test]
fn unknown_token_is_unauthorized_and_changes_nothing() {
    let Fixture {
        mut ledger, mes, ..
    } = fixture();
    let id = ledger.add_partner(mes, Status::Open, NOW).unwrap();
    let before = ledger.snapshot();
    let stranger = Head {
        auth: "nope".into(),
        ..Head::default()
    };
    for request in [
        Request::ListPartners(Page::default()),
        answer_partner(&id, Answer::Accept),
        Request::RecordType(record_types::day_report()),
    ] {
        let r = apply(&mut ledger, &stranger, request);
        assert_eq!(code(&r), Some("unauthorized"));
    }
    let agent = SigningKey::generate().agent_key();
    let r = ledger.erp_partner(
        &stranger,
        &ErpPartner {
            issuing_agent: agent,
        },
    );
    assert_eq!(code(&r), Some("unauthorized"));
    let c = ledger.counters();
    assert_eq!((c.applied, c.unauthorized, c.refused), (0, 4, 4));
    assert_eq!(c.by_topic["BLK_Part_Ans"], 1);
    assert_eq!(ledger.state().partners, before.partners);
}

#[test]
fn malformed_signer_is_unauthorized() {
    let Fixture { mut ledger, .. } = fixture();
    let head = Head {
        signer: Some("02ab".into()),
        ..head()
    };
    let r = apply(&mut ledger, &head, Request::ListPartners(Page::default()));
    assert_eq!(code(&r), Some("unauthorized"));
}

#[test]
fn answering_a_partner_request() {
    let Fixture {
        mut ledger, key, ..
    } = fixture();
    let erp = SigningKey::generate().agent_key();
    let id = ledger.add_partner(erp, Status::Open, NOW - 100).unwrap();
    ledger.set_clock(Some(NOW + 5));
    let r = apply(&mut ledger, &head(), answer_partner(&id, Answer::Accept));
    assert_eq!(text(&r), format!("Request {id} accepted"));
    let p = ledger.partner(&id).unwrap();
    assert_eq!(p.status, Status::Accepted);
    assert_eq!(p.answer_timestamp, NOW + 5);
    assert_eq!(p.transaction_ids.len(), 2);
    for tx in &p.transaction_ids {
        assert!(verifies(&key.agent_key(), ledger.transaction(tx).unwrap()));
    }

    let r = apply(&mut ledger, &head(), answer_partner(&id, Answer::Reject));
    assert_eq!(code(&r), Some("not_open"));
    assert_eq!(ledger.partner(&id).unwrap().status, Status::Accepted);

    let unknown: RequestId = "0".repeat(32).parse().unwrap();
    let r = apply(
        &mut ledger,
        &head(),
        answer_partner(&unknown, Answer::Accept),
    );
    assert_eq!(code(&r), Some("not_found"));
    let r = apply(&mut ledger, &head(), answer_order(&unknown, Answer::Accept));
    assert_eq!(code(&r), Some("not_found"));

    let c = ledger.counters();
    assert_eq!((c.applied, c.changes, c.refused), (4, 1, 3));
}

#[test]
fn rejecting_says_rejected() {
    let Fixture { mut ledger, .. } = fixture();
    let erp = SigningKey::generate().agent_key();
    let id = ledger.add_partner(erp, Status::Open, NOW).unwrap();
    let r = apply(&mut ledger, &head(), answer_partner(&id, Answer::Reject));
    assert_eq!(text(&r), format!("Request {id} rejected"));
    assert_eq!(ledger.partner(&id).unwrap().status, Status::Rejected);
}

#[test]
fn unknown_status_is_kept_and_not_open() {
    let Fixture { mut ledger, .. } = fixture();
    let erp = SigningKey::generate().agent_key();
    let id = ledger
        .add_partner(erp, Status::Other("CANCELLED".into()), NOW)
        .unwrap();
    let ReplyBody::Data(items) =
        apply(&mut ledger, &head(), Request::ListPartners(Page::default()))
    else {
        panic!("no data")
    };
    assert_eq!(items[0]["status"], "CANCELLED");
    let r = apply(&mut ledger, &head(), answer_partner(&id, Answer::Accept));
    assert_eq!(code(&r), Some("not_open"));
}

#[test]
fn orders_come_only_from_accepted_partners() {
    let Fixture {
        mut ledger, mes, ..
    } = fixture();
    let erp = SigningKey::generate().agent_key();
    let order = ErpOrder {
        issuing_agent: erp.clone(),
        order_type: "dummy_action".into(),
        description: "Operator's note".into(),
        metadata: json!({"Part": "steering wheel", "Size": 3}),
        files: vec![],
    };

    let r = ledger.erp_order(&head(), &order);
    assert_eq!(code(&r), Some("not_a_partner"));
    assert!(ledger.state().orders.is_empty());

    let r = ledger.erp_partner(
        &head(),
        &ErpPartner {
            issuing_agent: erp.clone(),
        },
    );
    let partner_id: RequestId = text(&r).split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(ledger.partner(&partner_id).unwrap().status, Status::Open);
    assert_eq!(ledger.partner(&partner_id).unwrap().receiving_agent, mes);
    let r = ledger.erp_order(&head(), &order);
    assert_eq!(
        code(&r),
        Some("not_a_partner"),
        "an OPEN request is no partnership"
    );

    apply(
        &mut ledger,
        &head(),
        answer_partner(&partner_id, Answer::Accept),
    );
    let r = ledger.erp_order(&head(), &order);
    assert_eq!(code(&r), None, "{r:?}");
    let order_id: RequestId = text(&r).split(' ').nth(2).unwrap().parse().unwrap();
    let stored = ledger.order(&order_id).unwrap();
    assert_eq!(stored.status, Status::Open);
    assert_eq!(stored.metadata, order.metadata);
    assert_eq!(stored.receiving_agent, mes);

    // The partnership ends before the MES accepts the order.
    assert!(ledger.set_partner_status(&partner_id, Status::Other("REVOKED".into())));
    let r = apply(
        &mut ledger,
        &head(),
        answer_order(&order_id, Answer::Accept),
    );
    assert_eq!(code(&r), Some("not_a_partner"));
    assert_eq!(ledger.order(&order_id).unwrap().status, Status::Open);
    // Rejecting needs no partnership.
    let r = apply(
        &mut ledger,
        &head(),
        answer_order(&order_id, Answer::Reject),
    );
    assert_eq!(text(&r), format!("Request {order_id} rejected"));
    let r = apply(
        &mut ledger,
        &head(),
        answer_order(&order_id, Answer::Accept),
    );
    assert_eq!(code(&r), Some("not_open"));
    assert_eq!(ledger.counters().by_topic["SIM_Erp_Act"], 3);
    assert_eq!(ledger.counters().by_topic["SIM_Erp_Part"], 1);
}

#[test]
fn accepting_an_order_of_a_partner() {
    let Fixture { mut ledger, .. } = fixture();
    let erp = SigningKey::generate().agent_key();
    ledger
        .add_partner(erp.clone(), Status::Accepted, NOW)
        .unwrap();
    let new = NewOrder {
        issuing_agent: erp,
        order_type: "dummy_action".into(),
        description: String::new(),
        metadata: json!({}),
        files: vec![],
    };
    let id = ledger.add_order(new, Status::Open, NOW).unwrap();
    let r = apply(&mut ledger, &head(), answer_order(&id, Answer::Accept));
    assert_eq!(text(&r), format!("Request {id} accepted"));
    let o = ledger.order(&id).unwrap();
    assert_eq!(o.status, Status::Accepted);
    assert_eq!(o.answer_timestamp, NOW);
    assert_eq!(o.transaction_ids.len(), 2);
}

#[test]
fn record_types_exist_once_and_are_checked() {
    let Fixture { mut ledger, .. } = fixture();
    production_unit(&mut ledger);
    let r = apply(
        &mut ledger,
        &head(),
        Request::RecordType(record_types::production_unit()),
    );
    assert_eq!(code(&r), Some("already_exists"));
    assert!(r.is_already_exists());
    assert!(text(&r).contains("already exists"), "legacy text too");

    let RecordTypeAction::CreateRecordType { mut properties, .. } = record_types::day_report();
    properties[2].enum_options.clear();
    let bad = RecordTypeAction::CreateRecordType {
        name: "Broken".into(),
        properties,
    };
    let r = apply(&mut ledger, &head(), Request::RecordType(bad));
    assert_eq!(code(&r), Some("invalid_property"));
    assert_eq!(ledger.state().record_types.len(), 1);
}

#[test]
fn records_need_a_type_and_valid_properties() {
    let Fixture {
        mut ledger, mes, ..
    } = fixture();
    let r = create_pt10(&mut ledger, &head());
    assert_eq!(code(&r), Some("unknown_record_type"));
    production_unit(&mut ledger);

    let missing = Request::Record(RecordAction::CreateRecord {
        record_id: "PT10".into(),
        record_type: "ProductionUnit".into(),
        properties: vec![pv("name", json!("Press 10"))],
    });
    assert_eq!(
        code(&apply(&mut ledger, &head(), missing)),
        Some("invalid_property")
    );
    let wrong_type = Request::Record(RecordAction::CreateRecord {
        record_id: "PT10".into(),
        record_type: "ProductionUnit".into(),
        properties: vec![pv("name", json!(10)), pv("status", json!("RUNNING"))],
    });
    assert_eq!(
        code(&apply(&mut ledger, &head(), wrong_type)),
        Some("invalid_property")
    );
    let unknown = Request::Record(RecordAction::CreateRecord {
        record_id: "PT10".into(),
        record_type: "ProductionUnit".into(),
        properties: vec![
            pv("name", json!("Press 10")),
            pv("status", json!("RUNNING")),
            pv("colour", json!("red")),
        ],
    });
    assert_eq!(
        code(&apply(&mut ledger, &head(), unknown)),
        Some("invalid_property")
    );
    assert!(ledger.record("PT10").is_none());

    let r = create_pt10(&mut ledger, &head());
    assert_eq!(text(&r), "Record PT10 created");
    let record = ledger.record("PT10").unwrap();
    assert_eq!(record.owner, mes, "the token's agent owns it");
    assert_eq!(record.reporters["process_name"], vec![mes.clone()]);
    assert_eq!(record.properties["status"][0].value, json!("RUNNING"));
    let r = create_pt10(&mut ledger, &head());
    assert_eq!(code(&r), Some("already_exists"));
}

#[test]
fn only_the_owner_adds_reporters_and_only_reporters_update() {
    let Fixture {
        mut ledger, mes, ..
    } = fixture();
    production_unit(&mut ledger);
    let other = SigningKey::generate().agent_key();

    assert_eq!(
        code(&add_reporter(&mut ledger, &head(), &other)),
        Some("unknown_record")
    );
    assert_eq!(
        code(&update_status(&mut ledger, &head(), "STOPPED")),
        Some("unknown_record")
    );
    create_pt10(&mut ledger, &head());

    assert_eq!(
        code(&update_status(&mut ledger, &signed_by(&other), "STOPPED")),
        Some("not_reporter")
    );
    assert_eq!(
        code(&add_reporter(&mut ledger, &signed_by(&other), &other)),
        Some("not_owner")
    );
    let r = add_reporter(&mut ledger, &head(), &other);
    assert_eq!(code(&r), None, "{r:?}");
    assert_eq!(
        code(&add_reporter(&mut ledger, &head(), &other)),
        Some("already_exists")
    );
    let bad_property = Request::Record(RecordAction::AddReporter {
        record_id: "PT10".into(),
        reporter: other.clone(),
        properties: vec!["colour".into()],
    });
    assert_eq!(
        code(&apply(&mut ledger, &head(), bad_property)),
        Some("invalid_property")
    );

    let r = update_status(&mut ledger, &signed_by(&other), "STOPPED");
    assert_eq!(text(&r), "Record PT10 updated: status");
    let name_by_other = Request::Record(RecordAction::UpdateProperties {
        record_id: "PT10".into(),
        properties: vec![pv("name", json!("Press X"))],
    });
    assert_eq!(
        code(&apply(&mut ledger, &signed_by(&other), name_by_other)),
        Some("not_reporter"),
        "a reporter of status only"
    );
    assert_eq!(
        code(&update_status(&mut ledger, &head(), "")),
        None,
        "the owner still reports"
    );
    let wrong = Request::Record(RecordAction::UpdateProperties {
        record_id: "PT10".into(),
        properties: vec![pv("status", json!(true))],
    });
    assert_eq!(
        code(&apply(&mut ledger, &head(), wrong)),
        Some("invalid_property")
    );

    let history: Vec<(Value, AgentKey)> = ledger.record("PT10").unwrap().properties["status"]
        .iter()
        .map(|e| (e.value.clone(), e.reporter.clone()))
        .collect();
    assert_eq!(
        history,
        vec![
            (json!("RUNNING"), mes.clone()),
            (json!("STOPPED"), other),
            (json!(""), mes)
        ]
    );
}

#[test]
fn day_reports_are_day_report_records_stored_once() {
    let Fixture {
        mut ledger,
        key,
        mes,
    } = fixture();
    let r = apply(&mut ledger, &head(), day_report("001_21_01_02_PT10", "DAY"));
    assert_eq!(code(&r), Some("unknown_record_type"));
    apply(
        &mut ledger,
        &head(),
        Request::RecordType(record_types::day_report()),
    );

    let r = apply(
        &mut ledger,
        &head(),
        day_report("001_21_01_02_PT10", "NIGHT"),
    );
    assert_eq!(code(&r), Some("invalid_property"));
    assert!(ledger.state().records.is_empty(), "all or nothing");
    assert!(ledger.state().day_reports.is_empty());

    let r = apply(&mut ledger, &head(), day_report("001_21_01_02_PT10", "DAY"));
    assert_eq!(
        text(&r),
        "Day report 001_21_01_02_PT10 created with 2 records"
    );
    let rec = ledger.record("001_21_01_02_PT10_101").unwrap();
    assert_eq!(rec.record_type, "DayReport");
    assert_eq!(rec.owner, mes);
    assert_eq!(rec.properties["value"][0].value, json!(0.875));
    assert_eq!(rec.properties["shift"][0].value, json!("A"));
    let rec = ledger.record("001_21_01_02_PT10_406").unwrap();
    assert_eq!(rec.properties["value"][0].value, Value::Null);
    assert!(verifies(
        &key.agent_key(),
        ledger.transaction(&rec.transaction_ids[0]).unwrap()
    ));
    assert_eq!(
        ledger.state().day_reports["001_21_01_02_PT10"],
        vec!["001_21_01_02_PT10_101", "001_21_01_02_PT10_406"]
    );

    let r = apply(&mut ledger, &head(), day_report("001_21_01_02_PT10", "DAY"));
    assert_eq!(code(&r), Some("already_exists"));
    assert_eq!(ledger.state().records.len(), 2);
}

#[test]
fn a_repeated_idem_returns_the_first_answer_and_changes_nothing() {
    let Fixture { mut ledger, .. } = fixture();
    let first = apply(
        &mut ledger,
        &head_idem("rty:1"),
        Request::RecordType(record_types::production_unit()),
    );
    let state = ledger.snapshot();
    let again = apply(
        &mut ledger,
        &head_idem("rty:1"),
        Request::RecordType(record_types::production_unit()),
    );
    assert_eq!(again, first);
    assert_eq!(code(&again), None, "not already_exists: the first answer");
    let c = ledger.counters();
    assert_eq!((c.applied, c.changes, c.replays), (1, 1, 1));
    assert_eq!(c.by_topic["BLK_Rty"], 2);
    assert_eq!(ledger.state().transactions, state.transactions);
    assert_eq!(ledger.state().record_types, state.record_types);

    // A first answer that was an error stays the answer, even once it would succeed.
    let failed = create_pt10(
        &mut ledger,
        &Head {
            idem: Some("rec:1".into()),
            signer: None,
            ..head()
        },
    );
    assert_eq!(code(&failed), None);
    let r = update_status(&mut ledger, &head_idem("upd:1"), "BROKEN");
    assert_eq!(code(&r), None);
    let r2 = update_status(&mut ledger, &head_idem("upd:1"), "BROKEN");
    assert_eq!(r, r2);
    assert_eq!(ledger.record("PT10").unwrap().properties["status"].len(), 2);

    let mut fresh = fixture().ledger;
    let err = update_status(&mut fresh, &head_idem("k"), "X");
    assert_eq!(code(&err), Some("unknown_record"));
    production_unit(&mut fresh);
    create_pt10(&mut fresh, &head());
    assert_eq!(update_status(&mut fresh, &head_idem("k"), "X"), err);
    assert_eq!(fresh.record("PT10").unwrap().properties["status"].len(), 1);

    // Without a key, a repeated request is applied again.
    let a = apply(
        &mut fresh,
        &head(),
        Request::RecordType(record_types::day_report()),
    );
    let b = apply(
        &mut fresh,
        &head(),
        Request::RecordType(record_types::day_report()),
    );
    assert_eq!(code(&a), None);
    assert_eq!(code(&b), Some("already_exists"));
}

#[test]
fn lists_are_paged_by_timestamp_then_id() {
    let Fixture { mut ledger, .. } = fixture();
    let mut expected = Vec::new();
    for (i, at) in [50, 10, 30, 10, 20].into_iter().enumerate() {
        let erp = SigningKey::generate().agent_key();
        let status = if i == 0 {
            Status::Accepted
        } else {
            Status::Open
        };
        let id = ledger.add_partner(erp, status, NOW + at).unwrap();
        expected.push((NOW + at, id));
    }
    expected.sort();
    let ids = |body: ReplyBody| -> Vec<String> {
        let ReplyBody::Data(items) = body else {
            panic!("no data")
        };
        items
            .iter()
            .map(|i| i["partner_request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = |start, limit| Request::ListPartners(Page { start, limit });
    let all = ids(apply(&mut ledger, &head(), page(0, 10)));
    let want: Vec<String> = expected.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(all, want);
    assert_eq!(
        ids(apply(&mut ledger, &head(), page(1, 2))),
        want[1..3].to_vec()
    );
    assert_eq!(
        ids(apply(&mut ledger, &head(), page(4, 10))),
        want[4..].to_vec()
    );
    assert!(ids(apply(&mut ledger, &head(), page(5, 10))).is_empty());
    assert!(ids(apply(&mut ledger, &head(), page(0, 0))).is_empty());
    assert!(ids(apply(&mut ledger, &head(), page(u32::MAX, u32::MAX))).is_empty());
    assert_eq!(ledger.counters().changes, 0, "lists change nothing");

    let ReplyBody::Data(items) = apply(&mut ledger, &head(), Request::ListOrders(Page::default()))
    else {
        panic!("no data")
    };
    assert!(items.is_empty());
}

#[test]
fn list_items_have_every_protocol_field() {
    let Fixture {
        mut ledger, mes, ..
    } = fixture();
    crate::demo::seed(&mut ledger, 3, NOW);
    let ReplyBody::Data(items) = apply(&mut ledger, &head(), Request::ListOrders(Page::default()))
    else {
        panic!("no data")
    };
    let keys: Vec<&str> = items[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "abs_action_id",
            "answer_timestamp",
            "description",
            "files",
            "issuing_agent",
            "metadata",
            "receiving_agent",
            "status",
            "timestamp",
            "transaction_ids",
            "type"
        ]
    );
    assert_eq!(items[0]["receiving_agent"], json!(mes));
    let typed: Vec<OrderRequest> = items
        .into_iter()
        .map(|i| serde_json::from_value(i).unwrap())
        .collect();
    assert_eq!(typed.len(), 3);
}

#[test]
fn every_transaction_id_is_a_signature_over_its_payload() {
    let Fixture {
        mut ledger, key, ..
    } = fixture();
    crate::demo::seed(&mut ledger, 4, NOW);
    production_unit(&mut ledger);
    create_pt10(&mut ledger, &head());
    let txs = &ledger.state().transactions;
    assert!(txs.len() > 8);
    for tx in txs {
        assert!(verifies(&key.agent_key(), tx), "{tx:?}");
        let payload: Value = serde_json::from_str(&tx.payload).unwrap();
        assert!(payload["seq"].is_u64() && payload["op"].is_string());
    }
    let other = SigningKey::generate().agent_key();
    assert!(!verifies(&other, &txs[0]));
    let mut forged = txs[0].clone();
    forged.payload.push(' ');
    assert!(!verifies(&key.agent_key(), &forged));
    let ids: BTreeSet<&TxId> = txs.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), txs.len(), "ids are distinct");
}

#[test]
fn a_request_on_the_wrong_topic_is_a_bad_request() {
    let Fixture { mut ledger, .. } = fixture();
    let r = ledger.apply(
        Topic::Record,
        &head(),
        &Request::ListPartners(Page::default()),
    );
    assert_eq!(code(&r), Some("bad_request"));
    assert_eq!(ledger.counters().by_topic["BLK_Rec"], 1);
}

#[test]
fn the_snapshot_is_json() {
    let Fixture { mut ledger, .. } = fixture();
    crate::demo::seed(&mut ledger, 2, NOW);
    let text = serde_json::to_string(&ledger.snapshot()).unwrap();
    let back: LedgerState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, ledger.snapshot());
}

#[test]
fn a_resumed_ledger_continues_the_records_and_transactions_of_its_snapshot() {
    let Fixture {
        mut ledger,
        key,
        mes,
    } = fixture();
    production_unit(&mut ledger);
    assert_eq!(code(&create_pt10(&mut ledger, &head())), None);
    let snapshot = ledger.snapshot();

    let mut resumed = Ledger::new(key.clone(), mes, [T.to_owned()]).with_state(snapshot.clone());
    resumed.set_clock(Some(NOW));
    assert_eq!(resumed.snapshot(), snapshot);
    let r = update_status(&mut resumed, &head(), "STOPPED");
    assert_eq!(code(&r), None, "the MES still reports its record: {r:?}");
    let history: Vec<&Value> = resumed.record("PT10").unwrap().properties["status"]
        .iter()
        .map(|e| &e.value)
        .collect();
    assert_eq!(history, [&json!("RUNNING"), &json!("STOPPED")]);
    assert_eq!(resumed.counters().applied, snapshot.counters.applied + 1);
    let txs = &resumed.state().transactions;
    assert_eq!(txs.len(), snapshot.transactions.len() + 1);
    let last: Value = serde_json::from_str(&txs[txs.len() - 1].payload).unwrap();
    assert_eq!(last["seq"], txs.len(), "sequence numbers go on");
    assert!(verifies(&key.agent_key(), &txs[txs.len() - 1]));
}

/// Each answer's reply names the request it answers, success or refusal: with no
/// correlation echo, it is what lets a caller (or a test) tell its reply from another's.
#[test]
fn every_answer_reply_names_its_request() {
    let Fixture { mut ledger, .. } = fixture();
    let erp = SigningKey::generate().agent_key();
    let partner = ledger.add_partner(erp.clone(), Status::Open, NOW).unwrap();
    let r = apply(
        &mut ledger,
        &head(),
        answer_partner(&partner, Answer::Reject),
    );
    assert_eq!(text(&r), format!("Request {partner} rejected"));
    let r = apply(
        &mut ledger,
        &head(),
        answer_partner(&partner, Answer::Accept),
    );
    assert_eq!(code(&r), Some("not_open"));
    assert!(r.text().contains(partner.as_str()), "{}", r.text());

    ledger
        .add_partner(erp.clone(), Status::Accepted, NOW)
        .unwrap();
    let new = NewOrder {
        issuing_agent: erp,
        order_type: "dummy_action".into(),
        description: String::new(),
        metadata: json!({}),
        files: vec![],
    };
    let order = ledger.add_order(new, Status::Open, NOW).unwrap();
    let r = apply(&mut ledger, &head(), answer_order(&order, Answer::Reject));
    assert_eq!(text(&r), format!("Request {order} rejected"));

    let unknown: RequestId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    for request in [
        answer_partner(&unknown, Answer::Accept),
        answer_order(&unknown, Answer::Reject),
    ] {
        let r = apply(&mut ledger, &head(), request);
        assert_eq!(code(&r), Some("not_found"));
        assert!(r.text().contains(unknown.as_str()), "{}", r.text());
    }
}

#[test]
fn a_snapshot_from_before_the_reply_counters_still_loads() {
    let text = r#"{"by_topic": {}, "applied": 1, "changes": 1, "replays": 0,
        "refused": 0, "unauthorized": 0, "undecodable": 0}"#;
    let counters: Counters = serde_json::from_str(text).unwrap();
    assert_eq!((counters.lost_replies, counters.unanswered), (0, 0));
    assert_eq!(counters.applied, 1);
}
