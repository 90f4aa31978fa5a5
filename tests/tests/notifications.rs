//! Durable webhook notifications end to end: the server as a process (`mes-api-proc`)
//! on PostgreSQL and the test broker, a chain simulator on topics of its own, ERP
//! requests injected the way `chain-sim erp` does, and a local HTTP receiver that
//! records each POST with its `Idempotency-Key` and answers what the test tells it.
//!
//! - notifications of new requests that a receiver refused with 503 survive a SIGKILL
//!   of the server and are delivered by the restarted server, once the receiver
//!   accepts them; each POST carries the event id as `Idempotency-Key`; the list route
//!   and `/metrics` show them, the webhook by display name only;
//! - two server instances on one database POST each event exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chain_sim::{ErpPartner, ErpRequest, SimConfig, SimHandle, SimTopics, Simulator, send_erp};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::ReplyBody;
use mes_core::db;
use mes_core::signing::SigningKey;
use mes_e2e::db::PgSchema;
use mes_e2e::server::{DEADLINE, ServerProc, http};
use mes_e2e::{database_url, kafka_brokers};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// The secret part of the webhook URL: it must never be shown.
const SECRET_PATH: &str = "/bot4711:SECRET-token/sendMessage";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Post {
    key: Option<String>,
    body: Value,
    answered: u16,
}

/// A local webhook receiver: answers every POST with the status in `answer` and
/// records it.
struct Receiver {
    url: String,
    answer: Arc<AtomicU16>,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{SECRET_PATH}", listener.local_addr().unwrap());
        let answer = Arc::new(AtomicU16::new(status));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (a, p) = (Arc::clone(&answer), Arc::clone(&posts));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (answer, posts) = (Arc::clone(&a), Arc::clone(&p));
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                        let text = String::from_utf8_lossy(&data).to_string();
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let header = |name: &str| {
                            text[..head_end].lines().find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case(name)
                                    .then(|| v.trim().to_owned())
                            })
                        };
                        let length: usize = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if data.len() < head_end + 4 + length {
                            continue;
                        }
                        let status = answer.load(Ordering::SeqCst);
                        posts.lock().unwrap().push(Post {
                            key: header("idempotency-key"),
                            body: serde_json::from_slice(
                                &data[head_end + 4..head_end + 4 + length],
                            )
                            .unwrap_or(Value::Null),
                            answered: status,
                        });
                        let reply = format!(
                            "HTTP/1.1 {status} Answer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                        return;
                    }
                });
            }
        });
        Receiver { url, answer, posts }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The POSTs answered 200, by `Idempotency-Key`.
    fn delivered(&self) -> HashMap<String, Vec<Post>> {
        let mut by_key: HashMap<String, Vec<Post>> = HashMap::new();
        for post in self.posts().into_iter().filter(|p| p.answered == 200) {
            by_key
                .entry(post.key.clone().unwrap_or_default())
                .or_default()
                .push(post);
        }
        by_key
    }
}

/// The simulator, the database and the keys of one test.
struct Stack {
    sim: SimHandle,
    topics: SimTopics,
    token: String,
    viewer: String,
    schema: PgSchema,
}

impl Stack {
    async fn start() -> Stack {
        let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
        let token = format!("notifications{suffix}");
        let topics = SimTopics::with_suffix(&suffix);
        let mut config = SimConfig::new(kafka_brokers());
        config.topics = topics.clone();
        config.group_id = format!("chain-sim{suffix}");
        config.tokens = vec![token.clone()];
        config.demo = 0;
        let sim = Simulator::start(config).await.unwrap();
        let schema = PgSchema::create_in(&database_url());
        let (url, master) = (schema.url().to_owned(), token.clone());
        let (_operator, viewer) = tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            mes_e2e::db::put_master(&mut conn, &master).unwrap();
            mes_e2e::db::add_operators(&mut conn).unwrap()
        })
        .await
        .unwrap();
        Stack {
            sim,
            topics,
            token,
            viewer,
            schema,
        }
    }

    fn server(&self, hook: &str) -> ServerProc {
        let mut env: Vec<(String, String)> = vec![
            ("MES_DATABASE_URL".into(), self.schema.url().to_owned()),
            ("MES_KAFKA_BROKERS".into(), kafka_brokers()),
            ("MES_DATABASE_POOL_SIZE".into(), "4".into()),
            ("MES_CORRELATION".into(), "id".into()),
            ("MES_POLL_INTERVAL_SECS".into(), "1".into()),
            ("MES_WEBHOOKS".into(), hook.to_owned()),
            ("MES_WEBHOOK_ALLOW_HTTP".into(), "true".into()),
        ];
        env.extend(mes_e2e::server::topic_env(&self.topics.chain));
        ServerProc::spawn(BIN, &env)
    }

    /// A new partner request from an ERP, acknowledged by the chain.
    async fn erp_partner(&self) {
        let request = ErpRequest::Partner(ErpPartner {
            issuing_agent: SigningKey::generate().agent_key(),
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
            "{:?}",
            reply.body
        );
    }

    /// `GET /api/notifications?{query}` as the viewer.
    async fn notifications(&self, server: &ServerProc, query: &str) -> Vec<Value> {
        let (status, body) = http(
            server.port,
            "GET",
            &format!("/api/notifications?{query}"),
            Some(&self.viewer),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("SECRET"),
            "the webhook's URL was shown: {body}"
        );
        serde_json::from_str(&body).unwrap()
    }
}

/// Waits until both request lists have a complete scan: new requests are announced
/// from then on.
async fn wait_watching(server: &mut ServerProc, viewer: &str) {
    let start = Instant::now();
    loop {
        server.assert_running();
        let (status, body) = http(
            server.port,
            "GET",
            "/api/requests/counts",
            Some(viewer),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let counts: Value = serde_json::from_str(&body).unwrap();
        if counts["partner"]["as_of"].is_string() && counts["order"]["as_of"].is_string() {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "no complete scan: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds, asking `what` every 100 ms; fails after [`DEADLINE`].
async fn wait_until<T, F, Fut>(what: &str, mut ask: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        let value = ask().await;
        if check(&value) {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: still {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name` (with its labels, as written) in `/metrics`.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let (status, text) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_a_sigkill_and_are_delivered_after_the_restart() {
    let receiver = Receiver::start(503).await;
    let stack = Stack::start().await;
    let mut first = stack.server(&receiver.url);
    first.wait_ready().await;
    wait_watching(&mut first, &stack.viewer).await;

    stack.erp_partner().await;
    stack.erp_partner().await;
    // Both are rows, tried and refused for now (503: retried later).
    let rows = wait_until(
        "two notifications tried at least once",
        || stack.notifications(&first, "status=pending"),
        // An attempt counts from its claim; its error is written once the answer came.
        |rows| {
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r["attempts"].as_i64() >= Some(1) && r["last_error"].is_string())
        },
    )
    .await;
    for row in &rows {
        assert_eq!(row["kind"], "new_request");
        assert_eq!(row["webhook"], receiver.url.replace(SECRET_PATH, ""));
        assert!(row["last_error"].as_str().unwrap().contains("503"), "{row}");
    }
    // `/metrics` reads the table at most once a second.
    wait_until(
        "two pending rows in /metrics",
        || metric(first.port, "mes_notification_rows{status=\"pending\"}"),
        |n| *n == Some(2.0),
    )
    .await;
    let oldest = metric(first.port, "mes_notification_oldest_pending_seconds").await;
    assert!(oldest.is_some_and(|s| s > 0.0), "{oldest:?}");
    let event_ids: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();

    first.kill();
    receiver.answer.store(200, Ordering::SeqCst);
    let mut second = stack.server(&receiver.url);
    second.wait_ready().await;
    let delivered = wait_until(
        "both notifications delivered after the restart",
        || async { receiver.delivered() },
        |by_key| by_key.len() == 2,
    )
    .await;
    for id in &event_ids {
        let posts = delivered
            .get(id)
            .unwrap_or_else(|| panic!("{id}: {delivered:?}"));
        let body = &posts[0].body;
        assert_eq!(body["event"], "new_request");
        assert_eq!(
            id,
            &format!(
                "new_request:partner:{}",
                body["data"]["id"].as_str().unwrap()
            )
        );
    }
    assert!(
        receiver.posts().iter().all(|p| p.key.is_some()),
        "every POST carries an Idempotency-Key"
    );
    let rows = wait_until(
        "both rows delivered",
        || stack.notifications(&second, "status=delivered"),
        |rows| rows.len() == 2,
    )
    .await;
    assert!(rows.iter().all(|r| r["delivered_at"].is_string()));
    wait_until(
        "two delivered rows in /metrics",
        || metric(second.port, "mes_notification_rows{status=\"delivered\"}"),
        |n| *n == Some(2.0),
    )
    .await;
    assert_eq!(
        metric(second.port, "mes_notification_oldest_pending_seconds").await,
        Some(0.0)
    );
    let (status, body) = http(
        second.port,
        "GET",
        "/api/notifications?status=sent",
        Some(&stack.viewer),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("status"), "{body}");

    let status = second.terminate().await;
    assert!(status.success(), "{status}");
    stack.sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_post_each_event_exactly_once() {
    const REQUESTS: usize = 4;
    let receiver = Receiver::start(200).await;
    let stack = Stack::start().await;
    let mut a = stack.server(&receiver.url);
    let mut b = stack.server(&receiver.url);
    a.wait_ready().await;
    b.wait_ready().await;
    wait_watching(&mut a, &stack.viewer).await;
    wait_watching(&mut b, &stack.viewer).await;

    for _ in 0..REQUESTS {
        stack.erp_partner().await;
    }
    // Every row delivered (a delivered row is never claimed again) …
    wait_until(
        "every notification delivered",
        || stack.notifications(&a, "status=delivered"),
        |rows| rows.len() == REQUESTS,
    )
    .await;
    assert!(stack.notifications(&b, "status=pending").await.is_empty());
    // … and each POSTed once, with its event id as Idempotency-Key.
    let posts = receiver.posts();
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), REQUESTS, "{posts:?}");
    for (key, posts) in &delivered {
        assert!(key.starts_with("new_request:partner:"), "{key}");
        assert_eq!(posts.len(), 1, "{key} was POSTed {} times", posts.len());
    }
    assert_eq!(posts.len(), REQUESTS, "{posts:?}");
    let delivered_by = |port: u16| async move {
        metric(
            port,
            "mes_webhook_notifications_total{outcome=\"delivered\"}",
        )
        .await
        .unwrap_or(0.0)
    };
    wait_until(
        "the deliveries counted by the two instances",
        || async { delivered_by(a.port).await + delivered_by(b.port).await },
        |n| *n == REQUESTS as f64,
    )
    .await;

    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());
    stack.sim.shutdown().await.unwrap();
}

/// A server started without a webhook that has pending notifications fails them,
/// saying why, instead of holding them (and the oldest-pending age) for good; the
/// configured webhook's rows stay pending and are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notifications_of_a_webhook_taken_out_of_the_configuration_fail_at_start() {
    let receiver = Receiver::start(200).await;
    let stack = Stack::start().await;
    let (url, kept) = (stack.schema.url().to_owned(), receiver.url.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        let row = |url| db::notifications::NewNotification {
            event_id: "new_request:partner:gone",
            kind: "new_request",
            url,
            target: "http://127.0.0.1:9",
            payload: r#"{"text": "New partner request"}"#,
        };
        let rows = [row("http://127.0.0.1:9/removed"), row(kept.as_str())];
        db::notifications::insert(&mut conn, &rows).unwrap();
    })
    .await
    .unwrap();

    let mut server = stack.server(&receiver.url);
    server.wait_ready().await;
    let failed = wait_until(
        "the removed webhook's row to fail",
        || stack.notifications(&server, "status=failed"),
        |rows| rows.len() == 1,
    )
    .await;
    assert_eq!(
        failed.len(),
        1,
        "only the removed webhook's row: {failed:?}"
    );
    assert_eq!(
        failed[0]["last_error"], "its webhook is no longer in MES_WEBHOOKS",
        "{failed:?}"
    );
    assert_eq!(failed[0]["attempts"], 0, "never tried: {failed:?}");
    wait_until(
        "the configured webhook's row to be delivered",
        || stack.notifications(&server, "status=delivered"),
        |rows| rows.len() == 1,
    )
    .await;
    wait_until(
        "no pending row in /metrics",
        || metric(server.port, "mes_notification_rows{status=\"pending\"}"),
        |n| *n == Some(0.0),
    )
    .await;
    server.assert_running();
}
