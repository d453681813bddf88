//! The Gemini client: `models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse` over HTTPS, with a deadline, bounded retries on
//! 429/503 and clear errors for every way a call can fail.
//!
//! Every request caps its output (`generationConfig.maxOutputTokens`) and, where the
//! model thinks, its thinking (see [`ModelName::thinking_family`]). Redirects are never
//! followed, so the API key goes to the configured host only, and that host must be
//! https unless it is loopback.
//!
//! Tests point `base_url` at a local stand-in that speaks the same protocol; the code
//! below is the code that talks to Google.

mod stream;
mod wire;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{
    Url,
    header::{HeaderMap, HeaderValue},
};

use crate::{
    config::GeminiConfig,
    domain::Usage,
    telemetry::metrics::{self, Metric},
};

pub use crate::domain::{InvalidModelName, ModelName, ThinkingFamily, ThinkingLevel};
pub use stream::{ReplyStream, StreamEvent};
pub use wire::MAX_RETRY_DELAY;

use wire::GenerateContentResponse;

/// Longest server-requested wait (`RetryInfo.retryDelay`) we will sit out; a longer
/// one fails fast and is passed on to the client as `Retry-After`.
const MAX_HONOURED_DELAY: Duration = Duration::from_secs(3);

/// Finish reasons that mean the answer was withheld, not merely cut short.
const BLOCKING_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the prompt was blocked ({0})")]
    PromptBlocked(String),
    #[error("the answer was withheld ({0})")]
    AnswerBlocked(String),
    #[error("the response held no answer (finish reason {0:?})")]
    Empty(Option<String>),
    #[error("Gemini answered {status} {api_status}: {message}")]
    Api {
        status: u16,
        api_status: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request to Gemini failed")]
    Transport(#[source] reqwest::Error),
    #[error("the response was not valid JSON: {0}")]
    Malformed(String),
    /// A streamed answer's connection broke before its last chunk.
    #[error("the connection to Gemini dropped in the middle of the answer")]
    Disconnected(#[source] reqwest::Error),
    /// A streamed answer ended cleanly but without a finish reason: it may be cut short.
    #[error("the answer stream ended without a finish reason")]
    Incomplete,
    /// A streamed answer went quiet for longer than the idle timeout.
    #[error("no chunk from Gemini for {0:?}")]
    Idle(Duration),
}

impl Error {
    /// Quota or capacity: worth trying again later (429, 503).
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            Self::Api {
                status: 429 | 503,
                ..
            }
        )
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Idle(_) | Self::Api { status: 504, .. }
        )
    }

    /// How long the server asked us to wait, at most [`MAX_RETRY_DELAY`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Why the model refused, when it did.
    pub fn blocked_reason(&self) -> Option<&str> {
        match self {
            Self::PromptBlocked(r) | Self::AnswerBlocked(r) => Some(r),
            _ => None,
        }
    }
}

/// Why a client could not be built (at cold start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("GEMINI_BASE_URL {0}")]
    BaseUrl(String),
    #[error("the Gemini API key is not a valid header value")]
    ApiKey(#[source] reqwest::header::InvalidHeaderValue),
    #[error("could not build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    /// The model that answered (`modelVersion`), or the one asked for.
    pub model: String,
    pub usage: Usage,
    pub finish_reason: Option<String>,
}

/// One earlier exchange of a conversation.
pub use crate::domain::PastTurn as Turn;

/// What to ask, of which model.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub model: &'a ModelName,
    pub system_instruction: Option<&'a str>,
    /// Earlier turns of the conversation, oldest first.
    pub history: &'a [Turn],
    /// The new user message.
    pub message: &'a str,
}

impl<'a> Prompt<'a> {
    /// A single message with no history or system instruction.
    pub fn new(model: &'a ModelName, message: &'a str) -> Self {
        Self {
            model,
            system_instruction: None,
            history: &[],
            message,
        }
    }
}

/// Checks a base URL: absolute, no credentials, query or fragment, and https unless
/// its host is loopback (`localhost`, 127.0.0.0/8, `::1`). The error says why.
pub fn check_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/'))
        .map_err(|e| format!("is not a valid URL ({e}): {raw:?}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("must not have a query or fragment: {raw:?}"));
    }
    let Some(host) = url.host_str() else {
        return Err(format!("has no host: {raw:?}"));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!(
            "must use https (plain http is allowed only for a loopback host): {raw:?}"
        )),
        other => Err(format!("must use https, not {other}: {raw:?}")),
    }
}

/// Built once per cold start; cheap to share.
#[derive(Debug, Clone)]
pub struct GeminiClient {
    http: reqwest::Client,
    base_url: String,
    model: ModelName,
    timeout: Duration,
    max_retries: usize,
    max_output_tokens: u32,
    thinking_budget: u32,
    thinking_level: ThinkingLevel,
    stream_timeout: Duration,
    stream_idle_timeout: Duration,
}

impl GeminiClient {
    pub fn new(config: GeminiConfig) -> Result<Self, BuildError> {
        let base_url = check_base_url(&config.base_url).map_err(BuildError::BaseUrl)?;
        // reqwest is built without a bundled crypto provider; ring is the one we ship.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut key = HeaderValue::from_str(config.api_key.expose()).map_err(BuildError::ApiKey)?;
        key.set_sensitive(true);
        let headers = HeaderMap::from_iter([(
            reqwest::header::HeaderName::from_static("x-goog-api-key"),
            key,
        )]);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // The key must never reach another host: a redirect is an upstream error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(BuildError::Http)?;
        Ok(Self {
            http,
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            model: config.model,
            timeout: config.timeout,
            max_retries: config.max_retries,
            max_output_tokens: config.max_output_tokens,
            thinking_budget: config.thinking_budget,
            thinking_level: config.thinking_level,
            stream_timeout: config.stream_timeout,
            stream_idle_timeout: config.stream_idle_timeout,
        })
    }

    /// The configured default model (`GEMINI_MODEL`).
    pub fn default_model(&self) -> &ModelName {
        &self.model
    }

    /// Asks the model for one whole answer, retrying overload within the deadline.
    pub async fn generate(&self, prompt: &Prompt<'_>) -> Result<Reply, Error> {
        let started = std::time::Instant::now();
        let body = self.request_body(prompt);
        let url = self.url(prompt.model, "generateContent");
        let call = (|| self.attempt(&url, &body, prompt.model))
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(Error::is_overloaded)
            .adjust(honour_retry_delay)
            .notify(|err, wait| retrying(prompt.model, err, wait));
        let result = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout(self.timeout))
            .and_then(|r| r);
        let model = Some(prompt.model.as_str());
        metrics::time(Metric::GeminiLatency, model, started.elapsed());
        if let Ok(reply) = &result {
            count_usage(prompt.model, &reply.usage);
        }
        result
    }

    /// Asks for a streamed answer. Failures before the first byte of the body (an
    /// error status after the same retries as [`generate`](Self::generate), a refused
    /// connection, the deadline) are this call's error; later ones come from the
    /// stream.
    pub async fn stream(&self, prompt: &Prompt<'_>) -> Result<ReplyStream, Error> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.stream_timeout;
        let body = self.request_body(prompt);
        let url = self.url(prompt.model, "streamGenerateContent?alt=sse");
        let open = (|| self.open_stream(&url, &body))
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(Error::is_overloaded)
            .adjust(honour_retry_delay)
            .notify(|err, wait| retrying(prompt.model, err, wait));
        let opened = tokio::time::timeout_at(deadline, open)
            .await
            .map_err(|_| Error::Timeout(self.stream_timeout))
            .and_then(|r| r);
        let response = match opened {
            Ok(response) => response,
            Err(err) => {
                let model = Some(prompt.model.as_str());
                metrics::time(Metric::GeminiLatency, model, started.elapsed());
                return Err(err);
            }
        };
        Ok(ReplyStream::new(
            response,
            prompt.model.clone(),
            started,
            deadline,
            self.stream_timeout,
            self.stream_idle_timeout,
        ))
    }

    fn url(&self, model: &ModelName, method: &str) -> String {
        // `model` is checked: it cannot add a path segment, a query or a fragment.
        format!("{}/v1beta/models/{model}:{method}", self.base_url)
    }

    fn request_body<'a>(&self, prompt: &Prompt<'a>) -> wire::GenerateContentRequest<'a> {
        let turn = |role, text| wire::Content {
            role,
            parts: [wire::Part { text }],
        };
        let contents = prompt
            .history
            .iter()
            .flat_map(|t| [turn("user", &t.message[..]), turn("model", &t.response[..])])
            .chain([turn("user", prompt.message)])
            .collect();
        let thinking_config = match prompt.model.thinking_family() {
            ThinkingFamily::Budget => Some(wire::ThinkingConfig::Budget {
                thinking_budget: self.thinking_budget,
            }),
            ThinkingFamily::Level => Some(wire::ThinkingConfig::Level {
                thinking_level: self.thinking_level.as_str(),
            }),
            ThinkingFamily::None => None,
        };
        wire::GenerateContentRequest {
            contents,
            system_instruction: prompt
                .system_instruction
                .map(|text| wire::SystemInstruction {
                    parts: [wire::Part { text }],
                }),
            generation_config: wire::GenerationConfig {
                max_output_tokens: self.max_output_tokens,
                thinking_config,
            },
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.max_retries)
            .with_jitter()
    }

    async fn attempt(
        &self,
        url: &str,
        body: &wire::GenerateContentRequest<'_>,
        model: &ModelName,
    ) -> Result<Reply, Error> {
        let resp = self
            .http
            .post(url)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(transport(self.timeout))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport(self.timeout))?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        let parsed: GenerateContentResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        reply(parsed, model)
    }

    async fn open_stream(
        &self,
        url: &str,
        body: &wire::GenerateContentRequest<'_>,
    ) -> Result<reqwest::Response, Error> {
        let timeout = self.stream_timeout;
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(transport(timeout))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(transport(timeout))?;
        Err(api_error(status.as_u16(), &bytes))
    }
}

/// An overloaded call about to be tried again.
fn retrying(model: &ModelName, err: &Error, wait: Duration) {
    metrics::count_by(Metric::GeminiRetries, model.as_str(), 1);
    tracing::warn!(error = %err, ?wait, "Gemini overloaded; retrying");
}

/// What Gemini counted for a call: what it bills.
fn count_usage(model: &ModelName, usage: &Usage) {
    if *usage == Usage::default() {
        return;
    }
    let model = model.as_str();
    metrics::count_by(Metric::PromptTokens, model, usage.prompt_tokens);
    metrics::count_by(Metric::ResponseTokens, model, usage.response_tokens);
    metrics::count_by(Metric::ThoughtsTokens, model, usage.thoughts_tokens);
}

fn transport(timeout: Duration) -> impl Fn(reqwest::Error) -> Error {
    move |e| {
        if e.is_timeout() {
            Error::Timeout(timeout)
        } else {
            Error::Transport(e)
        }
    }
}

/// Sits out a short server-requested wait instead of our own; a long one ends the
/// retries so the client is told to come back later.
fn honour_retry_delay(err: &Error, planned: Option<Duration>) -> Option<Duration> {
    match (planned, err.retry_after()) {
        (None, _) => None,
        (Some(_), Some(asked)) if asked > MAX_HONOURED_DELAY => None,
        (Some(_), Some(asked)) => Some(asked),
        (planned, None) => planned,
    }
}

fn api_error(status: u16, body: &[u8]) -> Error {
    if (300..400).contains(&status) {
        return Error::Api {
            status,
            api_status: "REDIRECT".into(),
            message: "a redirect, which is never followed".into(),
            retry_after: None,
        };
    }
    match serde_json::from_slice::<wire::ErrorResponse>(body) {
        Ok(wire::ErrorResponse { error }) => Error::Api {
            status,
            retry_after: error.retry_delay(),
            api_status: error.status,
            message: error.message,
        },
        Err(_) => Error::Api {
            status,
            api_status: String::new(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            retry_after: None,
        },
    }
}

/// What one `GenerateContentResponse` says: the whole answer of a buffered call, or
/// one chunk of a streamed one. Blocks and withheld answers are errors here, for both.
struct Chunk {
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model_version: Option<String>,
}

fn interpret(resp: GenerateContentResponse) -> Result<Chunk, Error> {
    if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(Error::PromptBlocked(reason));
    }
    let candidate = resp.candidates.into_iter().next();
    let finish_reason = candidate.as_ref().and_then(|c| c.finish_reason.clone());
    if let Some(reason) = finish_reason.as_deref()
        && BLOCKING_FINISH_REASONS.contains(&reason)
    {
        return Err(Error::AnswerBlocked(reason.to_owned()));
    }
    let text: String = candidate
        .and_then(|c| c.content)
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    Ok(Chunk {
        text,
        finish_reason,
        usage: resp.usage_metadata.map(|u| Usage {
            prompt_tokens: u.prompt_token_count,
            response_tokens: u.candidates_token_count,
            thoughts_tokens: u.thoughts_token_count,
            total_tokens: u.total_token_count,
        }),
        model_version: resp.model_version,
    })
}

/// Turns a 200 response into an answer, or the reason there is none.
fn reply(resp: GenerateContentResponse, requested_model: &ModelName) -> Result<Reply, Error> {
    let chunk = interpret(resp)?;
    finish(
        chunk.text,
        chunk.finish_reason,
        chunk.usage,
        chunk.model_version,
        requested_model,
    )
}

/// The last step of both paths: an answer that is blank is no answer.
fn finish(
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    model_version: Option<String>,
    requested_model: &ModelName,
) -> Result<Reply, Error> {
    if text.trim().is_empty() {
        return Err(Error::Empty(finish_reason));
    }
    Ok(Reply {
        text,
        model: model_version.unwrap_or_else(|| requested_model.to_string()),
        usage: usage.unwrap_or_default(),
        finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<Reply, Error> {
        let model = ModelName::parse("gemini-flash-latest").unwrap();
        reply(serde_json::from_value(body).unwrap(), &model)
    }

    #[test]
    fn answers_join_text_parts_and_skip_thoughts() {
        let got = parse(serde_json::json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking about it", "thought": true},
                {"text": "Paris"}, {"text": " is the capital."}
            ]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 6,
                              "thoughtsTokenCount": 20, "totalTokenCount": 34},
            "modelVersion": "gemini-3-flash"
        }))
        .unwrap();
        assert_eq!(got.text, "Paris is the capital.");
        assert_eq!(got.model, "gemini-3-flash");
        assert_eq!(
            got.usage,
            Usage {
                prompt_tokens: 8,
                response_tokens: 6,
                thoughts_tokens: 20,
                total_tokens: 34
            }
        );
    }

    #[test]
    fn an_answer_cut_at_max_tokens_is_still_an_answer() {
        let got = parse(serde_json::json!({
            "candidates": [{"content": {"parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]
        }))
        .unwrap();
        assert_eq!(got.text, "Once upon");
        assert_eq!(got.model, "gemini-flash-latest");
        assert_eq!(got.finish_reason.as_deref(), Some("MAX_TOKENS"));
    }

    #[test]
    fn blocks_and_empty_answers_are_errors() {
        let blocked =
            parse(serde_json::json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}));
        assert_eq!(
            blocked.unwrap_err().blocked_reason(),
            Some("PROHIBITED_CONTENT")
        );
        let withheld = parse(serde_json::json!({"candidates": [{"finishReason": "RECITATION"}]}));
        assert_eq!(withheld.unwrap_err().blocked_reason(), Some("RECITATION"));
        assert!(matches!(
            parse(serde_json::json!({})),
            Err(Error::Empty(None))
        ));
        let blank = parse(
            serde_json::json!({"candidates": [{"content": {"parts": [{"text": " "}]}, "finishReason": "OTHER"}]}),
        );
        assert!(matches!(blank, Err(Error::Empty(Some(_)))));
    }

    #[test]
    fn error_bodies_keep_status_and_retry_delay() {
        let body = br#"{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "22s"}]}}"#;
        let err = api_error(429, body);
        assert!(err.is_overloaded());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(22)));
        // A number too big for JSON's f64 makes the body unreadable as an error
        // object: still an overload, with no delay and no panic.
        let body = br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": 1e400}]}}"#;
        let err = api_error(429, body);
        assert!(err.is_overloaded());
        assert_eq!(err.retry_after(), None);
        let err = api_error(502, b"<html>Bad Gateway</html>");
        assert!(!err.is_overloaded() && !err.is_timeout());
        assert!(err.to_string().contains("Bad Gateway"));
    }
}
