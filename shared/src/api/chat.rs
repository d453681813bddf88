//! `POST /api/chat/` `{"message"}` → `{"message", "response", "tokens_remaining"}`.
//!
//! Debit first, then ask the model, then settle — or refund if the model failed. A
//! request that can't pay never reaches Gemini, and a failed answer costs nothing.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, ChatApp,
    domain::ChatMessage,
    error::Chain,
    http,
    store::{Answered, Debit},
};

pub async fn handle(chat_app: &ChatApp, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(chat(chat_app, &req).await))
}

async fn chat(chat_app: &ChatApp, req: &Request) -> Result<Response<Body>, ApiError> {
    let ChatApp { app, gemini } = chat_app;
    http::require_method(req, Method::POST)?;
    // Cheap checks before any I/O: a missing token or a bad body costs no round trip.
    http::auth_token(req)?;
    let body = http::json_object(req)?;
    let message = ChatMessage::parse(
        http::string_field(&body, "message")?,
        app.config.max_message_chars,
    )?;
    let user_key = app.authenticate(req).await?;

    let cost = app.config.chat_cost;
    let (charge, balance) = match app.store.debit(&user_key, cost).await? {
        Debit::Debited { charge, balance } => (charge, balance),
        Debit::Insufficient { balance } => {
            return Err(ApiError::InsufficientCredits { balance, cost });
        }
        Debit::NoAccount => return Err(ApiError::InvalidToken),
    };

    match gemini.generate(message.as_str()).await {
        Ok(reply) => {
            let answered = Answered {
                response: &reply.text,
                model: &reply.model,
                usage: reply.usage,
            };
            match app.store.settle(&charge, message.as_str(), answered).await {
                Ok(true) => {}
                // The answer exists and the user waited for it: give it to them. The
                // charge stays open and is recovered like one whose process died.
                Ok(false) => {
                    tracing::warn!(charge = %charge.id, "charge was already closed at settle")
                }
                Err(e) => tracing::error!(charge = %charge.id, error = %Chain(&e), "settle failed"),
            }
            tracing::info!(
                user = %user_key, charge = %charge.id, cost, balance, model = %reply.model,
                prompt_tokens = reply.usage.prompt_tokens, response_tokens = reply.usage.response_tokens,
                "chat answered"
            );
            Ok(http::with_balance(
                http::json(
                    StatusCode::OK,
                    &json!({
                        "message": message.as_str(),
                        "response": reply.text,
                        "tokens_remaining": balance,
                    }),
                ),
                balance,
            ))
        }
        Err(err) => {
            match app
                .store
                .refund(&charge, message.as_str(), &err.to_string())
                .await
            {
                Ok(_) => {
                    tracing::warn!(user = %user_key, charge = %charge.id, error = %Chain(&err), "model failed; refunded")
                }
                Err(e) => {
                    tracing::error!(charge = %charge.id, error = %Chain(&e), "refund failed; charge left open")
                }
            }
            Err(err.into())
        }
    }
}
