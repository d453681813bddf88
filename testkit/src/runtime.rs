//! A Lambda Runtime API emulator, so tests can run the real function binaries as
//! separate processes, the way Lambda runs them.
//!
//! It serves `GET /2018-06-01/runtime/invocation/next` (long-polled by every process),
//! takes `POST .../invocation/{id}/response` and `.../invocation/{id}/error`, and
//! records `POST .../init/error`.
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
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;
use tokio::{
    net::TcpListener,
    sync::{Mutex as AsyncMutex, mpsc, oneshot},
    task::JoinHandle,
};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response payload (for an HTTP function, the API Gateway response).
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

struct Invocation {
    id: String,
    event: Value,
}

struct Inner {
    queue_tx: mpsc::UnboundedSender<Invocation>,
    queue_rx: AsyncMutex<mpsc::UnboundedReceiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_errors: Mutex<Vec<Value>>,
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

    /// Queues an invocation and waits for whichever process takes it to answer.
    /// Never resolves if that process dies mid-invocation (as on Lambda, where the
    /// caller sees a timeout): wrap it in a timeout.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let id = format!("req-{}", self.inner.next_id.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.inner.waiting.lock().unwrap().insert(id.clone(), tx);
        self.inner
            .queue_tx
            .send(Invocation { id, event })
            .expect("the queue is open");
        rx.await.expect("the emulator outlives its invocations")
    }

    /// Errors functions reported while starting.
    pub fn init_errors(&self) -> Vec<Value> {
        self.inner.init_errors.lock().unwrap().clone()
    }
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

fn finish(inner: &Inner, id: &str, outcome: Outcome) -> StatusCode {
    match inner.waiting.lock().unwrap().remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&inner, &id, Outcome::Response(json_or_text(&body)))
}

async fn error(
    State(inner): State<Arc<Inner>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&inner, &id, Outcome::Error(json_or_text(&body)))
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    inner.init_errors.lock().unwrap().push(json_or_text(&body));
    StatusCode::ACCEPTED
}

/// Function processes attached to a [`RuntimeApi`]. Dropping them kills them.
pub struct Functions {
    children: Vec<Child>,
}

impl Functions {
    /// Starts `count` copies of `binary` with the Lambda environment plus `env`.
    /// Their logs go to this process's stderr when `FUNCTION_LOGS=1`.
    pub fn spawn(
        binary: &Path,
        runtime: &RuntimeApi,
        count: usize,
        env: &[(&str, String)],
    ) -> Self {
        let show_logs = std::env::var("FUNCTION_LOGS").as_deref() == Ok("1");
        let children = (0..count)
            .map(|i| {
                Command::new(binary)
                    .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
                    .env("AWS_LAMBDA_FUNCTION_NAME", "chat")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                    .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("process-{i}"))
                    .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/chat")
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(if show_logs {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    })
                    .stderr(if show_logs {
                        Stdio::inherit()
                    } else {
                        Stdio::null()
                    })
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
            })
            .collect();
        Self { children }
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

    /// Processes that exited on their own (a crash, or a failed start).
    pub fn exited(&mut self) -> usize {
        self.children
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|status| matches!(status, Ok(Some(_))))
            .count()
    }
}

impl Drop for Functions {
    fn drop(&mut self) {
        self.kill_all();
    }
}
