//! Conversation items and the reads and writes over a conversation's chat items.
//!
//! A conversation is `USER#<user>` / `CONV#<id>` (title, model, created_at, updated_at,
//! messages); its chats are the chat items `USER#<user>` / `CHAT#<id>#<charge uuid v7>`,
//! so one `Query` on `begins_with(sk, "CHAT#<id>#")` reads them in time order, either
//! way. Only conversation items carry `updated_at`, so the `Conversations` index (hash
//! `pk`, range `updated_at`) holds exactly the conversations, by last activity.
//!
//! The user item keeps `last_conversation` {id, at}, set by the close that settles a
//! charge (`Store::close_charge`), so a chat sent without a conversation can continue
//! the latest one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use super::{
    Error, Item, PK, PROFILE, SK, Store,
    credits::{chat_record, chat_sk},
    get_n, get_opt_s, get_s, n, now_millis, s, user_pk,
};
use crate::{
    domain::ConversationId,
    store::{ChargeState, ChatRecord, OpenCharge},
};

/// The name of the index of conversations by last activity.
pub const CONVERSATIONS_INDEX: &str = "Conversations";
const CONV_PREFIX: &str = "CONV#";

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

/// One page of a listing and where the next one starts (`None`: this was the last).
#[derive(Debug)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

pub use crate::domain::PastTurn;

impl Store {
    /// The conversation `id` of this user, if it exists.
    pub async fn conversation(
        &self,
        user_key: &str,
        id: &ConversationId,
    ) -> Result<Option<ConversationRecord>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, conversation_sk(id))
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        out.item.as_ref().map(conversation_record).transpose()
    }

    /// Records an answered chat in its conversation: creates the conversation item on
    /// the first answer (titled `title`), counts the message and moves `updated_at`.
    /// A retry whose first attempt landed finds its charge as `last_charge` and counts
    /// nothing twice.
    pub async fn touch_conversation(
        &self,
        charge: &OpenCharge,
        title: &str,
        model: &str,
    ) -> Result<(), Error> {
        let id = ConversationId::from_stored(charge.conversation_id.clone());
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(&charge.user_key))
            .key(SK, conversation_sk(&id))
            .update_expression(
                "SET conversation_id = :id, #title = if_not_exists(#title, :title), \
                 created_at = if_not_exists(created_at, :created), #model = :model, \
                 updated_at = :now, last_charge = :charge ADD #messages :one",
            )
            .expression_attribute_names("#title", "title")
            .expression_attribute_names("#model", "model")
            .expression_attribute_names("#messages", "messages")
            .condition_expression("attribute_not_exists(last_charge) OR last_charge <> :charge")
            .expression_attribute_values(":id", s(id.as_str()))
            .expression_attribute_values(":title", s(title))
            .expression_attribute_values(":created", n(charge.opened_at))
            .expression_attribute_values(":model", s(model))
            .expression_attribute_values(":now", n(now_millis()))
            .expression_attribute_values(":charge", s(&charge.id))
            .expression_attribute_values(":one", n(1));
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?;
        Ok(())
    }

    /// The latest answered turns of a conversation, newest first: at most `turns` of
    /// them, and no more once `chars` characters are gathered. Usually one `Query`
    /// whatever the conversation's length: it reads from the newest end and stops.
    pub async fn recent_turns(
        &self,
        user_key: &str,
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
                .expression_attribute_values(":pk", user_pk(user_key))
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
        user_key: &str,
        limit: usize,
        after: Option<&ConversationsAfter>,
    ) -> Result<Page<ConversationRecord, ConversationsAfter>, Error> {
        let start = after.map(|a| {
            HashMap::from([
                (PK.to_owned(), user_pk(user_key)),
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
            .expression_attribute_values(":pk", user_pk(user_key))
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
        user_key: &str,
        id: &ConversationId,
        limit: usize,
        after: Option<&str>,
        newest_first: bool,
    ) -> Result<Page<ChatRecord, String>, Error> {
        let mut start = after.map(|charge| {
            HashMap::from([
                (PK.to_owned(), user_pk(user_key)),
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
                .expression_attribute_values(":pk", user_pk(user_key))
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
        user_key: &str,
        id: &ConversationId,
        title: &str,
    ) -> Result<Option<ConversationRecord>, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, conversation_sk(id))
            .update_expression("SET #title = :title")
            .expression_attribute_names("#title", "title")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":title", s(title))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        // A failed condition: there is no such conversation.
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?
            .and_then(|out| out.attributes)
            .as_ref()
            .map(conversation_record)
            .transpose()
    }

    /// Removes the text of every chat of a conversation, keeping each charge's record
    /// (cost, state, times, model, usage), then the conversation item, then the user's
    /// pointer to it. Every step may be repeated: a delete that stopped half-way is
    /// finished by the next one. Returns how many chats lost their text.
    pub async fn delete_conversation(
        &self,
        user_key: &str,
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
                .expression_attribute_values(":pk", user_pk(user_key))
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
                _ => break,
            }
        }
        let key = HashMap::from([
            (PK.to_owned(), user_pk(user_key)),
            (SK.to_owned(), conversation_sk(id)),
        ]);
        let delete = DeleteRequest::builder()
            .set_key(Some(key))
            .build()
            .map_err(Error::dynamo("build DeleteRequest"))?;
        self.batch_write(vec![WriteRequest::builder().delete_request(delete).build()])
            .await?;
        // A chat sent without a conversation must not continue the deleted one.
        let forget = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .update_expression("REMOVE last_conversation")
            .condition_expression("last_conversation.id = :id")
            .expression_attribute_values(":id", s(id.as_str()));
        // A failed condition: the pointer is on another conversation already.
        self.send_conditional("UpdateItem", || forget.clone().send())
            .await?;
        Ok(stripped)
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
