//! How credits move, item by item. Every change to a balance is one conditional
//! single-item write; nothing here reads a balance and writes it back, and no write to
//! the user item is a transaction (a transaction on the user item would conflict with
//! every parallel chat of that user on AWS).
//!
//! - [`Store::debit`]: one `UpdateItem` on the user item takes the cost if and only if
//!   `tokens >= cost`, and in the same write records the charge in the user's `pending`
//!   map. It returns the new balance and the other open charges.
//! - [`Store::record_chat`]: one `PutItem` of the chat item: the answer (or why there is
//!   none) made durable. For an answered chat this is what makes the charge owed.
//! - [`Store::close_charge`]: one `UpdateItem` on the user item removes the charge from
//!   `pending` and either adds its cost to `spent` (kept) or gives it back to `tokens`
//!   (refunded), if and only if the charge is still pending: a charge closes once.
//!
//! The service (`service::charges`) decides the order and what a failure means.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{
    Account, Error, Item, PK, PROFILE, SK, Store, get_n, get_opt_s, get_s, n, now_millis, s,
};
use crate::domain::Usage;

const CHAT_PREFIX: &str = "CHAT#";

/// A debit that is not yet closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCharge {
    /// A UUID v7: time-ordered.
    pub id: String,
    /// Whose: the user item holds the charge, the account's partition its chat item.
    pub account: Account,
    /// The conversation the chat belongs to: its chat item lives under it.
    pub conversation_id: String,
    pub cost: u64,
    /// Milliseconds since the Unix epoch.
    pub opened_at: u64,
}

impl OpenCharge {
    /// A charge still open `timeout` after it was taken belongs to a request that can no
    /// longer be running (the function's own timeout is shorter, which the
    /// configuration checks at cold start).
    pub fn is_abandoned(&self, now_millis: u64, timeout: std::time::Duration) -> bool {
        now_millis.saturating_sub(self.opened_at) > timeout.as_millis() as u64
    }

    fn chat_key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_owned(), self.account.items_pk()),
            (SK.to_owned(), chat_sk(&self.conversation_id, &self.id)),
        ])
    }
}

pub(crate) fn chat_sk(conversation_id: &str, charge_id: &str) -> AttributeValue {
    s(format!("{CHAT_PREFIX}{conversation_id}#{charge_id}"))
}

#[derive(Debug)]
pub enum Debit {
    /// The cost was taken; `balance` is what is left. `open` lists the user's other open
    /// charges.
    Debited { balance: u64, open: Vec<OpenCharge> },
    /// The balance is below the cost; nothing changed.
    Insufficient { balance: u64, open: Vec<OpenCharge> },
    /// No such user, or the account is being deleted.
    NoAccount,
    /// The session is gone or its secret does not match.
    SessionEnded,
    /// The session outlived its absolute or idle limit.
    SessionExpired,
    /// The user has `guard.max_in_flight` charges open already.
    TooManyInFlight { open: Vec<OpenCharge> },
    /// The user started `guard.max_per_window` chats this window already.
    RateExceeded,
}

/// What a debit checks besides the balance, in the same write: the session of the token
/// (so the chat needs no separate authentication for its charge to be safe), the chats in
/// flight and the chats per minute. Times in milliseconds.
#[derive(Debug, Clone)]
pub struct DebitGuard {
    pub session_id: String,
    /// SHA-256 of the token's secret.
    pub digest: String,
    pub now: u64,
    /// The session must have been used after this.
    pub idle_cutoff: u64,
    pub max_in_flight: u64,
    /// The current per-minute window and how many chats it allows.
    pub window: u64,
    pub max_per_window: u64,
    /// Windows of the `chat_rate` map that are over, to drop in the same write.
    pub stale_windows: Vec<u64>,
}

/// The user's open charges, from the `pending` map of a user item.
pub(crate) fn open_charges(account: &Account, item: &Item) -> Result<Vec<OpenCharge>, Error> {
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
                account: account.clone(),
                conversation_id: get_s(entry, "conversation")?,
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
    /// Answered and owed (paid once its charge is closed).
    Completed,
    /// No answer; the credits go back.
    Refunded,
}

impl ChargeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Refunded => "refunded",
        }
    }

    fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "completed" => Ok(Self::Completed),
            "refunded" => Ok(Self::Refunded),
            other => Err(Error::Corrupt(format!("unknown chat state {other:?}"))),
        }
    }
}

/// A stored chat: its question, its answer (or why there is none) and its charge.
#[derive(Debug, Clone)]
pub struct ChatRecord {
    pub id: String,
    pub conversation_id: String,
    pub message: String,
    pub response: Option<String>,
    pub model: Option<String>,
    pub cost: u64,
    pub state: ChargeState,
    pub usage: Option<Usage>,
    pub reason: Option<String>,
    /// The balance the answer reported (answered chats).
    pub balance: Option<u64>,
    /// Why the model's answer ended (`STOP`, `MAX_TOKENS`, `SAFETY`…, or `CANCELLED`
    /// when the client stopped it), where known.
    pub finish_reason: Option<String>,
    pub created_at: u64,
    pub settled_at: u64,
}

/// What a chat item says, written once per charge.
#[derive(Debug, Clone, Copy)]
pub enum ChatOutcome<'a> {
    Answered {
        message: &'a str,
        response: &'a str,
        model: &'a str,
        usage: Usage,
        /// The balance reported with the answer.
        balance: u64,
        /// Why the answer ended; anything but a natural end means it was cut short and
        /// `response` holds the words the client received.
        finish_reason: Option<&'a str>,
    },
    Refunded {
        /// `None` for an abandoned charge, whose message died with its process.
        message: Option<&'a str>,
        reason: &'a str,
    },
}

/// What closing a charge does with its credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Settle: the credits stay spent.
    Keep,
    /// Refund: the credits go back to the balance.
    GiveBack,
}

impl Store {
    /// Takes `charge.cost` credits if the balance covers them, recording the charge as
    /// pending in the same write.
    pub async fn debit(&self, charge: &OpenCharge, guard: &DebitGuard) -> Result<Debit, Error> {
        let entry = AttributeValue::M(HashMap::from([
            ("cost".to_owned(), n(charge.cost)),
            ("opened_at".to_owned(), n(charge.opened_at)),
            ("conversation".to_owned(), s(&charge.conversation_id)),
        ]));
        let mut expression = "SET tokens = tokens - :cost, pending.#charge = :entry, \
             sessions.#sid.last_used = :now, \
             chat_rate.#w = if_not_exists(chat_rate.#w, :zero) + :one"
            .to_owned();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, charge.account.user_pk())
            .key(SK, s(PROFILE));
        if !guard.stale_windows.is_empty() {
            let mut paths = Vec::new();
            for (i, w) in guard.stale_windows.iter().enumerate() {
                update = update.expression_attribute_names(format!("#old{i}"), w.to_string());
                paths.push(format!("chat_rate.#old{i}"));
            }
            expression.push_str(&format!(" REMOVE {}", paths.join(", ")));
        }
        let update = update
            .update_expression(expression)
            // `attribute_not_exists(pending.#charge)`: a retry of a debit that landed
            // must not take the cost twice (it fails here and finds its own entry).
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(deleting) \
                 AND tokens >= :cost AND attribute_not_exists(pending.#charge) \
                 AND sessions.#sid.digest = :digest AND sessions.#sid.expires_at > :now \
                 AND sessions.#sid.last_used > :idle \
                 AND size(pending) < :in_flight \
                 AND (attribute_not_exists(chat_rate.#w) OR chat_rate.#w < :per_window)",
            )
            .expression_attribute_names("#charge", &charge.id)
            .expression_attribute_names("#sid", &guard.session_id)
            .expression_attribute_names("#w", guard.window.to_string())
            .expression_attribute_values(":cost", n(charge.cost))
            .expression_attribute_values(":entry", entry)
            .expression_attribute_values(":digest", s(&guard.digest))
            .expression_attribute_values(":now", n(guard.now))
            .expression_attribute_values(":idle", n(guard.idle_cutoff))
            .expression_attribute_values(":in_flight", n(guard.max_in_flight))
            .expression_attribute_values(":per_window", n(guard.max_per_window))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let user = &charge.account;
        let debited = |item: &Item| -> Result<Debit, Error> {
            let mut open = open_charges(user, item)?;
            open.retain(|c| c.id != charge.id);
            Ok(Debit::Debited {
                balance: get_n(item, "tokens")?,
                open,
            })
        };
        match self.send("UpdateItem", || update.clone().send()).await {
            Ok(out) => debited(&out.attributes.unwrap_or_default()),
            Err(failure) => match failure.service_error("UpdateItem")? {
                UpdateItemError::ConditionalCheckFailedException(e) => match e.item {
                    None => Ok(Debit::NoAccount),
                    Some(item) if has_pending(&item, &charge.id) => debited(&item),
                    Some(item) => refusal(user, &item, guard, charge.cost),
                },
                e => Err(Error::dynamo("UpdateItem")(e)),
            },
        }
    }

    /// Writes the chat item of `charge`. `Ok(false)`: it was already written (by this
    /// request's own earlier attempt, or by recovery), and nothing changed.
    pub async fn record_chat(
        &self,
        charge: &OpenCharge,
        outcome: ChatOutcome<'_>,
    ) -> Result<bool, Error> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(chat_item(charge, outcome)))
            .condition_expression("attribute_not_exists(pk)");
        Ok(self
            .send_conditional("PutItem", || put.clone().send())
            .await?
            .is_some())
    }

    /// Keeps `charge`'s chat item without its text (its conversation was deleted while
    /// it ran): writes it so if it is not there yet, so that the record with the text
    /// can no longer land, and otherwise removes the text from it.
    pub async fn record_chat_without_text(
        &self,
        charge: &OpenCharge,
        outcome: ChatOutcome<'_>,
    ) -> Result<(), Error> {
        let mut item = chat_item(charge, outcome);
        for attr in ["message", "response"] {
            item.remove(attr);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        if self
            .send_conditional("PutItem", || put.clone().send())
            .await?
            .is_some()
        {
            return Ok(());
        }
        let strip = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(charge.chat_key()))
            .update_expression("REMOVE message, #response")
            .expression_attribute_names("#response", "response")
            .condition_expression("attribute_exists(pk)");
        self.send_conditional("UpdateItem", || strip.clone().send())
            .await?;
        Ok(())
    }

    /// Records `charge` as refunded for `reason`, over an answer's record if one landed
    /// (its charge was refunded, so that answer was never given). Any answer record
    /// arriving later finds this one and changes nothing.
    pub async fn withdraw_answer(
        &self,
        charge: &OpenCharge,
        message: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let item = chat_item(
            charge,
            ChatOutcome::Refunded {
                message: Some(message),
                reason,
            },
        );
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #state = :completed")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":completed", s(ChargeState::Completed.as_str()));
        // A failed condition: it says refunded already (this request's earlier attempt).
        self.send_conditional("PutItem", || put.clone().send())
            .await?;
        Ok(())
    }

    /// Whether `charge` is still pending, in one consistent read of the user item.
    pub async fn is_open(&self, charge: &OpenCharge) -> Result<bool, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, charge.account.user_pk())
            .key(SK, s(PROFILE))
            .projection_expression("pending.#charge")
            .expression_attribute_names("#charge", &charge.id)
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        Ok(out.item.is_some_and(|item| has_pending(&item, &charge.id)))
    }

    /// Closes `charge`: removes it from `pending` and keeps or gives back its cost, if
    /// it is still pending. `Ok(false)`: it was no longer pending, and nothing changed.
    ///
    /// `settling_until` (millis) is when the closing request's last write for this charge
    /// is over (see `Charges::write_window`): kept on the user item, it tells an account
    /// deletion how long records may still arrive.
    pub async fn close_charge(
        &self,
        charge: &OpenCharge,
        close: Close,
        settling_until: u64,
    ) -> Result<bool, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, charge.account.user_pk())
            .key(SK, s(PROFILE))
            .update_expression(match close {
                // The answered conversation becomes the one a chat without a
                // conversation id continues.
                Close::Keep => {
                    "ADD spent :cost REMOVE pending.#charge \
                     SET last_conversation = :last, settling_until = :until"
                }
                Close::GiveBack => {
                    "ADD tokens :cost REMOVE pending.#charge SET settling_until = :until"
                }
            })
            .condition_expression("attribute_exists(pending.#charge)")
            .expression_attribute_names("#charge", &charge.id)
            .expression_attribute_values(":cost", n(charge.cost))
            .expression_attribute_values(":until", n(settling_until));
        let update = match close {
            Close::Keep => update.expression_attribute_values(
                ":last",
                AttributeValue::M(HashMap::from([
                    ("id".to_owned(), s(&charge.conversation_id)),
                    ("at".to_owned(), n(now_millis())),
                ])),
            ),
            Close::GiveBack => update,
        };
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// The states of the chat items of `charges` (one consistent `BatchGetItem`);
    /// a charge with no chat item is absent from the map.
    pub async fn chat_states(
        &self,
        charges: &[OpenCharge],
    ) -> Result<HashMap<String, ChargeState>, Error> {
        let mut states = HashMap::new();
        // BatchGetItem takes up to 100 keys; open charges are few.
        for chunk in charges.chunks(100) {
            let mut keys = KeysAndAttributes::builder()
                .consistent_read(true)
                .projection_expression("sk, #state")
                .expression_attribute_names("#state", "state");
            for charge in chunk {
                keys = keys.keys(charge.chat_key());
            }
            let keys = keys.build().map_err(Error::dynamo("build BatchGetItem"))?;
            let mut request = HashMap::from([(self.table.clone(), keys)]);
            // Unprocessed keys (throttling inside the batch) are asked again.
            while !request.is_empty() {
                let get = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(request.clone()));
                let out = self
                    .send("BatchGetItem", || get.clone().send())
                    .await
                    .map_err(|f| f.into_error("BatchGetItem"))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let sk = get_s(&item, SK)?;
                    let id = sk.rsplit('#').next().unwrap_or_default().to_owned();
                    states.insert(id, ChargeState::parse(&get_s(&item, "state")?)?);
                }
                request = out.unprocessed_keys.unwrap_or_default();
            }
        }
        Ok(states)
    }

    /// The chat item of `charge`, if it was written.
    pub async fn chat(&self, charge: &OpenCharge) -> Result<Option<ChatRecord>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(charge.chat_key()))
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        out.item.as_ref().map(chat_record).transpose()
    }

    /// The chats of the account that holds the name `user_key` now (none if no account
    /// does): its user item says where they are.
    pub async fn chats(&self, user_key: &str) -> Result<Vec<ChatRecord>, Error> {
        match self.user(user_key).await? {
            Some(user) => self.chats_of(&user.account).await,
            None => Ok(Vec::new()),
        }
    }

    /// The chats of `account`, oldest conversation first.
    pub async fn chats_of(&self, account: &Account) -> Result<Vec<ChatRecord>, Error> {
        self.chats_under(account.items_pk()).await
    }

    /// The anonymised chats of the deleted account `id`.
    pub async fn deleted_chats(&self, id: &str) -> Result<Vec<ChatRecord>, Error> {
        self.chats_under(super::deleted_pk(id)).await
    }

    async fn chats_under(&self, pk: AttributeValue) -> Result<Vec<ChatRecord>, Error> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :chat)")
            .expression_attribute_values(":pk", pk)
            .expression_attribute_values(":chat", s(CHAT_PREFIX));
        self.query_all(query)
            .await?
            .iter()
            .map(chat_record)
            .collect()
    }
}

/// Which part of a debit's condition failed, from the item as it was.
fn refusal(user: &Account, item: &Item, guard: &DebitGuard, cost: u64) -> Result<Debit, Error> {
    if item.contains_key("deleting") {
        return Ok(Debit::NoAccount);
    }
    let session = match item.get("sessions") {
        Some(AttributeValue::M(sessions)) => match sessions.get(&guard.session_id) {
            Some(AttributeValue::M(session)) => Some(session),
            _ => None,
        },
        _ => None,
    };
    let Some(session) = session.filter(|s| get_s(s, "digest").ok() == Some(guard.digest.clone()))
    else {
        return Ok(Debit::SessionEnded);
    };
    if get_n(session, "expires_at")? <= guard.now
        || get_n(session, "last_used")? <= guard.idle_cutoff
    {
        return Ok(Debit::SessionExpired);
    }
    let open = open_charges(user, item)?;
    if open.len() as u64 >= guard.max_in_flight {
        return Ok(Debit::TooManyInFlight { open });
    }
    let in_window = match item.get("chat_rate") {
        Some(AttributeValue::M(rate)) => match rate.get(&guard.window.to_string()) {
            Some(AttributeValue::N(count)) => count.parse().unwrap_or(u64::MAX),
            _ => 0,
        },
        _ => 0,
    };
    if in_window >= guard.max_per_window {
        return Ok(Debit::RateExceeded);
    }
    let balance = get_n(item, "tokens")?;
    if balance < cost {
        return Ok(Debit::Insufficient { balance, open });
    }
    Err(Error::Corrupt(
        "a debit's condition failed for no reason the item shows".into(),
    ))
}

/// The chat item of `charge` saying `outcome`.
fn chat_item(charge: &OpenCharge, outcome: ChatOutcome<'_>) -> Item {
    let mut item = charge.chat_key();
    item.extend([
        ("conversation_id".to_owned(), s(&charge.conversation_id)),
        ("cost".to_owned(), n(charge.cost)),
        ("created_at".to_owned(), n(charge.opened_at)),
        ("settled_at".to_owned(), n(now_millis())),
    ]);
    match outcome {
        ChatOutcome::Answered {
            message,
            response,
            model,
            usage,
            balance,
            finish_reason,
        } => {
            item.extend([
                ("state".to_owned(), s(ChargeState::Completed.as_str())),
                ("message".to_owned(), s(message)),
                ("response".to_owned(), s(response)),
                ("model".to_owned(), s(model)),
                ("usage".to_owned(), usage_value(&usage)),
                ("balance".to_owned(), n(balance)),
            ]);
            if let Some(reason) = finish_reason {
                item.insert("finish_reason".to_owned(), s(reason));
            }
        }
        ChatOutcome::Refunded { message, reason } => item.extend([
            ("state".to_owned(), s(ChargeState::Refunded.as_str())),
            ("message".to_owned(), s(message.unwrap_or(""))),
            ("reason".to_owned(), s(reason)),
        ]),
    }
    item
}

fn has_pending(item: &Item, charge_id: &str) -> bool {
    matches!(item.get("pending"), Some(AttributeValue::M(p)) if p.contains_key(charge_id))
}

fn usage_value(usage: &Usage) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("prompt_tokens".to_owned(), n(usage.prompt_tokens)),
        ("response_tokens".to_owned(), n(usage.response_tokens)),
        ("thoughts_tokens".to_owned(), n(usage.thoughts_tokens)),
        ("total_tokens".to_owned(), n(usage.total_tokens)),
    ]))
}

pub(crate) fn chat_record(item: &Item) -> Result<ChatRecord, Error> {
    let sk = get_s(item, SK)?;
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
        id: sk.rsplit('#').next().unwrap_or_default().to_owned(),
        conversation_id: get_s(item, "conversation_id")?,
        message: get_opt_s(item, "message").unwrap_or_default(),
        response: get_opt_s(item, "response"),
        model: get_opt_s(item, "model"),
        cost: get_n(item, "cost")?,
        state: ChargeState::parse(&get_s(item, "state")?)?,
        usage,
        reason: get_opt_s(item, "reason"),
        balance: item
            .contains_key("balance")
            .then(|| get_n(item, "balance"))
            .transpose()?,
        finish_reason: get_opt_s(item, "finish_reason"),
        created_at: get_n(item, "created_at")?,
        settled_at: get_n(item, "settled_at")?,
    })
}
