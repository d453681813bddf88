//! Gemini REST (v1beta) request and response bodies: only the fields we use.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Content<'a> {
    pub role: &'a str,
    pub parts: Vec<Part<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Part<'a> {
    pub text: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub content: Option<CandidateContent>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CandidateContent {
    #[serde(default)]
    pub parts: Vec<ResponsePart>,
}

#[derive(Debug, Deserialize)]
pub struct ResponsePart {
    pub text: Option<String>,
    /// Thought summaries are not part of the answer.
    #[serde(default)]
    pub thought: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageMetadata {
    pub prompt_token_count: u64,
    pub candidates_token_count: u64,
    pub thoughts_token_count: u64,
    pub total_token_count: u64,
}

/// `{"error": {"code", "message", "status", "details"}}`
#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorStatus,
}

#[derive(Debug, Deserialize)]
pub struct ErrorStatus {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub details: Vec<Value>,
}

impl ErrorStatus {
    /// `RetryInfo.retryDelay` ("22s", "1.5s") from the error details, if any.
    pub fn retry_delay(&self) -> Option<std::time::Duration> {
        self.details
            .iter()
            .filter(|d| {
                d.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
            })
            .find_map(|d| {
                d.get("retryDelay")?
                    .as_str()?
                    .strip_suffix('s')?
                    .parse::<f64>()
                    .ok()
            })
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(std::time::Duration::from_secs_f64)
    }
}
