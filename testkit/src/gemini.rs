//! The Gemini stand-in: `generateContent` and `streamGenerateContent?alt=sse` as
//! Google serves them, with every failure the client must survive on request.
//!
//! What a request gets, first match wins:
//! 1. the next entry of the script ([`GeminiStandIn::script`]),
//! 2. a directive in the text of the LAST user message of `contents` (earlier turns may
//!    hold old directives and are ignored), such as `[standin:503]`:
//!    - `answer`; `long` or `long=<words>`: a long answer; `slow=<ms>`: answer after a pause
//!    - `hostile`: an answer in Markdown that also carries hostile HTML (an `<img
//!      onerror>`, a `<script>`, `javascript:` links, a remote image, an iframe), for
//!      clients that must render answers safely ([`HOSTILE_ANSWER`])
//!    - `400` … `599`: Google's error JSON with that status; `429` / `ratelimit`: quota
//!      exhausted, `RetryInfo.retryDelay` "1s"; `retrydelay=<raw>`: 429 whose
//!      `retryDelay` is exactly `<raw>` (a JSON value if it parses as one, else a string)
//!    - `timeout`: never answer; `malformed`: a body (or first SSE event) that is not JSON
//!    - `blocked`: prompt blocked (in the first and only chunk of a stream); `safety`:
//!      answer withheld; `empty`: no candidates
//!    - streams (a buffered call gets the nearest equivalent): `drop=<n>`: the connection
//!      breaks after n chunks; `midsafety=<n>` / `midrecitation=<n>`: n chunks, then
//!      `finishReason: SAFETY` / `RECITATION` with no content (buffered: the text of
//!      those n chunks with that finish reason); `stall=<n>`: n chunks, then silence
//!      with the connection open; `truncate=<n>`: n chunks, then a clean end without a
//!      finish reason
//!    - `redirect` / `redirect=<3xx>`: a redirect to the stand-in's second listener, which
//!      records whether the API key came along ([`GeminiStandIn::redirect_hits`])
//! 3. the default behaviour ([`GeminiStandIn::set_behavior`]), normally [`Behavior::Answer`].
//!
//! Streams are paced like the real API ([`Pacing`]): the first chunk after a pause, then
//! a few words per chunk; usage counts are cumulative, the last chunk carries the finish
//! reason and final totals, and there is no `[DONE]` marker. Every request is recorded
//! ([`GeminiStandIn::recorded`]), with the instant each chunk was written and whether the
//! client went away before the stream was over.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

/// How the stand-in answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// 200 with a canned answer derived from the prompt.
    Answer,
    /// Answer after a pause.
    Slow(Duration),
    /// Google's error JSON with this HTTP status (400, 403, 404, 429, 500, 503, 504).
    Status(u16),
    /// 429 whose details carry `RetryInfo.retryDelay` of `"<secs>s"`.
    RateLimited { retry_delay_secs: f64 },
    /// 429 whose `RetryInfo.retryDelay` is exactly this JSON value, however absurd.
    RateLimitedRaw(Value),
    /// Accept the request and never answer.
    Hang,
    /// 200 with a body (or, streamed, a first event) that is not JSON.
    Malformed,
    /// 200, no candidates, `promptFeedback.blockReason: SAFETY`.
    PromptBlocked,
    /// 200, one candidate with `finishReason: SAFETY` and no text.
    SafetyFinish,
    /// 200 with an empty candidate list and no block reason.
    NoCandidates,
    /// A canned answer of about this many words.
    LongAnswer { words: usize },
    /// [`HOSTILE_ANSWER`]: Markdown, and HTML that must never run in a page.
    Hostile,
    /// Streamed: this many chunks, then the connection breaks. Buffered: the connection
    /// breaks in the middle of the body.
    DropAfter(usize),
    /// Streamed: this many chunks, then a chunk with this finish reason (`SAFETY`,
    /// `RECITATION`…) and no content, as Gemini stops an answer it will not finish.
    /// Buffered: one candidate with the text of those chunks and that finish reason.
    StopAfter(usize, &'static str),
    /// Streamed: this many chunks, then nothing while the connection stays open.
    /// Buffered: as [`Behavior::Hang`].
    StallAfter(usize),
    /// Streamed: this many chunks, then a clean end with no finish reason.
    /// Buffered: as [`Behavior::Answer`].
    TruncateAfter(usize),
    /// A redirect with this status (301, 302, 307, 308) to the stand-in's second
    /// listener, which answers like the stand-in and records what it got.
    Redirect(u16),
}

impl Behavior {
    /// Reads `[standin:<what>]` from a prompt (see the module documentation).
    pub fn from_directive(prompt: &str) -> Option<Self> {
        let start = prompt.find("[standin:")? + "[standin:".len();
        let what = &prompt[start..start + prompt[start..].find(']')?];
        let (name, arg) = match what.split_once('=') {
            Some((name, arg)) => (name, Some(arg)),
            None => (what, None),
        };
        let count = || arg?.parse::<usize>().ok();
        Some(match (name, arg) {
            ("answer", None) => Self::Answer,
            ("hostile", None) => Self::Hostile,
            ("ratelimit", None) => Self::RateLimited {
                retry_delay_secs: 1.0,
            },
            ("retrydelay", Some(raw)) => Self::RateLimitedRaw(
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
            ),
            ("timeout", None) => Self::Hang,
            ("malformed", None) => Self::Malformed,
            ("blocked", None) => Self::PromptBlocked,
            ("safety", None) => Self::SafetyFinish,
            ("empty", None) => Self::NoCandidates,
            ("long", None) => Self::LongAnswer { words: 400 },
            ("long", Some(_)) => Self::LongAnswer { words: count()? },
            ("slow", Some(ms)) => Self::Slow(Duration::from_millis(ms.parse().ok()?)),
            ("drop", Some(_)) => Self::DropAfter(count()?),
            ("midsafety", Some(_)) => Self::StopAfter(count()?, "SAFETY"),
            ("midrecitation", Some(_)) => Self::StopAfter(count()?, "RECITATION"),
            ("stall", Some(_)) => Self::StallAfter(count()?),
            ("truncate", Some(_)) => Self::TruncateAfter(count()?),
            ("redirect", None) => Self::Redirect(302),
            ("redirect", Some(code)) => {
                Self::Redirect(code.parse().ok().filter(|c| (300..400).contains(c))?)
            }
            (code, None) => Self::Status(code.parse().ok().filter(|s| (400..600).contains(s))?),
            _ => return None,
        })
    }
}

/// How a streamed answer is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// From the request to the first chunk (the real API thinks first).
    pub first_chunk: Duration,
    /// Between two chunks.
    pub interval: Duration,
    /// Words of the answer per chunk.
    pub words_per_chunk: usize,
}

impl Default for Pacing {
    /// Roughly what Gemini Flash does: a few hundred ms to the first chunk, then a few
    /// words every 50–100 ms.
    fn default() -> Self {
        Self {
            first_chunk: Duration::from_millis(300),
            interval: Duration::from_millis(70),
            words_per_chunk: 4,
        }
    }
}

impl Pacing {
    /// No pauses at all: for tests about content rather than timing.
    pub fn immediate() -> Self {
        Self {
            first_chunk: Duration::ZERO,
            interval: Duration::ZERO,
            words_per_chunk: 4,
        }
    }
}

/// One request as the stand-in received it, and what became of it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The model from the path (`models/{model}:…`).
    pub model: String,
    /// `generateContent` or `streamGenerateContent`.
    pub method: String,
    pub headers: HeaderMap,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
    pub received_at: Instant,
    /// For streams: when each chunk was handed to the connection.
    pub chunks_written: Vec<Instant>,
    /// For streams: every planned chunk was written and the stream ended as planned.
    pub stream_completed: bool,
    /// For streams: the client went away before the stream was over.
    pub client_gone: bool,
}

/// A request that reached the redirect target.
#[derive(Debug, Clone)]
pub struct RedirectHit {
    pub path: String,
    /// Whether `x-goog-api-key` came along (it must never).
    pub had_api_key: bool,
}

struct Shared {
    default: Mutex<Behavior>,
    script: Mutex<VecDeque<Behavior>>,
    pacing: Mutex<Pacing>,
    requests: AtomicUsize,
    recorded: Mutex<Vec<RecordedRequest>>,
    redirect_hits: Mutex<Vec<RedirectHit>>,
    redirect_target: SocketAddr,
    api_key: Option<String>,
}

/// A running stand-in. Dropping it stops the server.
pub struct GeminiStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for GeminiStandIn {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            server.abort();
        }
    }
}

impl GeminiStandIn {
    /// Starts on a free loopback port, answering every request, streams paced as
    /// [`Pacing::default`].
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
        // The redirect target: another listener, i.e. another origin, on a free port.
        let elsewhere = TcpListener::bind((addr.ip(), 0))
            .await
            .expect("bind the redirect target");
        let redirect_target = elsewhere.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            default: Mutex::new(Behavior::Answer),
            script: Mutex::new(VecDeque::new()),
            pacing: Mutex::new(Pacing::default()),
            requests: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            redirect_hits: Mutex::new(Vec::new()),
            redirect_target,
            api_key,
        });
        let app = Router::new()
            .route("/v1beta/models/{*call}", post(handle))
            .with_state(shared.clone());
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the Gemini stand-in");
        let addr = listener.local_addr().expect("bound address");
        let target = Router::new()
            .fallback(redirected)
            .with_state(shared.clone());
        let servers = vec![
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(elsewhere, target).await;
            }),
        ];
        Self {
            addr,
            shared,
            servers,
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

    /// How streamed answers are paced from now on.
    pub fn set_pacing(&self, pacing: Pacing) {
        *self.shared.pacing.lock().unwrap() = pacing;
    }

    /// Queues behaviours for the next requests, in order.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.shared.script.lock().unwrap().extend(behaviors);
    }

    /// How many model calls arrived.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every model call so far, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// Headers and JSON body of the latest model call.
    pub fn last_request(&self) -> Option<(HeaderMap, Value)> {
        let recorded = self.shared.recorded.lock().unwrap();
        let last = recorded.iter().rev().find(|r| !r.body.is_null())?;
        Some((last.headers.clone(), last.body.clone()))
    }

    /// Requests that followed a redirect to the second listener.
    pub fn redirect_hits(&self) -> Vec<RedirectHit> {
        self.shared.redirect_hits.lock().unwrap().clone()
    }
}

async fn redirected(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    shared.redirect_hits.lock().unwrap().push(RedirectHit {
        path: uri.path().to_owned(),
        had_api_key: headers.contains_key("x-goog-api-key"),
    });
    // Answer as Gemini would, so a client that followed would believe it.
    axum::Json(answer("gemini-redirected", "you were redirected", "", None)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(call): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (model, method) = call.split_once(':').unwrap_or((&call, ""));
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let index = {
        let mut recorded = shared.recorded.lock().unwrap();
        recorded.push(RecordedRequest {
            model: model.to_owned(),
            method: method.to_owned(),
            headers: headers.clone(),
            body: request.clone().unwrap_or(Value::Null),
            received_at: Instant::now(),
            chunks_written: Vec::new(),
            stream_completed: false,
            client_gone: false,
        });
        recorded.len() - 1
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "" => return error(404, "NOT_FOUND", &format!("Method not found: {call}")),
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
    let Some(request) = request else {
        return error(
            400,
            "INVALID_ARGUMENT",
            &format!(
                "Invalid JSON payload received. {}",
                serde_json::from_slice::<Value>(&body)
                    .err()
                    .map_or(String::new(), |e| e.to_string())
            ),
        );
    };
    let Some(message) = last_user_text(&request) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        );
    };
    let all_text = all_text(&request);

    let scripted = shared.script.lock().unwrap().pop_front();
    let behavior = scripted
        .or_else(|| Behavior::from_directive(&message))
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    if stream
        && !query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"))
    {
        // The JSON-array form of streaming is not something our client uses.
        return error(
            400,
            "INVALID_ARGUMENT",
            "the stand-in streams only with alt=sse",
        );
    }

    let words = |after: usize| Some((after + 2) * 8);
    let answer = |long: Option<usize>| answer(model, &message, &all_text, long);
    let with_usage = |mut v: Value| {
        v["usageMetadata"] = usage(&all_text, "");
        v["modelVersion"] = json!(model);
        v
    };
    let blocked = || {
        with_usage(json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
        }))
    };
    // A candidate that ends for `reason` with no content, with what Gemini sends beside
    // such a stop.
    let stop = |reason: &str| {
        let mut candidate = json!({"finishReason": reason, "index": 0});
        match reason {
            "RECITATION" => {
                candidate["citationMetadata"] = json!({"citationSources": [
                    {"startIndex": 0, "endIndex": 40, "uri": "https://example.com/a-book"}]});
            }
            _ => {
                candidate["safetyRatings"] =
                    json!([{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]);
            }
        }
        with_usage(json!({ "candidates": [candidate] }))
    };
    let safety = || stop("SAFETY");
    let (full, end) = match behavior {
        Behavior::Answer => (answer(None), End::Finish),
        Behavior::LongAnswer { words } => (answer(Some(words)), End::Finish),
        Behavior::Hostile => (answer_text(model, &all_text, HOSTILE_ANSWER), End::Finish),
        Behavior::Slow(pause) => {
            tokio::time::sleep(pause).await;
            (answer(None), End::Finish)
        }
        Behavior::Status(code) => return error(code, status_name(code), status_message(code)),
        Behavior::RateLimited { retry_delay_secs } => {
            return rate_limited(json!(format!("{retry_delay_secs}s")));
        }
        Behavior::RateLimitedRaw(delay) => return rate_limited(delay),
        Behavior::Hang => std::future::pending().await,
        Behavior::Malformed => {
            const BROKEN: &str = "{\"candidates\": [{\"content\": ";
            if stream {
                return sse_response(
                    vec![format!("data: {BROKEN}\r\n\r\n")],
                    End::Finish,
                    &shared,
                    index,
                );
            }
            return ([(header::CONTENT_TYPE, "application/json")], BROKEN).into_response();
        }
        Behavior::PromptBlocked => (blocked(), End::Finish),
        Behavior::SafetyFinish => (safety(), End::Finish),
        Behavior::NoCandidates => (with_usage(json!({})), End::Finish),
        Behavior::DropAfter(n) => (answer(words(n)), End::DropAfter(n)),
        Behavior::StopAfter(n, reason) => {
            let full = answer(words(n));
            if !stream {
                let per_chunk = shared.pacing.lock().unwrap().words_per_chunk;
                return axum::Json(cut(&full, &all_text, n, per_chunk, reason)).into_response();
            }
            (full, End::StopAfter(n, stop(reason)))
        }
        Behavior::StallAfter(n) => {
            if !stream {
                std::future::pending::<()>().await;
            }
            (answer(words(n)), End::StallAfter(n))
        }
        Behavior::TruncateAfter(n) => (answer(words(n)), End::TruncateAfter(n)),
        Behavior::Redirect(code) => {
            let location = format!(
                "http://{}/v1beta/models/{call}{}",
                shared.redirect_target,
                query.map(|q| format!("?{q}")).unwrap_or_default()
            );
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
            return (status, [(header::LOCATION, location)]).into_response();
        }
    };
    if !stream {
        if let End::DropAfter(_) = end {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let whole = full.to_string().into_bytes();
                let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
                let _ = tx.send(Ok(half)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("connection dropped")))
                    .await;
            });
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        return axum::Json(full).into_response();
    }
    let pacing = *shared.pacing.lock().unwrap();
    let events = chunks(&full, &all_text, pacing.words_per_chunk)
        .into_iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect();
    sse_response(events, end, &shared, index)
}

/// How a planned stream ends.
enum End {
    /// Every chunk; the last carries the finish reason.
    Finish,
    DropAfter(usize),
    StopAfter(usize, Value),
    StallAfter(usize),
    TruncateAfter(usize),
}

type Chunk = Result<Bytes, std::io::Error>;

/// A response body fed from a channel: an `Err` breaks the connection mid-body, and a
/// failed send means the client went away.
fn channel_body() -> (mpsc::Sender<Chunk>, Body) {
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, Body::from_stream(stream))
}

fn sse_response(mut events: Vec<String>, end: End, shared: &Arc<Shared>, index: usize) -> Response {
    let pacing = *shared.pacing.lock().unwrap();
    let (tx, body) = channel_body();
    let shared = shared.clone();
    let record = move |f: &dyn Fn(&mut RecordedRequest)| {
        if let Some(r) = shared.recorded.lock().unwrap().get_mut(index) {
            f(r);
        }
    };
    let keep = match &end {
        End::Finish => events.len(),
        End::DropAfter(n) | End::StopAfter(n, _) | End::StallAfter(n) | End::TruncateAfter(n) => {
            (*n).min(events.len())
        }
    };
    events.truncate(keep);
    if let End::StopAfter(_, stop) = &end {
        events.push(format!("data: {stop}\r\n\r\n"));
    }
    tokio::spawn(async move {
        tokio::time::sleep(pacing.first_chunk).await;
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pacing.interval).await;
            }
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                record(&|r| r.client_gone = true);
                return;
            }
            let now = Instant::now();
            record(&|r| r.chunks_written.push(now));
        }
        match end {
            End::DropAfter(_) => {
                let _ = tx
                    .send(Err(std::io::Error::other("connection dropped")))
                    .await;
            }
            End::StallAfter(_) => {
                // Silence until the client gives up.
                tx.closed().await;
                record(&|r| r.client_gone = true);
                return;
            }
            End::Finish | End::StopAfter(..) | End::TruncateAfter(_) => {}
        }
        drop(tx);
        record(&|r| r.stream_completed = true);
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The text of the last user turn: where directives are read.
fn last_user_text(request: &Value) -> Option<String> {
    let contents = request.get("contents")?.as_array()?;
    let last = contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str).unwrap_or("user") == "user")?;
    let text: Vec<&str> = last
        .get("parts")?
        .as_array()?
        .iter()
        .filter_map(|p| p.get("text")?.as_str())
        .collect();
    (!text.is_empty()).then(|| text.join("\n"))
}

/// Every text the request holds (system instruction and all turns): what the prompt
/// token count is made of.
fn all_text(request: &Value) -> String {
    let parts = |c: &Value| -> Vec<String> {
        c.get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text")?.as_str().map(str::to_owned))
            .collect()
    };
    let mut text = request
        .get("systemInstruction")
        .map(parts)
        .unwrap_or_default();
    for content in request
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        text.extend(parts(content));
    }
    text.join("\n")
}

/// Words the stand-in pads long answers with.
const FILLER: &[&str] = &[
    "the", "stand-in", "keeps", "talking", "so", "that", "a", "stream", "has", "many", "chunks",
    "to", "carry,", "one", "after", "another.",
];

/// The canned answer to `message`: deterministic, and says plainly that it is canned.
/// With `long`, padded to about that many words. `prompt` (all the request's text) is
/// what the prompt token count is made of.
fn answer(model: &str, message: &str, prompt: &str, long: Option<usize>) -> Value {
    let preview: String = message.chars().take(80).collect();
    let mut text = format!("[canned answer from the local Gemini stand-in] You said: {preview}");
    if let Some(words) = long {
        let have = text.split_whitespace().count();
        for word in FILLER.iter().cycle().take(words.saturating_sub(have)) {
            text.push(' ');
            text.push_str(word);
        }
    }
    answer_text(model, prompt, &text)
}

/// What `[standin:hostile]` answers: Markdown a chat page should render (emphasis, a
/// list, a code block, a link), and HTML and links that must stay inert there. Each
/// attack would set `window.__pwned` if it ran.
pub const HOSTILE_ANSWER: &str =
    "[canned answer from the local Gemini stand-in] Here is **bold**, a list and some code:

- first item
- second item

```
fn main() { println!(\"<b>not bold</b>\"); }
```

A [safe link](https://example.com/docs) and a [bad link](javascript:window.__pwned='md-link').

<img src=x onerror=\"window.__pwned='img'\">
<script>window.__pwned='script'</script>
<a href=\"javascript:window.__pwned='a'\">raw link</a>
<b onmouseover=\"window.__pwned='hover'\">hover me</b>
<iframe src=\"https://example.com/\"></iframe>
![remote image](https://example.com/tracker.png)
";

/// A whole answer with this text.
fn answer_text(model: &str, prompt: &str, text: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": usage(prompt, text),
        "modelVersion": model,
        "responseId": format!("standin-{:x}", prompt.len()),
    })
}

fn usage(prompt: &str, answer: &str) -> Value {
    let count = |s: &str| s.chars().count().div_ceil(4) as u64;
    let (p, c) = (count(prompt), count(answer));
    json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c})
}

/// The streaming form of a whole answer: a few words per event, cumulative usage on
/// each, the finish reason and final totals on the last, as Gemini sends them. An
/// answer without text (a block, a withheld answer) is one event.
fn chunks(full: &Value, prompt: &str, words_per_chunk: usize) -> Vec<Value> {
    let Some(text) = full
        .pointer("/candidates/0/content/parts/0/text")
        .and_then(Value::as_str)
    else {
        return vec![full.clone()];
    };
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let pieces: Vec<String> = words
        .chunks(words_per_chunk.max(1))
        .map(|c| c.concat())
        .collect();
    let last = pieces.len().saturating_sub(1);
    let mut so_far = String::new();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            so_far.push_str(piece);
            let mut event = json!({
                "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                "usageMetadata": usage(prompt, &so_far),
                "modelVersion": full["modelVersion"],
                "responseId": full["responseId"],
            });
            if i == last {
                event["candidates"][0]["finishReason"] = json!("STOP");
            }
            event
        })
        .collect()
}

/// A buffered answer stopped for `reason` after the text of its first `n` streamed
/// chunks: one candidate with that text and that finish reason.
fn cut(full: &Value, prompt: &str, n: usize, per_chunk: usize, reason: &str) -> Value {
    let text: String = chunks(full, prompt, per_chunk)
        .iter()
        .take(n)
        .filter_map(|e| e.pointer("/candidates/0/content/parts/0/text")?.as_str())
        .collect();
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": reason,
            "index": 0,
        }],
        "usageMetadata": usage(prompt, &text),
        "modelVersion": full["modelVersion"],
    })
}

fn rate_limited(retry_delay: Value) -> Response {
    error_with_details(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": retry_delay,
        }]),
    )
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
        let d = Behavior::from_directive;
        assert_eq!(d("hi [standin:503] there"), Some(Behavior::Status(503)));
        assert_eq!(d("[standin:hostile]"), Some(Behavior::Hostile));
        assert_eq!(d("[standin:timeout]"), Some(Behavior::Hang));
        assert_eq!(
            d("[standin:slow=20]"),
            Some(Behavior::Slow(Duration::from_millis(20)))
        );
        assert_eq!(d("[standin:drop=3]"), Some(Behavior::DropAfter(3)));
        assert_eq!(
            d("[standin:midsafety=2]"),
            Some(Behavior::StopAfter(2, "SAFETY"))
        );
        assert_eq!(
            d("[standin:midrecitation=3]"),
            Some(Behavior::StopAfter(3, "RECITATION"))
        );
        assert_eq!(d("[standin:stall=1]"), Some(Behavior::StallAfter(1)));
        assert_eq!(d("[standin:truncate=1]"), Some(Behavior::TruncateAfter(1)));
        assert_eq!(
            d("[standin:long=50]"),
            Some(Behavior::LongAnswer { words: 50 })
        );
        assert_eq!(d("[standin:redirect=307]"), Some(Behavior::Redirect(307)));
        assert_eq!(
            d("[standin:retrydelay=1e400s]"),
            Some(Behavior::RateLimitedRaw(json!("1e400s")))
        );
        assert_eq!(
            d("[standin:retrydelay=12]"),
            Some(Behavior::RateLimitedRaw(json!(12)))
        );
        assert_eq!(d("plain question"), None);
        assert_eq!(d("[standin:999]"), None);
        assert_eq!(d("[standin:drop=x]"), None);
        assert_eq!(d("[standin:redirect=200]"), None);
    }

    #[test]
    fn directives_come_from_the_last_user_turn_only() {
        let request = json!({"contents": [
            {"role": "user", "parts": [{"text": "[standin:503] earlier"}]},
            {"role": "model", "parts": [{"text": "[standin:blocked]"}]},
            {"role": "user", "parts": [{"text": "now"}]},
        ]});
        assert_eq!(last_user_text(&request).as_deref(), Some("now"));
    }

    #[test]
    fn streamed_chunks_add_up_to_the_answer_with_cumulative_usage() {
        let full = answer("gemini-x", "hello there", "hello there", Some(30));
        let events = chunks(&full, "hello there", 4);
        assert!(events.len() > 3);
        let text: String = events
            .iter()
            .map(|e| {
                e["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(text, full["candidates"][0]["content"]["parts"][0]["text"]);
        let counts: Vec<u64> = events
            .iter()
            .map(|e| e["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            events.last().unwrap()["usageMetadata"],
            full["usageMetadata"]
        );
        let finishes = events
            .iter()
            .filter(|e| e["candidates"][0].get("finishReason").is_some())
            .count();
        assert_eq!(finishes, 1);
    }
}
