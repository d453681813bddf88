//! How credits move. Every change to a balance is one conditional write; nothing here
//! reads a balance and writes it back.
//!
//! A chat's charge goes through three named steps:
//! 1. [`Store::debit`]: one `UpdateItem` on the user item takes the cost if and only if
//!    `tokens >= cost`, and in the same write records the open charge in the user's
//!    `pending` map, so a debit never exists without its record. The write returns the
//!    new balance, so no second read is needed.
//! 2. [`Store::settle`]: after the model answered, one transaction closes the open
//!    charge and stores the chat as `completed`.
//! 3. [`Store::refund`]: after the model failed, one transaction closes the open
//!    charge, gives the credits back and stores the chat as `refunded` with the reason.
//!
//! Settle and refund are both guarded by the open charge still being in `pending`, so
//! a charge is closed exactly once: never refunded twice, never refunded after it was
//! settled.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::{transact_write_items::TransactWriteItemsError, update_item::UpdateItemError},
    types::{
        AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
        Update,
    },
};
use uuid::Uuid;

use super::{
    Error, Item, PK, SK, Store, get_n, get_opt_s, get_s, n, now_millis, s, user_pk, users::PROFILE,
};
use crate::domain::Usage;

const CHAT_PREFIX: &str = "CHAT#";

/// A debit that is not yet settled or refunded.
#[derive(Debug, Clone)]
pub struct OpenCharge {
    pub id: String,
    pub user_key: String,
    pub cost: u64,
    /// Milliseconds since the Unix epoch.
    pub opened_at: u64,
}

#[derive(Debug)]
pub enum Debit {
    /// The cost was taken; `balance` is what is left. `open` lists the user's other open
    /// charges (see [`OpenCharge::is_abandoned`]).
    Debited {
        charge: OpenCharge,
        balance: u64,
        open: Vec<OpenCharge>,
    },
    /// The balance is below the cost; nothing changed.
    Insufficient { balance: u64, open: Vec<OpenCharge> },
    /// No such user.
    NoAccount,
}

impl OpenCharge {
    /// A charge still open `timeout` after it was taken belongs to a request that can no
    /// longer be running (the function's own timeout is shorter): its process died
    /// between debit and settle.
    pub fn is_abandoned(&self, now_millis: u64, timeout: std::time::Duration) -> bool {
        now_millis.saturating_sub(self.opened_at) > timeout.as_millis() as u64
    }
}

/// The user's open charges, from the `pending` map of a user item.
pub(crate) fn open_charges(user_key: &str, item: &Item) -> Result<Vec<OpenCharge>, Error> {
    let Some(AttributeValue::M(pending)) = item.get("pending") else {
        return Ok(Vec::new());
    };
    let mut charges = pending
        .iter()
        .map(|(id, entry)| {
            let AttributeValue::M(entry) = entry else {
                return Err(Error::Corrupt(format!("open charge {id} is not a map")));
            };
            Ok(OpenCharge {
                id: id.clone(),
                user_key: user_key.to_owned(),
                cost: get_n(entry, "cost")?,
                opened_at: get_n(entry, "opened_at")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    charges.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(charges)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeState {
    /// Answered and paid for.
    Completed,
    /// The model failed; the credits went back.
    Refunded,
}

impl ChargeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Refunded => "refunded",
        }
    }
}

/// A stored chat: its question, its answer (or why there is none) and its charge.
#[derive(Debug, Clone)]
pub struct ChatRecord {
    pub id: String,
    pub message: String,
    pub response: Option<String>,
    pub model: Option<String>,
    pub cost: u64,
    pub state: ChargeState,
    pub usage: Option<Usage>,
    pub reason: Option<String>,
    pub created_at: u64,
    pub settled_at: u64,
}

/// What the model gave back, to be stored with the chat.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub response: &'a str,
    pub model: &'a str,
    pub usage: Usage,
}

impl Store {
    /// Step 1: take `cost` credits if the balance covers them.
    pub async fn debit(&self, user_key: &str, cost: u64) -> Result<Debit, Error> {
        let charge = OpenCharge {
            id: Uuid::now_v7().to_string(),
            user_key: user_key.to_owned(),
            cost,
            opened_at: now_millis(),
        };
        let entry = AttributeValue::M(HashMap::from([
            ("cost".to_owned(), n(cost)),
            ("opened_at".to_owned(), n(charge.opened_at)),
        ]));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .update_expression("SET tokens = tokens - :cost, pending.#charge = :entry")
            .condition_expression("attribute_exists(pk) AND tokens >= :cost")
            .expression_attribute_names("#charge", &charge.id)
            .expression_attribute_values(":cost", n(cost))
            .expression_attribute_values(":entry", entry)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result.map_err(|e| e.into_service_error()) {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let balance = get_n(&item, "tokens")?;
                let mut open = open_charges(user_key, &item)?;
                open.retain(|c| c.id != charge.id);
                Ok(Debit::Debited {
                    charge,
                    balance,
                    open,
                })
            }
            Err(UpdateItemError::ConditionalCheckFailedException(e)) => match e.item {
                Some(item) => Ok(Debit::Insufficient {
                    balance: get_n(&item, "tokens")?,
                    open: open_charges(user_key, &item)?,
                }),
                None => Ok(Debit::NoAccount),
            },
            Err(e) => Err(Error::dynamo("UpdateItem")(e)),
        }
    }

    /// Step 2: the model answered; close the charge and store the chat as completed.
    /// `Ok(false)`: the charge was already closed, and nothing changed.
    /// `also` joins the same transaction (the idempotency record's outcome).
    pub async fn settle(
        &self,
        charge: &OpenCharge,
        message: &str,
        answer: Answered<'_>,
        also: Option<TransactWriteItem>,
    ) -> Result<bool, Error> {
        let close = self.close_charge(charge, Close::Keep)?;
        let mut chat = chat_item(charge, message, ChargeState::Completed);
        chat.insert("response".into(), s(answer.response));
        chat.insert("model".into(), s(answer.model));
        chat.insert("usage".into(), usage_value(&answer.usage));
        self.close(close, chat, also).await
    }

    /// Step 3: the model failed; give the credits back and store the chat as refunded.
    /// `message` is `None` for an abandoned charge, whose message died with its process.
    /// `also` joins the same transaction (the idempotency record's outcome).
    /// `Ok(false)`: the charge was already closed, and nothing changed.
    pub async fn refund(
        &self,
        charge: &OpenCharge,
        message: Option<&str>,
        reason: &str,
        also: Option<TransactWriteItem>,
    ) -> Result<bool, Error> {
        let close = self.close_charge(charge, Close::GiveBack)?;
        let mut chat = chat_item(charge, message.unwrap_or(""), ChargeState::Refunded);
        chat.insert("reason".into(), s(reason));
        self.close(close, chat, also).await
    }

    /// The user's chats, oldest first.
    pub async fn chats(&self, user_key: &str) -> Result<Vec<ChatRecord>, Error> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :chat)")
            .expression_attribute_values(":pk", user_pk(user_key))
            .expression_attribute_values(":chat", s(CHAT_PREFIX))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(Error::dynamo("Query"))?;
        pages.iter().map(chat_record).collect()
    }

    /// The user-item half of settle and refund: removes the open charge, if it is still
    /// open, and for a refund gives its cost back.
    fn close_charge(&self, charge: &OpenCharge, close: Close) -> Result<TransactWriteItem, Error> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, user_pk(&charge.user_key))
            .key(SK, s(PROFILE))
            .condition_expression("attribute_exists(pending.#charge)")
            .expression_attribute_names("#charge", &charge.id);
        let update = match close {
            Close::Keep => update.update_expression("REMOVE pending.#charge"),
            Close::GiveBack => update
                .update_expression("SET tokens = tokens + :cost REMOVE pending.#charge")
                .expression_attribute_values(":cost", n(charge.cost)),
        };
        let update = update.build().map_err(Error::dynamo("build Update"))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn close(
        &self,
        close: TransactWriteItem,
        chat: Item,
        also: Option<TransactWriteItem>,
    ) -> Result<bool, Error> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(chat))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(Error::dynamo("build Put"))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(close)
            .transact_items(TransactWriteItem::builder().put(put).build());
        if let Some(also) = also {
            request = request.transact_items(also);
        }
        let result = request.send().await;
        match result.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(true),
            Err(TransactWriteItemsError::TransactionCanceledException(e))
                if e.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::dynamo("TransactWriteItems")(e)),
        }
    }
}

/// What closing a charge does with its credits.
#[derive(Clone, Copy)]
enum Close {
    /// Settle: the credits stay spent.
    Keep,
    /// Refund: the credits go back to the balance.
    GiveBack,
}

fn chat_item(charge: &OpenCharge, message: &str, state: ChargeState) -> Item {
    HashMap::from([
        (PK.to_owned(), user_pk(&charge.user_key)),
        (SK.to_owned(), s(format!("{CHAT_PREFIX}{}", charge.id))),
        ("message".to_owned(), s(message)),
        ("cost".to_owned(), n(charge.cost)),
        ("state".to_owned(), s(state.as_str())),
        ("created_at".to_owned(), n(charge.opened_at)),
        ("settled_at".to_owned(), n(now_millis())),
    ])
}

fn usage_value(usage: &Usage) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("prompt_tokens".to_owned(), n(usage.prompt_tokens)),
        ("response_tokens".to_owned(), n(usage.response_tokens)),
        ("thoughts_tokens".to_owned(), n(usage.thoughts_tokens)),
        ("total_tokens".to_owned(), n(usage.total_tokens)),
    ]))
}

fn chat_record(item: &Item) -> Result<ChatRecord, Error> {
    let sk = get_s(item, SK)?;
    let state = match get_s(item, "state")?.as_str() {
        "completed" => ChargeState::Completed,
        "refunded" => ChargeState::Refunded,
        other => return Err(Error::Corrupt(format!("unknown chat state {other:?}"))),
    };
    let usage = match item.get("usage") {
        Some(AttributeValue::M(m)) => Some(Usage {
            prompt_tokens: get_n(m, "prompt_tokens")?,
            response_tokens: get_n(m, "response_tokens")?,
            thoughts_tokens: get_n(m, "thoughts_tokens")?,
            total_tokens: get_n(m, "total_tokens")?,
        }),
        _ => None,
    };
    Ok(ChatRecord {
        id: sk.trim_start_matches(CHAT_PREFIX).to_owned(),
        message: get_s(item, "message")?,
        response: get_opt_s(item, "response"),
        model: get_opt_s(item, "model"),
        cost: get_n(item, "cost")?,
        state,
        usage,
        reason: get_opt_s(item, "reason"),
        created_at: get_n(item, "created_at")?,
        settled_at: get_n(item, "settled_at")?,
    })
}
