//! The Gemini client: `models/{model}:generateContent` over HTTPS, with a deadline,
//! bounded retries on 429/503 and clear errors for every way a call can fail.
//!
//! Tests point `base_url` at a local stand-in that speaks the same protocol; the code
//! below is the code that talks to Google.

mod wire;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::{config::GeminiConfig, domain::Usage, error::BoxError};

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
        matches!(self, Self::Timeout(_) | Self::Api { status: 504, .. })
    }

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

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    /// The model that answered (`modelVersion`), or the one asked for.
    pub model: String,
    pub usage: Usage,
    pub finish_reason: Option<String>,
}

/// Built once per cold start; cheap to share.
#[derive(Debug, Clone)]
pub struct GeminiClient {
    http: reqwest::Client,
    url: String,
    model: String,
    timeout: Duration,
    max_retries: usize,
}

impl GeminiClient {
    pub fn new(config: GeminiConfig) -> Result<Self, BoxError> {
        // reqwest is built without a bundled crypto provider; ring is the one we ship.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut key = HeaderValue::from_str(config.api_key.expose())?;
        key.set_sensitive(true);
        let headers = HeaderMap::from_iter([(
            reqwest::header::HeaderName::from_static("x-goog-api-key"),
            key,
        )]);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.timeout)
            .build()?;
        Ok(Self {
            http,
            url: format!(
                "{}/v1beta/models/{}:generateContent",
                config.base_url, config.model
            ),
            model: config.model,
            timeout: config.timeout,
            max_retries: config.max_retries,
        })
    }

    /// Asks the model for one answer to `prompt`, retrying overload within the deadline.
    pub async fn generate(&self, prompt: &str) -> Result<Reply, Error> {
        let body = wire::GenerateContentRequest {
            contents: vec![wire::Content {
                role: "user",
                parts: vec![wire::Part { text: prompt }],
            }],
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.max_retries)
            .with_jitter();
        let call = (|| self.attempt(&body))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(Error::is_overloaded)
            .adjust(|err, planned| match (planned, err.retry_after()) {
                (None, _) => None,
                (Some(_), Some(asked)) if asked > MAX_HONOURED_DELAY => None,
                (Some(_), Some(asked)) => Some(asked),
                (planned, None) => planned,
            })
            .notify(|err, wait| tracing::warn!(error = %err, ?wait, "Gemini overloaded; retrying"));
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn attempt(&self, body: &wire::GenerateContentRequest<'_>) -> Result<Reply, Error> {
        let resp = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(self.transport())?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(self.transport())?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        let parsed: GenerateContentResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        reply(parsed, &self.model)
    }

    fn transport(&self) -> impl Fn(reqwest::Error) -> Error + '_ {
        move |e| {
            if e.is_timeout() {
                Error::Timeout(self.timeout)
            } else {
                Error::Transport(e)
            }
        }
    }
}

fn api_error(status: u16, body: &[u8]) -> Error {
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

/// Turns a 200 response into an answer, or the reason there is none.
fn reply(resp: GenerateContentResponse, requested_model: &str) -> Result<Reply, Error> {
    if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(Error::PromptBlocked(reason));
    }
    let Some(candidate) = resp.candidates.into_iter().next() else {
        return Err(Error::Empty(None));
    };
    let finish_reason = candidate.finish_reason;
    if let Some(reason) = finish_reason.as_deref()
        && BLOCKING_FINISH_REASONS.contains(&reason)
    {
        return Err(Error::AnswerBlocked(reason.to_owned()));
    }
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    if text.trim().is_empty() {
        return Err(Error::Empty(finish_reason));
    }
    let usage = resp.usage_metadata.unwrap_or_default();
    Ok(Reply {
        text,
        model: resp
            .model_version
            .unwrap_or_else(|| requested_model.to_owned()),
        usage: Usage {
            prompt_tokens: usage.prompt_token_count,
            response_tokens: usage.candidates_token_count,
            thoughts_tokens: usage.thoughts_token_count,
            total_tokens: usage.total_token_count,
        },
        finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<Reply, Error> {
        reply(serde_json::from_value(body).unwrap(), "gemini-flash-latest")
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
        let err = api_error(502, b"<html>Bad Gateway</html>");
        assert!(!err.is_overloaded() && !err.is_timeout());
        assert!(err.to_string().contains("Bad Gateway"));
    }
}
