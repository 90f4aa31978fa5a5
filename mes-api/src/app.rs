//! The server's state ([`App`]): the database, the bridge, the services the routes
//! call, and the background jobs (outbox relay, daily report, chain watchers).
//!
//! Routes stay thin (parse, authorise, call a service, answer), so a library user can
//! drive the same operations without HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_bridge::bridge::Bridge;
use kafka_bridge::relay::{Relay, RelayConfig};

use mes_core::db::outbox::{self, OutboxDepth};

use crate::auth::AuthCache;
use crate::config::{ConfigError, Settings};
use crate::db::Db;
use crate::embedded::Embedded;
use crate::error::{ApiError, ErrorCode};
use crate::events::Hub;
use crate::limits::Limits;
use crate::metrics::{HttpMetrics, Metrics};
use crate::service::requests::RequestService;
use crate::service::schedule::{DailyReportJob, ReportSchedule};
use crate::service::tokens::TokenProvider;
use crate::service::units::{ChainHook, UnitService};
use crate::throttled::Throttled;

/// Everything the routes share. Kept in Rocket's managed state.
pub struct App {
    /// The settings in use.
    pub settings: Settings,
    /// The database.
    pub db: Db,
    /// The chain, through Kafka.
    pub bridge: Bridge,
    /// What the database said of operator keys and sessions lately.
    pub auth: AuthCache,
    /// Rate limits: chain calls per key, failed sign-ins per address.
    pub limits: Limits,
    /// HTTP figures for `/metrics`, and the requests in flight that shutdown waits for.
    pub http_metrics: Arc<HttpMetrics>,
    /// `/metrics`: this server's registry of everything above that counts.
    pub metrics: Metrics,
    /// Production units, with the built-in chain hook (and any a library user adds).
    pub units: UnitService,
    /// Partner and order requests: list, answer, settle late replies.
    pub requests: RequestService,
    /// The master token, for everything that sends to the chain.
    pub tokens: TokenProvider,
    /// The outbox relay: delivers `chain_outbox` to the chain. Routes that enqueue call
    /// [`Relay::notify`]; [`App::start_background`] runs it.
    pub relay: Relay,
    /// When the daily report runs (`MES_REPORT_*`).
    pub schedule: ReportSchedule,
    /// Live updates for the console's event stream and the webhooks.
    pub events: Hub,
    embedded: Mutex<Option<Embedded>>,
    stop: rocket::tokio::sync::watch::Sender<bool>,
    background: Mutex<Vec<rocket::tokio::task::JoinHandle<()>>>,
    started: std::sync::atomic::AtomicBool,
    served_over_tls: std::sync::atomic::AtomicBool,
    outbox_depth: Throttled<Option<OutboxDepth>>,
}

/// How often `/metrics` and `/health/ready` may read the database, together.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

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

/// Longest wait for each background job (the relay, the daily job, the poller…) to
/// stop on shutdown: a send in progress is settled within the request timeout.
const BACKGROUND_STOP_GRACE: Duration = Duration::from_secs(60);

/// How long a stopping server lets HTTP calls accepted before the stop run: a chain
/// call's deadline (`MES_REQUEST_TIMEOUT_MS`) plus time to write the answer, in whole
/// seconds as Rocket's `shutdown.grace` takes it (`server::rocket` sets it from this).
pub fn shutdown_grace(request_timeout: Duration) -> Duration {
    let secs = request_timeout.as_secs() + u64::from(request_timeout.subsec_nanos() > 0);
    Duration::from_secs(secs.saturating_add(2))
}

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
        let limits = Limits::new(settings.rate_limit_per_sec, settings.auth_failures_per_min);
        let tokens = TokenProvider::default();
        let events = Hub::default();
        let relay = Relay::new(
            db.pool().clone(),
            bridge.clone(),
            tokens.relay_source(&db),
            RelayConfig {
                record_replies: settings.record_replies,
                max_attempts: settings.outbox_max_attempts,
                max_age: Some(settings.outbox_max_age).filter(|age| !age.is_zero()),
                ..relay_config(settings.request_timeout())
            },
        )
        .map_err(|e| ConfigError::new("MES_REQUEST_TIMEOUT_MS", e.to_string()))?;
        let http_metrics = Arc::new(HttpMetrics::default());
        let metrics = Metrics::new(&http_metrics, &bridge, &relay, &events);
        Ok(App {
            requests: RequestService::new(
                db.clone(),
                bridge.clone(),
                events.clone(),
                tokens.clone(),
            ),
            units: UnitService::new(ChainHook::with_tokens(tokens.clone())),
            tokens,
            settings,
            db,
            bridge,
            auth: AuthCache::default(),
            limits,
            http_metrics,
            metrics,
            relay,
            schedule,
            events,
            embedded: Mutex::new(embedded),
            stop: rocket::tokio::sync::watch::channel(false).0,
            background: Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
            served_over_tls: std::sync::atomic::AtomicBool::new(false),
            outbox_depth: Throttled::new(PROBE_EVERY),
        })
    }

    /// The outbox's depth, read at most once per [`PROBE_EVERY`] whatever the request
    /// rate; `None` when the database did not answer. The same read is the readiness
    /// probe of the database.
    pub async fn outbox_depth(&self) -> Option<OutboxDepth> {
        self.outbox_depth
            .get(|| async { self.db.run(|conn| Ok(outbox::depth(conn)?)).await.ok() })
            .await
    }

    /// Records whether Rocket serves TLS itself (`ROCKET_TLS`), which makes session
    /// cookies `Secure` unless `MES_COOKIE_SECURE` says otherwise.
    pub fn set_served_over_tls(&self, tls: bool) {
        self.served_over_tls
            .store(tls, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether session cookies get the `Secure` attribute: `MES_COOKIE_SECURE`, else
    /// whether Rocket serves TLS itself.
    pub fn cookie_secure(&self) -> bool {
        self.settings.cookie_secure.unwrap_or_else(|| {
            self.served_over_tls
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Starts the outbox relay and the daily-report job (its start-up catch-up
    /// first), once; [`App::shutdown`] stops them. The server calls it on liftoff.
    pub fn start_background(&self) {
        use std::sync::atomic::Ordering;
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let relay = self.relay.clone();
        self.spawn_background(|stop| async move {
            tracing::info!(job = "outbox-relay", "started");
            relay.run(stopped(stop)).await;
            tracing::info!(job = "outbox-relay", "stopped");
        });
        let schedule = self.schedule.clone();
        let cron = format!("{} ({})", schedule.cron_expr(), schedule.time_zone());
        let pool = self.db.pool().clone();
        let relay = self.relay.clone();
        self.spawn_background(|mut job_stop| async move {
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
        let (bridge, events) = (self.bridge.clone(), self.events.clone());
        self.spawn_background(|stop| watch_fences(bridge, events, stop));
        let (late, requests) = (self.bridge.late_replies(), self.requests.clone());
        self.spawn_background(|stop| settle_late_replies(late, requests, stop));
        let (db, days) = (self.db.clone(), self.settings.outbox_retention_days);
        self.spawn_background(|stop| retention(db, days, stop, OUTBOX_RETENTION));
        let (db, days) = (self.db.clone(), self.settings.notification_retention_days);
        self.spawn_background(|stop| retention(db, days, stop, NOTIFICATION_RETENTION));
    }

    /// Runs `task` as one of the server's background jobs, like the relay and the
    /// daily job: `task` gets the stop signal, which [`App::shutdown`] raises before
    /// it waits for the task to end. Nothing starts once the server is stopping.
    pub fn spawn_background<F, Fut>(&self, task: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        // Under the lock `shutdown` drains the tasks with: a task is either joined
        // there or never started.
        let mut background = lock(&self.background);
        if *self.stop.borrow() {
            return;
        }
        background.push(rocket::tokio::spawn(task(self.stop.subscribe())));
    }

    /// Stops in the order that loses nothing: lets the HTTP calls in flight finish
    /// (Rocket no longer accepts new ones), stops the background jobs and waits for
    /// them (the relay after its current row, the daily job, the chain poller and the
    /// outbox watcher: everything [`App::spawn_background`] started), waits for the
    /// bridge's pending calls to be answered or time out, stops the bridge (flushing
    /// the producer), then stops the embedded broker and chain. Webhook notifications
    /// not yet sent stay in the database (their workers are background jobs).
    pub async fn shutdown(&self) {
        let grace = shutdown_grace(self.settings.request_timeout());
        if !self.http_metrics.wait_idle(grace).await {
            tracing::warn!(
                "{} HTTP calls were still running after {grace:?}",
                self.http_metrics.in_flight()
            );
        }
        let tasks: Vec<_> = {
            let mut background = lock(&self.background);
            self.stop.send_replace(true);
            background.drain(..).collect()
        };
        for task in tasks {
            if rocket::tokio::time::timeout(BACKGROUND_STOP_GRACE, task)
                .await
                .is_err()
            {
                tracing::warn!("a background job did not stop within {BACKGROUND_STOP_GRACE:?}");
            }
        }
        // Background callers (the poller) stopped with the other jobs; what is left
        // waits for its reply or its deadline.
        let deadline = self.settings.request_timeout() + Duration::from_secs(1);
        if !self.bridge.drain(deadline).await {
            tracing::warn!(
                "{} chain requests were still waiting after {deadline:?}",
                self.bridge.pending()
            );
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
}

/// What a background job started by [`App::spawn_background`] watches: it turns
/// `true` when the server stops (and closes if the [`App`] is dropped).
pub type StopSignal = rocket::tokio::sync::watch::Receiver<bool>;

/// Completes once `stop` turns `true` or closes.
async fn stopped(mut stop: StopSignal) {
    // An error means the sender is gone: the App was dropped, so stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How often the fences are looked at for the console's "chain is behind": a lock and
/// a comparison, and a fence lasts seconds to minutes.
const FENCE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Publishes a `chain` event (`{"fences": [{"shape", "since_secs", "lifts_in_secs"}]}`)
/// whenever a reply-shape fence goes up or comes down, so consoles can say "Chain is
/// behind — waiting for an earlier answer" (docs/protocol.md §9).
async fn watch_fences(bridge: Bridge, events: Hub, mut stop: StopSignal) {
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

/// How often retention looks for delivered rows to purge.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// What one retention job purges, and how it says so.
struct Retention {
    /// The job's name in the logs.
    job: &'static str,
    /// What its log line says it purged.
    purged: &'static str,
    /// Purges up to a batch of rows settled before a time; answers how many.
    purge: fn(
        &mut mes_core::db::DbConnection,
        chrono::NaiveDateTime,
        i64,
    ) -> diesel::QueryResult<usize>,
}

/// Outbox retention (`MES_OUTBOX_RETENTION_DAYS`): empties the payload of rows delivered
/// more than the days ago, keeping each as a tombstone with its dedup key
/// ([`outbox::purge_delivered`]).
const OUTBOX_RETENTION: Retention = Retention {
    job: "outbox-retention",
    purged: "purged delivered outbox rows",
    purge: outbox::purge_delivered,
};

/// Notification retention (`MES_NOTIFICATION_RETENTION_DAYS`): deletes webhook
/// notifications delivered more than the days ago
/// ([`mes_core::db::notifications::purge_delivered`]).
const NOTIFICATION_RETENTION: Retention = Retention {
    job: "notification-retention",
    purged: "deleted delivered notifications",
    purge: mes_core::db::notifications::purge_delivered,
};

/// A retention job: at start and then hourly, purges what was settled more than `days`
/// days ago, [`crate::cli::PURGE_BATCH`] rows per transaction. Safe on several
/// instances at once: a row is purged once, whoever gets there first.
async fn retention(db: Db, days: u32, mut stop: StopSignal, what: Retention) {
    let age = chrono::Duration::days(i64::from(days));
    loop {
        let mut purged = 0;
        while let Some(before) = mes_core::db::now().checked_sub_signed(age) {
            let purge = what.purge;
            let batch = db
                .run(move |conn| Ok(purge(conn, before, crate::cli::PURGE_BATCH)?))
                .await;
            let n = match batch {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(job = what.job, "{}", e.message);
                    break;
                }
            };
            purged += n;
            if n < usize::try_from(crate::cli::PURGE_BATCH).unwrap_or(0) || *stop.borrow() {
                break;
            }
        }
        if purged > 0 {
            tracing::info!(job = what.job, purged, days, "{}", what.purged);
        }
        rocket::tokio::select! {
            () = rocket::tokio::time::sleep(RETENTION_INTERVAL) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Settles decisions from replies that came after their call ended, until `stop`.
async fn settle_late_replies(
    mut late: rocket::tokio::sync::broadcast::Receiver<kafka_bridge::bridge::LateReply>,
    requests: RequestService,
    mut stop: StopSignal,
) {
    use rocket::tokio::sync::broadcast::error::RecvError;
    loop {
        let reply = rocket::tokio::select! {
            reply = late.recv() => reply,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match reply {
            Ok(reply) => {
                if let Err(e) = requests.settle_late_reply(&reply).await {
                    // The mirror's scans settle the decision instead.
                    tracing::warn!(corr = %reply.corr, "settling a late reply: {e}");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!("{missed} late replies were not looked at; the mirror settles them");
            }
            Err(RecvError::Closed) => return,
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
        if database {
            ErrorCode::BrokerUnavailable
        } else {
            ErrorCode::DatabaseUnavailable
        },
        format!("not ready: {}", missing.join(", ")),
    )
}
