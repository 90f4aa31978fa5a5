#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use mes_core::signing::SigningKey;
use rocket::figment::Figment;
use rocket::figment::providers::{Format, Toml};
use rocket::figment::value::Value;

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

/// The keys serde reads into [`Settings`], from the derived `Deserialize` itself (it
/// hands its field list to `deserialize_struct`): the settings, with no list to keep.
fn keys() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom(
                "only the field names were asked for",
            ))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = Settings::deserialize(Fields(&mut fields));
    fields
}

#[test]
fn example_env_lists_every_setting_and_nothing_else() {
    let example = include_str!("../../../example.env");
    let pass_through =
        |name: &str| name.starts_with(KAFKA_ENV_PREFIX) && name != "MES_KAFKA_BROKERS";
    let listed: BTreeSet<String> = example
        .lines()
        .filter_map(|line| line.strip_prefix("# ")?.split_once('='))
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.starts_with(ENV_PREFIX) && !pass_through(name))
        .collect();
    let settings: BTreeSet<String> = keys()
        .iter()
        .filter(|key| **key != "kafka")
        .map(|key| env_name(key))
        .collect();
    assert!(settings.len() > 30, "{settings:?}");
    assert_eq!(
        listed.difference(&settings).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in example.env but not a setting"
    );
    assert_eq!(
        settings.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "a setting missing from example.env (as `# MES_X=default`)"
    );
    // Nor does its prose name a setting that does not exist.
    for word in example.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.len() > ENV_PREFIX.len() && word.starts_with(ENV_PREFIX) && !pass_through(word) {
            assert!(settings.contains(word), "example.env names {word}");
        }
    }
}

#[test]
fn example_env_shows_each_default() {
    let defaults = Value::serialize(Settings::default()).unwrap();
    for line in include_str!("../../../example.env").lines() {
        let Some((name, value)) = line.strip_prefix("# MES_").and_then(|l| l.split_once('='))
        else {
            continue;
        };
        let key = name.to_ascii_lowercase();
        // Settings unset by default (`None`) show a value to give, or nothing.
        let shown = match defaults.find_ref(&key) {
            Some(Value::String(_, text)) if !text.is_empty() => text.clone(),
            Some(Value::Num(_, n)) => n.to_u128().unwrap_or_default().to_string(),
            Some(Value::Bool(_, b)) => b.to_string(),
            _ => continue,
        };
        assert_eq!(value.trim(), shown, "example.env: {line}");
    }
}

#[test]
fn defaults_are_the_embedded_demo() {
    let s = from(&[]).unwrap();
    assert!(s.is_embedded());
    assert_eq!(s.database_url(), "mes-data/mes.db");
    assert_eq!(s.database_kind(), "sqlite");
    assert_eq!(s.topics(), TopicNames::default());
    assert_eq!(s.report_cron, "0 30 9 * * *");
    assert_eq!(s.report_tz, Tz::UTC);
    assert_eq!(s.report_lookback_days, 7);
    assert_eq!(s.correlation, CorrelationMode::Auto);
    assert_eq!(s.record_replies, RecordReplies::Wait);
    let pool = s.pool_options();
    assert_eq!(pool.connection_timeout, Duration::from_secs(2));
    assert_eq!(pool.statement_timeout, Some(Duration::from_secs(5)));
    assert!(!s.kafka_brokers_explicit);
    assert!(s.check_demo_database().is_ok(), "the demo on its own file");
}

#[test]
fn durations_take_humantime_or_bare_seconds() {
    let s = from(&[
        ("MES_DATABASE_POOL_TIMEOUT", "500ms"),
        ("MES_DATABASE_STATEMENT_TIMEOUT", "0"),
        ("MES_LEGACY_FENCE_MAX", "90"),
        ("MES_SESSION_TTL", " 2h "),
    ])
    .unwrap();
    let pool = s.pool_options();
    assert_eq!(pool.connection_timeout, Duration::from_millis(500));
    assert_eq!(pool.statement_timeout, None, "0 turns it off");
    assert_eq!(s.legacy_fence_max, Duration::from_secs(90));
    assert_eq!(s.session_ttl, Duration::from_secs(7200));
    for (name, bad) in [
        ("MES_LEGACY_FENCE_MAX", "soon"),
        ("MES_LEGACY_FENCE_MAX", "0"),
        ("MES_LEGACY_FENCE_MAX", "25h"),
        ("MES_LEGACY_FENCE_MAX", "-1"),
        ("MES_DATABASE_POOL_TIMEOUT", "2h"),
        ("MES_DATABASE_STATEMENT_TIMEOUT", "1.5"),
        ("MES_DATABASE_STATEMENT_TIMEOUT", "2d"),
    ] {
        let e = from(&[(name, bad)]).unwrap_err();
        assert_eq!(e.setting, name, "{name}={bad}: {e}");
    }
}

#[test]
fn rocket_toml_keys_still_work_under_the_environment() {
    let toml = Toml::string(
        r#"
        [default]
        port = 8001
        report_tz = "Europe/Lisbon"
        legacy_fence_max = "3m"
        request_timeout_ms = 2500
        correlation = "legacy"
        kafka = { "security.protocol" = "SSL", "client.id" = "mes" }

        [release]
        demo_size = 3
        kafka_brokers = "k1:9092"
        "#,
    )
    .nested();
    let base = Figment::from(toml).select("release");
    let s = extract(&figment_from(
        base,
        env(&[
            ("MES_REQUEST_TIMEOUT_MS", "3000"),
            ("MES_KAFKA_CLIENT_ID", "mes-1"),
            ("MES_REPLY_TRUST", "unsigned"),
        ]),
    ))
    .unwrap();
    assert_eq!(s.report_tz, chrono_tz::Europe::Lisbon);
    assert_eq!(s.legacy_fence_max, Duration::from_secs(180));
    assert_eq!(s.request_timeout_ms, 3000, "MES_* wins");
    assert_eq!(s.correlation, CorrelationMode::Legacy);
    assert_eq!(s.demo_size, 3, "the selected profile");
    assert_eq!(s.kafka_brokers, "k1:9092");
    assert!(s.kafka_brokers_explicit, "given in Rocket.toml");
    assert_eq!(s.kafka["security.protocol"], "SSL");
    assert_eq!(s.kafka["client.id"], "mes-1");
    let e = extract(&figment_from(
        Figment::from(Toml::string("[default]\nsession_ttl = \"soon\"").nested()),
        Vec::new(),
    ))
    .unwrap_err();
    assert_eq!(e.setting, "MES_SESSION_TTL", "{e}");
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
    assert_eq!(s.record_replies, RecordReplies::None);
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
    for tz in ["", "Mars/Olympus", "UTC+1"] {
        let e = from(&[("MES_REPORT_TZ", tz)]).unwrap_err();
        assert_eq!(e.setting, "MES_REPORT_TZ", "{tz:?}: {e}");
    }
    let e = from(&[("MES_REPORT_LOOKBACK_DAYS", "400")]).unwrap_err();
    assert_eq!(e.setting, "MES_REPORT_LOOKBACK_DAYS", "{e}");
    let s = from(&[("MES_REPORT_TZ", "Europe/Lisbon")]).unwrap();
    assert_eq!(s.report_schedule().unwrap().lookback_days(), 7);
    assert_eq!(
        s.report_schedule().unwrap().time_zone(),
        chrono_tz::Europe::Lisbon
    );
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
    let s = from(&[
        ("MES_WEBHOOKS", "https://hooks.invalid/x"),
        ("MES_WEBHOOK_FORMAT", " Telegram"),
        ("MES_TELEGRAM_CHAT_ID", "@plant"),
    ])
    .unwrap();
    assert_eq!(s.webhooks().unwrap()[0].format, WebhookFormat::Telegram);
    let e = from(&[("MES_WEBHOOK_FORMAT", "xml")]).unwrap_err();
    assert_eq!(e.setting, "MES_WEBHOOK_FORMAT", "{e}");
}

#[test]
fn session_settings_have_defaults_and_limits() {
    let s = from(&[]).unwrap();
    assert_eq!(s.session_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(s.session_recheck(), Duration::from_secs(60));
    assert_eq!(s.cookie_secure, None);
    let s = from(&[
        ("MES_SESSION_TTL", "30m"),
        ("MES_SESSION_RECHECK_SECS", "2"),
        ("MES_COOKIE_SECURE", "true"),
    ])
    .unwrap();
    assert_eq!(s.session_ttl, Duration::from_secs(1800));
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
    assert_eq!(s.rate_limit_per_sec.get(), 5);
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
fn the_log_format_is_text_or_json_and_anything_else_names_the_setting() {
    assert_eq!(from(&[]).unwrap().log_format, LogFormat::Text);
    assert_eq!(
        from(&[("MES_LOG_FORMAT", " JSON ")]).unwrap().log_format,
        LogFormat::Json
    );
    let e = from(&[("MES_LOG_FORMAT", "xml")]).unwrap_err();
    assert_eq!(e.setting, "MES_LOG_FORMAT", "{e}");
    assert!(e.message.contains("text or json"), "{e}");
}

#[test]
fn the_database_is_shown_without_credentials() {
    let shown = |url: &str| {
        from(&[("MES_DATABASE_URL", url), ("MES_KAFKA_BROKERS", "k:9092")])
            .unwrap()
            .database_display()
    };
    assert_eq!(
        shown("postgres://mes:s3cret@db.internal:5432/mes"),
        "postgresql postgres://db.internal:5432/mes"
    );
    let with_params = shown("postgresql://u@db/mes?sslmode=require&password=s3cret");
    assert_eq!(
        with_params,
        "postgresql postgresql://db/mes?sslmode=require"
    );
    assert_eq!(shown("/var/lib/mes/mes.db"), "sqlite /var/lib/mes/mes.db");
    assert_eq!(
        from(&[]).unwrap().database_display(),
        "sqlite mes-data/mes.db"
    );
}

#[test]
fn rocket_is_quiet_unless_its_log_level_is_given() {
    let level = |figment: Figment| rocket_log_level(&quiet(figment));
    let defaults = Figment::from(rocket::Config::default());
    assert_eq!(level(defaults.clone()), rocket::config::LogLevel::Critical);
    assert_eq!(
        level(defaults.clone().merge(("log_level", "normal"))),
        rocket::config::LogLevel::Normal
    );
    assert_eq!(
        level(defaults.merge(Toml::string("log_level = \"debug\""))),
        rocket::config::LogLevel::Debug
    );
}
