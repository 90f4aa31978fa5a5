//! The simulator against the real test broker (tansu via `./scripts/test`): requests
//! built with the codec, published with a raw producer, replies read from the reply
//! topic with a raw consumer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chain_sim::{
    Counters, ErpOrder, ErpPartner, ErpRequest, Ledger, LedgerState, SimHandle, demo,
    derived_mes_agent, send_erp,
};
use common::{Client, TOKEN, code, start};
use mes_core::codec::{AnswerBody, Page, RecordAction, ReplyBody, Request, Topic, record_types};
use mes_core::domain::{Answer, RequestId, Status};
use mes_core::signing::{SigningKey, verify_envelope};
use serde_json::json;

fn corr() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn list_partners() -> Request {
    Request::ListPartners(Page::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corr_is_echoed_in_the_head_and_the_header() {
    let started = Instant::now();
    let (sim, client) = start(|c| c.demo = 3).await;
    eprintln!("Simulator::start took {:?}", started.elapsed());
    let topic = sim.topics().chain.partner_list.clone();
    // The first request right after start: the simulator must already be listening.
    let c = corr();
    client
        .send(
            &topic,
            &list_partners().envelope(TOKEN, Some(&c)).to_bytes(),
            Some(&c),
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
    assert_eq!(got.header_corr.as_deref(), Some(c.as_str()));
    let partners = got.reply.partners().unwrap();
    assert_eq!(partners.len(), 3);
    assert!(
        partners
            .iter()
            .all(|p| &p.receiving_agent == sim.mes_agent())
    );

    // Header only: echoed in both places.
    let c = corr();
    client
        .send(
            &topic,
            &list_partners().envelope(TOKEN, None).to_bytes(),
            Some(&c),
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
    assert_eq!(got.header_corr.as_deref(), Some(c.as_str()));

    // Round trips one at a time: the latency an MES sees through this broker.
    let mut times = Vec::new();
    for _ in 0..10 {
        let c = corr();
        let t0 = Instant::now();
        client
            .send(
                &topic,
                &list_partners().envelope(TOKEN, Some(&c)).to_bytes(),
                Some(&c),
            )
            .await;
        let got = client.next().await;
        times.push(t0.elapsed());
        assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
    }
    times.sort();
    eprintln!(
        "request → reply through the broker: min {:?}, median {:?}, max {:?}",
        times[0], times[5], times[9]
    );
    assert_eq!(sim.counters().by_topic["BLK_Part_Lst"], 12);
    let stopping = Instant::now();
    sim.shutdown().await.unwrap();
    eprintln!("SimHandle::shutdown took {:?}", stopping.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_omits_corr_and_header() {
    let (sim, client) = start(|c| c.gateway.no_echo = true).await;
    let c = corr();
    client
        .send(
            &sim.topics().chain.order_list,
            &Request::ListOrders(Page::default())
                .envelope(TOKEN, Some(&c))
                .to_bytes(),
            Some(&c),
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr, None);
    assert_eq!(got.header_corr, None);
    assert_eq!(got.reply.head.auth, TOKEN);
    assert_eq!(
        String::from_utf8(got.payload).unwrap(),
        format!(r#"[{{"auth": "{TOKEN}"}}, {{"data": []}}]"#)
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_literal_replies_decode_with_the_codec() {
    let (sim, client) = start(|c| {
        c.demo = 6;
        c.gateway.python_literal = true;
    })
    .await;
    let c = corr();
    client
        .send(
            &sim.topics().chain.order_list,
            &Request::ListOrders(Page::default())
                .envelope(TOKEN, Some(&c))
                .to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    let text = String::from_utf8(got.payload.clone()).unwrap();
    assert!(text.starts_with("[{'auth': '4f1c2a9e7b'"), "{text}");
    assert!(text.contains("True") && text.contains("None"), "{text}");
    assert!(text.contains(r#""Operator's note""#), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    let orders = got.reply.orders().unwrap();
    assert_eq!(orders.len(), 6);
    assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
    let notes = orders
        .iter()
        .filter(|o| o.metadata["Special_Parameters"] == json!(["Operator's note"]))
        .count();
    assert!(notes > 0);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_does_not_serialise_requests() {
    let delay = Duration::from_millis(500);
    let (sim, client) = start(|c| c.delay = delay).await;
    let mut sent = BTreeSet::new();
    let t0 = Instant::now();
    for start in 0..20 {
        let c = corr();
        let request = Request::ListPartners(Page { start, limit: 10 });
        client
            .send(
                &sim.topics().chain.partner_list,
                &request.envelope(TOKEN, Some(&c)).to_bytes(),
                None,
            )
            .await;
        sent.insert(c);
    }
    let mut answered = BTreeSet::new();
    let mut first = None;
    while answered.len() < 20 {
        let got = client.next().await;
        first.get_or_insert(t0.elapsed());
        answered.insert(got.reply.head.corr.unwrap());
    }
    let elapsed = t0.elapsed();
    assert_eq!(answered, sent);
    assert!(
        first.unwrap() >= delay,
        "the first reply came before the delay: {first:?}"
    );
    // Serialised, 20 replies would take 10 s.
    assert!(
        elapsed < Duration::from_secs(5),
        "20 replies took {elapsed:?}"
    );
    eprintln!("20 requests with a 500 ms delay answered in {elapsed:?}");
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idem_is_applied_once() {
    let (sim, client) = start(|_| {}).await;
    let request = Request::RecordType(record_types::production_unit());
    let mut replies = Vec::new();
    for _ in 0..2 {
        let c = corr();
        let bytes = request
            .envelope(TOKEN, Some(&c))
            .with_idem("rty:ProductionUnit")
            .to_bytes();
        client
            .send(&sim.topics().chain.record_type, &bytes, None)
            .await;
        let got = client.next().await;
        assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
        replies.push(got.reply.body);
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(replies[0].text(), "Record type ProductionUnit created");
    let counters = sim.counters();
    assert_eq!(counters.by_topic["BLK_Rty"], 2);
    assert_eq!((counters.applied, counters.replays), (1, 1));
    assert_eq!(sim.ledger_snapshot().record_types.len(), 1);

    // The record then created through BLK_Rec is owned by the MES.
    let create = Request::Record(RecordAction::CreateRecord {
        record_id: "PT10".into(),
        record_type: "ProductionUnit".into(),
        properties: vec![
            mes_core::codec::PropertyValue {
                name: "name".into(),
                value: json!("Press 10"),
            },
            mes_core::codec::PropertyValue {
                name: "status".into(),
                value: json!("RUNNING"),
            },
        ],
    });
    client
        .send(
            &sim.topics().chain.record,
            &create.envelope(TOKEN, None).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.body.text(), "Record PT10 created");
    let owner = sim.with_ledger(|l| l.record("PT10").map(|r| r.owner.clone()));
    assert_eq!(owner.as_ref(), Some(sim.mes_agent()));
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_injects_partner_requests_and_orders() {
    let (sim, client) = start(|_| {}).await;
    let kafka = kafka_bridge::kafka::KafkaConfig::new(common::brokers());
    let erp = SigningKey::generate().agent_key();
    let order = ErpRequest::Order(ErpOrder {
        issuing_agent: erp.clone(),
        order_type: "dummy_action".into(),
        description: "Operator's order".into(),
        metadata: json!({"Part": "steering wheel", "Size": 3}),
        files: vec![],
    });

    let refused = send_erp(&kafka, sim.topics(), TOKEN, &order, common::WAIT)
        .await
        .unwrap();
    assert_eq!(code(&refused), Some("not_a_partner"));

    let partner = ErpRequest::Partner(ErpPartner {
        issuing_agent: erp.clone(),
    });
    let reply = send_erp(&kafka, sim.topics(), TOKEN, &partner, common::WAIT)
        .await
        .unwrap();
    let id: RequestId = reply
        .body
        .text()
        .split(' ')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let state = sim.ledger_snapshot();
    assert_eq!(state.partners.len(), 1);
    assert_eq!(state.partners[0].status, Status::Open);
    assert_eq!(state.partners[0].issuing_agent, erp);

    // The MES accepts through the chain's topic; the order is then accepted too.
    let accept = Request::AnswerPartner(AnswerBody {
        id: id.clone(),
        response: Answer::Accept,
    });
    client
        .send(
            &sim.topics().chain.partner_answer,
            &accept.envelope(TOKEN, None).to_bytes(),
            None,
        )
        .await;
    // The reader sees every reply, the ERP's included: skip to the MES's.
    let accepted = loop {
        let got = client.next().await;
        if got.reply.head.corr.is_none() {
            break got;
        }
    };
    assert_eq!(accepted.reply.body.text(), format!("Request {id} accepted"));

    let reply = send_erp(&kafka, sim.topics(), TOKEN, &order, common::WAIT)
        .await
        .unwrap();
    assert_eq!(code(&reply), None, "{:?}", reply.body);
    let orders = sim.ledger_snapshot().orders;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].description, "Operator's order");
    assert_eq!(orders[0].status, Status::Open);
    let c = sim.counters();
    assert_eq!(c.by_topic["SIM_Erp_Act"], 2);
    assert_eq!(c.by_topic["SIM_Erp_Part"], 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_does_not_kill_the_simulator() {
    let (sim, client) = start(|_| {}).await;
    let answers = sim.topics().chain.partner_answer.clone();
    client.send(&answers, b"\xff\xfe not even text", None).await;
    client.send(&answers, b"", None).await;
    client
        .send(
            &answers,
            br#"[{"auth": "4f1c2a9e7b", "corr": "c-bad"}, {"id": 5}]"#,
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("c-bad"));
    assert_eq!(code(&got.reply), Some("bad_request"));

    let c = corr();
    client
        .send(
            &sim.topics().chain.partner_list,
            &list_partners().envelope(TOKEN, Some(&c)).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some(c.as_str()));
    assert_eq!(got.reply.body, ReplyBody::Data(vec![]));
    let counters = sim.counters();
    assert_eq!(counters.undecodable, 3);
    assert_eq!(counters.by_topic["BLK_Part_Ans"], 3);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_and_replies_signed() {
    let (sim, client) = start(|c| {
        c.gateway.require_signed = true;
        c.gateway.sign_replies = true;
    })
    .await;
    let topic = sim.topics().chain.partner_list.clone();
    client
        .send(
            &topic,
            &list_partners().envelope(TOKEN, Some("unsigned")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(code(&got.reply), Some("unauthorized"));

    let mes = SigningKey::generate();
    let mut envelope = list_partners().envelope(TOKEN, Some("signed"));
    mes.sign_envelope(&mut envelope);
    client.send(&topic, &envelope.to_bytes(), None).await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("signed"));
    assert_eq!(got.reply.body, ReplyBody::Data(vec![]));
    assert_eq!(
        verify_envelope(got.reply.envelope(), Some(sim.public_key())).unwrap(),
        *sim.public_key()
    );
    sim.shutdown().await.unwrap();
}

/// Waits until the simulator's counters satisfy `done`, woken by each handled message.
async fn until(sim: &SimHandle, what: &str, done: impl Fn(&Counters) -> bool) {
    let mut changes = sim.changes();
    let reached = tokio::time::timeout(common::WAIT, async {
        while !done(&sim.counters()) {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok() && done(&sim.counters()),
        "{what} never happened: {:?}",
        sim.counters()
    );
}

/// A demo ledger of `n` (see `demo::seed`) and the key that owns it, to start a
/// simulator whose request ids are known before it starts; with the OPEN partner
/// requests' ids, oldest first.
fn seeded(n: usize) -> (LedgerState, SigningKey, Vec<RequestId>) {
    let key = SigningKey::generate();
    let mut ledger = Ledger::new(key.clone(), derived_mes_agent(&key), [TOKEN.to_owned()]);
    demo::seed(&mut ledger, n, chrono::Utc::now().timestamp());
    let state = ledger.snapshot();
    let open = state
        .partners
        .iter()
        .filter(|p| p.status == Status::Open)
        .map(|p| p.partner_request_id.clone())
        .collect();
    (state, key, open)
}

fn accept_partner(id: &RequestId, corr: &str) -> Vec<u8> {
    Request::AnswerPartner(AnswerBody {
        id: id.clone(),
        response: Answer::Accept,
    })
    .envelope(TOKEN, Some(corr))
    .to_bytes()
}

fn partner_status(sim: &SimHandle, id: &RequestId) -> Option<Status> {
    sim.with_ledger(|l| l.partner(id).map(|p| p.status.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_topics_are_applied_without_a_reply() {
    let (sim, client) = start(|c| {
        c.gateway.answer_topics = Some(
            [
                Topic::PartnerList,
                Topic::PartnerAnswer,
                Topic::OrderList,
                Topic::OrderAnswer,
            ]
            .into(),
        );
    })
    .await;
    let request = Request::RecordType(record_types::production_unit());
    client
        .send(
            &sim.topics().chain.record_type,
            &request.envelope(TOKEN, Some("rty")).to_bytes(),
            None,
        )
        .await;
    until(&sim, "the unanswered record type", |c| c.unanswered == 1).await;
    assert!(
        sim.ledger_snapshot()
            .record_types
            .contains_key("ProductionUnit")
    );

    // The reply topic holds nothing before the list's reply.
    client
        .send(
            &sim.topics().chain.partner_list,
            &list_partners().envelope(TOKEN, Some("list")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("list"));
    let counters = sim.counters();
    assert_eq!((counters.unanswered, counters.lost_replies), (1, 0));
    assert_eq!(counters.by_topic["BLK_Rty"], 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_applied_and_counted_and_others_are_answered() {
    let (state, key, open) = seeded(6);
    let (lost, kept) = (open[0].clone(), open[1].clone());
    let (sim, client) = start(|c| {
        c.ledger = Some(state);
        c.key = Some(key);
        c.gateway.lose_reply_for = [lost.clone()].into();
    })
    .await;
    let topic = sim.topics().chain.partner_answer.clone();
    client
        .send(&topic, &accept_partner(&lost, "lost"), None)
        .await;
    client
        .send(&topic, &accept_partner(&kept, "kept"), None)
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("kept"));
    assert_eq!(got.reply.body.text(), format!("Request {kept} accepted"));
    until(&sim, "the lost reply", |c| c.lost_replies == 1).await;
    assert_eq!(partner_status(&sim, &lost), Some(Status::Accepted));

    client
        .send(
            &sim.topics().chain.partner_list,
            &list_partners().envelope(TOKEN, Some("list")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("list"));
    assert_eq!(sim.counters().lost_replies, 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_lost_at_random_spare_the_erp_topics() {
    let (sim, client) = start(|c| c.gateway.lose_replies = 1.0).await;
    for _ in 0..3 {
        client
            .send(
                &sim.topics().chain.partner_list,
                &list_partners().envelope(TOKEN, None).to_bytes(),
                None,
            )
            .await;
    }
    until(&sim, "three lost replies", |c| c.lost_replies == 3).await;
    let kafka = kafka_bridge::kafka::KafkaConfig::new(common::brokers());
    let partner = ErpRequest::Partner(ErpPartner {
        issuing_agent: SigningKey::generate().agent_key(),
    });
    let reply = send_erp(&kafka, sim.topics(), TOKEN, &partner, common::WAIT)
        .await
        .unwrap();
    assert_eq!(code(&reply), None, "{:?}", reply.body);
    // The ERP's reply is the first on the topic: the lists' were never published.
    let got = client.next().await;
    assert_eq!(got.reply.body, reply.body);
    assert_eq!(sim.counters().lost_replies, 3);
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_overtaken_by_later_ones() {
    let (state, key, open) = seeded(6);
    let (late, early) = (open[0].clone(), open[1].clone());
    let (sim, client) = start(|c| {
        c.ledger = Some(state);
        c.key = Some(key);
        c.gateway.late_replies = [(late.clone(), Duration::from_secs(3))].into();
    })
    .await;
    let topic = sim.topics().chain.partner_answer.clone();
    client
        .send(&topic, &accept_partner(&late, "late"), None)
        .await;
    client
        .send(&topic, &accept_partner(&early, "early"), None)
        .await;
    client
        .send(
            &sim.topics().chain.partner_list,
            &list_partners().envelope(TOKEN, Some("list")).to_bytes(),
            None,
        )
        .await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let got = client.next().await;
        let corr = got.reply.head.corr.clone().unwrap();
        match corr.as_str() {
            // Each caller gets its own answer: the message names the request.
            "late" => assert_eq!(got.reply.body.text(), format!("Request {late} accepted")),
            "early" => {
                assert_eq!(got.reply.body.text(), format!("Request {early} accepted"));
                // Applied at once, before the answer behind it: only its reply waits.
                assert_eq!(partner_status(&sim, &late), Some(Status::Accepted));
            }
            _ => {}
        }
        order.push(corr);
    }
    assert_eq!(order.last().map(String::as_str), Some("late"), "{order:?}");
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_commit_leaves_the_request_open_meanwhile() {
    let (state, key, open) = seeded(3);
    let held = open[0].clone();
    let (sim, client) = start(|c| {
        c.ledger = Some(state);
        c.key = Some(key);
        c.gateway.commit_delay = Duration::from_secs(3);
    })
    .await;
    client
        .send(
            &sim.topics().chain.partner_answer,
            &accept_partner(&held, "held"),
            None,
        )
        .await;
    client
        .send(
            &sim.topics().chain.partner_list,
            &list_partners().envelope(TOKEN, Some("list")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(
        got.reply.head.corr.as_deref(),
        Some("list"),
        "a list is not held"
    );
    let partners = got.reply.partners().unwrap();
    let listed = partners
        .iter()
        .find(|p| p.partner_request_id == held)
        .unwrap();
    assert_eq!(listed.status, Status::Open);

    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("held"));
    assert_eq!(got.reply.body.text(), format!("Request {held} accepted"));
    assert_eq!(partner_status(&sim, &held), Some(Status::Accepted));
    sim.shutdown().await.unwrap();
}

#[test]
fn the_binary_refuses_bad_gateway_flags() {
    let bin = env!("CARGO_BIN_EXE_chain-sim");
    for (args, says) in [
        (vec!["--answer-topics", "BLK_Part_Lst,BLK_Nope"], "BLK_Nope"),
        (vec!["--lose-replies", "1.5"], "fraction"),
        (vec!["--lose-reply-for", "a/b"], "a/b"),
        (
            vec!["--late-reply", "0123456789abcdef0123456789abcdef"],
            "ID:MS",
        ),
        (
            vec!["--late-reply", "0123456789abcdef0123456789abcdef:soon"],
            "milliseconds",
        ),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = Command::new(bin)
        .args(["--answer-topics", "BLK_Nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BLK_Part_Lst, BLK_Part_Ans, BLK_Act_Lst, BLK_Act_Ans, BLK_Rty, BLK_Rec"),
        "{stderr}"
    );
    let help = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--answer-topics",
        "--lose-replies",
        "--lose-reply-for",
        "--commit-delay-ms",
        "--ledger-size",
        "--late-reply",
        "--late-list-reply",
        "--ledger-dump",
        "--ledger",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help: {help}");
    }
}

#[test]
fn the_binary_refuses_a_malformed_ledger_before_touching_the_broker() {
    let bin = env!("CARGO_BIN_EXE_chain-sim");
    let dir = std::env::temp_dir().join(format!("chain-sim-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("ledger.json");
    for text in ["not json", r#"{"partners": [{"partner_request_id": "x"}]}"#] {
        std::fs::write(&bad, text).unwrap();
        // An unreachable broker: the refusal must come before any connection attempt.
        let out = Command::new(bin)
            .args(["--brokers", "127.0.0.1:1"])
            .arg("--ledger")
            .arg(&bad)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        assert!(
            stderr.contains("not a ledger snapshot") && stderr.contains("ledger.json"),
            "{text}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ready"),
            "{text}"
        );
    }
    let out = Command::new(bin)
        .args(["--brokers", "127.0.0.1:1", "--demo", "2"])
        .arg("--ledger")
        .arg(dir.join("missing.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--demo"), "{stderr}");
    let out = Command::new(bin)
        .args(["--brokers", "127.0.0.1:1"])
        .arg("--ledger")
        .arg(dir.join("missing.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.json"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the process on drop, so a failing test leaves nothing behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and waits for its `ready` line; what it printed before.
fn spawn_ready(args: &[std::ffi::OsString]) -> (Running, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chain-sim"))
        .args(["--brokers", &common::brokers()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Running(child);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(common::WAIT)
            .unwrap_or_else(|_| panic!("chain-sim did not get ready; it printed {printed:?}"));
        if line == "ready" {
            return (process, printed);
        }
        printed.push(line);
    }
}

/// SIGTERM, then waits for a clean exit.
async fn stop(process: &mut Running) {
    let status = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + common::WAIT;
    let exit = loop {
        if let Some(exit) = process.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "chain-sim did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

/// Reads a dump until `done` holds, bounded by `common::WAIT`.
async fn dumped(
    path: &std::path::Path,
    what: &str,
    done: impl Fn(&LedgerState) -> bool,
) -> LedgerState {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let state: Option<LedgerState> = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(state) = state.filter(|s| done(s)) {
            return state;
        }
        assert!(Instant::now() < deadline, "the dump never showed {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_resumes_from_a_ledger_snapshot_with_its_key() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("chain-sim-test-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (state, key, open) = seeded(3);
    let ledger = dir.join("ledger.json");
    std::fs::write(&ledger, serde_json::to_vec(&state).unwrap()).unwrap();
    let key_file = dir.join("chain-sim.key");
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let dump = dir.join("dump.json");
    let suffix = format!("-{id}");
    let args: Vec<std::ffi::OsString> = vec![
        "--token".into(),
        TOKEN.into(),
        format!("--topic-suffix={suffix}").into(),
        "--group-id".into(),
        format!("chain-sim-test-{id}").into(),
        "--ledger".into(),
        ledger.into(),
        "--key-file".into(),
        key_file.into(),
        "--ledger-dump".into(),
        dump.clone().into(),
    ];
    let (mut process, printed) = spawn_ready(&args);
    let mes_agent = derived_mes_agent(&key);
    assert!(
        printed.contains(&format!("chain-sim public key: {}", key.agent_key())),
        "{printed:?}"
    );
    assert!(
        printed.contains(&format!("MES agent: {mes_agent}")),
        "{printed:?}"
    );
    // The first dump is the snapshot it was given.
    assert_eq!(dumped(&dump, "the snapshot", |_| true).await, state);

    let topics = chain_sim::SimTopics::with_suffix(&suffix);
    let client = Client::new(&topics).await;
    client
        .send(
            &topics.chain.partner_answer,
            &accept_partner(&open[0], "a"),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(
        got.reply.body.text(),
        format!("Request {} accepted", open[0])
    );
    client
        .send(
            &topics.chain.partner_list,
            &list_partners().envelope(TOKEN, Some("l")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    let partners = got.reply.partners().unwrap();
    assert_eq!(partners.len(), state.partners.len());
    assert!(partners.iter().all(|p| p.receiving_agent == mes_agent));

    let after = dumped(&dump, "the list", |s| {
        s.counters.by_topic.get(Topic::PartnerList.name()) == Some(&1)
    })
    .await;
    let accepted = after
        .partners
        .iter()
        .find(|p| p.partner_request_id == open[0])
        .map(|p| p.status.clone());
    assert_eq!(accepted, Some(Status::Accepted));
    assert_eq!(after.counters.by_topic[Topic::PartnerAnswer.name()], 1);
    assert_eq!(after.partners.len(), state.partners.len());
    stop(&mut process).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_dumps_its_ledger_and_stops_on_sigterm() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("chain-sim-test-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("ledger.json");
    let suffix = format!("-{id}");
    let args: Vec<std::ffi::OsString> = vec![
        "--token".into(),
        TOKEN.into(),
        "--demo".into(),
        "2".into(),
        "--topic-suffix".into(),
        suffix.clone().into(),
        "--group-id".into(),
        format!("chain-sim-test-{id}").into(),
        "--ledger-dump".into(),
        dump.clone().into(),
    ];
    let (mut process, printed) = spawn_ready(&args);
    assert!(
        printed[0].starts_with("chain-sim public key: 0"),
        "{printed:?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l == &format!("replies: BLK_Res{suffix}"))
    );

    let topics = chain_sim::SimTopics::with_suffix(&suffix);
    let client = Client::new(&topics).await;
    let request = Request::RecordType(record_types::day_report());
    client
        .send(
            &topics.chain.record_type,
            &request.envelope(TOKEN, Some("bin")).to_bytes(),
            None,
        )
        .await;
    let got = client.next().await;
    assert_eq!(got.reply.head.corr.as_deref(), Some("bin"));
    assert_eq!(got.reply.body.text(), "Record type DayReport created");

    let read =
        || -> Option<LedgerState> { serde_json::from_slice(&std::fs::read(&dump).ok()?).ok() };
    let deadline = Instant::now() + common::WAIT;
    loop {
        if read().is_some_and(|s| s.record_types.contains_key("DayReport")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dump never showed the record type"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop(&mut process).await;
    let state = read().unwrap();
    assert_eq!(state.partners.len(), 2);
    assert_eq!(state.counters.applied, 1);
    assert_eq!(state.counters.by_topic[Topic::RecordType.name()], 1);
    let _ = std::fs::remove_dir_all(&dir);
}
