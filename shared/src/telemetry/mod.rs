//! Logging, and the error plumbing every layer shares: JSON lines when Lambda's log format is JSON (set in `template.yaml`),
//! plain text otherwise; level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
//!
//! What never goes into a log: passwords, tokens, the API key, message text.

pub fn init() {
    lambda_http::tracing::init_default_subscriber();
}

/// Any error, boxed: what lower layers keep as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Renders an error with its whole cause chain, for logs.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

pub mod metrics;
