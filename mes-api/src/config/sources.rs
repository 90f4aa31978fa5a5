//! Where the settings come from: the defaults of [`Settings`], then `Rocket.toml`
//! (and `ROCKET_*`), then `MES_*`, merged by figment and read by serde.

use rocket::config::LogLevel;
use rocket::figment::Figment;
use rocket::figment::providers::Serialized;
use rocket::figment::value::{Dict, Value};

use super::{ConfigError, ENV_PREFIX, Settings};

/// The Rocket figment (`Rocket.toml`, `ROCKET_*`, Rocket's own log level
/// [`quiet`] unless they set it) with our settings' defaults under it and `MES_*`
/// over it.
pub fn figment() -> Figment {
    figment_from(quiet(rocket::Config::figment()), std::env::vars())
}

/// Rocket's own log level (`log_level`) `critical` unless `base` sets it (`Rocket.toml`,
/// `ROCKET_LOG_LEVEL`): Rocket's launch listing (its configuration, every route,
/// catcher and fairing: some 70 lines) and its lines about each request would
/// otherwise bury the start-up banner and the server's own log. `normal` brings them
/// back.
pub fn quiet(base: Figment) -> Figment {
    // Rocket's built-in defaults are the one provider named so.
    let defaulted = base
        .find_metadata("log_level")
        .is_none_or(|found| found.name == "rocket::Config::default()");
    if defaulted {
        base.merge(("log_level", LogLevel::Critical))
    } else {
        base
    }
}

/// Rocket's own log level in `figment` (see [`quiet`]); `critical` if it cannot be read
/// (Rocket's start then names the bad value).
pub fn rocket_log_level(figment: &Figment) -> LogLevel {
    figment
        .extract_inner("log_level")
        .unwrap_or(LogLevel::Critical)
}

/// [`figment`] over `base` and the given environment, for tests.
pub fn figment_from(base: Figment, env: impl IntoIterator<Item = (String, String)>) -> Figment {
    let (mut ours, mut kafka) = (Dict::new(), Dict::new());
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX).map(str::to_ascii_lowercase) else {
            continue;
        };
        match key.strip_prefix("kafka_") {
            Some(setting) if setting != "brokers" && !setting.is_empty() => {
                kafka.insert(setting.replace('_', "."), Value::from(value));
            }
            // As figment's own `Env` does: "10" is a number, "true" a boolean.
            _ if !key.is_empty() => {
                ours.insert(key, value.parse().unwrap_or_else(|e| match e {}));
            }
            _ => {}
        }
    }
    if !kafka.is_empty() {
        ours.insert("kafka".to_owned(), Value::from(kafka));
    }
    Figment::from(Serialized::defaults(Settings::default()))
        .merge(base)
        .merge(Serialized::globals(ours))
}

/// Reads the settings from `figment` (Rocket's own keys in it are not ours and left
/// alone), naming the setting at fault on error.
pub fn extract(figment: &Figment) -> Result<Settings, ConfigError> {
    let mut settings: Settings = figment.extract().map_err(|e| match e.path.first() {
        Some(key) => ConfigError::new(env_name(key), e.kind.to_string()),
        None => ConfigError::new(
            "Rocket.toml",
            e.to_string().lines().next().unwrap_or_default(),
        ),
    })?;
    settings.kafka_brokers_explicit = figment.contains("kafka_brokers");
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
