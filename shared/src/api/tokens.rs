//! `GET /api/tokens/` → `{"tokens": <balance>}`.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{ApiError, App, http, service::charges::Charges};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    Ok(http::respond(tokens(app, &req).await))
}

async fn tokens(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    let user_key = app.authenticate(http::auth_token(req)?).await?;
    let balance = Charges::new(&app.store, app.config.charge_timeout)
        .balance(&user_key)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    Ok(http::with_balance(
        http::json(StatusCode::OK, &json!({ "tokens": balance })),
        balance,
    ))
}
