//! Where the settings come from: the defaults of [`Settings`], then `Rocket.toml`
//! (and `ROCKET_*`), then `MES_*`, merged by figment and read by serde.

use rocket::figment::Figment;
use rocket::figment::providers::Serialized;
use rocket::figment::value::{Dict, Value};

use super::{ConfigError, ENV_PREFIX, Settings};

/// The Rocket figment (`Rocket.toml`, `ROCKET_*`) with our settings' defaults under it
/// and `MES_*` over it.
pub fn figment() -> Figment {
    figment_from(rocket::Config::figment(), std::env::vars())
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
