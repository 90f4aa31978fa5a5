//! The process's log: tracing-subscriber on standard error, as text or one JSON object
//! per line (`MES_LOG_FORMAT`), filtered by `RUST_LOG` (default `info`) and, for
//! Rocket's own lines, by Rocket's `log_level` (default `critical`, see
//! [`config::quiet`](crate::config::quiet)).
//!
//! Rocket logs through the `log` crate; tracing-subscriber's `log` bridge takes its
//! records (Rocket's own logger then stays unset, so its `log_level` filters nothing by
//! itself): [`filter`] turns that level into a directive for the `rocket` targets.

use rocket::config::LogLevel;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::LogFormat;

/// The directives Rocket's `log_level` stands for. `critical` keeps Rocket's errors
/// and warnings (a signal received, a failed request) but not its launch message: the
/// banner says where the server listens, and its WARN level would page people who
/// alert on warnings.
fn rocket_directives(level: LogLevel) -> &'static [&'static str] {
    match level {
        LogLevel::Off => &["rocket=off"],
        LogLevel::Critical => &["rocket=warn", "rocket::launch=error"],
        LogLevel::Normal => &["rocket=info"],
        LogLevel::Debug => &["rocket=trace"],
    }
}

/// `rust_log` (`RUST_LOG`, default `info`, tokio-cron-scheduler's chatter at `warn`), with Rocket's lines at `rocket`'s level
/// unless `rust_log` names a `rocket` target itself. A `RUST_LOG` that does not parse
/// is ignored for the default, as tracing-subscriber's own `from_default_env` does.
pub fn filter(rust_log: Option<&str>, rocket: LogLevel) -> EnvFilter {
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let mut filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        // tokio-cron-scheduler says "Uninited" and more at info when a job starts.
        .unwrap_or_else(|| EnvFilter::new("info,tokio_cron_scheduler=warn"));
    if !rust_log.is_some_and(|directives| directives.contains("rocket")) {
        for directive in rocket_directives(rocket) {
            if let Ok(directive) = directive.parse::<Directive>() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Whether an event is one of Rocket's indented detail lines (target `…::_`: the
/// request guard that failed, the catcher that answered, …), which Rocket's `critical`
/// and `off` leave out: the request's own line ([`crate::request_id`]) says its status
/// and error code once.
fn rocket_detail(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().ends_with("::_")
}

/// Installs the process's subscriber (once; later calls do nothing): `format` on
/// standard error, filtered by [`filter`] over `RUST_LOG`.
pub fn init(format: LogFormat, rocket: LogLevel) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let rust_log = std::env::var("RUST_LOG").ok();
    let quiet = matches!(rocket, LogLevel::Off | LogLevel::Critical);
    let text = (format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // Fields beside `message` at the top level, where collectors look for them.
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter(rust_log.as_deref(), rocket))
        .with(quiet.then(|| tracing_subscriber::filter::filter_fn(|m| !rocket_detail(m))))
        .with(text)
        .with(json)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocket_follows_its_log_level_unless_rust_log_names_it() {
        let quiet = filter(None, LogLevel::Critical).to_string();
        assert!(quiet.contains("rocket=warn"), "{quiet}");
        assert!(quiet.contains("rocket::launch=error"), "{quiet}");
        assert!(quiet.contains("info"), "{quiet}");
        let normal = filter(Some("warn"), LogLevel::Normal).to_string();
        assert!(
            normal.contains("rocket=info") && normal.contains("warn"),
            "{normal}"
        );
        let own = filter(Some("info,rocket=debug"), LogLevel::Off).to_string();
        assert!(
            own.contains("rocket=debug") && !own.contains("rocket=off"),
            "{own}"
        );
        let bad = filter(Some("=,=nonsense[["), LogLevel::Off).to_string();
        assert!(bad.contains("rocket=off") && bad.contains("info"), "{bad}");
    }
}
