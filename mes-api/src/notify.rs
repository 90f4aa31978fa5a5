//! Webhook notifications (`MES_WEBHOOKS`): a POST per new OPEN partner or order
//! request and per outbox row that failed for good, so that operators learn in their
//! chat tool that an ERP is waiting.
//!
//! Each notification is a row of `notifications` ([`mes_core::db::notifications`]),
//! one per event and webhook, written where the event is found ([`Notifier::record`],
//! [`Notifier::notify`]) under an event id the event determines, so that instances
//! sharing the database write one row and a restart or a crash loses none. Each
//! webhook has its own worker in each instance: it claims its due rows one at a time
//! under a lease, POSTs each with the event id as `Idempotency-Key`, and settles it.
//! A slow or dead endpoint delays only its own rows. A POST that got no answer, a
//! 5xx, 408 or 429 is retried with backoff (1 s doubling up to 10 min, a `Retry-After`
//! in seconds honoured up to that), up to 12 attempts; any other answer, a redirect
//! included, is final: redirects are never followed, so a receiver cannot bounce the
//! body (and a bot token's URL) to another address. URLs are never logged nor shown (a
//! Telegram URL holds the bot token): logs, the API and the console name the scheme,
//! host and port only. On shutdown the workers stop; what they had not sent stays
//! pending for the next start (or another instance).

use std::sync::Arc;
use std::time::Duration;

use mes_core::db::notifications::{self as rows, Failure, NewNotification, NotificationRow};
use mes_core::db::{self as db_core, DbConnection};
use rocket::tokio::sync::Notify;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::StopSignal;
use crate::config::WebhookFormat;
use crate::db::Db;
use crate::metrics::OutcomeCounters;

pub use mes_core::db::notifications::{MAX_ATTEMPTS, MAX_BACKOFF};

/// Deadline of one POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker's claim on a row lasts: one POST and its settlement. A row
/// whose worker died is sent again once it ends.
pub const LEASE: Duration = Duration::from_secs(30);
/// Longest pause between two looks for due rows of a webhook when nothing woke its
/// worker (rows another instance wrote, retries coming due).
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// One configured webhook (`MES_WEBHOOKS`, read by `Settings::webhooks`).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST (may hold a secret, e.g. a bot token: never logged).
    pub url: String,
    /// What to POST.
    pub format: WebhookFormat,
}

impl Webhook {
    /// What logs may show of the URL: scheme, host and port, never its path (a
    /// Telegram URL holds the bot token) nor a user or password.
    pub fn display_name(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "<invalid url>".to_owned(),
        }
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.display_name())
            .field("format", &self.format)
            .finish()
    }
}

/// What a webhook is told about.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `new_request` or `outbox_failed`.
    pub event: &'static str,
    /// A sentence for people (what Telegram mode sends).
    pub text: String,
    /// The details, for programs.
    pub data: Value,
}

impl Notification {
    /// A new OPEN partner (`kind` = `partner`) or order (`order`) request.
    pub fn new_request(kind: &str, id: &str, item: &Value) -> Notification {
        let agent = item
            .get("issuing_agent")
            .and_then(Value::as_str)
            .unwrap_or("an unknown agent");
        let what = if kind == "order" {
            let description = item
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!("New order request {id}{description} from {agent}")
        } else {
            format!("New partner request {id} from {agent}")
        };
        Notification {
            event: "new_request",
            text: format!("{what}: waiting for an operator."),
            data: json!({"kind": kind, "id": id, "request": item}),
        }
    }

    /// An outbox row the relay gave up on.
    pub fn outbox_failed(row: &Value) -> Notification {
        let field = |name: &str| row.get(name).and_then(Value::as_str).unwrap_or("?");
        Notification {
            event: "outbox_failed",
            text: format!(
                "A chain message could not be delivered and will not be retried: {} for {} (outbox row {}): {}",
                field("topic"),
                field("ordering_key"),
                row.get("id").map(Value::to_string).unwrap_or_default(),
                field("last_error"),
            ),
            data: row.clone(),
        }
    }

    /// The body to POST in `format`.
    pub fn body(&self, format: WebhookFormat, chat_id: Option<&str>) -> Value {
        match format {
            WebhookFormat::Json => json!({
                "event": self.event,
                "text": self.text,
                "data": self.data,
            }),
            WebhookFormat::Telegram => json!({"chat_id": chat_id, "text": self.text}),
        }
    }
}

/// The webhooks, as the places that find events see them: they record notifications
/// ([`Notifier::record`], [`Notifier::notify`]) and wake the workers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    db: Db,
    hooks: Arc<Vec<Webhook>>,
    chat_id: Option<String>,
    /// One per webhook, in the order of `hooks`: wakes its worker for new rows.
    wakes: Arc<Vec<Notify>>,
    outcomes: OutcomeCounters,
    client: reqwest::Client,
}

impl Notifier {
    /// The notifier of `hooks` (`None` when there are none, or the HTTP client cannot
    /// be built), counting into `outcomes` what becomes of each attempt: `delivered` (a
    /// 2xx), `retried` (to be tried again), `failed` (refused, or given up after
    /// [`MAX_ATTEMPTS`]). Its workers are started by [`Notifier::workers`].
    pub fn new(
        db: Db,
        hooks: Vec<Webhook>,
        chat_id: Option<String>,
        outcomes: OutcomeCounters,
    ) -> Option<Notifier> {
        if hooks.is_empty() {
            return None;
        }
        let client = match reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            // A receiver's redirect is an answer, not an instruction: following it
            // would send the body to an address nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!("webhooks disabled: cannot build the HTTP client: {e}");
                return None;
            }
        };
        outcomes.show(&["delivered", "retried", "failed"]);
        Some(Notifier {
            db,
            wakes: Arc::new(hooks.iter().map(|_| Notify::new()).collect()),
            hooks: Arc::new(hooks),
            chat_id,
            outcomes,
            client,
        })
    }

    /// Starts one delivery worker per webhook among `app`'s background jobs: each runs
    /// until the server stops.
    pub fn start_workers(&self, app: &crate::app::App) {
        for index in 0..self.hooks.len() {
            let notifier = self.clone();
            app.spawn_background(move |stop| notifier.work(index, stop));
        }
    }

    /// Writes `notification` (event `event_id`) for every webhook on `conn`, once per
    /// webhook however often it is called (see the module doc); returns how many rows
    /// are new. For callers that found the event inside [`Db::run`]; they call
    /// [`Notifier::wake`] afterwards.
    pub fn record(
        &self,
        conn: &mut DbConnection,
        event_id: &str,
        notification: &Notification,
    ) -> diesel::QueryResult<usize> {
        let rows: Vec<(String, String)> = self
            .hooks
            .iter()
            .map(|hook| {
                let body = notification.body(hook.format, self.chat_id.as_deref());
                (hook.display_name(), body.to_string())
            })
            .collect();
        let new: Vec<NewNotification<'_>> = self
            .hooks
            .iter()
            .zip(&rows)
            .map(|(hook, (target, payload))| NewNotification {
                event_id,
                kind: notification.event,
                url: &hook.url,
                target,
                payload,
            })
            .collect();
        rows::insert(conn, &new)
    }

    /// Wakes every worker: rows were just recorded.
    pub fn wake(&self) {
        for wake in self.wakes.iter() {
            wake.notify_one();
        }
    }

    /// Records `notification` (event `event_id`) for every webhook and wakes the
    /// workers; a database that does not take it is logged (the event is lost).
    pub async fn notify(&self, event_id: String, notification: Notification) {
        let notifier = self.clone();
        let recorded = self
            .db
            .run(move |conn| Ok(notifier.record(conn, &event_id, &notification)?))
            .await;
        match recorded {
            Ok(_) => self.wake(),
            Err(e) => tracing::error!("webhooks: cannot record a notification: {}", e.message),
        }
    }

    /// The worker of webhook `index`: claims its due rows one at a time, POSTs each,
    /// settles it, until `stop`.
    async fn work(self, index: usize, mut stop: StopSignal) {
        let Some(hook) = self.hooks.get(index).cloned() else {
            return;
        };
        let name = hook.display_name();
        let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(30));
        loop {
            if *stop.borrow() {
                return;
            }
            let url = hook.url.clone();
            let claimed = self
                .db
                .run(move |conn| Ok(rows::claim_due(conn, &url, db_core::now(), 1, lease)?))
                .await;
            let row = match claimed {
                Ok(mut claimed) if !claimed.is_empty() => claimed.remove(0),
                Ok(_) => {
                    rocket::tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        () = self.wakes[index].notified() => {}
                        () = rocket::tokio::time::sleep(IDLE_POLL) => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        "webhook {name}: cannot read the notifications: {}",
                        e.message
                    );
                    rocket::tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        () = rocket::tokio::time::sleep(IDLE_POLL) => {}
                    }
                    continue;
                }
            };
            let outcome = rocket::tokio::select! {
                _ = stop.wait_for(|stop| *stop) => None,
                outcome = self.post(&hook, &row) => Some(outcome),
            };
            let Some(outcome) = outcome else {
                // Stopping mid-POST: the row goes back unsent (the receiver may have
                // it; the next POST carries the same Idempotency-Key).
                let row = row.clone();
                let _ = self
                    .db
                    .run(move |conn| Ok(rows::release(conn, &row)?))
                    .await;
                return;
            };
            self.settle(&name, row, outcome).await;
        }
    }

    /// One POST of `row` to `hook`.
    async fn post(&self, hook: &Webhook, row: &NotificationRow) -> Attempt {
        let sent = self
            .client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &row.event_id)
            .body(row.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => classify(
                response.status(),
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            ),
            // Without the URL: reqwest's error text includes it.
            Err(e) => Attempt::Retry(describe(&e), None),
        }
    }

    /// Records what became of `row`'s attempt, counts it and logs what is not a
    /// delivery.
    async fn settle(&self, name: &str, row: NotificationRow, outcome: Attempt) {
        let (kind, attempts) = (row.kind.clone(), row.attempts);
        let settled = self
            .db
            .run(move |conn| {
                Ok(match outcome {
                    Attempt::Delivered => rows::mark_delivered(conn, &row)?,
                    Attempt::Refused(problem) => {
                        rows::record_failure(conn, &row, &problem, Failure::Final)?
                    }
                    Attempt::Retry(problem, asked) => {
                        rows::record_failure(conn, &row, &problem, Failure::Retry(asked))?
                    }
                })
            })
            .await;
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                // The lease ends and the row is sent again.
                tracing::warn!("webhook {name}: cannot record an attempt: {}", e.message);
                return;
            }
        };
        let problem = settled.last_error.as_deref().unwrap_or("?");
        match settled.status.as_str() {
            rows::DELIVERED => self.outcomes.count("delivered"),
            rows::FAILED => {
                self.outcomes.count("failed");
                tracing::warn!(
                    "webhook {name}: gave up on a {kind} notification after {attempts} attempts: {problem}"
                );
            }
            _ => {
                self.outcomes.count("retried");
                tracing::info!(
                    "webhook {name}: attempt {attempts} of a {kind} notification failed ({problem}); next at {}",
                    settled.next_attempt_at
                );
            }
        }
    }
}

/// What to do after one POST.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// A 2xx.
    Delivered,
    /// Worth trying again (no answer, 5xx, 408, 429), after at least the delay the
    /// receiver asked for, if any.
    Retry(String, Option<Duration>),
    /// The receiver's answer is final (any other status, redirects included).
    Refused(String),
}

/// Sorts an answer's status: only the absence of an answer, a server error, 408 and
/// 429 are worth retrying; a 4xx would be answered the same again and a 3xx points
/// elsewhere (not followed).
fn classify(status: reqwest::StatusCode, retry_after: Option<&str>) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let text = format!("answered {status}");
    let retryable = status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if !retryable {
        return Attempt::Refused(text);
    }
    // Seconds only: an HTTP date there is rare, and the backoff covers it.
    let asked = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_BACKOFF));
    Attempt::Retry(text, asked)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_no_answer_server_errors_408_and_429_are_retried() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(S::OK, None), Attempt::Delivered);
        assert!(matches!(
            classify(S::TEMPORARY_REDIRECT, None),
            Attempt::Refused(_)
        ));
        assert!(matches!(classify(S::NOT_FOUND, None), Attempt::Refused(_)));
        assert!(matches!(
            classify(S::REQUEST_TIMEOUT, None),
            Attempt::Retry(_, None)
        ));
        assert_eq!(
            classify(S::TOO_MANY_REQUESTS, Some("7")),
            Attempt::Retry(
                "answered 429 Too Many Requests".into(),
                Some(Duration::from_secs(7))
            )
        );
        assert_eq!(
            classify(S::SERVICE_UNAVAILABLE, Some("99999")),
            Attempt::Retry("answered 503 Service Unavailable".into(), Some(MAX_BACKOFF))
        );
    }

    #[test]
    fn bodies_in_both_formats() {
        let item = json!({"issuing_agent": "02ab", "status": "OPEN"});
        let n = Notification::new_request("partner", "9df8", &item);
        assert_eq!(
            n.text,
            "New partner request 9df8 from 02ab: waiting for an operator."
        );
        let body = n.body(WebhookFormat::Json, None);
        assert_eq!(body["event"], "new_request");
        assert_eq!(body["data"]["request"], item);
        let body = n.body(WebhookFormat::Telegram, Some("-100"));
        assert_eq!(body, json!({"chat_id": "-100", "text": n.text}));
        let row = json!({"id": 7, "topic": "BLK_Rec", "ordering_key": "unit:PT10", "last_error": "no such record"});
        let n = Notification::outbox_failed(&row);
        assert!(
            n.text
                .contains("BLK_Rec for unit:PT10 (outbox row 7): no such record")
        );
    }
}
