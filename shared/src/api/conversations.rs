//! The history API, served by the chat function (same auth as chat):
//!
//! - `GET /api/conversations/` → `{"conversations": [...], "next_cursor"}`
//! - `GET /api/conversations/{id}/messages/` → `{"messages": [...], "next_cursor"}`
//! - `PATCH /api/conversations/{id}/` `{"title"}` → the renamed conversation
//! - `DELETE /api/conversations/{id}/` → 204
//!
//! Lists take `?limit=` (1–100, default 20) and `?cursor=` (a `next_cursor`); messages
//! also `?order=oldest` (the default) or `?order=newest`.
//! Times are epoch milliseconds, as everywhere in this API's stored records.

use lambda_http::{
    Body, Request, RequestExt, Response,
    http::{Method, StatusCode},
};
use serde::Serialize;

use crate::{
    ApiError, App,
    domain::{ConversationId, Title},
    http,
    service::conversations::{Conversations, Order},
    store::{ChatRecord, ConversationRecord},
};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The routes under `/api/conversations`, from the path's segments after it.
enum Route {
    List,
    One(ConversationId),
    Messages(ConversationId),
}

/// Whether `path` is under `/api/conversations`.
pub fn serves(path: &str) -> bool {
    path == "/api/conversations" || path.starts_with("/api/conversations/")
}

pub async fn handle(app: &App, req: Request, path: &str) -> Response<Body> {
    http::respond(conversations(app, &req, path).await)
}

async fn conversations(app: &App, req: &Request, path: &str) -> Result<Response<Body>, ApiError> {
    let route = route(path)?;
    let allowed = match route {
        Route::List | Route::Messages(_) => "GET",
        Route::One(_) => "PATCH, DELETE",
    };
    if !allowed.split(", ").any(|m| m == req.method().as_str()) {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allowed,
        });
    }
    let token = http::auth_token(req)?;
    // Everything the request says is checked before any I/O.
    let title = match (&route, req.method()) {
        (Route::One(_), &Method::PATCH) => {
            let body = http::json_object(req)?;
            Some(Title::parse(http::string_field(&body, "title")?)?)
        }
        _ => None,
    };
    let (limit, cursor) = paging(req)?;
    let order = match &route {
        Route::Messages(_) => order(req)?,
        _ => Order::default(),
    };
    let user = app.authenticate(token).await?.user.account;
    let service = Conversations::new(&app.store, &app.config.conversations);
    match route {
        Route::List => {
            let (items, next) = service.list(&user, limit, cursor.as_deref()).await?;
            let body = ConversationList {
                conversations: items.iter().map(ConversationView::from).collect(),
                next_cursor: next,
            };
            Ok(http::json(StatusCode::OK, &body))
        }
        Route::Messages(id) => {
            let (items, next) = service
                .messages(&user, &id, limit, cursor.as_deref(), order)
                .await?;
            let body = MessageList {
                messages: items.iter().map(MessageView::from).collect(),
                next_cursor: next,
            };
            Ok(http::json(StatusCode::OK, &body))
        }
        Route::One(id) => match title {
            Some(title) => {
                let renamed = service.rename(&user, &id, &title).await?;
                Ok(http::json(
                    StatusCode::OK,
                    &ConversationView::from(&renamed),
                ))
            }
            None => {
                service.delete(&user, &id).await?;
                let mut resp = Response::new(Body::Empty);
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
        },
    }
}

fn route(path: &str) -> Result<Route, ApiError> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/api/conversations")
        .unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Ok(Route::List),
        [id] => Ok(Route::One(ConversationId::parse(id)?)),
        [id, "messages"] => Ok(Route::Messages(ConversationId::parse(id)?)),
        _ => Err(ApiError::NotFound("endpoint")),
    }
}

/// `?limit=` and `?cursor=`.
fn paging(req: &Request) -> Result<(usize, Option<String>), ApiError> {
    let query = req.query_string_parameters();
    let limit = match query.first("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}."),
                ));
            }
        },
    };
    let cursor = query
        .first("cursor")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok((limit, cursor))
}

/// `?order=` of a conversation's messages: `oldest` (default) or `newest` first.
fn order(req: &Request) -> Result<Order, ApiError> {
    match req.query_string_parameters().first("order") {
        None | Some("oldest") => Ok(Order::OldestFirst),
        Some("newest") => Ok(Order::NewestFirst),
        Some(_) => Err(ApiError::invalid(
            "order",
            "order must be oldest or newest.",
        )),
    }
}

#[derive(Serialize)]
struct ConversationList {
    conversations: Vec<ConversationView>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct ConversationView {
    id: String,
    title: String,
    model: String,
    created_at: u64,
    updated_at: u64,
    messages: u64,
}

impl From<&ConversationRecord> for ConversationView {
    fn from(c: &ConversationRecord) -> Self {
        Self {
            id: c.id.as_str().to_owned(),
            title: c.title.clone(),
            model: c.model.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            messages: c.messages,
        }
    }
}

#[derive(Serialize)]
struct MessageList {
    messages: Vec<MessageView>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct MessageView {
    id: String,
    message: String,
    response: String,
    model: String,
    cost: u64,
    created_at: u64,
    /// Why the answer ended (`STOP`, `MAX_TOKENS`, or, for an answer cut short and
    /// charged for the words given, `SAFETY`, `RECITATION`…); `null` for older records.
    finish_reason: Option<String>,
}

impl From<&ChatRecord> for MessageView {
    fn from(c: &ChatRecord) -> Self {
        Self {
            id: c.id.clone(),
            message: c.message.clone(),
            response: c.response.clone().unwrap_or_default(),
            model: c.model.clone().unwrap_or_default(),
            cost: c.cost,
            created_at: c.created_at,
            finish_reason: c.finish_reason.clone(),
        }
    }
}
