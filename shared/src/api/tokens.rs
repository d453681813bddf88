//! `GET /api/tokens/` → `{"tokens": <balance>}`: one read of the user item, which both
//! checks the token and holds the balance.

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
    let authed = app.authenticate(http::auth_token(req)?).await?;
    let balance = Charges::new(&app.store, app.config.charge_timeout)
        .balance(&authed.user)
        .await?;
    Ok(http::with_balance(
        http::json(StatusCode::OK, &json!({ "tokens": balance })),
        balance,
    ))
}
