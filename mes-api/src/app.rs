//! The server's state ([`App`]) and what the routes do with it: list and answer
//! partner and order requests, record decisions, take over accepted orders.
//!
//! Routes stay thin (parse, authorise, call a method here, answer), so a library user
//! can drive the same operations without HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_bridge::bridge::{Bridge, CallOptions};
use kafka_bridge::relay::{Relay, RelayConfig, TokenSource};
use mes_core::codec::Page;
use mes_core::db::{decisions, orders, tokens};
use mes_core::domain::{Answer, RequestId};
use rocket::http::Status;
use serde_json::Value;

use crate::auth::{AuthCache, Caller};
use crate::config::{ConfigError, Settings};
use crate::db::Db;
use crate::embedded::Embedded;
use crate::error::{ApiError, ApiResult, code};
use crate::events::Hub;
use crate::metrics::HttpMetrics;
use crate::service::schedule::{DailyReportJob, ReportSchedule};
use crate::service::units::UnitService;

/// How long the master token read from the database is reused. Short, because the
/// CLI may change it from another process.
const TOKEN_TTL: Duration = Duration::from_secs(1);
/// Most chain orders remembered from lists, to take over an accepted order.
const ORDER_CACHE_MAX: usize = 10_000;
/// Page size and page count when looking an order up on the chain.
const ORDER_SCAN_PAGE: u32 = 100;
const ORDER_SCAN_PAGES: u32 = 50;

/// Partner requests or order requests: the two things an operator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BLK_Part_*`.
    Partner,
    /// `BLK_Act_*`.
    Order,
}

impl Kind {
    /// The `decisions.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Partner => decisions::KIND_PARTNER,
            Kind::Order => decisions::KIND_ORDER,
        }
    }

    /// The id field of a list item.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Partner => "partner_request_id",
            Kind::Order => "abs_action_id",
        }
    }
}

/// What answering a request did.
#[derive(Debug, Clone)]
pub struct AnswerOutcome {
    /// The chain's `message`, as it sent it.
    pub message: Value,
    /// The `decisions` row.
    pub decision: decisions::Decision,
    /// The production order an accepted order became (`None` for partners, rejects,
    /// and orders the chain no longer lists).
    pub production_order: Option<orders::ProductionOrder>,
}

/// Everything the routes share. Kept in Rocket's managed state.
pub struct App {
    /// The settings in use.
    pub settings: Settings,
    /// The database.
    pub db: Db,
    /// The chain, through Kafka.
    pub bridge: Bridge,
    /// Verified operator keys.
    pub auth: AuthCache,
    /// HTTP figures for `/metrics`.
    pub http_metrics: Arc<HttpMetrics>,
    /// Production units, with the built-in chain hook (and any a library user adds).
    pub units: UnitService,
    /// The outbox relay: delivers `chain_outbox` to the chain. Routes that enqueue call
    /// [`Relay::notify`]; [`App::start_background`] runs it.
    pub relay: Relay,
    /// When the daily report runs (`MES_REPORT_*`).
    pub schedule: ReportSchedule,
    /// Live updates for the console's event stream and the webhooks.
    pub events: Hub,
    token: Mutex<Option<(String, Instant)>>,
    orders: Mutex<HashMap<String, Value>>,
    embedded: Mutex<Option<Embedded>>,
    stop: rocket::tokio::sync::watch::Sender<bool>,
    background: Mutex<Vec<rocket::tokio::task::JoinHandle<()>>>,
    started: std::sync::atomic::AtomicBool,
}

/// The relay's settings for a server whose chain requests time out after `timeout`:
/// a send may take that long, and a lease six times as long lets a crashed server's
/// rows come back soon without a slow but live relay losing them often (a resend is
/// harmless anyway: the chain deduplicates by `idem`).
pub fn relay_config(timeout: Duration) -> RelayConfig {
    let send_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(3600));
    let lease = (send_timeout * 6).max(send_timeout + Duration::from_secs(2));
    RelayConfig {
        name: "outbox-relay".to_owned(),
        send_timeout,
        lease,
        ..RelayConfig::default()
    }
}

/// Longest wait for the relay and the daily job to stop on shutdown: a send in
/// progress is settled within the request timeout.
const BACKGROUND_STOP_GRACE: Duration = Duration::from_secs(60);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("settings", &self.settings)
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The text to store for a chain value: strings as they are, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl App {
    /// State over a connected bridge and a migrated pool; `embedded` is the in-process
    /// broker and chain, stopped with the server.
    ///
    /// Fails only for settings [`Settings`] validation did not see (the report
    /// schedule, the relay's timings), naming the setting.
    pub fn new(
        settings: Settings,
        db: Db,
        bridge: Bridge,
        embedded: Option<Embedded>,
    ) -> Result<App, ConfigError> {
        let schedule = settings.report_schedule()?;
        let pool = db.pool().clone();
        let relay = Relay::new(
            pool.clone(),
            bridge.clone(),
            TokenSource::master_token(pool),
            RelayConfig {
                record_replies: settings.record_replies_mode()?,
                ..relay_config(settings.request_timeout())
            },
        )
        .map_err(|e| ConfigError::new("MES_REQUEST_TIMEOUT_MS", e.to_string()))?;
        Ok(App {
            settings,
            db,
            bridge,
            auth: AuthCache::default(),
            http_metrics: Arc::new(HttpMetrics::default()),
            units: UnitService::default(),
            relay,
            schedule,
            events: Hub::default(),
            token: Mutex::new(None),
            orders: Mutex::new(HashMap::new()),
            embedded: Mutex::new(embedded),
            stop: rocket::tokio::sync::watch::channel(false).0,
            background: Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts the outbox relay and the daily-report job (its start-up catch-up
    /// first), once; [`App::shutdown`] stops them. The server calls it on liftoff.
    pub fn start_background(&self) {
        use std::sync::atomic::Ordering;
        if self.started.swap(true, Ordering::SeqCst) || *self.stop.borrow() {
            return;
        }
        let stopped = |mut rx: rocket::tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone: the App was dropped, so stop too.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let relay = self.relay.clone();
        let relay_stop = stopped(self.stop.subscribe());
        let relay_task = rocket::tokio::spawn(async move {
            tracing::info!(job = "outbox-relay", "started");
            relay.run(relay_stop).await;
            tracing::info!(job = "outbox-relay", "stopped");
        });
        let schedule = self.schedule.clone();
        let cron = format!("{} ({})", schedule.cron_expr(), schedule.time_zone());
        let pool = self.db.pool().clone();
        let mut job_stop = self.stop.subscribe();
        let relay = self.relay.clone();
        let job_task = rocket::tokio::spawn(async move {
            let job = rocket::tokio::select! {
                job = DailyReportJob::start(schedule, pool) => job,
                _ = job_stop.wait_for(|stop| *stop) => return,
            };
            let job = match job {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(job = "daily-report", error = %e, "could not start");
                    return;
                }
            };
            tracing::info!(job = "daily-report", %cron, "started");
            // The catch-up may have enqueued reports.
            relay.notify();
            let _ = job_stop.wait_for(|stop| *stop).await;
            if let Err(e) = job.shutdown().await {
                tracing::warn!(job = "daily-report", error = %e, "stopping");
            }
        });
        lock(&self.background).extend([relay_task, job_task]);
    }

    /// Stops the relay and the daily job, then the bridge, then the embedded broker
    /// and chain.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<_> = lock(&self.background).drain(..).collect();
        for task in tasks {
            if rocket::tokio::time::timeout(BACKGROUND_STOP_GRACE, task)
                .await
                .is_err()
            {
                tracing::warn!("a background job did not stop within {BACKGROUND_STOP_GRACE:?}");
            }
        }
        self.bridge.shutdown().await;
        let embedded = lock(&self.embedded).take();
        if let Some(embedded) = embedded {
            embedded.shutdown().await;
        }
    }

    /// The in-process chain of the embedded demo, if this server runs one.
    pub fn with_embedded<R>(&self, f: impl FnOnce(Option<&Embedded>) -> R) -> R {
        f(lock(&self.embedded).as_ref())
    }

    /// Forgets the cached master token (after it was changed through the API).
    pub fn forget_token(&self) {
        *lock(&self.token) = None;
    }

    /// The master token; 409 if none is configured.
    pub async fn master_token(&self) -> ApiResult<String> {
        if let Some((token, at)) = lock(&self.token).as_ref()
            && at.elapsed() < TOKEN_TTL
        {
            return Ok(token.clone());
        }
        let master = self.db.run(|conn| Ok(tokens::master(conn)?)).await?;
        let token = master.ok_or_else(ApiError::no_master_token)?.token;
        *lock(&self.token) = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// A page of partner or order requests, as the chain sent them, optionally only
    /// those whose `status` is `status` (case-insensitive).
    pub async fn list(
        &self,
        kind: Kind,
        page: Page,
        status: Option<&str>,
    ) -> ApiResult<Vec<Value>> {
        let token = self.master_token().await?;
        let items = match kind {
            Kind::Partner => self.bridge.list_partners(&token, page).await?,
            Kind::Order => self.bridge.list_orders(&token, page).await?,
        };
        if kind == Kind::Order {
            self.remember_orders(&items);
        }
        Ok(match status {
            None => items,
            Some(status) => items
                .into_iter()
                .filter(|item| {
                    item.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(status))
                })
                .collect(),
        })
    }

    fn remember_orders(&self, items: &[Value]) {
        let mut cache = lock(&self.orders);
        if cache.len() + items.len() > ORDER_CACHE_MAX {
            cache.clear();
        }
        for item in items {
            if let Some(id) = item.get(Kind::Order.id_field()).and_then(Value::as_str) {
                cache.insert(id.to_ascii_lowercase(), item.clone());
            }
        }
    }

    /// The chain's order `id`, from the lists seen so far or by paging through the
    /// chain's list; `None` if the chain does not list it.
    async fn find_order(&self, token: &str, id: &RequestId) -> Option<Value> {
        if let Some(order) = lock(&self.orders).get(id.as_str()) {
            return Some(order.clone());
        }
        for n in 0..ORDER_SCAN_PAGES {
            let page = Page {
                start: n * ORDER_SCAN_PAGE,
                limit: ORDER_SCAN_PAGE,
            };
            let items = match self.bridge.list_orders(token, page).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!("looking up order {id} on the chain: {e}");
                    return None;
                }
            };
            self.remember_orders(&items);
            if let Some(order) = lock(&self.orders).get(id.as_str()) {
                return Some(order.clone());
            }
            if items.len() < ORDER_SCAN_PAGE as usize {
                break;
            }
        }
        None
    }

    /// Accepts or rejects a partner or order request on the chain, recording the
    /// decision before anything is sent and its outcome after; an accepted order
    /// becomes a production order (once, however often it is accepted).
    pub async fn answer(
        &self,
        kind: Kind,
        id: RequestId,
        answer: Answer,
        caller: &Caller,
    ) -> ApiResult<AnswerOutcome> {
        let token = self.master_token().await?;
        let corr = uuid::Uuid::new_v4().to_string();
        let decision = {
            let (id, operator, corr) = (id.to_string(), caller.name.clone(), corr.clone());
            self.db
                .run(move |conn| {
                    Ok(decisions::record(
                        conn,
                        &decisions::NewDecision {
                            kind: kind.as_str(),
                            request_id: &id,
                            response: i32::from(answer.code()),
                            operator: &operator,
                            correlation_id: Some(&corr),
                        },
                    )?)
                })
                .await?
        };
        // The order's fields are needed to produce it; fetch them while it is open.
        let order = if kind == Kind::Order && answer == Answer::Accept {
            self.find_order(&token, &id).await
        } else {
            None
        };
        let options = CallOptions {
            corr: Some(corr),
            ..CallOptions::default()
        };
        let result = match kind {
            Kind::Partner => {
                self.bridge
                    .answer_partner(&token, id.clone(), answer, options)
                    .await
            }
            Kind::Order => {
                self.bridge
                    .answer_order(&token, id.clone(), answer, options)
                    .await
            }
        };
        let (outcome, message, error) = match &result {
            Ok(answered) => (
                decisions::OUTCOME_OK,
                Some(text_of(&answered.message)),
                None,
            ),
            Err(e) => {
                use kafka_bridge::Error as E;
                let outcome = match e {
                    E::Chain { .. } => decisions::OUTCOME_CHAIN_ERROR,
                    E::Timeout(_) => decisions::OUTCOME_TIMEOUT,
                    E::BrokerUnavailable(_) => decisions::OUTCOME_BROKER_UNAVAILABLE,
                    E::Overloaded(_) => decisions::OUTCOME_OVERLOADED,
                    _ => decisions::OUTCOME_FAILED,
                };
                let text = match e {
                    E::Chain { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                (outcome, None, Some(text))
            }
        };
        let decision_id = decision.id;
        let decision = self
            .db
            .run(move |conn| {
                Ok(decisions::complete(
                    conn,
                    decision_id,
                    outcome,
                    message.as_deref(),
                    error.as_deref(),
                )?)
            })
            .await?;
        // Other operators' consoles update the row; the decider's gets it too.
        self.events.publish(
            "decision",
            serde_json::json!({
                "kind": if kind == Kind::Partner { "partner" } else { "order" },
                "request_id": decision.request_id,
                "response": if answer == Answer::Accept { "accept" } else { "reject" },
                "operator": decision.operator,
                "outcome": decision.outcome,
                "message": decision.chain_message,
                "error": decision.chain_error,
            }),
        );
        let answered = result?;
        let production_order = if kind == Kind::Order && answer == Answer::Accept {
            let order = match order {
                Some(order) => Some(order),
                None => self.find_order(&token, &id).await,
            };
            match order {
                Some(order) => Some(self.take_over(&id, &order, decision.id).await?),
                None => {
                    tracing::warn!(
                        "order {id} was accepted but the chain does not list it: no production order"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(AnswerOutcome {
            message: answered.message,
            decision,
            production_order,
        })
    }

    async fn take_over(
        &self,
        id: &RequestId,
        order: &Value,
        decision_id: i64,
    ) -> ApiResult<orders::ProductionOrder> {
        let field = |name: &str| order.get(name).map(text_of).unwrap_or_default();
        let chain_order_id = id.to_string();
        let issuing_agent = field("issuing_agent");
        let order_type = field("type");
        let description = field("description");
        let metadata = order
            .get("metadata")
            .map_or_else(|| "null".to_owned(), Value::to_string);
        let timestamp = order.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
        self.db
            .run(move |conn| {
                Ok(orders::create_from_chain(
                    conn,
                    &orders::NewProductionOrder {
                        chain_order_id: &chain_order_id,
                        issuing_agent: &issuing_agent,
                        order_type: &order_type,
                        description: &description,
                        metadata: &metadata,
                        chain_timestamp: timestamp,
                        decision_id: Some(decision_id),
                        status: orders::STATUS_PLANNED,
                    },
                )?)
            })
            .await
    }

    /// Whether the database answers and the bridge's reply consumer runs.
    pub async fn ready(&self) -> (bool, bool) {
        (self.db.ping().await, self.bridge.is_ready())
    }
}

/// 503 while the server is not ready, for `/health/ready`.
pub fn not_ready(database: bool, bridge: bool) -> ApiError {
    let mut missing = Vec::new();
    if !database {
        missing.push("database");
    }
    if !bridge {
        missing.push("bridge");
    }
    ApiError::new(
        Status::ServiceUnavailable,
        if database {
            code::BROKER_UNAVAILABLE
        } else {
            code::DATABASE_UNAVAILABLE
        },
        format!("not ready: {}", missing.join(", ")),
    )
}
