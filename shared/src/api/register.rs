//! `POST /api/register/` `{"username", "password"}` → 201 with the starting balance.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, App,
    domain::{Password, Username},
    http,
};

/// The register function's entry point.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    super::invocation(&app.config, "register", || async {
        Ok(http::with_common_headers(http::respond(
            register(app, &req).await,
        )))
    })
    .await
}

async fn register(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let body = http::json_body(req)?;
    let username = Username::parse(http::string_field(&body, "username")?)?;
    let password = Password::parse(http::string_field(&body, "password")?)?;
    let client = http::client_ip(req);
    let tokens = app
        .accounts()
        .register(&username, password, client.as_ref())
        .await?;
    tracing::info!(user = %username.key(), tokens, "registered");
    Ok(http::json(
        StatusCode::CREATED,
        &json!({
            "message": "User registered successfully.",
            "username": username.as_str(),
            "tokens": tokens,
        }),
    ))
}
