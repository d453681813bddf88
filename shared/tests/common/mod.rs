//! Helpers for tests that go through the real handlers, DynamoDB Local and the Gemini
//! stand-in. Every test gets its own table, so tests run in parallel.
#![allow(dead_code)]

use std::time::Duration;

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::{
    App, ChatApp, Config,
    config::{GeminiConfig, Secret},
    gemini::GeminiClient,
    store::Store,
};
use testkit::{Behavior, GeminiStandIn};

pub const PASSWORD: &str = "correct horse battery";
pub const API_KEY: &str = "test-gemini-key";

/// A fresh, empty table on DynamoDB Local.
pub async fn store() -> Store {
    testkit::table::local_store("test").await
}

pub fn config(table: &str) -> Config {
    Config {
        table_name: table.to_owned(),
        start_tokens: 4000,
        models: shared::domain::ModelCatalogue::parse(
            Config::DEFAULT_MODELS,
            GeminiConfig::DEFAULT_MODEL,
        )
        .unwrap(),
        conversations: Default::default(),
        token_ttl: Duration::from_secs(30 * 86_400),
        session_idle: Duration::from_secs(7 * 86_400),
        max_sessions: 20,
        // Concurrency tests fire hundreds of chats at once; the throttling tests set
        // their own limits.
        limits: shared::config::Limits {
            chats_in_flight: 1_000,
            chats_per_minute: 100_000,
            ..Default::default()
        },
        max_message_chars: 8000,
        charge_timeout: Duration::from_secs(60),
        function_timeout: Duration::from_secs(29),
        store_retry: Default::default(),
        websocket_url: Some("ws://127.0.0.1:9001/ws".into()),
        metrics_namespace: "ChatBackend".to_owned(),
        cors: Default::default(),
    }
}

pub async fn app() -> App {
    app_with(|_| {}).await
}

pub async fn app_with(tweak: impl FnOnce(&mut Config)) -> App {
    let store = store().await;
    let mut config = config(store.table());
    tweak(&mut config);
    App::new(config, store)
}

/// `app` again, but reaching DynamoDB Local through `relay` (the same table), with the
/// store's retry policy `retry`.
pub async fn app_through(
    relay: &testkit::faults::FaultProxy,
    app: &App,
    retry: shared::store::RetryPolicy,
) -> App {
    // A config of the loaded one's parts, but without the environment's
    // service-specific endpoint (which would win over the relay).
    let loaded = shared::aws::config().await;
    let mut sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(relay.url());
    sdk.set_region(loaded.region().cloned());
    sdk.set_credentials_provider(loaded.credentials_provider());
    sdk.set_http_client(loaded.http_client());
    sdk.set_sleep_impl(loaded.sleep_impl());
    sdk.set_time_source(loaded.time_source());
    let store = Store::connect(&sdk.build(), app.store.table(), retry);
    App::new(app.config.clone(), store)
}

pub fn gemini_config(standin: &GeminiStandIn) -> GeminiConfig {
    GeminiConfig {
        timeout: Duration::from_secs(5),
        stream_timeout: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_secs(2),
        ..GeminiConfig::new(
            Secret::new(API_KEY),
            standin.base_url(),
            GeminiConfig::default_model(),
        )
    }
}

pub fn chat_app_on(app: App, gemini: GeminiConfig) -> ChatApp {
    ChatApp::new(
        app,
        GeminiClient::new(gemini).expect("build the Gemini client"),
    )
}

/// A store on `table` that reaches DynamoDB Local through `proxy` (to count or fault
/// its calls). The environment's service-specific endpoint would win over the proxy, so
/// the SDK config is made of the loaded one's parts without it.
pub async fn store_through(proxy: &testkit::faults::FaultProxy, table: &str) -> Store {
    store_through_with(proxy, table, Default::default()).await
}

/// [`store_through`] with its own retry policy.
pub async fn store_through_with(
    proxy: &testkit::faults::FaultProxy,
    table: &str,
    retry: shared::store::RetryPolicy,
) -> Store {
    let loaded = shared::aws::config().await;
    let mut sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(proxy.url());
    sdk.set_region(loaded.region().cloned());
    sdk.set_credentials_provider(loaded.credentials_provider());
    sdk.set_http_client(loaded.http_client());
    sdk.set_sleep_impl(loaded.sleep_impl());
    sdk.set_time_source(loaded.time_source());
    Store::connect(&sdk.build(), table, retry)
}

/// `chat_app` with its store going through `proxy`; same table, same configuration.
pub fn chat_app_through(chat_app: &ChatApp, store: Store) -> ChatApp {
    ChatApp::new(
        App::new(chat_app.app.config.clone(), store),
        chat_app.gemini.clone(),
    )
}

pub async fn chat_app(standin: &GeminiStandIn) -> ChatApp {
    chat_app_on(app().await, gemini_config(standin))
}

/// The usual arrangement: a stand-in behaving as told, a chat app on a fresh table, and
/// a login token for `john` (4000 credits).
pub async fn john_chatting(behavior: Behavior) -> (GeminiStandIn, ChatApp, String) {
    let standin = GeminiStandIn::with_behavior(behavior).await;
    let chat_app = chat_app(&standin).await;
    let token = user_token(&chat_app.app, "john").await;
    (standin, chat_app, token)
}

/// An API Gateway REST proxy event, as API Gateway sends it, turned into the request
/// the handler sees by `lambda_http` itself.
pub fn event(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Request {
    let mut headers = json!({"Content-Type": "application/json", "Host": "api.example.com"});
    if let Some(token) = token {
        headers["Authorization"] = json!(format!("Token {token}"));
    }
    event_with(method, path, headers, body.map(|b| (b.to_owned(), false)))
}

/// Like [`event`] with explicit headers; the body may be base64-encoded.
pub fn event_with(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<(String, bool)>,
) -> Request {
    event_from(method, path, headers, body, "127.0.0.1")
}

/// Like [`event_with`], from the client address `ip`.
pub fn event_from(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<(String, bool)>,
    ip: &str,
) -> Request {
    let multi: serde_json::Map<String, Value> = headers
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let (body, encoded) = body.map_or((Value::Null, false), |(b, e)| (json!(b), e));
    // A query string goes where API Gateway puts it, decoded.
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (single, multi_query) = match pairs.is_empty() {
        true => (Value::Null, Value::Null),
        false => (
            pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
            pairs.iter().map(|(k, v)| (k.clone(), json!([v]))).collect(),
        ),
    };
    let event = json!({
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": single,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "abc123",
            "stage": "Prod",
            "requestId": uuid::Uuid::now_v7().to_string(),
            "requestTime": "24/Nov/2026:10:00:00 +0000",
            "requestTimeEpoch": 1795514400000u64,
            "identity": {"sourceIp": ip, "userAgent": "tests"},
            "path": format!("/Prod{path}"),
            "resourcePath": path,
            "httpMethod": method,
            "apiId": "1234567890",
            "protocol": "HTTP/1.1"
        },
        "body": body,
        "isBase64Encoded": encoded,
    });
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

pub fn json_of(resp: &Response<Body>) -> Value {
    serde_json::from_slice(resp.body().as_ref()).unwrap_or_else(|e| {
        panic!(
            "response body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(resp.body().as_ref())
        )
    })
}

pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

pub async fn register(app: &App, username: &str, password: &str) -> Response<Body> {
    let body = json!({"username": username, "password": password}).to_string();
    shared::api::register::handle(app, event("POST", "/api/register/", None, Some(&body)))
        .await
        .unwrap()
}

pub async fn login(app: &App, username: &str, password: &str) -> Response<Body> {
    login_from(app, username, password, "127.0.0.1").await
}

/// A login from the client address `ip`.
pub async fn login_from(app: &App, username: &str, password: &str, ip: &str) -> Response<Body> {
    let body = json!({"username": username, "password": password}).to_string();
    let headers = json!({"Content-Type": "application/json", "Host": "api.example.com"});
    let req = event_from("POST", "/api/login/", headers, Some((body, false)), ip);
    shared::api::sessions::route(app, req).await.unwrap()
}

/// A registration from the client address `ip`.
pub async fn register_from(app: &App, username: &str, password: &str, ip: &str) -> Response<Body> {
    let body = json!({"username": username, "password": password}).to_string();
    let headers = json!({"Content-Type": "application/json", "Host": "api.example.com"});
    let req = event_from("POST", "/api/register/", headers, Some((body, false)), ip);
    shared::api::register::handle(app, req).await.unwrap()
}

/// Registers `username` and returns a fresh login token.
pub async fn user_token(app: &App, username: &str) -> String {
    assert_eq!(register(app, username, PASSWORD).await.status(), 201);
    let resp = login(app, username, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    json_of(&resp)["token"].as_str().unwrap().to_owned()
}

/// The account that holds the name `username` now.
pub async fn account(app: &App, username: &str) -> shared::store::Account {
    app.store
        .user(username)
        .await
        .unwrap()
        .expect("the user exists")
        .account
}

pub async fn balance(app: &App, token: &str) -> u64 {
    let resp = shared::api::tokens_function(app, event("GET", "/api/tokens/", Some(token), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", json_of(&resp));
    json_of(&resp)["tokens"].as_u64().unwrap()
}

pub async fn chat(chat_app: &ChatApp, token: &str, message: &str) -> Response<Body> {
    let body = json!({ "message": message }).to_string();
    chat_request(
        chat_app,
        event("POST", "/api/chat/", Some(token), Some(&body)),
    )
    .await
}

/// The chat handler's (streamed) response, read whole.
pub async fn chat_request(chat_app: &ChatApp, req: Request) -> Response<Body> {
    let resp = shared::api::chat_function(chat_app, req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await;
    Response::from_parts(parts, Body::Binary(bytes.to_vec()))
}

/// Every item of the table.
pub async fn table_items(
    app: &App,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let scan = app
        .store
        .client()
        .scan()
        .table_name(app.store.table())
        .send()
        .await
        .unwrap();
    scan.items.unwrap_or_default()
}

/// Every item of the table, as text: what a copy of the table would show.
pub async fn table_text(app: &App) -> String {
    format!("{:?}", table_items(app).await)
}

/// Asserts that the user's books balance, and returns them.
pub async fn assert_books_balance(app: &App, user_key: &str) -> shared::audit::Books {
    let books = shared::audit::audit(&app.store, user_key)
        .await
        .unwrap()
        .expect("the user exists");
    assert!(
        books.is_balanced(),
        "books of {user_key} do not balance:\n{books}"
    );
    books
}

/// A chat carrying `Idempotency-Key: key`.
pub async fn chat_with_key(
    chat_app: &ChatApp,
    token: &str,
    message: &str,
    key: &str,
) -> Response<Body> {
    let headers = json!({
        "Content-Type": "application/json",
        "Authorization": format!("Token {token}"),
        "Idempotency-Key": key,
    });
    let body = json!({ "message": message }).to_string();
    let req = event_with("POST", "/api/chat/", headers, Some((body, false)));
    chat_request(chat_app, req).await
}
