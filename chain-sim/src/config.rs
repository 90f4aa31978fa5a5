//! What a simulator is told at start: broker, topic names, tokens, keys and the
//! behaviours of gateways the MES must cope with (Python-literal replies, no
//! correlation echo, slow commits, unanswered topics, lost and late replies).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use kafka_bridge::kafka::{KafkaConfig, TopicNames};
use mes_core::codec::Topic;
use mes_core::domain::{AgentKey, RequestId};
use mes_core::signing::SigningKey;

use crate::erp::{ERP_ORDER_TOPIC, ERP_PARTNER_TOPIC};
use crate::ledger::LedgerState;

/// The example master token of docs/protocol.md, the simulator's token when none is
/// configured, so a newcomer's MES and simulator agree without setup.
pub const DEFAULT_TOKEN: &str = "4f1c2a9e7b";

/// The consumer group of a simulator unless configured otherwise.
pub const DEFAULT_GROUP: &str = "chain-sim";

/// The topic names a simulator uses: the chain's ([`TopicNames`], shared with the
/// bridge so both sides agree) and the simulator-only ERP topics. Tests give each
/// simulator its own (e.g. with [`SimTopics::with_suffix`]) to share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTopics {
    /// The request topics and `BLK_Res`.
    pub chain: TopicNames,
    /// `SIM_Erp_Part`.
    pub erp_partner: String,
    /// `SIM_Erp_Act`.
    pub erp_order: String,
}

impl Default for SimTopics {
    fn default() -> Self {
        SimTopics::with_suffix("")
    }
}

/// Where a message read by the simulator goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A request topic of the chain.
    Chain(Topic),
    /// `SIM_Erp_Part`.
    ErpPartner,
    /// `SIM_Erp_Act`.
    ErpOrder,
}

impl Route {
    /// The default name of the route's topic, the key of the request counters.
    pub fn default_name(self) -> &'static str {
        match self {
            Route::Chain(topic) => topic.name(),
            Route::ErpPartner => ERP_PARTNER_TOPIC,
            Route::ErpOrder => ERP_ORDER_TOPIC,
        }
    }
}

impl SimTopics {
    /// The protocol's names with `suffix` appended to each, e.g. `BLK_Rec-<uuid>`.
    pub fn with_suffix(suffix: &str) -> SimTopics {
        SimTopics {
            chain: TopicNames::with_suffix(suffix),
            erp_partner: format!("{ERP_PARTNER_TOPIC}{suffix}"),
            erp_order: format!("{ERP_ORDER_TOPIC}{suffix}"),
        }
    }

    /// The name of a request topic.
    pub fn request(&self, topic: Topic) -> &str {
        self.chain.request(topic)
    }

    /// Sets the name of the topic whose default name is `default` (one of the six
    /// request topics, `BLK_Res`, `SIM_Erp_Part`, `SIM_Erp_Act`); false if there is none.
    pub fn set(&mut self, default: &str, name: &str) -> bool {
        match default {
            ERP_PARTNER_TOPIC => name.clone_into(&mut self.erp_partner),
            ERP_ORDER_TOPIC => name.clone_into(&mut self.erp_order),
            other => return self.chain.set(other, name),
        }
        true
    }

    /// The topics the simulator reads: six request topics and two ERP topics.
    pub fn inputs(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Topic::ALL.iter().map(|t| self.request(*t)).collect();
        names.push(&self.erp_partner);
        names.push(&self.erp_order);
        names
    }

    /// Every topic: the inputs and the reply topic.
    pub fn all(&self) -> Vec<&str> {
        let mut names = self.inputs();
        names.push(&self.chain.reply);
        names
    }

    /// Where a message read from topic `name` goes.
    pub fn route(&self, name: &str) -> Option<Route> {
        if name == self.erp_partner {
            return Some(Route::ErpPartner);
        }
        if name == self.erp_order {
            return Some(Route::ErpOrder);
        }
        self.chain.topic_of(name).map(Route::Chain)
    }
}

/// How the simulated gateway answers: the switches that reproduce gateways the MES
/// must cope with. The default is the well-behaved gateway: strict JSON, echo, every
/// topic answered, every reply published, answers committed at once.
///
/// Answered topics, lost and late replies and the commit delay concern the chain's
/// topics only: the simulator-only ERP topics (docs/protocol.md §8) are always answered
/// at once, since `chain-sim erp` waits for its reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayOptions {
    /// Write replies as Python literals, as the original gateway did.
    pub python_literal: bool,
    /// Do not echo `corr` (head) nor the `correlation_id` header, as the original.
    pub no_echo: bool,
    /// Refuse requests without a valid `signer`/`sig` (`unauthorized`).
    pub require_signed: bool,
    /// Sign replies with the simulator's key.
    pub sign_replies: bool,
    /// Reply only to requests on these topics (`None`: every topic). The original
    /// gateway answered only the four list/answer topics; requests on the others are
    /// still applied to the ledger, their replies are counted in
    /// [`Counters::unanswered`](crate::Counters::unanswered) and never published.
    pub answer_topics: Option<HashSet<Topic>>,
    /// Fraction of replies (0.0 to 1.0, drawn at random per request) that are lost:
    /// the request is applied, the reply never published, as a gateway that crashes
    /// between commit and reply. Counted in
    /// [`Counters::lost_replies`](crate::Counters::lost_replies).
    pub lose_replies: f64,
    /// Answers (`BLK_Part_Ans`/`BLK_Act_Ans`) of these request ids are applied but
    /// their replies are never published: a lost reply a test can aim at. Counted in
    /// [`Counters::lost_replies`](crate::Counters::lost_replies).
    pub lose_reply_for: BTreeSet<RequestId>,
    /// Apply answers (`BLK_Part_Ans`/`BLK_Act_Ans`) this long after they arrive, then
    /// reply: a chain that commits slower than the MES waits, during which a list still
    /// shows the request OPEN. Each held answer waits on its own task: other requests
    /// are not held up.
    pub commit_delay: Duration,
    /// Answers of these request ids are applied at once but their replies published
    /// this much later than the others' (after [`SimConfig::delay`] plus this), on their
    /// own task: replies produced meanwhile overtake them, as on a gateway that answers
    /// late and out of order.
    pub late_replies: BTreeMap<RequestId, Duration>,
    /// List requests (`BLK_Part_Lst`/`BLK_Act_Lst`) whose page starts at one of these
    /// indexes get their reply this much later than the others, which overtake it: a
    /// late list reply a test can aim at.
    pub late_list_replies: BTreeMap<u32, Duration>,
}

impl GatewayOptions {
    /// Checks what the types cannot: `lose_replies` is a fraction.
    ///
    /// # Errors
    /// A sentence naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.lose_replies) {
            return Err(format!(
                "lose_replies must be between 0.0 and 1.0, got {}",
                self.lose_replies
            ));
        }
        Ok(())
    }

    /// Whether the gateway replies to requests on `topic`.
    pub fn answers(&self, topic: Topic) -> bool {
        self.answer_topics
            .as_ref()
            .is_none_or(|topics| topics.contains(&topic))
    }

    /// The longest a reply can wait after its request arrives beyond `delay`: how long
    /// a stopping simulator must wait to publish what it owes.
    pub fn longest_hold(&self) -> Duration {
        let late = self
            .late_replies
            .values()
            .chain(self.late_list_replies.values())
            .max()
            .copied()
            .unwrap_or_default();
        self.commit_delay + late
    }
}

/// Everything [`crate::Simulator::start`] needs. `SimConfig::new(brokers)` gives
/// working defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: SimTopics,
    /// Consumer group of the request consumer; give each simulator on one broker its own.
    pub group_id: String,
    /// Master tokens the chain knows; requests with another token are `unauthorized`.
    pub tokens: Vec<String>,
    /// The MES's agent key (`receiving_agent`); by default derived from `key`.
    pub mes_agent: Option<AgentKey>,
    /// The simulator's key (transaction ids, signed replies); by default a new one.
    pub key: Option<SigningKey>,
    /// Reply behaviour.
    pub gateway: GatewayOptions,
    /// Publish each reply this long after applying its request (a chain waiting for
    /// its commit); requests are not serialised by it.
    pub delay: Duration,
    /// Seed this many partner requests and as many orders (`--demo N`, alias
    /// `--ledger-size N`) into a new chain, as [`demo::seed`] describes (statuses,
    /// timestamps); nothing is seeded into a resumed one ([`SimConfig::ledger`]).
    ///
    /// [`demo::seed`]: crate::demo::seed
    pub demo: usize,
    /// Resume the chain from this state (e.g. [`SimHandle::ledger_snapshot`] of a
    /// stopped simulator) instead of starting an empty one, as a real chain outlives
    /// its gateway and a broker restart. Give the same `key` (or `mes_agent`) as the
    /// run it continues, so the MES is still the owner and reporter of its records.
    /// Idempotency keys are not kept: see [`Ledger::with_state`].
    ///
    /// [`SimHandle::ledger_snapshot`]: crate::SimHandle::ledger_snapshot
    /// [`Ledger::with_state`]: crate::Ledger::with_state
    pub ledger: Option<LedgerState>,
    /// Partitions of the topics the simulator creates.
    pub partitions: i32,
    /// Create missing topics at start through the admin API. Off where topics are
    /// made otherwise, e.g. librdkafka's mock cluster (no admin API) in the embedded demo.
    pub create_topics: bool,
    /// Bound on creating topics and joining the group at start.
    pub start_timeout: Duration,
}

impl SimConfig {
    /// Defaults for a simulator on `brokers`: protocol topic names, group `chain-sim`,
    /// the example token, a fresh key, strict JSON replies with echo, no delay.
    pub fn new(brokers: impl Into<String>) -> SimConfig {
        SimConfig {
            kafka: KafkaConfig::new(brokers),
            topics: SimTopics::default(),
            group_id: DEFAULT_GROUP.to_owned(),
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            mes_agent: None,
            key: None,
            gateway: GatewayOptions::default(),
            delay: Duration::ZERO,
            demo: 0,
            ledger: None,
            partitions: 1,
            create_topics: true,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The MES agent key a simulator uses when none is configured: derived from the
/// simulator's key (a deterministic signature of a fixed text, used as a secret), so a
/// simulator started with the same key file always names the same MES.
pub fn derived_mes_agent(key: &SigningKey) -> AgentKey {
    let seed = key.sign_bytes(b"chain-sim: the MES agent");
    seed.get(..64)
        .and_then(|hex| SigningKey::from_hex(hex).ok())
        .unwrap_or_else(SigningKey::generate)
        .agent_key()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn topics_route_and_rename() {
        let mut t = SimTopics::with_suffix("-x");
        assert_eq!(t.chain.record, "BLK_Rec-x");
        assert_eq!(t.chain.reply, "BLK_Res-x");
        assert_eq!(t.route("BLK_Rec-x"), Some(Route::Chain(Topic::Record)));
        assert_eq!(t.route("SIM_Erp_Act-x"), Some(Route::ErpOrder));
        assert_eq!(t.route("BLK_Res-x"), None);
        assert!(t.set("BLK_Res", "replies"));
        assert!(t.set("SIM_Erp_Part", "erp"));
        assert!(!t.set("nope", "x"));
        assert_eq!(t.chain.reply, "replies");
        assert_eq!(t.route("erp"), Some(Route::ErpPartner));
        assert_eq!(t.inputs().len(), 8);
        assert_eq!(t.all().len(), 9);
    }

    #[test]
    fn mes_agent_is_derived_from_the_key() {
        let key = SigningKey::generate();
        assert_eq!(derived_mes_agent(&key), derived_mes_agent(&key));
        assert_ne!(derived_mes_agent(&key), key.agent_key());
    }
}
