//! Typed configuration, read from the environment once per cold start.

use std::{env, fmt, str::FromStr, time::Duration};

use crate::{
    domain::{ModelCatalogue, ModelName, ThinkingLevel},
    store::RetryPolicy,
};

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
    /// A session unused this long ends (`SESSION_IDLE_HOURS`, default 168: a week).
    pub session_idle: Duration,
    /// Sessions one user may hold (`MAX_SESSIONS`, default 20); a login beyond it ends
    /// the expired ones, then the oldest.
    pub max_sessions: usize,
    /// Throttles against password guessing, account farming and chat floods.
    pub limits: Limits,
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
    /// The WebSocket API (`WEBSOCKET_URL`, e.g. `wss://…/prod`): the chat function hands
    /// it out with tickets, and the chat page may connect to it. Unset: none.
    pub websocket_url: Option<String>,
    /// The CloudWatch namespace of the functions' own metrics (`METRICS_NAMESPACE`,
    /// default `ChatBackend`).
    pub metrics_namespace: String,
    /// Origins of web pages hosted elsewhere that may call this API from a browser
    /// (`CORS_ALLOWED_ORIGINS`, exact origins, comma-separated; empty: same origin only).
    pub cors: AllowedOrigins,
}

/// Throttle limits. Counters live in the table, so they hold across instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed logins in a row per (username, client network) before back-off
    /// (`LOGIN_FREE_FAILURES`, 5); also a session's wrong passwords in a row (password
    /// change, account deletion).
    pub login_free_failures: u64,
    /// The first back-off, doubled with each further failure (`LOGIN_BACKOFF_SECS`, 30)
    /// up to `LOGIN_BACKOFF_MAX_SECS` (3600).
    pub login_backoff: Duration,
    pub login_backoff_max: Duration,
    /// Failed logins per username from all networks per window (`LOGIN_NAME_FAILURES`,
    /// 100, per `LOGIN_NAME_WINDOW_SECS`, 86400): past it, only networks the account
    /// has logged in from may try that name until the window ends.
    pub login_name_failures: u64,
    pub login_name_window: Duration,
    /// Failed logins per client address per window (`LOGIN_IP_FAILURES`, 20, per
    /// `LOGIN_IP_WINDOW_SECS`, 900).
    pub login_ip_failures: u64,
    pub login_ip_window: Duration,
    /// Registrations per client address per window (`REGISTER_IP_LIMIT`, 10, per
    /// `REGISTER_IP_WINDOW_SECS`, 3600).
    pub register_ip_limit: u64,
    pub register_ip_window: Duration,
    /// New accounts per clock hour from all addresses together (`REGISTRATIONS_PER_HOUR`,
    /// 100): address pools are cheap, and every account is credits of Gemini.
    pub registrations_per_hour: u64,
    /// Chats one user may have in flight (`CHATS_IN_FLIGHT`, 4).
    pub chats_in_flight: u64,
    /// Chats one user may start per minute (`CHATS_PER_MINUTE`, 20).
    pub chats_per_minute: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_free_failures: 5,
            login_backoff: Duration::from_secs(30),
            login_backoff_max: Duration::from_secs(3600),
            login_name_failures: 100,
            login_name_window: Duration::from_secs(24 * 3600),
            login_ip_failures: 20,
            login_ip_window: Duration::from_secs(900),
            register_ip_limit: 10,
            register_ip_window: Duration::from_secs(3600),
            registrations_per_hour: 100,
            chats_in_flight: 4,
            chats_per_minute: 20,
        }
    }
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

impl Limits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        let secs = |var, default: Duration| -> Result<Duration, ConfigError> {
            let v: u64 = parse_or(var, default.as_secs())?;
            if v == 0 {
                return Err(ConfigError {
                    var,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(Duration::from_secs(v))
        };
        let count = |var, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = parse_or(var, default)?;
            if v == 0 {
                return Err(ConfigError {
                    var,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(v)
        };
        Ok(Self {
            login_free_failures: count("LOGIN_FREE_FAILURES", d.login_free_failures)?,
            login_backoff: secs("LOGIN_BACKOFF_SECS", d.login_backoff)?,
            login_backoff_max: secs("LOGIN_BACKOFF_MAX_SECS", d.login_backoff_max)?,
            login_name_failures: count("LOGIN_NAME_FAILURES", d.login_name_failures)?,
            login_name_window: secs("LOGIN_NAME_WINDOW_SECS", d.login_name_window)?,
            login_ip_failures: count("LOGIN_IP_FAILURES", d.login_ip_failures)?,
            login_ip_window: secs("LOGIN_IP_WINDOW_SECS", d.login_ip_window)?,
            register_ip_limit: count("REGISTER_IP_LIMIT", d.register_ip_limit)?,
            register_ip_window: secs("REGISTER_IP_WINDOW_SECS", d.register_ip_window)?,
            registrations_per_hour: count("REGISTRATIONS_PER_HOUR", d.registrations_per_hour)?,
            chats_in_flight: count("CHATS_IN_FLIGHT", d.chats_in_flight)?,
            chats_per_minute: count("CHATS_PER_MINUTE", d.chats_per_minute)?,
        })
    }
}

/// Exact origins (`https://chat.example.com`, `http://localhost:5173`) whose pages may
/// call the API from a browser. No wildcard: each must be named, so a token never reaches
/// a page nobody chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// A comma-separated list; blanks are skipped. Each entry is `http(s)://host[:port]`
    /// with no path, as a browser writes its `Origin` header (scheme and host lower-cased).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let origin = entry.to_ascii_lowercase();
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| format!("{entry:?} is not an http(s) origin"))?;
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(format!(
                    "{entry:?} is not an origin (scheme://host[:port], no path, no wildcard)"
                ));
            }
            origins.push(origin);
        }
        Ok(Self(origins))
    }

    /// Whether a request's `Origin` header names one of the allowed origins.
    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Settings of the Gemini client, read only by the chat function.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
    pub api_key: Secret,
    /// `GEMINI_BASE_URL`, default `https://generativelanguage.googleapis.com`. Must be
    /// https unless its host is loopback (local runs against the stand-in).
    pub base_url: String,
    /// The default model (`GEMINI_MODEL`, default `gemini-flash-latest`).
    pub model: ModelName,
    /// Whole-call budget including retries (`GEMINI_TIMEOUT_MS`, default 25000: API
    /// Gateway gives up after 29 s and the DynamoDB writes need a moment too).
    pub timeout: Duration,
    /// Retries after a 429 or 503 (`GEMINI_MAX_RETRIES`, default 2).
    pub max_retries: usize,
    /// `generationConfig.maxOutputTokens` on every request (`GEMINI_MAX_OUTPUT_TOKENS`,
    /// default 4096, 1–65536). Gemini counts thought tokens against it too, so it is
    /// what bounds a whole answer's cost.
    pub max_output_tokens: u32,
    /// `thinkingConfig.thinkingBudget` for Gemini 2.5 and the `*-latest` aliases
    /// (`GEMINI_THINKING_BUDGET`, default 1024 tokens, 0–32768, below
    /// `GEMINI_MAX_OUTPUT_TOKENS` so that thinking can't use up the whole answer).
    pub thinking_budget: u32,
    /// `thinkingConfig.thinkingLevel` for Gemini 3 and later (`GEMINI_THINKING_LEVEL`,
    /// default `low`; `minimal`, `low`, `medium`, `high`).
    pub thinking_level: ThinkingLevel,
    /// A whole streamed answer's budget, retries included (`GEMINI_STREAM_TIMEOUT_MS`,
    /// default 25000, like a buffered answer, so the defaults fit the default function
    /// timeout; the deployed chat function streams for up to 120 s, see template.yaml).
    pub stream_timeout: Duration,
    /// Longest silence between two chunks of a streamed answer, or before the first
    /// (`GEMINI_STREAM_IDLE_TIMEOUT_MS`, default 20000).
    pub stream_idle_timeout: Duration,
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
        // Every model on offer must be a name the Gemini client will call.
        for model in models.models() {
            ModelName::parse(&model.id).map_err(|e| ConfigError {
                var: "MODELS",
                reason: e.to_string(),
            })?;
        }
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
            session_idle: hours("SESSION_IDLE_HOURS", 168)?,
            max_sessions: parse_or("MAX_SESSIONS", 20)?,
            limits: Limits::from_env()?,
            max_message_chars: parse_or("MAX_MESSAGE_CHARS", 8000)?,
            charge_timeout: Duration::from_secs(parse_or("CHARGE_TIMEOUT_SECS", 60u64)?),
            function_timeout: Duration::from_secs(parse_or("FUNCTION_TIMEOUT_SECS", 29u64)?),
            store_retry,
            websocket_url: optional("WEBSOCKET_URL"),
            metrics_namespace: optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| crate::telemetry::metrics::DEFAULT_NAMESPACE.to_owned()),
            cors: AllowedOrigins::parse(&optional("CORS_ALLOWED_ORIGINS").unwrap_or_default())
                .map_err(|reason| ConfigError {
                    var: "CORS_ALLOWED_ORIGINS",
                    reason,
                })?,
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
        if self.session_idle.is_zero() || self.max_sessions == 0 {
            return fail(
                "SESSION_IDLE_HOURS",
                "SESSION_IDLE_HOURS and MAX_SESSIONS must be at least 1".into(),
            );
        }
        if self.metrics_namespace.len() > 255 || self.metrics_namespace.starts_with(':') {
            return fail(
                "METRICS_NAMESPACE",
                "must be at most 255 characters and not start with a colon".into(),
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

    /// The chat function waits on Gemini (a buffered answer or a whole stream, whichever
    /// may take longer) between two store steps (the debit before, the settle after) plus
    /// the session read: all of it must end before the function does.
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

    /// Defaults for everything but the key, base URL and model; tests start from here.
    pub fn new(api_key: Secret, base_url: impl Into<String>, model: ModelName) -> Self {
        Self {
            api_key,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            model,
            timeout: Duration::from_millis(25_000),
            max_retries: 2,
            max_output_tokens: 4096,
            thinking_budget: 1024,
            thinking_level: ThinkingLevel::Low,
            stream_timeout: Duration::from_millis(25_000),
            stream_idle_timeout: Duration::from_millis(20_000),
        }
    }

    /// The default model, `gemini-flash-latest`.
    pub fn default_model() -> ModelName {
        ModelName::parse(Self::DEFAULT_MODEL).expect("the default model name is valid")
    }

    /// Reads everything but the key, which may come from the environment or from a
    /// secret store (see `ChatApp::from_env`).
    pub fn from_env(api_key: Secret) -> Result<Self, ConfigError> {
        let base_url =
            optional("GEMINI_BASE_URL").unwrap_or_else(|| Self::DEFAULT_BASE_URL.to_owned());
        // Its scheme and host are checked where the client is built, in the same cold
        // start (`gemini::check_base_url`).
        let model = match optional("GEMINI_MODEL") {
            None => Self::default_model(),
            Some(raw) => ModelName::parse(raw.trim()).map_err(|e| ConfigError {
                var: "GEMINI_MODEL",
                reason: format!("is not valid: {e}"),
            })?,
        };
        let defaults = Self::new(api_key, base_url, model);
        let config = Self {
            timeout: millis_or("GEMINI_TIMEOUT_MS", defaults.timeout)?,
            max_retries: parse_or("GEMINI_MAX_RETRIES", defaults.max_retries)?,
            max_output_tokens: in_range(
                "GEMINI_MAX_OUTPUT_TOKENS",
                defaults.max_output_tokens,
                1..=65_536,
            )?,
            thinking_budget: in_range(
                "GEMINI_THINKING_BUDGET",
                defaults.thinking_budget,
                0..=32_768,
            )?,
            thinking_level: parse_or("GEMINI_THINKING_LEVEL", defaults.thinking_level)?,
            stream_timeout: millis_or("GEMINI_STREAM_TIMEOUT_MS", defaults.stream_timeout)?,
            stream_idle_timeout: millis_or(
                "GEMINI_STREAM_IDLE_TIMEOUT_MS",
                defaults.stream_idle_timeout,
            )?,
            ..defaults
        };
        if config.thinking_budget >= config.max_output_tokens {
            return Err(ConfigError {
                var: "GEMINI_THINKING_BUDGET",
                reason: format!(
                    "must be below GEMINI_MAX_OUTPUT_TOKENS ({}): thought tokens count \
                     against it, so thinking could leave no room for the answer",
                    config.max_output_tokens
                ),
            });
        }
        Ok(config)
    }

    /// `GEMINI_API_KEY` from the environment, if set and not blank.
    pub fn api_key_from_env() -> Option<Secret> {
        optional("GEMINI_API_KEY").map(Secret::new)
    }
}

/// The WebSocket API (chat function only).
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// The `@connections` API (`WEBSOCKET_MANAGEMENT_ENDPOINT`); unset: learnt from the
    /// first WebSocket event's domain and stage.
    pub management_endpoint: Option<String>,
    /// How long a ticket may wait for its `$connect` (`WEBSOCKET_TICKET_SECS`, default and
    /// most 60).
    pub ticket_ttl: Duration,
    /// Open connections one user may hold (`WEBSOCKET_MAX_CONNECTIONS`, default 10).
    pub max_per_user: usize,
    /// How often a running chat looks for a cancel (`WEBSOCKET_CANCEL_POLL_MS`, default
    /// 250: four small reads a second while an answer streams).
    pub cancel_poll: Duration,
    /// The least time between two delta frames (`WEBSOCKET_FRAME_INTERVAL_MS`, default
    /// 50: at most 20 billed messages a second).
    pub frame_interval: Duration,
}

impl SocketConfig {
    /// API Gateway closes a connection after two hours; its items live a little longer.
    pub const CONNECTION_LIFE: Duration = Duration::from_secs(2 * 3600 + 600);

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            management_endpoint: optional("WEBSOCKET_MANAGEMENT_ENDPOINT"),
            ticket_ttl: Duration::from_secs(in_range("WEBSOCKET_TICKET_SECS", 60, 1..=60)?),
            max_per_user: in_range("WEBSOCKET_MAX_CONNECTIONS", 10, 1..=100)?,
            cancel_poll: Duration::from_millis(in_range(
                "WEBSOCKET_CANCEL_POLL_MS",
                250,
                50..=5000,
            )?),
            frame_interval: Duration::from_millis(in_range(
                "WEBSOCKET_FRAME_INTERVAL_MS",
                50,
                0..=1000,
            )?),
        })
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            management_endpoint: None,
            ticket_ttl: Duration::from_secs(60),
            max_per_user: 10,
            cancel_poll: Duration::from_millis(250),
            frame_interval: Duration::from_millis(50),
        }
    }
}

/// A positive number of milliseconds.
fn millis_or(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    in_range(var, default, 1..=u64::MAX).map(Duration::from_millis)
}

fn in_range<T>(
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display,
    T::Err: fmt::Display,
{
    let value = parse_or(var, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError {
            var,
            reason: format!(
                "must be between {} and {}, not {value}",
                range.start(),
                range.end()
            ),
        })
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

/// A count of hours, refused if it would overflow a duration in seconds.
fn hours(var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let hours: u64 = parse_or(var, default)?;
    match hours.checked_mul(3600) {
        Some(secs) if hours > 0 && secs <= u64::from(u32::MAX) => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError {
            var,
            reason: format!("must be between 1 and {} hours", u64::from(u32::MAX) / 3600),
        }),
    }
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
