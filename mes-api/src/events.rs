//! Live updates: what the console's event stream (`GET /api/events`) and the webhooks
//! are told, and the background tasks that find it out.
//!
//! The chain pushes nothing to the MES, so a poller scans the whole partner and order
//! lists every `MES_POLL_INTERVAL_SECS` (through the app's bridge, with the master
//! token) into the mirror of the chain's requests (`chain_requests`, see
//! [`crate::mirror`]), at most [`POLL_PAGES`] pages of [`POLL_PAGE`] per kind and
//! cycle, continuing next cycle where it stopped on a larger ledger. What an upsert
//! inserts or changes is published on a [`Hub`] (a tokio broadcast channel) and sent
//! to the webhooks. The mirror outlives restarts and is shared by instances, so a
//! request is announced once, even one that arrived while no server ran; the first
//! complete scan of an empty mirror is the baseline and announces nothing. Decisions
//! are published by the app as it records them; outbox rows whose status changed are
//! found by watching the table.
//!
//! The poller runs whether or not anyone listens: the operator inbox
//! (`GET /api/requests`) reads the mirror it keeps fresh.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::NaiveDateTime;
use kafka_bridge::bridge::{Bridge, CallOptions};
use kafka_bridge::metrics::sample;
use mes_core::codec::Page;
use mes_core::db::notifications::NotificationCounts;
use mes_core::db::{chain_requests, notifications, outbox};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rocket::fairing::AdHoc;
use rocket::tokio::sync::broadcast;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::{App, StopSignal};
use crate::db::Db;
use crate::metrics::OutcomeCounters;
use crate::mirror;
use crate::notify::{Notification, Notifier};
use crate::reconcile::Reconcile;
use crate::service::requests::Kind;
use crate::service::tokens::TokenProvider;
use crate::throttled::Throttled;

/// Events kept for a slow subscriber before it misses some (it is told it did).
pub const CHANNEL_CAPACITY: usize = 1024;
/// Page size of the poller's list requests.
pub const POLL_PAGE: u32 = 100;
/// Most pages the poller reads per kind and cycle (so at most 5,000 requests; a scan
/// of a longer list continues next cycle).
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
    /// (both kinds have a complete scan in the mirror: news are announced from now
    /// on), `poll_error` (the chain could not be listed), `chain` (a reply-shape
    /// fence went up or came down: "the chain is behind", docs/protocol.md §9),
    /// `day_report` (a unit's day report was stored) or `target` (a unit's targets
    /// changed).
    pub name: &'static str,
    /// The details.
    pub data: Value,
}

/// Where events are published and subscribed to; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: broadcast::Sender<LiveEvent>,
    watching: Arc<AtomicBool>,
    polls: OutcomeCounters,
    webhooks: OutcomeCounters,
    notifier: Arc<std::sync::OnceLock<Notifier>>,
    notification_counts: Arc<Throttled<Option<NotificationCounts>>>,
}

/// How often `/metrics` may count the notifications (it needs no key).
const NOTIFICATION_COUNTS_EVERY: Duration = Duration::from_secs(1);

impl Default for Hub {
    fn default() -> Self {
        let polls = OutcomeCounters::default();
        polls.show(&["ok", "error"]);
        Hub {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            watching: Arc::default(),
            polls,
            webhooks: OutcomeCounters::default(),
            notifier: Arc::default(),
            notification_counts: Arc::new(Throttled::new(NOTIFICATION_COUNTS_EVERY)),
        }
    }
}

/// `mes_event_subscribers`, the open event streams, counted at each scrape.
#[derive(Debug)]
struct Subscribers(broadcast::WeakSender<LiveEvent>);

impl Collector for Subscribers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let open = self.0.upgrade().map_or(0, |tx| tx.receiver_count());
        sample(
            &mut encoder,
            "mes_event_subscribers",
            "Open event streams (consoles).",
            None,
            ConstGauge::new(open),
        )
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

    /// Whether both kinds have a complete scan in the mirror, so that new requests are
    /// announced.
    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    /// The webhooks, once the server has started them.
    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.get()
    }

    /// The webhook notifications per status and the oldest pending one's time, for
    /// `/metrics`: read at most once a second; `None` if the database did not answer.
    pub async fn notification_counts(&self, db: &Db) -> Option<NotificationCounts> {
        self.notification_counts
            .get(|| async { db.run(|conn| Ok(notifications::counts(conn)?)).await.ok() })
            .await
    }

    fn someone_listens(&self) -> bool {
        self.tx.receiver_count() > 0 || self.notifier().is_some()
    }

    /// Registers the poller's and the webhooks' counters and the open event streams
    /// into `registry`, for `/metrics`. The webhooks' appear once they are started.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.polls.register(
            registry,
            "mes_chain_polls",
            "Looks at the chain's request lists by the live-update poller, by outcome",
        );
        registry.register_collector(Box::new(Subscribers(self.tx.downgrade())));
        self.webhooks.register(
            registry,
            "mes_webhook_notifications",
            "Webhook notification attempts by this instance, by outcome (delivered, retried, failed)",
        );
    }
}

/// The live-update feature: on liftoff it starts the webhooks, the chain poller and
/// the outbox watcher; [`App::shutdown`] stops them with the other background jobs.
pub fn stage() -> AdHoc {
    AdHoc::on_liftoff("Live updates and webhooks", |rocket| {
        Box::pin(async move {
            let Some(app) = rocket.state::<App>() else {
                return;
            };
            let hub = app.events.clone();
            let hooks = match app.settings.webhooks() {
                Ok(hooks) => {
                    fail_orphans(app, &hooks).await;
                    hooks
                }
                Err(e) => {
                    tracing::error!("webhooks disabled: {e}");
                    Vec::new()
                }
            };
            if let Some(notifier) = Notifier::new(
                app.db.clone(),
                hooks,
                app.settings.telegram_chat_id.clone(),
                hub.webhooks.clone(),
            ) {
                notifier.start_workers(app);
                let _ = hub.notifier.set(notifier);
            }
            let interval = app.settings.poll_interval();
            let (db, bridge, tokens) = (app.db.clone(), app.bridge.clone(), app.tokens.clone());
            let (poll_hub, tuning) = (hub.clone(), app.settings.reconcile());
            app.spawn_background(move |stop| {
                poll_chain(db, bridge, tokens, poll_hub, interval, tuning, stop)
            });
            let db = app.db.clone();
            app.spawn_background(move |stop| {
                watch_outbox(db, hub, interval.min(OUTBOX_WATCH_MAX), stop)
            });
        })
    })
}

/// Fails the pending notifications of webhooks no longer configured (none at all
/// when `hooks` is empty): nobody would send them. Each says why; the console's
/// Notifications tab and `mes_notification_rows{status="failed"}` show them.
async fn fail_orphans(app: &App, hooks: &[crate::notify::Webhook]) {
    let urls: Vec<String> = hooks.iter().map(|h| h.url.clone()).collect();
    let failed = app
        .db
        .run(move |conn| {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            Ok(notifications::fail_orphans(
                conn,
                &urls,
                "its webhook is no longer in MES_WEBHOOKS",
            )?)
        })
        .await;
    match failed {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            failed = n,
            "webhooks: notifications of webhooks no longer configured are failed"
        ),
        Err(e) => tracing::warn!("webhooks: {}", e.message),
    }
}

/// Scans the chain's list of `kind` into the mirror: continues the scan in progress
/// where the last cycle stopped, reads at most [`POLL_PAGES`] pages of [`POLL_PAGE`],
/// and records either the completed scan or where the next cycle continues.
async fn scan(
    db: &Db,
    bridge: &Bridge,
    hub: &Hub,
    token: &str,
    kind: Kind,
    tuning: Reconcile,
) -> Result<chain_requests::ScanState, String> {
    let name = kind.as_str();
    let state = db
        .run(move |conn| Ok(chain_requests::scan_state(conn, name)?))
        .await
        .map_err(|e| e.message)?;
    let number = state.next_scan();
    let mut start = state.next_start();
    let save = |start: i64| {
        db.run(move |conn| Ok(chain_requests::save_progress(conn, name, number, start)?))
    };
    for _ in 0..POLL_PAGES {
        let page = Page {
            start: u32::try_from(start).unwrap_or(0),
            limit: POLL_PAGE,
        };
        // Background: an operator waiting for the legacy slot goes between pages.
        let listed = bridge
            .list(token, kind.listing(), page, CallOptions::background())
            .await;
        let items = match listed {
            Ok(items) => items,
            Err(e) => {
                let _ = save(start).await;
                return Err(e.to_string());
            }
        };
        if let Err(e) = mirror::take_in(db, hub, kind, &items, Some(number)).await {
            let _ = save(start).await;
            return Err(e.message);
        }
        start += i64::try_from(items.len()).unwrap_or(i64::MAX);
        if items.len() < POLL_PAGE as usize {
            let state = db
                .run(move |conn| Ok(chain_requests::complete_scan(conn, name, number)?))
                .await
                .map_err(|e| e.message)?;
            // The whole list is in the mirror: settle the decisions it confirms.
            crate::reconcile::after_scan(db, hub, tuning, kind, number).await;
            return Ok(state);
        }
    }
    save(start).await.map_err(|e| e.message)
}

/// The chain poller (see the module doc).
async fn poll_chain(
    db: Db,
    bridge: Bridge,
    tokens: TokenProvider,
    hub: Hub,
    interval: Duration,
    tuning: Reconcile,
    mut stop: StopSignal,
) {
    let mut ticks = rocket::tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
    loop {
        rocket::tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        let token = match tokens.master_async(&db).await {
            Ok(Some(master)) => master.token,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("live updates: cannot read the master token: {e}");
                continue;
            }
        };
        let mut failed = None;
        let mut baseline = true;
        for kind in [Kind::Partner, Kind::Order] {
            let scanned = rocket::tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                scanned = scan(&db, &bridge, &hub, &token, kind, tuning) => scanned,
            };
            match scanned {
                Ok(state) => baseline &= state.has_baseline(),
                Err(message) => failed = Some(message),
            }
        }
        match failed {
            None => {
                hub.polls.count("ok");
                if baseline && !hub.watching.swap(true, Ordering::AcqRel) {
                    hub.publish("watching", json!({}));
                }
            }
            Some(message) => {
                hub.polls.count("error");
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
        "discarded_by": row.discarded_by,
        "discard_reason": row.discard_reason,
    })
}

/// Publishes outbox changes and notifies the webhooks of rows that failed for good.
async fn watch_outbox(db: Db, hub: Hub, interval: Duration, mut stop: StopSignal) {
    // The newest change seen, and the rows seen at exactly that time (a later look
    // asks for `>=` it, so that rows written in the same instant are not missed).
    let mut since: Option<NaiveDateTime> = None;
    let mut at_since: HashSet<(i64, String, i32)> = HashSet::new();
    let mut baseline = false;
    let mut ticks = rocket::tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
    loop {
        rocket::tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        if !hub.someone_listens() && baseline {
            continue;
        }
        let from = since;
        let rows = match db
            .run(move |conn| Ok(outbox::changed_since(conn, from, OUTBOX_BATCH)?))
            .await
        {
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
            for (row, view) in changed.iter().zip(&views) {
                if row.status == outbox::FAILED {
                    let event_id = notifications::outbox_failed_event_id(row.id, row.attempts);
                    notifier
                        .notify(event_id, Notification::outbox_failed(view))
                        .await;
                }
            }
        }
        let depth = db.run(|conn| Ok(outbox::depth(conn)?)).await.ok();
        hub.publish(
            "outbox",
            json!({
                "rows": views,
                "depth": depth.map(|d| json!({
                    "pending": d.pending, "in_flight": d.in_flight, "done": d.done, "failed": d.failed,
                    "discarded": d.discarded,
                })),
            }),
        );
    }
}
