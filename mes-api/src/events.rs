//! Live updates: what the console's event stream (`GET /api/events`) and the webhooks
//! are told, and the background tasks that find it out.
//!
//! The chain pushes nothing to the MES, so a poller lists partner and order requests
//! every `MES_POLL_INTERVAL_SECS` (through the app's bridge, with the master token),
//! compares them with the previous look and publishes what is new or changed on a
//! [`Hub`] (a tokio broadcast channel). Its first look is the baseline: requests that
//! were there when the server started are not announced (a restart must not send a
//! webhook for every open request again). Decisions are published by the app as it
//! records them; outbox rows whose status changed are found by watching the table.
//!
//! The poller only asks the chain while someone listens (an open console) or
//! webhooks are configured: an idle server does not load the chain.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use kafka_bridge::bridge::Bridge;
use mes_core::codec::Page;
use mes_core::db::schema::chain_outbox;
use mes_core::db::{outbox, tokens};
use rocket::Shutdown;
use rocket::fairing::AdHoc;
use rocket::tokio::sync::broadcast;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::{App, Kind};
use crate::db::Db;
use crate::notify::{Notification, Notifier};

/// Events kept for a slow subscriber before it misses some (it is told it did).
pub const CHANNEL_CAPACITY: usize = 1024;
/// Page size of the poller's list requests.
pub const POLL_PAGE: u32 = 100;
/// Most pages the poller reads per kind and look (so at most 5,000 requests).
pub const POLL_PAGES: u32 = 50;
/// Longest pause between two looks at the outbox (a cheap local query).
pub const OUTBOX_WATCH_MAX: Duration = Duration::from_secs(5);
/// Most changed outbox rows read per look.
const OUTBOX_BATCH: i64 = 500;

/// One thing that happened, as the event stream sends it: `event: {name}` and
/// `data: {data}`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// `request` (a new OPEN request), `status` (a request's status changed on the
    /// chain), `decision` (an operator answered), `outbox` (rows changed), `watching`
    /// (the poller has its baseline) or `poll_error` (the chain could not be listed).
    pub name: &'static str,
    /// The details.
    pub data: Value,
}

/// Where events are published and subscribed to; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: broadcast::Sender<LiveEvent>,
    watching: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    poll_failures: Arc<AtomicU64>,
    notifier: Arc<std::sync::OnceLock<Notifier>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            watching: Arc::default(),
            polls: Arc::default(),
            poll_failures: Arc::default(),
            notifier: Arc::default(),
        }
    }
}

impl Hub {
    /// Publishes `data` as event `name` to every subscriber (none is fine).
    pub fn publish(&self, name: &'static str, data: Value) {
        let _ = self.tx.send(LiveEvent { name, data });
    }

    /// A new subscription; it sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }

    /// Whether the poller has its baseline, so that new requests are announced.
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    /// The webhooks, once the server has started them.
    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.get()
    }

    fn someone_listens(&self) -> bool {
        self.tx.receiver_count() > 0 || self.notifier().is_some()
    }

    /// Prometheus text for the poller and the webhooks.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP mes_chain_polls_total Looks at the chain's request lists by the live-update poller, by outcome.\n");
        out.push_str("# TYPE mes_chain_polls_total counter\n");
        out.push_str(&format!(
            "mes_chain_polls_total{{outcome=\"ok\"}} {}\n",
            self.polls.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "mes_chain_polls_total{{outcome=\"error\"}} {}\n",
            self.poll_failures.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP mes_event_subscribers Open event streams (consoles).\n");
        out.push_str("# TYPE mes_event_subscribers gauge\n");
        out.push_str(&format!(
            "mes_event_subscribers {}\n",
            self.tx.receiver_count()
        ));
        if let Some(notifier) = self.notifier() {
            let m = notifier.metrics();
            out.push_str(
                "# HELP mes_webhook_notifications_total Webhook notifications, by outcome.\n",
            );
            out.push_str("# TYPE mes_webhook_notifications_total counter\n");
            for (outcome, value) in [
                ("delivered", &m.delivered),
                ("failed", &m.failed),
                ("dropped", &m.dropped),
            ] {
                out.push_str(&format!(
                    "mes_webhook_notifications_total{{outcome=\"{outcome}\"}} {}\n",
                    value.load(Ordering::Relaxed)
                ));
            }
        }
        out
    }
}

/// The live-update feature: on liftoff it starts the webhooks, the chain poller and
/// the outbox watcher; they stop with the server.
pub fn stage() -> AdHoc {
    AdHoc::on_liftoff("Live updates and webhooks", |rocket| {
        Box::pin(async move {
            let Some(app) = rocket.state::<App>() else {
                return;
            };
            let hub = app.events.clone();
            let hooks = match app.settings.webhooks() {
                Ok(hooks) => hooks,
                Err(e) => {
                    tracing::error!("webhooks disabled: {e}");
                    Vec::new()
                }
            };
            if let Some(notifier) = Notifier::start(hooks, app.settings.telegram_chat_id.clone()) {
                let _ = hub.notifier.set(notifier);
            }
            let interval = app.settings.poll_interval();
            rocket::tokio::spawn(poll_chain(
                app.db.clone(),
                app.bridge.clone(),
                hub.clone(),
                interval,
                rocket.shutdown(),
            ));
            rocket::tokio::spawn(watch_outbox(
                app.db.clone(),
                hub,
                interval.min(OUTBOX_WATCH_MAX),
                rocket.shutdown(),
            ));
        })
    })
}

/// What the poller knows of one kind of request: id → status.
#[derive(Debug, Default)]
struct Seen {
    baseline: bool,
    status: HashMap<String, String>,
}

fn item_status(item: &Value) -> String {
    item.get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Partner => "partner",
        Kind::Order => "order",
    }
}

impl Seen {
    /// Takes in a full list; returns the events it makes.
    fn update(&mut self, kind: Kind, items: Vec<Value>) -> Vec<LiveEvent> {
        let mut events = Vec::new();
        for item in items {
            // As the chain spells it; an id that breaks the rule is not announced.
            let Some(id) = crate::app::chain_id(kind, &item).map(String::from) else {
                continue;
            };
            let status = item_status(&item);
            let before = self.status.insert(id.clone(), status.clone());
            if !self.baseline {
                continue;
            }
            match before {
                None if status == "OPEN" => events.push(LiveEvent {
                    name: "request",
                    data: json!({"kind": kind_name(kind), "id": id, "item": item}),
                }),
                Some(before) if before != status => events.push(LiveEvent {
                    name: "status",
                    data: json!({"kind": kind_name(kind), "id": id, "status": status, "item": item}),
                }),
                _ => {}
            }
        }
        self.baseline = true;
        events
    }
}

async fn list_all(bridge: &Bridge, token: &str, kind: Kind) -> kafka_bridge::Result<Vec<Value>> {
    let mut all = Vec::new();
    for n in 0..POLL_PAGES {
        let page = Page {
            start: n * POLL_PAGE,
            limit: POLL_PAGE,
        };
        let items = match kind {
            Kind::Partner => bridge.list_partners(token, page).await?,
            Kind::Order => bridge.list_orders(token, page).await?,
        };
        let full = items.len() >= POLL_PAGE as usize;
        all.extend(items);
        if !full {
            break;
        }
    }
    Ok(all)
}

/// The chain poller (see the module doc).
async fn poll_chain(db: Db, bridge: Bridge, hub: Hub, interval: Duration, mut shutdown: Shutdown) {
    let mut seen = [
        (Kind::Partner, Seen::default()),
        (Kind::Order, Seen::default()),
    ];
    let mut ticks = rocket::tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
    // Someone who subscribes should not wait a whole interval for the baseline.
    let mut listening = rocket::tokio::time::interval(Duration::from_millis(250));
    loop {
        rocket::tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
            _ = listening.tick(), if !hub.is_watching() && hub.someone_listens() => {}
        }
        if !hub.someone_listens() {
            continue;
        }
        let token = match db.run(|conn| Ok(tokens::master(conn)?)).await {
            Ok(Some(master)) => master.token,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("live updates: cannot read the master token: {}", e.message);
                continue;
            }
        };
        let mut failed = None;
        for (kind, seen) in &mut seen {
            match list_all(&bridge, &token, *kind).await {
                Ok(items) => {
                    for event in seen.update(*kind, items) {
                        if event.name == "request"
                            && let Some(notifier) = hub.notifier()
                        {
                            let id = event.data["id"].as_str().unwrap_or_default();
                            notifier.notify(&Notification::new_request(
                                kind_name(*kind),
                                id,
                                &event.data["item"],
                            ));
                        }
                        hub.publish(event.name, event.data);
                    }
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        match failed {
            None => {
                hub.polls.fetch_add(1, Ordering::Relaxed);
                if seen.iter().all(|(_, s)| s.baseline)
                    && !hub.watching.swap(true, Ordering::AcqRel)
                {
                    hub.publish("watching", json!({}));
                }
            }
            Some(message) => {
                hub.poll_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("live updates: cannot list the chain's requests: {message}");
                hub.publish("poll_error", json!({"message": message}));
            }
        }
    }
}

/// An outbox row as the console and the webhooks see it (without its payload).
pub fn outbox_row_view(row: &outbox::OutboxRow) -> Value {
    let time = |t: NaiveDateTime| t.and_utc().to_rfc3339();
    json!({
        "id": row.id,
        "topic": row.topic,
        "dedup_key": row.dedup_key,
        "ordering_key": row.ordering_key,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "chain_message": row.chain_message,
        "created_at": time(row.created_at),
        "updated_at": time(row.updated_at),
        "delivered_at": row.delivered_at.map(time),
    })
}

/// Outbox rows changed since `since`, oldest change first.
fn changed_rows(
    conn: &mut mes_core::db::DbConnection,
    since: Option<NaiveDateTime>,
) -> QueryResult<Vec<outbox::OutboxRow>> {
    let mut query = chain_outbox::table
        .select(outbox::OutboxRow::as_select())
        .order((chain_outbox::updated_at.asc(), chain_outbox::id.asc()))
        .limit(OUTBOX_BATCH)
        .into_boxed();
    if let Some(since) = since {
        query = query.filter(chain_outbox::updated_at.ge(since));
    }
    query.load(conn)
}

/// Publishes outbox changes and notifies the webhooks of rows that failed for good.
async fn watch_outbox(db: Db, hub: Hub, interval: Duration, mut shutdown: Shutdown) {
    // The newest change seen, and the rows seen at exactly that time (a later look
    // asks for `>=` it, so that rows written in the same instant are not missed).
    let mut since: Option<NaiveDateTime> = None;
    let mut at_since: HashSet<(i64, String, i32)> = HashSet::new();
    let mut baseline = false;
    let mut ticks = rocket::tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
    loop {
        rocket::tokio::select! {
            _ = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        if !hub.someone_listens() && baseline {
            continue;
        }
        let from = since;
        let rows = match db.run(move |conn| Ok(changed_rows(conn, from)?)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("live updates: cannot read the outbox: {}", e.message);
                continue;
            }
        };
        let mut changed = Vec::new();
        for row in rows {
            let key = (row.id, row.status.clone(), row.attempts);
            if Some(row.updated_at) == since && at_since.contains(&key) {
                continue;
            }
            if Some(row.updated_at) != since {
                since = Some(row.updated_at);
                at_since.clear();
            }
            at_since.insert(key);
            if baseline {
                changed.push(row);
            }
        }
        baseline = true;
        if changed.is_empty() {
            continue;
        }
        let views: Vec<Value> = changed.iter().map(outbox_row_view).collect();
        if let Some(notifier) = hub.notifier() {
            for view in views.iter().filter(|v| v["status"] == outbox::FAILED) {
                notifier.notify(&Notification::outbox_failed(view));
            }
        }
        let depth = db.run(|conn| Ok(outbox::depth(conn)?)).await.ok();
        hub.publish(
            "outbox",
            json!({
                "rows": views,
                "depth": depth.map(|d| json!({
                    "pending": d.pending, "in_flight": d.in_flight, "done": d.done, "failed": d.failed,
                })),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(id: &str, status: &str) -> Value {
        json!({"partner_request_id": id, "status": status})
    }

    #[test]
    fn the_first_look_is_the_baseline_then_only_news_are_events() {
        let mut seen = Seen::default();
        assert!(
            seen.update(
                Kind::Partner,
                vec![partner("a", "OPEN"), partner("b", "ACCEPTED")]
            )
            .is_empty()
        );
        assert!(
            seen.update(Kind::Partner, vec![partner("a", "OPEN")])
                .is_empty()
        );
        let events = seen.update(
            Kind::Partner,
            vec![
                partner("a", "REJECTED"),
                partner("c", "OPEN"),
                partner("d", "ACCEPTED"),
            ],
        );
        let names: Vec<_> = events
            .iter()
            .map(|e| (e.name, e.data["id"].clone()))
            .collect();
        assert_eq!(names, vec![("status", json!("a")), ("request", json!("c"))]);
        assert!(
            seen.update(Kind::Partner, vec![partner("c", "OPEN")])
                .is_empty()
        );
    }

    #[test]
    fn ids_keep_their_case_and_bad_ids_are_not_announced() {
        let mut seen = Seen::default();
        assert!(seen.update(Kind::Partner, vec![]).is_empty());
        let events = seen.update(
            Kind::Partner,
            vec![
                partner("ABC_def-123", "OPEN"),
                partner("abc_def-123", "OPEN"),
                partner("../reports/daily/run?x=1#", "OPEN"),
                json!({"partner_request_id": 7, "status": "OPEN"}),
            ],
        );
        let ids: Vec<_> = events.iter().map(|e| e.data["id"].clone()).collect();
        assert_eq!(ids, vec![json!("ABC_def-123"), json!("abc_def-123")]);
    }
}
