//! `POST /api/chat/` `{"message", "conversation_id"?, "model"?}` →
//! `{"message", "response", "tokens_remaining", "conversation_id", "model"}`, or, with
//! `Accept: text/event-stream`, the answer as Server-Sent Events as it is written:
//! `start`, `delta`…, then `done` (or `error`).
//!
//! The handler parses the request, hands it to the chat service and renders what comes
//! back. Credits, the model call and idempotency are the service's (`service::chat`), the
//! same for both renderings.

use lambda_http::{
    Body, Error, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::{
    ApiError, App, ChatApp,
    domain::{ChatMessage, ConversationId, Model},
    http::{self, StreamBody},
    service::{
        accounts::Authed,
        chat::{Answer, Begun, CANCELLED, ChatRequest, ChatService, Outcome, Progress},
        conversations::Choice,
        sockets::{Push, Watchers},
    },
    telemetry::metrics::{self, Metric},
};

pub async fn handle(chat_app: &ChatApp, req: Request) -> Result<Response<StreamBody>, Error> {
    // Every line a chat logs carries its charge id, once it has one (the service records
    // it here), beside the request id of the runtime's own span.
    let span = tracing::info_span!("chat", charge = tracing::field::Empty);
    let answer = async {
        match chat(chat_app, &req).await {
            Ok(resp) => resp,
            Err(err) => {
                record_failure(&err);
                http::into_stream(http::error_response(&err))
            }
        }
    };
    Ok(answer.instrument(span).await)
}

/// A chat that ended in an error: throttled (429), or failed on the service's side (5xx)
/// or the model's (a refusal). A client's own mistake is neither.
fn record_failure(err: &ApiError) {
    let status = err.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics::count_by(Metric::ChatsThrottled, err.code(), 1);
    } else if status.is_server_error() || matches!(err, ApiError::ContentBlocked { .. }) {
        metrics::count_by(Metric::ChatsFailed, err.code(), 1);
    }
}

async fn chat(chat_app: &ChatApp, req: &Request) -> Result<Response<StreamBody>, ApiError> {
    let app = &chat_app.app;
    http::require_method(req, Method::POST)?;
    // Cheap checks before any I/O: a missing token or a bad body costs no round trip.
    let token = http::auth_token(req)?;
    let idempotency_key = http::idempotency_key(req)?;
    let asked = Asked::parse(app, &http::json_object(req)?)?;
    let streamed = http::wants_event_stream(req);
    // One read: the session checked, and the user item for the debit's guard. The debit
    // checks the session again in its own write, so a logout racing this chat holds.
    let authed = app.authenticate(token).await?;

    let service = service(chat_app);
    let request = asked.request(chat_app, &authed, idempotency_key);
    let turn = match service.begin(request).await? {
        Begun::Started(turn) => turn,
        Begun::Replay(outcome) => {
            tracing::info!("idempotent replay");
            let mut resp = match (outcome, streamed) {
                (Outcome::Answered(answer), true) => {
                    event_stream(StreamBody::full(http::sse_event("done", &done(&answer))))
                }
                (Outcome::Answered(answer), false) => http::into_stream(answered(&answer)),
                (Outcome::Refused { reason }, _) => {
                    http::into_stream(http::error_response(&ApiError::ContentBlocked { reason }))
                }
                // Its conversation was deleted: nothing of it is replayed, nothing charged.
                (Outcome::ConversationDeleted { .. }, _) => {
                    http::into_stream(http::error_response(&ApiError::NotFound("conversation")))
                }
            };
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
    };
    if !streamed {
        return match service.ask(turn).await? {
            Outcome::Answered(answer) => Ok(http::into_stream(answered(&answer))),
            Outcome::Refused { reason } => Err(ApiError::ContentBlocked { reason }),
            Outcome::ConversationDeleted { .. } => Err(ApiError::NotFound("conversation")),
        };
    }

    // Until the model's first words the answer can still be an error status; after, it
    // is a 200 stream whose failures are `error` events.
    let open = service.open_stream(turn).await?;
    let (tx, body) = StreamBody::channel();
    let chat_app = chat_app.clone();
    // The turn outlives this handler: it takes the invocation's metrics record and log
    // span along.
    let record = metrics::current();
    let span = tracing::Span::current();
    tokio::spawn(async move {
        let service = self::service(&chat_app);
        // `run` reports synchronously; the events are written in order as they come.
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = async {
            while let Some(event) = progress_rx.recv().await {
                // A client that went away stops receiving; the turn still runs to its end.
                let _ = tx.send(event).await;
            }
        };
        let run = async {
            open.run(service, |progress| {
                let _ = progress_tx.send(render_progress(progress));
            })
            .await;
            drop(progress_tx);
        };
        let turn = async { tokio::join!(run, writer) }.instrument(span);
        match record {
            Some(record) => metrics::scope(record, turn).await,
            None => turn.await,
        };
        // The metrics line is written (the record dropped above) before the stream
        // ends, so it is out before the invocation is over.
        drop(tx);
    });
    Ok(event_stream(body))
}

/// A chat's own fields, read from a JSON body (`POST /api/chat/`) or a WebSocket
/// message (`{"action": "chat", …}`) alike.
pub(crate) struct Asked {
    message: ChatMessage,
    conversation: Choice,
    model: Model,
}

impl Asked {
    pub(crate) fn parse(app: &App, body: &Map<String, Value>) -> Result<Self, ApiError> {
        let message = ChatMessage::parse(
            http::string_field(body, "message")?,
            app.config.max_message_chars,
        )?;
        let conversation = conversation_choice(body)?;
        let model = match body.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) => Some(model.as_str()),
            Some(_) => return Err(ApiError::invalid("model", "model must be a string.")),
        };
        let model = app.config.models.choose(model)?.clone();
        Ok(Self {
            message,
            conversation,
            model,
        })
    }

    /// The service's request, for the user and session `authed` found.
    pub(crate) fn request(
        self,
        chat_app: &ChatApp,
        authed: &Authed,
        idempotency_key: Option<String>,
    ) -> ChatRequest {
        let user = &authed.user;
        ChatRequest {
            account: user.account.clone(),
            message: self.message,
            idempotency_key,
            conversation: self.conversation,
            model: self.model,
            guard: chat_app.app.accounts().debit_guard(authed),
            last_conversation: user.last_conversation.clone(),
            watchers: Watchers::of(&user.account, &user.sockets),
        }
    }
}

pub(crate) fn service(chat_app: &ChatApp) -> ChatService<'_> {
    ChatService {
        store: &chat_app.app.store,
        gemini: &chat_app.gemini,
        config: &chat_app.app.config,
        push: Push::new(&chat_app.app.store, &chat_app.connections),
    }
}

/// The original service's answer, and the conversation and model it belongs to.
fn answered(answer: &Answer) -> Response<Body> {
    let body = json!({
        "message": answer.message,
        "response": answer.response,
        "tokens_remaining": answer.tokens_remaining,
        "conversation_id": answer.conversation_id,
        "model": answer.model,
    });
    http::with_balance(http::json(StatusCode::OK, &body), answer.tokens_remaining)
}

/// The `done` event: the original body's fields, and what else the turn knows.
pub(crate) fn done(answer: &Answer) -> serde_json::Value {
    json!({
        "message": answer.message,
        "response": answer.response,
        "tokens_remaining": answer.tokens_remaining,
        "conversation_id": answer.conversation_id,
        "model": answer.model,
        "cost": answer.cost,
        "usage": answer.usage,
        "finish_reason": answer.finish_reason,
    })
}

fn render_progress(progress: Progress) -> bytes::Bytes {
    let (name, data) = event(progress);
    http::sse_event(name, &data)
}

/// A step of a streamed turn as an event: its name (`start`, `delta`, `done`, `error`)
/// and its fields, the same for Server-Sent Events and WebSocket frames.
pub(crate) fn event(progress: Progress) -> (&'static str, Value) {
    match progress {
        Progress::Start {
            conversation_id,
            model,
            tokens_remaining,
        } => (
            "start",
            json!({
                "conversation_id": conversation_id,
                "model": model,
                "tokens_remaining": tokens_remaining,
            }),
        ),
        Progress::Delta(text) => ("delta", json!({ "text": text })),
        Progress::Done(answer) => ("done", done(&answer)),
        Progress::Cut(answer) => cut(&answer),
        Progress::Failed {
            error,
            charged,
            tokens_remaining,
        } => {
            let err = ApiError::from(error);
            record_failure(&err);
            http::log_error(&err);
            (
                "error",
                json!({
                    "code": err.code(),
                    "detail": err.to_string(),
                    "charged": charged,
                    "tokens_remaining": tokens_remaining,
                }),
            )
        }
    }
}

/// An answer the model stopped midway for the prompt's sake (a safety filter,
/// recitation…): an `error` event, though the words the client received were charged
/// and are kept. A client's own cancel (a WebSocket client's) ends as the answer it
/// asked for: `done`, with the finish reason `CANCELLED`.
fn cut(answer: &Answer) -> (&'static str, Value) {
    let reason = answer.finish_reason.as_deref().unwrap_or_default();
    if reason == CANCELLED {
        return ("done", done(answer));
    }
    let err = ApiError::ContentBlocked {
        reason: reason.to_owned(),
    };
    record_failure(&err);
    (
        "error",
        json!({
            "code": err.code(),
            "detail": format!(
                "The model stopped its answer midway ({reason}); you were charged for the words you received."
            ),
            "charged": true,
            "tokens_remaining": answer.tokens_remaining,
            "cost": answer.cost,
            "finish_reason": reason,
        }),
    )
}

/// Absent: the latest conversation if recent; `null`: a new one; a string: that one.
fn conversation_choice(body: &Map<String, Value>) -> Result<Choice, ApiError> {
    match body.get("conversation_id") {
        None => Ok(Choice::Latest),
        Some(Value::Null) => Ok(Choice::New),
        Some(Value::String(id)) => Ok(Choice::Given(ConversationId::parse(id)?)),
        Some(_) => Err(ApiError::invalid(
            "conversation_id",
            "conversation_id must be a string or null.",
        )),
    }
}

fn event_stream(body: StreamBody) -> Response<StreamBody> {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
