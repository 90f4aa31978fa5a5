//! Behind a gateway like the original's (Python literals, no `corr` echo, replies late,
//! lost, or committed slower than the MES waits): tansu, PostgreSQL, the chain simulator
//! and `mes-api`, each as a process, behind a 3 s request timeout. The simulator
//! (`chain-sim`, through `mes_e2e::sim::ChainSimProc`) starts from a ledger the test
//! writes (`--ledger`), takes its behaviour from its flags, and is observed only from
//! outside: through what it answers and the ledger it dumps (`--ledger-dump`, request
//! counters included).
//!
//! - A reply that comes late never answers another caller (docs/protocol.md §9). The
//!   simulator names the request id in every answer reply ("Request X accepted", "no
//!   partner request X"), so each caller can check that the reply it got is its own.
//! - Decisions converge with the chain (docs/protocol.md §10): an accept whose reply is
//!   lost or late is `unknown` (202), sends nothing when answered again, and settles as
//!   `accepted` with exactly one production order once the chain's list shows it; an
//!   accept that was never sent is `not_sent`, and answering again works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chain_sim::{Ledger, LedgerState, NewOrder, SimTopics, derived_mes_agent};
use mes_core::codec::Topic;
use mes_core::db::{self, tokens};
use mes_core::domain::{RequestId, Status};
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, add_operators};
use mes_e2e::kafka_brokers;
use mes_e2e::server::{DEADLINE, ServerProc, http};
use mes_e2e::sim::ChainSimProc;
use serde_json::Value;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");
const CHAIN_SIM: &str = env!("CARGO_BIN_EXE_chain-sim-proc");
const REQUEST_TIMEOUT_MS: u64 = 3000;

/// What the late (or lost) reply does.
#[derive(Clone, Copy)]
enum Fate {
    /// Published this long after the chain applied the answer, after other replies.
    Late(Duration),
    /// Never published.
    Lost,
    /// Every answer is applied this long after it arrives, then answered (a chain that
    /// commits slower than the MES waits).
    Commit(Duration),
}

struct Stack {
    sim: ChainSimProc,
    server: ServerProc,
    key: String,
    /// The partner request whose answer's reply is late or lost.
    slow: RequestId,
    /// An OPEN order from an accepted partner.
    order: RequestId,
    /// The server's environment, to start another instance on the same database.
    env: Vec<(String, String)>,
    _schema: PgSchema,
}

/// A chain holding one OPEN partner request (`slow`) whose answer's reply has `fate`,
/// four more, an accepted partner's OPEN order (`order`, with `order_fate` if any), and
/// a server in front of it with the given correlation mode, fence bound and settings.
async fn stack(mode: &str, fate: Fate, fence_max: &str) -> Stack {
    stack_with(mode, fate, fence_max, None, &[]).await
}

/// The four topics the original gateway answers, as `chain-sim --answer-topics` takes
/// them.
fn list_and_answer_topics() -> String {
    [
        Topic::PartnerList,
        Topic::PartnerAnswer,
        Topic::OrderList,
        Topic::OrderAnswer,
    ]
    .map(Topic::name)
    .join(",")
}

/// A `settings` entry that is not a server setting: the simulated gateway answers only
/// the four list/answer topics.
const ONLY_LIST_AND_ANSWER_TOPICS: (&str, &str) = ("SIM_ANSWER_TOPICS", "list,answer");

/// A `settings` entry that is not a server setting: the simulated gateway echoes the
/// correlation id (a gateway of ours, not the original's).
const GATEWAY_ECHOES: (&str, &str) = ("SIM_ECHO", "yes");

/// A `settings` key that is not a server setting: `START:MS`, the simulated gateway
/// replies to a list of the page starting at START that much later.
const LATE_LIST_REPLY: &str = "SIM_LATE_LIST_REPLY";

async fn stack_with(
    mode: &str,
    fate: Fate,
    fence_max: &str,
    order_fate: Option<Fate>,
    settings: &[(&str, &str)],
) -> Stack {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("fence-token{suffix}");
    let key = SigningKey::generate();
    let mut ledger = Ledger::new(key.clone(), derived_mes_agent(&key), vec![token.clone()]);
    let slow = ledger
        .add_partner(
            SigningKey::generate().agent_key(),
            Status::Open,
            1_700_000_000,
        )
        .unwrap();
    let erp = SigningKey::generate().agent_key();
    ledger
        .add_partner(erp.clone(), Status::Accepted, 1_700_000_100)
        .unwrap();
    let order = ledger
        .add_order(
            NewOrder {
                issuing_agent: erp,
                order_type: "dummy_action".into(),
                description: "Steering wheels".into(),
                metadata: serde_json::json!({"Part": "steering wheel", "Size": 3}),
                files: Vec::new(),
            },
            Status::Open,
            1_700_000_200,
        )
        .unwrap();
    for i in 0..4 {
        ledger
            .add_partner(
                SigningKey::generate().agent_key(),
                Status::Open,
                1_700_000_001 + i,
            )
            .unwrap();
    }
    let mut args = vec![
        format!("--token={token}"),
        format!("--topic-suffix={suffix}"),
        format!("--group-id=chain-sim{suffix}"),
        "--python-literal".to_owned(),
    ];
    if !settings.contains(&GATEWAY_ECHOES) {
        args.push("--no-echo".to_owned());
    }
    let mut commit_delay = None;
    for (id, fate) in [(slow.clone(), Some(fate)), (order.clone(), order_fate)] {
        match fate {
            Some(Fate::Late(delay)) => {
                args.push(format!("--late-reply={id}:{}", delay.as_millis()));
            }
            Some(Fate::Lost) => args.push(format!("--lose-reply-for={id}")),
            Some(Fate::Commit(delay)) => commit_delay = Some(delay),
            None => {}
        }
    }
    if let Some(delay) = commit_delay {
        args.push(format!("--commit-delay-ms={}", delay.as_millis()));
    }
    if settings.contains(&ONLY_LIST_AND_ANSWER_TOPICS) {
        args.push(format!("--answer-topics={}", list_and_answer_topics()));
    }
    for (_, late) in settings.iter().filter(|(k, _)| *k == LATE_LIST_REPLY) {
        args.push(format!("--late-list-reply={late}"));
    }
    let sim = ChainSimProc::spawn(CHAIN_SIM, &key, Some(&ledger.snapshot()), &args).await;

    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();
    let operator = {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: tokens::MASTER,
                    token: &token,
                    ..Default::default()
                },
            )
            .unwrap();
            add_operators(&mut conn).unwrap().0
        })
        .await
        .unwrap()
    };
    let topics = SimTopics::with_suffix(&suffix);
    let replies = format!("replies: {}", topics.chain.reply);
    assert!(sim.banner.contains(&replies), "{:?}", sim.banner);
    let mut env: Vec<(String, String)> = vec![
        ("MES_DATABASE_URL".into(), url),
        ("MES_KAFKA_BROKERS".into(), kafka_brokers()),
        ("MES_CORRELATION".into(), mode.into()),
        (
            "MES_REQUEST_TIMEOUT_MS".into(),
            REQUEST_TIMEOUT_MS.to_string(),
        ),
        ("MES_LEGACY_FENCE_MAX".into(), fence_max.into()),
        // Callers here answer and list in tight loops with one key, well above the
        // default per-key limit; what is tested is the chain's side.
        ("MES_RATE_LIMIT_PER_SEC".into(), "100000".into()),
    ];
    env.extend(mes_e2e::server::topic_env(&topics.chain));
    env.extend(
        settings
            .iter()
            .filter(|(k, _)| k.starts_with("MES_"))
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let mut server = ServerProc::spawn(BIN, &env);
    server.wait_ready().await;
    Stack {
        sim,
        server,
        key: operator,
        slow,
        order,
        env,
        _schema: schema,
    }
}

/// What an answer call got, as a caller would judge it.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    /// The chain's reply, and it names this caller's request.
    Own,
    /// A reply that names another request, or none: the failure this file is about.
    Wrong(String),
    /// 503 `chain_behind`: nothing was sent.
    Behind,
    /// 504: this caller's own timeout.
    Timeout,
}

async fn answer(port: u16, key: &str, id: &str, response: u8) -> Got {
    let path = format!("/api/KafkaPartner/ANS?ID={id}&Response={response}");
    let (status, body) = http(port, "GET", &path, Some(key), None).await.unwrap();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let code = json["error"]["code"].as_str().unwrap_or_default();
    match (status, code) {
        (200, _) | (502, "chain_error") => {
            let text = match status {
                200 => json
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| body.clone()),
                _ => json["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            };
            if text.contains(id) {
                Got::Own
            } else {
                Got::Wrong(format!("{status} {text}"))
            }
        }
        (503, "chain_behind") => Got::Behind,
        (504, "chain_timeout") => Got::Timeout,
        _ => panic!("{id}: unexpected answer {status} {body}"),
    }
}

/// A counter from `/metrics`, e.g. `mes_chain_fences_total{outcome="raised"}`.
async fn metric(port: u16, series: &str) -> u64 {
    let (status, body) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn fences_up(port: u16) -> usize {
    let (status, body) = http(port, "GET", "/health/ready", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    health["chain"]["fences"].as_array().map_or(0, Vec::len)
}

fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Figures of one run, for the assertions and the log.
#[derive(Debug, Default)]
struct Tally {
    own: AtomicU64,
    behind: AtomicU64,
    timeouts: AtomicU64,
    lists_during_fence: AtomicU64,
}

impl Tally {
    /// The run's verdict, for callers of `what`: nobody got a reply that is not theirs
    /// (`wrong`), some met the fence (else the test tested nothing), some got through
    /// after the late reply, and the late reply lifted the fence (server on `port`).
    async fn assert_fenced_never_wrong(&self, what: &str, wrong: &[String], port: u16) {
        eprintln!("{what}: {self:?}, {} wrong", wrong.len());
        assert!(
            wrong.is_empty(),
            "{what}: {} calls got a reply that is not theirs, first: {:?}",
            wrong.len(),
            wrong.first()
        );
        assert!(
            self.behind.load(Ordering::Relaxed) > 0,
            "{what}: no call met the fence: the test did not test it"
        );
        assert!(
            self.own.load(Ordering::Relaxed) > 0,
            "{what}: no call got through after the late reply"
        );
        // The late reply came, lifted the fence and went to nobody.
        assert_eq!(
            metric(port, "mes_chain_fences_total{outcome=\"lifted_by_reply\"}").await,
            1,
            "{what}"
        );
    }
}

async fn a_late_reply_never_answers_another_caller(mode: &str) {
    let late = Duration::from_secs(20);
    let mut stack = stack(mode, Fate::Late(late), "2m").await;
    let port = stack.server.port;
    let key = Arc::new(stack.key.clone());

    // The chain applies this accept at once and replies 20 s later: the call ends
    // with its own timeout, and its reply is outstanding.
    let got = answer(port, &key, stack.slow.as_str(), 1).await;
    assert_eq!(got, Got::Timeout, "{mode}");
    assert_eq!(
        metric(port, "mes_chain_fences_total{outcome=\"raised\"}").await,
        1,
        "{mode}"
    );

    // Four callers answer unknown requests for 30 s (the chain answers each with an
    // error naming it); one lists all along.
    let tally = Arc::new(Tally::default());
    let wrong = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let until = Instant::now() + Duration::from_secs(30);
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (key, tally, wrong) = (Arc::clone(&key), Arc::clone(&tally), Arc::clone(&wrong));
        callers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let id = random_id();
                match answer(port, &key, &id, 0).await {
                    Got::Own => tally.own.fetch_add(1, Ordering::Relaxed),
                    Got::Timeout => tally.timeouts.fetch_add(1, Ordering::Relaxed),
                    Got::Behind => {
                        // An operator told to try again shortly does not hammer.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        tally.behind.fetch_add(1, Ordering::Relaxed)
                    }
                    Got::Wrong(text) => {
                        wrong.lock().unwrap().push(format!("{id} got {text}"));
                        0
                    }
                };
            }
        }));
    }
    let listing = {
        let (key, tally) = (Arc::clone(&key), Arc::clone(&tally));
        let fence_seen = Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while Instant::now() < until {
                let fenced = fences_up(port).await > 0;
                fence_seen.fetch_or(fenced, Ordering::Relaxed);
                let (status, body) = http(
                    port,
                    "GET",
                    "/api/KafkaPartner/LIST?limit=100",
                    Some(&key),
                    None,
                )
                .await
                .unwrap();
                assert_eq!(status, 200, "a list failed during the fence: {body}");
                let items: Vec<Value> = serde_json::from_str(&body).unwrap();
                assert_eq!(items.len(), 6, "{body}");
                if fenced {
                    tally.lists_during_fence.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for caller in callers {
        caller.await.unwrap();
    }
    listing.await.unwrap();

    let wrong = wrong.lock().unwrap().clone();
    tally.assert_fenced_never_wrong(mode, &wrong, port).await;
    assert!(
        tally.lists_during_fence.load(Ordering::Relaxed) > 0,
        "{mode}: no list ran while answers were fenced"
    );
    assert_eq!(fences_up(port).await, 0, "{mode}");
    assert_eq!(
        answer(port, &key, &random_id(), 0).await,
        Got::Own,
        "{mode}"
    );
    // The chain applied the slow accept: the partner request is ACCEPTED.
    let slow = stack.slow.clone();
    let status_of_slow = move |l: &LedgerState| {
        l.partners
            .iter()
            .find(|p| p.partner_request_id == slow)
            .map(|p| p.status.clone())
    };
    let ledger = stack
        .sim
        .wait_ledger("the slow partner request decided", |l| {
            status_of_slow(l).is_none_or(|s| s != Status::Open)
        })
        .await;
    assert_eq!(status_of_slow(&ledger), Some(Status::Accepted), "{mode}");
    stack.server.terminate().await;
    stack.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mode_a_reply_20s_late_behind_a_3s_timeout_never_answers_another_caller() {
    a_late_reply_never_answers_another_caller("legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_a_reply_20s_late_behind_a_3s_timeout_never_answers_another_caller() {
    a_late_reply_never_answers_another_caller("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_fences_answers_until_the_fence_bound_then_they_work_again() {
    let mut stack = stack("legacy", Fate::Lost, "6s").await;
    let port = stack.server.port;
    let key = stack.key.clone();
    assert_eq!(
        answer(port, &key, stack.slow.as_str(), 1).await,
        Got::Timeout
    );
    // The chain applied the slow accept and lost its reply on purpose: that answer is
    // the only one it has seen.
    let count = |l: &LedgerState, topic: Topic| l.counters.by_topic.get(topic.name()).copied();
    let seen = stack
        .sim
        .wait_ledger("the lost reply", |l| l.counters.lost_replies == 1)
        .await;
    let before = count(&seen, Topic::PartnerAnswer);
    assert_eq!(before, Some(1), "{:?}", seen.counters);
    // Told at once, nothing sent: the chain never sees these.
    assert_eq!(answer(port, &key, &random_id(), 0).await, Got::Behind);
    let (status, _) = http(port, "GET", "/api/KafkaPartner/LIST", Some(&key), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "lists run while answers are fenced");
    // The chain answered that list, sent after the refused answer; once its dump shows
    // the list, it still shows no other answer.
    let lists = count(&seen, Topic::PartnerList).unwrap_or(0);
    let after = stack
        .sim
        .wait_ledger("the list", |l| {
            count(l, Topic::PartnerList).unwrap_or(0) > lists
        })
        .await;
    assert_eq!(
        count(&after, Topic::PartnerAnswer),
        before,
        "{:?}",
        after.counters
    );
    // The reply never comes: the fence lifts after its bound, counted as expired.
    let start = Instant::now();
    while fences_up(port).await > 0 {
        assert!(start.elapsed() < DEADLINE, "the fence never lifted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(port, "mes_chain_fences_total{outcome=\"expired\"}").await,
        1
    );
    assert_eq!(answer(port, &key, &random_id(), 0).await, Got::Own);
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// `POST /api/orders/<id>/answer` with `accept`: the status and the JSON answer.
async fn accept_order(port: u16, key: &str, id: &str) -> (u16, Value) {
    let path = format!("/api/orders/{id}/answer");
    let (status, body) = http(
        port,
        "POST",
        &path,
        Some(key),
        Some(r#"{"response": "accept"}"#),
    )
    .await
    .unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The decisions on `id`, newest first.
async fn decisions_on(port: u16, key: &str, id: &str) -> Vec<Value> {
    let (status, body) = http(port, "GET", "/api/decisions?limit=100", Some(key), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.into_iter().filter(|d| d["request_id"] == id).collect()
}

async fn production_orders_for(port: u16, key: &str, id: &str) -> usize {
    let (status, body) = http(port, "GET", "/api/production-orders", Some(key), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.iter().filter(|o| o["chain_order_id"] == id).count()
}

/// Order answers the server published to the chain.
async fn order_answers_sent(port: u16) -> u64 {
    metric(port, "mes_chain_requests_total{topic=\"BLK_Act_Ans\"}").await
}

/// An accept whose reply never comes (`Lost`) or comes after the MES stopped waiting
/// (`Commit`): 202 `unknown`, answering again sends nothing, and the poller's scans
/// settle it as `accepted` with exactly one production order.
async fn an_unconfirmed_accept_converges(fate: Fate) {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "5s",
        Some(fate),
        &[("MES_POLL_INTERVAL_SECS", "1")],
    )
    .await;
    let (port, key, order) = (
        stack.server.port,
        stack.key.clone(),
        stack.order.to_string(),
    );
    let (status, answer) = accept_order(port, &key, &order).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["decision"]["outcome"], "unknown", "{answer}");
    assert_eq!(answer["message"], "sent; the chain has not confirmed yet");
    let sent = order_answers_sent(port).await;
    assert_eq!(sent, 1);

    // Answering again while unknown sends nothing: it reads the chain's list instead.
    let (status, again) = accept_order(port, &key, &order).await;
    assert!(status == 202 || status == 200, "{status} {again}");
    assert_eq!(again["decision"]["id"], answer["decision"]["id"], "{again}");
    assert_eq!(
        order_answers_sent(port).await,
        sent,
        "a second answer was sent"
    );

    let start = Instant::now();
    // (With a slow commit, the scans may call it `not_applied` first: the chain then
    // shows it ACCEPTED after all, and it turns `accepted`.)
    loop {
        let decisions = decisions_on(port, &key, &order).await;
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        if decisions[0]["outcome"] == "accepted" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never settled: {decisions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(production_orders_for(port, &key, &order).await, 1);
    // Later scans change nothing: still one decision, one production order.
    let polls = metric(port, "mes_chain_polls_total{outcome=\"ok\"}").await;
    while metric(port, "mes_chain_polls_total{outcome=\"ok\"}").await < polls + 2 {
        assert!(start.elapsed() < DEADLINE, "the poller stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(decisions_on(port, &key, &order).await.len(), 1);
    assert_eq!(production_orders_for(port, &key, &order).await, 1);
    assert_eq!(order_answers_sent(port).await, sent);
    stack.server.terminate().await;
    stack.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_whose_reply_is_lost_settles_as_accepted_with_one_production_order() {
    an_unconfirmed_accept_converges(Fate::Lost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_committed_slower_than_the_timeout_settles_as_accepted_with_one_production_order()
{
    an_unconfirmed_accept_converges(Fate::Commit(Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_that_never_reached_the_broker_is_not_sent_and_can_be_answered_again() {
    let mut stack = stack("legacy", Fate::Lost, "4s").await;
    let (port, key, order) = (
        stack.server.port,
        stack.key.clone(),
        stack.order.to_string(),
    );
    // A lost partner answer fences answers: the order's accept is refused unsent.
    assert_eq!(
        answer(port, &key, stack.slow.as_str(), 1).await,
        Got::Timeout
    );
    let (status, refused) = accept_order(port, &key, &order).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "chain_behind");
    let decisions = decisions_on(port, &key, &order).await;
    assert_eq!(decisions[0]["outcome"], "not_sent", "{decisions:?}");
    assert_eq!(order_answers_sent(port).await, 0);
    // Once the fence lifts, the same operator answers again, and it goes through.
    let start = Instant::now();
    while fences_up(port).await > 0 {
        assert!(start.elapsed() < DEADLINE, "the fence never lifted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, accepted) = accept_order(port, &key, &order).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["decision"]["outcome"], "accepted");
    assert_eq!(
        accepted["production_order"]["chain_order_id"],
        order.as_str()
    );
    assert_eq!(production_orders_for(port, &key, &order).await, 1);
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// An accept whose reply comes 8 s after the 3 s timeout, with the poller scanning
/// only once (at start): the late reply itself settles the decision as `accepted`
/// and produces the order, once; no scan and no second answer are involved.
async fn a_late_accept_reply_settles_its_decision(mode: &str, echo: bool) {
    let mut settings = vec![("MES_POLL_INTERVAL_SECS", "3600")];
    if echo {
        settings.push(GATEWAY_ECHOES);
    }
    let late = Fate::Late(Duration::from_secs(8));
    let mut stack = stack_with(mode, Fate::Lost, "2m", Some(late), &settings).await;
    let (port, key, order) = (
        stack.server.port,
        stack.key.clone(),
        stack.order.to_string(),
    );
    let start = Instant::now();
    while metric(port, "mes_chain_polls_total{outcome=\"ok\"}").await < 1 {
        assert!(
            start.elapsed() < DEADLINE,
            "{mode}: the first scan never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = accept_order(port, &key, &order).await;
    assert_eq!(status, 202, "{mode}: {answer}");
    assert_eq!(answer["decision"]["outcome"], "unknown", "{mode}: {answer}");
    assert_eq!(production_orders_for(port, &key, &order).await, 0);
    let settled = loop {
        let decisions = decisions_on(port, &key, &order).await;
        assert_eq!(decisions.len(), 1, "{mode}: {decisions:?}");
        if decisions[0]["outcome"] != "unknown" {
            break decisions[0].clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{mode}: never settled: {decisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled["outcome"], "accepted", "{mode}: {settled}");
    assert_eq!(production_orders_for(port, &key, &order).await, 1, "{mode}");
    assert_eq!(
        metric(port, "mes_chain_polls_total{outcome=\"ok\"}").await,
        1,
        "{mode}: a scan ran, so it may have settled the decision instead"
    );
    assert_eq!(order_answers_sent(port).await, 1, "{mode}");
    stack.server.terminate().await;
    stack.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mode_a_late_accept_reply_settles_its_decision_and_produces_the_order_once() {
    a_late_accept_reply_settles_its_decision("legacy", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_mode_a_late_accept_reply_settles_its_decision_and_produces_the_order_once() {
    a_late_accept_reply_settles_its_decision("id", true).await;
}

/// Creates unit `code` and changes it `changes` times through the API.
async fn change_unit(port: u16, key: &str, code: &str, changes: usize) {
    let unit = serde_json::json!({"code": code, "name": format!("Press {code}"),
        "Status": "RUNNING", "ProcessName": "Stamping"});
    let (status, body) = http(
        port,
        "POST",
        "/api/ProductionUnit",
        Some(key),
        Some(&unit.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    for i in 0..changes {
        let patch = serde_json::json!({"Status": format!("S{i}")}).to_string();
        let path = format!("/api/ProductionUnit/{code}");
        let (status, body) = http(port, "PATCH", &path, Some(key), Some(&patch))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

async fn ready(port: u16) -> Value {
    let (status, body) = http(port, "GET", "/health/ready", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Behind a gateway that answers only the four list/answer topics (the original's),
/// units changed through the API leave record messages the chain never answers: for
/// 30 s, every operator list is answered (none waits behind the relay's unanswered
/// sends), and the relay puts the record topic on hold, as `/health/ready` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_record_topics_never_starve_operators_and_are_put_on_hold() {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "4s",
        None,
        &[ONLY_LIST_AND_ANSWER_TOPICS, ("MES_POLL_INTERVAL_SECS", "1")],
    )
    .await;
    let (port, key) = (stack.server.port, stack.key.clone());
    change_unit(port, &key, "PT10", 5).await;
    change_unit(port, &key, "PT11", 5).await;
    let until = Instant::now() + Duration::from_secs(30);
    let (mut lists, mut failed) = (0, Vec::new());
    while Instant::now() < until {
        let (status, body) = http(port, "GET", "/api/KafkaPartner/LIST", Some(&key), None)
            .await
            .unwrap();
        lists += 1;
        if status != 200 {
            failed.push(format!("{status} {body}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {lists} lists failed: {failed:?}",
        failed.len()
    );
    let start = Instant::now();
    let on_hold = loop {
        let health = ready(port).await;
        let held = health["outbox"]["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["topic"] == "BLK_Rty" && t["state"] != "closed")
            .cloned();
        if let Some(held) = held {
            break held;
        }
        assert!(start.elapsed() < DEADLINE, "never on hold: {health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        on_hold["consecutive_timeouts"].as_u64().unwrap() >= 3,
        "{on_hold}"
    );
    // Nothing was delivered: the chain never answered.
    let (_, body) = http(port, "GET", "/api/ProductionUnit/PT10", Some(&key), None)
        .await
        .unwrap();
    let unit: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unit["chain"]["state"], "pending", "{unit}");
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// Behind the same gateway, a record message's reply that never comes fences answers
/// (its reply might still come and be taken for one). Operators are not kept waiting
/// for background work: their answers go out unmatched and the chain's list confirms
/// them, so an accept is answered `accepted`, with its production order, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_answers_while_background_work_waits_for_an_unanswered_record() {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "2m",
        None,
        &[ONLY_LIST_AND_ANSWER_TOPICS],
    )
    .await;
    let (port, key, order) = (
        stack.server.port,
        stack.key.clone(),
        stack.order.to_string(),
    );
    change_unit(port, &key, "PT10", 1).await;
    let start = Instant::now();
    while fences_up(port).await == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the relay's send never timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, accepted) = accept_order(port, &key, &order).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["decision"]["outcome"], "accepted", "{accepted}");
    assert_eq!(
        accepted["production_order"]["chain_order_id"],
        order.as_str(),
        "{accepted}"
    );
    assert_eq!(metric(port, "mes_chain_unmatched_answers_total").await, 1);
    assert_eq!(
        fences_up(port).await,
        1,
        "the record's reply is still awaited"
    );
    // A partner answer through the original route, the same way (its reply would be
    // lost anyway: the list confirms it).
    let path = format!("/api/KafkaPartner/ANS?ID={}&Response=1", stack.slow);
    let (status, body) = http(port, "GET", &path, Some(&key), None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(port, "mes_chain_unmatched_answers_total").await, 2);
    assert_eq!(production_orders_for(port, &key, &order).await, 1);
    assert_eq!(decisions_on(port, &key, &order).await.len(), 1);
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// The same gateway with `MES_RECORD_REPLIES=none`: record messages are delivered when
/// the broker has them, hold no slot, and answers run with no fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_record_replies_none_units_are_delivered_on_the_brokers_acknowledgement() {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "2m",
        None,
        &[ONLY_LIST_AND_ANSWER_TOPICS, ("MES_RECORD_REPLIES", "none")],
    )
    .await;
    let (port, key) = (stack.server.port, stack.key.clone());
    change_unit(port, &key, "PT10", 3).await;
    let start = Instant::now();
    loop {
        let (_, body) = http(port, "GET", "/api/ProductionUnit/PT10", Some(&key), None)
            .await
            .unwrap();
        let unit: Value = serde_json::from_str(&body).unwrap();
        if unit["chain"]["state"] == "delivered" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never delivered: {unit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The chain applied them (it answers nothing on record topics) and nothing fenced.
    stack
        .sim
        .wait_ledger("record PT10", |l| l.records.contains_key("PT10"))
        .await;
    assert_eq!(ready(port).await["chain"]["fences"], serde_json::json!([]));
    let (status, accepted) = accept_order(port, &key, stack.order.as_str()).await;
    assert_eq!(status, 200, "{accepted}");
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// A list reply 20 s late behind a 3 s timeout, while four callers list other pages
/// for 30 s: nobody gets another page; lists are refused (503) while the reply is
/// outstanding, answers keep working, and lists work again once it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_reply_20s_late_never_answers_another_page() {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "2m",
        None,
        &[(LATE_LIST_REPLY, "3:20000")],
    )
    .await;
    let (port, key) = (stack.server.port, Arc::new(stack.key.clone()));
    // The chain lists partner requests oldest first (by their timestamp).
    let ids: Arc<Vec<String>> = Arc::new({
        let mut partners = stack.sim.ledger().await.partners;
        partners.sort_by_key(|p| p.timestamp);
        partners
            .iter()
            .map(|p| p.partner_request_id.to_string())
            .collect()
    });
    assert_eq!(ids.len(), 6);
    let page = |start: usize| format!("/api/KafkaPartner/LIST?start={start}&limit=1");
    let (status, body) = http(port, "GET", &page(3), Some(&key), None).await.unwrap();
    assert_eq!(status, 504, "{body}");

    let tally = Arc::new(Tally::default());
    let wrong = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let until = Instant::now() + Duration::from_secs(30);
    let mut callers = Vec::new();
    for caller in 0..4usize {
        let (key, ids, tally, wrong) = (
            Arc::clone(&key),
            Arc::clone(&ids),
            Arc::clone(&tally),
            Arc::clone(&wrong),
        );
        callers.push(tokio::spawn(async move {
            let mut n = caller;
            while Instant::now() < until {
                // Every page but the late one.
                let start = [0, 1, 2, 4, 5][n % 5];
                n += 1;
                let (status, body) = http(port, "GET", &page(start), Some(&key), None)
                    .await
                    .unwrap();
                let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                match status {
                    200 => {
                        let got = json[0]["partner_request_id"].as_str().unwrap_or_default();
                        if got == ids[start] {
                            tally.own.fetch_add(1, Ordering::Relaxed);
                        } else {
                            wrong
                                .lock()
                                .unwrap()
                                .push(format!("page {start} got {body}"));
                        }
                    }
                    503 if json["error"]["code"] == "chain_behind" => {
                        tally.behind.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    504 => {
                        tally.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => panic!("page {start}: {status} {body}"),
                }
            }
        }));
    }
    // Answers are not fenced by a late list (an answer the chain applies: its reply is
    // a message; a chain error could be the list's, docs/protocol.md §9 rule 4).
    let (status, accepted) = accept_order(port, &key, stack.order.as_str()).await;
    assert_eq!(status, 200, "{accepted}");
    for caller in callers {
        caller.await.unwrap();
    }
    let wrong = wrong.lock().unwrap().clone();
    tally.assert_fenced_never_wrong("lists", &wrong, port).await;
    stack.server.terminate().await;
    stack.sim.stop().await;
}

/// Two instances on one database behind a gateway that lost an accept's reply: both
/// scan the chain and reconcile, the decision is settled once and the order produced
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_settle_an_unconfirmed_accept_once_with_one_production_order() {
    let mut stack = stack_with(
        "legacy",
        Fate::Lost,
        "5s",
        Some(Fate::Lost),
        &[("MES_POLL_INTERVAL_SECS", "1")],
    )
    .await;
    let mut second = ServerProc::spawn(BIN, &stack.env);
    second.wait_ready().await;
    let (port, key, order) = (
        stack.server.port,
        stack.key.clone(),
        stack.order.to_string(),
    );
    let (status, answer) = accept_order(port, &key, &order).await;
    assert_eq!(status, 202, "{answer}");
    let start = Instant::now();
    loop {
        let decisions = decisions_on(second.port, &key, &order).await;
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        if decisions[0]["outcome"] == "accepted" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never settled: {decisions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both keep scanning: still one decision and one production order, seen from both.
    for server in [port, second.port] {
        let polls = metric(server, "mes_chain_polls_total{outcome=\"ok\"}").await;
        while metric(server, "mes_chain_polls_total{outcome=\"ok\"}").await < polls + 2 {
            assert!(start.elapsed() < DEADLINE, "a poller stopped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for server in [port, second.port] {
        assert_eq!(decisions_on(server, &key, &order).await.len(), 1);
        assert_eq!(production_orders_for(server, &key, &order).await, 1);
    }
    second.terminate().await;
    stack.server.terminate().await;
    stack.sim.stop().await;
}
