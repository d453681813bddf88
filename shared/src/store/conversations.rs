//! Conversation items and the reads and writes over a conversation's chat items.
//!
//! A conversation is `ACCT#<account>` / `CONV#<id>` (title, model, created_at,
//! updated_at, messages); its chats are the chat items `ACCT#<account>` /
//! `CHAT#<id>#<charge uuid v7>`, so one `Query` on `begins_with(sk, "CHAT#<id>#")` reads
//! them in time order, either way. Only live conversation items carry `updated_at`, so
//! the `Conversations` index (hash `pk`, range `updated_at`) holds exactly the
//! conversations, by last activity.
//!
//! A deleted conversation stays behind as a tombstone (`deleted_at`, no title, no
//! `updated_at`, so out of the index; gone by TTL after a day) for as long as a chat
//! that was running in it may still settle: the settle's update of the conversation is
//! conditional on there being no tombstone, so a deleted conversation never comes back.
//!
//! The user item keeps `last_conversation` {id, at}, set by the close that settles a
//! charge (`Store::close_charge`), so a chat sent without a conversation can continue
//! the latest one.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{
        AttributeValue, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure, WriteRequest,
    },
};

use super::{
    Account, Error, Item, PK, PROFILE, SK, Store, TTL_ATTRIBUTE,
    credits::{chat_record, chat_sk},
    get_n, get_opt_s, get_s, n, now_millis, s,
};
use crate::{
    domain::ConversationId,
    store::{ChargeState, ChatRecord, OpenCharge},
};

/// The name of the index of conversations by last activity.
pub const CONVERSATIONS_INDEX: &str = "Conversations";
const CONV_PREFIX: &str = "CONV#";
/// Set on a deleted conversation's item.
const DELETED_AT: &str = "deleted_at";

fn conversation_sk(id: &ConversationId) -> AttributeValue {
    s(format!("{CONV_PREFIX}{id}"))
}

fn chats_prefix(id: &ConversationId) -> AttributeValue {
    s(format!("CHAT#{id}#"))
}

/// A conversation as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub title: String,
    /// The model of its latest answer.
    pub model: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// Answered messages.
    pub messages: u64,
}

/// Where a listing of conversations goes on from: the last one listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationsAfter {
    pub updated_at: u64,
    pub id: ConversationId,
}

/// What the settle's update of a conversation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The answer is counted in its conversation (now, or by an earlier attempt).
    Counted,
    /// The conversation was deleted while the chat ran: it stays deleted.
    Deleted,
}

/// A conversation just marked deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstoned {
    /// Whether this deletion marked it (not an earlier one).
    pub now: bool,
    /// Until when the chat that settled in it last may still write its records
    /// (millis), and which charge that was.
    pub settling_until: u64,
    pub last_charge: Option<String>,
}

/// How long a deleted conversation's tombstone is kept: far longer than any request runs.
const TOMBSTONE_KEPT_SECS: u64 = 24 * 3600;

/// One page of a listing and where the next one starts (`None`: this was the last).
#[derive(Debug)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

pub use crate::domain::PastTurn;

impl Store {
    /// The conversation `id` of this account, if it exists (and is not deleted).
    pub async fn conversation(
        &self,
        account: &Account,
        id: &ConversationId,
    ) -> Result<Option<ConversationRecord>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, conversation_sk(id))
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        out.item
            .filter(|item| !item.contains_key(DELETED_AT))
            .as_ref()
            .map(conversation_record)
            .transpose()
    }

    /// Records an answered chat in its conversation: creates the conversation item on
    /// the first answer (titled `title`), counts the message, moves `updated_at` and
    /// `settling_until` (see `Charges::write_window`). A retry whose first attempt
    /// landed finds its charge as `last_charge` and counts nothing twice. A deleted
    /// conversation is left deleted: [`Touched::Deleted`].
    pub async fn touch_conversation(
        &self,
        charge: &OpenCharge,
        title: &str,
        model: &str,
        settling_until: u64,
    ) -> Result<Touched, Error> {
        let id = ConversationId::from_stored(charge.conversation_id.clone());
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, charge.account.items_pk())
            .key(SK, conversation_sk(&id))
            .update_expression(
                "SET conversation_id = :id, #title = if_not_exists(#title, :title), \
                 created_at = if_not_exists(created_at, :created), #model = :model, \
                 updated_at = :now, last_charge = :charge, settling_until = :until \
                 ADD #messages :one",
            )
            .expression_attribute_names("#title", "title")
            .expression_attribute_names("#model", "model")
            .expression_attribute_names("#messages", "messages")
            .expression_attribute_names("#deleted", DELETED_AT)
            .condition_expression(
                "attribute_not_exists(#deleted) \
                 AND (attribute_not_exists(last_charge) OR last_charge <> :charge)",
            )
            .expression_attribute_values(":id", s(id.as_str()))
            .expression_attribute_values(":title", s(title))
            .expression_attribute_values(":created", n(charge.opened_at))
            .expression_attribute_values(":model", s(model))
            .expression_attribute_values(":now", n(now_millis()))
            .expression_attribute_values(":charge", s(&charge.id))
            .expression_attribute_values(":until", n(settling_until))
            .expression_attribute_values(":one", n(1))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match self.send("UpdateItem", || update.clone().send()).await {
            Ok(_) => Ok(Touched::Counted),
            Err(failure) => match failure.service_error("UpdateItem")? {
                UpdateItemError::ConditionalCheckFailedException(e) => Ok(
                    match e.item.is_some_and(|old| old.contains_key(DELETED_AT)) {
                        true => Touched::Deleted,
                        // Counted already, by this charge's earlier attempt.
                        false => Touched::Counted,
                    },
                ),
                e => Err(Error::dynamo("UpdateItem")(e)),
            },
        }
    }

    /// The latest answered turns of a conversation, newest first: at most `turns` of
    /// them, and no more once `chars` characters are gathered. Usually one `Query`
    /// whatever the conversation's length: it reads from the newest end and stops.
    pub async fn recent_turns(
        &self,
        account: &Account,
        id: &ConversationId,
        turns: usize,
        chars: usize,
    ) -> Result<Vec<PastTurn>, Error> {
        let mut found = Vec::new();
        if turns == 0 {
            return Ok(found);
        }
        let mut gathered = 0;
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :chats)")
                .filter_expression("#state = :completed AND attribute_exists(#response)")
                .projection_expression("#message, #response")
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#message", "message")
                .expression_attribute_names("#response", "response")
                .expression_attribute_values(":pk", account.items_pk())
                .expression_attribute_values(":chats", chats_prefix(id))
                .expression_attribute_values(":completed", s(ChargeState::Completed.as_str()))
                .scan_index_forward(false)
                // Refunded turns are filtered out after the limit; a few spare reads
                // usually save a second page.
                .limit(i32::try_from(turns + 4).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let out = self
                .send("Query", || query.clone().send())
                .await
                .map_err(|f| f.into_error("Query"))?;
            for item in out.items.unwrap_or_default() {
                let turn = PastTurn {
                    message: get_opt_s(&item, "message").unwrap_or_default(),
                    response: get_opt_s(&item, "response").unwrap_or_default(),
                };
                gathered += turn.message.chars().count() + turn.response.chars().count();
                found.push(turn);
                if found.len() >= turns || gathered >= chars {
                    return Ok(found);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// The user's conversations, most recently active first.
    pub async fn conversations(
        &self,
        account: &Account,
        limit: usize,
        after: Option<&ConversationsAfter>,
    ) -> Result<Page<ConversationRecord, ConversationsAfter>, Error> {
        let start = after.map(|a| {
            HashMap::from([
                (PK.to_owned(), account.items_pk()),
                (SK.to_owned(), conversation_sk(&a.id)),
                ("updated_at".to_owned(), n(a.updated_at)),
            ])
        });
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(CONVERSATIONS_INDEX)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", account.items_pk())
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start);
        let out = self
            .send("Query", || query.clone().send())
            .await
            .map_err(|f| f.into_error("Query"))?;
        let items = out
            .items
            .unwrap_or_default()
            .iter()
            .map(conversation_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key {
            Some(key) if !key.is_empty() => Some(ConversationsAfter {
                updated_at: get_n(&key, "updated_at")?,
                id: ConversationId::from_stored(
                    get_s(&key, SK)?
                        .strip_prefix(CONV_PREFIX)
                        .unwrap_or_default()
                        .to_owned(),
                ),
            }),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// A conversation's answered messages, oldest first (or newest first), after the
    /// charge `after` in that order.
    pub async fn messages(
        &self,
        account: &Account,
        id: &ConversationId,
        limit: usize,
        after: Option<&str>,
        newest_first: bool,
    ) -> Result<Page<ChatRecord, String>, Error> {
        let mut start = after.map(|charge| {
            HashMap::from([
                (PK.to_owned(), account.items_pk()),
                (SK.to_owned(), chat_sk(id.as_str(), charge)),
            ])
        });
        // Refunded chats are filtered out after DynamoDB's limit, so a page can come back
        // short: read on from where it stopped until the page is full or the end is reached.
        let mut items = Vec::new();
        let next = loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :chats)")
                .filter_expression("#state = :completed")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":pk", account.items_pk())
                .expression_attribute_values(":chats", chats_prefix(id))
                .expression_attribute_values(":completed", s(ChargeState::Completed.as_str()))
                .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
                .scan_index_forward(!newest_first)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let out = self
                .send("Query", || query.clone().send())
                .await
                .map_err(|f| f.into_error("Query"))?;
            for item in out.items.unwrap_or_default() {
                items.push(chat_record(&item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() && items.len() < limit => start = Some(key),
                Some(key) if !key.is_empty() => {
                    break Some(
                        get_s(&key, SK)?
                            .rsplit('#')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                _ => break None,
            }
        };
        Ok(Page { items, next })
    }

    /// Renames a conversation. `Ok(None)`: it does not exist.
    pub async fn rename_conversation(
        &self,
        account: &Account,
        id: &ConversationId,
        title: &str,
    ) -> Result<Option<ConversationRecord>, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, conversation_sk(id))
            .update_expression("SET #title = :title")
            .expression_attribute_names("#title", "title")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(#deleted)")
            .expression_attribute_names("#deleted", DELETED_AT)
            .expression_attribute_values(":title", s(title))
            .return_values(ReturnValue::AllNew);
        // A failed condition: there is no such conversation.
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?
            .and_then(|out| out.attributes)
            .as_ref()
            .map(conversation_record)
            .transpose()
    }

    /// Marks the conversation `id` deleted: a tombstone without its title, out of the
    /// listing, that no later settle brings back. `by` names this deletion, so that a
    /// retry whose first attempt landed knows it was its own. `Ok(None)`: there is no
    /// such conversation. Deleting a tombstone again returns it (`now: false`), so that
    /// a deletion that stopped half-way can be finished.
    pub async fn tombstone_conversation(
        &self,
        account: &Account,
        id: &ConversationId,
        by: &str,
    ) -> Result<Option<Tombstoned>, Error> {
        let now = now_millis();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, conversation_sk(id))
            .update_expression(
                "SET #deleted = if_not_exists(#deleted, :now), \
                 deleted_by = if_not_exists(deleted_by, :by), #ttl = :ttl \
                 REMOVE #title, updated_at, #model, #messages, created_at",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#deleted", DELETED_AT)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#title", "title")
            .expression_attribute_names("#model", "model")
            .expression_attribute_names("#messages", "messages")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":ttl", n(now / 1000 + TOMBSTONE_KEPT_SECS))
            .return_values(ReturnValue::AllOld);
        let Some(out) = self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
        else {
            return Ok(None);
        };
        let old = out.attributes.unwrap_or_default();
        Ok(Some(Tombstoned {
            now: match get_opt_s(&old, "deleted_by") {
                None => true,
                Some(earlier) => earlier == by,
            },
            settling_until: get_n(&old, "settling_until").unwrap_or(0),
            last_charge: get_opt_s(&old, "last_charge"),
        }))
    }

    /// Removes the text of every chat of a conversation, keeping each charge's record
    /// (cost, state, times, model, usage). May be repeated. Returns how many chats lost
    /// their text.
    pub async fn strip_conversation(
        &self,
        account: &Account,
        id: &ConversationId,
    ) -> Result<usize, Error> {
        let mut stripped = 0;
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :chats)")
                .filter_expression("attribute_exists(#message) OR attribute_exists(#response)")
                .expression_attribute_names("#message", "message")
                .expression_attribute_names("#response", "response")
                .expression_attribute_values(":pk", account.items_pk())
                .expression_attribute_values(":chats", chats_prefix(id))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let out = self
                .send("Query", || query.clone().send())
                .await
                .map_err(|f| f.into_error("Query"))?;
            let items: Vec<Item> = out
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|mut item| {
                    item.remove("message");
                    item.remove("response");
                    item
                })
                .collect();
            stripped += items.len();
            let puts = items
                .into_iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(Error::dynamo("build PutRequest"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.batch_write(puts).await?;
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(stripped),
            }
        }
    }

    /// Makes the user's pointer to their latest conversation forget `id`, if it is on
    /// it: a chat sent without a conversation must not continue a deleted one.
    pub async fn forget_conversation(
        &self,
        account: &Account,
        id: &ConversationId,
    ) -> Result<(), Error> {
        let forget = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.user_pk())
            .key(SK, s(PROFILE))
            .update_expression("REMOVE last_conversation")
            .condition_expression("last_conversation.id = :id")
            .expression_attribute_values(":id", s(id.as_str()));
        // A failed condition: the pointer is on another conversation already.
        self.send_conditional("UpdateItem", || forget.clone().send())
            .await?;
        Ok(())
    }

    /// `BatchWriteItem` in chunks of 25, asking again for what DynamoDB left unprocessed.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), Error> {
        for chunk in requests.chunks(25) {
            let mut pending = HashMap::from([(self.table.clone(), chunk.to_vec())]);
            let mut round = 0u32;
            while !pending.is_empty() {
                if round > 0 {
                    if round > 6 {
                        return Err(Error::Unavailable {
                            op: "BatchWriteItem",
                            source: None,
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25 << round)).await;
                }
                round += 1;
                let write = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending.clone()));
                let out = self
                    .send("BatchWriteItem", || write.clone().send())
                    .await
                    .map_err(|f| f.into_error("BatchWriteItem"))?;
                pending = out.unprocessed_items.unwrap_or_default();
                pending.retain(|_, requests| !requests.is_empty());
            }
        }
        Ok(())
    }
}

fn conversation_record(item: &Item) -> Result<ConversationRecord, Error> {
    Ok(ConversationRecord {
        id: ConversationId::from_stored(get_s(item, "conversation_id")?),
        title: get_opt_s(item, "title").unwrap_or_default(),
        model: get_opt_s(item, "model").unwrap_or_default(),
        created_at: get_n(item, "created_at")?,
        updated_at: get_n(item, "updated_at")?,
        messages: get_n(item, "messages").unwrap_or(0),
    })
}
