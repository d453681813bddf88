//! The login function's other routes, all about the caller's own account:
//!
//! - `POST /api/logout/` ends the presented token's session;
//! - `POST /api/logout/all/` ends every session of the user;
//! - `GET /api/sessions/` lists the live sessions (never a token);
//! - `POST /api/password/` `{"old_password", "new_password"}` changes the password and
//!   ends every other session;
//! - `DELETE /api/account/` `{"password"}` deletes the account.
//!
//! [`route`] picks the handler by path; anything else goes to login.

use lambda_http::{
    Body, Error, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{
    ApiError, App,
    domain::{Invalid, Password},
    http,
    service::accounts::Deletion,
};

/// The login function's entry point: one function owns sessions and password hashes.
pub async fn route(app: &App, req: Request) -> Result<Response<Body>, Error> {
    super::invocation(&app.config, "login", || route_request(app, req)).await
}

async fn route_request(app: &App, req: Request) -> Result<Response<Body>, Error> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let result = if path.ends_with("/logout/all") {
        logout_all(app, &req).await
    } else if path.ends_with("/logout") {
        logout(app, &req).await
    } else if path.ends_with("/sessions") {
        sessions(app, &req).await
    } else if path.ends_with("/password") {
        password(app, &req).await
    } else if path.ends_with("/account") {
        delete_account(app, &req).await
    } else {
        return Ok(http::with_common_headers(
            super::login::handle(app, req).await?,
        ));
    };
    Ok(http::with_common_headers(http::respond(result)))
}

async fn logout(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let authed = app.authenticate(http::auth_token(req)?).await?;
    app.accounts().logout(&authed).await?;
    tracing::info!(user = %authed.user_key, session = %authed.session_id, "logged out");
    Ok(http::json(
        StatusCode::OK,
        &json!({"detail": "Logged out."}),
    ))
}

async fn logout_all(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let authed = app.authenticate(http::auth_token(req)?).await?;
    let ended = app.accounts().sessions(&authed).len();
    app.accounts().logout_all(&authed).await?;
    tracing::info!(user = %authed.user_key, ended, "logged out everywhere");
    Ok(http::json(
        StatusCode::OK,
        &json!({"detail": "Every session ended.", "ended": ended}),
    ))
}

async fn sessions(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    let authed = app.authenticate(http::auth_token(req)?).await?;
    let sessions = app.accounts().sessions(&authed);
    Ok(http::json(StatusCode::OK, &json!({ "sessions": sessions })))
}

async fn password(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::POST)?;
    let token = http::auth_token(req)?;
    let body = http::json_body(req)?;
    let old = Password::parse_for_login(http::string_field(&body, "old_password")?)?;
    let new = Password::parse(http::string_field(&body, "new_password")?)
        .map_err(|e| rename_field(e, "new_password"))?;
    let authed = app.authenticate(token).await?;
    app.accounts().change_password(&authed, old, new).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({"detail": "Password changed; every other session ended."}),
    ))
}

async fn delete_account(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::DELETE)?;
    let token = http::auth_token(req)?;
    let body = http::json_body(req)?;
    let password = Password::parse_for_login(http::string_field(&body, "password")?)?;
    let authed = app.authenticate(token).await?;
    let deletion = app
        .accounts()
        .delete_account(&authed, password, app.config.charge_timeout)
        .await?;
    Ok(match deletion {
        Deletion::Done(_) => http::json(StatusCode::OK, &json!({"detail": "Account deleted."})),
        Deletion::Unfinished { retired } => {
            let mut resp = http::json(
                StatusCode::ACCEPTED,
                &json!({
                    "detail": format!("The account is closed and {retired} more of its records are gone; send the same request again to finish deleting it."),
                    "code": "deletion_in_progress",
                }),
            );
            resp.headers_mut().insert(
                "retry-after",
                lambda_http::http::HeaderValue::from_static("1"),
            );
            resp
        }
    })
}

/// Password rules speak of `password`; here the field is called something else.
fn rename_field(err: Invalid, field: &'static str) -> Invalid {
    match err {
        Invalid::Field { message, .. } => Invalid::Field {
            field,
            message: message.replacen("password", field, 1),
        },
        other => other,
    }
}
