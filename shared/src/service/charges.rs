//! The charge lifecycle: hold, then settle or refund. Every entry point that spends
//! credits (buffered chat, streamed chat) goes through here; none of it knows HTTP.
//!
//! - **Hold** ([`Charges::hold`]): the debit, one conditional write that takes the cost
//!   only if the balance covers it and records the charge as pending.
//! - **Settle** ([`Charges::settle`]), once the model answered: the chat item with the
//!   answer and the close of the charge (cost kept), written side by side. The answer
//!   counts as given once either write landed: the chat item makes it durable, the close
//!   makes it paid. If neither landed the caller must not hand the answer out.
//! - **Refund** ([`Charges::refund`]), when the model failed: the close (cost given back)
//!   and the chat item saying why, side by side.
//! - **What an answer costs** ([`Ending::is_charged`]): the one rule for every entry
//!   point, decided here and nowhere else.
//! - **Recovery** ([`Charges::recover`]): a charge still pending after the charge timeout
//!   belongs to a request that is no longer running. If its chat item says it was
//!   answered it is settled, otherwise refunded. It runs alongside the model call of the
//!   user's next chat, so it costs that chat no time.
//!
//! Every store call retries transient failures within its budget (see
//! `store::RetryPolicy`); what reaches this layer as an error outlasted that.

use std::time::Duration;

use crate::{
    domain::{ConversationId, Usage},
    store::{
        self, ChargeState, ChatOutcome, Close, Debit, DebitGuard, OpenCharge, RetryPolicy, Store,
        Touched, UserItem, now_millis,
    },
    telemetry::{
        Chain,
        metrics::{self, Metric},
    },
};

/// Why an abandoned charge was refunded.
pub const ABANDONED: &str = "abandoned: the request stopped before its charge was settled";

/// Why an answer was refunded that the store could not settle.
pub const WITHHELD: &str = "withheld: the answer could not be stored, so it was not given";

#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("not enough credits: {cost} needed, {balance} held")]
    Insufficient { balance: u64, cost: u64 },
    #[error("no such account")]
    NoAccount,
    /// The token's session ended (or never was): refused before any credit moved.
    #[error("the session has ended")]
    SessionEnded { expired: bool },
    #[error("too many chats in flight")]
    TooManyInFlight,
    #[error("too many chats this minute")]
    RateExceeded,
    /// The answer could not be settled, so it was withheld and its charge refunded:
    /// certainly not charged.
    #[error("the answer could not be stored; it was withheld and refunded")]
    Withheld(#[source] store::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Credits held for one chat.
#[derive(Debug, Clone)]
pub struct Hold {
    pub charge: OpenCharge,
    /// The balance right after the debit.
    pub balance: u64,
    /// The user's charges found abandoned by the debit, for [`Charges::recover`].
    pub abandoned: Vec<OpenCharge>,
}

/// How a turn's answer ended, as far as what it costs goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The model finished its answer (`STOP`, or `MAX_TOKENS`: the output cap is the
    /// answer's length, not a failure).
    Finished,
    /// The model stopped, or would not start, for a reason the prompt caused: a safety
    /// filter, recitation, a blocklist, prohibited content, personal data (`SAFETY`,
    /// `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`…), or a blocked prompt.
    StoppedByPrompt,
    /// The client asked the turn to stop.
    Cancelled,
    /// Gemini or this service failed: an error status, a dropped or stalled stream, a
    /// timeout, a malformed answer, a store outage.
    Failed,
}

impl Ending {
    /// The rule: words handed out are paid for, unless the failure was Gemini's or
    /// ours; nothing handed out costs nothing. `words_out`: the client has received
    /// some of the answer already (a streamed turn's deltas). A finished answer is about
    /// to be handed out whole, so it is charged either way.
    ///
    /// A buffered (JSON) turn hands nothing out before the model's reply is complete, so
    /// a reply that stopped for the prompt's sake is withheld and refunded, even when
    /// Gemini sent some text with its stop: the same rule, applied before any word left.
    pub fn is_charged(self, words_out: bool) -> bool {
        match self {
            Self::Finished => true,
            Self::StoppedByPrompt | Self::Cancelled => words_out,
            Self::Failed => false,
        }
    }
}

/// How long after a charge is closed its request may still write what goes with it
/// (the chat item, the conversation, a refund's reason): a settle's three writes take at
/// most one store budget, and whatever they call for next one more; a refund's or a
/// recovery's record follows its close within the same two. One more budget covers
/// closes that land out of order (each writes its own deadline, the last one landing
/// wins), and one attempt's timeout the write last sent. Deletions wait this long
/// before they look for records that arrived late.
pub fn write_window(retry: &RetryPolicy) -> Duration {
    retry.budget * 3 + retry.attempt_timeout
}

/// What became of a settled answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Paid, or durable and owed, and kept in its conversation.
    Kept,
    /// Paid, or durable and owed; its conversation was deleted while the chat ran, so
    /// the answer is given but not kept (its record has no text).
    ConversationDeleted,
}

/// What the model gave back, to be kept with the chat.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub message: &'a str,
    pub response: &'a str,
    pub model: &'a str,
    pub usage: Usage,
    /// The balance the answer reports.
    pub balance: u64,
    /// The conversation's title, should this answer be its first.
    pub title: &'a str,
    /// Why the answer ended; for an answer cut short, why it stopped.
    pub finish_reason: Option<&'a str>,
}

/// The charge rules, over one store.
#[derive(Debug, Clone, Copy)]
pub struct Charges<'a> {
    store: &'a Store,
    /// When a pending charge counts as abandoned.
    timeout: Duration,
}

impl<'a> Charges<'a> {
    pub fn new(store: &'a Store, timeout: Duration) -> Self {
        Self { store, timeout }
    }

    /// Takes the charge's cost. A debit refused for want of credits is tried once more
    /// if recovering the user's abandoned charges gave some back.
    /// The same write checks the session and the limits in `guard`; a debit refused for
    /// too many chats in flight is tried once more if some of them were abandoned.
    pub async fn hold(&self, charge: OpenCharge, guard: &DebitGuard) -> Result<Hold, ChargeError> {
        let mut recovered = false;
        loop {
            match self.store.debit(&charge, guard).await? {
                Debit::Debited { balance, open } => {
                    let abandoned = self.abandoned(open);
                    return Ok(Hold {
                        charge,
                        balance,
                        abandoned,
                    });
                }
                Debit::Insufficient { balance, open } => {
                    let back = match recovered {
                        true => 0,
                        false => self.recover(&self.abandoned(open)).await,
                    };
                    if back == 0 {
                        return Err(ChargeError::Insufficient {
                            balance,
                            cost: charge.cost,
                        });
                    }
                    recovered = true;
                }
                Debit::NoAccount => return Err(ChargeError::NoAccount),
                Debit::SessionEnded => return Err(ChargeError::SessionEnded { expired: false }),
                Debit::SessionExpired => return Err(ChargeError::SessionEnded { expired: true }),
                Debit::RateExceeded => return Err(ChargeError::RateExceeded),
                Debit::TooManyInFlight { open } => {
                    let back = match recovered {
                        true => 0,
                        false => {
                            let abandoned = self.abandoned(open);
                            let count = abandoned.len();
                            self.recover(&abandoned).await;
                            count
                        }
                    };
                    if back == 0 {
                        return Err(ChargeError::TooManyInFlight);
                    }
                    recovered = true;
                }
            }
        }
    }

    /// The model answered: make the answer durable and the charge paid.
    ///
    /// The chat item, the close and the conversation go side by side. What they call for
    /// next (another try at the chat item, or finding out what happened when neither was
    /// seen to land) shares one more store budget, so that a settle's writes are over
    /// within two budgets of its start.
    ///
    /// `Ok`: the answer is paid, or durable and owed: hand it out. `Err(Withheld)`: it was
    /// not, and now never can be: the charge is refunded. `Err(Store)`: the store kept
    /// failing, and what became of the charge is not known yet (recovery decides it by
    /// the chat item).
    pub async fn settle(&self, hold: &Hold, answer: Answered<'_>) -> Result<Settled, ChargeError> {
        let charge = &hold.charge;
        let record = ChatOutcome::Answered {
            message: answer.message,
            response: answer.response,
            model: answer.model,
            usage: answer.usage,
            balance: answer.balance,
            finish_reason: answer.finish_reason,
        };
        let until = self.settling_until();
        let (recorded, closed, touched) = tokio::join!(
            self.store.record_chat(charge, record),
            self.store.close_charge(charge, Close::Keep, until),
            self.store
                .touch_conversation(charge, answer.title, answer.model, until),
        );
        let deleted = match touched {
            Ok(touched) => touched == Touched::Deleted,
            Err(e) => {
                // The answer stands; only the conversation's listing lags.
                tracing::warn!(charge = %charge.id, error = %Chain(&e), "conversation not updated");
                false
            }
        };
        let next = async {
            match (recorded, closed) {
                (Ok(_), Ok(_)) => Ok(()),
                (Err(_), Ok(_)) => {
                    // Paid: the answer goes out. Its record gets another try, since the
                    // history (and the audit) need it; only a long outage loses it.
                    if let Err(e) = self.store.record_chat(charge, record).await {
                        tracing::error!(charge = %charge.id, error = %Chain(&e), "answer paid but not stored");
                    }
                    Ok(())
                }
                (Ok(_), Err(e)) => {
                    // Durable and owed: recovery closes it as kept.
                    tracing::warn!(charge = %charge.id, error = %Chain(&e), "answer stored; charge left for recovery to settle");
                    Ok(())
                }
                (Err(_), Err(e)) => self.decide(charge, record, answer.message, e).await,
            }?;
            if !deleted {
                return Ok(Settled::Kept);
            }
            // The conversation was deleted while this chat ran: the answer is paid for
            // and given, but not kept, and a chat sent without a conversation must not
            // continue the deleted one.
            let id = ConversationId::from_stored(charge.conversation_id.clone());
            let (stripped, forgot) = tokio::join!(
                self.store.record_chat_without_text(charge, record),
                self.store.forget_conversation(&charge.account, &id),
            );
            if let Err(e) = stripped.and(forgot) {
                tracing::error!(charge = %charge.id, error = %Chain(&e), "answer of a deleted conversation not stripped");
            }
            Ok(Settled::ConversationDeleted)
        };
        let budget = self.store.retry_policy().budget;
        tokio::time::timeout(budget, next)
            .await
            .unwrap_or_else(|_| {
                Err(ChargeError::Store(store::Error::Unavailable {
                    op: "settle",
                    source: None,
                }))
            })
    }

    /// Neither settle write was seen to land, yet either may have: an attempt applied
    /// while its answer was lost, or one that lands after the retries gave up. Before
    /// the client is told anything, find out, and make the outcome final:
    /// - the answer is on record (a `completed` chat item): durable and owed; hand it out;
    /// - the charge is closed: its close landed, so it is paid; hand the answer out,
    ///   recording it if it is missing;
    /// - neither: refund the charge now (a late close then finds it closed and changes
    ///   nothing) and make the chat item say so (a late answer record then finds it there,
    ///   or is overwritten): withheld, and never charged.
    ///
    /// Consistent reads alone would not do: a write still in flight could land after
    /// them. The refund's close is the decision, since a charge closes once.
    async fn decide(
        &self,
        charge: &OpenCharge,
        record: ChatOutcome<'_>,
        message: &str,
        cause: store::Error,
    ) -> Result<(), ChargeError> {
        let (stored, open) = tokio::join!(self.store.chat(charge), self.store.is_open(charge));
        if stored?.is_some_and(|r| r.state == ChargeState::Completed) {
            tracing::warn!(charge = %charge.id, "settle writes failed, but the answer was on record: given");
            return Ok(());
        }
        let paid = match open? {
            false => true,
            true => {
                !self
                    .store
                    .close_charge(charge, Close::GiveBack, self.settling_until())
                    .await?
            }
        };
        if paid {
            // The close (keeping the credits) landed after all: the answer was paid for.
            if let Err(e) = self.store.record_chat(charge, record).await {
                tracing::error!(charge = %charge.id, error = %Chain(&e), "answer paid but not stored");
            }
            tracing::warn!(charge = %charge.id, "settle writes failed, but the charge was closed: given");
            return Ok(());
        }
        tracing::warn!(charge = %charge.id, error = %Chain(&cause), "settle writes failed; refunded, the answer withheld");
        if let Err(e) = self.store.withdraw_answer(charge, message, WITHHELD).await {
            // The charge is refunded; only an answer record landing later could now say
            // otherwise, and the audit would show it.
            tracing::error!(charge = %charge.id, error = %Chain(&e), "withheld answer not recorded as refunded");
        }
        Err(ChargeError::Withheld(cause))
    }

    /// The chat stopped before the model was asked (its conversation is not the
    /// user's): give the credits back, leaving no chat item. `false`: the close failed
    /// and recovery refunds it.
    pub async fn cancel(&self, hold: &Hold) -> bool {
        match self
            .store
            .close_charge(&hold.charge, Close::GiveBack, self.settling_until())
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(charge = %hold.charge.id, error = %Chain(&e), "cancel failed; recovery will refund");
                false
            }
        }
    }

    /// The model failed: give the credits back and keep the reason. A close that fails
    /// here is left to recovery, which refunds it too: `Ok(false)` says so.
    pub async fn refund(&self, hold: &Hold, message: &str, reason: &str) -> bool {
        let charge = &hold.charge;
        let record = ChatOutcome::Refunded {
            message: Some(message),
            reason,
        };
        let (closed, recorded) = tokio::join!(
            self.store
                .close_charge(charge, Close::GiveBack, self.settling_until()),
            self.store.record_chat(charge, record),
        );
        if let Err(e) = recorded {
            tracing::warn!(charge = %charge.id, error = %Chain(&e), "refund reason not stored");
        }
        match closed {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(charge = %charge.id, error = %Chain(&e), "refund failed; recovery will make it");
                false
            }
        }
    }

    /// Closes abandoned charges: settled if their answer was stored, refunded if not.
    /// Returns the credits given back. Failures are logged and left for the next time.
    pub async fn recover(&self, abandoned: &[OpenCharge]) -> u64 {
        if abandoned.is_empty() {
            return 0;
        }
        let states = match self.store.chat_states(abandoned).await {
            Ok(states) => states,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "could not read abandoned charges");
                return 0;
            }
        };
        let mut back = 0;
        for charge in abandoned {
            let answered = states.get(&charge.id) == Some(&ChargeState::Completed);
            let close = if answered {
                Close::Keep
            } else {
                Close::GiveBack
            };
            match self
                .store
                .close_charge(charge, close, self.settling_until())
                .await
            {
                Ok(true) if answered => {
                    metrics::count_by(Metric::ChargesRecovered, "settled", 1);
                    tracing::warn!(user = %charge.account.user_key, charge = %charge.id, "settled an abandoned, answered charge")
                }
                Ok(true) => {
                    back += charge.cost;
                    metrics::count_by(Metric::ChargesRecovered, "refunded", 1);
                    metrics::count(Metric::CreditsRefunded, charge.cost);
                    tracing::warn!(user = %charge.account.user_key, charge = %charge.id, cost = charge.cost, "refunded an abandoned charge");
                    let record = ChatOutcome::Refunded {
                        message: None,
                        reason: ABANDONED,
                    };
                    if let Err(e) = self.store.record_chat(charge, record).await {
                        tracing::warn!(charge = %charge.id, error = %Chain(&e), "abandoned refund not recorded");
                    }
                }
                Ok(false) => {} // closed meanwhile by another request
                Err(e) => {
                    tracing::error!(charge = %charge.id, error = %Chain(&e), "could not close an abandoned charge")
                }
            }
        }
        back
    }

    /// The balance as the user should see it, from a user item already read: credits of
    /// abandoned charges that were never answered count as returned, though only the
    /// next chat writes that down. No read, unless such charges exist.
    pub async fn balance(&self, user: &UserItem) -> Result<u64, store::Error> {
        let abandoned = self.abandoned(user.open.clone());
        if abandoned.is_empty() {
            return Ok(user.balance);
        }
        let states = self.store.chat_states(&abandoned).await?;
        let returning: u64 = abandoned
            .iter()
            .filter(|c| states.get(&c.id) != Some(&ChargeState::Completed))
            .map(|c| c.cost)
            .sum();
        Ok(user.balance + returning)
    }

    /// Until when a request that closes a charge now may still write what goes with it.
    fn settling_until(&self) -> u64 {
        now_millis() + write_window(&self.store.retry_policy()).as_millis() as u64
    }

    fn abandoned(&self, open: Vec<OpenCharge>) -> Vec<OpenCharge> {
        let now = now_millis();
        open.into_iter()
            .filter(|c| c.is_abandoned(now, self.timeout))
            .collect()
    }
}
