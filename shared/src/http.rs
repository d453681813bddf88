//! Request parsing and JSON responses: the HTTP edge shared by every handler.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;
use lambda_http::{
    Body, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::{
    domain::ClientAddr,
    error::{ApiError, Chain},
};

/// Largest request body accepted. Chat messages are capped well below this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Rejects any method but `allowed` with 405 and an `Allow` header.
pub fn require_method(req: &Request, allowed: Method) -> Result<(), ApiError> {
    if *req.method() == allowed {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allowed: match allowed {
            Method::GET => "GET",
            Method::DELETE => "DELETE",
            _ => "POST",
        },
    })
}

/// The request body as a JSON object, for routes a web page could reach from a visitor's
/// browser without the browser asking first: only `Content-Type: application/json` is
/// accepted (415 otherwise). Browsers send that type cross-site only after a CORS
/// preflight, which this API never grants; form posts and bodies without a type are
/// refused, so no page can register or log in on its visitors' behalf.
pub fn json_body(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let bytes = body_bytes(req)?;
    match media_type(req).as_deref() {
        Some("application/json") => parse_json(bytes),
        Some(other) => Err(ApiError::UnsupportedMediaType(other.to_owned())),
        None => Err(ApiError::UnsupportedMediaType(String::new())),
    }
}

/// The body, if it is within [`MAX_BODY_BYTES`].
fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(bytes)
}

/// The essence of `Content-Type`, lower-cased (`application/json` of
/// `application/json; charset=utf-8`).
fn media_type(req: &Request) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?;
    let value = value.to_str().unwrap_or("").to_ascii_lowercase();
    Some(value.split(';').next().unwrap_or("").trim().to_owned())
}

/// The client's address as API Gateway saw it (`requestContext.identity.sourceIp`).
pub fn client_ip(req: &Request) -> Option<ClientAddr> {
    use lambda_http::{RequestExt, request::RequestContext};
    let ip = match req.request_context_ref()? {
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.as_deref(),
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref(),
        _ => None,
    }?;
    ClientAddr::parse(ip)
}

/// The request body as a JSON object, leniently (token-authenticated routes only).
///
/// JSON is the API's language; a missing `Content-Type` is taken as JSON (API Gateway
/// test events and many scripts send none). Form bodies are read too, as the original
/// service's clients could send them, and a "form" whose body is a JSON object — what
/// `curl -d '{...}'` sends when `-H 'Content-Type: application/json'` is forgotten — is
/// read as JSON. Any other declared type is refused with 415.
pub fn json_object(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let bytes = body_bytes(req)?;
    match media_type(req).as_deref() {
        None | Some("application/json") => parse_json(bytes),
        Some(e) if e.ends_with("+json") => parse_json(bytes),
        Some("application/x-www-form-urlencoded") if bytes.trim_ascii_start().starts_with(b"{") => {
            parse_json(bytes)
        }
        Some("application/x-www-form-urlencoded") => Ok(form_urlencoded::parse(bytes)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()),
        Some(other) => Err(ApiError::UnsupportedMediaType(other.to_owned())),
    }
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid(
            "body",
            "The request body must be a JSON object.",
        )),
        Err(_) => Err(ApiError::MalformedJson),
    }
}

/// A required string field of a JSON object.
pub fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ApiError::invalid(field, format!("{field} is required."))),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be a string."),
        )),
    }
}

/// The token from `Authorization: Token <t>` (or `Bearer <t>`).
pub fn auth_token(req: &Request) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::NotAuthenticated)?
        .to_str()
        .map_err(|_| ApiError::InvalidToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::InvalidToken)?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::InvalidToken);
    }
    let token = token.trim();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(ApiError::InvalidToken);
    }
    Ok(token)
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if !is_idempotency_key(key) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal).",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// 1 to 255 visible ASCII characters: an `Idempotency-Key`, or a WebSocket chat's
/// `request_id`, which is the same key.
pub(crate) fn is_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A JSON response (the headers every response carries come from
/// [`with_common_headers`]).
pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    json_text(
        status,
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    )
}

/// A response whose JSON body is already serialised (kept for idempotent replays).
pub fn json_text(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Body::Text(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The headers every response carries, whichever route built it: each function's entry
/// point passes its answer through here, so a new route can't forget them. Browsers
/// must not guess a type other than the declared one (`nosniff`), and bodies are
/// per-user data that nothing may cache unless a route says otherwise.
pub fn with_common_headers<B>(mut resp: Response<B>) -> Response<B> {
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Turns a handler's result into the response, logging failures by their weight.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    match result {
        Ok(resp) => resp,
        Err(err) => error_response(&err),
    }
}

/// The response for an error: its status, JSON body and headers.
pub fn error_response(err: &ApiError) -> Response<Body> {
    log_error(err);
    let status = err.status();
    let mut resp = json(status, &err.body());
    for (name, value) in err.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// Logs an error by its weight: server errors with their cause chain.
pub fn log_error(err: &ApiError) {
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), code = err.code(), error = %Chain(err), "request failed");
    } else {
        tracing::info!(
            status = status.as_u16(),
            code = err.code(),
            "request refused"
        );
    }
}

/// Adds `X-Tokens-Remaining`, the balance as of the write that produced it.
pub fn with_balance(mut resp: Response<Body>, balance: u64) -> Response<Body> {
    resp.headers_mut()
        .insert("x-tokens-remaining", HeaderValue::from(balance));
    resp
}

/// A response body the chat function streams (it runs in Lambda's response-streaming
/// mode): a whole body in one piece, or Server-Sent Events as they are produced.
#[derive(Debug)]
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
}

/// The writing end of a [`StreamBody`]. Sends to a reader that went away are dropped.
#[derive(Debug, Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Bytes>,
}

impl StreamBody {
    /// A body that is complete already.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(bytes.into());
        Self { rx }
    }

    /// The next piece, as a reader sees it; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// The rest of the body, whole.
    pub async fn collect(mut self) -> Bytes {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            all.extend_from_slice(&chunk);
        }
        all.into()
    }

    /// A body written piece by piece; it ends when every sender is dropped.
    pub fn channel() -> (BodySender, Self) {
        let (tx, rx) = mpsc::channel(64);
        (BodySender { tx }, Self { rx })
    }
}

impl Default for StreamBody {
    /// An empty body (a preflight's answer).
    fn default() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self { rx }
    }
}

impl BodySender {
    /// Queues `bytes`; waits while the reader is behind. `false`: the reader is gone.
    pub async fn send(&self, bytes: impl Into<Bytes>) -> bool {
        self.tx.send(bytes.into()).await.is_ok()
    }
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|b| Ok(Frame::data(b))))
    }
}

/// A buffered response as a [`StreamBody`] one.
pub fn into_stream(resp: Response<Body>) -> Response<StreamBody> {
    resp.map(|body| StreamBody::full(body.to_vec()))
}

/// One Server-Sent Event: `event: <name>` and its JSON data.
pub fn sse_event(name: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Whether the client asked for Server-Sent Events (`Accept: text/event-stream`).
pub fn wants_event_stream(req: &Request) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}
