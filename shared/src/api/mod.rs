//! The endpoints. Each function's `main` hands every request to one entry point here
//! ([`register_function`], [`login_function`], [`chat_function`], [`tokens_function`]):
//! it never fails at the Lambda level, every outcome is an HTTP response, and every
//! response leaves through [`http::with_common_headers`] and then
//! [`cors::serve`](crate::cors::serve).

pub mod chat;
pub mod conversations;
pub mod login;
pub mod models;
pub mod openapi;
pub mod page;
pub mod register;
pub mod sessions;
pub mod tokens;
pub mod ws;

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures_core::Stream;
use lambda_http::{
    Body, Error, LambdaEvent, Request, RequestExt, Response, Service, StreamAdapter,
    lambda_runtime::FunctionResponse, request::LambdaRequest, service_fn,
};
use serde_json::Value;

use aws_config::SdkConfig;

use crate::{
    aws,
    config::{self, Config, GeminiConfig, Secret, SocketConfig},
    connections::Connections,
    cors,
    error::{ApiError, BoxError},
    gemini::GeminiClient,
    http,
    service::accounts::{Accounts, Authed},
    store::Store,
    telemetry::metrics::{self, Record},
};

/// Runs one invocation of `function` with its own metrics record, written as one EMF
/// line once the invocation (and any task it left running) lets go of it. Each
/// function's routes run inside one (a CORS preflight, answered before, records
/// nothing).
pub async fn invocation<F, Fut>(config: &Config, function: &'static str, handler: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let record = Record::new(config.metrics_namespace.as_str(), function);
    // The handler's future is made here and boxed at once: it is large (several SDK
    // calls' state), and neither this future nor whoever awaits an entry point should
    // carry it inline.
    metrics::scope(record, Box::pin(handler())).await
}

/// The request's path as the client sent it (without API Gateway's stage), with no
/// trailing slash: every route works with and without one.
fn route_path(req: &Request) -> String {
    let raw = match req.raw_http_path() {
        "" => req.uri().path(),
        raw => raw,
    };
    raw.trim_end_matches('/').to_owned()
}

/// One invocation of the chat function, whichever API sent it. A WebSocket event
/// (`$connect`, `$disconnect`, a message) gets a buffered answer, `{"statusCode"}`: API
/// Gateway's WebSocket integration reads no streamed response, and a chat's frames go out
/// through `@connections` anyway. Every other event is an HTTP request, answered in
/// Lambda's response-streaming mode (Server-Sent Events, or a JSON body in one piece).
/// The runtime sets the streaming mode per response, so one process serves both.
pub async fn chat_invocation(
    chat_app: &ChatApp,
    event: LambdaEvent<Value>,
) -> Result<
    FunctionResponse<Value, impl Stream<Item = Result<Bytes, Infallible>> + Unpin + Send + 'static>,
    Error,
> {
    let LambdaEvent { payload, context } = event;
    if ws::is_websocket(&payload) {
        let answer = invocation(&chat_app.app.config, "chat", || {
            ws::handle(chat_app, payload)
        })
        .await;
        return Ok(FunctionResponse::BufferedResponse(answer));
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut http = StreamAdapter::from(service_fn(|req| chat_function(chat_app, req)));
    let streamed = http.call(LambdaEvent::new(request, context)).await?;
    Ok(FunctionResponse::StreamingResponse(streamed))
}

/// The register function: `/api/register/`.
pub async fn register_function(app: &App, req: Request) -> Result<Response<Body>, Error> {
    cors::serve(&app.config.cors, req, |req| register::handle(app, req)).await
}

/// The login function: login, and the session and account routes of [`sessions`].
pub async fn login_function(app: &App, req: Request) -> Result<Response<Body>, Error> {
    cors::serve(&app.config.cors, req, |req| sessions::route(app, req)).await
}

/// The chat function's HTTP routes: `/api/chat/`, the history API under
/// `/api/conversations/`, and `/api/ws-ticket/`.
pub async fn chat_function(
    chat_app: &ChatApp,
    req: Request,
) -> Result<Response<http::StreamBody>, Error> {
    cors::serve(&chat_app.app.config.cors, req, |req| {
        chat_routes(chat_app, req)
    })
    .await
}

async fn chat_routes(
    chat_app: &ChatApp,
    req: Request,
) -> Result<Response<http::StreamBody>, Error> {
    invocation(&chat_app.app.config, "chat", || async {
        let path = route_path(&req);
        let resp = if conversations::serves(&path) {
            http::into_stream(conversations::handle(&chat_app.app, req, &path).await)
        } else if path == "/api/ws-ticket" {
            http::into_stream(ws::ticket(chat_app, req).await)
        } else {
            chat::handle(chat_app, req).await?
        };
        Ok(http::with_common_headers(resp))
    })
    .await
}

/// The tokens function: `/api/tokens/`, `/api/models/`, `/api/openapi.json` and the
/// chat page (`/`, `/assets/…`), all read-only.
pub async fn tokens_function(app: &App, req: Request) -> Result<Response<Body>, Error> {
    cors::serve(&app.config.cors, req, |req| tokens_routes(app, req)).await
}

async fn tokens_routes(app: &App, req: Request) -> Result<Response<Body>, Error> {
    invocation(&app.config, "tokens", || async {
        let path = route_path(&req);
        let resp = if page::serves(&path) {
            page::handle(req, &path, app.config.websocket_url.as_deref()).await
        } else if path == "/api/models" {
            models::handle(app, req).await
        } else if path.ends_with("/openapi.json") {
            openapi::handle(req).await
        } else {
            tokens::handle(app, req).await?
        };
        Ok(http::with_common_headers(resp))
    })
    .await
}

/// What every function builds once per cold start.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Config,
    pub store: Store,
}

impl App {
    pub fn new(config: Config, store: Store) -> Self {
        Self { config, store }
    }

    pub async fn from_env() -> Result<Self, BoxError> {
        Self::from_sdk_config(&aws::config().await)
    }

    fn from_sdk_config(sdk: &SdkConfig) -> Result<Self, BoxError> {
        let config = Config::from_env()?;
        let store = Store::connect(sdk, &config.table_name, config.store_retry);
        Ok(Self::new(config, store))
    }

    pub fn accounts(&self) -> Accounts<'_> {
        Accounts::new(&self.store, &self.config)
    }

    /// The user and session a token (from [`http::auth_token`]) belongs to, with their
    /// user item: one consistent read.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Authed, ApiError> {
        Ok(self.accounts().authenticate(token).await?)
    }
}

/// The chat function also talks to Gemini, and to WebSocket clients.
#[derive(Debug, Clone)]
pub struct ChatApp {
    pub app: App,
    pub gemini: GeminiClient,
    pub sockets: SocketConfig,
    pub connections: Arc<Connections>,
}

impl ChatApp {
    /// Without a WebSocket API.
    pub fn new(app: App, gemini: GeminiClient) -> Self {
        Self {
            app,
            gemini,
            sockets: SocketConfig::default(),
            connections: Arc::new(Connections::disabled()),
        }
    }

    /// With the WebSocket API `sockets` describes, posting through `connections`.
    pub fn with_sockets(mut self, sockets: SocketConfig, connections: Connections) -> Self {
        self.sockets = sockets;
        self.connections = Arc::new(connections);
        self
    }

    /// The Gemini key comes from `GEMINI_API_KEY` if set (local runs), otherwise from
    /// the SSM SecureString named by `GEMINI_API_KEY_PARAMETER` (deployed stacks).
    pub async fn from_env() -> Result<Self, BoxError> {
        let sdk = aws::config().await;
        let app = App::from_sdk_config(&sdk)?;
        let key = match GeminiConfig::api_key_from_env() {
            Some(key) => key,
            None => {
                let name = config::required("GEMINI_API_KEY_PARAMETER")
                    .map_err(|_| "set GEMINI_API_KEY or GEMINI_API_KEY_PARAMETER")?;
                Secret::new(aws::ssm_secure_string(&sdk, &name).await?)
            }
        };
        let gemini = GeminiConfig::from_env(key)?;
        app.config
            .check_chat_budget(gemini.timeout.max(gemini.stream_timeout))?;
        let gemini = GeminiClient::new(gemini)?;
        let sockets = SocketConfig::from_env()?;
        let connections = Connections::new(&sdk, sockets.management_endpoint.as_deref());
        Ok(Self::new(app, gemini).with_sockets(sockets, connections))
    }
}
