//! The simulated chain's state and the rules that change it: a pure, synchronous state
//! machine with no I/O, so every rule can be tested without a broker.
//!
//! [`Ledger::apply`] takes one decoded request and returns the reply body a real chain
//! would send; [`Ledger::erp_partner`] and [`Ledger::erp_order`] play the ERP side
//! (docs/protocol.md §8). Every change is a *transaction* whose id is a real secp256k1
//! signature, made with the simulator's key over the transaction's content, so ids look
//! and verify like the chain's.

mod records;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mes_core::codec::{Head, Page, ReplyBody, Request};
use mes_core::codec::{PropertySchema, Topic};
use mes_core::domain::{
    AgentKey, Answer, InvalidValue, OrderRequest, PartnerRequest, RequestId, Status, TxId,
};
use mes_core::signing::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::erp::{ERP_ORDER_TOPIC, ERP_PARTNER_TOPIC, ErpOrder, ErpPartner};
use crate::rules::{ErrorCode, Refusal};

/// Everything the simulated chain holds, in a form that serialises to JSON: what
/// [`Ledger::snapshot`] returns and `chain-sim --ledger-dump` writes, so tests can
/// check what the chain saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Partner requests, in the order they were created.
    pub partners: Vec<PartnerRequest>,
    /// Order requests, in the order they were created.
    pub orders: Vec<OrderRequest>,
    /// Record types by name, with their property schemas.
    pub record_types: BTreeMap<String, Vec<PropertySchema>>,
    /// Records by id.
    pub records: BTreeMap<String, Record>,
    /// Day reports by report id, with the ids of their `DayReport` records.
    pub day_reports: BTreeMap<String, Vec<String>>,
    /// Every transaction, oldest first.
    pub transactions: Vec<Transaction>,
    /// What the chain was asked, for tests' "the chain saw one request".
    pub counters: Counters,
}

/// A record in the Sawtooth Supply Chain sense: typed properties with a history, an
/// owner, and the agents allowed to report each property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's id, e.g. a unit code or a day-report record id.
    pub record_id: String,
    /// Its record type.
    pub record_type: String,
    /// The agent that created it; only it may add reporters.
    pub owner: AgentKey,
    /// For each property of the type, the agents that may update it.
    pub reporters: BTreeMap<String, Vec<AgentKey>>,
    /// For each property, its values, oldest first.
    pub properties: BTreeMap<String, Vec<PropertyEntry>>,
    /// The transactions that touched the record, oldest first.
    pub transaction_ids: Vec<TxId>,
}

/// One value in a property's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyEntry {
    /// The value as given (`null` for "no value").
    pub value: Value,
    /// Who reported it.
    pub reporter: AgentKey,
    /// When, in seconds since the epoch.
    pub timestamp: i64,
}

/// A chain transaction: its id is the simulator's signature over `payload`.
///
/// Verify with the simulator's public key: ECDSA over SHA-256 of `payload`'s UTF-8
/// bytes, as [`SigningKey::sign_bytes`] makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// 128 hex characters: the compact signature.
    pub id: TxId,
    /// Compact JSON of what the transaction did (sequence number, operation, time,
    /// details); the signed bytes.
    pub payload: String,
}

/// Request counters, the tests' witness of what reached the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Every request by the default name of its topic (`BLK_Rec`, `SIM_Erp_Part`, …),
    /// replays, refusals and undecodable ones included.
    pub by_topic: BTreeMap<String, u64>,
    /// Distinct requests applied: authorised and not answered from the idempotency
    /// store, whatever their outcome. "The chain saw one request" means this is 1.
    pub applied: u64,
    /// Applied requests that changed the ledger (successful writes).
    pub changes: u64,
    /// Requests answered with the stored first answer of their `idem` key.
    pub replays: u64,
    /// Requests answered with an error (unauthorised and undecodable ones included).
    pub refused: u64,
    /// Requests refused for an unknown token or a bad signature.
    pub unauthorized: u64,
    /// Requests that could not be decoded (answered with `bad_request` or skipped).
    pub undecodable: u64,
    /// Replies lost on purpose (`--lose-replies`, `--lose-reply-for`): the request was
    /// handled, its reply never published. Tests wait for this instead of a timeout.
    #[serde(default)]
    pub lost_replies: u64,
    /// Replies not published because the gateway does not answer their topic
    /// (`--answer-topics`); the requests were handled all the same.
    #[serde(default)]
    pub unanswered: u64,
}

/// What an ERP order carries; shared by [`Ledger::add_order`] (seeding) and
/// [`Ledger::erp_order`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// The ERP.
    pub issuing_agent: AgentKey,
    /// Kind of order, e.g. `dummy_action`.
    pub order_type: String,
    /// Free text.
    pub description: String,
    /// What to produce.
    pub metadata: Value,
    /// Attachments, passed through.
    pub files: Vec<Value>,
}

/// The simulated chain: state, keys, known tokens and the idempotency store.
#[derive(Debug)]
pub struct Ledger {
    key: SigningKey,
    mes_agent: AgentKey,
    tokens: BTreeSet<String>,
    clock: Option<i64>,
    state: LedgerState,
    idem: HashMap<String, ReplyBody>,
}

impl Ledger {
    /// An empty chain that signs with `key`, names `mes_agent` as the receiving agent of
    /// every partner request and order, and accepts the given master tokens.
    pub fn new(
        key: SigningKey,
        mes_agent: AgentKey,
        tokens: impl IntoIterator<Item = String>,
    ) -> Ledger {
        Ledger {
            key,
            mes_agent,
            tokens: tokens.into_iter().collect(),
            clock: None,
            state: LedgerState::default(),
            idem: HashMap::new(),
        }
    }

    /// This chain holding `state` instead of an empty one: a chain that outlived its
    /// gateway, resumed from a [`Ledger::snapshot`] (or a `--ledger-dump`) of an earlier
    /// run. Build it with the earlier run's key and MES agent, or the MES is another
    /// agent, no longer the owner or a reporter of its records.
    ///
    /// The idempotency store is not part of the state: a request whose `idem` key the
    /// earlier run had already applied is applied again.
    pub fn with_state(mut self, state: LedgerState) -> Ledger {
        self.state = state;
        self
    }

    /// The simulator's public key: transaction ids and signed replies verify with it.
    pub fn public_key(&self) -> AgentKey {
        self.key.agent_key()
    }

    /// The MES's agent key, the `receiving_agent` of every item.
    pub fn mes_agent(&self) -> &AgentKey {
        &self.mes_agent
    }

    /// Whether `token` is a master token this chain knows.
    pub fn knows_token(&self, token: &str) -> bool {
        self.tokens.contains(token)
    }

    /// Fixes the clock at `now` seconds since the epoch (`None`: the system clock), so
    /// tests get predictable timestamps.
    pub fn set_clock(&mut self, now: Option<i64>) {
        self.clock = now;
    }

    /// The state, read-only.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// A copy of the state, e.g. for a JSON dump.
    pub fn snapshot(&self) -> LedgerState {
        self.state.clone()
    }

    /// The request counters.
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// The partner request with this id.
    pub fn partner(&self, id: &RequestId) -> Option<&PartnerRequest> {
        self.state
            .partners
            .iter()
            .find(|p| &p.partner_request_id == id)
    }

    /// The order request with this id.
    pub fn order(&self, id: &RequestId) -> Option<&OrderRequest> {
        self.state.orders.iter().find(|o| &o.abs_action_id == id)
    }

    /// The record with this id.
    pub fn record(&self, id: &str) -> Option<&Record> {
        self.state.records.get(id)
    }

    /// The transaction with this id.
    pub fn transaction(&self, id: &TxId) -> Option<&Transaction> {
        self.state.transactions.iter().find(|t| &t.id == id)
    }

    /// Applies one request from the MES and returns the reply body.
    ///
    /// The caller has checked the envelope's signature, if any: the head's `signer`
    /// (when present) is taken as the acting agent, otherwise the MES's agent. A
    /// repeated `idem` key on a non-list request returns the first answer and changes
    /// nothing.
    pub fn apply(&mut self, topic: Topic, head: &Head, request: &Request) -> ReplyBody {
        if request.topic() != topic {
            return self.refuse(
                topic.name(),
                Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "a {} request does not belong on {}",
                        request.topic().name(),
                        topic.name()
                    ),
                ),
            );
        }
        let write = !matches!(request, Request::ListPartners(_) | Request::ListOrders(_));
        self.run(topic.name(), head, write, |ledger, actor| match request {
            Request::ListPartners(page) => Ok(ledger.list_partners(*page)),
            Request::ListOrders(page) => Ok(ledger.list_orders(*page)),
            Request::AnswerPartner(body) => ledger.answer_partner(&body.id, body.response, actor),
            Request::AnswerOrder(body) => ledger.answer_order(&body.id, body.response, actor),
            Request::RecordType(action) => ledger.record_type_action(action, actor),
            Request::Record(action) => ledger.record_action(action, actor),
        })
    }

    /// An ERP asks to become a partner (`SIM_Erp_Part`): a new OPEN partner request.
    pub fn erp_partner(&mut self, head: &Head, request: &ErpPartner) -> ReplyBody {
        self.run(ERP_PARTNER_TOPIC, head, true, |ledger, _| {
            let now = ledger.now();
            let id = ledger
                .add_partner(request.issuing_agent.clone(), Status::Open, now)
                .map_err(internal)?;
            Ok(message(format!("Partner request {id} created")))
        })
    }

    /// An ERP places an order (`SIM_Erp_Act`): a new OPEN order, refused with
    /// `not_a_partner` unless the ERP is an accepted partner of the MES.
    pub fn erp_order(&mut self, head: &Head, request: &ErpOrder) -> ReplyBody {
        self.run(ERP_ORDER_TOPIC, head, true, |ledger, _| {
            if !ledger.is_partner(&request.issuing_agent) {
                return Err(Refusal::new(
                    ErrorCode::NotAPartner,
                    format!(
                        "agent {} is not an accepted partner of {}",
                        request.issuing_agent, ledger.mes_agent
                    ),
                ));
            }
            let now = ledger.now();
            let id = ledger
                .add_order(request.to_new_order(), Status::Open, now)
                .map_err(internal)?;
            Ok(message(format!("Order request {id} created")))
        })
    }

    /// Answers a request on `topic` that could not be decoded but whose token could be
    /// read: `bad_request` for a known token, `unauthorized` otherwise.
    pub fn bad_request(&mut self, topic: &str, auth: &str, why: &str) -> ReplyBody {
        self.state.counters.undecodable += 1;
        if !self.knows_token(auth) {
            self.state.counters.unauthorized += 1;
            return self.refuse(
                topic,
                Refusal::new(ErrorCode::Unauthorized, "unknown token"),
            );
        }
        self.refuse(
            topic,
            Refusal::new(ErrorCode::BadRequest, format!("bad request: {why}")),
        )
    }

    /// Answers a request whose signature was refused: `unauthorized`.
    pub fn bad_signature(&mut self, topic: &str, why: &str) -> ReplyBody {
        self.state.counters.unauthorized += 1;
        self.refuse(
            topic,
            Refusal::new(ErrorCode::Unauthorized, format!("signature refused: {why}")),
        )
    }

    /// Counts a reply the gateway lost on purpose (see [`Counters::lost_replies`]).
    pub fn count_lost_reply(&mut self) {
        self.state.counters.lost_replies += 1;
    }

    /// Counts a reply withheld because its topic is not answered (see
    /// [`Counters::unanswered`]).
    pub fn count_unanswered(&mut self) {
        self.state.counters.unanswered += 1;
    }

    /// Counts a request on `topic` that could not be read at all and gets no answer.
    pub fn skip_undecodable(&mut self, topic: &str) {
        self.count(topic);
        self.state.counters.undecodable += 1;
    }

    /// Adds a partner request as if the ERP had asked at `timestamp` (seeding, tests).
    /// A non-OPEN `status` is recorded as answered a minute later, with a second
    /// transaction. No rule is checked.
    pub fn add_partner(
        &mut self,
        issuing_agent: AgentKey,
        status: Status,
        timestamp: i64,
    ) -> Result<RequestId, InvalidValue> {
        let id = fresh_id()?;
        let created =
            json!({"id": id, "issuing_agent": issuing_agent, "receiving_agent": self.mes_agent});
        let (txs, answer_timestamp) =
            self.seed_history("partner", &id, created, &status, timestamp);
        self.state.partners.push(PartnerRequest {
            answer_timestamp,
            issuing_agent,
            partner_request_id: id.clone(),
            receiving_agent: self.mes_agent.clone(),
            status,
            timestamp,
            transaction_ids: txs,
            extra: Map::new(),
        });
        Ok(id)
    }

    /// Adds an order as if the ERP had placed it at `timestamp` (seeding, tests). Like
    /// [`Ledger::add_partner`], no rule is checked: not even that the ERP is a partner.
    pub fn add_order(
        &mut self,
        order: NewOrder,
        status: Status,
        timestamp: i64,
    ) -> Result<RequestId, InvalidValue> {
        let id = fresh_id()?;
        let created = json!({"id": id, "issuing_agent": order.issuing_agent, "type": order.order_type,
                             "metadata": order.metadata});
        let (txs, answer_timestamp) = self.seed_history("order", &id, created, &status, timestamp);
        self.state.orders.push(OrderRequest {
            abs_action_id: id.clone(),
            answer_timestamp,
            description: order.description,
            files: order.files,
            issuing_agent: order.issuing_agent,
            metadata: order.metadata,
            receiving_agent: self.mes_agent.clone(),
            status,
            timestamp,
            transaction_ids: txs,
            order_type: order.order_type,
            extra: Map::new(),
        });
        Ok(id)
    }

    /// The transactions of a seeded `kind` request (`partner` or `order`): its creation
    /// at `timestamp` with `created` as the detail and, unless it is still OPEN, its
    /// answer a minute later. Returns their ids and the answer's timestamp (0 while
    /// OPEN).
    fn seed_history(
        &mut self,
        kind: &str,
        id: &RequestId,
        created: Value,
        status: &Status,
        timestamp: i64,
    ) -> (Vec<TxId>, i64) {
        let mut txs: Vec<TxId> = self
            .transact(&format!("create_{kind}_request"), created, timestamp)
            .into_iter()
            .collect();
        if *status == Status::Open {
            return (txs, 0);
        }
        txs.extend(self.transact(
            &format!("answer_{kind}_request"),
            json!({"id": id, "status": status}),
            timestamp + 60,
        ));
        (txs, timestamp + 60)
    }

    /// Sets a partner request's status as the chain's other side might (e.g. a
    /// partnership revoked); returns whether the request exists.
    pub fn set_partner_status(&mut self, id: &RequestId, status: Status) -> bool {
        match self
            .state
            .partners
            .iter_mut()
            .find(|p| &p.partner_request_id == id)
        {
            Some(p) => {
                p.status = status;
                true
            }
            None => false,
        }
    }

    /// Whether `agent` is an accepted partner of the MES.
    pub fn is_partner(&self, agent: &AgentKey) -> bool {
        self.state.partners.iter().any(|p| {
            &p.issuing_agent == agent
                && p.status == Status::Accepted
                && p.receiving_agent == self.mes_agent
        })
    }

    /// The common path of every request: count it, authorise it, answer a repeated
    /// `idem` from the store, else run `op` and store its answer.
    fn run(
        &mut self,
        topic: &str,
        head: &Head,
        write: bool,
        op: impl FnOnce(&mut Ledger, &AgentKey) -> Result<ReplyBody, Refusal>,
    ) -> ReplyBody {
        self.count(topic);
        let actor = match self.authorize(head) {
            Ok(actor) => actor,
            Err(refusal) => {
                self.state.counters.unauthorized += 1;
                self.state.counters.refused += 1;
                return refusal.into_reply();
            }
        };
        let idem = head.idem.as_ref().filter(|_| write);
        if let Some(answer) = idem.and_then(|key| self.idem.get(key)) {
            self.state.counters.replays += 1;
            return answer.clone();
        }
        self.state.counters.applied += 1;
        let answer = match op(self, &actor) {
            Ok(answer) => {
                if write {
                    self.state.counters.changes += 1;
                }
                answer
            }
            Err(refusal) => {
                self.state.counters.refused += 1;
                refusal.into_reply()
            }
        };
        if let Some(key) = idem {
            self.idem.insert(key.clone(), answer.clone());
        }
        answer
    }

    fn authorize(&self, head: &Head) -> Result<AgentKey, Refusal> {
        if !self.knows_token(&head.auth) {
            return Err(Refusal::new(ErrorCode::Unauthorized, "unknown token"));
        }
        match &head.signer {
            None => Ok(self.mes_agent.clone()),
            Some(signer) => signer.parse().map_err(|_| {
                Refusal::new(ErrorCode::Unauthorized, "signer is not a valid public key")
            }),
        }
    }

    fn count(&mut self, topic: &str) {
        *self
            .state
            .counters
            .by_topic
            .entry(topic.to_owned())
            .or_default() += 1;
    }

    fn refuse(&mut self, topic: &str, refusal: Refusal) -> ReplyBody {
        self.count(topic);
        self.state.counters.refused += 1;
        refusal.into_reply()
    }

    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| chrono::Utc::now().timestamp())
    }

    /// Records a transaction and returns its id: the signature over its payload.
    fn transact(&mut self, op: &str, detail: Value, timestamp: i64) -> Option<TxId> {
        let seq = self.state.transactions.len() + 1;
        let payload =
            json!({"seq": seq, "op": op, "timestamp": timestamp, "detail": detail}).to_string();
        match TxId::try_from(self.key.sign_bytes(payload.as_bytes())) {
            Ok(id) => {
                self.state.transactions.push(Transaction {
                    id: id.clone(),
                    payload,
                });
                Some(id)
            }
            Err(e) => {
                tracing::error!("transaction id is not a signature: {e}");
                None
            }
        }
    }

    fn list_partners(&self, page: Page) -> ReplyBody {
        let mut items: Vec<&PartnerRequest> = self.state.partners.iter().collect();
        items.sort_by(|a, b| {
            (a.timestamp, &a.partner_request_id).cmp(&(b.timestamp, &b.partner_request_id))
        });
        ReplyBody::Data(paged(&items, page))
    }

    fn list_orders(&self, page: Page) -> ReplyBody {
        let mut items: Vec<&OrderRequest> = self.state.orders.iter().collect();
        items.sort_by(|a, b| (a.timestamp, &a.abs_action_id).cmp(&(b.timestamp, &b.abs_action_id)));
        ReplyBody::Data(paged(&items, page))
    }

    /// Records `actor`'s answer to the `kind` request `id` (`partner` or `order`) as a
    /// transaction now; returns the time and the transaction's id.
    fn record_answer(
        &mut self,
        kind: &str,
        id: &RequestId,
        answer: Answer,
        actor: &AgentKey,
    ) -> (i64, Option<TxId>) {
        let now = self.now();
        let tx = self.transact(
            &format!("answer_{kind}_request"),
            json!({"id": id, "response": answer.code(), "agent": actor}),
            now,
        );
        (now, tx)
    }

    fn answer_partner(
        &mut self,
        id: &RequestId,
        answer: Answer,
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let partners = &self.state.partners;
        let index = position(partners, id, |p| &p.partner_request_id, "partner request")?;
        check_open(id, &partners[index].status)?;
        let (now, tx) = self.record_answer("partner", id, answer, actor);
        let partner = &mut self.state.partners[index];
        partner.status = status_of(answer);
        partner.answer_timestamp = now;
        partner.transaction_ids.extend(tx);
        Ok(answered(id, answer))
    }

    fn answer_order(
        &mut self,
        id: &RequestId,
        answer: Answer,
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let orders = &self.state.orders;
        let index = position(orders, id, |o| &o.abs_action_id, "order request")?;
        let order = &orders[index];
        check_open(id, &order.status)?;
        if answer == Answer::Accept && !self.is_partner(&order.issuing_agent) {
            return Err(Refusal::new(
                ErrorCode::NotAPartner,
                format!(
                    "order {id} comes from {}, which is not an accepted partner",
                    order.issuing_agent
                ),
            ));
        }
        let (now, tx) = self.record_answer("order", id, answer, actor);
        let order = &mut self.state.orders[index];
        order.status = status_of(answer);
        order.answer_timestamp = now;
        order.transaction_ids.extend(tx);
        Ok(answered(id, answer))
    }
}

/// Where request `id` is in `items` (by `id_of`); a `not_found` naming `what` otherwise.
fn position<T>(
    items: &[T],
    id: &RequestId,
    id_of: impl Fn(&T) -> &RequestId,
    what: &str,
) -> Result<usize, Refusal> {
    items
        .iter()
        .position(|item| id_of(item) == id)
        .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no {what} {id}")))
}

fn paged<T: Serialize>(items: &[T], page: Page) -> Vec<Value> {
    let start = usize::try_from(page.start).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    items
        .iter()
        .skip(start)
        .take(limit)
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

fn check_open(id: &RequestId, status: &Status) -> Result<(), Refusal> {
    if *status == Status::Open {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::NotOpen,
            format!("request {id} is {status}, not OPEN"),
        ))
    }
}

fn status_of(answer: Answer) -> Status {
    match answer {
        Answer::Accept => Status::Accepted,
        Answer::Reject => Status::Rejected,
    }
}

fn answered(id: &RequestId, answer: Answer) -> ReplyBody {
    let verb = match answer {
        Answer::Accept => "accepted",
        Answer::Reject => "rejected",
    };
    message(format!("Request {id} {verb}"))
}

pub(crate) fn message(text: String) -> ReplyBody {
    ReplyBody::Message(Value::String(text))
}

fn fresh_id() -> Result<RequestId, InvalidValue> {
    uuid::Uuid::new_v4().simple().to_string().parse()
}

fn internal(e: InvalidValue) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, format!("internal error: {e}"))
}
