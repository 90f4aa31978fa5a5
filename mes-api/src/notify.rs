//! Webhook notifications (`MES_WEBHOOKS`): a POST per new OPEN partner or order
//! request and per outbox row that failed for good, so that operators learn in their
//! chat tool that an ERP is waiting.
//!
//! Each webhook has its own background task and bounded queue: [`Notifier::notify`]
//! never waits, a slow or dead endpoint delays only its own messages, and when its
//! queue is full new messages for it are dropped (and counted) rather than piling up.
//! A POST that got no answer, a 5xx, 408 or 429 is retried with exponential backoff
//! (a 429's or 503's `Retry-After`, in seconds, is honoured up to [`MAX_BACKOFF`]);
//! any other answer, a redirect included, is final: redirects are never followed, so
//! a receiver cannot bounce the body (and a bot token's URL) to another address.
//! URLs are never logged (a Telegram URL holds the bot token): logs name the scheme,
//! host and port only. On shutdown, [`Notifier::drain`] delivers what is queued, for
//! a bounded time.

use std::sync::Arc;
use std::time::Duration;

use rocket::tokio::sync::mpsc;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::WebhookFormat;
use crate::metrics::OutcomeCounters;

/// Messages waiting per webhook before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;
/// Attempts per message (the first and the retries).
pub const MAX_ATTEMPTS: u32 = 6;
/// Deadline of one POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; doubled after each failure, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

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

/// The webhooks' queues. Cheap to clone; dropping every clone ends the tasks once
/// their queues are empty, and [`Notifier::drain`] ends them on shutdown.
#[derive(Clone, Debug)]
pub struct Notifier {
    queues: Vec<(String, mpsc::Sender<Notification>)>,
    outcomes: OutcomeCounters,
    closing: Arc<rocket::tokio::sync::watch::Sender<bool>>,
    tasks: Arc<std::sync::Mutex<Vec<rocket::tokio::task::JoinHandle<()>>>>,
}

impl Notifier {
    /// Starts one delivery task per webhook, counting into `outcomes` what becomes of
    /// each notification: `delivered` (a 2xx), `failed` (refused, or given up after
    /// [`MAX_ATTEMPTS`]), `dropped` (its queue was full). `None` when there are none.
    pub fn start(
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
        outcomes.show(&["delivered", "failed", "dropped"]);
        let closing = rocket::tokio::sync::watch::channel(false).0;
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for hook in hooks {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let name = hook.display_name();
            queues.push((name, tx));
            tasks.push(rocket::tokio::spawn(deliver(
                client.clone(),
                hook,
                chat_id.clone(),
                rx,
                closing.subscribe(),
                outcomes.clone(),
            )));
        }
        Some(Notifier {
            queues,
            outcomes,
            closing: Arc::new(closing),
            tasks: Arc::new(std::sync::Mutex::new(tasks)),
        })
    }

    /// Delivers what the queues hold, then ends the delivery tasks; whatever is not
    /// delivered `within` is dropped (and logged as a count). For shutdown: new
    /// notifications are no longer taken once this is called.
    pub async fn drain(&self, within: Duration) {
        self.closing.send_replace(true);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async move {
            for task in tasks {
                let _ = task.await;
            }
        };
        if rocket::tokio::time::timeout(within, all).await.is_err() {
            let left: usize = self
                .queues
                .iter()
                .map(|(_, q)| QUEUE_CAPACITY - q.capacity())
                .sum();
            tracing::warn!(
                "webhooks: stopped after {within:?} with about {left} notifications undelivered"
            );
            for abort in aborts {
                abort.abort();
            }
        }
    }

    /// Queues `notification` for every webhook, without waiting.
    pub fn notify(&self, notification: &Notification) {
        if *self.closing.borrow() {
            return;
        }
        for (name, queue) in &self.queues {
            if queue.try_send(notification.clone()).is_err() {
                self.outcomes.count("dropped");
                tracing::warn!("webhook {name}: queue full or closed, a notification was dropped");
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

async fn deliver(
    client: reqwest::Client,
    hook: Webhook,
    chat_id: Option<String>,
    mut rx: mpsc::Receiver<Notification>,
    mut closing: rocket::tokio::sync::watch::Receiver<bool>,
    outcomes: OutcomeCounters,
) {
    let name = hook.display_name();
    loop {
        let next = if *closing.borrow() {
            // Draining: what is queued, then stop.
            rx.try_recv().ok()
        } else {
            rocket::tokio::select! {
                next = rx.recv() => next,
                _ = closing.changed() => continue,
            }
        };
        let Some(notification) = next else { return };
        let body = notification
            .body(hook.format, chat_id.as_deref())
            .to_string();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let sent = client
                .post(&hook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let outcome = match sent {
                Ok(response) => classify(
                    response.status(),
                    response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                ),
                // Without the URL: reqwest's error text includes it.
                Err(e) => Attempt::Retry(describe(&e), None),
            };
            let (problem, asked) = match outcome {
                Attempt::Delivered => {
                    outcomes.count("delivered");
                    break;
                }
                Attempt::Refused(problem) => {
                    outcomes.count("failed");
                    tracing::warn!(
                        "webhook {name}: a {} notification was refused ({problem}); not retried",
                        notification.event
                    );
                    break;
                }
                Attempt::Retry(problem, asked) => (problem, asked),
            };
            if attempt == MAX_ATTEMPTS {
                outcomes.count("failed");
                tracing::warn!(
                    "webhook {name}: giving up on a {} notification after {attempt} attempts: {problem}",
                    notification.event
                );
                break;
            }
            let wait = asked.map_or(backoff, |asked| asked.max(backoff));
            tracing::info!(
                "webhook {name}: attempt {attempt} failed ({problem}); retrying in {wait:?}"
            );
            rocket::tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
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
