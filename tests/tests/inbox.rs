//! The mirror of the chain's requests and the operator inbox, end to end: the real
//! server as a process (`console-server`, `mes-api`'s `main`) on PostgreSQL and the
//! test broker, a chain simulator on topics of its own, ERP requests injected the way
//! `chain-sim erp` does.
//!
//! - the inbox (`GET /api/requests`) shows an OPEN request that sits past the chain's
//!   first pages, and its counts (`GET /api/requests/counts`) are the chain's;
//! - a server stopped, two requests injected while it is down, the server restarted on
//!   the same database: exactly one `request` event and one webhook for each, none for
//!   the requests that were there before;
//! - two instances on one database: each new request announced by one of them, once;
//! - a ledger longer than one poll cycle reads is scanned whole over several cycles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chain_sim::{ErpPartner, ErpRequest, SimConfig, SimHandle, SimTopics, Simulator, send_erp};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::ReplyBody;
use mes_core::db::{self, tokens};
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, TempDir};
use mes_e2e::kafka_brokers;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// Upper bound of every wait: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(120);
/// Demo requests of each kind on the chain: more than two pages of the original's 10
/// and more than one page of 25.
const DEMO: usize = 30;

/// A chain, a database and the keys of a server that can be started and stopped.
struct Stack {
    sim: SimHandle,
    topics: SimTopics,
    token: String,
    viewer: String,
    http: reqwest::Client,
    schema: PgSchema,
    dir: TempDir,
}

/// A running server process; killed when dropped.
struct Server {
    base: String,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    async fn start() -> Stack {
        Stack::start_with(DEMO).await
    }

    /// A stack whose chain is seeded with `demo` partner requests and as many orders.
    async fn start_with(demo: usize) -> Stack {
        let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
        let token = format!("inbox-test{suffix}");
        let topics = SimTopics::with_suffix(&suffix);
        let mut config = SimConfig::new(kafka_brokers());
        config.topics = topics.clone();
        config.group_id = format!("chain-sim-{}", uuid::Uuid::new_v4().simple());
        config.tokens = vec![token.clone()];
        config.demo = demo;
        let sim = Simulator::start(config).await.unwrap();
        let schema = PgSchema::create_in(&mes_e2e::database_url());
        let url = schema.url().to_owned();
        let (_operator, viewer) = tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            mes_e2e::db::add_operators(&mut conn).unwrap()
        })
        .await
        .unwrap();
        let stack = Stack {
            sim,
            topics,
            token,
            viewer,
            http: reqwest::Client::new(),
            schema,
            dir: TempDir::create().unwrap(),
        };
        stack.set_master(true).await;
        stack
    }

    /// Stores (or removes) the master token: without it the poller does not scan.
    async fn set_master(&self, present: bool) {
        let (url, token) = (self.schema.url().to_owned(), self.token.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            if present {
                tokens::put(
                    &mut conn,
                    &tokens::NewKafkaToken {
                        instance_type: tokens::MASTER,
                        token: &token,
                        ..Default::default()
                    },
                )
                .unwrap();
            } else if let Some(master) = tokens::master(&mut conn).unwrap() {
                assert!(tokens::delete(&mut conn, master.id).unwrap());
            }
        })
        .await
        .unwrap();
    }

    /// Starts a server on the stack's database; returns once it is ready.
    async fn server(&self, webhooks: Option<&str>) -> Server {
        let port = mes_e2e::free_port().unwrap();
        let names = &self.topics.chain;
        let mut command = Command::new(env!("CARGO_BIN_EXE_console-server"));
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env("ROCKET_PORT", port.to_string())
            .env("MES_DATA_DIR", self.dir.path())
            .env("MES_DATABASE_URL", self.schema.url())
            .env("MES_DATABASE_POOL_SIZE", "4")
            .env("MES_KAFKA_BROKERS", kafka_brokers())
            .env("MES_POLL_INTERVAL_SECS", "1")
            // The simulator does not sign its replies.
            .env("MES_REPLY_TRUST", "unsigned")
            .envs(mes_e2e::server::topic_env(names))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(hooks) = webhooks {
            // The test's receiver is plain HTTP on loopback.
            command
                .env("MES_WEBHOOKS", hooks)
                .env("MES_WEBHOOK_ALLOW_HTTP", "true");
        }
        let server = Server {
            base: format!("http://127.0.0.1:{port}"),
            child: command.spawn().unwrap(),
        };
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", server.base))
                .send()
                .await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < until, "the server did not get ready");
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Injects a partner request from a new ERP, as `chain-sim erp partner` does.
    async fn erp_partner(&self) -> AgentKey {
        let agent = SigningKey::generate().agent_key();
        let request = ErpRequest::Partner(ErpPartner {
            issuing_agent: agent.clone(),
        });
        let reply = send_erp(
            &KafkaConfig::new(kafka_brokers()),
            &self.topics,
            &self.token,
            &request,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(
            !matches!(reply.body, ReplyBody::Error { .. }),
            "the simulator refused the ERP request: {:?}",
            reply.body
        );
        agent
    }

    /// `GET path` as the viewer (reading the inbox needs no more); status and body.
    async fn get(&self, server: &Server, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", server.base))
            .bearer_auth(&self.viewer)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Opens `/api/events` with the cookie the console gets from `POST /api/session`;
    /// returns once the stream's `hello` has arrived (events from then on are seen).
    async fn events(&self, server: &Server) -> (mpsc::UnboundedReceiver<(String, Value)>, Value) {
        let session = self
            .http
            .post(format!("{}/api/session", server.base))
            .bearer_auth(&self.viewer)
            .send()
            .await
            .unwrap();
        assert!(session.status().is_success());
        let cookie = session
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|c| c.starts_with("mes_session="))
            .expect("POST /api/session sets the stream cookie")
            .to_owned();
        let response = self
            .http
            .get(format!("{}/api/events", server.base))
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut rx = mes_e2e::live::read_events(response);
        let hello = next_event(&mut rx, "hello", |_| true).await;
        (rx, hello)
    }

    /// The chain's own count of requests of `kind` per status.
    fn chain_counts(&self, kind: &str) -> BTreeMap<String, i64> {
        let ledger = self.sim.ledger_snapshot();
        let statuses: Vec<String> = if kind == "partner" {
            ledger
                .partners
                .iter()
                .map(|p| p.status.to_string())
                .collect()
        } else {
            ledger.orders.iter().map(|o| o.status.to_string()).collect()
        };
        let mut counts = BTreeMap::new();
        for status in statuses {
            *counts.entry(status.to_ascii_uppercase()).or_insert(0) += 1;
        }
        counts
    }

    /// `mes_chain_polls_total{outcome="ok"}` of `server`.
    async fn polls(&self, server: &Server) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("mes_chain_polls_total{outcome=\"ok\"} "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `server` has completed `n` more polls than now.
    async fn more_polls(&self, server: &Server, n: u64) {
        let target = self.polls(server).await + n;
        let until = Instant::now() + DEADLINE;
        while self.polls(server).await < target {
            assert!(Instant::now() < until, "the poller stopped polling");
            sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The next event named `name` that satisfies `check`, skipping others.
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    name: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    mes_e2e::live::next_event(rx, name, check, DEADLINE).await
}

/// Waits until both kinds have a complete scan (from `hello`, or the `watching` event).
async fn wait_watching(rx: &mut mpsc::UnboundedReceiver<(String, Value)>, hello: &Value) {
    if hello["watching"] != true {
        next_event(rx, "watching", |_| true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_shows_open_requests_past_the_first_chain_pages_with_true_counts() {
    let stack = Stack::start().await;
    let server = stack.server(None).await;
    let (mut events, hello) = stack.events(&server).await;
    wait_watching(&mut events, &hello).await;

    // A new partner request: the chain lists it last, after DEMO older ones.
    let agent = stack.erp_partner().await.to_string();
    let announced = next_event(&mut events, "request", |d| {
        d["item"]["issuing_agent"] == agent.as_str()
    })
    .await;
    let id = announced["id"].as_str().unwrap().to_owned();
    let position = stack
        .sim
        .ledger_snapshot()
        .partners
        .iter()
        .position(|p| p.issuing_agent.to_string() == agent)
        .unwrap();
    assert!(position >= 25, "the request sits past the first chain page");

    let (status, open) = stack
        .get(&server, "/api/requests?kind=partner&status=OPEN")
        .await;
    assert_eq!(status, 200, "{open}");
    let chain = stack.chain_counts("partner");
    assert_eq!(
        open["total"], chain["OPEN"],
        "every OPEN partner, not one page"
    );
    assert_eq!(open["items"][0]["id"], id.as_str(), "newest first");
    assert_eq!(open["items"][0]["status"], "OPEN");
    assert_eq!(open["items"][0]["item"]["partner_request_id"], id.as_str());
    assert!(open["as_of"].is_string(), "{open}");
    let every: Vec<&Value> = open["items"].as_array().unwrap().iter().collect();
    assert!(
        every
            .iter()
            .all(|i| i["status"] == "OPEN" && i["kind"] == "partner")
    );

    // Paging over the filtered list reaches all of it, in pages.
    let total = open["total"].as_i64().unwrap();
    let mut seen = HashSet::new();
    let mut offset = 0;
    while offset < total {
        let (_, page) = stack
            .get(
                &server,
                &format!("/api/requests?kind=partner&status=open&limit=4&offset={offset}"),
            )
            .await;
        for item in page["items"].as_array().unwrap() {
            assert!(seen.insert(item["id"].as_str().unwrap().to_owned()));
        }
        offset += 4;
    }
    assert_eq!(i64::try_from(seen.len()).unwrap(), total);

    let (_, found) = stack
        .get(&server, &format!("/api/requests?q={}", &agent[10..30]))
        .await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["id"], id.as_str());

    let (status, counts) = stack.get(&server, "/api/requests/counts").await;
    assert_eq!(status, 200);
    for kind in ["partner", "order"] {
        let chain: BTreeMap<String, i64> = stack.chain_counts(kind);
        let mirrored: BTreeMap<String, i64> =
            serde_json::from_value(counts[kind]["by_status"].clone()).unwrap();
        assert_eq!(mirrored, chain, "{kind} counts");
        assert_eq!(counts[kind]["total"], chain.values().sum::<i64>());
        assert!(counts[kind]["as_of"].is_string());
    }
    assert_eq!(counts["partner"]["total"], i64::try_from(DEMO + 1).unwrap());

    let (status, error) = stack.get(&server, "/api/requests?kind=partners").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "invalid_parameter");
    let unauthenticated = stack
        .http
        .get(format!("{}/api/requests", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_arrive_while_the_server_is_down_are_announced_once_after_restart() {
    let stack = Stack::start().await;
    let (url, mut posts) = mes_e2e::live::receiver().await;

    // The first server takes the baseline: the demo requests are not news.
    let first = stack.server(Some(&url)).await;
    let (mut events, hello) = stack.events(&first).await;
    wait_watching(&mut events, &hello).await;
    drop(events);
    drop(first);

    let agents: HashSet<String> = [
        stack.erp_partner().await.to_string(),
        stack.erp_partner().await.to_string(),
    ]
    .into_iter()
    .collect();

    // Without a master token the restarted server does not scan: the event stream is
    // open before its first scan.
    stack.set_master(false).await;
    let second = stack.server(Some(&url)).await;
    let (mut events, _) = stack.events(&second).await;
    stack.set_master(true).await;

    let mut announced = HashSet::new();
    while announced.len() < 2 {
        let event = next_event(&mut events, "request", |_| true).await;
        let agent = event["item"]["issuing_agent"].as_str().unwrap().to_owned();
        assert!(
            agents.contains(&agent),
            "only the new requests are news: {event}"
        );
        assert!(announced.insert(agent), "announced twice: {event}");
    }
    let mut hooked = HashSet::new();
    while hooked.len() < 2 {
        let post = timeout(DEADLINE, posts.recv())
            .await
            .expect("a webhook POST per new request")
            .unwrap();
        assert_eq!(post["event"], "new_request");
        let agent = post["data"]["request"]["issuing_agent"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            agents.contains(&agent),
            "only the new requests are news: {post}"
        );
        assert!(hooked.insert(agent), "POSTed twice: {post}");
    }

    // More complete scans announce nothing again.
    stack.more_polls(&second, 3).await;
    let mut extra = Vec::new();
    while let Ok((name, data)) = events.try_recv() {
        if name == "request" {
            extra.push(data);
        }
    }
    while let Ok(post) = posts.try_recv() {
        extra.push(post);
    }
    assert!(extra.is_empty(), "announced again: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_announce_each_new_request_once() {
    let stack = Stack::start().await;
    let (url, mut posts) = mes_e2e::live::receiver().await;
    let one = stack.server(Some(&url)).await;
    let two = stack.server(Some(&url)).await;
    let (mut events_one, hello) = stack.events(&one).await;
    wait_watching(&mut events_one, &hello).await;
    let (mut events_two, hello) = stack.events(&two).await;
    wait_watching(&mut events_two, &hello).await;

    let agents: HashSet<String> = [
        stack.erp_partner().await.to_string(),
        stack.erp_partner().await.to_string(),
    ]
    .into_iter()
    .collect();
    let mut hooked = HashSet::new();
    while hooked.len() < 2 {
        let post = timeout(DEADLINE, posts.recv())
            .await
            .expect("a webhook POST per new request")
            .unwrap();
        let agent = post["data"]["request"]["issuing_agent"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            agents.contains(&agent),
            "only the new requests are news: {post}"
        );
        assert!(hooked.insert(agent), "POSTed twice: {post}");
    }

    // Both instances scan again, several times: neither announces them again.
    stack.more_polls(&one, 3).await;
    stack.more_polls(&two, 3).await;
    let mut extra: Vec<Value> = Vec::new();
    for events in [&mut events_one, &mut events_two] {
        while let Ok((name, data)) = events.try_recv() {
            if name == "request" {
                extra.push(data);
            }
        }
    }
    // Each request was announced on exactly one instance's stream (2 in all, the
    // webhooks' count), and nothing came later.
    assert_eq!(
        extra.len(),
        2,
        "one request event per new request: {extra:?}"
    );
    while let Ok(post) = posts.try_recv() {
        extra.push(post);
    }
    assert_eq!(extra.len(), 2, "announced again: {extra:?}");

    // The mirror agrees with the chain, read through either instance.
    for server in [&one, &two] {
        let (_, counts) = stack.get(server, "/api/requests/counts").await;
        let mirrored: BTreeMap<String, i64> =
            serde_json::from_value(counts["partner"]["by_status"].clone()).unwrap();
        assert_eq!(mirrored, stack.chain_counts("partner"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_longer_than_one_cycle_reads_is_scanned_whole_over_several_cycles() {
    // More than POLL_PAGES pages of POLL_PAGE of each kind.
    const LEDGER: usize = 5_050;
    let stack = Stack::start_with(LEDGER).await;
    let server = stack.server(None).await;
    let (mut events, hello) = stack.events(&server).await;
    wait_watching(&mut events, &hello).await;
    assert!(
        stack.polls(&server).await >= 2,
        "one cycle reads at most 5,000 requests of a kind"
    );
    let (_, counts) = stack.get(&server, "/api/requests/counts").await;
    for kind in ["partner", "order"] {
        let mirrored: BTreeMap<String, i64> =
            serde_json::from_value(counts[kind]["by_status"].clone()).unwrap();
        assert_eq!(mirrored, stack.chain_counts(kind), "{kind}");
        assert_eq!(counts[kind]["total"], i64::try_from(LEDGER).unwrap());
        assert!(counts[kind]["as_of"].is_string());
    }
}
