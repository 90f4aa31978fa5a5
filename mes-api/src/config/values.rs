//! How one setting's value is read from the text (or number) it was given: durations,
//! words out of a few, time zones, numbers that are really names. Each reader's
//! refusal says what it accepts; figment's error then names the setting.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use kafka_bridge::bridge::CorrelationMode;
use kafka_bridge::relay::RecordReplies;
use serde::{Deserialize, Deserializer, Serializer};

/// A duration setting: `2s`, `500ms`, `1m` (humantime), or a bare number of seconds,
/// from the environment (where `90` arrives as a number) or from `Rocket.toml`.
pub(super) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 2s, 500ms or 1m")
            }

            fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(secs))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                let text = text.trim();
                match text.parse::<u64>() {
                    Ok(secs) => Ok(Duration::from_secs(secs)),
                    Err(_) => humantime::parse_duration(text).map_err(|e| {
                        E::custom(format!("not a duration like 2s, 500ms or 1m: {e}"))
                    }),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A setting that is one word out of a few (or a time zone name): read with `FromStr`
/// (blanks around it ignored), written with `Display`; a refusal says what is accepted.
pub(super) trait Word: FromStr + fmt::Display {
    /// What a refusal says, e.g. `must be auto, id or legacy`.
    const EXPECTED: &'static str;
}

impl Word for CorrelationMode {
    const EXPECTED: &'static str = "must be auto, id or legacy";
}

impl Word for RecordReplies {
    const EXPECTED: &'static str = "must be wait or none";
}

impl Word for Tz {
    const EXPECTED: &'static str =
        "unknown time zone (expected an IANA name such as UTC or Europe/Lisbon)";
}

/// `#[serde(with = "word")]` for [`Word`] settings.
pub(super) mod word {
    use super::*;

    pub(crate) fn serialize<T: Word, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(crate) fn deserialize<'de, T: Word, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        text.trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(T::EXPECTED))
    }
}

/// Declares an enum of [`Word`]s: its `FromStr` (any case, blanks around it ignored),
/// its `Display` (the first spelling) and what a refusal says.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$variant_meta:meta])* $variant:ident = $word:literal $(| $alias:literal)*,)*
    }
    else $expected:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)*
        }

        impl ::std::str::FromStr for $name {
            type Err = ();

            fn from_str(s: &str) -> Result<Self, ()> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($word $(| $alias)* => Ok($name::$variant),)*
                    _ => Err(()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $word,)*
                })
            }
        }

        impl $crate::config::values::Word for $name {
            const EXPECTED: &'static str = $expected;
        }
    };
}

pub(super) use words;

/// Accepts `-100123` (read from the environment as a number) as well as `"@plant"`.
pub(super) fn string_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
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
