//! `POST /api/chat/` `{"message"}` → `{"message", "response", "tokens_remaining"}`.
//!
//! The handler parses the request, hands it to the chat service and renders what comes
//! back. Credits, the model call and idempotency are the service's (`service::chat`).

use lambda_http::{
    Body, Error, Request, Response,
    http::{HeaderValue, Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, ChatApp,
    domain::ChatMessage,
    http,
    service::chat::{Begun, ChatRequest, ChatService, Outcome},
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
    // One read: the session checked, and the user item for the debit's guard. The debit
    // checks the session again in its own write, so a logout racing this chat holds.
    let authed = app.authenticate(token).await?;
    let guard = app.accounts().debit_guard(&authed);

    let service = ChatService {
        store: &app.store,
        gemini: &chat_app.gemini,
        config: &app.config,
    };
    let request = ChatRequest {
        user_key: authed.user_key,
        message,
        idempotency_key,
        guard,
    };
    match service.begin(request).await? {
        Begun::Started(turn) => render(service.ask(turn).await?, false),
        Begun::Replay(outcome) => {
            tracing::info!("idempotent replay");
            render(outcome, true)
        }
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
