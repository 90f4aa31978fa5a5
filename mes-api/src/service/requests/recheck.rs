//! When an answer call did not get the chain's reply itself (answered again while
//! the last decision is unconfirmed, or sent behind a legacy gateway's outstanding
//! reply): the chain's list is read for the request, and the decision settled from
//! what it shows.

use mes_core::codec::Page;
use mes_core::db::{decisions, orders};
use mes_core::domain::RequestId;
use serde_json::Value;

use super::{
    AnswerOutcome, CHAIN_SCAN_PAGE, CHAIN_SCAN_PAGES, Kind, RequestError, RequestService,
    UNCONFIRMED, chain_id,
};
use crate::reconcile::{publish_decision, settle_from_status};

/// How often an answer sent unmatched is looked for in the chain's list before the
/// call ends `unknown` (pauses of 0.1, 0.2, 0.4, 0.8 and 1.6 s between).
const CONFIRM_TRIES: u32 = 6;

impl RequestService {
    /// Answering again while the last decision is `pending` or `unknown`: nothing is
    /// sent; the chain's list is read until the request is found (into the mirror), and
    /// the decision settled if it shows the answer.
    pub(super) async fn recheck(
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
    pub(super) async fn confirm_from_list(
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
    pub(super) async fn report(
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
    pub(super) async fn find_in_chain(
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
