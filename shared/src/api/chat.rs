//! `POST /api/chat/` `{"message", "conversation_id"?, "model"?}` →
//! `{"message", "response", "tokens_remaining", "conversation_id", "model"}`.
//!
//! The handler parses the request, hands it to the chat service and renders what comes
//! back. Credits, the model call and idempotency are the service's (`service::chat`).

use lambda_http::{
    Body, Error, Request, Response,
    http::{HeaderValue, Method, StatusCode},
};
use serde_json::{Map, Value, json};

use crate::{
    ApiError, ChatApp,
    domain::{ChatMessage, ConversationId},
    http,
    service::{
        chat::{Begun, ChatRequest, ChatService, Outcome},
        conversations::Choice,
    },
};

pub async fn handle(chat_app: &ChatApp, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(chat(chat_app, &req).await))
}

async fn chat(chat_app: &ChatApp, req: &Request) -> Result<Response<Body>, ApiError> {
    let app = &chat_app.app;
    http::require_method(req, Method::POST)?;
    // Cheap checks before any I/O: a missing token or a bad body costs no round trip.
    let token = http::auth_token(req)?;
    let idempotency_key = http::idempotency_key(req)?;
    let body = http::json_object(req)?;
    let message = ChatMessage::parse(
        http::string_field(&body, "message")?,
        app.config.max_message_chars,
    )?;
    let conversation = conversation_choice(&body)?;
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(model)) => Some(model.as_str()),
        Some(_) => return Err(ApiError::invalid("model", "model must be a string.")),
    };
    let model = app.config.models.choose(model)?.clone();
    let user_key = app.authenticate(token).await?;

    let service = ChatService {
        store: &app.store,
        gemini: &chat_app.gemini,
        config: &app.config,
    };
    let request = ChatRequest {
        user_key,
        message,
        idempotency_key,
        conversation,
        model,
    };
    match service.begin(request).await? {
        Begun::Started(turn) => render(service.ask(turn).await?, false),
        Begun::Replay(outcome) => {
            tracing::info!("idempotent replay");
            render(outcome, true)
        }
    }
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

/// The response for an outcome: the original service's body for an answer, the usual
/// error for a refusal; replays say so.
fn render(outcome: Outcome, replayed: bool) -> Result<Response<Body>, ApiError> {
    let mut resp = match outcome {
        Outcome::Answered(answer) => {
            let body = json!({
                "message": answer.message,
                "response": answer.response,
                "tokens_remaining": answer.tokens_remaining,
                "conversation_id": answer.conversation_id,
                "model": answer.model,
            });
            http::with_balance(http::json(StatusCode::OK, &body), answer.tokens_remaining)
        }
        Outcome::Refused { reason } if replayed => {
            http::error_response(&ApiError::ContentBlocked { reason })
        }
        Outcome::Refused { reason } => return Err(ApiError::ContentBlocked { reason }),
    };
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}
