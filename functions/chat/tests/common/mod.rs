//! What the process-level chat tests share: a fresh table with one user, the Gemini
//! stand-in, a Runtime API emulator, and the built `chat` binary run as processes.
#![allow(dead_code)]

use std::{path::Path, sync::Arc, time::Duration};

use serde_json::{Value, json};
use shared::{
    audit::{self, Books},
    store::Store,
};
use testkit::{
    GeminiStandIn, demo,
    runtime::{Functions, Outcome, RuntimeApi},
};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");

pub struct Setup {
    pub store: Store,
    pub standin: GeminiStandIn,
    pub runtime: Arc<RuntimeApi>,
    pub token: String,
}

/// A fresh table with `john` holding `tokens` credits, a stand-in and an emulator.
pub async fn setup(tokens: u64) -> Setup {
    let store = testkit::table::local_store("proc").await;
    let token = demo::user_with_new_token(&store, "john", tokens)
        .await
        .unwrap();
    Setup {
        store,
        standin: GeminiStandIn::start().await,
        runtime: Arc::new(RuntimeApi::start().await),
        token,
    }
}

impl Setup {
    pub fn functions(&self, count: usize, extra: &[(&str, String)]) -> Functions {
        let mut env = vec![
            ("TABLE_NAME", self.store.table().to_owned()),
            ("GEMINI_API_KEY", "test-key".to_owned()),
            ("GEMINI_BASE_URL", self.standin.base_url()),
            ("GEMINI_TIMEOUT_MS", "1500".to_owned()),
            ("GEMINI_STREAM_TIMEOUT_MS", "1500".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            // These tests are about concurrency, not about the per-user chat limits.
            ("CHATS_IN_FLIGHT", "1000".to_owned()),
            ("CHATS_PER_MINUTE", "100000".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        Functions::spawn(Path::new(CHAT), &self.runtime, count, &env)
    }

    pub async fn books(&self) -> Books {
        let books = audit::audit(&self.store, "john").await.unwrap().unwrap();
        assert!(books.is_balanced(), "the books do not balance:\n{books}");
        books
    }
}

/// `events/chat.json` with this token, message and, optionally, an Idempotency-Key.
pub fn chat_event(token: &str, message: &str, idempotency_key: Option<&str>) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/chat.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut set = |name: &str, value: &str| {
        event["headers"][name] = json!(value);
        event["multiValueHeaders"][name] = json!([value]);
    };
    set("Authorization", &format!("Token {token}"));
    set("Content-Type", "application/json");
    if let Some(key) = idempotency_key {
        set("Idempotency-Key", key);
    }
    event["body"] = json!(json!({ "message": message }).to_string());
    event["isBase64Encoded"] = json!(false);
    event
}

/// `events/chat.json` asking for Server-Sent Events.
pub fn streamed(setup: &Setup, message: &str) -> Value {
    let mut event = chat_event(&setup.token, message, None);
    event["headers"]["Accept"] = json!("text/event-stream");
    event["multiValueHeaders"]["Accept"] = json!(["text/event-stream"]);
    event
}

pub async fn invoke(runtime: &RuntimeApi, event: Value) -> Outcome {
    tokio::time::timeout(Duration::from_secs(60), runtime.invoke(event))
        .await
        .expect("an answer within 60 s")
}

/// Settings under which a charge counts as abandoned after 9 s (60 s in production):
/// the function's own timeout is shorter, and the Gemini and DynamoDB budgets fit inside.
pub fn fast_recovery() -> Vec<(&'static str, String)> {
    vec![
        ("CHARGE_TIMEOUT_SECS", "9".to_owned()),
        ("FUNCTION_TIMEOUT_SECS", "8".to_owned()),
        ("DYNAMODB_RETRY_BUDGET_MS", "2000".to_owned()),
        ("DYNAMODB_MAX_ATTEMPTS", "8".to_owned()),
    ]
}

/// Long enough for a charge opened now to count as abandoned under [`fast_recovery`].
pub const PAST_THE_CHARGE_TIMEOUT: Duration = Duration::from_millis(9_300);

impl Setup {
    /// The app the functions run, in this process, on the same table, with the charge
    /// timeout of [`fast_recovery`].
    pub fn app(&self) -> shared::App {
        let config = shared::Config {
            table_name: self.store.table().to_owned(),
            start_tokens: 4000,
            models: shared::domain::ModelCatalogue::parse(
                "gemini-flash-latest=100",
                "gemini-flash-latest",
            )
            .unwrap(),
            conversations: Default::default(),
            token_ttl: Duration::from_secs(86_400),
            session_idle: Duration::from_secs(86_400),
            max_sessions: 20,
            limits: Default::default(),
            max_message_chars: 8000,
            charge_timeout: Duration::from_secs(9),
            function_timeout: Duration::from_secs(8),
            store_retry: Default::default(),
            websocket_url: None,
            metrics_namespace: "ChatBackend".to_owned(),
            cors: Default::default(),
        };
        shared::App::new(config, self.store.clone())
    }

    /// Ends `john`'s session, as `POST /api/logout/` does.
    pub async fn log_out(&self) {
        let event = testkit::events::json_event("POST", "/api/logout/", Some(&self.token), None);
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        let resp = shared::api::sessions::route(&self.app(), req)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// What `GET /api/tokens/` shows `john` (the handler, in this process, on the same
    /// table, with the charge timeout of [`fast_recovery`]).
    pub async fn shown_balance(&self) -> u64 {
        let app = self.app();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/tokens.json");
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let auth = format!("Token {}", self.token);
        event["headers"]["Authorization"] = json!(auth);
        event["multiValueHeaders"]["Authorization"] = json!([auth]);
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        let resp = shared::api::tokens::handle(&app, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        body["tokens"].as_u64().unwrap()
    }
}
