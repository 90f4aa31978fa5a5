//! Partner and order requests: list them on the chain, answer them, record each
//! decision and take accepted orders over as production orders.
//!
//! The routes and the console call [`RequestService`]; it needs no HTTP, so a library
//! user can drive the same operations. Every list reply goes into the mirror of the
//! chain's requests ([`crate::mirror`]); decisions that the chain did not confirm
//! converge with it through [`crate::reconcile`] and through late replies
//! ([`RequestService::settle_late_reply`]).

use std::future::Future;

use kafka_bridge::bridge::{Bridge, CallOptions, LateReply, Listing, SendReceipt};
use mes_core::codec::{Page, ReplyBody};
use mes_core::db::{decisions, orders};
use mes_core::domain::{Answer, RequestId};
use serde_json::Value;

use crate::db::{Db, DbError};
use crate::events::Hub;
use crate::reconcile::{publish_decision, settle_from_status, take_over, text_of};
use crate::service::tokens::TokenProvider;

/// Partner requests or order requests: the two things an operator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BLK_Part_*`.
    Partner,
    /// `BLK_Act_*`.
    Order,
}

impl Kind {
    /// The `decisions.kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Partner => decisions::KIND_PARTNER,
            Kind::Order => decisions::KIND_ORDER,
        }
    }

    /// The kind stored as `decisions.kind` / `chain_requests.kind`.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            decisions::KIND_PARTNER => Some(Kind::Partner),
            decisions::KIND_ORDER => Some(Kind::Order),
            _ => None,
        }
    }

    /// The chain's list of this kind.
    pub fn listing(self) -> Listing {
        match self {
            Kind::Partner => Listing::Partners,
            Kind::Order => Listing::Orders,
        }
    }

    /// The id field of a list item.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Partner => "partner_request_id",
            Kind::Order => "abs_action_id",
        }
    }
}

/// The message of an answer that was sent but not confirmed (decision `unknown`).
pub const UNCONFIRMED: &str = "sent; the chain has not confirmed yet";

/// What answering a request did.
#[derive(Debug, Clone)]
pub struct AnswerOutcome {
    /// The chain's `message`, as it sent it; [`UNCONFIRMED`] while the decision is
    /// `unknown`.
    pub message: Value,
    /// The `decisions` row.
    pub decision: decisions::Decision,
    /// The production order an accepted order became (`None` for partners, rejects,
    /// and orders the chain no longer lists).
    pub production_order: Option<orders::ProductionOrder>,
}

/// Why a request operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No master token is configured: nothing can be asked of the chain.
    #[error("no Master token is configured")]
    NoMasterToken,
    /// The chain or the broker failed the call (timeout, chain error, broker down, …).
    #[error(transparent)]
    Chain(#[from] kafka_bridge::Error),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// How often an answer sent unmatched is looked for in the chain's list before the
/// call ends `unknown` (pauses of 0.1, 0.2, 0.4, 0.8 and 1.6 s between).
const CONFIRM_TRIES: u32 = 6;

/// Page size when the whole chain list is read (to filter it, or to find a request).
pub const CHAIN_SCAN_PAGE: u32 = 100;
/// Most chain pages read at once (so at most 5,000 requests are looked at).
pub const CHAIN_SCAN_PAGES: u32 = 50;

/// The id of a chain list item, if it has one that is a valid [`RequestId`]; an item
/// whose id breaks the rule is logged and never stored or announced.
pub fn chain_id(kind: Kind, item: &Value) -> Option<RequestId> {
    let raw = item.get(kind.id_field())?;
    match raw.as_str().map(str::parse::<RequestId>) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            tracing::warn!("ignoring a chain {} with a bad id: {e}", kind.as_str());
            None
        }
        None => {
            tracing::warn!(
                "ignoring a chain {} whose id is not a string",
                kind.as_str()
            );
            None
        }
    }
}

/// Whether a chain list item has status `status`, ignoring case.
pub fn has_status(item: &Value, status: &str) -> bool {
    item.get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case(status))
}

/// Items `[page.start, page.start + page.limit)` of the chain's whole list filtered by
/// `status`: reads the chain's list in pages of [`CHAIN_SCAN_PAGE`] through `fetch`,
/// stopping at a short page or after [`CHAIN_SCAN_PAGES`] pages, and stops early once
/// the page asked for is complete.
pub async fn list_filtered<F, Fut, E>(
    page: Page,
    status: &str,
    mut fetch: F,
) -> Result<Vec<Value>, E>
where
    F: FnMut(Page) -> Fut,
    Fut: Future<Output = Result<Vec<Value>, E>>,
{
    let skip = page.start as usize;
    let want = skip.saturating_add(page.limit as usize);
    let mut matched = Vec::new();
    for n in 0..CHAIN_SCAN_PAGES {
        let items = fetch(Page {
            start: n * CHAIN_SCAN_PAGE,
            limit: CHAIN_SCAN_PAGE,
        })
        .await?;
        let last = items.len() < CHAIN_SCAN_PAGE as usize;
        matched.extend(items.into_iter().filter(|item| has_status(item, status)));
        if last || matched.len() >= want {
            break;
        }
    }
    Ok(matched
        .into_iter()
        .skip(skip)
        .take(page.limit as usize)
        .collect())
}

/// Lists and answers the chain's partner and order requests (see the module doc).
#[derive(Clone)]
pub struct RequestService {
    db: Db,
    bridge: Bridge,
    events: Hub,
    tokens: TokenProvider,
}

impl std::fmt::Debug for RequestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestService").finish_non_exhaustive()
    }
}

impl RequestService {
    /// A service over the server's database, bridge, event hub and master token.
    pub fn new(db: Db, bridge: Bridge, events: Hub, tokens: TokenProvider) -> RequestService {
        RequestService {
            db,
            bridge,
            events,
            tokens,
        }
    }

    async fn token(&self) -> Result<String, RequestError> {
        self.tokens
            .master_async(&self.db)
            .await?
            .map(|m| m.token)
            .ok_or(RequestError::NoMasterToken)
    }

    /// A page of partner or order requests, as the chain sent them.
    ///
    /// Without `status`, one chain request for the page. With it, the filter applies to
    /// the chain's whole list before the page: [`list_filtered`] pages through it and
    /// returns items `[start, start + limit)` of those whose `status` is `status`
    /// (case-insensitive), so a match past the chain's first page is not lost.
    pub async fn list(
        &self,
        kind: Kind,
        page: Page,
        status: Option<&str>,
    ) -> Result<Vec<Value>, RequestError> {
        let token = self.token().await?;
        let Some(status) = status else {
            return Ok(self.list_page(&token, kind, page).await?);
        };
        Ok(list_filtered(page, status, |chain_page| {
            self.list_page(&token, kind, chain_page)
        })
        .await?)
    }

    /// One page of the chain's list; every item goes into the mirror.
    async fn list_page(
        &self,
        token: &str,
        kind: Kind,
        page: Page,
    ) -> kafka_bridge::Result<Vec<Value>> {
        let items = self
            .bridge
            .list(token, kind.listing(), page, CallOptions::default())
            .await?;
        crate::mirror::take_in_reply(&self.db, &self.events, kind, &items).await;
        Ok(items)
    }

    /// Accepts or rejects a partner or order request on the chain for `operator`,
    /// recording the decision before anything is sent and its outcome after; an
    /// accepted order becomes a production order (once, however often it is accepted).
    ///
    /// A call whose request may have reached the chain but got no reply ends with the
    /// decision `unknown` (`Ok`, for the route to say 202 or 504): its late reply or
    /// the mirror settles it. While the last decision on a request is `pending` or
    /// `unknown`, answering again sends nothing: the chain's list is read for that
    /// request and the decision reports what it shows.
    pub async fn answer(
        &self,
        kind: Kind,
        id: RequestId,
        answer: Answer,
        operator: &str,
    ) -> Result<AnswerOutcome, RequestError> {
        let token = self.token().await?;
        let last = {
            let id = id.to_string();
            self.db
                .query(move |conn| decisions::latest(conn, kind.as_str(), &id))
                .await?
        };
        if let Some(last) = last.filter(|d| {
            d.outcome == decisions::OUTCOME_UNKNOWN || d.outcome == decisions::OUTCOME_PENDING
        }) {
            return self.recheck(kind, &token, &id, last).await;
        }
        let corr = uuid::Uuid::new_v4().to_string();
        let decision = {
            let (id, operator, corr) = (id.to_string(), operator.to_owned(), corr.clone());
            self.db
                .query(move |conn| {
                    decisions::record(
                        conn,
                        &decisions::NewDecision {
                            kind: kind.as_str(),
                            request_id: &id,
                            response: i32::from(answer.code()),
                            operator: &operator,
                            correlation_id: Some(&corr),
                        },
                    )
                })
                .await?
        };
        // The order's fields are needed to produce it: from the mirror, or the chain.
        let order = if kind == Kind::Order && answer == Answer::Accept {
            self.order_item(&token, &id).await
        } else {
            None
        };
        let receipt = SendReceipt::new();
        let options = CallOptions {
            corr: Some(corr),
            receipt: Some(receipt.clone()),
            ..CallOptions::default()
        };
        let result = self
            .bridge
            .answer(&token, kind.listing(), id.clone(), answer, options)
            .await;
        let applied = decisions::applied(i32::from(answer.code()));
        let (outcome, message, error) = match &result {
            Ok(answered) => (applied, Some(text_of(&answered.message)), None),
            Err(e) => {
                use kafka_bridge::Error as E;
                let outcome = match e {
                    E::Chain { .. } => decisions::OUTCOME_CHAIN_ERROR,
                    _ if !receipt.was_sent() => decisions::OUTCOME_NOT_SENT,
                    _ => decisions::OUTCOME_UNKNOWN,
                };
                let text = match e {
                    E::Chain { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                (outcome, None, Some(text))
            }
        };
        // The bridge hands out chain text without the token already; a decision is
        // an audit record kept for years: cut it here too, with the same function.
        let message = message.map(|m| mes_core::redact::redact(&m, &token));
        let error = error.map(|e| mes_core::redact::redact(&e, &token));
        let decision_id = decision.id;
        let completed = self
            .db
            .query(move |conn| {
                decisions::complete(
                    conn,
                    decision_id,
                    outcome,
                    message.as_deref(),
                    error.as_deref(),
                )
            })
            .await?;
        let Some(decision) = completed else {
            // Settled meanwhile: its late reply overtook this call's bookkeeping (it
            // published the decision and produced the order). Report what it says.
            let current = self
                .db
                .query(move |conn| decisions::get(conn, decision_id))
                .await?;
            let current = current.unwrap_or(decision);
            return self.report(kind, &id, current).await;
        };
        // Other operators' consoles update the row; the decider's gets it too.
        publish_decision(&self.events, kind, &decision);
        let message = match result {
            Ok(answered) => answered.message,
            Err(kafka_bridge::Error::Unconfirmed) => {
                return Ok(self.confirm_from_list(kind, &token, &id, decision).await);
            }
            Err(_) if outcome == decisions::OUTCOME_UNKNOWN => {
                return Ok(AnswerOutcome {
                    message: Value::String(UNCONFIRMED.to_owned()),
                    decision,
                    production_order: None,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let production_order = self
            .applied(kind, &token, &id, answer, &decision, order)
            .await?;
        Ok(AnswerOutcome {
            message,
            decision,
            production_order,
        })
    }

    /// The chain applied `answer` to request `id` (its reply said so): the mirror
    /// shows it at once, and an accepted order becomes its production order. `order`
    /// is the order's list item if it was looked up before.
    async fn applied(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
        answer: Answer,
        decision: &decisions::Decision,
        order: Option<Value>,
    ) -> Result<Option<orders::ProductionOrder>, RequestError> {
        let status = if answer == Answer::Accept {
            "ACCEPTED"
        } else {
            "REJECTED"
        };
        crate::mirror::set_status(&self.db, &self.events, kind, id, status).await;
        if kind != Kind::Order || answer != Answer::Accept {
            return Ok(None);
        }
        let order = match order {
            Some(order) => Some(order),
            None => self.order_item(token, id).await,
        };
        match order {
            Some(order) => Ok(Some(
                take_over(&self.db, id.as_str(), &order, decision.id).await?,
            )),
            None => {
                tracing::warn!(
                    "order {id} was accepted but the chain does not list it: no production order"
                );
                Ok(None)
            }
        }
    }

    /// A reply that came after its call ended ([`Bridge::late_replies`]): if it
    /// answers a decision still `pending` or `unknown` (matched by its correlation
    /// id), the decision takes the reply's outcome, the mirror shows it and an
    /// accepted order becomes its production order. Returns the settled decision;
    /// `None` if the reply answers no such decision (a list, a relay send, another
    /// instance's call) or the decision was settled already.
    pub async fn settle_late_reply(
        &self,
        late: &LateReply,
    ) -> Result<Option<decisions::Decision>, RequestError> {
        let corr = late.corr.clone();
        let Some(decision) = self
            .db
            .query(move |conn| decisions::by_correlation_id(conn, &corr))
            .await?
        else {
            return Ok(None);
        };
        let (Some(kind), Ok(id)) = (
            Kind::from_name(&decision.kind),
            decision.request_id.parse::<RequestId>(),
        ) else {
            return Ok(None);
        };
        if decision.outcome != decisions::OUTCOME_UNKNOWN
            && decision.outcome != decisions::OUTCOME_PENDING
        {
            return Ok(None);
        }
        let answer = if decision.response == decisions::ACCEPT {
            Answer::Accept
        } else {
            Answer::Reject
        };
        let (outcome, message, error) = match &late.reply.body {
            ReplyBody::Message(message) => (
                decisions::applied(decision.response),
                Some(text_of(message)),
                None,
            ),
            ReplyBody::Error { error, .. } => {
                (decisions::OUTCOME_CHAIN_ERROR, None, Some(text_of(error)))
            }
            ReplyBody::Data(_) => return Ok(None),
        };
        if outcome == decisions::OUTCOME_ACCEPTED {
            // The production order first, as in `reconcile`: a crash between the two
            // never leaves an accepted order without one.
            let token = self.token().await?;
            self.applied(kind, &token, &id, answer, &decision, None)
                .await?;
        } else if outcome == decisions::OUTCOME_REJECTED {
            crate::mirror::set_status(&self.db, &self.events, kind, &id, "REJECTED").await;
        }
        let decision_id = decision.id;
        let settled = self
            .db
            .query(move |conn| {
                decisions::settle_late(
                    conn,
                    decision_id,
                    outcome,
                    message.as_deref(),
                    error.as_deref(),
                )
            })
            .await?;
        if let Some(settled) = &settled {
            tracing::info!(
                kind = kind.as_str(),
                request_id = %settled.request_id,
                outcome = %settled.outcome,
                "decision settled by its late reply"
            );
            publish_decision(&self.events, kind, settled);
        }
        Ok(settled)
    }

    /// The chain's order `id`: from the mirror, else by paging through the chain's
    /// list (into the mirror); `None` if the chain does not list it or cannot be read.
    async fn order_item(&self, token: &str, id: &RequestId) -> Option<Value> {
        let chain_id = id.to_string();
        let row = self
            .db
            .query(move |conn| {
                mes_core::db::chain_requests::get(conn, Kind::Order.as_str(), &chain_id)
            })
            .await
            .ok()
            .flatten();
        if let Some(item) = row.and_then(|r| serde_json::from_str(&r.item).ok()) {
            return Some(item);
        }
        match self.find_in_chain(Kind::Order, token, id).await {
            Ok(item) => item,
            Err(e) => {
                tracing::warn!("looking up order {id} on the chain: {e}");
                None
            }
        }
    }

    /// Answering again while the last decision is `pending` or `unknown`: nothing is
    /// sent; the chain's list is read until the request is found (into the mirror), and
    /// the decision settled if it shows the answer.
    async fn recheck(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
        last: decisions::Decision,
    ) -> Result<AnswerOutcome, RequestError> {
        let item = self.find_in_chain(kind, token, id).await?;
        let status = item
            .as_ref()
            .and_then(|i| i.get("status"))
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase);
        let mut decision = last;
        if decision.outcome == decisions::OUTCOME_UNKNOWN
            && let Some(status @ ("ACCEPTED" | "REJECTED")) = status.as_deref()
            && let Some(settled) =
                settle_from_status(&self.db, kind, &decision, status, item.as_ref()).await?
        {
            publish_decision(&self.events, kind, &settled);
            decision = settled;
        }
        self.report(kind, id, decision).await
    }

    /// An answer that went out while background work's reply was outstanding behind a
    /// legacy gateway ([`kafka_bridge::Error::Unconfirmed`]): its reply cannot be told
    /// apart, so the chain's list is read for the request a few times, with growing
    /// pauses (about 3 s in all), until it shows the answer. Still not shown (or the
    /// list cannot be read): the decision stays `unknown` and the mirror settles it.
    async fn confirm_from_list(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
        decision: decisions::Decision,
    ) -> AnswerOutcome {
        let mut last = decision;
        let mut pause = std::time::Duration::from_millis(100);
        for _ in 0..CONFIRM_TRIES {
            match self.recheck(kind, token, id, last.clone()).await {
                Ok(outcome) if outcome.decision.outcome != decisions::OUTCOME_UNKNOWN => {
                    return outcome;
                }
                Ok(outcome) => last = outcome.decision,
                Err(e) => {
                    tracing::warn!("confirming the answer to {id} from the chain's list: {e}");
                    break;
                }
            }
            rocket::tokio::time::sleep(pause).await;
            pause *= 2;
        }
        AnswerOutcome {
            message: Value::String(UNCONFIRMED.to_owned()),
            decision: last,
            production_order: None,
        }
    }

    /// What an answer call says about `decision` when it did not just get the chain's
    /// reply itself: the decision, its production order if any, and a message.
    async fn report(
        &self,
        kind: Kind,
        id: &RequestId,
        decision: decisions::Decision,
    ) -> Result<AnswerOutcome, RequestError> {
        let production_order = if kind == Kind::Order {
            let chain_id = id.to_string();
            self.db
                .query(move |conn| orders::get_by_chain_id(conn, &chain_id))
                .await?
        } else {
            None
        };
        let message = match decision.outcome.as_str() {
            decisions::OUTCOME_UNKNOWN | decisions::OUTCOME_PENDING => {
                Value::String(UNCONFIRMED.to_owned())
            }
            _ => Value::String(
                decision
                    .chain_message
                    .clone()
                    .unwrap_or_else(|| decision.outcome.clone()),
            ),
        };
        Ok(AnswerOutcome {
            message,
            decision,
            production_order,
        })
    }

    /// The chain's list item for request `id` of `kind`, paging through the chain's
    /// list (each page goes into the mirror); `None` if the chain does not list it.
    async fn find_in_chain(
        &self,
        kind: Kind,
        token: &str,
        id: &RequestId,
    ) -> Result<Option<Value>, RequestError> {
        for n in 0..CHAIN_SCAN_PAGES {
            let page = Page {
                start: n * CHAIN_SCAN_PAGE,
                limit: CHAIN_SCAN_PAGE,
            };
            let items = self.list_page(token, kind, page).await?;
            let found = items
                .iter()
                .find(|item| chain_id(kind, item).is_some_and(|c| c == *id))
                .cloned();
            if found.is_some() {
                return Ok(found);
            }
            if items.len() < CHAIN_SCAN_PAGE as usize {
                break;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::RefCell;

    use serde_json::json;

    use super::*;

    /// A chain list of `n` partners; every third one accepted.
    fn chain(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let status = if i % 3 == 0 { "ACCEPTED" } else { "OPEN" };
                json!({"partner_request_id": format!("p{i}"), "status": status})
            })
            .collect()
    }

    /// Runs [`list_filtered`] over `items`; returns the ids and the pages asked for.
    fn filtered(items: &[Value], page: Page, status: &str) -> (Vec<String>, Vec<Page>) {
        let asked = RefCell::new(Vec::new());
        let result = rocket::async_test(list_filtered(page, status, |p: Page| {
            asked.borrow_mut().push(p);
            let from = (p.start as usize).min(items.len());
            let to = (from + p.limit as usize).min(items.len());
            std::future::ready(Ok::<_, ()>(items[from..to].to_vec()))
        }))
        .unwrap();
        let ids = result
            .iter()
            .map(|i| i["partner_request_id"].as_str().unwrap().to_owned())
            .collect();
        (ids, asked.into_inner())
    }

    fn ids(range: impl Iterator<Item = usize>) -> Vec<String> {
        range.map(|i| format!("p{i}")).collect()
    }

    fn page(start: u32, limit: u32) -> Page {
        Page { start, limit }
    }

    #[test]
    fn the_filter_applies_to_the_whole_list_before_the_page() {
        let items = chain(250);
        let (got, asked) = filtered(&items, page(0, 100), "accepted");
        assert_eq!(got, ids((0..250).step_by(3).take(84)));
        assert_eq!(asked.len(), 3, "pages until the short one: {asked:?}");
        assert_eq!(asked[2], page(200, 100));

        let (got, _) = filtered(&items, page(40, 10), "ACCEPTED");
        assert_eq!(got, ids((0..250).step_by(3).skip(40).take(10)));
        let (got, _) = filtered(&items, page(80, 10), "ACCEPTED");
        assert_eq!(got, ids((240..250).step_by(3)));
        let (got, _) = filtered(&items, page(84, 10), "ACCEPTED");
        assert!(got.is_empty());
    }

    #[test]
    fn reading_stops_once_the_page_is_complete_or_at_the_bound() {
        let items = chain(1000);
        let (got, asked) = filtered(&items, page(0, 10), "ACCEPTED");
        assert_eq!(got.len(), 10);
        assert_eq!(asked.len(), 1);

        let items = vec![json!({"partner_request_id": "x", "status": "OPEN"}); 10_000];
        let (got, asked) = filtered(&items, page(0, 10), "ACCEPTED");
        assert!(got.is_empty());
        assert_eq!(asked.len(), CHAIN_SCAN_PAGES as usize);
    }

    #[test]
    fn chain_ids_are_kept_as_spelled_and_bad_ones_dropped() {
        let item = |id: Value| json!({"abs_action_id": id});
        assert_eq!(
            chain_id(Kind::Order, &item(json!("ABC_def-123")))
                .unwrap()
                .as_str(),
            "ABC_def-123"
        );
        assert!(chain_id(Kind::Order, &item(json!("../reports/daily/run?x=1#"))).is_none());
        assert!(chain_id(Kind::Order, &item(json!(12))).is_none());
        assert!(chain_id(Kind::Partner, &item(json!("abc"))).is_none());
    }

    #[test]
    fn kinds_read_back_from_their_stored_names() {
        for kind in [Kind::Partner, Kind::Order] {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_name("unit"), None);
    }
}
