//! Logging, and the error plumbing every layer shares: JSON lines when Lambda's log format is JSON (set in `template.yaml`),
//! plain text otherwise; level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
//!
//! What never goes into a log: passwords, tokens, the API key, message text.

use tracing_subscriber::{filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// The level when neither variable is set, or what is set can't be read.
const DEFAULT_LEVEL: tracing::Level = tracing::Level::INFO;

/// The subscriber `lambda_runtime`'s `init_default_subscriber` builds (no time stamps, which
/// Lambda adds; no targets; JSON when `AWS_LAMBDA_LOG_FORMAT` is `JSON`), with a
/// [`Targets`] filter in place of its `EnvFilter`, so that the binary carries no regex
/// engine for span and field filters nobody sets on a Lambda function.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let filter = filter(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    // One of the two formats; `try_init`: a second call (tests that start several apps in
    // one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(json.then(|| format().json()))
        .with((!json).then(format))
        .with(filter)
        .try_init();
}

/// Lines without a time stamp (Lambda adds one) or the event's target.
fn format<S>()
-> fmt::Layer<S, fmt::format::DefaultFields, fmt::format::Format<fmt::format::Full, ()>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer().with_target(false).without_time()
}

/// Lambda's log level (`TRACE` ... `ERROR`, `FATAL`) when it is set; otherwise `RUST_LOG`'s
/// directives (`warn`, or `warn,shared::store=debug`); otherwise, or when what is set
/// can't be read, `INFO`: a typo never silences a function.
fn filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let level = |l: tracing::Level| Targets::new().with_default(l);
    if let Some(value) = lambda_level {
        let value = value.trim();
        return if value.eq_ignore_ascii_case("FATAL") {
            level(tracing::Level::ERROR)
        } else {
            value.parse().map_or(level(DEFAULT_LEVEL), level)
        };
    }
    rust_log
        .and_then(|directives| directives.trim().parse::<Targets>().ok())
        .unwrap_or_else(|| level(DEFAULT_LEVEL))
}

#[cfg(test)]
mod tests {
    use tracing::{Level, level_filters::LevelFilter};

    use super::filter;

    #[test]
    fn lambda_level_wins_and_nothing_unreadable_silences_the_function() {
        let default =
            |lambda: Option<&str>, rust: Option<&str>| filter(lambda, rust).default_level();
        assert_eq!(
            default(Some("DEBUG"), Some("error")),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(default(Some("FATAL"), None), Some(LevelFilter::ERROR));
        assert_eq!(default(Some("loud"), None), Some(LevelFilter::INFO));
        assert_eq!(default(None, Some("warn")), Some(LevelFilter::WARN));
        assert_eq!(default(None, Some("a=b=c")), Some(LevelFilter::INFO));
        assert_eq!(default(None, None), Some(LevelFilter::INFO));
        let targets = filter(None, Some("warn,shared::store=debug"));
        assert!(targets.would_enable("shared::store::credits", &Level::DEBUG));
        assert!(!targets.would_enable("shared::api", &Level::INFO));
    }
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
