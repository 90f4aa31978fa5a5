//! Settings: `Rocket.toml` profiles, then `MES_*` environment variables on top.
//!
//! Every setting has a default that works on one machine (the embedded demo), so
//! `cargo run -p mes-api` needs no configuration. `example.env` lists them all.
//! A problem is reported as one [`ConfigError`] naming the setting, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_bridge::bridge::{BridgeConfig, CorrelationMode};
use kafka_bridge::kafka::{KafkaConfig, TopicNames};
use kafka_bridge::relay::RecordReplies;
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;
use rocket::figment::Figment;
use rocket::figment::providers::Serialized;
use rocket::figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};

use crate::service::schedule::{ReportSchedule, ScheduleError};

/// `MES_KAFKA_BROKERS` value that starts an in-process broker and chain simulator.
pub const EMBEDDED: &str = "embedded";

/// Prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "MES_";

/// Prefix of the environment variables passed to librdkafka (`MES_KAFKA_SASL_PASSWORD`
/// → `sasl.password`); `MES_KAFKA_BROKERS` is the one exception.
pub const KAFKA_ENV_PREFIX: &str = "MES_KAFKA_";

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

/// Every setting of the server and the CLI. Field `x` is read from `MES_X` (or `x` in
/// the active `Rocket.toml` profile).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where local files live (the default SQLite database, the demo's key file).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`) or a SQLite path; default `{data_dir}/mes.db`.
    pub database_url: Option<String>,
    /// Largest number of pooled database connections.
    pub database_pool_size: u32,
    /// Longest wait for a pooled connection before a call gets 503, e.g. `2s`,
    /// `500ms` (a bare number is seconds).
    pub database_pool_timeout: String,
    /// PostgreSQL `statement_timeout` of every pooled session, e.g. `5s`; `0` leaves
    /// the database's own setting.
    pub database_statement_timeout: String,
    /// `bootstrap.servers`, or [`EMBEDDED`] for the in-process broker and chain.
    pub kafka_brokers: String,
    /// Whether [`Settings::kafka_brokers`] was given (environment or `Rocket.toml`)
    /// rather than defaulted: the embedded demo runs on a database the user named
    /// only when asked for by name, so that it never seeds a real database by
    /// accident (docs/security.md, "Demo data").
    #[serde(skip)]
    pub kafka_brokers_explicit: bool,
    /// Extra librdkafka settings (`MES_KAFKA_*` and `[kafka]` in `Rocket.toml`).
    pub kafka: BTreeMap<String, String>,
    /// Deadline of one chain request, in milliseconds.
    pub request_timeout_ms: u64,
    /// `auto`, `id` or `legacy` (docs/protocol.md §9).
    pub correlation: String,
    /// `wait` (default) or `none`: whether the outbox relay waits for the chain's
    /// reply to `BLK_Rty`/`BLK_Rec` messages, or marks them delivered once the broker
    /// has them (for gateways that never answer record topics).
    pub record_replies: String,
    /// Most chain requests in flight before calls are refused with 503.
    pub max_in_flight: usize,
    /// Behind a gateway that echoes only the token: how long a request that ended
    /// without its reply keeps new requests of its shape waiting for that reply, e.g.
    /// `2m`, `90s` (a bare number is seconds). docs/protocol.md §9.
    pub legacy_fence_max: String,
    /// Complete scans of the chain's list that must still show a request OPEN before
    /// an answer sent to it but never confirmed is `not_applied` (docs/protocol.md §10).
    pub reconcile_after_scans: u32,
    /// Create missing topics at start-up (turn off where the cluster forbids it).
    pub create_topics: bool,
    /// Name of `BLK_Part_Lst`.
    pub topic_partner_list: String,
    /// Name of `BLK_Part_Ans`.
    pub topic_partner_answer: String,
    /// Name of `BLK_Act_Lst`.
    pub topic_order_list: String,
    /// Name of `BLK_Act_Ans`.
    pub topic_order_answer: String,
    /// Name of `BLK_Rty`.
    pub topic_record_type: String,
    /// Name of `BLK_Rec`.
    pub topic_record: String,
    /// Name of `BLK_Res`.
    pub topic_reply: String,
    /// File with the MES's secp256k1 secret key (64 hex digits, `mes-api keygen`); when
    /// set, every request is signed.
    pub signing_key_file: Option<PathBuf>,
    /// File with the gateway's public key (66 hex digits); when set, only replies
    /// signed by it are accepted.
    pub gateway_key_file: Option<PathBuf>,
    /// `signed` (default): the server starts against a real broker only with
    /// [`Settings::gateway_key_file`]; `unsigned`: the operator accepts replies nobody
    /// signed, from a gateway that cannot sign (docs/security.md).
    pub reply_trust: String,
    /// Cron expression (with seconds) of the daily report job.
    pub report_cron: String,
    /// Time zone of [`Settings::report_cron`] (IANA name, e.g. `Europe/Lisbon`).
    pub report_tz: String,
    /// How many missed days the report job catches up at start-up.
    pub report_lookback_days: u32,
    /// Partner requests and orders the embedded chain starts with.
    pub demo_size: usize,
    /// Seconds between two scans of the chain's partner and order lists into the
    /// mirror the inbox reads, which also drive the console's live updates and the
    /// webhooks (docs/console.md).
    pub poll_interval_secs: u64,
    /// Webhook URLs, comma-separated; a URL prefixed `telegram:` gets Telegram's
    /// `sendMessage` body, any other [`Settings::webhook_format`]'s.
    pub webhooks: String,
    /// Body of the webhooks without a prefix: `json` (default) or `telegram`.
    pub webhook_format: String,
    /// Allows `http://` webhook URLs (default: `https://` only, since a webhook's body
    /// names requests and agents, and its URL may hold a bot token).
    pub webhook_allow_http: bool,
    /// The `chat_id` of Telegram-format webhooks.
    #[serde(deserialize_with = "string_or_number")]
    pub telegram_chat_id: Option<String>,
    /// How long a console session (`POST /api/session`) lasts, e.g. `12h`, `30m`.
    pub session_ttl: String,
    /// Seconds between two checks, by each open event stream, that its key or session
    /// still holds; the stream closes when it does not.
    pub session_recheck_secs: u64,
    /// Whether the session cookie is `Secure` (sent over HTTPS only). Unset: on when
    /// Rocket serves TLS itself (`ROCKET_TLS`); set it to `true` behind a reverse proxy
    /// that terminates TLS.
    pub cookie_secure: Option<bool>,
    /// Chain calls (LIST and answer routes) one key may make a second, with bursts of
    /// as many; more get 429 with `Retry-After` (docs/security.md).
    pub rate_limit_per_sec: u32,
    /// Unknown keys (or ended sessions) one client address may present a minute, in
    /// bursts of as many; past that it gets 429 instead of 401 and its unknown keys
    /// are refused without a database query until it may try again.
    pub auth_failures_per_min: u32,
    /// Behind a reverse proxy: the header that carries the client's address (e.g.
    /// `X-Real-IP`), for the limit on failed sign-ins per address. Unset (default):
    /// the connection's address; a header any client can write is not trusted.
    pub client_ip_header: Option<String>,
}

/// Accepts `-100123` (read from the environment as a number) as well as `"@plant"`.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        U(u64),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::S(s) => s,
        Text::I(i) => i.to_string(),
        Text::U(u) => u.to_string(),
    }))
}

/// `MES_REPLY_TRUST`: what the operator accepts from the chain's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTrust {
    /// Only replies signed by the gateway's key (`MES_GATEWAY_KEY_FILE`, required).
    Signed,
    /// Replies nobody signed too: for gateways that cannot sign, like the original's.
    Unsigned,
}

/// Whether this server verifies the chain's replies, as every surface reports it
/// (start-up log, `/health/ready`, `/metrics`, the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerification {
    /// Only replies signed by the gateway's key, bound to their request, are taken.
    On,
    /// Any reply with the right token is taken (`MES_REPLY_TRUST=unsigned`, or the
    /// embedded demo without a key).
    Off,
}

impl ReplyVerification {
    /// `on` or `off`, as `/health/ready` says it.
    pub fn label(self) -> &'static str {
        match self {
            ReplyVerification::On => "on",
            ReplyVerification::Off => "off",
        }
    }
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as a JSON object (docs/console.md).
    Json,
    /// `{"chat_id": …, "text": …}`, for Telegram's `sendMessage` and look-alikes.
    Telegram,
}

/// One configured webhook.
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

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

impl Default for Settings {
    fn default() -> Self {
        let topics = TopicNames::default();
        Settings {
            data_dir: PathBuf::from("mes-data"),
            database_url: None,
            database_pool_size: 16,
            database_pool_timeout: "2s".to_owned(),
            database_statement_timeout: "5s".to_owned(),
            kafka_brokers: EMBEDDED.to_owned(),
            kafka_brokers_explicit: false,
            kafka: BTreeMap::new(),
            request_timeout_ms: 10_000,
            correlation: "auto".to_owned(),
            record_replies: "wait".to_owned(),
            max_in_flight: 1024,
            legacy_fence_max: "2m".to_owned(),
            reconcile_after_scans: 3,
            create_topics: true,
            topic_partner_list: topics.partner_list,
            topic_partner_answer: topics.partner_answer,
            topic_order_list: topics.order_list,
            topic_order_answer: topics.order_answer,
            topic_record_type: topics.record_type,
            topic_record: topics.record,
            topic_reply: topics.reply,
            signing_key_file: None,
            gateway_key_file: None,
            reply_trust: "signed".to_owned(),
            report_cron: "0 30 9 * * *".to_owned(),
            report_tz: "UTC".to_owned(),
            report_lookback_days: 7,
            demo_size: 12,
            poll_interval_secs: 15,
            webhooks: String::new(),
            webhook_format: "json".to_owned(),
            webhook_allow_http: false,
            telegram_chat_id: None,
            session_ttl: "12h".to_owned(),
            session_recheck_secs: 60,
            cookie_secure: None,
            rate_limit_per_sec: 20,
            auth_failures_per_min: 20,
            client_ip_header: None,
        }
    }
}

/// The Rocket figment (`Rocket.toml`, `ROCKET_*`) with our settings' defaults under it
/// and `MES_*` over it.
pub fn figment() -> Figment {
    figment_from(rocket::Config::figment(), std::env::vars())
}

/// [`figment`] over `base` and the given environment, for tests.
pub fn figment_from(base: Figment, env: impl IntoIterator<Item = (String, String)>) -> Figment {
    let mut kafka = BTreeMap::new();
    // Every default but the brokers': whether they were given is told by their
    // presence (`extract`), and the struct's own default fills them in otherwise.
    let mut defaults = match Value::serialize(Settings::default()) {
        Ok(Value::Dict(_, dict)) => dict,
        _ => Dict::new(),
    };
    defaults.remove("kafka_brokers");
    let mut figment = Figment::from(Serialized::defaults(defaults)).merge(base);
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        match rest.strip_prefix("KAFKA_") {
            Some(setting) if setting != "BROKERS" && !setting.is_empty() => {
                kafka.insert(setting.to_ascii_lowercase().replace('_', "."), value);
            }
            _ if !rest.is_empty() => {
                // As figment's own `Env` does: "10" is a number, "true" a boolean.
                let parsed: Value = value.parse().unwrap_or_else(|e| match e {});
                figment = figment.merge(Serialized::global(&rest.to_ascii_lowercase(), parsed));
            }
            _ => {}
        }
    }
    if !kafka.is_empty() {
        figment = figment.merge(Serialized::global("kafka", kafka));
    }
    figment
}

/// Reads the settings from `figment`, naming the setting at fault on error.
pub fn extract(figment: &Figment) -> Result<Settings, ConfigError> {
    // Rocket's own keys (port, address, …) share the profile: keep only ours.
    let mut value: Dict = figment.extract().map_err(|e| {
        ConfigError::new(
            "Rocket.toml",
            e.to_string().lines().next().unwrap_or_default().to_owned(),
        )
    })?;
    let ours = Settings::known_keys();
    value.retain(|k, _| ours.contains(&k.as_str()));
    let brokers_given = value.contains_key("kafka_brokers");
    let mut settings: Settings = Figment::from(Serialized::defaults(value))
        .extract()
        .map_err(|e| {
            let key = e.path.first().cloned().unwrap_or_default();
            ConfigError::new(env_name(&key), e.kind.to_string())
        })?;
    settings.kafka_brokers_explicit = brokers_given;
    settings.validate()?;
    Ok(settings)
}

/// Reads the settings from the environment and `Rocket.toml`.
pub fn load() -> Result<Settings, ConfigError> {
    extract(&figment())
}

/// The environment variable of a settings key (`database_url` → `MES_DATABASE_URL`).
pub fn env_name(key: &str) -> String {
    if key.is_empty() {
        return "settings".to_owned();
    }
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

impl Settings {
    fn known_keys() -> Vec<&'static str> {
        vec![
            "data_dir",
            "database_url",
            "database_pool_size",
            "database_pool_timeout",
            "database_statement_timeout",
            "kafka_brokers",
            "kafka",
            "request_timeout_ms",
            "correlation",
            "record_replies",
            "max_in_flight",
            "legacy_fence_max",
            "reconcile_after_scans",
            "create_topics",
            "topic_partner_list",
            "topic_partner_answer",
            "topic_order_list",
            "topic_order_answer",
            "topic_record_type",
            "topic_record",
            "topic_reply",
            "signing_key_file",
            "gateway_key_file",
            "reply_trust",
            "report_cron",
            "report_tz",
            "report_lookback_days",
            "demo_size",
            "poll_interval_secs",
            "webhooks",
            "webhook_format",
            "webhook_allow_http",
            "telegram_chat_id",
            "session_ttl",
            "session_recheck_secs",
            "cookie_secure",
            "rate_limit_per_sec",
            "auth_failures_per_min",
            "client_ip_header",
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::new(
                "MES_REQUEST_TIMEOUT_MS",
                "must be at least 1 (milliseconds)",
            ));
        }
        if self.request_timeout_ms > MAX_REQUEST_TIMEOUT_MS {
            return Err(ConfigError::new(
                "MES_REQUEST_TIMEOUT_MS",
                format!("must be at most {MAX_REQUEST_TIMEOUT_MS} (one hour)"),
            ));
        }
        if self.max_in_flight > rocket::tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "MES_MAX_IN_FLIGHT",
                format!(
                    "must be at most {}",
                    rocket::tokio::sync::Semaphore::MAX_PERMITS
                ),
            ));
        }
        if self.poll_interval_secs > 86_400 {
            return Err(ConfigError::new(
                "MES_POLL_INTERVAL_SECS",
                "must be at most 86400 (one day)",
            ));
        }
        self.pool_options()?;
        self.correlation_mode()?;
        self.record_replies_mode()?;
        self.reply_trust_mode()?;
        if self.kafka_brokers.trim().is_empty() {
            return Err(ConfigError::new(
                "MES_KAFKA_BROKERS",
                "is empty; give host:port[,host:port…] or `embedded`",
            ));
        }
        if self.database_pool_size == 0 {
            return Err(ConfigError::new(
                "MES_DATABASE_POOL_SIZE",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("MES_MAX_IN_FLIGHT", "must be at least 1"));
        }
        self.legacy_fence_max()?;
        if self.reconcile_after_scans == 0 {
            return Err(ConfigError::new(
                "MES_RECONCILE_AFTER_SCANS",
                "must be at least 1",
            ));
        }
        for (key, name) in self.topic_settings() {
            if name.is_empty() || name.len() > 249 {
                return Err(ConfigError::new(
                    env_name(key),
                    "a topic name must have 1 to 249 characters",
                ));
            }
        }
        self.report_schedule()?;
        if self.poll_interval_secs == 0 {
            return Err(ConfigError::new(
                "MES_POLL_INTERVAL_SECS",
                "must be at least 1 (seconds)",
            ));
        }
        self.webhooks()?;
        self.session_ttl()?;
        if self.session_recheck_secs == 0 {
            return Err(ConfigError::new(
                "MES_SESSION_RECHECK_SECS",
                "must be at least 1 (seconds)",
            ));
        }
        self.rate_limit()?;
        self.auth_failure_limit()?;
        if let Some(header) = &self.client_ip_header
            && header.trim().is_empty()
        {
            return Err(ConfigError::new(
                "MES_CLIENT_IP_HEADER",
                "is empty; name a header such as X-Real-IP, or leave it unset",
            ));
        }
        if let Some(url) = &self.database_url
            && url.trim().is_empty()
        {
            return Err(ConfigError::new(
                "MES_DATABASE_URL",
                "is empty; give a postgres:// URL or a SQLite file path",
            ));
        }
        Ok(())
    }

    /// Chain calls a second per key ([`Settings::rate_limit_per_sec`]), checked.
    pub fn rate_limit(&self) -> Result<std::num::NonZeroU32, ConfigError> {
        std::num::NonZeroU32::new(self.rate_limit_per_sec)
            .filter(|n| n.get() <= MAX_RATE_LIMIT_PER_SEC)
            .ok_or_else(|| {
                ConfigError::new(
                    "MES_RATE_LIMIT_PER_SEC",
                    format!("must be 1 to {MAX_RATE_LIMIT_PER_SEC} (calls a second per key)"),
                )
            })
    }

    /// Failed sign-ins a minute per address ([`Settings::auth_failures_per_min`]),
    /// checked.
    pub fn auth_failure_limit(&self) -> Result<std::num::NonZeroU32, ConfigError> {
        std::num::NonZeroU32::new(self.auth_failures_per_min)
            .filter(|n| n.get() <= MAX_RATE_LIMIT_PER_SEC)
            .ok_or_else(|| {
                ConfigError::new(
                    "MES_AUTH_FAILURES_PER_MIN",
                    format!(
                        "must be 1 to {MAX_RATE_LIMIT_PER_SEC} (unknown keys a minute per address)"
                    ),
                )
            })
    }

    fn topic_settings(&self) -> [(&'static str, &str); 7] {
        [
            ("topic_partner_list", &self.topic_partner_list),
            ("topic_partner_answer", &self.topic_partner_answer),
            ("topic_order_list", &self.topic_order_list),
            ("topic_order_answer", &self.topic_order_answer),
            ("topic_record_type", &self.topic_record_type),
            ("topic_record", &self.topic_record),
            ("topic_reply", &self.topic_reply),
        ]
    }

    /// The daily report's schedule; an error names the setting at fault
    /// (`MES_REPORT_CRON`, `MES_REPORT_TZ` or `MES_REPORT_LOOKBACK_DAYS`).
    pub fn report_schedule(&self) -> Result<ReportSchedule, ConfigError> {
        ReportSchedule::new(
            &self.report_cron,
            &self.report_tz,
            self.report_lookback_days,
        )
        .map_err(|e| {
            let setting = match e {
                ScheduleError::UnknownTimeZone(_) => "MES_REPORT_TZ",
                ScheduleError::LookbackTooLong { .. } => "MES_REPORT_LOOKBACK_DAYS",
                _ => "MES_REPORT_CRON",
            };
            ConfigError::new(setting, e.to_string())
        })
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

    /// The poller's interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    /// The parsed [`Settings::webhooks`]; errors name the setting, never the URL (it
    /// may hold a token).
    pub fn webhooks(&self) -> Result<Vec<Webhook>, ConfigError> {
        let default = match self.webhook_format.trim().to_ascii_lowercase().as_str() {
            "json" | "" => WebhookFormat::Json,
            "telegram" => WebhookFormat::Telegram,
            _ => {
                return Err(ConfigError::new(
                    "MES_WEBHOOK_FORMAT",
                    "must be json or telegram",
                ));
            }
        };
        let mut hooks = Vec::new();
        for (n, item) in self.webhooks.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let (format, url) = match item.strip_prefix("telegram:") {
                Some(url) => (WebhookFormat::Telegram, url.trim()),
                None => (default, item),
            };
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                ConfigError::new(
                    "MES_WEBHOOKS",
                    format!("URL number {} is not a URL: {e}", n + 1),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::new(
                    "MES_WEBHOOKS",
                    format!("URL number {} must be http:// or https://", n + 1),
                ));
            }
            if parsed.scheme() == "http" && !self.webhook_allow_http {
                return Err(ConfigError::new(
                    "MES_WEBHOOKS",
                    format!(
                        "URL number {} is http://: use https://, or set MES_WEBHOOK_ALLOW_HTTP=true for a receiver on a trusted network",
                        n + 1
                    ),
                ));
            }
            if format == WebhookFormat::Telegram && self.telegram_chat_id.is_none() {
                return Err(ConfigError::new(
                    "MES_TELEGRAM_CHAT_ID",
                    "is needed by the Telegram-format webhooks",
                ));
            }
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
    /// `MES_DATABASE_STATEMENT_TIMEOUT`); an error names the setting.
    pub fn pool_options(&self) -> Result<mes_core::db::PoolOptions, ConfigError> {
        let wait = parse_duration(&self.database_pool_timeout, "MES_DATABASE_POOL_TIMEOUT")?;
        if wait.is_zero() || wait > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "MES_DATABASE_POOL_TIMEOUT",
                "must be more than 0 and at most 1h",
            ));
        }
        let statement = parse_duration(
            &self.database_statement_timeout,
            "MES_DATABASE_STATEMENT_TIMEOUT",
        )?;
        if statement > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                "MES_DATABASE_STATEMENT_TIMEOUT",
                "must be at most 24h (0 turns it off)",
            ));
        }
        Ok(mes_core::db::PoolOptions {
            max_size: self.database_pool_size,
            connection_timeout: wait,
            statement_timeout: (!statement.is_zero()).then_some(statement),
        })
    }

    /// How long a legacy request's outstanding reply fences its shape.
    pub fn legacy_fence_max(&self) -> Result<Duration, ConfigError> {
        let text = self.legacy_fence_max.trim();
        let parsed = match text.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => Ok(d),
            Ok(_) => Err(ConfigError::new(
                "MES_LEGACY_FENCE_MAX",
                "must be more than 0 and at most 24h",
            )),
            Err(e) => Err(ConfigError::new(
                "MES_LEGACY_FENCE_MAX",
                format!("not a duration like 2m, 90s or 500ms: {e}"),
            )),
        }
    }

    /// How long a console session lasts (`MES_SESSION_TTL`): 1 minute to 30 days.
    pub fn session_ttl(&self) -> Result<Duration, ConfigError> {
        let text = self.session_ttl.trim();
        let parsed = match text.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(d) if d >= Duration::from_secs(60) && d <= Duration::from_secs(30 * 24 * 3600) => {
                Ok(d)
            }
            Ok(_) => Err(ConfigError::new(
                "MES_SESSION_TTL",
                "must be at least 1m and at most 30 days",
            )),
            Err(e) => Err(ConfigError::new(
                "MES_SESSION_TTL",
                format!("not a duration like 12h or 30m: {e}"),
            )),
        }
    }

    /// How often an open event stream checks that its key or session still holds.
    pub fn session_recheck(&self) -> Duration {
        Duration::from_secs(self.session_recheck_secs.max(1))
    }

    /// The parsed correlation mode.
    pub fn correlation_mode(&self) -> Result<CorrelationMode, ConfigError> {
        self.correlation
            .parse()
            .map_err(|_| ConfigError::new("MES_CORRELATION", "must be auto, id or legacy"))
    }

    /// The parsed [`Settings::reply_trust`].
    pub fn reply_trust_mode(&self) -> Result<ReplyTrust, ConfigError> {
        match self.reply_trust.trim().to_ascii_lowercase().as_str() {
            "signed" => Ok(ReplyTrust::Signed),
            "unsigned" => Ok(ReplyTrust::Unsigned),
            _ => Err(ConfigError::new(
                "MES_REPLY_TRUST",
                "must be signed or unsigned",
            )),
        }
    }

    /// Whether replies from the chain will be verified, or why the server must not
    /// start: outside the embedded demo, replies are verified
    /// (`MES_GATEWAY_KEY_FILE`) unless the operator said `MES_REPLY_TRUST=unsigned`.
    /// Without either, anyone who can write to the reply topic could answer for the
    /// chain.
    pub fn reply_verification(&self) -> Result<ReplyVerification, ConfigError> {
        let trust = self.reply_trust_mode()?;
        if self.gateway_key_file.is_some() {
            return Ok(ReplyVerification::On);
        }
        if self.is_embedded() || trust == ReplyTrust::Unsigned {
            return Ok(ReplyVerification::Off);
        }
        Err(ConfigError::new(
            "MES_GATEWAY_KEY_FILE/MES_REPLY_TRUST",
            "replies from the chain cannot be verified: set MES_GATEWAY_KEY_FILE to the \
             gateway's public key, or MES_REPLY_TRUST=unsigned to accept unsigned replies \
             (a gateway that cannot sign; see docs/security.md)",
        ))
    }

    /// The parsed [`Settings::record_replies`].
    pub fn record_replies_mode(&self) -> Result<RecordReplies, ConfigError> {
        self.record_replies
            .parse()
            .map_err(|_| ConfigError::new("MES_RECORD_REPLIES", "must be wait or none"))
    }

    /// The topic names.
    pub fn topics(&self) -> TopicNames {
        TopicNames {
            partner_list: self.topic_partner_list.clone(),
            partner_answer: self.topic_partner_answer.clone(),
            order_list: self.topic_order_list.clone(),
            order_answer: self.topic_order_answer.clone(),
            record_type: self.topic_record_type.clone(),
            record: self.topic_record.clone(),
            reply: self.topic_reply.clone(),
        }
    }

    /// Sets every topic name from `names` (tests use unique names per run).
    pub fn set_topics(&mut self, names: &TopicNames) {
        self.topic_partner_list.clone_from(&names.partner_list);
        self.topic_partner_answer.clone_from(&names.partner_answer);
        self.topic_order_list.clone_from(&names.order_list);
        self.topic_order_answer.clone_from(&names.order_answer);
        self.topic_record_type.clone_from(&names.record_type);
        self.topic_record.clone_from(&names.record);
        self.topic_reply.clone_from(&names.reply);
    }

    /// The MES's signing key, if a key file is configured.
    pub fn signing_key(&self) -> Result<Option<SigningKey>, ConfigError> {
        let Some(path) = &self.signing_key_file else {
            return Ok(None);
        };
        owner_only(path).map_err(|e| ConfigError::new("MES_SIGNING_KEY_FILE", e))?;
        let text = read_key_file(path, "MES_SIGNING_KEY_FILE")?;
        SigningKey::from_hex(&text).map(Some).map_err(|e| {
            ConfigError::new(
                "MES_SIGNING_KEY_FILE",
                format!("{} is not a secp256k1 secret key: {e}", path.display()),
            )
        })
    }

    /// The gateway's public key, if a key file is configured.
    pub fn gateway_key(&self) -> Result<Option<AgentKey>, ConfigError> {
        let Some(path) = &self.gateway_key_file else {
            return Ok(None);
        };
        let text = read_key_file(path, "MES_GATEWAY_KEY_FILE")?;
        AgentKey::try_from(text.trim().to_owned())
            .map(Some)
            .map_err(|e| {
                ConfigError::new(
                    "MES_GATEWAY_KEY_FILE",
                    format!("{} does not hold a public key: {e}", path.display()),
                )
            })
    }

    /// The bridge configuration for `brokers` (the configured ones, or the embedded
    /// broker's address).
    pub fn bridge_config(&self, brokers: &str) -> Result<BridgeConfig, ConfigError> {
        let mut kafka = KafkaConfig::new(brokers);
        kafka.settings = self.kafka.clone();
        let mut config = BridgeConfig::new(kafka);
        config.topics = self.topics();
        config.correlation = self.correlation_mode()?;
        config.request_timeout = self.request_timeout();
        config.legacy_fence_max = self.legacy_fence_max()?;
        config.max_in_flight = self.max_in_flight;
        config.create_topics = self.create_topics;
        config.signing_key = self.signing_key()?;
        config.gateway_key = self.gateway_key()?;
        if config.gateway_key.is_some() && config.correlation == CorrelationMode::Legacy {
            // Signed replies are matched by their signed corr, never by token.
            return Err(ConfigError::new(
                "MES_CORRELATION",
                "legacy cannot be used with MES_GATEWAY_KEY_FILE: signed replies carry \
                 corr and are matched by it (use auto or id)",
            ));
        }
        Ok(config)
    }
}

/// Longest `MES_REQUEST_TIMEOUT_MS`: one hour. Larger values would overflow the
/// timers and leases derived from it (six times it, twice it, Rocket's grace).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;

/// Largest `MES_RATE_LIMIT_PER_SEC` and `MES_AUTH_FAILURES_PER_MIN`: far above what a chain answers, so in effect no
/// limit, while the limiter's arithmetic stays exact.
pub const MAX_RATE_LIMIT_PER_SEC: u32 = 1_000_000;

/// A duration like `2s`, `500ms`, `1m`; a bare number is seconds.
fn parse_duration(text: &str, setting: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            ConfigError::new(setting, format!("not a duration like 2s, 500ms or 1m: {e}"))
        }),
    }
}

/// Refuses a secret file that group or others may read (or write): a signing key
/// readable by every local user is a leaked key. The message says how to fix it.
pub fn owner_only(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by group or others (mode {:04o}); make it the owner's only: chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn read_key_file(path: &Path, setting: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        extract(&figment_from(Figment::new(), env(pairs)))
    }

    #[test]
    fn defaults_are_the_embedded_demo() {
        let s = from(&[]).unwrap();
        assert!(s.is_embedded());
        assert_eq!(s.database_url(), "mes-data/mes.db");
        assert_eq!(s.database_kind(), "sqlite");
        assert_eq!(s.topics(), TopicNames::default());
        assert_eq!(s.report_cron, "0 30 9 * * *");
        assert_eq!(s.report_tz, "UTC");
        assert_eq!(s.report_lookback_days, 7);
        assert_eq!(s.correlation_mode().unwrap(), CorrelationMode::Auto);
        assert_eq!(s.record_replies_mode().unwrap(), RecordReplies::Wait);
        let pool = s.pool_options().unwrap();
        assert_eq!(pool.connection_timeout, Duration::from_secs(2));
        assert_eq!(pool.statement_timeout, Some(Duration::from_secs(5)));
        assert!(!s.kafka_brokers_explicit);
        assert!(s.check_demo_database().is_ok(), "the demo on its own file");
    }

    #[test]
    fn the_demo_needs_asking_for_on_a_database_the_user_named() {
        let s = from(&[("MES_DATABASE_URL", "postgres://u:pw@db/mes")]).unwrap();
        let e = s.check_demo_database().unwrap_err();
        assert_eq!(e.setting, "MES_KAFKA_BROKERS", "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let s = from(&[
            ("MES_DATABASE_URL", "postgres://u:pw@db/mes"),
            ("MES_KAFKA_BROKERS", "embedded"),
        ])
        .unwrap();
        assert!(s.kafka_brokers_explicit);
        assert!(s.check_demo_database().is_ok());
        let s = from(&[
            ("MES_DATABASE_URL", "postgres://u:pw@db/mes"),
            ("MES_KAFKA_BROKERS", "k1:9092"),
        ])
        .unwrap();
        assert!(s.check_demo_database().is_ok());
    }

    #[test]
    fn a_build_without_the_demo_refuses_it_naming_the_setting() {
        for (pairs, how) in [
            (&[][..], "is not set"),
            (&[("MES_KAFKA_BROKERS", "embedded")][..], "is `embedded`"),
        ] {
            let s = from(pairs).unwrap();
            assert!(s.check_embedded(true).is_ok(), "{pairs:?}");
            let e = s.check_embedded(false).unwrap_err();
            assert_eq!(e.setting, "MES_KAFKA_BROKERS", "{e}");
            let line = e.to_string();
            assert!(line.contains(how), "{line}");
            assert!(line.contains("cargo feature `embedded`"), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
        }
        let s = from(&[("MES_KAFKA_BROKERS", "k1:9092")]).unwrap();
        assert!(
            s.check_embedded(false).is_ok(),
            "a real cluster needs no demo"
        );
    }

    /// What this build does: `cargo test -p mes-api` checks the default build (with the
    /// demo), `cargo test -p mes-api --no-default-features` the one without.
    #[test]
    fn this_build_refuses_the_demo_only_without_the_feature() {
        let refused = from(&[]).unwrap().check_embedded_built().is_err();
        assert_eq!(refused, !cfg!(feature = "embedded"));
    }

    #[test]
    fn outside_the_demo_replies_are_verified_or_the_operator_said_unsigned() {
        assert_eq!(
            from(&[]).unwrap().reply_verification().unwrap(),
            ReplyVerification::Off,
            "the embedded demo is exempt"
        );
        let e = from(&[("MES_KAFKA_BROKERS", "k1:9092")])
            .unwrap()
            .reply_verification()
            .unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("MES_GATEWAY_KEY_FILE") && line.contains("MES_REPLY_TRUST=unsigned"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let s = from(&[
            ("MES_KAFKA_BROKERS", "k1:9092"),
            ("MES_REPLY_TRUST", "UNSIGNED"),
        ])
        .unwrap();
        assert_eq!(s.reply_verification().unwrap(), ReplyVerification::Off);
        let s = from(&[
            ("MES_KAFKA_BROKERS", "k1:9092"),
            ("MES_GATEWAY_KEY_FILE", "/etc/mes/gateway.pub"),
        ])
        .unwrap();
        assert_eq!(s.reply_verification().unwrap(), ReplyVerification::On);
        let e = from(&[("MES_REPLY_TRUST", "maybe")]).unwrap_err();
        assert_eq!(e.setting, "MES_REPLY_TRUST");
    }

    #[test]
    fn record_replies_is_wait_or_none() {
        let s = from(&[("MES_RECORD_REPLIES", "NONE")]).unwrap();
        assert_eq!(s.record_replies_mode().unwrap(), RecordReplies::None);
        let e = from(&[("MES_RECORD_REPLIES", "never")]).unwrap_err();
        assert_eq!(e.setting, "MES_RECORD_REPLIES", "{e}");
    }

    #[test]
    fn kafka_settings_pass_through_and_secrets_stay_out_of_debug() {
        let s = from(&[
            ("MES_KAFKA_BROKERS", "k1:9092"),
            ("MES_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("MES_KAFKA_SASL_PASSWORD", "hunter2"),
            ("MES_DATABASE_URL", "postgres://u:pw-secret@db/mes"),
        ])
        .unwrap();
        assert_eq!(s.kafka_brokers, "k1:9092");
        assert_eq!(s.kafka["security.protocol"], "SASL_SSL");
        assert_eq!(s.kafka["sasl.password"], "hunter2");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw-secret"),
            "{shown}"
        );
        assert_eq!(s.database_kind(), "postgresql");
    }

    #[test]
    fn bad_report_settings_name_their_environment_variable() {
        let e = from(&[("MES_REPORT_CRON", "every day")]).unwrap_err();
        assert_eq!(e.setting, "MES_REPORT_CRON", "{e}");
        let e = from(&[("MES_REPORT_CRON", "0 0 0 30 2 *")]).unwrap_err();
        assert_eq!(e.setting, "MES_REPORT_CRON", "{e}");
        let e = from(&[("MES_REPORT_TZ", "Mars/Olympus")]).unwrap_err();
        assert_eq!(e.setting, "MES_REPORT_TZ", "{e}");
        let e = from(&[("MES_REPORT_LOOKBACK_DAYS", "400")]).unwrap_err();
        assert_eq!(e.setting, "MES_REPORT_LOOKBACK_DAYS", "{e}");
        let s = from(&[("MES_REPORT_TZ", "Europe/Lisbon")]).unwrap();
        assert_eq!(s.report_schedule().unwrap().lookback_days(), 7);
    }

    #[test]
    fn webhooks_parse_with_formats_and_never_show_their_path() {
        let s = from(&[
            (
                "MES_WEBHOOKS",
                "http://127.0.0.1:9/hook, telegram:https://api.telegram.invalid/botSECRET/sendMessage",
            ),
            ("MES_WEBHOOK_ALLOW_HTTP", "true"),
            ("MES_TELEGRAM_CHAT_ID", "-1001234"),
            ("MES_POLL_INTERVAL_SECS", "2"),
        ])
        .unwrap();
        let hooks = s.webhooks().unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].format, WebhookFormat::Json);
        assert_eq!(hooks[1].format, WebhookFormat::Telegram);
        assert_eq!(s.telegram_chat_id.as_deref(), Some("-1001234"));
        assert_eq!(s.poll_interval(), Duration::from_secs(2));
        let shown = format!("{hooks:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(from(&[]).unwrap().webhooks().unwrap().is_empty());
    }

    #[test]
    fn session_settings_have_defaults_and_limits() {
        let s = from(&[]).unwrap();
        assert_eq!(s.session_ttl().unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(s.session_recheck(), Duration::from_secs(60));
        assert_eq!(s.cookie_secure, None);
        let s = from(&[
            ("MES_SESSION_TTL", "30m"),
            ("MES_SESSION_RECHECK_SECS", "2"),
            ("MES_COOKIE_SECURE", "true"),
        ])
        .unwrap();
        assert_eq!(s.session_ttl().unwrap(), Duration::from_secs(1800));
        assert_eq!(s.session_recheck(), Duration::from_secs(2));
        assert_eq!(s.cookie_secure, Some(true));
        for bad in ["soon", "10s", "90d"] {
            let e = from(&[("MES_SESSION_TTL", bad)]).unwrap_err();
            assert_eq!(e.setting, "MES_SESSION_TTL", "{bad}: {e}");
        }
        let e = from(&[("MES_SESSION_RECHECK_SECS", "0")]).unwrap_err();
        assert_eq!(e.setting, "MES_SESSION_RECHECK_SECS");
    }

    #[cfg(unix)]
    #[test]
    fn a_signing_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("mes-key-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signing.key");
        std::fs::write(&path, SigningKey::generate().to_hex()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = Settings {
            signing_key_file: Some(path.clone()),
            ..Settings::default()
        };
        let e = s.signing_key().unwrap_err();
        assert_eq!(e.setting, "MES_SIGNING_KEY_FILE");
        assert!(e.message.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(s.signing_key().unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_value_names_its_environment_variable() {
        let e = from(&[("MES_REQUEST_TIMEOUT_MS", "soon")]).unwrap_err();
        assert_eq!(e.setting, "MES_REQUEST_TIMEOUT_MS", "{e}");
        let e = from(&[("MES_CORRELATION", "sometimes")]).unwrap_err();
        assert_eq!(e.setting, "MES_CORRELATION");
        let e = from(&[("MES_REQUEST_TIMEOUT_MS", "0")]).unwrap_err();
        assert_eq!(e.setting, "MES_REQUEST_TIMEOUT_MS");
        for (name, value) in [
            ("MES_RATE_LIMIT_PER_SEC", "0"),
            ("MES_RATE_LIMIT_PER_SEC", "4294967295"),
            ("MES_RATE_LIMIT_PER_SEC", "18446744073709551615"),
            ("MES_AUTH_FAILURES_PER_MIN", "0"),
            ("MES_AUTH_FAILURES_PER_MIN", "-1"),
            ("MES_CLIENT_IP_HEADER", " "),
        ] {
            let e = from(&[(name, value)]).unwrap_err();
            assert_eq!(e.setting, name, "{name}={value}: {e}");
        }
        let s = from(&[
            ("MES_RATE_LIMIT_PER_SEC", "5"),
            ("MES_CLIENT_IP_HEADER", "X-Real-IP"),
        ])
        .unwrap();
        assert_eq!(s.rate_limit().map(|n| n.get()).ok(), Some(5));
        let e = from(&[("MES_WEBHOOKS", "ftp://x/hook")]).unwrap_err();
        assert_eq!(e.setting, "MES_WEBHOOKS");
        let e = from(&[("MES_WEBHOOKS", "http://hooks.invalid/botSECRET/x")]).unwrap_err();
        assert_eq!(e.setting, "MES_WEBHOOKS");
        assert!(e.message.contains("MES_WEBHOOK_ALLOW_HTTP"), "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let e = from(&[(
            "MES_WEBHOOKS",
            "telegram:https://t.invalid/botSECRET/sendMessage",
        )])
        .unwrap_err();
        assert_eq!(e.setting, "MES_TELEGRAM_CHAT_ID");
        let e = from(&[("MES_POLL_INTERVAL_SECS", "0")]).unwrap_err();
        assert_eq!(e.setting, "MES_POLL_INTERVAL_SECS");
        let e = from(&[("MES_POLL_INTERVAL_SECS", "18446744073709551615")]).unwrap_err();
        assert_eq!(e.setting, "MES_POLL_INTERVAL_SECS");
        let e = from(&[("MES_REQUEST_TIMEOUT_MS", "18446744073709551615")]).unwrap_err();
        assert_eq!(e.setting, "MES_REQUEST_TIMEOUT_MS");
        let e = from(&[("MES_MAX_IN_FLIGHT", "18446744073709551615")]).unwrap_err();
        assert_eq!(e.setting, "MES_MAX_IN_FLIGHT");
        let e = from(&[("MES_DATABASE_POOL_TIMEOUT", "0")]).unwrap_err();
        assert_eq!(e.setting, "MES_DATABASE_POOL_TIMEOUT");
        let e = from(&[("MES_DATABASE_STATEMENT_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.setting, "MES_DATABASE_STATEMENT_TIMEOUT");
        let e = from(&[("MES_REQUEST_TIMEOUT_MS", "0")]).unwrap_err();
        assert_eq!(e.setting, "MES_REQUEST_TIMEOUT_MS");
        let s = from(&[("MES_SIGNING_KEY_FILE", "/nonexistent/key")]).unwrap();
        let e = s.bridge_config("x:1").unwrap_err();
        assert_eq!(e.setting, "MES_SIGNING_KEY_FILE");
    }
}
