//! Putting the server together: database, (embedded) broker and chain, bridge,
//! Rocket. [`prepare`] does everything that can fail for a reason the user must fix
//! and reports it as one [`ConfigError`] naming the setting; [`rocket()`] only wires.

use std::path::Path;

use kafka_bridge::bridge::Bridge;
use mes_core::db;
use rocket::fairing::AdHoc;
use rocket::figment::Figment;
use rocket::{Build, Rocket};

use crate::app::App;
use crate::config::{ConfigError, ReplyVerification, Settings};
use crate::db::Db;

#[cfg(feature = "embedded")]
mod demo;

/// Name of the operator the embedded demo creates (with a new key at every start).
pub const DEMO_OPERATOR: &str = "demo";

/// `name` of the master token the embedded demo stores: with [`DEMO_TOKEN_PREFIX`],
/// how the demo tells its own data from a real database's.
pub const DEMO_TOKEN_NAME: &str = "embedded demo";

/// Start of the master token the embedded demo stores.
pub const DEMO_TOKEN_PREFIX: &str = "demo-";

/// A server ready to launch, and what the embedded demo made for the user.
pub struct Prepared {
    /// The state to [`rocket()`].
    pub app: App,
    /// The demo operator's key (embedded mode only): shown once, at start-up.
    pub demo_key: Option<String>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The demo key is a secret once printed: never in logs.
        f.debug_struct("Prepared")
            .field("app", &self.app)
            .field("demo_key", &self.demo_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn database_error(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::new("MES_DATABASE_URL", e.to_string())
}

/// Opens (creating the SQLite file and its directory if needed) and migrates the
/// database, then pools connections to it.
pub async fn open_db(settings: &Settings) -> Result<Db, ConfigError> {
    let url = settings.database_url();
    if settings.database_kind() == "sqlite" {
        let path = url.strip_prefix("sqlite://").unwrap_or(&url);
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
            && !path.starts_with("file:")
            && path != ":memory:"
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                database_error(format!(
                    "cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
    }
    let options = settings.pool_options();
    let pool = rocket::tokio::task::spawn_blocking(move || db::pool_with(&url, &options))
        .await
        .map_err(database_error)?
        .map_err(database_error)?;
    Ok(Db::new(pool))
}

/// Opens one migrated connection, for the CLI's commands.
pub fn connect_db(settings: &Settings) -> Result<db::DbConnection, ConfigError> {
    let url = settings.database_url();
    if settings.database_kind() == "sqlite"
        && let Some(dir) = Path::new(&url).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            database_error(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    db::connect(&url).map_err(database_error)
}

/// Connects everything the server needs. In embedded mode it also starts the mock
/// broker and the simulated chain, stores a master token if there is none, and gives
/// the demo operator a new key.
pub async fn prepare(settings: Settings) -> Result<Prepared, ConfigError> {
    // Settings built in code (tests, benches) are checked as `config::load`'s are.
    settings.validate()?;
    // Before anything touches the database: the demo on a database the user named,
    // without asking for it, would write demo data into it.
    settings.check_demo_database()?;
    // Whether replies can be trusted, then key files and modes: cheap, and their
    // errors are the clearest.
    let verification = settings.reply_verification()?;
    #[cfg_attr(not(feature = "embedded"), allow(unused_mut))]
    let mut bridge_config = settings.bridge_config(&settings.kafka_brokers)?;
    // A build without the demo refuses it, still before the database is opened.
    settings.check_embedded_built()?;
    let db = open_db(&settings).await?;
    #[cfg(feature = "embedded")]
    let (embedded, demo_key) = if settings.is_embedded() {
        let (embedded, key) = demo::start(&settings, &db, &mut bridge_config).await?;
        (Some(embedded), Some(key))
    } else {
        (None, None)
    };
    // `check_embedded_built` refused the demo above.
    #[cfg(not(feature = "embedded"))]
    let (embedded, demo_key) = (None, None);
    let bridge = Bridge::connect(bridge_config).await.map_err(|e| {
        ConfigError::new(
            "MES_KAFKA_BROKERS",
            format!("cannot reach the broker at {}: {e}", settings.kafka_brokers),
        )
    })?;
    if verification == ReplyVerification::Off && !bridge.verifies_replies() {
        tracing::warn!(
            "MES_REPLY_TRUST=unsigned: replies from the chain are not verified; anyone who \
             can write to {} can answer for the chain (docs/security.md)",
            settings.topic_reply
        );
    }
    Ok(Prepared {
        app: App::new(settings, db, bridge, embedded)?,
        demo_key,
    })
}

/// The production units the embedded demo starts with, so the console has something
/// to show; `(code, name, status, process)`.
pub const DEMO_UNITS: [(&str, &str, &str, &str); 2] = [
    ("PT10", "Press PT10", "RUNNING", "Stamping"),
    ("PT11", "Press PT11", "IDLE", "Deburring"),
];

/// The Rocket instance: routes, catchers, metrics; on liftoff the outbox relay and
/// the daily-report job start, and on shutdown they stop, then the bridge and the
/// embedded services.
///
/// Rocket's shutdown grace is raised to at least the request timeout (plus time to
/// answer), whatever `Rocket.toml` says: a call accepted before SIGTERM that waits for
/// the chain is answered, not cut off.
pub fn rocket(figment: Figment, app: App) -> Rocket<Build> {
    let metrics = app.http_metrics.fairing();
    let needed = crate::app::shutdown_grace(app.settings.request_timeout()).as_secs();
    let needed = u32::try_from(needed).unwrap_or(u32::MAX);
    let configured: u32 = figment.extract_inner("shutdown.grace").unwrap_or(0);
    let figment = figment.merge(("shutdown.grace", configured.max(needed)));
    app.set_served_over_tls(figment.contains("tls"));
    rocket::custom(figment)
        .manage(app)
        .mount("/", crate::routes::routes())
        .register("/", crate::error::catchers())
        .attach(crate::request_id::RequestIds)
        .attach(metrics)
        .attach(crate::events::stage())
        .attach(AdHoc::on_liftoff(
            "Outbox relay and daily report",
            |rocket| {
                Box::pin(async move {
                    if let Some(app) = rocket.state::<App>() {
                        app.start_background();
                    }
                })
            },
        ))
        .attach(AdHoc::on_shutdown(
            "Stop the jobs and the bridge",
            |rocket| {
                Box::pin(async move {
                    if let Some(app) = rocket.state::<App>() {
                        app.shutdown().await;
                    }
                })
            },
        ))
}
