//! `POST /api/login/` `{"username", "password"}` → `{"token"}`.
//!
//! Unknown user and wrong password give the same 401 after the same amount of work;
//! a throttled name or address gets the same 429 whatever the password.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{ApiError, App, domain::Password, http};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(login(app, &req).await))
}

async fn login(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let body = http::json_body(req)?;
    let username = http::string_field(&body, "username")?;
    let password = Password::parse_for_login(http::string_field(&body, "password")?)?;
    let client = http::client_ip(req);
    let token = app
        .accounts()
        .login(username, password, client.as_ref())
        .await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({ "token": token.expose() }),
    ))
}
