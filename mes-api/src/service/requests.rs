//! Partner and order requests: list them on the chain, answer them, record each
//! decision and take accepted orders over as production orders.
//!
//! The routes and the console call [`RequestService`]; it needs no HTTP, so a library
//! user can drive the same operations. Every list reply goes into the mirror of the
//! chain's requests ([`crate::mirror`]); decisions that the chain did not confirm
//! converge with it through [`crate::reconcile`] and through late replies
//! ([`RequestService::settle_late_reply`]).

use kafka_bridge::bridge::{Bridge, CallOptions, SendReceipt};
use mes_core::codec::Page;
use mes_core::db::{DbConnection, decisions, orders};
use mes_core::domain::{Answer, RequestId};
use serde_json::Value;

use crate::db::{Db, DbError};
use crate::events::Hub;
use crate::reconcile::{publish_decision, take_over, text_of};
use crate::service::tokens::TokenProvider;

mod late;
mod listing;
mod recheck;

pub use listing::{CHAIN_SCAN_PAGE, CHAIN_SCAN_PAGES, Kind, chain_id, has_status, list_filtered};

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

/// A conditional write of a decision's outcome, as [`decisions::complete`] and
/// [`decisions::settle_late`] do it.
type WriteOutcome = fn(
    &mut DbConnection,
    i64,
    &str,
    Option<&str>,
    Option<&str>,
) -> diesel::QueryResult<Option<decisions::Decision>>;

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

    /// Writes `outcome` and the chain's `message` or `error` to decision `id` with
    /// `write` ([`decisions::complete`], [`decisions::settle_late`]: conditional, so
    /// `None` when the decision was settled meanwhile).
    async fn write_outcome(
        &self,
        write: WriteOutcome,
        id: i64,
        outcome: &'static str,
        message: Option<String>,
        error: Option<String>,
    ) -> Result<Option<decisions::Decision>, DbError> {
        self.db
            .query(move |conn| write(conn, id, outcome, message.as_deref(), error.as_deref()))
            .await
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
            .write_outcome(decisions::complete, decision_id, outcome, message, error)
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
}
