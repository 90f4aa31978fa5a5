//! The ERP side of the simulator (docs/protocol.md §8): the bodies of the
//! simulator-only topics `SIM_Erp_Part` and `SIM_Erp_Act`, and a client that publishes
//! one and waits for the simulator's answer (`chain-sim erp …`).
//!
//! A real chain has its own interface for ERPs; these topics exist so a developer or a
//! test can make partner requests and orders appear while the MES runs.

use std::time::Duration;

use kafka_bridge::kafka::{Detached, KafkaConfig, correlation_headers, header_corr, reply_reader};
use kafka_bridge::{Error, Result};
use mes_core::codec::{Envelope, Reply, decode_reply};
use mes_core::domain::AgentKey;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::SimTopics;
use crate::ledger::NewOrder;
use crate::wire;

/// Default name of the topic on which an ERP asks to become a partner.
pub const ERP_PARTNER_TOPIC: &str = "SIM_Erp_Part";
/// Default name of the topic on which an ERP places an order.
pub const ERP_ORDER_TOPIC: &str = "SIM_Erp_Act";

/// Body of `SIM_Erp_Part`: the ERP that asks to become the MES's partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErpPartner {
    /// The ERP's agent key.
    pub issuing_agent: AgentKey,
}

/// Body of `SIM_Erp_Act`: an order from an ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErpOrder {
    /// The ERP's agent key; it must be an accepted partner.
    pub issuing_agent: AgentKey,
    /// Kind of order; `dummy_action` when not given (the reference's value).
    #[serde(rename = "type", default = "default_order_type")]
    pub order_type: String,
    /// Free text; empty when not given.
    #[serde(default)]
    pub description: String,
    /// What to produce; `{}` when not given.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Attachments (not in protocol §8; accepted and passed through when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Value>,
}

impl ErpOrder {
    /// The order as the ledger stores it.
    pub fn to_new_order(&self) -> NewOrder {
        NewOrder {
            issuing_agent: self.issuing_agent.clone(),
            order_type: self.order_type.clone(),
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            files: self.files.clone(),
        }
    }
}

fn default_order_type() -> String {
    "dummy_action".to_owned()
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// One message to a simulator-only ERP topic.
#[derive(Debug, Clone, PartialEq)]
pub enum ErpRequest {
    /// `SIM_Erp_Part`.
    Partner(ErpPartner),
    /// `SIM_Erp_Act`.
    Order(ErpOrder),
}

impl ErpRequest {
    /// The envelope `[{"auth": T, "corr": …}, body]`.
    pub fn envelope(&self, auth: &str, corr: Option<&str>) -> Envelope {
        let mut head = Map::new();
        head.insert("auth".into(), Value::String(auth.to_owned()));
        if let Some(corr) = corr {
            head.insert("corr".into(), Value::String(corr.to_owned()));
        }
        let body = match self {
            ErpRequest::Partner(p) => serde_json::to_value(p),
            ErpRequest::Order(o) => serde_json::to_value(o),
        };
        Envelope {
            head,
            body: body.ok(),
        }
    }

    /// The topic it goes to.
    pub fn topic<'a>(&self, topics: &'a SimTopics) -> &'a str {
        match self {
            ErpRequest::Partner(_) => &topics.erp_partner,
            ErpRequest::Order(_) => &topics.erp_order,
        }
    }
}

/// Publishes an ERP request and waits up to `timeout` for the simulator's reply on the
/// reply topic, matched by a fresh `corr` (or, from a simulator that does not echo,
/// by token). The simulator must be running: this creates no topic.
pub async fn send_erp(
    kafka: &KafkaConfig,
    topics: &SimTopics,
    token: &str,
    request: &ErpRequest,
    timeout: Duration,
) -> Result<Reply> {
    let deadline = tokio::time::Instant::now() + timeout;
    let corr = uuid::Uuid::new_v4().to_string();
    // Positioned at the current end before publishing, so the reply cannot be missed.
    let consumer = reply_reader(
        kafka,
        "chain-sim-erp",
        Duration::from_millis(10),
        &topics.chain.reply,
        timeout,
    )
    .await
    .map_err(|e| match e {
        Error::BrokerUnavailable(why) => {
            Error::BrokerUnavailable(format!("{why} (is chain-sim running?)"))
        }
        other => other,
    })?;

    let producer: FutureProducer = kafka.create(
        "the request producer",
        &[("linger.ms", "0"), ("message.timeout.ms", "10000")],
    )?;
    let producer = Detached::new(producer);
    let payload = request.envelope(token, Some(&corr)).to_bytes();
    producer
        .send(
            FutureRecord::<(), _>::to(request.topic(topics))
                .payload(&payload)
                .headers(correlation_headers(&corr)),
            timeout,
        )
        .await
        .map_err(|(e, _)| Error::BrokerUnavailable(e.to_string()))?;

    loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|e| Error::BrokerUnavailable(e.to_string()))?;
        let header_corr = header_corr(&message);
        let Ok(reply) = decode_reply(message.payload().unwrap_or_default()) else {
            continue;
        };
        let reply_corr = reply.head.corr.clone().or(header_corr);
        let ours = match &reply_corr {
            Some(c) => *c == corr,
            None => reply.head.auth == token,
        };
        if ours {
            return Ok(reply);
        }
    }
}

/// Reads an ERP envelope: its head and its typed body.
pub(crate) fn decode(
    bytes: &[u8],
    order: bool,
) -> std::result::Result<(mes_core::codec::Head, Envelope, ErpRequest), String> {
    let envelope = wire::parse_envelope(bytes)?;
    let head = wire::head_of(&envelope)?;
    let body = envelope
        .body
        .clone()
        .ok_or_else(|| "missing body after the head".to_owned())?;
    let request = if order {
        ErpRequest::Order(serde_json::from_value(body).map_err(|e| format!("body: {e}"))?)
    } else {
        ErpRequest::Partner(serde_json::from_value(body).map_err(|e| format!("body: {e}"))?)
    };
    Ok((head, envelope, request))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mes_core::signing::SigningKey;
    use serde_json::json;

    use super::*;

    #[test]
    fn erp_bodies_round_trip() {
        let agent = SigningKey::generate().agent_key();
        let order = ErpRequest::Order(ErpOrder {
            issuing_agent: agent.clone(),
            order_type: "dummy_action".into(),
            description: "Operator's note".into(),
            metadata: json!({"Part": "steering wheel", "Size": 3}),
            files: vec![],
        });
        let bytes = order.envelope("T", Some("c")).to_bytes();
        let (head, _, back) = decode(&bytes, true).unwrap();
        assert_eq!(back, order);
        assert_eq!(head.corr.as_deref(), Some("c"));

        let minimal = format!(r#"[{{"auth": "T"}}, {{"issuing_agent": "{agent}"}}]"#);
        let (_, _, ErpRequest::Order(o)) = decode(minimal.as_bytes(), true).unwrap() else {
            unreachable!()
        };
        assert_eq!(o.order_type, "dummy_action");
        assert_eq!(o.metadata, json!({}));
        let (_, _, p) = decode(minimal.as_bytes(), false).unwrap();
        assert_eq!(
            p,
            ErpRequest::Partner(ErpPartner {
                issuing_agent: agent
            })
        );

        assert!(decode(br#"[{"auth": "T"}]"#, false).is_err());
        assert!(decode(br#"[{"auth": "T"}, {"issuing_agent": "02ab"}]"#, false).is_err());
    }
}
