//! Late replies: a reply that came after its call gave up settles the decision it
//! answers, once, whoever else (the mirror's scans, another instance) tries too.

use kafka_bridge::bridge::LateReply;
use mes_core::codec::ReplyBody;
use mes_core::db::decisions;
use mes_core::domain::{Answer, RequestId};

use super::{Kind, RequestError, RequestService};
use crate::reconcile::{publish_decision, text_of};

impl RequestService {
    /// A reply that came after its call ended
    /// ([`Bridge::late_replies`](kafka_bridge::bridge::Bridge::late_replies)): if it
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
        let settled = self
            .write_outcome(decisions::settle_late, decision.id, outcome, message, error)
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
}
