//! What a chat turn produced: what its idempotency record keeps and a retry replays.
//! Kept apart from the chat turn itself because deleting a conversation rewrites its
//! keys' outcomes too.

use serde::{Deserialize, Serialize};

use crate::domain::Usage;

/// What a chat turn produced. This is what an idempotency record keeps and replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The model answered and the answer was paid for.
    Answered(Answer),
    /// The model would not answer this message (safety); nothing was charged.
    Refused { reason: String },
    /// The answer's conversation was deleted: its text is not kept, nor replayed. (The
    /// answer was paid for; a retry gets 404 for the conversation, and costs nothing.)
    ConversationDeleted { conversation_id: String },
}

impl Outcome {
    /// What is left to replay of a request whose conversation `id` was deleted, as an
    /// idempotency record stores it.
    pub fn deleted(id: &str) -> String {
        let outcome = Self::ConversationDeleted {
            conversation_id: id.to_owned(),
        };
        // A tagged enum of strings: serialising it cannot fail.
        serde_json::to_string(&outcome).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub message: String,
    pub response: String,
    /// The balance after this chat was paid.
    pub tokens_remaining: u64,
    pub conversation_id: String,
    pub model: String,
    pub cost: u64,
    pub usage: Usage,
    pub finish_reason: Option<String>,
}
