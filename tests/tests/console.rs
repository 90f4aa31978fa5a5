//! The operator console end to end: the real server as a process (`console-server`,
//! which is `mes-api`'s `main`) on PostgreSQL and the test broker, a chain simulator
//! on topics of its own, ERP requests injected the way `chain-sim erp` does
//! ([`send_erp`]).
//!
//! - webhooks: a local HTTP receiver gets one POST per new request, none repeated by
//!   later polls, none for the requests that were there at start-up;
//! - the event stream: a new partner request and a decision arrive on `/api/events`;
//! - the page in headless Chromium (Debian's `chromium` and `chromedriver`, driven
//!   over WebDriver): sign in, accept a demo request, see a new one appear live, a
//!   hostile id from the chain shown as text and percent-encoded in the answer's URL,
//!   the new request's delivered webhook notification on the Notifications tab, a
//!   viewer without answer buttons; edit a production unit and see its change
//!   delivered, the outbox and a day report run from the page, the connection lost
//!   when the server stops; the partner tab (the inbox) shows an open request that sits
//!   past the chain's first pages, with the true count in its badge; a failed outbox row
//!   retried from the page until it is delivered, another discarded with a reason.
//!   Screenshots go to `target/screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chain_sim::{
    ErpOrder, ErpPartner, ErpRequest, SimConfig, SimHandle, SimTopics, Simulator, send_erp,
};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::ReplyBody;
use mes_core::db;
use mes_core::domain::{AgentKey, Status as ChainStatus};
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, TempDir};
use mes_e2e::kafka_brokers;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// Upper bound of every wait: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(90);

struct Server {
    base: String,
    operator: String,
    viewer: String,
    sim: SimHandle,
    topics: SimTopics,
    token: String,
    child: Child,
    http: reqwest::Client,
    _db: PgSchema,
    _dir: TempDir,
}

async fn start(webhooks: Option<&str>) -> Server {
    start_with(webhooks, 6).await
}

/// [`start`] with a chain seeded with `demo` partner requests and as many orders.
async fn start_with(webhooks: Option<&str>, demo: usize) -> Server {
    start_chain(webhooks, demo, None).await
}

/// [`start_with`]; with `commit_delay`, the chain applies every answer that long after
/// it arrives and only then replies, past the server's 2 s request timeout.
async fn start_chain(
    webhooks: Option<&str>,
    demo: usize,
    commit_delay: Option<Duration>,
) -> Server {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("console-test{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let brokers = kafka_brokers();
    let mut config = SimConfig::new(&brokers);
    config.topics = topics.clone();
    config.group_id = format!("chain-sim-{}", uuid::Uuid::new_v4().simple());
    config.tokens = vec![token.clone()];
    config.demo = demo;
    if let Some(delay) = commit_delay {
        config.gateway.commit_delay = delay;
    }
    let sim = Simulator::start(config).await.unwrap();

    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();
    let master = token.clone();
    let (operator, viewer) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        mes_e2e::db::put_master(&mut conn, &master).unwrap();
        mes_e2e::db::add_operators(&mut conn).unwrap()
    })
    .await
    .unwrap();

    let dir = TempDir::create().unwrap();
    let port = mes_e2e::free_port().unwrap();
    let names = &topics.chain;
    let mut command = Command::new(env!("CARGO_BIN_EXE_console-server"));
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_PORT", port.to_string())
        .env("MES_DATA_DIR", dir.path())
        .env("MES_DATABASE_URL", schema.url())
        .env("MES_DATABASE_POOL_SIZE", "4")
        .env("MES_KAFKA_BROKERS", &brokers)
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
    if commit_delay.is_some() {
        command.env("MES_REQUEST_TIMEOUT_MS", "2000");
    }
    let child = command.spawn().unwrap();
    let server = Server {
        base: format!("http://127.0.0.1:{port}"),
        operator,
        viewer,
        sim,
        topics,
        token,
        child,
        http: reqwest::Client::new(),
        _db: schema,
        _dir: dir,
    };
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = server
            .http
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < until, "the server did not get ready");
        sleep(Duration::from_millis(200)).await;
    }
    server
}

impl Server {
    /// Injects a partner request from a new ERP, as `chain-sim erp partner` does.
    async fn erp_partner(&self) -> AgentKey {
        let agent = SigningKey::generate().agent_key();
        let request = ErpRequest::Partner(ErpPartner {
            issuing_agent: agent.clone(),
        });
        self.erp(&request).await;
        agent
    }

    /// Injects an order from `agent` (an accepted partner), as `chain-sim erp order`.
    async fn erp_order(&self, agent: &AgentKey, description: &str) {
        let request = ErpRequest::Order(ErpOrder {
            issuing_agent: agent.clone(),
            order_type: "dummy_action".into(),
            description: description.into(),
            metadata: json!({"Part": "steering wheel"}),
            files: vec![],
        });
        self.erp(&request).await;
    }

    async fn erp(&self, request: &ErpRequest) {
        let kafka = KafkaConfig::new(kafka_brokers());
        let reply = send_erp(
            &kafka,
            &self.topics,
            &self.token,
            request,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(
            !matches!(reply.body, ReplyBody::Error { .. }),
            "the simulator refused the ERP request: {:?}",
            reply.body
        );
    }

    fn accepted_partner(&self) -> AgentKey {
        self.sim
            .ledger_snapshot()
            .partners
            .iter()
            .find(|p| p.status == ChainStatus::Accepted)
            .expect("the demo has an accepted partner")
            .issuing_agent
            .clone()
    }

    async fn polls(&self) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
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

    /// Opens `/api/events` with the cookie the console gets from `POST /api/session`.
    async fn events(&self) -> mpsc::UnboundedReceiver<(String, Value)> {
        let session = self
            .http
            .post(format!("{}/api/session", self.base))
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
        assert!(cookie.starts_with("mes_session="));
        let response = self
            .http
            .get(format!("{}/api/events", self.base))
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        mes_e2e::live::read_events(response)
    }

    /// Creates production unit `code` (named "Press `code`", process Stamping).
    async fn create_unit(&self, code: &str, status: &str) -> Value {
        self.api(
            reqwest::Method::POST,
            "/api/ProductionUnit",
            Some(json!({"code": code, "name": format!("Press {code}"), "Status": status, "ProcessName": "Stamping"})),
        )
        .await
    }

    /// An API call as operator `olga`; panics unless it succeeds.
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.operator);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
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

/// Waits until the poller has its baseline, so that what comes next is news.
async fn wait_watching(rx: &mut mpsc::UnboundedReceiver<(String, Value)>) {
    let hello = next_event(rx, "hello", |_| true).await;
    assert_eq!(hello["role"], "viewer");
    if hello["watching"] != true {
        next_event(rx, "watching", |_| true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_one_post_per_new_request_and_none_twice() {
    let (url, mut posts) = mes_e2e::live::receiver().await;
    let server = start(Some(&url)).await;
    let mut events = server.events().await;
    wait_watching(&mut events).await;

    let partner = server.erp_partner().await;
    let first = timeout(DEADLINE, posts.recv())
        .await
        .expect("a POST for the new partner")
        .unwrap();
    assert_eq!(first["event"], "new_request");
    assert_eq!(first["data"]["kind"], "partner");
    assert_eq!(
        first["data"]["request"]["issuing_agent"],
        partner.to_string()
    );
    assert_eq!(first["data"]["request"]["status"], "OPEN");
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .starts_with("New partner request ")
    );

    let ordering = server.accepted_partner();
    server.erp_order(&ordering, "console webhook test").await;
    let second = timeout(DEADLINE, posts.recv())
        .await
        .expect("a POST for the new order")
        .unwrap();
    assert_eq!(second["data"]["kind"], "order");
    assert_eq!(
        second["data"]["request"]["description"],
        "console webhook test"
    );

    // Several more looks at the chain: nothing is announced again.
    let polls = server.polls().await;
    let until = Instant::now() + DEADLINE;
    while server.polls().await < polls + 4 {
        assert!(Instant::now() < until, "the poller stopped polling");
        sleep(Duration::from_millis(250)).await;
    }
    sleep(Duration::from_secs(1)).await;
    let mut extra = Vec::new();
    while let Ok(post) = posts.try_recv() {
        extra.push(post);
    }
    assert!(extra.is_empty(), "duplicate or unexpected POSTs: {extra:?}");
    let ids: HashSet<_> = [&first, &second]
        .iter()
        .map(|p| p["data"]["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partner_request_and_a_decision_arrive_on_the_event_stream() {
    let server = start(None).await;
    let unauthenticated = server
        .http
        .get(format!("{}/api/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let mut events = server.events().await;
    wait_watching(&mut events).await;
    let agent = server.erp_partner().await;
    let event = next_event(&mut events, "request", |d| {
        d["item"]["issuing_agent"] == agent.to_string()
    })
    .await;
    assert_eq!(event["kind"], "partner");
    assert_eq!(event["item"]["status"], "OPEN");
    let id = event["id"].as_str().unwrap().to_owned();

    let answered = server
        .http
        .post(format!("{}/api/partners/{id}/answer", server.base))
        .bearer_auth(&server.operator)
        .json(&json!({"response": "accept"}))
        .send()
        .await
        .unwrap();
    assert!(
        answered.status().is_success(),
        "{}",
        answered.text().await.unwrap()
    );
    let decision = next_event(&mut events, "decision", |d| d["request_id"] == id.as_str()).await;
    assert_eq!(decision["operator"], "olga");
    assert_eq!(decision["response"], "accept");
    assert_eq!(decision["outcome"], "accepted");
    // The poller sees the chain's new status too.
    let status = next_event(&mut events, "status", |d| d["id"] == id.as_str()).await;
    assert_eq!(status["status"], "ACCEPTED");
    server.stop();
}

// ---------- the page in headless Chromium, over WebDriver ----------

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    shots: PathBuf,
    /// Where the browser saves downloads (a directory of this browser's own).
    downloads: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.downloads);
    }
}

impl Browser {
    async fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (./scripts/test does)"
            );
        }
        let port = mes_e2e::free_port().unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < until, "chromedriver did not start");
            sleep(Duration::from_millis(200)).await;
        }
        let downloads = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/downloads")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&downloads).unwrap();
        // Chromium leaves a download as `.crdownload` in a path that has a `..`.
        let downloads = downloads.canonicalize().unwrap();
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless", "--no-sandbox", "--disable-gpu",
                             "--disable-background-networking", "--disable-dev-shm-usage",
                             "--window-size=1280,800"],
                    "prefs": {
                        "download.default_directory": downloads.to_string_lossy(),
                        "download.prompt_for_download": false,
                    },
                },
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let browser = Browser {
            http,
            session: format!("{base}/session/{session}"),
            driver,
            shots,
            downloads,
        };
        // Headless Chromium saves downloads only where it is told to.
        browser
            .call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({"cmd": "Browser.setDownloadBehavior", "params": {
                    "behavior": "allow",
                    "downloadPath": browser.downloads.to_string_lossy(),
                }})),
            )
            .await;
        browser
    }

    /// Moves the mouse onto the middle of `css`, as a user hovering it.
    async fn hover(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [{"type": "pointerMove", "duration": 0, "x": 0, "y": 0,
                             "origin": {ELEMENT: id}}],
            }]})),
        )
        .await;
    }

    /// The text of the download named `name`, once the browser has saved all of it.
    async fn downloaded(&self, name: &str) -> String {
        let path = self.downloads.join(name);
        let partial = self.downloads.join(format!("{name}.crdownload"));
        let until = Instant::now() + DEADLINE;
        loop {
            if path.exists()
                && !partial.exists()
                && let Ok(text) = std::fs::read_to_string(&path)
                && !text.is_empty()
            {
                return text;
            }
            if Instant::now() > until {
                self.screenshot("failure").await;
                let saved: Vec<_> = std::fs::read_dir(&self.downloads)
                    .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                panic!("{name} was not downloaded; the folder has {saved:?}");
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The first OPEN partner request listed: its id and the CSS selector of its row.
    async fn open_partner_request(&self) -> (String, String) {
        let id = self
            .wait(
                "an open request",
                "document.querySelector('#partners-rows tr[data-status=\"OPEN\"]')?.dataset.id",
                json!(null),
            )
            .await;
        let id = id.as_str().unwrap().to_owned();
        let row = format!("#partners-rows tr[data-id=\"{id}\"]");
        (id, row)
    }

    /// Clicks Accept on `row` and waits for the confirmation step.
    async fn ask_to_accept(&self, row: &str) {
        self.click(&format!("{row} .btn.accept")).await;
        self.wait(
            "the confirmation",
            "document.querySelector(arguments[0] + ' .btn.accept.confirm')",
            json!(row),
        )
        .await;
    }

    /// Waits until `expr` (a JavaScript expression, `arguments[0]` = `arg`) is truthy.
    async fn wait(&self, what: &str, expr: &str, arg: Value) -> Value {
        let until = Instant::now() + DEADLINE;
        let script = format!("return ({expr}) || null;");
        loop {
            let value = self.js(&script, json!([arg])).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if Instant::now() > until {
                self.screenshot("failure").await;
                panic!("timed out waiting for {what}");
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks like a user: WebDriver refuses a hidden or covered element.
    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Sets a form field's value as a picker would, and announces the change.
    async fn set_value(&self, css: &str, value: &str) {
        self.js(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
             el.dispatchEvent(new Event('change', {bubbles: true})); return true",
            json!([css, value]),
        )
        .await;
    }

    async fn window(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64_decode(png.as_str().unwrap_or_default());
        let _ = std::fs::write(self.shots.join(format!("console-{name}.png")), bytes);
    }

    async fn sign_in(&self, key: &str) {
        self.wait(
            "the sign-in form",
            "!document.getElementById('signin').hidden",
            json!(null),
        )
        .await;
        self.type_into("#key", key).await;
        self.click("#signin-button").await;
        self.wait(
            "the partner requests",
            "document.querySelector('#partners-rows tr[data-status=\"OPEN\"]')",
            json!(null),
        )
        .await;
        self.wait(
            "the live badge",
            "document.getElementById('live').textContent === 'Live'",
            json!(null),
        )
        .await;
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_accepts_a_request_shows_a_new_one_live_and_hides_answers_from_viewers()
 {
    // A webhook receiver, for the Notifications tab.
    let (hook, _posts) = mes_e2e::live::receiver().await;
    let server = start(Some(&hook)).await;
    let browser = Browser::start().await;
    browser.goto(&server.base).await;

    // The server accepts unsigned replies (MES_REPLY_TRUST=unsigned): the page says
    // so before anyone signs in.
    let banner = browser
        .wait(
            "the unverified-replies banner",
            "!document.getElementById('unverified').hidden && document.getElementById('unverified').textContent",
            json!(null),
        )
        .await;
    assert!(
        banner.as_str().unwrap().contains("not verified"),
        "{banner}"
    );

    // Sign in: the demo's open partner requests are listed.
    browser.sign_in(&server.operator).await;
    browser.screenshot("1-partners").await;

    // Accept the first one, through the confirmation step.
    let (_, row) = browser.open_partner_request().await;
    browser.ask_to_accept(&row).await;
    browser.screenshot("2-confirm").await;
    browser.click(&format!("{row} .btn.accept.confirm")).await;
    let result = browser
        .wait(
            "the row to turn ACCEPTED",
            "document.querySelector(arguments[0])?.dataset.status === 'ACCEPTED' && document.querySelector(arguments[0] + ' .result.ok')?.textContent",
            json!(row),
        )
        .await;
    assert!(
        result.as_str().unwrap().starts_with("The chain answered:"),
        "{result}"
    );
    let badge = browser
        .js(
            "return document.querySelector(arguments[0] + ' td.status').textContent",
            json!([row]),
        )
        .await;
    assert_eq!(badge, "ACCEPTED");
    browser.screenshot("3-accepted").await;

    // A new partner request, injected by an ERP, appears without a reload.
    let marker = browser
        .js("window.__notReloaded = true; return true", json!([]))
        .await;
    assert_eq!(marker, true);
    let agent = server.erp_partner().await;
    browser
        .wait(
            "the new request to appear live",
            "document.querySelector('#partners-rows tr[data-status=\"OPEN\"] span[title=\"' + arguments[0] + '\"]')",
            json!(agent.to_string()),
        )
        .await;
    assert_eq!(
        browser
            .js("return window.__notReloaded === true", json!([]))
            .await,
        true
    );
    browser.screenshot("4-live").await;

    // Its webhook notification, once delivered, is on the Notifications tab, the
    // webhook shown by scheme, host and port only.
    let until = Instant::now() + DEADLINE;
    loop {
        let delivered = server
            .api(
                reqwest::Method::GET,
                "/api/notifications?status=delivered",
                None,
            )
            .await;
        let texts = delivered.as_array().unwrap().iter();
        if texts.clone().any(|n| {
            n["payload"]["text"]
                .as_str()
                .unwrap_or("")
                .contains(&agent.to_string())
        }) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no delivered notification: {delivered}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    browser.click("#tab-notifications").await;
    let webhook = browser
        .wait(
            "the delivered notification on the Notifications tab",
            "[...document.querySelectorAll('#notifications-rows tr[data-status=\"delivered\"]')].find((tr) => tr.textContent.includes(arguments[0]))?.querySelector('td.mono')?.textContent",
            json!(agent.to_string()),
        )
        .await;
    assert_eq!(webhook, hook.trim_end_matches("/hook"));
    browser.screenshot("4b-notifications").await;
    browser.click("#tab-partners").await;
    browser
        .wait(
            "the partner requests again",
            "document.querySelector('#partners-rows .btn.accept')",
            json!(null),
        )
        .await;

    // Tablet width still shows the table and its actions.
    browser.window(820, 1180).await;
    browser.wait("the actions at tablet width", "document.querySelector('#partners-rows .btn.accept')?.getBoundingClientRect().right <= window.innerWidth", json!(null)).await;
    browser.screenshot("5-tablet").await;
    browser.window(1280, 800).await;

    // A hostile id from the chain is shown as text and cannot change the URL an Accept
    // click calls: the page's inbox call gets such an item (the server would not store
    // it; a page must not trust that), every later call is recorded and passed on.
    let hostile = "../reports/daily/run?x=1#";
    browser
        .js(
            r##"const [id] = arguments;
            const real = window.fetch.bind(window);
            window.__realFetch = real;
            window.__calls = [];
            window.fetch = (url, init) => {
              window.__calls.push([init?.method ?? "GET", String(url)]);
              if (String(url).startsWith("/api/requests?")) {
                const item = { partner_request_id: id, status: "OPEN", timestamp: 1,
                  issuing_agent: "<img src=x onerror=\"window.__injected = 1\">", transaction_ids: [] };
                const page = { items: [{ kind: "partner", id, status: "OPEN", item }], total: 1, as_of: null };
                return Promise.resolve(new Response(JSON.stringify(page),
                  { status: 200, headers: { "Content-Type": "application/json" } }));
              }
              return real(url, init);
            };
            document.querySelector("#panel-partners .toolbar .btn").click();
            return true;"##,
            json!([hostile]),
        )
        .await;
    let row = browser
        .wait(
            "the hostile row",
            "[...document.querySelectorAll('#partners-rows tr')].length === 1 && document.querySelector('#partners-rows tr')?.dataset.id === arguments[0] && '#partners-rows tr'",
            json!(hostile),
        )
        .await;
    let row = row.as_str().unwrap().to_owned();
    let shown = browser
        .js(
            "return [document.querySelector('#partners-rows a.mono').title, document.querySelectorAll('#partners-rows img').length, document.querySelector('#partners-rows a.mono').getAttribute('href')]",
            json!([]),
        )
        .await;
    assert_eq!(
        shown,
        json!([
            hostile,
            0,
            "#partners/..%2Freports%2Fdaily%2Frun%3Fx%3D1%23"
        ])
    );
    browser.click(&format!("{row} .btn.accept")).await;
    browser.click(&format!("{row} .btn.accept.confirm")).await;
    let refused = browser
        .wait(
            "the answer to be refused",
            "document.querySelector(arguments[0] + ' .result.bad')?.textContent",
            json!(row),
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("not a request id"),
        "{refused}"
    );
    let calls = browser
        .js(
            "window.fetch = window.__realFetch; return window.__calls.filter(([m]) => m === 'POST')",
            json!([]),
        )
        .await;
    assert_eq!(
        calls,
        json!([[
            "POST",
            "/api/partners/..%2Freports%2Fdaily%2Frun%3Fx%3D1%23/answer"
        ]])
    );
    assert_eq!(
        browser
            .js("return window.__injected ?? null", json!([]))
            .await,
        Value::Null
    );
    browser.screenshot("5b-hostile-id").await;

    // A viewer sees the requests but no answer buttons.
    browser.click("#sign-out").await;
    browser.sign_in(&server.viewer).await;
    let role = browser
        .js(
            "return document.getElementById('user-role').textContent",
            json!([]),
        )
        .await;
    assert_eq!(role, "viewer");
    let buttons = browser
        .js(
            "return document.querySelectorAll('.btn.accept, .btn.reject').length",
            json!([]),
        )
        .await;
    assert_eq!(buttons, 0);
    let waiting = browser
        .js(
            "return document.querySelector('#partners-rows td.actions')?.textContent",
            json!([]),
        )
        .await;
    assert_eq!(waiting, "Waiting for an operator");
    browser.screenshot("6-viewer").await;

    browser.quit().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_edits_a_unit_shows_its_delivery_the_outbox_and_a_day_report_run() {
    let mut server = start(None).await;
    for (code, status) in [("PT10", "RUNNING"), ("PT20", "IDLE")] {
        server.create_unit(code, status).await;
    }
    // A past day, before the daily job's catch-up window: only an operator's run
    // sends it.
    let day = "2024-03-14";
    server
        .api(
            reqwest::Method::POST,
            "/api/DayReport",
            Some(json!({"unit": "PT10", "date": day, "shifts": {"A": {
                "planned_busy_time_s": 28800.0, "actual_production_time_s": 25200.0,
                "planned_unit_time_s": 30.0, "produced_quantity": 800.0,
                "good_quantity": 780.0, "failure_count": 2, "repair_time_s": 1200.0,
            }}})),
        )
        .await;

    let browser = Browser::start().await;
    browser.goto(&server.base).await;
    browser.sign_in(&server.operator).await;
    browser.click("#tab-units").await;
    let row = "#units-rows tr[data-unit=\"PT10\"]";
    // The unit's creation reaches the chain (the simulator) through the outbox.
    let created = browser
        .wait(
            "PT10's creation to be delivered",
            "document.querySelector(arguments[0] + ' [data-state=\"delivered\"]')?.dataset.outboxId",
            json!(row),
        )
        .await;
    let created: i64 = created.as_str().unwrap().parse().unwrap();
    browser
        .js(
            "window.__notReloaded = true; \
             document.querySelector('#units-rows tr[data-unit=\"PT20\"]').__kept = true; return true",
            json!([]),
        )
        .await;

    // Edit: status STOPPED, no process.
    browser.click(&format!("{row} td.actions button")).await;
    browser
        .wait(
            "the edit fields",
            "document.querySelector(arguments[0] + ' td.unit-status input')",
            json!(row),
        )
        .await;
    browser
        .type_into(&format!("{row} td.unit-status input"), "STOPPED")
        .await;
    browser
        .type_into(&format!("{row} td.unit-process input"), "")
        .await;
    browser.screenshot("7-unit-edit").await;
    browser.click(&format!("{row} .btn.save")).await;
    let delivered = browser
        .wait(
            "the change to be delivered",
            "(() => { const r = document.querySelector(arguments[0]); \
               const b = r?.querySelector('td.delivery [data-state=\"delivered\"]'); \
               return r?.querySelector('td.unit-status')?.textContent === 'STOPPED' && b ? b.dataset.outboxId : null; })()",
            json!(row),
        )
        .await;
    let delivered: i64 = delivered.as_str().unwrap().parse().unwrap();
    assert!(
        delivered > created,
        "the delivery shown is the edit's ({delivered} > {created})"
    );
    let shown = browser
        .js(
            "const r = document.querySelector(arguments[0]); \
             return [r.querySelector('td.unit-process').textContent, r.querySelector('td.delivery').textContent, \
                     window.__notReloaded === true, \
                     document.querySelector('#units-rows tr[data-unit=\"PT20\"]').__kept === true]",
            json!([row]),
        )
        .await;
    assert_eq!(
        shown,
        json!(["—", "DELIVEREDThe chain has the latest change.", true, true]),
        "process cleared, delivered, no reload, the other row untouched"
    );
    let stored = server
        .api(reqwest::Method::GET, "/api/ProductionUnit/PT10", None)
        .await;
    assert_eq!(stored["Status"], "STOPPED");
    assert_eq!(stored["ProcessName"], Value::Null);
    assert_eq!(stored["chain"]["state"], "delivered");
    assert_eq!(stored["chain"]["outbox_id"], delivered);
    browser.screenshot("8-unit-delivered").await;

    // The outbox lists the edit as delivered, with the chain's answer.
    browser.click("#tab-outbox").await;
    let outbox_row = format!("#outbox-rows tr[data-row=\"{delivered}\"]");
    let text = browser
        .wait(
            "the edit in the outbox",
            "document.querySelector(arguments[0] + '[data-status=\"done\"]')?.textContent",
            json!(outbox_row),
        )
        .await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("Unit PT10: status STOPPED, process none"),
        "{text}"
    );

    // The day report: stored, not sent; an operator runs the day; it is delivered.
    browser.set_value("#report-date", day).await;
    let report = format!("#reports-rows tr[data-report=\"PT10:{day}\"]");
    browser
        .wait(
            "the stored day report",
            "document.querySelector(arguments[0] + ' .badge.none')",
            json!(report),
        )
        .await;
    browser.screenshot("9-outbox").await;
    browser.click("#report-run").await;
    let result = browser
        .wait(
            "the run's result",
            "document.getElementById('report-result').className === 'result ok' && document.getElementById('report-result').textContent",
            json!(null),
        )
        .await;
    assert_eq!(
        result,
        format!("Day {day}: Queued for the chain: PT10. No report stored: PT20.")
    );
    browser
        .wait(
            "the day report to be delivered",
            "document.querySelector(arguments[0] + ' [data-state=\"delivered\"]')",
            json!(report),
        )
        .await;
    browser
        .wait(
            "the day report in the outbox",
            "[...document.querySelectorAll('#outbox-rows tr[data-status=\"done\"]')].some((r) => r.textContent.includes(arguments[0]))",
            json!(format!("Day report of PT10 for {day}")),
        )
        .await;
    browser.screenshot("10-day-report").await;

    // Tablet width: the units table keeps its Edit buttons on screen.
    browser.click("#tab-units").await;
    browser.window(820, 1180).await;
    browser
        .wait(
            "the Edit button at tablet width",
            "(() => { const b = document.querySelector('#units-rows tr[data-unit=\"PT20\"] td.actions button'); \
               return b && b.getBoundingClientRect().right <= window.innerWidth; })()",
            json!(null),
        )
        .await;
    browser.screenshot("11-units-tablet").await;
    browser.window(1280, 800).await;

    // The server stops: the page says so and keeps trying.
    let _ = server.child.kill();
    let _ = server.child.wait();
    browser
        .wait(
            "the connection-lost badge",
            "document.getElementById('live').classList.contains('lost') && document.getElementById('live').textContent === 'Connection lost, retrying…'",
            json!(null),
        )
        .await;
    browser.screenshot("12-connection-lost").await;

    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_shows_an_open_request_past_the_first_chain_pages_with_true_counts()
{
    let server = start_with(None, 30).await;
    let mut events = server.events().await;
    wait_watching(&mut events).await;
    // The chain lists oldest first: this request comes after 30 older ones.
    let agent = server.erp_partner().await.to_string();
    next_event(&mut events, "request", |d| {
        d["item"]["issuing_agent"] == agent.as_str()
    })
    .await;
    let open = server
        .sim
        .ledger_snapshot()
        .partners
        .iter()
        .filter(|p| p.status == ChainStatus::Open)
        .count();
    assert!(open > 10, "more open requests than one chain page of 10");

    let browser = Browser::start().await;
    browser.goto(&server.base).await;
    browser.sign_in(&server.viewer).await;
    browser
        .wait(
            "the newest open request, first",
            "document.querySelector('#partners-rows tr[data-status=\"OPEN\"] span[title=\"' + arguments[0] + '\"]')",
            json!(agent),
        )
        .await;
    let rows = browser
        .js(
            "return document.querySelectorAll('#partners-rows tr[data-status=\"OPEN\"]').length",
            json!([]),
        )
        .await;
    assert_eq!(
        rows,
        json!(open),
        "every open partner request, across chain pages"
    );
    browser
        .wait(
            "the true count in the tab badge",
            "document.getElementById('count-partners').textContent === arguments[0]",
            json!(open.to_string()),
        )
        .await;
    let range = browser
        .js(
            "return document.getElementById('partners-range').textContent",
            json!([]),
        )
        .await;
    assert_eq!(range, json!(format!("1–{open} of {open}")));
    browser
        .wait(
            "the mirror's freshness",
            "/^as of \\d+ (s|min) ago$/.test(document.getElementById('partners-asof').textContent)",
            json!(null),
        )
        .await;
    browser.screenshot("7-inbox").await;
    browser.quit().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_shows_an_unconfirmed_accept_turn_accepted_by_itself() {
    // Every answer is applied 6 s after it arrives, and answered then: the server's
    // call ends after 2 s with the decision `unknown`.
    let server = start_chain(None, 6, Some(Duration::from_secs(6))).await;
    let browser = Browser::start().await;
    browser.goto(&server.base).await;
    browser.sign_in(&server.operator).await;
    let (id, row) = browser.open_partner_request().await;
    browser.ask_to_accept(&row).await;
    browser.click(&format!("{row} .btn.accept.confirm")).await;
    // "Sending the answer to the chain…" first, then, after the server's 2 s timeout:
    browser
        .wait(
            "the unconfirmed answer",
            "document.querySelector(arguments[0] + ' .result.busy')?.textContent === 'Sent — waiting for the chain to confirm'",
            json!(row),
        )
        .await;
    let status = browser
        .js(
            "return document.querySelector(arguments[0]).dataset.status",
            json!([row]),
        )
        .await;
    assert_eq!(
        status, "OPEN",
        "not shown as accepted before the chain says so"
    );
    browser.screenshot("13-unconfirmed").await;

    // Nobody touches the page: the chain commits, and the row turns by itself.
    let confirmed = browser
        .wait(
            "the row to turn ACCEPTED by itself",
            "document.querySelector(arguments[0])?.dataset.status === 'ACCEPTED' && document.querySelector(arguments[0] + ' .result.ok')?.textContent",
            json!(row),
        )
        .await;
    assert_eq!(confirmed, "The chain confirmed the accept.");
    let badge = browser
        .js(
            "return document.querySelector(arguments[0] + ' td.status').textContent",
            json!([row]),
        )
        .await;
    assert_eq!(badge, "ACCEPTED");
    let decisions = server
        .api(reqwest::Method::GET, "/api/decisions?limit=10", None)
        .await;
    let mine: Vec<&Value> = decisions
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["request_id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{decisions}");
    assert_eq!(mine[0]["outcome"], "accepted");
    browser.screenshot("14-confirmed").await;
    browser.quit().await;
    server.stop();
}

/// A failed outbox row: unit `code`'s newest delivered message enqueued once more
/// under a new key, claimed and refused in one transaction, so that the server's relay
/// never sees it pending. Its topic is the simulator's: a retry delivers it.
fn failed_copy_of_newest(url: &str, code: &str) -> i64 {
    use diesel::Connection;
    use mes_core::db::outbox;
    let mut conn = db::connect(url).unwrap();
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        let ordering = format!("unit:{code}");
        let newest = outbox::newest_for_ordering_key(conn, &ordering)?.unwrap();
        assert_eq!(newest.status, outbox::DONE, "{newest:?}");
        let key = format!("{}:again", newest.dedup_key);
        let row = outbox::NewOutboxRow {
            topic: &newest.topic,
            dedup_key: &key,
            ordering_key: &newest.ordering_key,
            payload: &newest.payload,
            traceparent: None,
        };
        assert!(outbox::enqueue(conn, &row)?);
        let claimed = outbox::claim_next_of_key(
            conn,
            db::now(),
            &newest.ordering_key,
            chrono::Duration::seconds(30),
            &[],
        )?
        .unwrap();
        assert_eq!(claimed.dedup_key, key);
        Ok(outbox::mark_failed(conn, claimed.id, &format!("record {code} is locked"))?.id)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_retries_a_failed_outbox_row_until_delivered_and_discards_another()
{
    let server = start(None).await;
    server.create_unit("PT30", "RUNNING").await;
    server
        .api(
            reqwest::Method::PATCH,
            "/api/ProductionUnit/PT30",
            Some(json!({"Status": "STOPPED"})),
        )
        .await;
    // The change reaches the chain (the simulator): the unit's messages are all done.
    let until = Instant::now() + DEADLINE;
    loop {
        let unit = server
            .api(reqwest::Method::GET, "/api/ProductionUnit/PT30", None)
            .await;
        let pending = server
            .api(reqwest::Method::GET, "/api/outbox?status=pending", None)
            .await;
        if unit["chain"]["state"] == "delivered" && pending.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "PT30's change was not delivered: {unit}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    let url = server._db.url().to_owned();
    let failed = tokio::task::spawn_blocking(move || failed_copy_of_newest(&url, "PT30"))
        .await
        .unwrap();

    let browser = Browser::start().await;
    browser.goto(&server.base).await;
    browser.sign_in(&server.operator).await;
    browser.click("#tab-outbox").await;
    let row = format!("#outbox-rows tr[data-row=\"{failed}\"]");
    let refused = browser
        .wait(
            "the failed row",
            "document.querySelector(arguments[0] + '[data-status=\"failed\"] .btn[data-action=\"retry\"]') && document.querySelector(arguments[0]).textContent",
            json!(row),
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("Refused for good: Record PT30 is locked."),
        "{refused}"
    );
    browser.screenshot("15-outbox-failed").await;

    // Retry, confirm: the relay sends it again and the chain takes it.
    // Events redraw the list: each button is clicked in the step that finds it.
    browser
        .wait(
            "the Retry button",
            "(() => { const b = document.querySelector(arguments[0]); b?.click(); return !!b; })()",
            json!(format!("{row} .btn[data-action=\"retry\"]")),
        )
        .await;
    browser
        .wait(
            "the retry's confirmation",
            "document.querySelector(arguments[0] + ' .question')?.textContent",
            json!(row),
        )
        .await;
    browser
        .wait(
            "the retry's Yes",
            "(() => { const b = document.querySelector(arguments[0]); b?.click(); return !!b; })()",
            json!(format!("{row} .btn.accept.confirm")),
        )
        .await;
    let done = browser
        .wait(
            "the retried row to be delivered",
            "document.querySelector(arguments[0] + '[data-status=\"done\"]')?.textContent",
            json!(row),
        )
        .await;
    assert!(
        done.as_str().unwrap().contains("Queued again"),
        "the retry's answer is in the row: {done}"
    );
    let buttons = browser
        .js(
            "return document.querySelectorAll(arguments[0] + ' button').length",
            json!([row]),
        )
        .await;
    assert_eq!(buttons, 0, "a delivered row has no Retry or Discard");
    browser.screenshot("16-outbox-retried").await;
    let stored = server
        .api(reqwest::Method::GET, "/api/outbox?status=done", None)
        .await;
    let mine = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == failed)
        .unwrap_or_else(|| panic!("row {failed} is not done: {stored}"));
    assert!(mine["retried_at"].is_string(), "{mine}");

    // Another failed row, arriving by the event stream: discarded with a reason.
    let url = server._db.url().to_owned();
    let scrapped = tokio::task::spawn_blocking(move || failed_copy_of_newest(&url, "PT30"))
        .await
        .unwrap();
    let row2 = format!("#outbox-rows tr[data-row=\"{scrapped}\"]");
    browser
        .wait(
            "the Discard button",
            "(() => { const b = document.querySelector(arguments[0]); b?.click(); return !!b; })()",
            json!(format!("{row2} .btn[data-action=\"discard\"]")),
        )
        .await;
    browser
        .wait(
            "the reason, then Yes",
            "(() => { const i = document.querySelector(arguments[0] + ' input.reason'); \
               const b = document.querySelector(arguments[0] + ' .btn.reject.confirm'); \
               if (!i || !b) return false; i.value = 'unit scrapped'; b.click(); return true; })()",
            json!(row2),
        )
        .await;
    let discarded = browser
        .wait(
            "the row to be discarded",
            "document.querySelector(arguments[0] + '[data-status=\"discarded\"]')?.textContent",
            json!(row2),
        )
        .await;
    assert!(
        discarded
            .as_str()
            .unwrap()
            .contains("Discarded by olga: Unit scrapped."),
        "{discarded}"
    );
    browser.screenshot("17-outbox-discarded").await;

    // A viewer sees the outbox without its buttons (signing in shows the tab shown
    // last, and `sign_in` waits for the partner requests).
    browser.click("#tab-partners").await;
    browser.click("#sign-out").await;
    browser.sign_in(&server.viewer).await;
    browser.click("#tab-outbox").await;
    browser
        .wait(
            "the outbox for a viewer",
            "document.querySelector(arguments[0])",
            json!(row),
        )
        .await;
    let seen = browser
        .js(
            "return [document.querySelectorAll('#outbox-rows button').length, document.querySelectorAll('#outbox-rows td.actions').length]",
            json!([]),
        )
        .await;
    assert_eq!(seen, json!([0, 0]), "no action for a viewer");
    browser.quit().await;
    server.stop();
}

/// One shift of a seeded day: 480 planned minutes, `downtime` of them lost, `produced`
/// parts at a 26 s ideal cycle, 10 of them bad.
fn seeded_shift(downtime_min: f64, produced: f64) -> Value {
    json!({
        "planned_busy_time_s": 480.0 * 60.0,
        "actual_production_time_s": (480.0 - downtime_min) * 60.0,
        "planned_unit_time_s": 26.0,
        "produced_quantity": produced,
        "good_quantity": produced - 10.0,
        "failure_count": 1,
        "repair_time_s": 900.0,
    })
}

/// The next `day_report` or `target` event, whichever comes first.
async fn next_unit_event(rx: &mut mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    let until = Instant::now() + DEADLINE;
    loop {
        let (name, data) = timeout(until.saturating_duration_since(Instant::now()), rx.recv())
            .await
            .expect("no day_report or target event in time")
            .expect("the event stream ended");
        if name == "day_report" || name == "target" {
            return (name, data);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_day_reports_and_changed_targets_are_announced_and_refused_ones_are_not() {
    let server = start(None).await;
    server.create_unit("PT20", "RUNNING").await;
    let mut events = server.events().await;
    next_event(&mut events, "hello", |_| true).await;
    let date = chrono::Local::now().date_naive().to_string();

    // Refused (good > produced, then an unknown unit): nothing is announced, so the
    // first unit event is the target's below.
    let mut bad = seeded_shift(40.0, 100.0);
    bad["good_quantity"] = json!(120.0);
    for (unit, shift) in [("PT20", bad), ("NOPE", seeded_shift(40.0, 800.0))] {
        let refused = server
            .http
            .post(format!("{}/api/DayReport", server.base))
            .bearer_auth(&server.operator)
            .json(&json!({"unit": unit, "date": date, "shifts": {"A": shift}}))
            .send()
            .await
            .unwrap();
        assert!(
            refused.status().is_client_error(),
            "{unit}: {}",
            refused.status()
        );
    }
    server
        .api(
            reqwest::Method::PUT,
            "/api/ProductionUnit/PT20/target",
            Some(json!({"oee": 0.6, "quality": 0.99})),
        )
        .await;
    let (name, target) = next_unit_event(&mut events).await;
    assert_eq!(name, "target", "{target}");
    assert_eq!(target["unit"], "PT20");
    assert_eq!(target["target"]["oee"], 0.6);
    assert_eq!(target["target"]["quality"], 0.99);

    server
        .api(
            reqwest::Method::POST,
            "/api/DayReport",
            Some(json!({"unit": "PT20", "date": date, "shifts": {"B": seeded_shift(40.0, 800.0)}})),
        )
        .await;
    let (name, stored) = next_unit_event(&mut events).await;
    assert_eq!(
        (name.as_str(), stored),
        (
            "day_report",
            json!({"unit": "PT20", "date": date, "shifts": ["B", "DAY"]})
        )
    );
    server.stop();
}

/// Days back from today (of the 30 seeded) that went badly: OEE about 0.49.
const BAD_DAYS: [u64; 3] = [2, 9, 17];

/// The performance tab against a unit with 30 days of reports and an OEE target of
/// 65 %, the day-report form (a refused entry, then a valid one), a target change, the
/// production orders tab with an order accepted here, and every CSV download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_charts_oee_against_the_target_takes_a_day_report_lists_production_orders_and_downloads_csv()
 {
    let server = start(None).await;
    server.create_unit("PT10", "RUNNING").await;
    server
        .api(
            reqwest::Method::PUT,
            "/api/ProductionUnit/PT10/target",
            Some(json!({"oee": 0.65})),
        )
        .await;
    // 30 days before today: OEE 0.68–0.71 (over 65 %, under 75 %), three bad days.
    let today = chrono::Local::now().date_naive();
    for back in 1..=30u64 {
        let date = today - chrono::Days::new(back);
        let bad = BAD_DAYS.contains(&back);
        let (downtime, produced) = if bad {
            (150.0, 550.0)
        } else {
            (40.0, 800.0 - (back % 5) as f64 * 10.0)
        };
        let shifts: serde_json::Map<String, Value> = ["A", "B", "C"]
            .into_iter()
            .map(|s| (s.to_owned(), seeded_shift(downtime, produced)))
            .collect();
        server
            .api(
                reqwest::Method::POST,
                "/api/DayReport",
                Some(json!({"unit": "PT10", "date": date.to_string(), "shifts": shifts})),
            )
            .await;
    }
    // An order accepted in this test becomes a production order.
    let open = loop {
        let page = server
            .api(
                reqwest::Method::GET,
                "/api/requests?kind=order&status=OPEN&limit=1",
                None,
            )
            .await;
        if let Some(id) = page["items"][0]["item"]["abs_action_id"].as_str() {
            break id.to_owned();
        }
        sleep(Duration::from_millis(200)).await;
    };
    let answer = server
        .api(
            reqwest::Method::POST,
            &format!("/api/orders/{open}/answer"),
            Some(json!({"response": "accept"})),
        )
        .await;
    assert_eq!(
        answer["production_order"]["accepted_by"], "olga",
        "{answer}"
    );

    let browser = Browser::start().await;
    browser.window(1400, 1000).await;
    browser.goto(&server.base).await;
    browser.sign_in(&server.operator).await;
    browser.click("#tab-performance").await;

    // The chart: 30 points, the target line at 65 %, the three bad days marked.
    let chart = "svg.chart[data-unit=\"PT10\"]";
    let points = browser
        .wait(
            "PT10's chart",
            "document.querySelector(arguments[0])?.dataset.points",
            json!(chart),
        )
        .await;
    assert_eq!(points, "30");
    let drawn = browser
        .js(
            "const c = document.querySelector(arguments[0]); \
             return [c.querySelectorAll('circle.point').length, c.querySelectorAll('circle.point.under').length, \
                     c.querySelector('g.target')?.dataset.value, c.querySelector('g.target line')?.getAttribute('y1'), \
                     [...c.querySelectorAll('g.line')].map(g => g.dataset.line + ':' + g.querySelectorAll('polyline').length)]",
            json!([chart]),
        )
        .await;
    assert_eq!(drawn[0], 30, "{drawn}");
    assert_eq!(drawn[1], BAD_DAYS.len(), "the bad days are marked: {drawn}");
    assert_eq!(drawn[2], "0.65", "{drawn}");
    let line_at_65: f64 = drawn[3].as_str().unwrap().parse().unwrap();
    assert_eq!(
        drawn[4],
        json!(["availability:1", "performance:1", "quality:1", "oee:1"]),
        "four unbroken lines"
    );
    let under_before: u32 = browser
        .js(
            "return document.querySelector('#perf-summary tr[data-unit=\"PT10\"] [data-summary=\"under\"]').textContent",
            json!([]),
        )
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    browser.screenshot("20-performance").await;

    // Hovering a bad day shows its values, as the series has them.
    let bad_day = (today - chrono::Days::new(BAD_DAYS[0])).to_string();
    let series = server
        .api(
            reqwest::Method::GET,
            &format!(
                "/api/DayReport/series?unit=PT10&from={}&to={today}",
                today - chrono::Days::new(30)
            ),
            None,
        )
        .await;
    let point = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["date"] == bad_day.as_str())
        .unwrap()
        .clone();
    browser
        .hover(&format!("{chart} rect.hit[data-date=\"{bad_day}\"]"))
        .await;
    let tip = browser
        .wait(
            "the day's values",
            "(() => { const t = document.querySelector('.unit-chart[data-unit=\"PT10\"] .chart-tip'); \
               return t && !t.hidden ? [t.querySelector('[data-value=\"oee\"]').textContent, \
                 t.querySelector('[data-value=\"availability\"]').textContent, t.textContent] : null; })()",
            json!(null),
        )
        .await;
    let percent = |x: &Value| format!("{:.1} %", x.as_f64().unwrap() * 100.0);
    assert_eq!(tip[0], percent(&point["oee"]), "{tip}");
    assert_eq!(tip[1], percent(&point["availability"]), "{tip}");
    assert!(
        tip[2].as_str().unwrap().contains("Under the OEE target"),
        "{tip}"
    );
    browser.screenshot("21-performance-hover").await;

    // Clicking it opens that day report; once sent to the chain, it is read-only.
    let run = server
        .api(
            reqwest::Method::POST,
            &format!("/api/reports/daily/run?date={bad_day}"),
            None,
        )
        .await;
    // The server's start-up catch-up may have sent it already, as the seeding stored it.
    let sent = [&run["enqueued"], &run["already_enqueued"]];
    assert!(sent.iter().any(|units| **units == json!(["PT10"])), "{run}");
    browser
        .click(&format!("{chart} rect.hit[data-date=\"{bad_day}\"]"))
        .await;
    let shown = browser
        .wait(
            "the day report",
            "document.querySelector(`#detail[open] table[aria-label=\"Day report of PT10 for ${arguments[0]}\"] tr[data-shift=\"DAY\"] [data-kpi=\"oee\"]`)?.textContent",
            json!(bad_day),
        )
        .await;
    assert_eq!(shown, percent(&point["oee"]));
    let sent = browser
        .js(
            "return [document.getElementById('dr-sent')?.textContent, document.querySelectorAll('#detail [data-enter]').length]",
            json!([]),
        )
        .await;
    assert!(
        sent[0].as_str().is_some_and(
            |t| t.contains("sent to the chain") && t.contains("can no longer be changed")
        ),
        "{sent}"
    );
    assert_eq!(sent[1], 0, "no way to change a day sent: {sent}");
    browser.screenshot("22-day-report").await;
    browser.click("#detail-close").await;

    // The form refuses good parts above parts produced, with a sentence, and stores
    // nothing.
    browser.click("#perf-enter").await;
    let ready = "document.querySelector('#dr-form')?.dataset.state === 'ready'";
    browser.wait("the form", ready, json!(null)).await;
    // The day sent is read-only in the form too, and says why.
    browser.set_value("#dr-date", &bad_day).await;
    browser
        .wait(
            "the form of a day sent",
            "document.querySelector('#dr-form')?.dataset.state === 'sent'",
            json!(null),
        )
        .await;
    let locked = browser
        .js(
            "return [[...document.querySelectorAll('#dr-form .fields-grid input')].every(i => i.disabled), \
                     document.getElementById('dr-save').hidden, document.getElementById('dr-planned').value, \
                     document.getElementById('dr-sent')?.textContent ?? '']",
            json!([]),
        )
        .await;
    assert_eq!(locked[0], true, "{locked}");
    assert_eq!(locked[1], true, "{locked}");
    assert_eq!(locked[2], "480", "the stored shift is shown: {locked}");
    assert!(
        locked[3].as_str().unwrap().contains("sent to the chain"),
        "{locked}"
    );
    browser.screenshot("23a-day-report-sent").await;
    browser.set_value("#dr-date", &today.to_string()).await;
    browser.wait("the form", ready, json!(null)).await;
    for (field, value) in [
        ("planned", "480"),
        ("downtime", "40"),
        ("failures", "1"),
        ("repair", "15"),
        ("produced", "100"),
        ("good", "120"),
        ("cycle", "26"),
    ] {
        browser.type_into(&format!("#dr-{field}"), value).await;
    }
    browser.click("#dr-save").await;
    let sentence = browser
        .wait(
            "the sentence next to Good",
            "document.getElementById('dr-good-error')?.textContent",
            json!(null),
        )
        .await;
    assert_eq!(
        sentence,
        "Good parts cannot be more than the parts produced (100)."
    );
    let result = browser
        .js(
            "return [document.getElementById('dr-result').textContent, \
                     document.getElementById('dr-good').getAttribute('aria-invalid'), \
                     document.activeElement.id, document.getElementById('detail').textContent]",
            json!([]),
        )
        .await;
    assert_eq!(
        result[0], "One value needs a look: nothing was saved.",
        "{result}"
    );
    assert_eq!(result[1], "true");
    assert_eq!(result[2], "dr-good", "the field in question has the focus");
    assert!(
        !result[3].as_str().unwrap().contains('{'),
        "no raw JSON: {result}"
    );
    browser.screenshot("23-day-report-refused").await;
    let stored = server
        .api(
            reqwest::Method::GET,
            &format!("/api/DayReport?date={today}&unit=PT10"),
            None,
        )
        .await;
    assert_eq!(stored, json!([]), "nothing was saved");

    // A valid shift: the indicators are shown before saving, and the day joins the
    // chart.
    browser.type_into("#dr-produced", "800").await;
    browser.type_into("#dr-good", "790").await;
    let oee = browser
        .wait(
            "the computed OEE",
            "(() => { const t = document.querySelector('#dr-kpis [data-kpi=\"oee\"]')?.textContent; return t && t !== '—' ? t : null; })()",
            json!(null),
        )
        .await;
    // A = 440/480, P = 26 s × 800 / 440 min, Q = 790/800.
    let expected = (440.0 / 480.0) * (26.0 * 800.0 / (440.0 * 60.0)) * (790.0 / 800.0);
    assert_eq!(oee, format!("{:.1} %", expected * 100.0));
    let kpis = browser
        .js(
            "return [...document.querySelectorAll('#dr-kpis [data-kpi]')].map(d => d.dataset.kpi + '=' + d.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(
        kpis,
        json!([
            "availability=91.7 %",
            "performance=78.8 %",
            "quality=98.8 %",
            format!("oee={:.1} %", expected * 100.0),
            "mtbf=3 h 40 min",
            "mttr=15 min",
            "production_time=7 h 20 min"
        ]),
    );
    browser.screenshot("24-day-report-form").await;
    browser.click("#dr-save").await;
    browser
        .wait(
            "the saved answer",
            "document.getElementById('dr-result')?.className === 'result ok'",
            json!(null),
        )
        .await;
    browser.click("#detail-close").await;
    browser
        .wait(
            "today on the chart",
            &format!(
                "document.querySelector(arguments[0])?.dataset.points === '31' && \
                 document.querySelector(arguments[0] + ' circle.point[data-date=\"{today}\"]')"
            ),
            json!(chart),
        )
        .await;
    let stored = server
        .api(
            reqwest::Method::GET,
            &format!("/api/DayReport?date={today}&unit=PT10"),
            None,
        )
        .await;
    let day_oee = stored[0]["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shift"] == "DAY")
        .map(|s| s["kpis"]["oee"].as_f64().unwrap())
        .unwrap();
    assert!((day_oee - expected).abs() < 1e-9, "{stored}");

    // A target of 75 %: the line moves up, every day is under it, and so is every
    // reported day of this month (today's at least).
    browser
        .click("#perf-summary tr[data-unit=\"PT10\"] td.target-cell button")
        .await;
    browser
        .type_into(
            "#perf-summary tr[data-unit=\"PT10\"] input[data-target=\"oee\"]",
            "75",
        )
        .await;
    browser
        .type_into(
            "#perf-summary tr[data-unit=\"PT10\"] input[data-target=\"availability\"]",
            "90",
        )
        .await;
    browser
        .click("#perf-summary tr[data-unit=\"PT10\"] .save-target")
        .await;
    browser
        .wait(
            "the target line at 75 %",
            "document.querySelector(arguments[0] + ' g.target')?.dataset.value === '0.75'",
            json!(chart),
        )
        .await;
    let moved = browser
        .js(
            "const c = document.querySelector(arguments[0]); \
             return [Number(c.querySelector('g.target line').getAttribute('y1')), \
                     c.querySelectorAll('circle.point.under').length, \
                     document.querySelector('#perf-summary tr[data-unit=\"PT10\"] [data-summary=\"under\"]').textContent]",
            json!([chart]),
        )
        .await;
    assert!(
        moved[0].as_f64().unwrap() < line_at_65,
        "the line moved up: {moved} from {line_at_65}"
    );
    assert_eq!(moved[1], 31, "every day is under 75 %: {moved}");
    let availability = browser
        .js(
            "return document.querySelector(arguments[0] + ' line.target-aux[data-target=\"availability\"]')?.dataset.value",
            json!([chart]),
        )
        .await;
    assert_eq!(availability, "0.9", "the availability target is drawn too");
    let under_after: u32 = moved[2].as_str().unwrap().parse().unwrap();
    let this_month = u32::try_from(
        (0..=30u64)
            .map(|back| today - chrono::Days::new(back))
            .filter(|d| chrono::Datelike::month(d) == chrono::Datelike::month(&today))
            .count(),
    )
    .unwrap();
    assert_eq!(under_after, this_month, "{moved}");
    assert!(under_after > under_before, "{under_after} > {under_before}");
    browser.screenshot("25-performance-target-75").await;

    // Live, without a Refresh: a feed's day report for a unit made after the tab
    // loaded, then a target changed elsewhere (another operator, a script).
    server.create_unit("PT11", "RUNNING").await;
    server
        .api(
            reqwest::Method::POST,
            "/api/DayReport",
            Some(json!({"unit": "PT11", "date": today.to_string(), "shifts": {"A": seeded_shift(40.0, 800.0)}})),
        )
        .await;
    browser
        .wait(
            "PT11's chart, drawn live",
            "document.querySelector('svg.chart[data-unit=\"PT11\"]')?.dataset.points === '1'",
            json!(null),
        )
        .await;
    server
        .api(
            reqwest::Method::PUT,
            "/api/ProductionUnit/PT10/target",
            Some(json!({"oee": 0.7})),
        )
        .await;
    browser
        .wait(
            "the target line at 70 %, drawn live",
            "document.querySelector(arguments[0] + ' g.target')?.dataset.value === '0.7' && \
             !document.querySelector(arguments[0] + ' line.target-aux')",
            json!(chart),
        )
        .await;
    browser.screenshot("25a-performance-live").await;

    // The units tab shows the new target.
    browser.click("#tab-units").await;
    browser
        .wait(
            "PT10's target",
            "document.querySelector('#units-rows tr[data-unit=\"PT10\"] td.unit-target')?.dataset.oee === '0.7'",
            json!(null),
        )
        .await;

    // The production orders tab: the order accepted above, by olga, with its link.
    browser.click("#tab-production").await;
    let row = format!("#production-rows tr[data-order=\"{open}\"]");
    let listed = browser
        .wait(
            "the accepted order",
            "(() => { const r = document.querySelector(arguments[0]); return r ? \
               [r.querySelector('td.accepted').textContent, r.querySelector('td.issuer .mono').title, \
                r.querySelector('dl.meta')?.textContent ?? ''] : null; })()",
            json!(row),
        )
        .await;
    assert!(listed[0].as_str().unwrap().contains("by olga"), "{listed}");
    assert_eq!(
        listed[1], answer["production_order"]["issuing_agent"],
        "the full key on hover"
    );
    browser.screenshot("26-production-orders").await;
    browser.click(&format!("{row} a.chain-link")).await;
    browser
        .wait(
            "the chain request",
            "document.querySelector('#detail[open]') && document.getElementById('detail-body').textContent.includes(arguments[0])",
            json!(open),
        )
        .await;
    browser.click("#detail-close").await;

    // Each CSV downloads, with the rows shown.
    browser.click("#production-csv").await;
    let orders = browser.downloaded("production-orders.csv").await;
    assert!(orders.starts_with("id,chain_order_id,"), "{orders}");
    assert!(
        orders.contains(&open) && orders.contains("olga"),
        "{orders}"
    );
    browser.click("#tab-performance").await;
    browser
        .wait(
            "the chart",
            "document.querySelector(arguments[0])",
            json!(chart),
        )
        .await;
    browser.click("#perf-csv").await;
    let reports = browser
        .downloaded(&format!(
            "day-reports-{}-{today}.csv",
            today - chrono::Days::new(30)
        ))
        .await;
    assert!(reports.contains(&format!("PT10,{today}")), "{reports}");
    assert!(reports.contains(&format!("PT10,{bad_day}")), "{reports}");
    browser.click("#tab-decisions").await;
    browser.click("#decisions-csv").await;
    let decisions = browser.downloaded("decisions.csv").await;
    assert!(decisions.contains(&open), "{decisions}");
    browser.click("#tab-outbox").await;
    browser.click("#outbox-csv").await;
    let outbox = browser.downloaded("outbox.csv").await;
    assert!(outbox.starts_with("id,"), "{outbox}");
    assert!(outbox.contains("unit:PT10"), "{outbox}");
    browser.set_value("#report-date", &bad_day).await;
    browser.click("#reports-csv").await;
    let day = browser
        .downloaded(&format!("day-reports-{bad_day}-{bad_day}.csv"))
        .await;
    assert!(day.contains(&format!("PT10,{bad_day}")), "{day}");
    browser.screenshot("27-downloads").await;

    // A viewer sees the performance, and no way to enter a report or change a target.
    browser.click("#tab-partners").await;
    browser.click("#sign-out").await;
    browser.sign_in(&server.viewer).await;
    browser.click("#tab-performance").await;
    browser
        .wait(
            "the chart",
            "document.querySelector(arguments[0])",
            json!(chart),
        )
        .await;
    let offered = browser
        .js(
            "return [!!document.getElementById('perf-enter'), \
                     document.querySelectorAll('#perf-summary button').length, \
                     !!document.getElementById('perf-csv')]",
            json!([]),
        )
        .await;
    assert_eq!(offered, json!([false, 0, true]), "{offered}");
    browser
        .click(&format!("{chart} rect.hit[data-date=\"{today}\"]"))
        .await;
    browser
        .wait(
            "today's report",
            "document.querySelector('#detail[open] table.compact')",
            json!(null),
        )
        .await;
    let enter = browser
        .js(
            "return document.querySelectorAll('#detail [data-enter]').length",
            json!([]),
        )
        .await;
    assert_eq!(enter, 0, "a viewer cannot enter a shift");
    browser.click("#detail-close").await;
    browser.click("#tab-units").await;
    browser
        .wait(
            "the units",
            "document.querySelector('#units-rows tr[data-unit=\"PT10\"] td.unit-target')",
            json!(null),
        )
        .await;
    let edit = browser
        .js(
            "return document.querySelectorAll('#units-rows .edit-target').length",
            json!([]),
        )
        .await;
    assert_eq!(edit, 0, "a viewer cannot change a target");

    browser.quit().await;
    server.stop();
}
