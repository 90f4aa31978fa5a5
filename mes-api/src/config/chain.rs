//! The settings that face the chain: whether its replies are trusted, the topic
//! names, the key files, and the bridge's configuration built from them.

use std::path::Path;

use kafka_bridge::bridge::{BridgeConfig, CorrelationMode};
use kafka_bridge::kafka::{KafkaConfig, TopicNames};
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;

use super::{ConfigError, Settings, check, values};

values::words! {
    /// `MES_REPLY_TRUST`: what the operator accepts from the chain's gateway.
    pub enum ReplyTrust {
        /// Only replies signed by the gateway's key (`MES_GATEWAY_KEY_FILE`, required).
        Signed = "signed",
        /// Replies nobody signed too: for gateways that cannot sign, like the original's.
        Unsigned = "unsigned",
    }
    else "must be signed or unsigned"
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

impl Settings {
    /// Whether replies from the chain will be verified, or why the server must not
    /// start: outside the embedded demo, replies are verified
    /// (`MES_GATEWAY_KEY_FILE`) unless the operator said `MES_REPLY_TRUST=unsigned`.
    /// Without either, anyone who can write to the reply topic could answer for the
    /// chain.
    pub fn reply_verification(&self) -> Result<ReplyVerification, ConfigError> {
        if self.gateway_key_file.is_some() {
            return Ok(ReplyVerification::On);
        }
        if self.is_embedded() || self.reply_trust == ReplyTrust::Unsigned {
            return Ok(ReplyVerification::Off);
        }
        Err(ConfigError::new(
            "MES_GATEWAY_KEY_FILE/MES_REPLY_TRUST",
            "replies from the chain cannot be verified: set MES_GATEWAY_KEY_FILE to the \
             gateway's public key, or MES_REPLY_TRUST=unsigned to accept unsigned replies \
             (a gateway that cannot sign; see docs/security.md)",
        ))
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
        config.correlation = self.correlation;
        config.request_timeout = self.request_timeout();
        config.legacy_fence_max = self.legacy_fence_max;
        config.max_in_flight = self.max_in_flight;
        config.create_topics = self.create_topics;
        config.signing_key = self.signing_key()?;
        config.gateway_key = self.gateway_key()?;
        // Signed replies are matched by their signed corr, never by token.
        check(
            config.gateway_key.is_none() || config.correlation != CorrelationMode::Legacy,
            "MES_CORRELATION",
            "legacy cannot be used with MES_GATEWAY_KEY_FILE: signed replies carry \
             corr and are matched by it (use auto or id)",
        )?;
        Ok(config)
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
