//! `POST /api/chat/` `{"message"}` → `{"message", "response", "tokens_remaining"}`.
//!
//! Debit first, then ask the model, then settle — or refund if the model failed. A
//! request that can't pay never reaches Gemini, and a failed answer costs nothing.
//! With an `Idempotency-Key`, a retry gets the first outcome instead of a second charge.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, App, ChatApp,
    domain::ChatMessage,
    error::Chain,
    gemini::Prompt,
    http,
    store::{Answered, Claim, Debit, OpenCharge, StoredResponse, now_millis},
};

/// Why an abandoned charge was refunded.
const ABANDONED: &str = "abandoned: the request stopped before its charge was settled";

pub async fn handle(chat_app: &ChatApp, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(chat(chat_app, &req).await))
}

async fn chat(chat_app: &ChatApp, req: &Request) -> Result<Response<Body>, ApiError> {
    let app = &chat_app.app;
    http::require_method(req, Method::POST)?;
    // Cheap checks before any I/O: a missing token or a bad body costs no round trip.
    let token = http::auth_token(req)?;
    let key = http::idempotency_key(req)?;
    let body = http::json_object(req)?;
    let message = ChatMessage::parse(
        http::string_field(&body, "message")?,
        app.config.max_message_chars,
    )?;
    let user_key = app.authenticate(token).await?;

    let Some(key) = key else {
        return answer(chat_app, &user_key, &message, None).await;
    };
    let claim = app
        .store
        .claim_idempotency_key(
            &user_key,
            &key,
            &message.fingerprint(),
            app.config.charge_timeout,
        )
        .await?;
    match claim {
        Claim::Claimed => answer(chat_app, &user_key, &message, Some(&key)).await,
        Claim::Replay(stored) => {
            tracing::info!(user = %user_key, status = stored.status, "idempotent replay");
            Ok(http::replayed(stored))
        }
        Claim::Mismatch => Err(ApiError::IdempotencyKeyReused),
        Claim::InProgress => Err(ApiError::IdempotencyInProgress),
    }
}

/// Debit, ask, then settle or refund. With an idempotency key, the outcome is written to
/// the key's record in the transaction that closes the charge; an outcome that charged
/// nothing and may differ next time (no credits, model unavailable) frees the key.
async fn answer(
    chat_app: &ChatApp,
    user_key: &str,
    message: &ChatMessage,
    key: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let ChatApp { app, gemini } = chat_app;
    let store = &app.store;
    let (charge, balance) = match debit(app, user_key).await {
        Ok(debited) => debited,
        Err(err) => {
            if let Some(key) = key
                && let Err(e) = store.release_idempotency_key(user_key, key).await
            {
                tracing::error!(error = %Chain(&e), "could not free the idempotency key");
            }
            return Err(err);
        }
    };

    let prompt = Prompt::new(gemini.default_model(), message.as_str());
    let reply = match gemini.generate(&prompt).await {
        Ok(reply) => reply,
        Err(failure) => {
            let reason = failure.to_string();
            let err = ApiError::from(failure);
            let outcome = match (key, &err) {
                (Some(key), ApiError::ContentBlocked { .. }) => Some(store.idempotency_done(
                    user_key,
                    key,
                    &StoredResponse {
                        status: err.status().as_u16(),
                        body: err.body().to_string(),
                        balance: None,
                    },
                )?),
                (Some(key), _) => Some(store.idempotency_release(user_key, key)?),
                (None, _) => None,
            };
            match store
                .refund(&charge, Some(message.as_str()), &reason, outcome)
                .await
            {
                Ok(_) => {
                    tracing::warn!(user = %user_key, charge = %charge.id, reason, "model failed; refunded")
                }
                Err(e) => {
                    tracing::error!(charge = %charge.id, error = %Chain(&e), "refund failed; charge left open")
                }
            }
            return Err(err);
        }
    };

    let body = json!({
        "message": message.as_str(),
        "response": reply.text,
        "tokens_remaining": balance,
    })
    .to_string();
    let outcome = key
        .map(|key| {
            let stored = StoredResponse {
                status: 200,
                body: body.clone(),
                balance: Some(balance),
            };
            store.idempotency_done(user_key, key, &stored)
        })
        .transpose()?;
    let answered = Answered {
        response: &reply.text,
        model: &reply.model,
        usage: reply.usage,
    };
    match store
        .settle(&charge, message.as_str(), answered, outcome)
        .await
    {
        Ok(true) => {}
        // The answer exists and the user waited for it: give it to them. The charge
        // stays open and is recovered like one whose process died.
        Ok(false) => tracing::warn!(charge = %charge.id, "charge was already closed at settle"),
        Err(e) => tracing::error!(charge = %charge.id, error = %Chain(&e), "settle failed"),
    }
    tracing::info!(
        user = %user_key, charge = %charge.id, cost = charge.cost, balance, model = %reply.model,
        prompt_tokens = reply.usage.prompt_tokens, response_tokens = reply.usage.response_tokens,
        finish_reason = reply.finish_reason.as_deref().unwrap_or("-"),
        "chat answered"
    );
    Ok(http::with_balance(
        http::json_text(StatusCode::OK, body),
        balance,
    ))
}

/// Takes the chat's cost. Charges left open by requests that died are refunded on the
/// way, and a debit refused for want of credits is tried once more if that freed some.
async fn debit(app: &App, user_key: &str) -> Result<(OpenCharge, u64), ApiError> {
    let cost = app.config.chat_cost;
    let mut retried = false;
    loop {
        match app.store.debit(user_key, cost).await? {
            Debit::Debited {
                charge,
                balance,
                open,
            } => {
                let back = recover_abandoned(app, &open).await;
                return Ok((charge, balance + back));
            }
            Debit::Insufficient { balance, open } => {
                let back = recover_abandoned(app, &open).await;
                if back == 0 || retried {
                    return Err(ApiError::InsufficientCredits {
                        balance: balance + back,
                        cost,
                    });
                }
                retried = true;
            }
            Debit::NoAccount => return Err(ApiError::InvalidToken),
        }
    }
}

/// Refunds the open charges older than the charge timeout; returns the credits given back.
async fn recover_abandoned(app: &App, open: &[OpenCharge]) -> u64 {
    let now = now_millis();
    let mut back = 0;
    for charge in open
        .iter()
        .filter(|c| c.is_abandoned(now, app.config.charge_timeout))
    {
        match app.store.refund(charge, None, ABANDONED, None).await {
            Ok(true) => {
                back += charge.cost;
                tracing::warn!(user = %charge.user_key, charge = %charge.id, cost = charge.cost, "refunded an abandoned charge");
            }
            Ok(false) => {} // closed meanwhile by another request
            Err(e) => {
                tracing::error!(charge = %charge.id, error = %Chain(&e), "could not refund an abandoned charge")
            }
        }
    }
    back
}
