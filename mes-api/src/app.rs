//! The server's state ([`App`]) and what the routes do with it: list and answer
//! partner and order requests, record decisions, take over accepted orders.
//!
//! Routes stay thin (parse, authorise, call a method here, answer), so a library user
//! can drive the same operations without HTTP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_bridge::bridge::{Bridge, CallOptions, Listing, SendReceipt};
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

    /// The chain's list of this kind.
    pub fn listing(self) -> Listing {
        match self {
            Kind::Partner => Listing::Partners,
            Kind::Order => Listing::Orders,
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

/// The message of an answer that was sent but not confirmed (decision `unknown`).
pub const UNCONFIRMED: &str = "sent; the chain has not confirmed yet";

/// What answering a request did.
#[derive(Debug, Clone)]
pub struct AnswerOutcome {
    /// The chain's `message`, as it sent it; [`UNCONFIRMED`] while the decision is
    /// `unknown`.
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

use crate::reconcile::text_of;

/// The id of a chain list item, if it has one that is a valid [`RequestId`]; an item
/// whose id breaks the rule is logged and never stored, cached or announced.
pub fn chain_id(kind: Kind, item: &Value) -> Option<RequestId> {
    let raw = item.get(kind.id_field())?;
    match raw.as_str().map(str::parse::<RequestId>) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            tracing::warn!("ignoring a chain {} with a bad id: {e}", kind.as_str());
            None
        }
        None => {
            tracing::warn!(
                "ignoring a chain {} whose id is not a string",
                kind.as_str()
            );
            None
        }
    }
}

/// Page size when the whole chain list is read (to filter it, or to find a request).
pub const CHAIN_SCAN_PAGE: u32 = 100;
/// Most chain pages read at once (so at most 5,000 requests are looked at).
pub const CHAIN_SCAN_PAGES: u32 = 50;

/// Whether a chain list item has status `status`, ignoring case.
pub fn has_status(item: &Value, status: &str) -> bool {
    item.get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case(status))
}

/// Items `[page.start, page.start + page.limit)` of the chain's whole list filtered by
/// `status`: reads the chain's list in pages of [`CHAIN_SCAN_PAGE`] through `fetch`,
/// stopping at a short page or after [`CHAIN_SCAN_PAGES`] pages, and stops early once
/// the page asked for is complete.
pub async fn list_filtered<F, Fut, E>(
    page: Page,
    status: &str,
    mut fetch: F,
) -> Result<Vec<Value>, E>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Value>, E>>,
{
    let skip = page.start as usize;
    let want = skip.saturating_add(page.limit as usize);
    let mut matched = Vec::new();
    for n in 0..CHAIN_SCAN_PAGES {
        let items = fetch(Page {
            start: n * CHAIN_SCAN_PAGE,
            limit: CHAIN_SCAN_PAGE,
        })
        .await?;
        let last = items.len() < CHAIN_SCAN_PAGE as usize;
        matched.extend(items.into_iter().filter(|item| has_status(item, status)));
        if last || matched.len() >= want {
            break;
        }
    }
    Ok(matched
        .into_iter()
        .skip(skip)
        .take(page.limit as usize)
        .collect())
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
        let fence_task = rocket::tokio::spawn(watch_fences(
            self.bridge.clone(),
            self.events.clone(),
            self.stop.subscribe(),
        ));
        lock(&self.background).extend([relay_task, job_task, fence_task]);
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

    /// A page of partner or order requests, as the chain sent them.
    ///
    /// Without `status`, one chain request for the page. With it, the filter applies to
    /// the chain's whole list before the page: [`list_filtered`] pages through it and
    /// returns items `[start, start + limit)` of those whose `status` is `status`
    /// (case-insensitive), so a match past the chain's first page is not lost.
    pub async fn list(
        &self,
        kind: Kind,
        page: Page,
        status: Option<&str>,
    ) -> ApiResult<Vec<Value>> {
        let token = self.master_token().await?;
        let Some(status) = status else {
            return Ok(self.list_page(&token, kind, page).await?);
        };
        Ok(list_filtered(page, status, |chain_page| {
            self.list_page(&token, kind, chain_page)
        })
        .await?)
    }

    /// One page of the chain's list; every item goes into the mirror.
    async fn list_page(
        &self,
        token: &str,
        kind: Kind,
        page: Page,
    ) -> kafka_bridge::Result<Vec<Value>> {
        let items = self
            .bridge
            .list(token, kind.listing(), page, CallOptions::default())
            .await?;
        crate::mirror::take_in_reply(&self.db, &self.events, kind, &items).await;
        Ok(items)
    }

    /// Accepts or rejects a partner or order request on the chain, recording the
    /// decision before anything is sent and its outcome after; an accepted order
    /// becomes a production order (once, however often it is accepted).
    ///
    /// A call whose request may have reached the chain but got no reply ends with the
    /// decision `unknown` (`Ok`, for the route to say 202 or 504): the mirror settles it
    /// ([`crate::reconcile`]). While the last decision on a request is `pending` or
    /// `unknown`, answering again sends nothing: the chain's list is read for that
    /// request and the decision reports what it shows.
    pub async fn answer(
        &self,
        kind: Kind,
        id: RequestId,
        answer: Answer,
        caller: &Caller,
    ) -> ApiResult<AnswerOutcome> {
        let token = self.master_token().await?;
        let last = {
            let id = id.to_string();
            self.db
                .run(move |conn| Ok(decisions::latest(conn, kind.as_str(), &id)?))
                .await?
        };
        if let Some(last) = last.filter(|d| {
            d.outcome == decisions::OUTCOME_UNKNOWN || d.outcome == decisions::OUTCOME_PENDING
        }) {
            return self.recheck(kind, &token, &id, last).await;
        }
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
        // The order's fields are needed to produce it: from the mirror, or the chain.
        let order = if kind == Kind::Order && answer == Answer::Accept {
            self.order_item(&token, &id).await
        } else {
            None
        };
        let receipt = SendReceipt::new();
        let options = CallOptions {
            corr: Some(corr),
            receipt: Some(receipt.clone()),
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
        let applied = decisions::applied(i32::from(answer.code()));
        let (outcome, message, error) = match &result {
            Ok(answered) => (applied, Some(text_of(&answered.message)), None),
            Err(e) => {
                use kafka_bridge::Error as E;
                let outcome = match e {
                    E::Chain { .. } => decisions::OUTCOME_CHAIN_ERROR,
                    _ if !receipt.was_sent() => decisions::OUTCOME_NOT_SENT,
                    _ => decisions::OUTCOME_UNKNOWN,
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
        crate::reconcile::publish_decision(&self.events, kind, &decision);
        let message = match result {
            Ok(answered) => answered.message,
            Err(_) if outcome == decisions::OUTCOME_UNKNOWN => {
                return Ok(AnswerOutcome {
                    message: Value::String(UNCONFIRMED.to_owned()),
                    decision,
                    production_order: None,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let status = if answer == Answer::Accept {
            "ACCEPTED"
        } else {
            "REJECTED"
        };
        crate::mirror::set_status(&self.db, &self.events, kind, &id, status).await;
        let production_order = if kind == Kind::Order && answer == Answer::Accept {
            let order = match order {
                Some(order) => Some(order),
                None => self.order_item(&token, &id).await,
            };
            match order {
                Some(order) => Some(
                    crate::reconcile::take_over(&self.db, id.as_str(), &order, decision.id).await?,
                ),
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
            message,
            decision,
            production_order,
        })
    }

    /// The chain's order `id`: from the mirror, else by paging through the chain's
    /// list (into the mirror); `None` if the chain does not list it or cannot be read.
    async fn order_item(&self, token: &str, id: &RequestId) -> Option<Value> {
        let chain_id = id.to_string();
        let row = self
            .db
            .run(move |conn| {
                Ok(mes_core::db::chain_requests::get(
                    conn,
                    Kind::Order.as_str(),
                    &chain_id,
                )?)
            })
            .await
            .ok()
            .flatten();
        if let Some(item) = row.and_then(|r| serde_json::from_str(&r.item).ok()) {
            return Some(item);
        }
        match self.find_in_chain(Kind::Order, token, id).await {
            Ok(item) => item,
            Err(e) => {
                tracing::warn!("looking up order {id} on the chain: {}", e.message);
                None
            }
        }
    }

    /// Answering again while the last decision is `pending` or `unknown`: nothing is
    /// sent; the chain's list is read until the request is found (into the mirror), and
    /// the decision settled if it shows the answer.
    async fn recheck(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
        last: decisions::Decision,
    ) -> ApiResult<AnswerOutcome> {
        let item = self.find_in_chain(kind, token, id).await?;
        let status = item
            .as_ref()
            .and_then(|i| i.get("status"))
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase);
        let mut decision = last;
        if decision.outcome == decisions::OUTCOME_UNKNOWN
            && let Some(status @ ("ACCEPTED" | "REJECTED")) = status.as_deref()
            && let Some(settled) = crate::reconcile::settle_from_status(
                &self.db,
                kind,
                &decision,
                status,
                item.as_ref(),
            )
            .await?
        {
            crate::reconcile::publish_decision(&self.events, kind, &settled);
            decision = settled;
        }
        let production_order = if kind == Kind::Order {
            let chain_id = id.to_string();
            self.db
                .run(move |conn| Ok(orders::get_by_chain_id(conn, &chain_id)?))
                .await?
        } else {
            None
        };
        let message = match decision.outcome.as_str() {
            decisions::OUTCOME_UNKNOWN | decisions::OUTCOME_PENDING => {
                Value::String(UNCONFIRMED.to_owned())
            }
            _ => Value::String(
                decision
                    .chain_message
                    .clone()
                    .unwrap_or_else(|| decision.outcome.clone()),
            ),
        };
        Ok(AnswerOutcome {
            message,
            decision,
            production_order,
        })
    }

    /// The chain's list item for request `id` of `kind`, paging through the chain's
    /// list (each page goes into the mirror); `None` if the chain does not list it.
    async fn find_in_chain(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
    ) -> ApiResult<Option<Value>> {
        for n in 0..CHAIN_SCAN_PAGES {
            let page = Page {
                start: n * CHAIN_SCAN_PAGE,
                limit: CHAIN_SCAN_PAGE,
            };
            let items = self.list_page(token, kind, page).await?;
            let found = items
                .iter()
                .find(|item| chain_id(kind, item).is_some_and(|c| c == *id))
                .cloned();
            if found.is_some() {
                return Ok(found);
            }
            if items.len() < CHAIN_SCAN_PAGE as usize {
                break;
            }
        }
        Ok(None)
    }

    /// Whether the database answers and the bridge's reply consumer runs.
    pub async fn ready(&self) -> (bool, bool) {
        (self.db.ping().await, self.bridge.is_ready())
    }
}

/// How often the fences are looked at for the console's "chain is behind": a lock and
/// a comparison, and a fence lasts seconds to minutes.
const FENCE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Publishes a `chain` event (`{"fences": [{"shape", "since_secs", "lifts_in_secs"}]}`)
/// whenever a reply-shape fence goes up or comes down, so consoles can say "Chain is
/// behind — waiting for an earlier answer" (docs/protocol.md §9).
async fn watch_fences(
    bridge: Bridge,
    events: Hub,
    mut stop: rocket::tokio::sync::watch::Receiver<bool>,
) {
    let mut shown: Vec<&'static str> = Vec::new();
    loop {
        let up: Vec<&'static str> = bridge.fences().iter().map(|f| f.shape.label()).collect();
        if up != shown {
            let health = crate::routes::ops::ChainHealth::of(&bridge);
            events.publish("chain", serde_json::json!({ "fences": health.fences }));
            shown = up;
        }
        rocket::tokio::select! {
            () = rocket::tokio::time::sleep(FENCE_WATCH_INTERVAL) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::RefCell;

    use serde_json::json;

    use super::*;

    /// A chain list of `n` partners; every third one accepted.
    fn chain(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let status = if i % 3 == 0 { "ACCEPTED" } else { "OPEN" };
                json!({"partner_request_id": format!("p{i}"), "status": status})
            })
            .collect()
    }

    /// Runs [`list_filtered`] over `items`; returns the ids and the pages asked for.
    fn filtered(items: &[Value], page: Page, status: &str) -> (Vec<String>, Vec<Page>) {
        let asked = RefCell::new(Vec::new());
        let result = rocket::async_test(list_filtered(page, status, |p: Page| {
            asked.borrow_mut().push(p);
            let from = (p.start as usize).min(items.len());
            let to = (from + p.limit as usize).min(items.len());
            std::future::ready(Ok::<_, ()>(items[from..to].to_vec()))
        }))
        .unwrap();
        let ids = result
            .iter()
            .map(|i| i["partner_request_id"].as_str().unwrap().to_owned())
            .collect();
        (ids, asked.into_inner())
    }

    fn ids(range: impl Iterator<Item = usize>) -> Vec<String> {
        range.map(|i| format!("p{i}")).collect()
    }

    #[test]
    fn the_filter_applies_to_the_whole_list_before_the_page() {
        let items = chain(250);
        let page = Page {
            start: 0,
            limit: 100,
        };
        let (got, asked) = filtered(&items, page, "accepted");
        assert_eq!(got, ids((0..250).step_by(3).take(84)));
        assert_eq!(asked.len(), 3, "pages until the short one: {asked:?}");
        assert_eq!(
            asked[2],
            Page {
                start: 200,
                limit: 100
            }
        );

        let (got, _) = filtered(
            &items,
            Page {
                start: 40,
                limit: 10,
            },
            "ACCEPTED",
        );
        assert_eq!(got, ids((0..250).step_by(3).skip(40).take(10)));
        let (got, _) = filtered(
            &items,
            Page {
                start: 80,
                limit: 10,
            },
            "ACCEPTED",
        );
        assert_eq!(got, ids((240..250).step_by(3)));
        let (got, _) = filtered(
            &items,
            Page {
                start: 84,
                limit: 10,
            },
            "ACCEPTED",
        );
        assert!(got.is_empty());
    }

    #[test]
    fn reading_stops_once_the_page_is_complete_or_at_the_bound() {
        let items = chain(1000);
        let (got, asked) = filtered(
            &items,
            Page {
                start: 0,
                limit: 10,
            },
            "ACCEPTED",
        );
        assert_eq!(got.len(), 10);
        assert_eq!(asked.len(), 1);

        let items = vec![json!({"partner_request_id": "x", "status": "OPEN"}); 10_000];
        let (got, asked) = filtered(
            &items,
            Page {
                start: 0,
                limit: 10,
            },
            "ACCEPTED",
        );
        assert!(got.is_empty());
        assert_eq!(asked.len(), CHAIN_SCAN_PAGES as usize);
    }

    #[test]
    fn chain_ids_are_kept_as_spelled_and_bad_ones_dropped() {
        let item = |id: Value| json!({"abs_action_id": id});
        assert_eq!(
            chain_id(Kind::Order, &item(json!("ABC_def-123")))
                .unwrap()
                .as_str(),
            "ABC_def-123"
        );
        assert!(chain_id(Kind::Order, &item(json!("../reports/daily/run?x=1#"))).is_none());
        assert!(chain_id(Kind::Order, &item(json!(12))).is_none());
        assert!(chain_id(Kind::Partner, &item(json!("abc"))).is_none());
    }
}
