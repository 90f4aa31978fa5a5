//! The typed calls: each builds its [`Request`], sends it with [`Bridge::request`]
//! and reads the body its topic is answered with (`data_of`, `message_of`,
//! `created_of`), so a caller gets a typed value or a typed error.

use mes_core::codec::{self, Page, RecordAction, RecordTypeAction, Reply, ReplyBody, Request};
use mes_core::domain::{Answer, RequestId};
use serde_json::Value;

use super::{Bridge, CallOptions, Exchange};
use crate::{Error, Result};

/// Which of the chain's two request lists to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    /// Partner requests (`BLK_Part_Lst`).
    Partners,
    /// Order requests (`BLK_Act_Lst`).
    Orders,
}

/// The chain's answer to an accept or reject.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The request's correlation id, for the audit trail.
    pub corr: String,
    /// The chain's `message`.
    pub message: Value,
}

/// The outcome of creating something on the chain, where "already exists" is fine.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Created; the chain's message.
    Created(String),
    /// It existed (docs/protocol.md §6 `already_exists`); the chain's text.
    AlreadyExists(String),
}

impl Bridge {
    /// `BLK_Part_Lst` or `BLK_Act_Lst`: a page of the chain's `data` list as it sent
    /// it. `options` say whose call it is (the poller's are background).
    pub async fn list(
        &self,
        auth: &str,
        listing: Listing,
        page: Page,
        options: CallOptions,
    ) -> Result<Vec<Value>> {
        let request = match listing {
            Listing::Partners => Request::ListPartners(page),
            Listing::Orders => Request::ListOrders(page),
        };
        data_of(self.request(auth, request, options).await?.reply)
    }

    /// `BLK_Part_Lst` for an operator: the chain's `data` list as it sent it.
    pub async fn list_partners(&self, auth: &str, page: Page) -> Result<Vec<Value>> {
        self.list(auth, Listing::Partners, page, CallOptions::default())
            .await
    }

    /// `BLK_Act_Lst` for an operator: the chain's `data` list as it sent it.
    pub async fn list_orders(&self, auth: &str, page: Page) -> Result<Vec<Value>> {
        self.list(auth, Listing::Orders, page, CallOptions::default())
            .await
    }

    /// `BLK_Part_Ans` or `BLK_Act_Ans`: accept or reject a request of `listing`'s kind.
    pub async fn answer(
        &self,
        auth: &str,
        listing: Listing,
        id: RequestId,
        response: Answer,
        options: CallOptions,
    ) -> Result<Answered> {
        let body = codec::AnswerBody { id, response };
        let request = match listing {
            Listing::Partners => Request::AnswerPartner(body),
            Listing::Orders => Request::AnswerOrder(body),
        };
        message_of(self.request(auth, request, options).await?)
    }

    /// `BLK_Rty`: create a record type; "already exists" is a success.
    pub async fn create_record_type(
        &self,
        auth: &str,
        action: RecordTypeAction,
        options: CallOptions,
    ) -> Result<Created> {
        created_of(
            self.request(auth, Request::RecordType(action), options)
                .await?,
        )
    }

    /// `BLK_Rec`: create a record, add a reporter, update properties or publish a day
    /// report; "already exists" is a success.
    pub async fn record(
        &self,
        auth: &str,
        action: RecordAction,
        options: CallOptions,
    ) -> Result<Created> {
        created_of(self.request(auth, Request::Record(action), options).await?)
    }
}

fn data_of(reply: Reply) -> Result<Vec<Value>> {
    match reply.body {
        ReplyBody::Data(items) => Ok(items),
        body @ ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Message(m) => Err(Error::UnexpectedReply(format!(
            "expected a data list, got the message {m}"
        ))),
    }
}

fn message_of(exchange: Exchange) -> Result<Answered> {
    match exchange.reply.body {
        ReplyBody::Message(message) => Ok(Answered {
            corr: exchange.corr,
            message,
        }),
        body @ ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Data(_) => Err(Error::UnexpectedReply(
            "expected a message, got a data list".into(),
        )),
    }
}

fn created_of(exchange: Exchange) -> Result<Created> {
    let body = exchange.reply.body;
    if body.is_already_exists() {
        return Ok(Created::AlreadyExists(body.text()));
    }
    match body {
        ReplyBody::Message(_) => Ok(Created::Created(body.text())),
        ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Data(_) => Err(Error::UnexpectedReply(
            "expected a message, got a data list".into(),
        )),
    }
}

fn chain_error(body: &ReplyBody) -> Error {
    let code = match body {
        ReplyBody::Error { code, .. } => code.clone(),
        _ => None,
    };
    Error::Chain {
        message: body.text(),
        code,
    }
}
