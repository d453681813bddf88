//! The four endpoints. Each `handle` is what a function's `main` hands to the Lambda
//! runtime: it never fails at the Lambda level, every outcome is an HTTP response.

pub mod chat;
pub mod login;
pub mod register;
pub mod tokens;

use lambda_http::Request;

use crate::{
    auth,
    config::{Config, GeminiConfig},
    error::{ApiError, BoxError},
    gemini::GeminiClient,
    http,
    store::{Store, now_millis},
};

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
        let config = Config::from_env()?;
        let store = Store::new(Store::client_from_env().await, &config.table_name);
        Ok(Self::new(config, store))
    }

    /// The user a request's token belongs to, as their store key.
    pub(crate) async fn authenticate(&self, req: &Request) -> Result<String, ApiError> {
        let token = http::auth_token(req)?;
        if !auth::looks_like_token(token) {
            return Err(ApiError::InvalidToken);
        }
        let session = self
            .store
            .session(&auth::token_digest(token))
            .await?
            .ok_or(ApiError::InvalidToken)?;
        if session.is_expired(now_millis() / 1000) {
            return Err(ApiError::TokenExpired);
        }
        Ok(session.user_key)
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

    pub async fn from_env() -> Result<Self, BoxError> {
        let app = App::from_env().await?;
        let key = GeminiConfig::api_key_from_env().ok_or("GEMINI_API_KEY is not set")?;
        let gemini = GeminiClient::new(GeminiConfig::from_env(key)?)?;
        Ok(Self::new(app, gemini))
    }
}
