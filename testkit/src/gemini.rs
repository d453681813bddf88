//! The Gemini stand-in.
//!
//! What a request gets, first match wins:
//! 1. the next entry of the script ([`GeminiStandIn::script`]),
//! 2. a directive in the prompt text, such as `[standin:503]` (see [`Behavior::from_directive`]),
//! 3. the default behaviour ([`GeminiStandIn::set_behavior`]), normally [`Behavior::Answer`].

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

/// How the stand-in answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// 200 with a canned answer derived from the prompt.
    Answer,
    /// Answer after a pause.
    Slow(Duration),
    /// Google's error JSON with this HTTP status (400, 403, 404, 429, 500, 503, 504).
    Status(u16),
    /// 429 whose details carry `RetryInfo.retryDelay`.
    RateLimited { retry_delay_secs: f64 },
    /// Accept the request and never answer.
    Hang,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200, no candidates, `promptFeedback.blockReason: SAFETY`.
    PromptBlocked,
    /// 200, one candidate with `finishReason: SAFETY` and no text.
    SafetyFinish,
    /// 200 with an empty candidate list and no block reason.
    NoCandidates,
}

impl Behavior {
    /// Reads `[standin:<what>]` from a prompt: `answer`, `400`…`504`, `429`,
    /// `ratelimit`, `timeout`, `slow=<ms>`, `malformed`, `blocked`, `safety`, `empty`.
    pub fn from_directive(prompt: &str) -> Option<Self> {
        let start = prompt.find("[standin:")? + "[standin:".len();
        let what = &prompt[start..start + prompt[start..].find(']')?];
        Some(match what {
            "answer" => Self::Answer,
            "ratelimit" => Self::RateLimited {
                retry_delay_secs: 1.0,
            },
            "timeout" => Self::Hang,
            "malformed" => Self::Malformed,
            "blocked" => Self::PromptBlocked,
            "safety" => Self::SafetyFinish,
            "empty" => Self::NoCandidates,
            other => match other.strip_prefix("slow=") {
                Some(ms) => Self::Slow(Duration::from_millis(ms.parse().ok()?)),
                None => Self::Status(other.parse().ok().filter(|s| (400..600).contains(s))?),
            },
        })
    }
}

struct Shared {
    default: Mutex<Behavior>,
    script: Mutex<VecDeque<Behavior>>,
    requests: AtomicUsize,
    last_request: Mutex<Option<(HeaderMap, Value)>>,
    api_key: Option<String>,
}

/// A running stand-in. Dropping it stops the server.
pub struct GeminiStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Drop for GeminiStandIn {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl GeminiStandIn {
    /// Starts on a free loopback port, answering every request.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"), None).await
    }

    /// Starts with a given default behaviour.
    pub async fn with_behavior(behavior: Behavior) -> Self {
        let standin = Self::start().await;
        standin.set_behavior(behavior);
        standin
    }

    /// Starts on `addr`. With `api_key`, any other key is refused as Google would.
    pub async fn start_on(addr: SocketAddr, api_key: Option<String>) -> Self {
        let shared = Arc::new(Shared {
            default: Mutex::new(Behavior::Answer),
            script: Mutex::new(VecDeque::new()),
            requests: AtomicUsize::new(0),
            last_request: Mutex::new(None),
            api_key,
        });
        let app = Router::new()
            .route("/v1beta/models/{*call}", post(handle))
            .with_state(shared.clone());
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the Gemini stand-in");
        let addr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server: Some(server),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `GEMINI_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.shared.default.lock().unwrap() = behavior;
    }

    /// Queues behaviours for the next requests, in order.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.shared.script.lock().unwrap().extend(behaviors);
    }

    /// How many model calls arrived.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Headers and JSON body of the latest model call.
    pub fn last_request(&self) -> Option<(HeaderMap, Value)> {
        self.shared.last_request.lock().unwrap().clone()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(call): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let Some((model, method)) = call.split_once(':') else {
        return error(404, "NOT_FOUND", &format!("Method not found: {call}"));
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return error(404, "NOT_FOUND", &format!("Method not found: {method}")),
    };
    let Some(key) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) else {
        return error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        );
    };
    if shared.api_key.as_deref().is_some_and(|k| k != key) {
        return error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
        );
    }
    if !model.starts_with("gemini-") {
        return error(
            404,
            "NOT_FOUND",
            &format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent."
            ),
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            );
        }
    };
    let Some(prompt) = prompt_text(&request) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        );
    };
    *shared.last_request.lock().unwrap() = Some((headers.clone(), request.clone()));

    let scripted = shared.script.lock().unwrap().pop_front();
    let behavior = scripted
        .or_else(|| Behavior::from_directive(&prompt))
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());

    let answer = match behavior {
        Behavior::Answer => answer(model, &prompt),
        Behavior::Slow(pause) => {
            tokio::time::sleep(pause).await;
            answer(model, &prompt)
        }
        Behavior::Status(code) => return error(code, status_name(code), status_message(code)),
        Behavior::RateLimited { retry_delay_secs } => {
            return error_with_details(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{retry_delay_secs}s"),
                }]),
            );
        }
        Behavior::Hang => std::future::pending().await,
        Behavior::Malformed => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                "{\"candidates\": [{\"content\": ",
            )
                .into_response();
        }
        Behavior::PromptBlocked => json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
            "usageMetadata": usage(&prompt, ""),
            "modelVersion": model,
        }),
        Behavior::SafetyFinish => json!({
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]}],
            "usageMetadata": usage(&prompt, ""),
            "modelVersion": model,
        }),
        Behavior::NoCandidates => {
            json!({ "usageMetadata": usage(&prompt, ""), "modelVersion": model })
        }
    };
    if stream
        && query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"))
    {
        return sse(answer);
    }
    axum::Json(answer).into_response()
}

fn prompt_text(request: &Value) -> Option<String> {
    let contents = request.get("contents")?.as_array()?;
    let text: Vec<&str> = contents
        .iter()
        .filter_map(|c| c.get("parts")?.as_array())
        .flatten()
        .filter_map(|p| p.get("text")?.as_str())
        .collect();
    (!text.is_empty()).then(|| text.join("\n"))
}

/// The canned answer: deterministic, and says plainly that it is canned.
fn answer(model: &str, prompt: &str) -> Value {
    let preview: String = prompt.chars().take(80).collect();
    let text = format!("[canned answer from the local Gemini stand-in] You said: {preview}");
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": usage(prompt, &text),
        "modelVersion": model,
        "responseId": format!("standin-{:x}", prompt.len()),
    })
}

fn usage(prompt: &str, answer: &str) -> Value {
    let count = |s: &str| s.chars().count().div_ceil(4) as u64;
    let (p, c) = (count(prompt), count(answer));
    json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c})
}

/// The streaming form: the answer split into `data:` events, the finish reason and
/// usage on the last one, as Gemini sends them.
fn sse(full: Value) -> Response {
    let text = full
        .pointer("/candidates/0/content/parts/0/text")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut events = Vec::new();
    match text {
        Some(text) => {
            let words: Vec<&str> = text.split_inclusive(' ').collect();
            let chunks: Vec<String> = words.chunks(4).map(|c| c.concat()).collect();
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.iter().enumerate() {
                let mut event = json!({
                    "candidates": [{"content": {"parts": [{"text": chunk}], "role": "model"}, "index": 0}],
                    "modelVersion": full["modelVersion"],
                });
                if i == last {
                    event["candidates"][0]["finishReason"] = json!("STOP");
                    event["usageMetadata"] = full["usageMetadata"].clone();
                }
                events.push(event);
            }
        }
        None => events.push(full),
    }
    let body: String = events
        .iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn status_message(code: u16) -> &'static str {
    match code {
        400 => "Request contains an invalid argument.",
        403 => "The caller does not have permission",
        404 => "Requested entity was not found.",
        429 => "Resource has been exhausted (e.g. check quota).",
        500 => {
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        }
        503 => "The model is overloaded. Please try again later.",
        504 => "Deadline expired before operation could complete.",
        _ => "Unknown error.",
    }
}

fn error(code: u16, status: &str, message: &str) -> Response {
    error_with_details(code, status, message, json!([]))
}

fn error_with_details(code: u16, status: &str, message: &str, details: Value) -> Response {
    let mut error = json!({"code": code, "message": message, "status": status});
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        error["details"] = details;
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "error": error }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_pick_a_failure() {
        assert_eq!(
            Behavior::from_directive("hi [standin:503] there"),
            Some(Behavior::Status(503))
        );
        assert_eq!(
            Behavior::from_directive("[standin:timeout]"),
            Some(Behavior::Hang)
        );
        assert_eq!(
            Behavior::from_directive("[standin:slow=20]"),
            Some(Behavior::Slow(Duration::from_millis(20)))
        );
        assert_eq!(Behavior::from_directive("plain question"), None);
        assert_eq!(Behavior::from_directive("[standin:999]"), None);
    }
}
