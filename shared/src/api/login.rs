//! `POST /api/login/` `{"username", "password"}` → `{"token"}`.
//!
//! Unknown user and wrong password give the same 401 after the same amount of work.

use std::time::Duration;

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, App, auth,
    domain::{Password, Username},
    http,
    store::{Session, now_millis},
};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(login(app, &req).await))
}

async fn login(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let body = http::json_object(req)?;
    let username = http::string_field(&body, "username")?;
    let password = Password::parse_for_login(http::string_field(&body, "password")?)?;
    // A name that breaks the rules can't have an account, but still costs a verify.
    let user_key = Username::parse(username).ok().map(|u| u.key());
    let stored = match &user_key {
        Some(key) => app.store.user_credentials(key).await?,
        None => None,
    };
    let verified = auth::verify_password(stored.map(|c| c.password_hash), password).await?;
    let (true, Some(user_key)) = (verified, user_key) else {
        return Err(ApiError::InvalidCredentials);
    };
    let token = auth::new_token()?;
    let expires_at = Duration::from_millis(now_millis()) + app.config.token_ttl;
    let session = Session {
        user_key,
        expires_at: expires_at.as_secs(),
    };
    app.store
        .put_session(&auth::token_digest(&token), &session)
        .await?;
    tracing::info!(user = %session.user_key, expires_at = session.expires_at, "logged in");
    Ok(http::json(StatusCode::OK, &json!({ "token": token })))
}
