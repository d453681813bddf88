//! The WebSocket API: API Gateway's `$connect`, `$disconnect` and message events, and
//! `POST /api/ws-ticket/`.
//!
//! A chat over a WebSocket is the third rendering of the one chat service, beside the
//! JSON body and Server-Sent Events: the same [`Asked`] fields, the same `begin`, the
//! same stream and charge lifecycle, the same events (`start`, `delta`, `done`, `error`,
//! from [`chat::event`]); only the writing differs: each event is a frame posted to the
//! connection through `@connections`, carrying the chat's `request_id`.
//!
//! - Deltas are coalesced: the first goes out at once, later ones at most one per
//!   [`SocketConfig::frame_interval`] (20 a second), holding what arrived meanwhile. A
//!   long answer is then a few dozen billed messages, not one per Gemini chunk.
//! - Frames stay under [`MAX_FRAME`] (API Gateway bills by the 32 KB): a longer delta is
//!   split; a `done` too long to carry its `response` leaves it out
//!   (`"response_omitted": true`) after its deltas delivered it.
//! - A client that went away (`GoneException`) stops the posting, not the answer: it is
//!   stored and charged as a streamed one whose reader left.
//! - `request_id` is the chat's idempotency key (one is made up if the client sends
//!   none): a resend after a dropped connection replays, and a cancel names it.
//! - Every message answers the invocation with `{"statusCode": 200}`; what the client
//!   learns, it learns from frames, errors included. Only `$connect` answers with an
//!   error status, which refuses the connection.
//!
//! [`SocketConfig::frame_interval`]: crate::config::SocketConfig::frame_interval

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use bytes::Bytes;
use lambda_http::{
    Body, Request, Response,
    aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest,
    http::{Method, StatusCode},
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::chat::{self, Asked};
use crate::{
    ApiError, ChatApp,
    connections::{ConnectionId, Connections, Posted},
    http,
    service::{
        accounts::Authed,
        chat::{Begun, Outcome, Progress},
        sockets::{Sockets, balance_frame},
    },
    telemetry::Chain,
};

/// API Gateway bills WebSocket messages by the 32 KB; frames stay within one.
pub const MAX_FRAME: usize = 32 * 1024;

/// Whether a Lambda event is an API Gateway WebSocket event (they carry a connection id
/// and an event type; REST and HTTP API events carry neither).
pub fn is_websocket(event: &Value) -> bool {
    let context = &event["requestContext"];
    context["connectionId"].is_string() && context["eventType"].is_string()
}

/// One WebSocket event; the answer is the invocation's (buffered) result.
pub async fn handle(chat_app: &ChatApp, event: Value) -> Value {
    let event: ApiGatewayWebsocketProxyRequest = match serde_json::from_value(event) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(error = %e, "not a WebSocket event");
            return status(StatusCode::BAD_REQUEST, None);
        }
    };
    let context = &event.request_context;
    if let (Some(domain), Some(stage)) = (&context.domain_name, &context.stage) {
        chat_app.connections.learn_endpoint(domain, stage);
    }
    let Some(id) = context
        .connection_id
        .as_deref()
        .and_then(ConnectionId::parse)
    else {
        return status(StatusCode::BAD_REQUEST, None);
    };
    let sockets = sockets(chat_app);
    match context.event_type.as_deref() {
        Some("CONNECT") => {
            let ticket = event.query_string_parameters.first("ticket").unwrap_or("");
            match sockets.connect(ticket, &id).await {
                Ok(_) => status(StatusCode::OK, None),
                Err(e) => {
                    let err = ApiError::from(e);
                    http::log_error(&err);
                    status(err.status(), Some(err.body()))
                }
            }
        }
        Some("DISCONNECT") => {
            sockets.disconnect(&id).await;
            status(StatusCode::OK, None)
        }
        _ => {
            let body = match (event.body.as_deref(), event.is_base64_encoded) {
                (None, _) => Vec::new(),
                (Some(text), false) => text.as_bytes().to_vec(),
                (Some(text), true) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap_or_default()
                }
            };
            message(chat_app, &id, &body).await;
            status(StatusCode::OK, None)
        }
    }
}

/// `POST /api/ws-ticket/` → `{"ticket", "expires_in", "url"}`: a ticket for one
/// `$connect` within `expires_in` seconds, bound to the token's session.
pub async fn ticket(chat_app: &ChatApp, req: Request) -> Response<Body> {
    http::respond(
        async {
            http::require_method(&req, Method::POST)?;
            let token = http::auth_token(&req)?;
            let authed = chat_app.app.authenticate(token).await?;
            let issued = sockets(chat_app).issue_ticket(&authed).await?;
            let body = json!({
                "ticket": issued.ticket.expose(),
                "expires_in": issued.expires_in.as_secs(),
                "url": issued.url,
            });
            Ok(http::json(StatusCode::OK, &body))
        }
        .await,
    )
}

fn sockets(chat_app: &ChatApp) -> Sockets<'_> {
    Sockets {
        store: &chat_app.app.store,
        config: &chat_app.app.config,
        settings: &chat_app.sockets,
        connections: &chat_app.connections,
    }
}

fn status(status: StatusCode, body: Option<Value>) -> Value {
    let mut answer = json!({ "statusCode": status.as_u16() });
    if let Some(body) = body {
        answer["body"] = json!(body.to_string());
    }
    answer
}

/// A message: `{"action": "chat" | "cancel" | "balance", …}`. Whatever goes wrong is
/// an `error` frame; the connection stays open (unless its session ended).
async fn message(chat_app: &ChatApp, id: &ConnectionId, body: &[u8]) {
    let out = Outbox::new(&chat_app.connections, id, chat_app.sockets.frame_interval);
    let fields = match http::parse_json(body) {
        Ok(fields) => fields,
        Err(err) => return out.error(None, &err, None).await,
    };
    let request_id = match fields.get("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if http::is_idempotency_key(key) => Some(key.clone()),
        Some(_) => {
            let err = ApiError::invalid(
                "request_id",
                "request_id must be 1 to 255 visible ASCII characters (a UUID is ideal).",
            );
            return out.error(None, &err, None).await;
        }
    };
    let action = match fields.get("action") {
        Some(Value::String(action)) => action.as_str(),
        _ => {
            let err = ApiError::invalid("action", "action is required: chat, cancel or balance.");
            return out.error(request_id.as_deref(), &err, None).await;
        }
    };
    let handled = match action {
        "chat" => {
            let request_id = request_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            chat_over(chat_app, &out, &fields, &request_id)
                .await
                .map_err(|e| (e, Some(request_id)))
        }
        "cancel" => cancel(chat_app, &out, request_id.as_deref())
            .await
            .map_err(|e| (e, request_id)),
        "balance" => balance(chat_app, &out).await.map_err(|e| (e, None)),
        other => Err((ApiError::UnknownAction(truncated(other)), request_id)),
    };
    if let Err((err, request_id)) = handled {
        out.error(request_id.as_deref(), &err, None).await;
        if matches!(err, ApiError::InvalidToken | ApiError::TokenExpired) {
            // Its session is over: so is the connection, once it was told why.
            return sockets(chat_app).hang_up(id).await;
        }
    }
    if out.gone() {
        // The client left: its connection is forgotten (its `$disconnect` may never come).
        sockets(chat_app).disconnect(id).await;
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The caller's session, checked at each message: a logged-out session's connection
/// stops working (and is closed, see [`message`]).
async fn caller(chat_app: &ChatApp, out: &Outbox<'_>) -> Result<Authed, ApiError> {
    Ok(sockets(chat_app).caller(out.id).await?)
}

/// `{"action": "chat", "message", "conversation_id"?, "model"?, "request_id"?}`.
async fn chat_over(
    chat_app: &ChatApp,
    out: &Outbox<'_>,
    fields: &Map<String, Value>,
    request_id: &str,
) -> Result<(), ApiError> {
    let asked = Asked::parse(&chat_app.app, fields)?;
    let authed = caller(chat_app, out).await?;
    let service = chat::service(chat_app);
    let request = asked.request(chat_app, &authed, Some(request_id.to_owned()));
    let turn = match service.begin(request).await? {
        Begun::Started(turn) => turn,
        Begun::Replay(outcome) => {
            tracing::info!("idempotent replay");
            return match outcome {
                Outcome::Answered(answer) => {
                    let mut done = chat::done(&answer);
                    done["replayed"] = json!(true);
                    out.done(request_id, done, true).await;
                    Ok(())
                }
                Outcome::Refused { reason } => Err(ApiError::ContentBlocked { reason }),
                Outcome::ConversationDeleted { .. } => Err(ApiError::NotFound("conversation")),
            };
        }
    };
    // A cancel may reach another process: it is a flag on this chat's idempotency
    // record, looked for while the turn runs, and heeded by the service as any cancel.
    let account = turn.hold.charge.account.clone();
    let sockets = sockets(chat_app);
    let mut cancel = std::pin::pin!(sockets.cancelled(&account, request_id));
    let open = match service.open_stream_until(turn, cancel.as_mut()).await {
        Ok(open) => open,
        Err(err) => {
            let err = ApiError::from(err);
            http::log_error(&err);
            out.error(Some(request_id), &err, Some(false)).await;
            return Ok(());
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let run = open.run_until(service, cancel.as_mut(), move |progress| {
        let _ = tx.send(progress);
    });
    tokio::join!(run, out.stream(request_id, rx));
    Ok(())
}

/// `{"action": "cancel", "request_id"}`: the running chat answers (`done` with
/// `CANCELLED`, or an `error` with code `cancelled`); only a request that is not
/// running gets an answer here.
async fn cancel(
    chat_app: &ChatApp,
    out: &Outbox<'_>,
    request_id: Option<&str>,
) -> Result<(), ApiError> {
    let request_id =
        request_id.ok_or_else(|| ApiError::invalid("request_id", "request_id is required."))?;
    let authed = caller(chat_app, out).await?;
    match sockets(chat_app)
        .cancel(&authed.user.account, request_id)
        .await?
    {
        true => Ok(()),
        false => Err(ApiError::NotFound("running chat with this request_id")),
    }
}

/// `{"action": "balance"}` → `{"type": "balance", "tokens"}`.
async fn balance(chat_app: &ChatApp, out: &Outbox<'_>) -> Result<(), ApiError> {
    let authed = caller(chat_app, out).await?;
    let tokens = chat::service(chat_app)
        .charges()
        .balance(&authed.user)
        .await?;
    out.post(balance_frame(tokens)).await;
    Ok(())
}

/// The frames of one message, posted to its connection in order.
struct Outbox<'a> {
    connections: &'a Connections,
    id: &'a ConnectionId,
    interval: Duration,
    gone: Cell<bool>,
}

impl<'a> Outbox<'a> {
    fn new(connections: &'a Connections, id: &'a ConnectionId, interval: Duration) -> Self {
        Self {
            connections,
            id,
            interval,
            gone: Cell::new(false),
        }
    }

    fn gone(&self) -> bool {
        self.gone.get()
    }

    /// Posts a frame, unless the client is gone; finding it gone stops every later post.
    async fn post(&self, frame: Bytes) {
        if self.gone.get() {
            return;
        }
        match self.connections.post(self.id, frame).await {
            Ok(Posted::Sent) => {}
            Ok(Posted::Gone) => {
                tracing::info!(connection = %self.id, "client gone; the answer goes on without it");
                self.gone.set(true);
            }
            Err(e) => {
                tracing::warn!(connection = %self.id, error = %Chain(&e), "frame not posted")
            }
        }
    }

    /// `{"type", "request_id", …fields}`.
    async fn event(&self, kind: &str, request_id: Option<&str>, fields: Value) {
        self.post(frame(kind, request_id, fields)).await;
    }

    async fn error(&self, request_id: Option<&str>, err: &ApiError, charged: Option<bool>) {
        let mut fields = err.body();
        if let Some(charged) = charged {
            fields["charged"] = json!(charged);
        }
        self.event("error", request_id, fields).await;
    }

    /// A delta, split into frames of at most [`MAX_FRAME`] bytes.
    async fn delta(&self, request_id: &str, text: &str) {
        let whole = frame("delta", Some(request_id), json!({ "text": text }));
        if whole.len() <= MAX_FRAME {
            return self.post(whole).await;
        }
        let mut pieces = vec![text];
        while let Some(piece) = pieces.first().copied() {
            let framed = frame("delta", Some(request_id), json!({ "text": piece }));
            if framed.len() <= MAX_FRAME || piece.chars().count() < 2 {
                self.post(framed).await;
                pieces.remove(0);
                continue;
            }
            let mut half = piece.len() / 2;
            while !piece.is_char_boundary(half) {
                half += 1;
            }
            let (left, right) = piece.split_at(half);
            pieces.splice(0..1, [left, right]);
        }
    }

    /// `done`, with its `response` if that fits in one frame; otherwise the response
    /// went out as deltas (a replay sends them first, `send_text`) and `done` leaves it
    /// out.
    async fn done(&self, request_id: &str, mut fields: Value, send_text: bool) {
        let whole = frame("done", Some(request_id), fields.clone());
        if whole.len() <= MAX_FRAME {
            return self.post(whole).await;
        }
        if send_text && let Some(text) = fields["response"].as_str() {
            self.delta(request_id, text).await;
        }
        if let Some(fields) = fields.as_object_mut() {
            fields.remove("response");
            fields.insert("response_omitted".into(), json!(true));
        }
        self.event("done", Some(request_id), fields).await;
    }

    /// Writes a streamed turn's events as they come, coalescing deltas: the first at
    /// once, then at most one frame per `interval`, holding what arrived meanwhile.
    async fn stream(&self, request_id: &str, mut rx: mpsc::UnboundedReceiver<Progress>) {
        let mut last_delta: Option<Instant> = None;
        let mut next = None;
        loop {
            let progress = match next.take() {
                Some(progress) => progress,
                None => match rx.recv().await {
                    Some(progress) => progress,
                    None => return,
                },
            };
            let Progress::Delta(mut text) = progress else {
                let (kind, fields) = chat::event(progress);
                match kind {
                    "done" => self.done(request_id, fields, false).await,
                    _ => self.event(kind, Some(request_id), fields).await,
                }
                continue;
            };
            if let Some(at) = last_delta {
                tokio::time::sleep_until((at + self.interval).into()).await;
            }
            loop {
                match rx.try_recv() {
                    Ok(Progress::Delta(more)) => text.push_str(&more),
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            last_delta = Some(Instant::now());
            self.delta(request_id, &text).await;
        }
    }
}

fn frame(kind: &str, request_id: Option<&str>, fields: Value) -> Bytes {
    let mut frame = Map::new();
    frame.insert("type".into(), json!(kind));
    if let Some(request_id) = request_id {
        frame.insert("request_id".into(), json!(request_id));
    }
    if let Value::Object(fields) = fields {
        frame.extend(fields);
    }
    Bytes::from(Value::Object(frame).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_events_are_told_from_http_ones() {
        let connect: Value =
            serde_json::from_str(include_str!("../../../events/websocket/connect.json")).unwrap();
        assert!(is_websocket(&connect));
        let rest: Value = serde_json::from_str(include_str!("../../../events/chat.json")).unwrap();
        assert!(!is_websocket(&rest));
    }

    #[test]
    fn frames_carry_type_and_request_id_first() {
        let framed = frame("delta", Some("r1"), json!({ "text": "hi" }));
        assert_eq!(
            &framed[..],
            br#"{"type":"delta","request_id":"r1","text":"hi"}"#
        );
    }
}
