//! DynamoDB access. One table, single-table design; every item's shape is defined
//! here and in the submodules, nowhere else.
//!
//! | item    | pk                  | sk             | attributes |
//! |---------|---------------------|----------------|------------|
//! | user    | `USER#<name key>`   | `PROFILE`      | username, password_hash, tokens, granted, pending (map of open charges), created_at |
//! | session | `SESSION#<sha256>`  | `SESSION`      | user_key, expires_at (TTL), created_at |
//! | chat    | `USER#<name key>`   | `CHAT#<uuidv7>`| message, response, model, cost, state, usage, reason, created_at, settled_at |
//! | idempotency | `USER#<name key>` | `IDEM#<client key>` | state, fingerprint, started_at, status, body, balance, expires_at (TTL) |

mod credits;
mod idempotency;
mod sessions;
mod users;

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_sdk_dynamodb::{Client, types::AttributeValue};

pub use credits::{Answered, ChargeState, ChatRecord, Debit, OpenCharge};
pub use idempotency::{Claim, StoredResponse};
pub use sessions::Session;
pub use users::Ledger;
pub use users::UserCredentials;

use crate::error::BoxError;

/// Attribute names of the key schema and of the TTL. The table itself is defined in
/// `template.yaml` only; tests and local runs create theirs from it.
pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";

pub(crate) type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DynamoDB {op} failed")]
    Dynamo {
        op: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
}

impl Error {
    fn dynamo<E>(op: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| Self::Dynamo {
            op,
            source: Box::new(e),
        }
    }
}

/// The table and the client that reaches it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

pub(crate) fn user_pk(user_key: &str) -> AttributeValue {
    AttributeValue::S(format!("USER#{user_key}"))
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn get_s(item: &Item, name: &str) -> Result<String, Error> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(Error::Corrupt(format!("{name} is missing or not a string"))),
    }
}

pub(crate) fn get_opt_s(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

pub(crate) fn get_n(item: &Item, name: &str) -> Result<u64, Error> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| Error::Corrupt(format!("{name} is not a whole number: {v}"))),
        _ => Err(Error::Corrupt(format!("{name} is missing or not a number"))),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
