//! Conversations: which one a chat belongs to, what of it the model is told, and the
//! history a user can page through, rename and delete.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use std::time::Duration;

use super::{charges::write_window, outcome::Outcome};
use crate::{
    config::ConversationConfig,
    domain::{ConversationId, Title},
    store::{
        self, Account, ChatRecord, ConversationRecord, ConversationsAfter, OpenCharge, Page,
        PastTurn, Store, Tombstoned, now_millis,
    },
};

/// Which conversation a chat asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `{"message"}` alone: the latest conversation if it is recent, else a new one.
    Latest,
    /// `"conversation_id": null`: a new conversation.
    New,
    /// `"conversation_id": "<id>"`: that conversation, which must be the user's.
    Given(ConversationId),
}

/// The conversation a chat goes into, and what must be read about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub id: ConversationId,
    /// Its earlier turns are context (false for a new conversation).
    pub has_history: bool,
    /// It must be checked to exist and belong to the user.
    pub must_exist: bool,
}

/// The conversation's earlier turns to send with a new message: newest kept first,
/// at most `config.context_turns` of them and, after the newest, no more than
/// `config.context_chars` characters; returned oldest first, as the model reads them.
/// The newest turn is kept even if it alone is over the character budget (the message
/// it answers is capped already, and a reply without its question is worse).
pub fn context(newest_first: Vec<PastTurn>, config: &ConversationConfig) -> Vec<PastTurn> {
    let mut kept = Vec::new();
    let mut chars = 0;
    for turn in newest_first.into_iter().take(config.context_turns) {
        let size = turn.message.chars().count() + turn.response.chars().count();
        if !kept.is_empty() && chars + size > config.context_chars {
            break;
        }
        chars += size;
        kept.push(turn);
    }
    kept.reverse();
    kept
}

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("no such conversation")]
    NotFound,
    #[error("the cursor is not one this API gave out")]
    BadCursor,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Which end of a conversation a page of messages starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// From the first message on (the default).
    #[default]
    OldestFirst,
    /// From the latest message back: what a reader opening a conversation wants first.
    NewestFirst,
}

/// Opaque page cursors: base64url of where the last page ended. Anything not made
/// here is refused as a bad cursor, never passed to the store.
pub mod cursor {
    use super::*;

    pub fn conversations(after: &ConversationsAfter) -> String {
        URL_SAFE_NO_PAD.encode(format!("c1.{}.{}", after.updated_at, after.id))
    }

    pub fn parse_conversations(raw: &str) -> Result<ConversationsAfter, ConversationError> {
        let text = decode(raw)?;
        let rest = text
            .strip_prefix("c1.")
            .ok_or(ConversationError::BadCursor)?;
        let (at, id) = rest.split_once('.').ok_or(ConversationError::BadCursor)?;
        Ok(ConversationsAfter {
            updated_at: at.parse().map_err(|_| ConversationError::BadCursor)?,
            id: ConversationId::parse(id).map_err(|_| ConversationError::BadCursor)?,
        })
    }

    /// Where a page of messages ended; the cursor remembers which way the pages run, so
    /// an oldest-first cursor is not taken for a newest-first one.
    pub fn messages(after: &str, order: Order) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{after}", prefix(order)))
    }

    pub fn parse_messages(raw: &str, order: Order) -> Result<String, ConversationError> {
        let text = decode(raw)?;
        let id = text
            .strip_prefix(prefix(order))
            .ok_or(ConversationError::BadCursor)?;
        // Charge ids are UUIDs, like conversation ids.
        ConversationId::parse(id)
            .map(|id| id.as_str().to_owned())
            .map_err(|_| ConversationError::BadCursor)
    }

    fn prefix(order: Order) -> &'static str {
        match order {
            Order::OldestFirst => "m1.",
            Order::NewestFirst => "n1.",
        }
    }

    fn decode(raw: &str) -> Result<String, ConversationError> {
        if raw.len() > 200 {
            return Err(ConversationError::BadCursor);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('='))
            .map_err(|_| ConversationError::BadCursor)?;
        String::from_utf8(bytes).map_err(|_| ConversationError::BadCursor)
    }
}

/// The history rules over one store.
#[derive(Debug, Clone, Copy)]
pub struct Conversations<'a> {
    pub store: &'a Store,
    pub config: &'a ConversationConfig,
}

impl<'a> Conversations<'a> {
    pub fn new(store: &'a Store, config: &'a ConversationConfig) -> Self {
        Self { store, config }
    }

    /// Where a chat goes. `last` is the user's pointer to their latest conversation,
    /// from the user item the authentication read; the checks and the history read that
    /// a placement calls for run alongside the debit.
    pub fn place(&self, choice: Choice, last: Option<(ConversationId, u64)>) -> Placement {
        let fresh = || Placement {
            id: ConversationId::new(),
            has_history: false,
            must_exist: false,
        };
        match choice {
            Choice::New => fresh(),
            Choice::Given(id) => Placement {
                id,
                has_history: true,
                must_exist: true,
            },
            Choice::Latest => match last {
                Some((id, at))
                    if now_millis().saturating_sub(at)
                        < self.config.idle_window.as_millis() as u64 =>
                {
                    Placement {
                        id,
                        has_history: true,
                        must_exist: false,
                    }
                }
                _ => fresh(),
            },
        }
    }

    /// The context for the next turn of `id` (one `Query` from the newest end).
    pub async fn context(
        &self,
        account: &Account,
        id: &ConversationId,
    ) -> Result<Vec<PastTurn>, store::Error> {
        let newest_first = self
            .store
            .recent_turns(
                account,
                id,
                self.config.context_turns,
                self.config.context_chars,
            )
            .await?;
        Ok(context(newest_first, self.config))
    }

    /// The default title of a conversation whose first message is `message`.
    pub fn default_title(message: &str) -> Title {
        Title::from_message(message)
    }

    pub async fn list(
        &self,
        account: &Account,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<ConversationRecord>, Option<String>), ConversationError> {
        let after = cursor.map(cursor::parse_conversations).transpose()?;
        let Page { items, next } = self
            .store
            .conversations(account, limit, after.as_ref())
            .await?;
        Ok((items, next.as_ref().map(cursor::conversations)))
    }

    /// A conversation's answered messages, oldest first. The conversation is checked
    /// alongside the first page's read.
    pub async fn messages(
        &self,
        account: &Account,
        id: &ConversationId,
        limit: usize,
        cursor: Option<&str>,
        order: Order,
    ) -> Result<(Vec<ChatRecord>, Option<String>), ConversationError> {
        let after = cursor
            .map(|c| cursor::parse_messages(c, order))
            .transpose()?;
        let newest_first = order == Order::NewestFirst;
        let (exists, page) = tokio::join!(
            self.store.conversation(account, id),
            self.store
                .messages(account, id, limit, after.as_deref(), newest_first),
        );
        if exists?.is_none() {
            return Err(ConversationError::NotFound);
        }
        let Page { items, next } = page?;
        Ok((items, next.as_deref().map(|n| cursor::messages(n, order))))
    }

    pub async fn rename(
        &self,
        account: &Account,
        id: &ConversationId,
        title: &Title,
    ) -> Result<ConversationRecord, ConversationError> {
        self.store
            .rename_conversation(account, id, title.as_str())
            .await?
            .ok_or(ConversationError::NotFound)
    }

    /// Deletes a conversation: it is marked deleted at once (so that a chat still
    /// running in it cannot bring it back), then its chats lose their text (the charges'
    /// records stay for the books), its idempotency keys stop replaying that text, and
    /// the user's pointer to it goes. A chat that settled in it just before may still be
    /// writing its record: the text is removed only once that is over (a wait, at most
    /// the write window, only when the conversation was answered that recently).
    ///
    /// Asked again, a deletion finishes whatever an earlier one left undone, and is a
    /// `NotFound` all the same.
    pub async fn delete(
        &self,
        account: &Account,
        id: &ConversationId,
    ) -> Result<(), ConversationError> {
        let by = uuid::Uuid::now_v7().to_string();
        let Some(tombstone) = self.store.tombstone_conversation(account, id, &by).await? else {
            return Err(ConversationError::NotFound);
        };
        let wait = self.settling(account, id, &tombstone).await?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let replay = Outcome::deleted(id.as_str());
        let (stripped, keys, forgot) = tokio::join!(
            self.store.strip_conversation(account, id),
            self.store
                .close_idempotency_keys(account, id.as_str(), &replay),
            self.store.forget_conversation(account, id),
        );
        let (stripped, keys) = (stripped?, keys?);
        forgot?;
        tracing::info!(user = %account.user_key, conversation = %id, stripped, keys, waited_ms = wait.as_millis() as u64, "conversation deleted");
        match tombstone.now {
            true => Ok(()),
            false => Err(ConversationError::NotFound),
        }
    }
}

impl Conversations<'_> {
    /// How long a deletion must wait before it strips the conversation's chats: until
    /// the chat that settled in it last has finished writing its record, if that may
    /// not have happened yet. Its record already there is the usual case, and no wait.
    async fn settling(
        &self,
        account: &Account,
        id: &ConversationId,
        tombstone: &Tombstoned,
    ) -> Result<Duration, store::Error> {
        let left = tombstone.settling_until.saturating_sub(now_millis());
        let Some(charge) = tombstone.last_charge.as_ref().filter(|_| left > 0) else {
            return Ok(Duration::ZERO);
        };
        let last = OpenCharge {
            id: charge.clone(),
            account: account.clone(),
            conversation_id: id.as_str().to_owned(),
            cost: 0,
            opened_at: 0,
        };
        if self.store.chat(&last).await?.is_some() {
            return Ok(Duration::ZERO);
        }
        let window = write_window(&self.store.retry_policy());
        Ok(Duration::from_millis(left).min(window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(i: usize, size: usize) -> PastTurn {
        PastTurn {
            message: format!("q{i}"),
            response: "r".repeat(size.saturating_sub(format!("q{i}").len())),
        }
    }

    fn budget(turns: usize, chars: usize) -> ConversationConfig {
        ConversationConfig {
            context_turns: turns,
            context_chars: chars,
            ..Default::default()
        }
    }

    #[test]
    fn context_is_oldest_first_and_keeps_the_newest_turns() {
        let newest_first: Vec<_> = (0..30).rev().map(|i| turn(i, 10)).collect();
        let got = context(newest_first, &budget(20, 32_000));
        assert_eq!(got.len(), 20);
        assert_eq!(got.first().unwrap().message, "q10");
        assert_eq!(got.last().unwrap().message, "q29");
    }

    #[test]
    fn the_character_budget_trims_the_oldest_turns() {
        let newest_first: Vec<_> = (0..5).rev().map(|i| turn(i, 100)).collect();
        let got = context(newest_first, &budget(20, 250));
        let kept: Vec<_> = got.iter().map(|t| t.message.as_str()).collect();
        assert_eq!(kept, ["q3", "q4"]);
    }

    #[test]
    fn an_oversized_newest_turn_is_still_context_and_nothing_older_is() {
        let newest_first = vec![turn(1, 500), turn(0, 10)];
        let got = context(newest_first, &budget(20, 100));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, "q1");
        assert!(context(vec![turn(0, 10)], &budget(0, 100)).is_empty());
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let after = ConversationsAfter {
            updated_at: 1_795_514_400_000,
            id: ConversationId::new(),
        };
        let raw = cursor::conversations(&after);
        assert_eq!(cursor::parse_conversations(&raw).unwrap(), after);
        let charge = ConversationId::new().as_str().to_owned();
        assert_eq!(
            cursor::parse_messages(
                &cursor::messages(&charge, Order::OldestFirst),
                Order::OldestFirst
            )
            .unwrap(),
            charge
        );
        for bad in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &raw[..raw.len() - 3],
            &"A".repeat(500),
        ] {
            assert!(cursor::parse_conversations(bad).is_err(), "{bad:?}");
            assert!(
                cursor::parse_messages(bad, Order::OldestFirst).is_err(),
                "{bad:?}"
            );
        }
        // One kind of cursor is not the other.
        assert!(cursor::parse_messages(&raw, Order::OldestFirst).is_err());
    }
}
