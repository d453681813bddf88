//! DynamoDB access. One table, single-table design; every item's shape is defined
//! here and in the submodules, nowhere else.
//!
//! | item    | pk                  | sk             | attributes |
//! |---------|---------------------|----------------|------------|
//! | user    | `USER#<name key>`   | `PROFILE`      | username, account (id), password_hash, tokens, granted, spent, pending (map of open charges), settling_until, sessions (map: id → digest, created_at, last_used, expires_at, pw_checks, pw_held_until), cred_epoch, networks (map: network → last login), sockets (map: connection → until), chat_rate (map: minute → chats started), created_at, deleting |
//! | throttle | `THROTTLE#<kind>#<subject>[#<window>]` | `THROTTLE` | n, last_at, next_at (run counters), expires_at (TTL) |
//! | chat    | `ACCT#<account id>` | `CHAT#<conversation>#<charge uuidv7>`| conversation_id, message, response, model, cost, state, usage, finish_reason, balance, reason, created_at, settled_at |
//! | idempotency | `ACCT#<account id>` | `IDEM#<client key>` | state, fingerprint, owner (charge id), conversation, started_at, outcome, cancel (a client asked it to stop), expires_at (TTL) |
//! | ticket, socket | `TICKET#…`, `SOCKET#<connection>` | `TICKET`, `SOCKET` | see `store::sockets`: a WebSocket ticket, a connection's owner |
//! | conversation | `ACCT#<account id>` | `CONV#<conversation uuid>` | conversation_id, title, model, created_at, updated_at (index `Conversations`), messages, last_charge, settling_until; deleted: deleted_at, deleted_by, expires_at (TTL) instead of title…updated_at |
//!
//! The user item also keeps `last_conversation` {id, at}: the latest answered conversation.
//! Everything an account owns besides its user item lives under its own id
//! ([`Account::items_pk`]), not under its name: a name freed by a deletion can be taken
//! again, and nothing written late for the deleted account lands where its next owner
//! reads. Accounts made before ids keep theirs under `USER#<name key>`.

mod batch;
mod conversations;
mod credits;
mod idempotency;
mod retry;
mod sockets;
mod throttle;
mod users;

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_config::{SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_dynamodb::{Client, types::AttributeValue};

pub use conversations::{
    CONVERSATIONS_INDEX, ConversationRecord, ConversationsAfter, Page, PastTurn, Tombstoned,
    Touched,
};
pub use credits::{ChargeState, ChatOutcome, ChatRecord, Close, Debit, DebitGuard, OpenCharge};
pub use idempotency::{Claim, KeyOwner};
pub use retry::RetryPolicy;
pub use sockets::{SocketOwner, TakenTicket};
pub use throttle::Reservation;
pub use users::{Ledger, NewSession, PasswordChecks, Retired, SessionEntry, Tombstone, UserItem};

use crate::telemetry::BoxError;

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
    /// Conflicts, throttling or server errors outlasted the retries (or the time
    /// budget ran out): the request may succeed if tried again shortly.
    #[error("DynamoDB {op} kept failing transiently")]
    Unavailable {
        op: &'static str,
        #[source]
        source: Option<BoxError>,
    },
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
}

impl Error {
    /// Transient trouble that outlasted the retries: worth trying again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn dynamo<E>(op: &'static str) -> impl FnOnce(E) -> Self
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
    retry: RetryPolicy,
}

impl Store {
    /// The store every function uses: a DynamoDB client whose own retries are off (the
    /// store retries, see [`RetryPolicy`]) and whose every attempt has a time limit.
    pub fn connect(sdk: &SdkConfig, table: impl Into<String>, retry: RetryPolicy) -> Self {
        let config = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(retry.attempt_timeout)
                    .operation_timeout(retry.budget)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.into(),
            retry,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Every item `query` finds, page after page (consistent reads).
    pub(crate) async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, Error> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = query
                .clone()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let out = self
                .send("Query", || page.clone().send())
                .await
                .map_err(|f| f.into_error("Query"))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// The item at `pk`/`sk`, read consistently.
    pub(crate) async fn item(
        &self,
        pk: AttributeValue,
        sk: AttributeValue,
    ) -> Result<Option<Item>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        Ok(out.item)
    }

    /// How this store times and retries its calls.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

pub(crate) fn user_pk(user_key: &str) -> AttributeValue {
    AttributeValue::S(format!("USER#{user_key}"))
}

/// One account: the key of its user item (its lowercased name) and the id, made at
/// registration, that everything else it owns is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The lowercased name: the user item is `USER#<user_key>` / `PROFILE`.
    pub user_key: String,
    /// `None` for an account registered before accounts had ids.
    id: Option<String>,
}

impl Account {
    /// The account `id` of the name `user_key`; `id` as the user item keeps it (absent
    /// for accounts made before ids).
    pub fn new(user_key: impl Into<String>, id: Option<String>) -> Self {
        Self {
            user_key: user_key.into(),
            id,
        }
    }

    /// A new account's id: random, never reused.
    pub(crate) fn new_id() -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The partition of the user item.
    pub(crate) fn user_pk(&self) -> AttributeValue {
        user_pk(&self.user_key)
    }

    /// The condition, on its user item, that the name still belongs to this account (and
    /// not to a later one, registered after this one was deleted), and its value, if it
    /// needs one, as `:account`.
    pub(crate) fn still_owns_name(&self) -> (&'static str, Option<AttributeValue>) {
        match &self.id {
            Some(id) => ("account = :account", Some(s(id))),
            None => ("attribute_not_exists(account)", None),
        }
    }

    /// The partition of everything else the account owns (chats, conversations,
    /// idempotency records): `ACCT#<id>`. An account made before ids keeps them where
    /// they always were, beside its user item; the one rule covers both.
    pub(crate) fn items_pk(&self) -> AttributeValue {
        match &self.id {
            Some(id) => s(format!("{ACCOUNT_PREFIX}{id}")),
            None => self.user_pk(),
        }
    }
}

const ACCOUNT_PREFIX: &str = "ACCT#";

/// The sort key of a user item.
pub(crate) const PROFILE: &str = "PROFILE";

/// The partition of a deleted account's tombstone and anonymised charges.
pub(crate) fn deleted_pk(id: &str) -> AttributeValue {
    s(format!("DELETED#{id}"))
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
