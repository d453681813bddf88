//! One chat turn, whatever renders it: the idempotency key claimed, the credits held,
//! the model asked, the charge settled or refunded, and the outcome kept for replays.
//!
//! A turn is begun with [`ChatService::begin`], which claims the key and holds the
//! credits; whoever asks the model then ends it with [`ChatService::answered`] or
//! [`ChatService::failed`]. [`ChatService::ask`] is the buffered whole;
//! [`ChatService::open_stream`] and [`OpenStream::run`] the streamed one. Both share the
//! hold, the settle, the refund and the idempotency outcome, and both end a turn through
//! [`ChatService::end`], which asks the charge lifecycle's rule ([`Ending::is_charged`])
//! whether the answer is paid for.

use uuid::Uuid;

pub use super::outcome::{Answer, Outcome};
use super::{
    charges::{Answered, ChargeError, Charges, Ending, Hold, Settled},
    conversations::{Choice, Conversations},
    sockets::{Push, Watchers},
};
use crate::{
    config::Config,
    domain::{ChatMessage, ConversationId, Model, Usage},
    gemini::{self, GeminiClient, ModelName, Prompt},
    store::{
        self, Account, ChargeState, Claim, DebitGuard, KeyOwner, OpenCharge, PastTurn, Store,
        now_millis,
    },
    telemetry::{
        Chain,
        metrics::{self, Metric},
    },
};

/// A chat turn that can't go on, in the service's terms.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("not enough credits")]
    Insufficient { balance: u64, cost: u64 },
    #[error("the account no longer exists")]
    NoAccount,
    #[error("the session has ended")]
    SessionEnded { expired: bool },
    #[error("too many chats in flight")]
    TooManyInFlight,
    #[error("too many chats this minute")]
    RateExceeded,
    #[error("the idempotency key was first used for another request")]
    KeyReused,
    #[error("a request with this idempotency key is still running")]
    InProgress,
    /// The conversation asked for is not one of the user's; nothing was charged.
    #[error("no such conversation")]
    NoConversation,
    /// The model failed; the charge was refunded.
    #[error("the model failed")]
    Model(#[source] gemini::Error),
    /// The client asked the turn to stop before any word of the answer went out; the
    /// charge was refunded.
    #[error("cancelled before the first words")]
    Cancelled,
    /// The answer could not be stored, so it was withheld; the charge was refunded.
    #[error("the answer could not be stored; withheld and refunded")]
    Withheld(#[source] store::Error),
    /// The answer could not be settled and the store kept failing while finding out
    /// what became of it: whether it was charged is not known yet. Recovery decides it
    /// by the chat item, and a retry with the same idempotency key gets that outcome.
    #[error("the answer's settle is not known")]
    Unsettled(#[source] store::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<ChargeError> for ChatError {
    fn from(err: ChargeError) -> Self {
        match err {
            ChargeError::Insufficient { balance, cost } => Self::Insufficient { balance, cost },
            ChargeError::NoAccount => Self::NoAccount,
            ChargeError::SessionEnded { expired } => Self::SessionEnded { expired },
            ChargeError::TooManyInFlight => Self::TooManyInFlight,
            ChargeError::RateExceeded => Self::RateExceeded,
            ChargeError::Withheld(e) => Self::Withheld(e),
            ChargeError::Store(e) => Self::Store(e),
        }
    }
}

/// What a streamed turn reports as it goes.
#[derive(Debug)]
pub enum Progress {
    /// The credits are held and the model has started answering.
    Start {
        conversation_id: String,
        model: String,
        tokens_remaining: u64,
    },
    /// More of the answer.
    Delta(String),
    /// The whole answer, paid for.
    Done(Answer),
    /// The answer stopped before its end for a reason the prompt or the client caused:
    /// the words handed out were paid for and are kept as `answer`, whose
    /// `finish_reason` says why it stopped.
    Cut(Answer),
    /// The answer failed midway. `charged`: `Some(false)` when it was not charged,
    /// `None` when the store failed so that it is not known yet (the charge is then left
    /// to recovery). `tokens_remaining`: the balance as it now is, when known.
    Failed {
        error: ChatError,
        charged: Option<bool>,
        tokens_remaining: Option<u64>,
    },
}

/// How the model's part of a turn ended, before the charge is settled or refunded.
#[derive(Debug)]
pub enum Ended {
    /// The whole answer.
    Finished(gemini::Reply),
    /// The client asked the turn to stop.
    Cancelled,
    /// The model stopped or failed.
    Failed(gemini::Error),
}

/// A turn's end, its charge settled or refunded.
#[derive(Debug)]
pub enum Closed {
    /// See [`Progress::Done`].
    Done(Answer),
    /// See [`Progress::Cut`].
    Cut(Answer),
    /// Refunded: nothing charged; the balance with the credits back, unless the refund
    /// was left to recovery.
    Refunded {
        error: ChatError,
        tokens_remaining: Option<u64>,
    },
    /// The answer could not be settled (the store kept failing).
    Unsettled(ChatError),
}

/// The `finish_reason` kept with an answer the client stopped. Gemini's own reasons are
/// upper case too; this one is ours.
pub const CANCELLED: &str = "CANCELLED";

/// Why a turn cancelled before its first words was refunded.
pub const CANCELLED_BEFORE_WORDS: &str = "cancelled by the client before the first words";

/// A streamed turn whose model has produced its first text: from here on, failures are
/// reported as [`Progress::Failed`] rather than as an error status.
#[derive(Debug)]
pub struct OpenStream {
    turn: Turn,
    stream: gemini::ReplyStream,
    first: gemini::StreamEvent,
}

/// What the client asked for.
#[derive(Debug)]
pub struct ChatRequest {
    /// Whose: the account the token's session belongs to.
    pub account: Account,
    pub message: ChatMessage,
    pub idempotency_key: Option<String>,
    pub conversation: Choice,
    /// From the catalogue: its price is the chat's cost.
    pub model: Model,
    /// The session and limits the debit checks in the same write.
    pub guard: DebitGuard,
    /// The user's latest conversation, as the authentication read found it.
    pub last_conversation: Option<(ConversationId, u64)>,
    /// Whom to tell of the balance as it moves: the user's open WebSocket connections,
    /// as the authentication read found them.
    pub watchers: Watchers,
}

/// How a turn begins: afresh, or with the stored outcome of an earlier request with the
/// same idempotency key.
#[derive(Debug)]
pub enum Begun {
    Started(Turn),
    Replay(Outcome),
}

/// A turn whose credits are held. End it with [`Turn::answered`] or [`Turn::failed`];
/// dropped unended, its charge is recovered as abandoned.
#[derive(Debug)]
pub struct Turn {
    pub hold: Hold,
    pub message: ChatMessage,
    pub model: Model,
    /// The conversation's earlier turns, oldest first, within the context budget.
    pub context: Vec<PastTurn>,
    key: Option<(String, KeyOwner)>,
    watchers: Watchers,
}

impl Turn {
    /// The idempotency key the turn runs under, if any (a cancel names it).
    pub fn key(&self) -> Option<&str> {
        self.key.as_ref().map(|(key, _)| key.as_str())
    }
}

/// Why a turn stopped without being charged.
#[derive(Debug)]
enum Stop {
    Model(gemini::Error),
    Cancelled,
}

/// The chat rules over a store, the model client and the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ChatService<'a> {
    pub store: &'a Store,
    pub gemini: &'a GeminiClient,
    pub config: &'a Config,
    /// Tells the user's open connections of each new balance.
    pub push: Push<'a>,
}

impl<'a> ChatService<'a> {
    pub fn charges(&self) -> Charges<'a> {
        Charges::new(self.store, self.config.charge_timeout)
    }

    pub fn conversations(&self) -> Conversations<'a> {
        Conversations::new(self.store, &self.config.conversations)
    }

    /// Places the chat in its conversation, claims the idempotency key (if any) and
    /// holds the credits. The conversation's check and its history are read alongside
    /// the debit, so neither adds a round trip; a conversation that is not the user's
    /// undoes the hold.
    pub async fn begin(&self, req: ChatRequest) -> Result<Begun, ChatError> {
        let conversations = self.conversations();
        let placement = conversations.place(req.conversation, req.last_conversation);
        let charge = OpenCharge {
            id: Uuid::now_v7().to_string(),
            account: req.account,
            conversation_id: placement.id.as_str().to_owned(),
            cost: req.model.cost,
            opened_at: now_millis(),
        };
        // The api's span for this chat (if any) carries the charge id from here on.
        tracing::Span::current().record("charge", charge.id.as_str());
        let owner = KeyOwner {
            charge_id: charge.id.clone(),
            conversation_id: charge.conversation_id.clone(),
        };
        let key = match req.idempotency_key {
            None => None,
            Some(key) => {
                if let Some(replay) = self
                    .claim(&charge.account, &key, &req.message, &owner)
                    .await?
                {
                    return Ok(Begun::Replay(replay));
                }
                Some((key, owner))
            }
        };
        let user = charge.account.clone();
        let id = &placement.id;
        let charges = self.charges();
        let (held, exists, history) = tokio::join!(
            charges.hold(charge, &req.guard),
            async {
                match placement.must_exist {
                    true => self
                        .store
                        .conversation(&user, id)
                        .await
                        .map(|c| c.is_some()),
                    false => Ok(true),
                }
            },
            async {
                match placement.has_history {
                    true => conversations.context(&user, id).await,
                    false => Ok(Vec::new()),
                }
            },
        );
        let hold = match held {
            Ok(hold) => hold,
            Err(err) => {
                if let Some((key, owner)) = &key {
                    self.release(&user, key, owner).await;
                }
                return Err(err.into());
            }
        };
        let stop = match (exists, history) {
            (Ok(true), Ok(context)) => {
                return Ok(Begun::Started(Turn {
                    hold,
                    message: req.message,
                    model: req.model,
                    context,
                    key,
                    watchers: req.watchers,
                }));
            }
            (Ok(false), _) => ChatError::NoConversation,
            (Err(e), _) | (_, Err(e)) => ChatError::Store(e),
        };
        // Nothing was asked: the credits go back and the key is free.
        self.charges().cancel(&hold).await;
        if let Some((key, owner)) = &key {
            self.release(&user, key, owner).await;
        }
        Err(stop)
    }

    /// The buffered turn: ask the model (recovering abandoned charges meanwhile) and end
    /// the turn with its reply. Nothing is handed out before the reply is whole.
    pub async fn ask(&self, turn: Turn) -> Result<Outcome, ChatError> {
        let charges = self.charges();
        let model = self.model_of(&turn)?;
        let prompt = self.prompt(&turn, &model);
        let (reply, recovered, ()) = tokio::join!(
            self.gemini.generate(&prompt),
            charges.recover(&turn.hold.abandoned),
            self.push.balance(&turn.watchers, turn.hold.balance),
        );
        let ended = match reply {
            Ok(reply) => Ended::Finished(reply),
            Err(err) => Ended::Failed(err),
        };
        match self
            .end(turn, ended, String::new(), Usage::default(), recovered)
            .await
        {
            Closed::Done(answer) | Closed::Cut(answer) => Ok(Outcome::Answered(answer)),
            Closed::Refunded { error, .. } | Closed::Unsettled(error) => Err(error),
        }
    }

    /// Ends a turn by the charge lifecycle's rule: `handed` is what the client has
    /// received of the answer already (`usage` what Gemini had counted by then). A
    /// charged answer that stopped early is kept as those words, with the reason it
    /// stopped.
    pub async fn end(
        &self,
        turn: Turn,
        ended: Ended,
        handed: String,
        usage: Usage,
        recovered: u64,
    ) -> Closed {
        let ending = match &ended {
            Ended::Finished(_) => Ending::Finished,
            Ended::Cancelled => Ending::Cancelled,
            Ended::Failed(err) if err.blocked_reason().is_some() => Ending::StoppedByPrompt,
            Ended::Failed(_) => Ending::Failed,
        };
        if !ending.is_charged(!handed.is_empty()) {
            let stop = match ended {
                Ended::Failed(err) => Stop::Model(err),
                Ended::Cancelled => Stop::Cancelled,
                // Charged whenever it happens: never here.
                Ended::Finished(_) => Stop::Model(gemini::Error::Incomplete),
            };
            let (error, tokens_remaining) = self.refund_turn(turn, stop, recovered).await;
            return Closed::Refunded {
                error,
                tokens_remaining,
            };
        }
        let cut = |reason: &str| gemini::Reply {
            text: handed.clone(),
            model: turn.model.id.clone(),
            usage,
            finish_reason: Some(reason.to_owned()),
        };
        let reply = match &ended {
            Ended::Finished(reply) => reply.clone(),
            Ended::Cancelled => cut(CANCELLED),
            Ended::Failed(err) => cut(err.blocked_reason().unwrap_or_default()),
        };
        let refunded = turn.hold.balance + recovered + turn.hold.charge.cost;
        let (model, cost) = (turn.model.id.clone(), turn.hold.charge.cost);
        let watchers = turn.watchers.clone();
        let answered = self.answered(turn, reply, recovered).await;
        if recovered > 0
            && let Ok(answer) = &answered
        {
            // Abandoned charges came back while this one ran.
            self.push.balance(&watchers, answer.tokens_remaining).await;
        }
        match answered {
            Ok(answer) if ending == Ending::Finished => {
                metrics::count_by(Metric::ChatsAnswered, &model, 1);
                Closed::Done(answer)
            }
            Ok(answer) => {
                // Stopped by its client: the answer they wanted. Stopped for the
                // prompt's sake: a refusal, though the words given were paid for.
                if ending == Ending::Cancelled {
                    metrics::count_by(Metric::ChatsAnswered, &model, 1);
                }
                Closed::Cut(answer)
            }
            Err(error @ ChatError::Withheld(_)) => {
                metrics::count_by(Metric::CreditsRefunded, &model, cost);
                Closed::Refunded {
                    error,
                    tokens_remaining: Some(refunded),
                }
            }
            Err(error) => Closed::Unsettled(error),
        }
    }

    /// Opens the model's stream and waits for its first text. A failure before that is
    /// refunded and returned, so it can still be answered with an error status.
    pub async fn open_stream(&self, turn: Turn) -> Result<OpenStream, ChatError> {
        self.open_stream_until(turn, std::future::pending()).await
    }

    /// [`open_stream`](Self::open_stream), stopping when `cancel` completes first: no
    /// word went out, so the turn is refunded ([`ChatError::Cancelled`]) and Gemini let
    /// go. Pass the same (pinned) `cancel` on to [`OpenStream::run_until`].
    pub async fn open_stream_until(
        &self,
        turn: Turn,
        cancel: impl Future<Output = ()>,
    ) -> Result<OpenStream, ChatError> {
        let model = self.model_of(&turn)?;
        let prompt = self.prompt(&turn, &model);
        let opening = async {
            let mut stream = self.gemini.stream(&prompt).await?;
            match stream.next().await {
                Some(Ok(first)) => Ok((stream, first)),
                Some(Err(err)) => Err(err),
                None => Err(gemini::Error::Incomplete),
            }
        };
        let opened = tokio::select! {
            biased;
            () = cancel => None,
            opened = opening => Some(opened),
        };
        match opened {
            Some(Ok((stream, first))) => Ok(OpenStream {
                turn,
                stream,
                first,
            }),
            Some(Err(err)) => Err(self.failed(turn, err).await),
            None => Err(self.refund_turn(turn, Stop::Cancelled, 0).await.0),
        }
    }

    /// The model answered: settle, then keep the outcome for replays.
    pub async fn answered(
        &self,
        turn: Turn,
        reply: gemini::Reply,
        recovered: u64,
    ) -> Result<Answer, ChatError> {
        let hold = &turn.hold;
        let answer = Answer {
            message: turn.message.as_str().to_owned(),
            response: reply.text,
            tokens_remaining: hold.balance + recovered,
            conversation_id: hold.charge.conversation_id.clone(),
            model: turn.model.id.clone(),
            cost: hold.charge.cost,
            usage: reply.usage,
            finish_reason: reply.finish_reason,
        };
        let settled = self
            .charges()
            .settle(
                hold,
                Answered {
                    message: &answer.message,
                    response: &answer.response,
                    model: &answer.model,
                    usage: answer.usage,
                    balance: answer.tokens_remaining,
                    title: Conversations::default_title(&answer.message).as_str(),
                    finish_reason: answer.finish_reason.as_deref(),
                },
            )
            .await;
        let kept = match settled {
            Ok(kept) => kept,
            Err(ChargeError::Withheld(e)) => {
                // Refunded for certain: a retry may go differently.
                if let Some((key, owner)) = &turn.key {
                    self.release(&hold.charge.account, key, owner).await;
                }
                return Err(ChatError::Withheld(e));
            }
            // Not known: the key stays with this charge, and a retry once it is stale
            // gets what recovery made of it.
            Err(ChargeError::Store(e)) => return Err(ChatError::Unsettled(e)),
            Err(other) => return Err(other.into()),
        };
        metrics::count_by(Metric::CreditsCharged, &answer.model, answer.cost);
        tracing::info!(
            user = %hold.charge.account.user_key, charge = %hold.charge.id, cost = hold.charge.cost,
            balance = answer.tokens_remaining, model = %answer.model,
            served_by = %reply.model, context_turns = turn.context.len(),
            prompt_tokens = answer.usage.prompt_tokens, response_tokens = answer.usage.response_tokens,
            finish_reason = answer.finish_reason.as_deref().unwrap_or("-"),
            "chat answered"
        );
        // Only after the settle: a key must never replay an answer that was not paid,
        // nor the text of a deleted conversation.
        if let Some((key, owner)) = &turn.key {
            let outcome = match kept {
                Settled::Kept => Outcome::Answered(answer.clone()),
                Settled::ConversationDeleted => Outcome::ConversationDeleted {
                    conversation_id: answer.conversation_id.clone(),
                },
            };
            self.finish(&hold.charge.account, key, owner, &outcome)
                .await;
        }
        Ok(answer)
    }

    /// The model failed before any word went out: refund, and either keep the refusal
    /// (a safety block will block again) or free the key (the next attempt may go
    /// differently).
    pub async fn failed(&self, turn: Turn, err: gemini::Error) -> ChatError {
        self.refund_turn(turn, Stop::Model(err), 0).await.0
    }

    /// [`failed`](Self::failed), also returning the balance with the credits back
    /// (`None` if the refund was left to recovery).
    /// Then tells the user's connections the balance.
    async fn refund_turn(
        &self,
        turn: Turn,
        stop: Stop,
        recovered: u64,
    ) -> (ChatError, Option<u64>) {
        let hold = &turn.hold;
        let user = &hold.charge.account;
        let reason = match &stop {
            Stop::Model(err) => err.to_string(),
            Stop::Cancelled => CANCELLED_BEFORE_WORDS.to_owned(),
        };
        let refusal = match &stop {
            Stop::Model(err) => err.blocked_reason().map(|reason| Outcome::Refused {
                reason: reason.to_owned(),
            }),
            Stop::Cancelled => None,
        };
        let keep_key = async {
            match (&turn.key, &refusal) {
                (Some((key, owner)), Some(outcome)) => self.finish(user, key, owner, outcome).await,
                (Some((key, owner)), None) => self.release(user, key, owner).await,
                (None, _) => {}
            }
        };
        let charges = self.charges();
        let (refunded, ()) = tokio::join!(
            charges.refund(hold, turn.message.as_str(), &reason),
            keep_key
        );
        if refunded {
            metrics::count_by(Metric::CreditsRefunded, &turn.model.id, hold.charge.cost);
            tracing::warn!(user = %user.user_key, charge = %hold.charge.id, reason, "turn stopped; refunded");
        }
        let balance = refunded.then_some(hold.balance + recovered + hold.charge.cost);
        if let Some(balance) = balance {
            self.push.balance(&turn.watchers, balance).await;
        }
        let error = match stop {
            Stop::Model(err) => ChatError::Model(err),
            Stop::Cancelled => ChatError::Cancelled,
        };
        (error, balance)
    }

    /// The turn's model as the client takes it (the catalogue's names are checked at
    /// cold start, so this fails only on a configuration bug).
    fn model_of(&self, turn: &Turn) -> Result<ModelName, ChatError> {
        ModelName::parse(&turn.model.id)
            .map_err(|e| store::Error::Corrupt(format!("model catalogue: {e}")).into())
    }

    /// What Gemini is asked: the conversation so far, the system instruction, the message.
    fn prompt<'p>(&'p self, turn: &'p Turn, model: &'p ModelName) -> Prompt<'p> {
        Prompt {
            model,
            system_instruction: self.config.conversations.system_instruction.as_deref(),
            history: &turn.context,
            message: turn.message.as_str(),
        }
    }

    /// `Some(outcome)`: the key's first request already ended; replay it.
    async fn claim(
        &self,
        user: &Account,
        key: &str,
        message: &ChatMessage,
        owner: &KeyOwner,
    ) -> Result<Option<Outcome>, ChatError> {
        let timeout = self.config.charge_timeout;
        let fingerprint = message.fingerprint();
        match self
            .store
            .claim_idempotency_key(user, key, &fingerprint, owner, timeout)
            .await?
        {
            Claim::Claimed => Ok(None),
            Claim::Replay(stored) => match serde_json::from_str(&stored) {
                Ok(outcome) => Ok(Some(outcome)),
                Err(e) => Err(store::Error::Corrupt(format!("stored outcome: {e}")).into()),
            },
            Claim::Mismatch => Err(ChatError::KeyReused),
            Claim::InProgress => Err(ChatError::InProgress),
            Claim::Stale { owner: stale, .. } => {
                // The first request died. If its answer was stored, it was paid for (or
                // will be, by recovery): replay it rather than charge again.
                let charge = OpenCharge {
                    id: stale.charge_id.clone(),
                    account: user.clone(),
                    conversation_id: stale.conversation_id.clone(),
                    cost: 0,
                    opened_at: 0,
                };
                if let Some(record) = self.store.chat(&charge).await?
                    && record.state == ChargeState::Completed
                {
                    let outcome = match record.response {
                        // Answered, but its conversation was deleted since: no text.
                        None => Outcome::ConversationDeleted {
                            conversation_id: record.conversation_id,
                        },
                        Some(response) => Outcome::Answered(Answer {
                            message: record.message,
                            response,
                            tokens_remaining: record.balance.unwrap_or_default(),
                            conversation_id: record.conversation_id,
                            model: record.model.unwrap_or_default(),
                            cost: record.cost,
                            usage: record.usage.unwrap_or_default(),
                            finish_reason: record.finish_reason,
                        }),
                    };
                    self.finish(user, key, &stale, &outcome).await;
                    return Ok(Some(outcome));
                }
                match self
                    .store
                    .take_over_idempotency_key(user, key, &stale, owner)
                    .await?
                {
                    true => Ok(None),
                    false => Err(ChatError::InProgress),
                }
            }
        }
    }

    async fn finish(&self, user: &Account, key: &str, owner: &KeyOwner, outcome: &Outcome) {
        let stored = match serde_json::to_string(outcome) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "could not serialise an outcome");
                return;
            }
        };
        if let Err(e) = self
            .store
            .finish_idempotency_key(user, key, owner, &stored)
            .await
        {
            // The key stays `running`; once stale, a retry finds the stored answer.
            tracing::error!(error = %Chain(&e), "could not store the idempotency outcome");
        }
    }

    async fn release(&self, user: &Account, key: &str, owner: &KeyOwner) {
        if let Err(e) = self.store.release_idempotency_key(user, key, owner).await {
            tracing::error!(error = %Chain(&e), "could not free the idempotency key");
        }
    }
}

impl OpenStream {
    /// Reads the model's stream to its end, reporting each step to `report`, then settles
    /// or refunds. It never stops early on its own: a client that went away still gets
    /// its answer stored and charged once (`report` just has nobody to tell).
    pub async fn run(self, service: ChatService<'_>, report: impl FnMut(Progress)) {
        self.run_until(service, std::future::pending(), report)
            .await
    }

    /// [`run`](Self::run), stopping when `cancel` completes: the client asked the turn to
    /// stop. The words handed out by then are the answer, charged and kept with the
    /// finish reason [`CANCELLED`]. `cancel` is only heeded between chunks, after the
    /// first words went out.
    pub async fn run_until(
        self,
        service: ChatService<'_>,
        cancel: impl Future<Output = ()>,
        mut report: impl FnMut(Progress),
    ) {
        let OpenStream {
            turn,
            mut stream,
            first,
        } = self;
        report(Progress::Start {
            conversation_id: turn.hold.charge.conversation_id.clone(),
            model: turn.model.id.clone(),
            tokens_remaining: turn.hold.balance,
        });
        let mut cancel = std::pin::pin!(cancel);
        let mut handed = String::new();
        let read = async {
            let mut next = Some(Ok(first));
            loop {
                match next {
                    Some(Ok(gemini::StreamEvent::Text(text))) => {
                        handed.push_str(&text);
                        report(Progress::Delta(text));
                    }
                    Some(Ok(gemini::StreamEvent::Done(reply))) => return Ended::Finished(reply),
                    Some(Err(err)) => return Ended::Failed(err),
                    None => return Ended::Failed(gemini::Error::Incomplete),
                }
                next = tokio::select! {
                    biased;
                    () = &mut cancel => return Ended::Cancelled,
                    next = stream.next() => next,
                };
            }
        };
        let charges = service.charges();
        let (ended, recovered, ()) = tokio::join!(
            read,
            charges.recover(&turn.hold.abandoned),
            service.push.balance(&turn.watchers, turn.hold.balance),
        );
        let usage = stream.usage_so_far();
        // Gemini is not asked for more of an answer that is over.
        drop(stream);
        let closed = service.end(turn, ended, handed, usage, recovered).await;
        match &closed {
            Closed::Done(answer) => metrics::count_by(Metric::ChatsStreamed, &answer.model, 1),
            Closed::Cut(answer) if answer.finish_reason.as_deref() == Some(CANCELLED) => {
                metrics::count_by(Metric::ChatsStreamed, &answer.model, 1)
            }
            _ => {}
        }
        report(match closed {
            Closed::Done(answer) => Progress::Done(answer),
            Closed::Cut(answer) => Progress::Cut(answer),
            Closed::Refunded {
                error,
                tokens_remaining,
            } => Progress::Failed {
                error,
                charged: Some(false),
                tokens_remaining,
            },
            Closed::Unsettled(error) => Progress::Failed {
                error,
                charged: None,
                tokens_remaining: None,
            },
        });
    }
}
