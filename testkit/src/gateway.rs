//! A local stand-in for an API Gateway WebSocket API, on real protocol parts.
//!
//! - It speaks WebSocket to clients (`ws://…/ws?ticket=…`). A connection is opened
//!   only if the chat function answers the `$connect` event with a 2xx; otherwise the
//!   handshake gets that status, as API Gateway refuses it.
//! - Each text message becomes a `MESSAGE` event whose route key is the body's
//!   `action` (`$request.body.action`) when it is one of [`ROUTES`], else `$default`.
//!   Messages are invoked side by side, as API Gateway does: a `cancel` does not wait
//!   for the chat it stops. A client that goes away gets a `$disconnect`.
//! - It serves the management API the function posts to: `POST`, `GET` and `DELETE`
//!   `/{stage}/@connections/{id}`, 410 `GoneException` for a connection that is not
//!   open, and records every frame posted ([`Gateway::frames`]).
//!
//! The events are built from the samples in `events/websocket/`, so they have the
//! shape API Gateway sends. The function is reached through the Runtime API emulator
//! ([`Invoker::Emulator`], tests) or the Lambda Invoke API that `cargo lambda watch`
//! serves ([`Invoker::Http`], `scripts/dev`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
    task::JoinHandle,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::client::Request as ClientRequest, protocol::CloseFrame},
};

use crate::runtime::{Outcome, RuntimeApi};

/// The route keys of the API besides `$connect`, `$disconnect` and `$default`.
pub const ROUTES: [&str; 3] = ["chat", "cancel", "balance"];

/// The stage the gateway's management endpoint answers under.
pub const STAGE: &str = "local";

const CONNECT: &str = include_str!("../../events/websocket/connect.json");
const MESSAGE: &str = include_str!("../../events/websocket/chat.json");
const DISCONNECT: &str = include_str!("../../events/websocket/disconnect.json");

/// How the gateway reaches the chat function.
#[derive(Clone)]
pub enum Invoker {
    /// Through a Runtime API emulator whose processes run the function.
    Emulator(Arc<RuntimeApi>),
    /// Through the Lambda Invoke API at this URL
    /// (`…/2015-03-31/functions/chat/invocations`).
    Http {
        url: String,
        client: reqwest::Client,
    },
}

impl Invoker {
    pub fn http(url: impl Into<String>) -> Self {
        // reqwest is built without a TLS provider of its own (the project's is ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self::Http {
            url: url.into(),
            client: reqwest::Client::new(),
        }
    }

    /// The function's answer, or why there is none.
    async fn invoke(&self, event: Value) -> Result<Value, String> {
        match self {
            Self::Emulator(runtime) => match runtime.invoke(event).await {
                Outcome::Response(answer) => Ok(answer),
                Outcome::Error(error) => Err(error.to_string()),
            },
            Self::Http { url, client } => {
                let resp = client
                    .post(url)
                    .json(&event)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            }
        }
    }
}

/// A frame the function posted, as the gateway received it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub connection: String,
    pub at: Instant,
    /// The frame's bytes, as JSON (or a string when they are not JSON).
    pub body: Value,
    pub bytes: usize,
    /// Whether it reached an open connection (a gone one got 410).
    pub delivered: bool,
}

struct Connection {
    tx: mpsc::UnboundedSender<Message>,
    connected_at: u64,
    last_active_at: u64,
}

struct Inner {
    invoker: Invoker,
    domain: String,
    connections: Mutex<HashMap<String, Connection>>,
    frames: Mutex<Vec<Frame>>,
    posted: Notify,
    next_id: AtomicU64,
    invocations: AtomicU64,
}

/// A running gateway. Dropping it stops both listeners.
pub struct Gateway {
    ws_addr: SocketAddr,
    management_addr: SocketAddr,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Gateway {
    /// Both listeners on loopback ports of the system's choosing.
    pub async fn start(invoker: Invoker) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        Self::start_on(invoker, any, any).await
    }

    /// WebSocket clients on `ws_addr`, the management API on `management_addr`.
    pub async fn start_on(
        invoker: Invoker,
        ws_addr: SocketAddr,
        management_addr: SocketAddr,
    ) -> Self {
        let ws = TcpListener::bind(ws_addr)
            .await
            .expect("bind the WebSocket port");
        let management = TcpListener::bind(management_addr)
            .await
            .expect("bind the management port");
        let ws_addr = ws.local_addr().expect("bound");
        let management_addr = management.local_addr().expect("bound");
        let inner = Arc::new(Inner {
            invoker,
            domain: ws_addr.to_string(),
            connections: Mutex::new(HashMap::new()),
            frames: Mutex::new(Vec::new()),
            posted: Notify::new(),
            next_id: AtomicU64::new(1),
            invocations: AtomicU64::new(0),
        });
        let app = Router::new()
            .route(
                &format!("/{STAGE}/@connections/{{id}}"),
                post(post_to).get(get_info).delete(delete_connection),
            )
            .with_state(inner.clone());
        let serve_management = tokio::spawn(async move {
            let _ = axum::serve(management, app).await;
        });
        let accept = {
            let inner = inner.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = ws.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(client(inner.clone(), stream));
                }
            })
        };
        Self {
            ws_addr,
            management_addr,
            inner,
            tasks: vec![serve_management, accept],
        }
    }

    /// `ws://127.0.0.1:<port>/ws`: where clients connect (with `?ticket=`).
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.ws_addr)
    }

    /// What `WEBSOCKET_MANAGEMENT_ENDPOINT` should be.
    pub fn management_endpoint(&self) -> String {
        format!("http://{}/{STAGE}", self.management_addr)
    }

    /// Every frame posted so far, in order.
    pub fn frames(&self) -> Vec<Frame> {
        self.inner.frames.lock().unwrap().clone()
    }

    /// Frames posted to `connection` so far.
    pub fn frames_to(&self, connection: &str) -> Vec<Frame> {
        self.frames()
            .into_iter()
            .filter(|f| f.connection == connection)
            .collect()
    }

    /// Waits until a frame satisfying `done` was posted, or `within` passes; returns the
    /// frames so far either way.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let posted = self.inner.posted.notified();
            let frames = self.frames();
            if done(&frames) {
                return frames;
            }
            if tokio::time::timeout_at(deadline, posted).await.is_err() {
                return self.frames();
            }
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> Vec<String> {
        self.inner
            .connections
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Invocations made so far.
    pub fn invocations(&self) -> u64 {
        self.inner.invocations.load(Ordering::SeqCst)
    }
}

/// Reads the handshake's request line without taking it off the socket, so that
/// `$connect` can be asked before the handshake is answered.
async fn peek_request_target(stream: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    for _ in 0..200 {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let head = &buf[..n];
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&head[..end]).ok()?;
            return head
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)
                .map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Inner {
    fn event(&self, base: &str, connection: &str, route: &str, event_type: &str) -> Value {
        let mut event: Value = serde_json::from_str(base).expect("a sample event is JSON");
        let now = now_millis();
        let context = &mut event["requestContext"];
        context["routeKey"] = json!(route);
        context["eventType"] = json!(event_type);
        context["connectionId"] = json!(connection);
        context["domainName"] = json!(self.domain);
        context["stage"] = json!(STAGE);
        context["requestTimeEpoch"] = json!(now);
        context["identity"]["sourceIp"] = json!("127.0.0.1");
        let request_id = format!("local-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        context["requestId"] = json!(request_id);
        context["extendedRequestId"] = json!(request_id);
        if let Some(headers) = event["headers"].as_object_mut() {
            headers.insert("Host".into(), json!(self.domain));
        }
        event
    }

    async fn invoke(&self, event: Value) -> Result<Value, String> {
        self.invocations.fetch_add(1, Ordering::SeqCst);
        self.invoker.invoke(event).await
    }
}

fn status_of(answer: &Result<Value, String>) -> u16 {
    match answer {
        Ok(answer) => answer["statusCode"].as_u64().unwrap_or(200) as u16,
        Err(_) => 502,
    }
}

/// One client: `$connect`, then its messages, then `$disconnect`.
async fn client(inner: Arc<Inner>, stream: TcpStream) {
    let Some(target) = peek_request_target(&stream).await else {
        return;
    };
    let id = format!(
        "{}{:08x}=",
        uuid::Uuid::now_v7()
            .simple()
            .to_string()
            .get(20..)
            .unwrap_or("local"),
        inner.next_id.fetch_add(1, Ordering::SeqCst)
    );
    let mut connect = inner.event(CONNECT, &id, "$connect", "CONNECT");
    let ticket = query_param(&target, "ticket");
    connect["queryStringParameters"] = match &ticket {
        Some(t) => json!({ "ticket": t }),
        None => Value::Null,
    };
    connect["multiValueQueryStringParameters"] = match &ticket {
        Some(t) => json!({ "ticket": [t] }),
        None => Value::Null,
    };
    let answer = inner.invoke(connect).await;
    let status = status_of(&answer);
    if !(200..300).contains(&status) {
        let mut stream = stream;
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Refused");
        let body = match &answer {
            Ok(answer) => answer["body"].as_str().unwrap_or("").to_owned(),
            Err(e) => e.clone(),
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::AsyncWriteExt;
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let now = now_millis();
    inner.connections.lock().unwrap().insert(
        id.clone(),
        Connection {
            tx,
            connected_at: now,
            last_active_at: now,
        },
    );
    serve(inner.clone(), &id, socket, rx).await;
    // Closed by either side: API Gateway tells the function either way.
    inner.connections.lock().unwrap().remove(&id);
    let disconnect = inner.event(DISCONNECT, &id, "$disconnect", "DISCONNECT");
    let _ = inner.invoke(disconnect).await;
}

async fn serve(
    inner: Arc<Inner>,
    id: &str,
    socket: WebSocketStream<TcpStream>,
    mut outgoing: mpsc::UnboundedReceiver<Message>,
) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(c) = inner.connections.lock().unwrap().get_mut(id) {
                        c.last_active_at = now_millis();
                    }
                    let route = serde_json::from_str::<Value>(text.as_str())
                        .ok()
                        .and_then(|body| body["action"].as_str().map(str::to_owned))
                        .filter(|action| ROUTES.contains(&action.as_str()))
                        .unwrap_or_else(|| "$default".to_owned());
                    let mut event = inner.event(MESSAGE, id, &route, "MESSAGE");
                    event["body"] = json!(text.as_str());
                    event["isBase64Encoded"] = json!(false);
                    let inner = inner.clone();
                    // Side by side, as API Gateway invokes: a cancel must not wait.
                    tokio::spawn(async move {
                        if let Err(e) = inner.invoke(event).await {
                            eprintln!("ws-gateway: the function failed a message: {e}");
                        }
                    });
                }
                Some(Ok(Message::Ping(data))) => {
                    let _ = sink.send(Message::Pong(data)).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            frame = outgoing.recv() => match frame {
                Some(Message::Close(frame)) => {
                    let _ = sink.send(Message::Close(frame)).await;
                    return;
                }
                Some(frame) => {
                    if sink.send(frame).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

fn gone() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        "GoneException".parse().expect("a header"),
    );
    headers.insert(
        "content-type",
        "application/json".parse().expect("a header"),
    );
    (
        StatusCode::GONE,
        headers,
        json!({ "__type": "GoneException", "message": null }).to_string(),
    )
        .into_response()
}

async fn post_to(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> Response {
    let sent = {
        let connections = inner.connections.lock().unwrap();
        connections.get(&id).map(|c| {
            let text = String::from_utf8_lossy(&body).into_owned();
            c.tx.send(Message::Text(text.into())).is_ok()
        })
    };
    let delivered = sent == Some(true);
    inner.frames.lock().unwrap().push(Frame {
        connection: id,
        at: Instant::now(),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        bytes: body.len(),
        delivered,
    });
    inner.posted.notify_waiters();
    if delivered {
        StatusCode::OK.into_response()
    } else {
        gone()
    }
}

async fn get_info(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let connections = inner.connections.lock().unwrap();
    match connections.get(&id) {
        Some(c) => axum::Json(json!({
            "connectedAt": c.connected_at as f64 / 1000.0,
            "lastActiveAt": c.last_active_at as f64 / 1000.0,
            "identity": { "sourceIp": "127.0.0.1", "userAgent": "local" },
        }))
        .into_response(),
        None => gone(),
    }
}

async fn delete_connection(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let connection = inner.connections.lock().unwrap().remove(&id);
    match connection {
        Some(c) => {
            let _ = c.tx.send(Message::Close(Some(CloseFrame {
                code: 1000.into(),
                reason: "closed by the server".into(),
            })));
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}

/// A WebSocket client for tests: JSON messages out, JSON frames in.
pub struct Client {
    socket: WebSocketStream<TcpStream>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/path?query`). `Err(status)`: the handshake was
    /// refused with that HTTP status (0 if the connection itself failed).
    pub async fn connect(url: &str) -> Result<Self, u16> {
        let rest = url.strip_prefix("ws://").ok_or(0u16)?;
        let host = rest.split('/').next().ok_or(0u16)?;
        let stream = TcpStream::connect(host).await.map_err(|_| 0u16)?;
        let _ = stream.set_nodelay(true);
        let request: ClientRequest = {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            url.into_client_request().map_err(|_| 0u16)?
        };
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(_) => Err(0),
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send a message");
    }

    /// The next JSON frame, or `None` if none comes within `within` (or the socket closed).
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap_or(Value::Null));
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Frames until one of type `kind` (included), or `None` if it does not come.
    pub async fn until(&mut self, kind: &str, within: Duration) -> Option<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next(left).await?;
            let done = frame["type"] == kind;
            frames.push(frame);
            if done {
                return Some(frames);
            }
        }
    }

    /// Goes away without a word (drops the TCP connection).
    pub fn vanish(self) {}

    /// Closes with a close frame.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
