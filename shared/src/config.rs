//! Typed configuration, read from the environment once per cold start.

use std::{env, fmt, str::FromStr, time::Duration};

use crate::{domain::ModelCatalogue, store::RetryPolicy};

/// Settings every function needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The single DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// Credits a new account starts with (`START_TOKENS`, default 4000).
    pub start_tokens: u64,
    /// The models users may choose and their prices in credits per message
    /// (`MODELS`, `id=cost,…`, default [`Config::DEFAULT_MODELS`]; `DEFAULT_MODEL`,
    /// default `gemini-flash-latest`).
    pub models: ModelCatalogue,
    /// What a chat sent without a conversation continues (chat function).
    pub conversations: ConversationConfig,
    /// How long a login token stays valid (`TOKEN_TTL_DAYS`, default 30).
    pub token_ttl: Duration,
    /// Longest chat message accepted, in characters (`MAX_MESSAGE_CHARS`, default 8000).
    pub max_message_chars: usize,
    /// When an open charge counts as abandoned and is refunded (`CHARGE_TIMEOUT_SECS`,
    /// default 60). Must exceed the chat function's timeout, so that a live request's
    /// charge is never taken for a dead one.
    pub charge_timeout: Duration,
    /// The function's own timeout (`FUNCTION_TIMEOUT_SECS`, default 29; the template sets
    /// it from the same value it gives Lambda). Budgets are checked against it.
    pub function_timeout: Duration,
    /// How DynamoDB calls are timed and retried (`DYNAMODB_ATTEMPT_TIMEOUT_MS`, default
    /// 500; `DYNAMODB_RETRY_BUDGET_MS`, default 1200; `DYNAMODB_MAX_ATTEMPTS`, default 6).
    pub store_retry: RetryPolicy,
}

/// How conversations continue and what the model is told of them.
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// A chat sent with only `{"message"}` continues the user's latest conversation if
    /// its last answer is younger than this (`CONVERSATION_IDLE_MINUTES`, default 30).
    pub idle_window: Duration,
    /// Earlier turns sent as context: at most this many (`CONTEXT_MAX_TURNS`, default 20)
    pub context_turns: usize,
    /// … and at most this many characters of them (`CONTEXT_MAX_CHARS`, default 32000).
    pub context_chars: usize,
    /// Sent as Gemini's `systemInstruction` (`SYSTEM_INSTRUCTION`, default none).
    pub system_instruction: Option<String>,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            idle_window: Duration::from_secs(30 * 60),
            context_turns: 20,
            context_chars: 32_000,
            system_instruction: None,
        }
    }
}

/// Settings of the Gemini client, read only by the chat function.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    pub api_key: Secret,
    /// `GEMINI_BASE_URL`, default `https://generativelanguage.googleapis.com`.
    pub base_url: String,
    /// `GEMINI_MODEL`, default `gemini-flash-latest`.
    pub model: String,
    /// Whole-call budget including retries (`GEMINI_TIMEOUT_MS`, default 25000: API
    /// Gateway gives up after 29 s and the DynamoDB writes need a moment too).
    pub timeout: Duration,
    /// Retries after a 429 or 503 (`GEMINI_MAX_RETRIES`, default 2).
    pub max_retries: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var} {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl Config {
    /// Two models at different prices; the default one costs what every chat cost
    /// before models could be chosen.
    pub const DEFAULT_MODELS: &'static str = "gemini-flash-latest=100,gemini-flash-lite-latest=40";

    pub fn from_env() -> Result<Self, ConfigError> {
        let default_model =
            optional("DEFAULT_MODEL").unwrap_or_else(|| GeminiConfig::DEFAULT_MODEL.to_owned());
        let models = ModelCatalogue::parse(
            &optional("MODELS").unwrap_or_else(|| Self::DEFAULT_MODELS.to_owned()),
            &default_model,
        )
        .map_err(|reason| ConfigError {
            var: "MODELS",
            reason,
        })?;
        let defaults = ConversationConfig::default();
        let conversations = ConversationConfig {
            idle_window: Duration::from_secs(
                parse_or(
                    "CONVERSATION_IDLE_MINUTES",
                    defaults.idle_window.as_secs() / 60,
                )?
                .saturating_mul(60),
            ),
            context_turns: parse_or("CONTEXT_MAX_TURNS", defaults.context_turns)?,
            context_chars: parse_or("CONTEXT_MAX_CHARS", defaults.context_chars)?,
            system_instruction: optional("SYSTEM_INSTRUCTION"),
        };
        let defaults = RetryPolicy::default();
        let store_retry = RetryPolicy {
            attempt_timeout: millis_or("DYNAMODB_ATTEMPT_TIMEOUT_MS", defaults.attempt_timeout)?,
            budget: millis_or("DYNAMODB_RETRY_BUDGET_MS", defaults.budget)?,
            max_attempts: parse_or("DYNAMODB_MAX_ATTEMPTS", defaults.max_attempts)?,
            ..defaults
        };
        let config = Self {
            table_name: required("TABLE_NAME")?,
            start_tokens: parse_or("START_TOKENS", 4000)?,
            models,
            conversations,
            token_ttl: days("TOKEN_TTL_DAYS", 30)?,
            max_message_chars: parse_or("MAX_MESSAGE_CHARS", 8000)?,
            charge_timeout: Duration::from_secs(parse_or("CHARGE_TIMEOUT_SECS", 60u64)?),
            function_timeout: Duration::from_secs(parse_or("FUNCTION_TIMEOUT_SECS", 29u64)?),
            store_retry,
        };
        config.check()?;
        Ok(config)
    }

    /// The values that only make sense together.
    fn check(&self) -> Result<(), ConfigError> {
        let fail = |var, reason: String| Err(ConfigError { var, reason });
        if self.function_timeout.is_zero() {
            return fail("FUNCTION_TIMEOUT_SECS", "must be at least 1".into());
        }
        // A charge younger than the charge timeout may belong to a live request; were the
        // timeout at or below the function's, recovery would refund charges still running.
        if self.charge_timeout <= self.function_timeout {
            return fail(
                "CHARGE_TIMEOUT_SECS",
                format!(
                    "must exceed the function timeout ({} s), or live charges would be refunded",
                    self.function_timeout.as_secs()
                ),
            );
        }
        let retry = &self.store_retry;
        if retry.max_attempts == 0 || retry.attempt_timeout.is_zero() {
            return fail(
                "DYNAMODB_MAX_ATTEMPTS",
                "attempts and the attempt timeout must be at least 1".into(),
            );
        }
        if retry.budget < retry.attempt_timeout || retry.budget >= self.function_timeout {
            return fail(
                "DYNAMODB_RETRY_BUDGET_MS",
                "must be at least one attempt timeout and below the function timeout".into(),
            );
        }
        Ok(())
    }

    /// The chat function waits on Gemini between two store steps (the debit before, the
    /// settle after) plus the session read: all of it must end before the function does.
    pub fn check_chat_budget(&self, gemini_timeout: Duration) -> Result<(), ConfigError> {
        let needed = gemini_timeout + self.store_retry.budget * 3;
        if needed >= self.function_timeout {
            return Err(ConfigError {
                var: "GEMINI_TIMEOUT_MS",
                reason: format!(
                    "plus three DynamoDB budgets ({} ms in all) must end before the function timeout ({} s)",
                    needed.as_millis(),
                    self.function_timeout.as_secs()
                ),
            });
        }
        Ok(())
    }
}

impl GeminiConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://generativelanguage.googleapis.com";
    pub const DEFAULT_MODEL: &'static str = "gemini-flash-latest";

    /// Reads everything but the key, which may come from the environment or from a
    /// secret store (see `ChatApp::from_env`).
    pub fn from_env(api_key: Secret) -> Result<Self, ConfigError> {
        let base_url = optional("GEMINI_BASE_URL")
            .unwrap_or_else(|| Self::DEFAULT_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            api_key,
            base_url,
            model: optional("GEMINI_MODEL").unwrap_or_else(|| Self::DEFAULT_MODEL.to_owned()),
            timeout: Duration::from_millis(parse_or("GEMINI_TIMEOUT_MS", 25_000u64)?),
            max_retries: parse_or("GEMINI_MAX_RETRIES", 2)?,
        })
    }

    /// `GEMINI_API_KEY` from the environment, if set and not blank.
    pub fn api_key_from_env() -> Option<Secret> {
        optional("GEMINI_API_KEY").map(Secret::new)
    }
}

/// A string that never shows itself in `Debug` or `Display` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn optional(var: &'static str) -> Option<String> {
    env::var(var).ok().filter(|v| !v.trim().is_empty())
}

pub(crate) fn required(var: &'static str) -> Result<String, ConfigError> {
    optional(var).ok_or(ConfigError {
        var,
        reason: "is not set".into(),
    })
}

fn millis_or(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(parse_or(
        var,
        default.as_millis() as u64,
    )?))
}

/// A count of days, refused if it would overflow a duration in seconds.
fn days(var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let days: u64 = parse_or(var, default)?;
    match days.checked_mul(86_400) {
        Some(secs) if days > 0 && secs <= u64::from(u32::MAX) => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError {
            var,
            reason: format!(
                "must be between 1 and {} days",
                u64::from(u32::MAX) / 86_400
            ),
        }),
    }
}

fn parse_or<T: FromStr>(var: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match optional(var) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e| ConfigError {
            var,
            reason: format!("is not valid ({e}): {raw:?}"),
        }),
    }
}
