//! Logging: JSON lines when Lambda's log format is JSON (set in `template.yaml`),
//! plain text otherwise; level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
//!
//! What never goes into a log: passwords, tokens, the API key, message text.

pub fn init() {
    lambda_http::tracing::init_default_subscriber();
}
