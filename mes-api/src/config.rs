//! Settings: `Rocket.toml` profiles, then `MES_*` environment variables on top.
//!
//! [`Settings`] is the one list of settings: each field with its type and default.
//! figment merges the defaults, `Rocket.toml` and the environment, and serde reads
//! the result into the typed fields, so a new field is read without a second edit.
//! Every default works on one machine (the embedded demo), so `cargo run -p mes-api`
//! needs no configuration; `example.env` lists every setting (a test checks it). A
//! problem is reported as one [`ConfigError`] naming the setting, never a panic.
//!
//! Here: the settings, their checks and what the server derives from them. Where they
//! come from (figment, the environment) is in `sources`; what faces the chain (reply
//! trust, topics, key files, the bridge's configuration) in `chain`; how one value is
//! read from its text (durations, words) in `values`.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use kafka_bridge::bridge::CorrelationMode;
use kafka_bridge::kafka::TopicNames;
use kafka_bridge::relay::RecordReplies;
use rocket::tokio::sync::Semaphore;
use serde::{Deserialize, Serialize};

use crate::notify::Webhook;
use crate::service::schedule::{ReportSchedule, ScheduleError};

/// `MES_KAFKA_BROKERS` value that starts an in-process broker and chain simulator.
pub const EMBEDDED: &str = "embedded";

/// Prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "MES_";

/// Prefix of the environment variables passed to librdkafka (`MES_KAFKA_SASL_PASSWORD`
/// → `sasl.password`); `MES_KAFKA_BROKERS` is the one exception.
pub const KAFKA_ENV_PREFIX: &str = "MES_KAFKA_";

/// Longest `MES_REQUEST_TIMEOUT_MS`: one hour. Larger values would overflow the
/// timers and leases derived from it (six times it, twice it, Rocket's grace).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;

/// Largest `MES_RATE_LIMIT_PER_SEC` and `MES_AUTH_FAILURES_PER_MIN`: far above what a
/// chain answers, so in effect no limit, while the limiter's arithmetic stays exact.
pub const MAX_RATE_LIMIT_PER_SEC: u32 = 1_000_000;

/// A setting that cannot be used, named as the user wrote it (the environment
/// variable), so the one line printed at start-up says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The environment variable (or `Rocket.toml` key) at fault, e.g. `MES_DATABASE_URL`.
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `setting`.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Declares [`Settings`]: each field with its type, its default and, after `=>`, what
/// a valid value is and what the error says otherwise (it names `MES_<FIELD>`).
macro_rules! settings {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr $(=> $valid:expr, $why:expr)?;)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $name {
            /// Each field's name and its attributes as written (doc comments included):
            /// what `mes-api --help` shows of the settings (`config::reference`).
            const FIELD_ATTRIBUTES: &'static [(&'static str, &'static [&'static str])] = &[
                $((stringify!($field), &[$(stringify!($field_meta)),*]),)*
            ];

            /// Checks each field against its own rule, in the order they are declared.
            fn check_fields(&self) -> Result<(), ConfigError> {
                $($({
                    let $field = &self.$field;
                    if !$valid {
                        return Err(ConfigError::new(env_name(stringify!($field)), $why));
                    }
                })?)*
                Ok(())
            }
        }
    };
}

/// One day, the bound of several durations.
const DAY: Duration = Duration::from_secs(86_400);

settings! {
    /// Every setting of the server and the CLI, with its default. Field `x` is read from
    /// `MES_X` (or `x` in the active `Rocket.toml` profile).
    #[derive(Clone, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        /// Where local files live (the default SQLite database, the demo's key file).
        pub data_dir: PathBuf = PathBuf::from("mes-data");
        /// A PostgreSQL URL (`postgres://…`) or a SQLite path; default `{data_dir}/mes.db`.
        pub database_url: Option<String> = None
            => database_url.as_ref().is_none_or(|url| !url.trim().is_empty()),
            "is empty; give a postgres:// URL or a SQLite file path";
        /// Largest number of pooled database connections.
        pub database_pool_size: u32 = 16 => *database_pool_size >= 1, "must be at least 1";
        /// Longest wait for a pooled connection before a call gets 503, e.g. `2s`,
        /// `500ms` (a bare number is seconds).
        #[serde(with = "values::duration")]
        pub database_pool_timeout: Duration = Duration::from_secs(2)
            => !database_pool_timeout.is_zero() && database_pool_timeout.as_secs() <= 3600,
            "must be more than 0 and at most 1h";
        /// PostgreSQL `statement_timeout` of every pooled session, e.g. `5s`; `0` leaves
        /// the database's own setting.
        #[serde(with = "values::duration")]
        pub database_statement_timeout: Duration = Duration::from_secs(5)
            => *database_statement_timeout <= DAY, "must be at most 24h (0 turns it off)";
        /// The cluster's `bootstrap.servers` (`host:port,…`), or `embedded` for the
        /// in-process broker and chain simulator of the demo.
        // Not among the defaults figment merges, so that `kafka_brokers_explicit` can
        // tell whether it was given.
        #[serde(skip_serializing)]
        pub kafka_brokers: String = EMBEDDED.to_owned()
            => !kafka_brokers.trim().is_empty(), "is empty; give host:port[,host:port…] or `embedded`";
        /// Whether [`Settings::kafka_brokers`] was given (environment or `Rocket.toml`)
        /// rather than defaulted: the embedded demo runs on a database the user named
        /// only when asked for by name, so that it never seeds a real database by
        /// accident (docs/security.md, "Demo data").
        #[serde(skip)]
        pub kafka_brokers_explicit: bool = false;
        /// Extra librdkafka settings (`MES_KAFKA_*` and `[kafka]` in `Rocket.toml`).
        pub kafka: BTreeMap<String, String> = BTreeMap::new();
        /// Deadline of one chain request, in milliseconds.
        pub request_timeout_ms: u64 = 10_000
            => (1..=MAX_REQUEST_TIMEOUT_MS).contains(request_timeout_ms),
            format!("must be 1 to {MAX_REQUEST_TIMEOUT_MS} (milliseconds, at most one hour)");
        /// `auto`, `id` or `legacy` (docs/protocol.md §9).
        #[serde(with = "values::word")]
        pub correlation: CorrelationMode = CorrelationMode::Auto;
        /// `wait` (default) or `none`: whether the outbox relay waits for the chain's
        /// reply to `BLK_Rty`/`BLK_Rec` messages, or marks them delivered once the broker
        /// has them (for gateways that never answer record topics).
        #[serde(with = "values::word")]
        pub record_replies: RecordReplies = RecordReplies::Wait;
        /// Attempts after which an outbox row the chain never answered becomes `failed`
        /// (with the reason, and the `outbox_failed` webhook); unset: no limit.
        pub outbox_max_attempts: Option<u32> = None
            => outbox_max_attempts.is_none_or(|n| n >= 1), "must be at least 1 (unset: no limit)";
        /// Age after which an undelivered outbox row becomes `failed` (with the reason,
        /// and the `outbox_failed` webhook), e.g. `7d`, `36h`; `0` turns the cap off. A
        /// row an operator retried counts from the retry.
        #[serde(with = "values::duration")]
        pub outbox_max_age: Duration = kafka_bridge::relay::DEFAULT_MAX_AGE
            => *outbox_max_age <= 3650 * DAY, "must be at most 3650d (0 turns it off)";
        /// Days a delivered outbox row keeps its payload; then retention empties it,
        /// keeping the row (and its dedup key) as a tombstone. Failed rows are kept whole.
        pub outbox_retention_days: u32 = 30
            => (1..=36_500).contains(outbox_retention_days), "must be 1 to 36500 (days)";
        /// Days a delivered webhook notification is kept (`GET /api/notifications`
        /// lists it); then retention deletes it. Pending and failed ones are kept.
        pub notification_retention_days: u32 = 30
            => (1..=36_500).contains(notification_retention_days), "must be 1 to 36500 (days)";
        /// Most chain requests in flight before calls are refused with 503.
        pub max_in_flight: usize = 1024
            => (1..=Semaphore::MAX_PERMITS).contains(max_in_flight),
            format!("must be 1 to {}", Semaphore::MAX_PERMITS);
        /// Behind a gateway that echoes only the token: how long a request that ended
        /// without its reply keeps new requests of its shape waiting for that reply, e.g.
        /// `2m`, `90s` (a bare number is seconds). docs/protocol.md §9.
        #[serde(with = "values::duration")]
        pub legacy_fence_max: Duration = Duration::from_secs(120)
            => !legacy_fence_max.is_zero() && *legacy_fence_max <= DAY,
            "must be more than 0 and at most 24h";
        /// Complete scans of the chain's list that must still show a request OPEN before
        /// an answer sent to it but never confirmed is `not_applied` (docs/protocol.md §10).
        pub reconcile_after_scans: u32 = 3 => *reconcile_after_scans >= 1, "must be at least 1";
        /// Create missing topics at start-up (turn off where the cluster forbids it).
        pub create_topics: bool = true;
        /// Name of `BLK_Part_Lst`.
        pub topic_partner_list: String = TopicNames::default().partner_list
            => topic_name(topic_partner_list), TOPIC_NAME;
        /// Name of `BLK_Part_Ans`.
        pub topic_partner_answer: String = TopicNames::default().partner_answer
            => topic_name(topic_partner_answer), TOPIC_NAME;
        /// Name of `BLK_Act_Lst`.
        pub topic_order_list: String = TopicNames::default().order_list
            => topic_name(topic_order_list), TOPIC_NAME;
        /// Name of `BLK_Act_Ans`.
        pub topic_order_answer: String = TopicNames::default().order_answer
            => topic_name(topic_order_answer), TOPIC_NAME;
        /// Name of `BLK_Rty`.
        pub topic_record_type: String = TopicNames::default().record_type
            => topic_name(topic_record_type), TOPIC_NAME;
        /// Name of `BLK_Rec`.
        pub topic_record: String = TopicNames::default().record
            => topic_name(topic_record), TOPIC_NAME;
        /// Name of `BLK_Res`.
        pub topic_reply: String = TopicNames::default().reply
            => topic_name(topic_reply), TOPIC_NAME;
        /// File with the MES's secp256k1 secret key (64 hex digits, `mes-api keygen`);
        /// when set, every request is signed.
        pub signing_key_file: Option<PathBuf> = None;
        /// File with the gateway's public key (66 hex digits); when set, only replies
        /// signed by it are accepted.
        pub gateway_key_file: Option<PathBuf> = None;
        /// `signed` (default): the server starts against a real broker only with
        /// [`Settings::gateway_key_file`]; `unsigned`: the operator accepts replies nobody
        /// signed, from a gateway that cannot sign (docs/security.md).
        #[serde(with = "values::word")]
        pub reply_trust: ReplyTrust = ReplyTrust::Signed;
        /// Cron expression (with seconds) of the daily report job.
        pub report_cron: String = crate::service::schedule::DEFAULT_CRON.to_owned();
        /// Time zone of [`Settings::report_cron`] (IANA name, e.g. `Europe/Lisbon`).
        #[serde(with = "values::word")]
        pub report_tz: Tz = crate::service::schedule::DEFAULT_TIME_ZONE;
        /// How many missed days the report job catches up at start-up.
        pub report_lookback_days: u32 = crate::service::reports::DEFAULT_LOOKBACK_DAYS;
        /// Partner requests and orders the embedded chain starts with.
        pub demo_size: usize = 12;
        /// Seconds between two scans of the chain's partner and order lists into the
        /// mirror the inbox reads, which also drive the console's live updates and the
        /// webhooks (docs/console.md).
        pub poll_interval_secs: u64 = 15
            => (1..=86_400).contains(poll_interval_secs), "must be 1 to 86400 (seconds, at most one day)";
        /// Webhook URLs, comma-separated; a URL prefixed `telegram:` gets Telegram's
        /// `sendMessage` body, any other [`Settings::webhook_format`]'s.
        pub webhooks: String = String::new();
        /// Body of the webhooks without a prefix: `json` (default) or `telegram`.
        #[serde(with = "values::word")]
        pub webhook_format: WebhookFormat = WebhookFormat::Json;
        /// Allows `http://` webhook URLs (default: `https://` only, since a webhook's body
        /// names requests and agents, and its URL may hold a bot token).
        pub webhook_allow_http: bool = false;
        /// The `chat_id` of Telegram-format webhooks.
        #[serde(deserialize_with = "values::string_or_number")]
        pub telegram_chat_id: Option<String> = None;
        /// How long a console session (`POST /api/session`) lasts, e.g. `12h`, `30m`.
        #[serde(with = "values::duration")]
        pub session_ttl: Duration = Duration::from_secs(12 * 3600)
            => session_ttl.as_secs() >= 60 && *session_ttl <= 30 * DAY,
            "must be at least 1m and at most 30 days";
        /// Seconds between two checks, by each open event stream, that its key or session
        /// still holds; the stream closes when it does not.
        pub session_recheck_secs: u64 = 60
            => *session_recheck_secs >= 1, "must be at least 1 (seconds)";
        /// Whether the session cookie is `Secure` (sent over HTTPS only). Unset: on when
        /// Rocket serves TLS itself (`ROCKET_TLS`); set it to `true` behind a reverse proxy
        /// that terminates TLS.
        pub cookie_secure: Option<bool> = None;
        /// Chain calls (LIST and answer routes) one key may make a second, with bursts of
        /// as many; more get 429 with `Retry-After` (docs/security.md).
        pub rate_limit_per_sec: NonZeroU32 = DEFAULT_RATE
            => rate_limit_per_sec.get() <= MAX_RATE_LIMIT_PER_SEC,
            format!("must be 1 to {MAX_RATE_LIMIT_PER_SEC} (calls a second per key)");
        /// Unknown keys (or ended sessions) one client address may present a minute, in
        /// bursts of as many; past that it gets 429 instead of 401 and its unknown keys
        /// are refused without a database query until it may try again.
        pub auth_failures_per_min: NonZeroU32 = DEFAULT_RATE
            => auth_failures_per_min.get() <= MAX_RATE_LIMIT_PER_SEC,
            format!("must be 1 to {MAX_RATE_LIMIT_PER_SEC} (unknown keys a minute per address)");
        /// Behind a reverse proxy: the header that carries the client's address (e.g.
        /// `X-Real-IP`), for the limit on failed sign-ins per address. Unset (default):
        /// the connection's address; a header any client can write is not trusted.
        pub client_ip_header: Option<String> = None
            => client_ip_header.as_ref().is_none_or(|h| !h.trim().is_empty()),
            "is empty; name a header such as X-Real-IP, or leave it unset";
        /// `text` (default): one line per event for people; `json`: one JSON object per
        /// line (`timestamp`, `level`, `message`, `target` and the event's fields) for
        /// log collectors. Read before anything is logged, so a bad value is the one
        /// line the start ends with.
        #[serde(with = "values::word")]
        pub log_format: LogFormat = LogFormat::Text;
    }
}

/// Default of both rate limits.
const DEFAULT_RATE: NonZeroU32 = match NonZeroU32::new(20) {
    Some(rate) => rate,
    None => NonZeroU32::MIN,
};

/// Why a topic name is refused.
const TOPIC_NAME: &str = "a topic name must have 1 to 249 characters";

/// Whether Kafka takes `name` as a topic name's length.
fn topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
}

values::words! {
    /// Body format of a webhook.
    pub enum WebhookFormat {
        /// The event as a JSON object (docs/console.md).
        Json = "json" | "",
        /// `{"chat_id": …, "text": …}`, for Telegram's `sendMessage` and look-alikes.
        Telegram = "telegram",
    }
    else "must be json or telegram"
}

values::words! {
    /// How the server writes its log (`MES_LOG_FORMAT`).
    pub enum LogFormat {
        /// Human-readable lines.
        Text = "text" | "",
        /// One JSON object per line (tracing-subscriber's JSON formatter).
        Json = "json",
    }
    else "must be text or json"
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A database URL may hold a password; librdkafka settings too: never shown.
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field("database", &self.database_kind())
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka", &self.kafka.keys().collect::<Vec<_>>())
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("correlation", &self.correlation)
            .finish_non_exhaustive()
    }
}

/// `Err` naming `setting` unless `ok`.
fn check(ok: bool, setting: &str, message: impl fmt::Display) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(setting, message.to_string()))
    }
}

impl Settings {
    /// Checks what the types alone do not: each field's range, then the settings
    /// that go together. [`extract`] and `server::prepare` call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_fields()?;
        self.report_schedule()?;
        self.webhooks().map(drop)
    }

    /// The daily report's schedule; an error names the setting at fault
    /// (`MES_REPORT_CRON` or `MES_REPORT_LOOKBACK_DAYS`).
    pub fn report_schedule(&self) -> Result<ReportSchedule, ConfigError> {
        ReportSchedule::new(&self.report_cron, self.report_tz, self.report_lookback_days).map_err(
            |e| {
                let setting = match e {
                    ScheduleError::LookbackTooLong { .. } => "MES_REPORT_LOOKBACK_DAYS",
                    _ => "MES_REPORT_CRON",
                };
                ConfigError::new(setting, e.to_string())
            },
        )
    }

    /// Whether the broker and the chain run in-process (the demo).
    pub fn is_embedded(&self) -> bool {
        self.kafka_brokers.trim().eq_ignore_ascii_case(EMBEDDED)
    }

    /// Refuses the embedded demo (`MES_KAFKA_BROKERS=embedded`, also the default when
    /// the setting is not given) in a server built without it (the cargo feature
    /// `embedded`, on by default, brings the mock cluster and `chain-sim`): start-up
    /// ends with one line naming the setting rather than a demo that cannot run.
    pub fn check_embedded_built(&self) -> Result<(), ConfigError> {
        self.check_embedded(cfg!(feature = "embedded"))
    }

    /// [`Settings::check_embedded_built`] for a build with (`built`) or without the demo.
    fn check_embedded(&self, built: bool) -> Result<(), ConfigError> {
        if built || !self.is_embedded() {
            return Ok(());
        }
        let how = if self.kafka_brokers_explicit {
            "is `embedded`"
        } else {
            "is not set, so the embedded demo would run"
        };
        Err(ConfigError::new(
            "MES_KAFKA_BROKERS",
            format!(
                "{how}, but this mes-api was built without it (cargo feature `embedded`); set MES_KAFKA_BROKERS to the cluster's bootstrap servers"
            ),
        ))
    }

    /// Refuses to start the embedded demo on a database the user named without
    /// asking for the demo by name (`MES_KAFKA_BROKERS=embedded`): the demo writes a
    /// master token, an operator and production units whose outbox rows would later
    /// go to a real chain. Checked before the database is opened, so nothing is
    /// written.
    pub fn check_demo_database(&self) -> Result<(), ConfigError> {
        if !self.is_embedded() || self.kafka_brokers_explicit || self.database_url.is_none() {
            return Ok(());
        }
        Err(ConfigError::new(
            "MES_KAFKA_BROKERS",
            format!(
                "not set, and MES_DATABASE_URL names a {} database: the embedded demo runs only on its own SQLite file; set MES_KAFKA_BROKERS to the cluster's bootstrap servers (or to `embedded` to run the demo on that database)",
                self.database_kind()
            ),
        ))
    }

    /// The database URL in use: the configured one, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("mes.db").display().to_string(),
        }
    }

    /// `postgresql` or `sqlite`, for logs (the URL itself may hold a password).
    pub fn database_kind(&self) -> &'static str {
        let url = self.database_url();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// The database for people (the start-up banner): `postgresql` and its URL
    /// without user, password nor a password among its parameters, or `sqlite` and
    /// its path.
    pub fn database_display(&self) -> String {
        let url = self.database_url();
        if self.database_kind() == "sqlite" {
            return format!("sqlite {url}");
        }
        let Ok(mut parsed) = reqwest::Url::parse(&url) else {
            return "postgresql (its URL does not parse, so it is not shown)".to_owned();
        };
        // Neither fails on a postgres:// URL, which has a host.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(name, _)| !name.to_ascii_lowercase().contains("pass"))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        parsed.set_fragment(None);
        format!("postgresql {parsed}")
    }

    /// The poller's interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    /// The parsed [`Settings::webhooks`]; errors name the setting, never the URL (it
    /// may hold a token).
    pub fn webhooks(&self) -> Result<Vec<Webhook>, ConfigError> {
        let mut hooks = Vec::new();
        for (n, item) in self.webhooks.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let (format, url) = match item.strip_prefix("telegram:") {
                Some(url) => (WebhookFormat::Telegram, url.trim()),
                None => (self.webhook_format, item),
            };
            let n = n + 1;
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                ConfigError::new("MES_WEBHOOKS", format!("URL number {n} is not a URL: {e}"))
            })?;
            check(
                matches!(parsed.scheme(), "http" | "https"),
                "MES_WEBHOOKS",
                format_args!("URL number {n} must be http:// or https://"),
            )?;
            check(
                parsed.scheme() != "http" || self.webhook_allow_http,
                "MES_WEBHOOKS",
                format_args!(
                    "URL number {n} is http://: use https://, or set MES_WEBHOOK_ALLOW_HTTP=true for a receiver on a trusted network"
                ),
            )?;
            check(
                format != WebhookFormat::Telegram || self.telegram_chat_id.is_some(),
                "MES_TELEGRAM_CHAT_ID",
                "is needed by the Telegram-format webhooks",
            )?;
            hooks.push(Webhook {
                url: url.to_owned(),
                format,
            });
        }
        Ok(hooks)
    }

    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How unconfirmed decisions are settled from the chain's lists.
    pub fn reconcile(&self) -> crate::reconcile::Reconcile {
        crate::reconcile::Reconcile {
            after_scans: self.reconcile_after_scans,
            pending_after: (self.request_timeout() * 2).max(Duration::from_secs(60)),
        }
    }

    /// The database pool's bounds (`MES_DATABASE_POOL_SIZE`, `MES_DATABASE_POOL_TIMEOUT`,
    /// `MES_DATABASE_STATEMENT_TIMEOUT`).
    pub fn pool_options(&self) -> mes_core::db::PoolOptions {
        mes_core::db::PoolOptions {
            max_size: self.database_pool_size,
            connection_timeout: self.database_pool_timeout,
            statement_timeout: (!self.database_statement_timeout.is_zero())
                .then_some(self.database_statement_timeout),
        }
    }

    /// How often an open event stream checks that its key or session still holds.
    pub fn session_recheck(&self) -> Duration {
        Duration::from_secs(self.session_recheck_secs.max(1))
    }
}

mod chain;
pub mod reference;
mod sources;
mod values;

pub use chain::{ReplyTrust, ReplyVerification, owner_only};
pub use sources::{env_name, extract, figment, figment_from, load, quiet, rocket_log_level};

#[cfg(test)]
mod tests;
