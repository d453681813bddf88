//! The endpoints. Each `handle` is what a function's `main` hands to the Lambda
//! runtime: it never fails at the Lambda level, every outcome is an HTTP response.

pub mod chat;
pub mod login;
pub mod openapi;
pub mod register;
pub mod sessions;
pub mod tokens;

use aws_config::SdkConfig;
use lambda_http::{Body, Error, Request, Response};

use crate::{
    aws,
    config::{self, Config, GeminiConfig, Secret},
    error::{ApiError, BoxError},
    gemini::GeminiClient,
    service::accounts::{Accounts, Authed},
    store::Store,
};

/// The tokens function: `/api/tokens/` and `/api/openapi.json`, both read-only.
pub async fn tokens_function(app: &App, req: Request) -> Result<Response<Body>, Error> {
    if req
        .uri()
        .path()
        .trim_end_matches('/')
        .ends_with("/openapi.json")
    {
        return Ok(openapi::handle(req).await);
    }
    tokens::handle(app, req).await
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

/// The chat function also talks to Gemini.
#[derive(Debug, Clone)]
pub struct ChatApp {
    pub app: App,
    pub gemini: GeminiClient,
}

impl ChatApp {
    pub fn new(app: App, gemini: GeminiClient) -> Self {
        Self { app, gemini }
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
        Ok(Self::new(app, gemini))
    }
}
