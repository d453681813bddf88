//! Gemini REST (v1beta) request and response bodies: only the fields we use.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemInstruction<'a>>,
    pub generation_config: GenerationConfig,
}

#[derive(Debug, Serialize)]
pub struct Content<'a> {
    pub role: &'a str,
    pub parts: [Part<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct SystemInstruction<'a> {
    pub parts: [Part<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct Part<'a> {
    pub text: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    pub max_output_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// One of the two, never both: Gemini answers both at once with a 400.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ThinkingConfig {
    #[serde(rename_all = "camelCase")]
    Budget { thinking_budget: u32 },
    #[serde(rename_all = "camelCase")]
    Level { thinking_level: &'static str },
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

/// The longest server-requested wait we pass on; a quota that resets later than this
/// is reported as this, so a client is told something it can act on.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl ErrorStatus {
    /// `RetryInfo.retryDelay` from the error details, if any and well formed, capped at
    /// [`MAX_RETRY_DELAY`].
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details
            .iter()
            .filter(|d| {
                d.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
            })
            .find_map(|d| parse_proto_duration(d.get("retryDelay")?.as_str()?))
    }
}

/// A protobuf JSON `Duration`: decimal seconds with an `s` suffix ("22s", "1.5s",
/// "0.250s"). Anything else (a sign, an exponent, a number instead of a string, words)
/// is `None`; values of any size saturate at [`MAX_RETRY_DELAY`]. No arithmetic here
/// can overflow or panic.
pub fn parse_proto_duration(raw: &str) -> Option<Duration> {
    let number = raw.strip_suffix('s')?;
    let (whole, frac) = match number.split_once('.') {
        Some((whole, frac)) => (whole, frac),
        None => (number, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    // Leading zeros don't count towards the size; more than 9 significant digits is
    // already far past the cap.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 9 {
        return Some(MAX_RETRY_DELAY);
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos).min(MAX_RETRY_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_of_any_shape_never_panic() {
        let secs = Duration::from_secs;
        assert_eq!(parse_proto_duration("22s"), Some(secs(22)));
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_proto_duration("0.250s"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_proto_duration("0s"), Some(Duration::ZERO));
        assert_eq!(
            parse_proto_duration("1000000000000000s"),
            Some(MAX_RETRY_DELAY)
        );
        let huge = format!("{}s", "9".repeat(500));
        assert_eq!(parse_proto_duration(&huge), Some(MAX_RETRY_DELAY));
        assert_eq!(parse_proto_duration("00000000000000000005s"), Some(secs(5)));
        for garbage in [
            "1e400s",
            "-5s",
            "abc",
            "",
            "s",
            "5",
            ".5s",
            "5.s",
            "1.0000000001s",
            "+5s",
            "NaNs",
            "infs",
            " 5s",
            "5 s",
            "٣s",
            "1,5s",
        ] {
            assert_eq!(parse_proto_duration(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn retry_info_that_is_not_a_string_counts_as_absent() {
        for delay in [
            serde_json::json!(22),
            serde_json::json!(1e300),
            serde_json::json!(null),
            serde_json::json!({"seconds": 5}),
            serde_json::json!(["5s"]),
        ] {
            let status: ErrorStatus = serde_json::from_value(serde_json::json!({
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
            }))
            .unwrap();
            assert_eq!(status.retry_delay(), None);
        }
    }
}
