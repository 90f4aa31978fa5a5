//! The settings as the command line shows them: `mes-api --help` lists every `MES_*`
//! variable with its default and what it is for. All of it is read off [`Settings`]
//! itself (its fields' doc comments and its `Default`), so the help cannot drift from
//! what the server reads; a test checks that every setting has a text.

use serde_json::Value;

use super::{EMBEDDED, Settings, env_name};

/// One setting as `--help` documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    /// The settings key (`database_url`); the flag is `--database-url`.
    pub key: &'static str,
    /// The environment variable (`MES_DATABASE_URL`).
    pub env: String,
    /// What it is for: the field's doc comment, in one paragraph.
    pub doc: String,
    /// The default as it would be written, when it has one a person can write.
    pub default: Option<String>,
}

impl SettingDoc {
    /// The doc's first sentence, for `-h`.
    pub fn summary(&self) -> &str {
        self.doc
            .find(". ")
            .map_or(self.doc.as_str(), |end| &self.doc[..=end])
    }
}

/// Every setting a person can give, in the order [`Settings`] declares them. Left out:
/// fields that are not read (`#[serde(skip)]`) and `kafka`, the map of librdkafka
/// properties (`MES_KAFKA_<PROPERTY>`), which has no single variable.
pub fn settings() -> Vec<SettingDoc> {
    let defaults = serde_json::to_value(Settings::default()).unwrap_or(Value::Null);
    Settings::FIELD_ATTRIBUTES
        .iter()
        .filter(|(key, attributes)| *key != "kafka" && !attributes.contains(&"serde(skip)"))
        .map(|(key, attributes)| SettingDoc {
            key,
            env: env_name(key),
            doc: doc_of(attributes),
            default: default_of(key, &defaults),
        })
        .collect()
}

/// The doc comment among a field's attributes (`doc = r" …"` each line), as one
/// paragraph, with rustdoc's links written as a person reads them.
fn doc_of(attributes: &[&str]) -> String {
    let lines: Vec<String> = attributes
        .iter()
        .filter_map(|attribute| doc_line(attribute))
        .collect();
    plain_links(&lines.join(" "))
}

/// The text of one `doc = …` attribute as `stringify!` writes it: a raw string
/// (`r" …"`, `r#" …"#`) for a `///` line, or a plain string literal.
fn doc_line(attribute: &str) -> Option<String> {
    let literal = attribute.strip_prefix("doc")?.trim_start();
    let literal = literal.strip_prefix('=')?.trim();
    let text = if let Some(raw) = literal.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let body = raw.get(hashes..raw.len().checked_sub(hashes)?)?;
        body.strip_prefix('"')?.strip_suffix('"')?.to_owned()
    } else {
        literal
            .strip_prefix('"')?
            .strip_suffix('"')?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    };
    Some(text.trim().to_owned())
}

/// Rustdoc links as text: [`Settings::report_cron`] is `MES_REPORT_CRON`, any other
/// [`Item`] its name in backticks.
fn plain_links(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start..].find("`]") else {
            break;
        };
        out.push_str(&rest[..start]);
        let item = &rest[start + 2..start + len];
        match item.strip_prefix("Settings::") {
            Some(field) => out.push_str(&env_name(field)),
            None => {
                out.push('`');
                out.push_str(item);
                out.push('`');
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The default of `key` as a person would write it; `None` where there is none to
/// write (unset options, empty lists).
fn default_of(key: &str, defaults: &Value) -> Option<String> {
    // Not serialized (so that figment can tell whether it was given): its default is
    // the demo.
    if key == "kafka_brokers" {
        return Some(EMBEDDED.to_owned());
    }
    match defaults.get(key)? {
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_doc_and_known_defaults_read_as_written() {
        let settings = settings();
        assert!(settings.len() > 30, "{}", settings.len());
        for setting in &settings {
            assert!(!setting.doc.is_empty(), "{} has no doc", setting.env);
            assert!(
                !setting.doc.contains("[`"),
                "{}: {}",
                setting.env,
                setting.doc
            );
            assert!(
                !setting.doc.contains("r\""),
                "{}: {}",
                setting.env,
                setting.doc
            );
        }
        let find = |env: &str| settings.iter().find(|s| s.env == env).cloned();
        assert_eq!(
            find("MES_DATABASE_POOL_TIMEOUT")
                .and_then(|s| s.default)
                .as_deref(),
            Some("2s")
        );
        assert_eq!(
            find("MES_KAFKA_BROKERS").and_then(|s| s.default).as_deref(),
            Some("embedded")
        );
        assert_eq!(
            find("MES_CREATE_TOPICS").and_then(|s| s.default).as_deref(),
            Some("true")
        );
        assert_eq!(find("MES_DATABASE_URL").and_then(|s| s.default), None);
        assert_eq!(find("MES_KAFKA"), None);
        assert_eq!(find("MES_KAFKA_BROKERS_EXPLICIT"), None);
    }

    #[test]
    fn doc_lines_and_links_read_as_text() {
        assert_eq!(
            doc_line(r#"doc = r" Where files live.""#).as_deref(),
            Some("Where files live.")
        );
        assert_eq!(
            doc_line(r##"doc = r#" A "quoted" word."#"##).as_deref(),
            Some(r#"A "quoted" word."#)
        );
        assert_eq!(
            doc_line(r#"doc = "plain \"x\"""#).as_deref(),
            Some(r#"plain "x""#)
        );
        assert_eq!(doc_line("serde(skip)"), None);
        assert_eq!(
            plain_links("Time zone of [`Settings::report_cron`], or [`EMBEDDED`]."),
            "Time zone of MES_REPORT_CRON, or `EMBEDDED`."
        );
    }
}
