//! A DynamoDB proxy that answers the way AWS does under contention and load.
//!
//! DynamoDB Local applies requests one at a time: it never reports a transaction
//! conflict, never throttles, never fails with a 500. This proxy sits in front of it
//! (point `AWS_ENDPOINT_URL_DYNAMODB` at [`FaultProxy::url`]) and forwards every request,
//! except that requests matching a [`Rule`] are, at the rule's rate, answered with one
//! of AWS's error responses instead — or forwarded and *then* answered with a 500, as
//! when DynamoDB applied a write but its answer was lost.
//!
//! The error bodies are DynamoDB's JSON 1.0 protocol errors, so the SDK parses them as
//! it would on AWS (`__type` names the exception).
//!
//! A [`Hold`] stops matching requests at the proxy until the test releases them: the
//! way to land another request in between a request's read and its write, on purpose
//! and every time — or to land a write at a moment the test chooses, after its caller
//! has given up on it (a held request reaches DynamoDB even if its caller hung up).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// What a matched request gets instead of DynamoDB's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `TransactionConflictException`: a write into an item a transaction holds.
    TransactionConflict,
    /// `TransactionCanceledException` with reason `TransactionConflict` (transactions).
    TransactionCanceled,
    /// `ThrottlingException` (on-demand tables get it too).
    Throttling,
    /// `ProvisionedThroughputExceededException`.
    ThroughputExceeded,
    /// HTTP 500 `InternalServerError`, the request not applied.
    InternalError,
    /// The request is applied, then answered with a 500: the caller can't know it landed.
    AppliedThenLost,
    /// The answer comes after this long (to exceed attempt timeouts), then as usual.
    Delay(Duration),
}

/// Which requests a fault applies to, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation (`UpdateItem`, `PutItem`, `TransactWriteItems`…); `None` for all.
    pub operation: Option<&'static str>,
    /// Only requests whose JSON body contains this text (e.g. `"ADD spent"`).
    pub body_contains: Option<&'static str>,
    /// Share of matching requests that get the fault, 0.0 to 1.0.
    pub rate: f64,
    pub fault: Fault,
}

impl Rule {
    pub fn new(operation: Option<&'static str>, rate: f64, fault: Fault) -> Self {
        Self {
            operation,
            body_contains: None,
            rate,
            fault,
        }
    }

    /// Narrows the rule to requests whose body contains `text`.
    pub fn when_body_contains(mut self, text: &'static str) -> Self {
        self.body_contains = Some(text);
        self
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    seed: AtomicU64,
    forwarded: AtomicUsize,
    injected: AtomicUsize,
    /// Every request's operation, in arrival order, until [`FaultProxy::take_operations`].
    operations: Mutex<Vec<String>>,
    /// Capacity consumed, when counted ([`FaultProxy::count_capacity`]).
    capacity: Mutex<Option<Capacity>>,
    holds: Mutex<Vec<Arc<HoldState>>>,
}

/// Requests held at the proxy until [`Hold::release`] (or until the `Hold` is dropped,
/// so a failing test can't leave them hanging). Every attempt of a matching request is
/// held, retries included; once released, they and any later ones go on to the rules
/// and DynamoDB Local.
pub struct Hold {
    state: Arc<HoldState>,
}

struct HoldState {
    operation: &'static str,
    body_contains: &'static str,
    /// How many matching requests have arrived.
    arrived: watch::Sender<usize>,
    /// How many of them have not been answered yet.
    unanswered: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

/// The longest a test waits for held requests to arrive or land.
const PATIENCE: Duration = Duration::from_secs(30);

impl Hold {
    /// Waits until `count` matching requests are being held (or were, before a release):
    /// how a test knows the request it holds was sent, without sleeping.
    pub async fn arrived(&self, count: usize) {
        let mut arrived = self.state.arrived.subscribe();
        tokio::time::timeout(PATIENCE, arrived.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| panic!("{count} requests were not held within {PATIENCE:?}"))
            .ok();
    }

    /// Matching requests held and not yet answered: waiting, or released and still on
    /// their way to DynamoDB Local.
    pub fn unanswered(&self) -> usize {
        *self.state.unanswered.borrow()
    }

    /// Lets the held requests, and any later ones, go on to DynamoDB Local.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// Releases the held requests and waits until DynamoDB Local has answered every one
    /// (their callers may have hung up long ago).
    pub async fn land(&self) {
        self.release();
        let mut unanswered = self.state.unanswered.subscribe();
        tokio::time::timeout(PATIENCE, unanswered.wait_for(|n| *n == 0))
            .await
            .unwrap_or_else(|_| panic!("held requests had not landed within {PATIENCE:?}"))
            .ok();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

/// A running proxy. Dropping it stops the server.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// Starts on a free loopback port, forwarding to `upstream` (DynamoDB Local's URL)
    /// with no faults until [`FaultProxy::set_rules`].
    pub async fn start(upstream: &str) -> Self {
        // reqwest is built without a bundled crypto provider (it only speaks plain HTTP
        // here, but the builder wants one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            rules: Mutex::new(Vec::new()),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            forwarded: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
            operations: Mutex::new(Vec::new()),
            capacity: Mutex::new(None),
            holds: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// In front of the DynamoDB Local that `AWS_ENDPOINT_URL_DYNAMODB` names.
    pub async fn in_front_of_local() -> Self {
        let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
            .expect("these tests need DynamoDB Local: run them with scripts/test");
        Self::start(&upstream).await
    }

    /// What `AWS_ENDPOINT_URL_DYNAMODB` should be for the code under test.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_rules(&self, rules: impl IntoIterator<Item = Rule>) {
        *self.shared.rules.lock().unwrap() = rules.into_iter().collect();
    }

    /// Holds `operation` requests whose body contains `body_contains` at the proxy, unsent,
    /// until the returned [`Hold`] is released.
    pub fn hold(&self, operation: &'static str, body_contains: &'static str) -> Hold {
        let state = Arc::new(HoldState {
            operation,
            body_contains,
            arrived: watch::Sender::new(0),
            unanswered: watch::Sender::new(0),
            released: watch::Sender::new(false),
        });
        self.shared.holds.lock().unwrap().push(state.clone());
        Hold { state }
    }

    /// Requests answered with a fault so far (applied-then-lost ones included).
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Requests that reached DynamoDB Local.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// From now on, asks DynamoDB for the capacity each request consumes (it adds
    /// `ReturnConsumedCapacity: TOTAL` to requests that lack it) and adds it up, for
    /// [`FaultProxy::take_capacity`].
    pub fn count_capacity(&self) {
        self.shared
            .capacity
            .lock()
            .unwrap()
            .get_or_insert_with(Capacity::default);
    }

    /// The capacity consumed since the last call (see [`FaultProxy::count_capacity`]).
    pub fn take_capacity(&self) -> Capacity {
        let mut capacity = self.shared.capacity.lock().unwrap();
        capacity.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The operations asked for since the last call (`GetItem`, `UpdateItem`…), in the
    /// order they arrived: what a test counts a route's DynamoDB calls by.
    pub fn take_operations(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.operations.lock().unwrap())
    }
}

impl Shared {
    /// A uniform draw in [0, 1): splitmix64 over a shared counter, repeatable per run.
    fn draw(&self) -> f64 {
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fault_for(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        let rules = self.rules.lock().unwrap().clone();
        let body = String::from_utf8_lossy(body);
        rules
            .iter()
            .filter(|r| r.operation.is_none_or(|op| op == operation))
            .filter(|r| r.body_contains.is_none_or(|text| body.contains(text)))
            .find(|r| self.draw() < r.rate)
            .map(|r| r.fault)
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = operation_of(&headers);
    shared.operations.lock().unwrap().push(operation.clone());
    let hold = {
        let text = String::from_utf8_lossy(&body);
        shared
            .holds
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.operation == operation && text.contains(h.body_contains))
            .cloned()
    };
    match hold {
        None => answer(&shared, operation, method, uri, headers, body).await,
        // A held request reaches DynamoDB when released even if its caller has hung up
        // meanwhile: the wait and the forwarding run apart from this connection.
        Some(hold) => {
            hold.arrived.send_modify(|n| *n += 1);
            hold.unanswered.send_modify(|n| *n += 1);
            let shared = shared.clone();
            detached(async move {
                let mut released = hold.released.subscribe();
                let _ = released.wait_for(|open| *open).await;
                let answer = answer(&shared, operation, method, uri, headers, body).await;
                hold.unanswered.send_modify(|n| *n -= 1);
                answer
            })
            .await
        }
    }
}

/// The fault a request gets by the rules, or DynamoDB Local's answer.
async fn answer(
    shared: &Arc<Shared>,
    operation: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = shared.fault_for(&operation, &body);
    match fault {
        None => forward(shared, method, &uri, &headers, body).await,
        // A late request still reaches DynamoDB when its caller has hung up: the wait and
        // the forwarding run apart from this connection, which may be dropped meanwhile.
        Some(Fault::Delay(pause)) => {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            let late = shared.clone();
            detached(async move {
                tokio::time::sleep(pause).await;
                forward(&late, method, &uri, &headers, body).await
            })
            .await
        }
        Some(Fault::AppliedThenLost) => {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            let _ = forward(shared, method, &uri, &headers, body).await;
            aws_error(500, "InternalServerError", "Internal server error")
        }
        Some(fault) => {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            match fault {
                Fault::TransactionConflict => aws_error(
                    400,
                    "TransactionConflictException",
                    "Transaction is ongoing for the item",
                ),
                Fault::TransactionCanceled => {
                    let body = json!({
                        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                        "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]",
                        "CancellationReasons": [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}],
                    });
                    json_response(400, body)
                }
                Fault::Throttling => aws_error(
                    400,
                    "ThrottlingException",
                    "Throughput exceeds the current capacity for one or more global secondary indexes. DynamoDB is automatically scaling your index so please be patient.",
                ),
                Fault::ThroughputExceeded => aws_error(
                    400,
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
                ),
                _ => aws_error(500, "InternalServerError", "Internal server error"),
            }
        }
    }
}

/// The DynamoDB operation a request asks for: `X-Amz-Target: DynamoDB_20120810.UpdateItem`.
fn operation_of(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned()
}

/// Runs `work` on its own task, so it finishes even if the caller's connection goes.
async fn detached(work: impl Future<Output = Response> + Send + 'static) -> Response {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

async fn forward(
    shared: &Shared,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let counting = shared.capacity.lock().unwrap().is_some();
    let operation = operation_of(headers);
    let body = match counting {
        true if DATA_OPERATIONS.contains(&operation.as_str()) => ask_for_capacity(body),
        _ => body,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for (name, value) in resp.headers() {
                if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                    out_headers.insert(name.clone(), value.clone());
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            if counting && let Some(capacity) = shared.capacity.lock().unwrap().as_mut() {
                capacity.add(&operation, status.as_u16(), &bytes);
            }
            (status, out_headers, bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// DynamoDB capacity consumed by the requests that went through, as DynamoDB reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    /// Read units (on-demand: read request units) of reads that succeeded.
    pub read_units: f64,
    /// Write units (write request units) of writes that succeeded.
    pub write_units: f64,
    /// Writes refused by their condition: DynamoDB reports no capacity for them, but
    /// AWS bills them as writes of the item's size (at least one unit each).
    pub failed_conditional_writes: usize,
    /// Requests counted.
    pub requests: usize,
}

impl Capacity {
    /// Write units with each failed conditional write counted as one.
    pub fn billed_write_units(&self) -> f64 {
        self.write_units + self.failed_conditional_writes as f64
    }

    fn add(&mut self, operation: &str, status: u16, body: &[u8]) {
        self.requests += 1;
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        if status != 200 {
            let kind = answer["__type"].as_str().unwrap_or_default();
            if kind.ends_with("ConditionalCheckFailedException")
                || kind.ends_with("TransactionCanceledException")
            {
                self.failed_conditional_writes += 1;
            }
            return;
        }
        let units: f64 = match &answer["ConsumedCapacity"] {
            serde_json::Value::Array(all) => all.iter().map(units_of).sum(),
            one => units_of(one),
        };
        if matches!(
            operation,
            "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems"
        ) {
            self.read_units += units;
        } else {
            self.write_units += units;
        }
    }
}

fn units_of(consumed: &serde_json::Value) -> f64 {
    consumed["CapacityUnits"].as_f64().unwrap_or(0.0)
}

/// The operations that report the capacity they consume.
const DATA_OPERATIONS: &[&str] = &[
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
];

/// The request with `ReturnConsumedCapacity: TOTAL`, unless it asks for capacity already.
fn ask_for_capacity(body: Bytes) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut request))
            if !request.contains_key("ReturnConsumedCapacity") =>
        {
            request.insert("ReturnConsumedCapacity".into(), json!("TOTAL"));
            serde_json::to_vec(&request).map_or(body, Bytes::from)
        }
        _ => body,
    }
}

fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    json_response(
        status,
        json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
            "message": message,
        }),
    )
}

fn json_response(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}
