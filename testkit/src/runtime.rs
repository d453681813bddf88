//! A Lambda Runtime API emulator, so tests can run the real function binaries as
//! separate processes, the way Lambda runs them.
//!
//! It serves `GET /2018-06-01/runtime/invocation/next` (long-polled by every process),
//! takes `POST .../invocation/{id}/response` and `.../invocation/{id}/error`, and
//! records `POST .../init/error`.
//!
//! Both response modes are understood. A buffered function posts its whole answer as
//! JSON. A streaming one (`Lambda-Runtime-Function-Response-Mode: streaming`, what
//! `lambda_http::run_with_streaming_response` sends) posts a chunked body: a JSON
//! prelude (`statusCode`, `headers`, `multiValueHeaders`, `cookies`), eight NUL bytes,
//! then the response body as it is produced; an error after the prelude comes as the
//! trailers `Lambda-Runtime-Function-Error-Type` and `-Body` (base64). `lambda_runtime`
//! 1.5 writes those two trailer lines into the body as a last data chunk instead of as
//! HTTP trailers; a chunk made of just those two lines is read as that in-band form
//! (see [`StreamEnd::Failed`]).
//!
//! [`RuntimeApi::invoke`] waits for the whole answer in either mode (a streamed one is
//! collected into the shape of an API Gateway proxy response), so one test helper
//! serves both. [`RuntimeApi::invoke_streaming`] hands out the prelude and the chunks
//! as they arrive. A client that stops reading (dropping the handle, or
//! [`StreamingInvocation::disconnect`]) does not stop the function: as Lambda does, the
//! emulator reads the function's response to its end, and [`RuntimeApi::stream_record`]
//! tells afterwards how many bytes it sent and how it ended.
//!
//! A process killed while it waits on `next` leaves that poll pending here, and the poll
//! takes the next invocation to nowhere. Kill processes only mid-invocation, or give a
//! process that may be killed while idle an emulator of its own.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path as UrlPath, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tokio::{
    net::TcpListener,
    sync::{Mutex as AsyncMutex, Notify, mpsc},
    task::JoinHandle,
};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response payload (for an HTTP function, the API Gateway response).
    /// A streamed response is collected into that shape: `statusCode`, `headers`,
    /// `multiValueHeaders`, `cookies`, `body` (base64 with `isBase64Encoded` when not
    /// UTF-8), plus `streamError: {errorType, errorMessage}` when it did not complete.
    Response(Value),
    /// The function reported an error.
    Error(Value),
}

impl Outcome {
    /// `statusCode` and the JSON body of an API Gateway proxy response.
    pub fn http(&self) -> (u16, Value) {
        let Outcome::Response(resp) = self else {
            panic!("the function failed: {self:?}");
        };
        let status = resp["statusCode"].as_u64().expect("statusCode") as u16;
        let body = resp["body"].as_str().map_or(Value::Null, |b| {
            serde_json::from_str(b).unwrap_or(Value::String(b.to_owned()))
        });
        (status, body)
    }
}

/// The metadata a streaming function sends before its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Prelude {
    pub status: u16,
    /// `headers` and `multiValueHeaders` together.
    pub headers: HeaderMap,
    pub cookies: Vec<String>,
}

/// A piece of a streamed body, stamped when the emulator read it off the function's
/// connection.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub bytes: Bytes,
    pub at: Instant,
}

/// How a streamed response ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEnd {
    /// The chunked body ended cleanly.
    Completed,
    /// The function reported an error after the prelude. `error_body` is the trailer's
    /// base64 decoded (kept as sent when it is not base64 of UTF-8). `in_band` is true
    /// when the "trailers" came as body text (`lambda_runtime` 1.5) rather than as HTTP
    /// trailers; that chunk is not counted as body.
    Failed {
        error_type: String,
        error_body: String,
        in_band: bool,
    },
    /// The connection broke before the chunked body ended (the process died).
    Broken(String),
    /// No valid prelude: not JSON, or no delimiter within the first 16 KiB.
    BadPrelude(String),
}

/// What the emulator saw of one streamed response, read to its end whether or not the
/// client stayed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    /// The prelude's status, when there was a valid prelude.
    pub status: Option<u16>,
    /// Body bytes the function sent after the prelude.
    pub body_bytes: usize,
    /// Body chunks (HTTP data frames) it sent.
    pub chunks: usize,
    /// Body bytes handed to the client before it was found gone; `None` if it stayed.
    pub client_left_after: Option<usize>,
    pub end: StreamEnd,
}

/// Why [`StreamingInvocation::prelude`] has no prelude to give.
#[derive(Debug, Clone, PartialEq)]
pub enum NotStreamed {
    /// The function answered in buffered mode, or reported an error before streaming.
    Answered(Outcome),
    /// The stream ended without a valid prelude.
    Ended(StreamEnd),
}

/// Longest prelude Lambda accepts before the delimiter.
const PRELUDE_LIMIT: usize = 16 * 1024;
const DELIMITER: &[u8] = &[0; 8];
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const ERROR_BODY: &str = "lambda-runtime-function-error-body";

enum Event {
    Answered(Outcome),
    Prelude(Prelude),
    Chunk(Chunk),
    End(StreamEnd),
}

struct Invocation {
    id: String,
    event: Value,
}

struct Inner {
    queue_tx: mpsc::UnboundedSender<Invocation>,
    queue_rx: AsyncMutex<mpsc::UnboundedReceiver<Invocation>>,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
    init_errors: Mutex<Vec<Value>>,
    records: Mutex<HashMap<String, StreamRecord>>,
    recorded: Notify,
    next_id: AtomicU64,
}

/// A running emulator. Dropping it stops the server.
pub struct RuntimeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            queue_tx,
            queue_rx: AsyncMutex::new(queue_rx),
            waiting: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
            records: Mutex::new(HashMap::new()),
            recorded: Notify::new(),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let addr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            server,
        }
    }

    /// What `AWS_LAMBDA_RUNTIME_API` should be.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation and waits for whichever process takes it to answer, in
    /// either response mode. Never resolves if that process dies mid-invocation of a
    /// buffered function (as on Lambda, where the caller sees a timeout): wrap it in a
    /// timeout.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let mut stream = self.invoke_streaming(event);
        let prelude = match stream.prelude().await {
            Ok(prelude) => prelude.clone(),
            Err(NotStreamed::Answered(outcome)) => return outcome,
            Err(NotStreamed::Ended(end)) => {
                return Outcome::Error(json!({
                    "errorType": "Emulator.BadStream",
                    "errorMessage": format!("{end:?}"),
                }));
            }
        };
        let mut body = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            body.extend_from_slice(&chunk.bytes);
        }
        let end = stream.end().await;
        Outcome::Response(collected(&prelude, &body, &end))
    }

    /// Queues an invocation and returns at once with a handle that yields the response
    /// as it arrives.
    pub fn invoke_streaming(&self, event: Value) -> StreamingInvocation {
        let id = format!("req-{}", self.inner.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.waiting.lock().unwrap().insert(id.clone(), tx);
        self.inner
            .queue_tx
            .send(Invocation {
                id: id.clone(),
                event,
            })
            .expect("the queue is open");
        StreamingInvocation {
            id,
            rx,
            prelude: None,
            end: None,
        }
    }

    /// What the emulator saw of a streamed response, once the function has finished
    /// sending it (however long after the client left). Waits until then: wrap it in a
    /// timeout. Never resolves for an invocation that was not answered in streaming mode.
    pub async fn stream_record(&self, request_id: &str) -> StreamRecord {
        loop {
            // Registered before the look-up, so a record stored in between still wakes us.
            let recorded = self.inner.recorded.notified();
            if let Some(record) = self.inner.records.lock().unwrap().get(request_id) {
                return record.clone();
            }
            recorded.await;
        }
    }

    /// Errors functions reported while starting.
    pub fn init_errors(&self) -> Vec<Value> {
        self.inner.init_errors.lock().unwrap().clone()
    }
}

/// One invocation's response, read as it arrives. Dropping it is a client that went
/// away: the function's response is still read to its end (see
/// [`RuntimeApi::stream_record`]).
pub struct StreamingInvocation {
    id: String,
    rx: mpsc::UnboundedReceiver<Event>,
    prelude: Option<Result<Prelude, NotStreamed>>,
    end: Option<StreamEnd>,
}

impl StreamingInvocation {
    /// The invocation's request id (`Lambda-Runtime-Aws-Request-Id`).
    pub fn request_id(&self) -> &str {
        &self.id
    }

    /// Waits for the prelude: status, headers and cookies.
    pub async fn prelude(&mut self) -> Result<&Prelude, NotStreamed> {
        if self.prelude.is_none() {
            let first = match self.rx.recv().await {
                Some(Event::Prelude(prelude)) => Ok(prelude),
                Some(Event::Answered(outcome)) => Err(NotStreamed::Answered(outcome)),
                Some(Event::End(end)) => {
                    self.end = Some(end.clone());
                    Err(NotStreamed::Ended(end))
                }
                Some(Event::Chunk(_)) => unreachable!("chunks follow the prelude"),
                None => Err(NotStreamed::Ended(emulator_gone())),
            };
            self.prelude = Some(first);
        }
        self.prelude
            .as_ref()
            .unwrap()
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The next body chunk, or `None` once the stream has ended (then see [`Self::end`]).
    pub async fn next_chunk(&mut self) -> Option<Chunk> {
        if self.prelude().await.is_err() || self.end.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(Event::Chunk(chunk)) => Some(chunk),
            Some(Event::End(end)) => {
                self.end = Some(end);
                None
            }
            Some(Event::Prelude(_) | Event::Answered(_)) => unreachable!("one prelude each"),
            None => {
                self.end = Some(emulator_gone());
                None
            }
        }
    }

    /// How the stream ended; skips any chunks not yet read.
    pub async fn end(&mut self) -> StreamEnd {
        while self.next_chunk().await.is_some() {}
        match (&self.end, &self.prelude) {
            (Some(end), _) => end.clone(),
            (None, Some(Err(NotStreamed::Answered(_)))) => {
                StreamEnd::BadPrelude("the function answered in buffered mode".into())
            }
            (None, _) => emulator_gone(),
        }
    }

    /// Stops reading, as a client that closes the connection mid-stream.
    pub fn disconnect(self) {}
}

fn emulator_gone() -> StreamEnd {
    StreamEnd::Broken("the emulator stopped".into())
}

/// A streamed response in the shape of an API Gateway proxy response.
fn collected(prelude: &Prelude, body: &[u8], end: &StreamEnd) -> Value {
    let mut headers = Map::new();
    let mut multi = Map::new();
    for name in prelude.headers.keys() {
        let values: Vec<Value> = prelude
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
            .collect();
        headers.insert(name.to_string(), values.last().cloned().unwrap_or_default());
        multi.insert(name.to_string(), Value::Array(values));
    }
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let mut resp = json!({
        "statusCode": prelude.status,
        "headers": headers,
        "multiValueHeaders": multi,
        "cookies": prelude.cookies,
        "body": body,
        "isBase64Encoded": base64,
    });
    let error = match end {
        StreamEnd::Completed => None,
        StreamEnd::Failed {
            error_type,
            error_body,
            ..
        } => Some((error_type.clone(), error_body.clone())),
        StreamEnd::Broken(why) => Some(("Emulator.BrokenStream".into(), why.clone())),
        StreamEnd::BadPrelude(why) => Some(("Emulator.BadPrelude".into(), why.clone())),
    };
    if let Some((kind, message)) = error {
        resp["streamError"] = json!({"errorType": kind, "errorMessage": message});
    }
    resp
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    let invocation = inner.queue_rx.lock().await.recv().await;
    let Some(Invocation { id, event }) = invocation else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, value.parse().expect("valid header value"));
    };
    set("lambda-runtime-aws-request-id", id);
    set(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:local".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    (headers, axum::Json(event)).into_response()
}

fn waiter(inner: &Inner, id: &str) -> Option<mpsc::UnboundedSender<Event>> {
    inner.waiting.lock().unwrap().remove(id)
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let Some(tx) = waiter(&inner, &id) else {
        return StatusCode::BAD_REQUEST;
    };
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"));
    if streaming {
        let record = drain_stream(body, &tx).await;
        inner.records.lock().unwrap().insert(id, record);
        inner.recorded.notify_waiters();
        return StatusCode::ACCEPTED;
    }
    match body.collect().await {
        Ok(body) => {
            let _ = tx.send(Event::Answered(Outcome::Response(json_or_text(
                &body.to_bytes(),
            ))));
            StatusCode::ACCEPTED
        }
        Err(e) => {
            let _ = tx.send(Event::End(StreamEnd::Broken(e.to_string())));
            StatusCode::BAD_REQUEST
        }
    }
}

/// Reads a streamed response to its end, passing it on while the client listens.
async fn drain_stream(mut body: Body, tx: &mpsc::UnboundedSender<Event>) -> StreamRecord {
    let mut record = StreamRecord {
        status: None,
        body_bytes: 0,
        chunks: 0,
        client_left_after: None,
        end: StreamEnd::Completed,
    };
    let send = |record: &mut StreamRecord, event: Event| {
        if tx.send(event).is_err() && record.client_left_after.is_none() {
            record.client_left_after = Some(record.body_bytes);
        }
    };
    // Bytes before the delimiter; `None` once the prelude is through.
    let mut head = Some(Vec::new());
    let mut bad_prelude = None;
    let mut in_band_error = None;
    let end = loop {
        let frame = match body.frame().await {
            None => break None,
            Some(Err(e)) => break Some(StreamEnd::Broken(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        let at = Instant::now();
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Some(end) = frame.trailers_ref().and_then(trailer_error) {
                    break Some(end);
                }
                continue;
            }
        };
        if bad_prelude.is_some() {
            continue; // Read on to the end, as Lambda would, but pass nothing on.
        }
        let data = match head.as_mut() {
            Some(buffer) => {
                buffer.extend_from_slice(&data);
                let Some(at_delimiter) = find(buffer, DELIMITER) else {
                    if buffer.len() > PRELUDE_LIMIT {
                        bad_prelude = Some(format!(
                            "no prelude delimiter in the first {PRELUDE_LIMIT} bytes"
                        ));
                    }
                    continue;
                };
                if at_delimiter > PRELUDE_LIMIT {
                    bad_prelude = Some(format!("a prelude of {at_delimiter} bytes"));
                    continue;
                }
                match parse_prelude(&buffer[..at_delimiter]) {
                    Ok(prelude) => {
                        record.status = Some(prelude.status);
                        send(&mut record, Event::Prelude(prelude));
                    }
                    Err(why) => {
                        bad_prelude = Some(why);
                        continue;
                    }
                }
                let rest = Bytes::copy_from_slice(&buffer[at_delimiter + DELIMITER.len()..]);
                head = None;
                rest
            }
            None => data,
        };
        if data.is_empty() {
            continue;
        }
        if let Some(end) = in_band_trailer(&data) {
            in_band_error = Some(end);
            continue;
        }
        let size = data.len();
        send(&mut record, Event::Chunk(Chunk { bytes: data, at }));
        record.body_bytes += size;
        record.chunks += 1;
    };
    record.end = match (bad_prelude, end, in_band_error, head) {
        (Some(why), ..) => StreamEnd::BadPrelude(why),
        (None, Some(end), ..) => end,
        (None, None, Some(error), _) => error,
        (None, None, None, Some(_)) => {
            StreamEnd::BadPrelude("the body ended before the prelude delimiter".into())
        }
        (None, None, None, None) => StreamEnd::Completed,
    };
    let end = record.end.clone();
    send(&mut record, Event::End(end));
    record
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_prelude(bytes: &[u8]) -> Result<Prelude, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the prelude is not JSON: {e}"))?;
    let status = match value.get("statusCode") {
        None | Some(Value::Null) => 200,
        Some(code) => code
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..1000).contains(c))
            .ok_or_else(|| format!("bad statusCode {code}"))?,
    };
    let mut headers = HeaderMap::new();
    for field in ["headers", "multiValueHeaders"] {
        let Some(map) = value.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (name, values) in map {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("bad header name {name:?}"))?;
            let values = match values {
                Value::Array(values) => values.clone(),
                single => vec![single.clone()],
            };
            for value in values {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                let value = HeaderValue::from_str(&text)
                    .map_err(|_| format!("bad value for header {name}"))?;
                headers.append(name.clone(), value);
            }
        }
    }
    let cookies = value
        .get("cookies")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Prelude {
        status,
        headers,
        cookies,
    })
}

fn decode_error_body(raw: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| raw.to_owned())
}

fn trailer_error(trailers: &HeaderMap) -> Option<StreamEnd> {
    let text = |name| {
        trailers
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let error_type = text(ERROR_TYPE)?;
    Some(StreamEnd::Failed {
        error_type,
        error_body: decode_error_body(&text(ERROR_BODY).unwrap_or_default()),
        in_band: false,
    })
}

/// `lambda_runtime`'s in-band form: the two trailer lines written as a body chunk.
fn in_band_trailer(data: &[u8]) -> Option<StreamEnd> {
    let text = std::str::from_utf8(data).ok()?;
    let mut error_type = None;
    let mut error_body = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case(ERROR_TYPE) {
            error_type = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case(ERROR_BODY) {
            error_body = decode_error_body(value);
        } else {
            return None;
        }
    }
    Some(StreamEnd::Failed {
        error_type: error_type?,
        error_body,
        in_band: true,
    })
}

async fn error(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    match waiter(&inner, &id) {
        Some(tx) => {
            let _ = tx.send(Event::Answered(Outcome::Error(json_or_text(&body))));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    inner.init_errors.lock().unwrap().push(json_or_text(&body));
    StatusCode::ACCEPTED
}

/// Function processes attached to a [`RuntimeApi`]. Dropping them kills them.
pub struct Functions {
    children: Vec<Child>,
    /// Everything the processes wrote on standard output (what Lambda sends to
    /// CloudWatch Logs), line by line as written.
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Functions {
    /// Starts `count` copies of `binary` with the Lambda environment plus `env`.
    /// Their standard output is kept ([`Functions::stdout`]); their logs also go to this
    /// process's stderr when `FUNCTION_LOGS=1`.
    pub fn spawn(
        binary: &Path,
        runtime: &RuntimeApi,
        count: usize,
        env: &[(&str, String)],
    ) -> Self {
        let show_logs = std::env::var("FUNCTION_LOGS").as_deref() == Ok("1");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let children = (0..count)
            .map(|i| {
                let mut child = Command::new(binary)
                    .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
                    .env("AWS_LAMBDA_FUNCTION_NAME", "chat")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                    .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("process-{i}"))
                    .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chat")
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(if show_logs {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    })
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
                let out = child.stdout.take().expect("piped stdout");
                let kept = stdout.clone();
                std::thread::spawn(move || keep_lines(out, &kept, show_logs));
                child
            })
            .collect();
        Self { children, stdout }
    }

    /// What the processes have written on standard output so far, whole lines only.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Forgets the output so far: [`Functions::stdout`] then shows only what follows.
    pub fn clear_stdout(&self) {
        self.stdout.lock().unwrap().clear();
    }

    /// Waits until the output holds `count` lines that contain `needle` (a line written
    /// just after a response was delivered may lag it by a moment).
    pub async fn wait_for_lines(&self, needle: &str, count: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.stdout();
            if out.lines().filter(|l| l.contains(needle)).count() >= count
                || Instant::now() >= deadline
            {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills every process at once (SIGKILL: no chance to clean up), as a crash would.
    pub fn kill_all(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Peak resident memory (`VmHWM`) of each live process, in KiB.
    pub fn peak_rss_kib(&self) -> Vec<u64> {
        self.children
            .iter()
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
            .filter_map(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .collect()
    }

    /// CPU time the live processes have used so far (user and system), in clock ticks:
    /// work done, whatever else the machine is busy with.
    pub fn cpu_ticks(&self) -> u64 {
        self.children
            .iter()
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/stat", c.id())).ok())
            .filter_map(|stat| {
                // Fields after the command name, which is in parentheses and may hold
                // spaces: utime and stime are the 12th and 13th of them.
                let rest = &stat[stat.rfind(')')? + 1..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .sum()
    }

    /// Processes that exited on their own (a crash, or a failed start).
    pub fn exited(&mut self) -> usize {
        self.children
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|status| matches!(status, Ok(Some(_))))
            .count()
    }
}

/// Copies `out` into `kept` a whole line at a time (so lines of different processes
/// never interleave), echoing them to stderr when `show`.
fn keep_lines(out: impl std::io::Read, kept: &Mutex<Vec<u8>>, show: bool) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(out);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if show {
            eprint!("{}", String::from_utf8_lossy(&line));
        }
        kept.lock().unwrap().extend_from_slice(&line);
        line.clear();
    }
}

impl Drop for Functions {
    fn drop(&mut self) {
        self.kill_all();
    }
}
