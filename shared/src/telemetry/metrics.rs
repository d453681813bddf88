//! Metrics: facts recorded where they happen (a chat answered, credits charged, a store
//! retry) into the invocation's [`Record`], written once per invocation as one line of
//! CloudWatch's Embedded Metric Format (EMF) on standard output. Lambda ships the line to
//! CloudWatch Logs, which turns it into metrics: no `PutMetricData`, no agent, no extra
//! call on the request's path.
//!
//! The record of the running invocation is found through a task-local, so the service
//! and store layers record without carrying it around; code outside an invocation (unit
//! tests, tools) records into nothing. A streamed chat that outlives its handler takes
//! the record along ([`current`], [`scope`]); the line is written when the last holder
//! lets go of it.
//!
//! Dimensions are few and never name a user: `Function` always, and for some metrics one
//! finer one (`Model`, `Code` or `Outcome`). Each metric is published under `[Function]`
//! and, when it has its finer dimension, under `[Function, <finer>]` too, so alarms can
//! watch the totals and dashboards can split them.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "ChatBackend";

/// EMF takes at most 100 values per metric in one document.
const MAX_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// The finer dimension a metric may carry besides `Function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The model a chat asked (a catalogue id, e.g. `gemini-flash-latest`).
    Model,
    /// The error code a request ended with (`model_error`, `service_unavailable`, …).
    Code,
    /// How something ended (`settled`, `refunded`).
    Outcome,
}

impl Dimension {
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "Model",
            Self::Code => "Code",
            Self::Outcome => "Outcome",
        }
    }
}

macro_rules! metrics {
    ($($metric:ident: $unit:ident $(/ $dim:ident)?, $doc:literal;)*) => {
        /// Every metric the functions emit. The names are part of the operator's
        /// contract: `template.yaml`'s alarms and dashboard refer to them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Metric {
            $(#[doc = $doc] $metric,)*
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$metric,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Metric::$metric => stringify!($metric),)*
                }
            }

            pub fn unit(self) -> Unit {
                match self {
                    $(Metric::$metric => Unit::$unit,)*
                }
            }

            /// The finer dimension this metric is split by, if any.
            pub fn dimension(self) -> Option<Dimension> {
                match self {
                    $(Metric::$metric => None $(.or(Some(Dimension::$dim)))?,)*
                }
            }
        }
    };
}

metrics! {
    ChatsAnswered: Count / Model, "A chat whose answer was delivered and paid for.";
    ChatsFailed: Count / Code, "A chat that ended in an error (its error code as dimension).";
    ChatsStreamed: Count / Model, "A chat answered as Server-Sent Events.";
    ChatsThrottled: Count / Code, "A chat refused by the per-user limits.";
    CreditsCharged: Count / Model, "Credits kept for delivered answers.";
    CreditsRefunded: Count / Model, "Credits given back (the model or the store failed).";
    ChargesRecovered: Count / Outcome, "Abandoned charges closed by recovery (settled or refunded).";
    GeminiLatency: Milliseconds / Model, "A whole Gemini call, retries included.";
    FirstChunkLatency: Milliseconds / Model, "From a stream's request to its first chunk.";
    GeminiRetries: Count / Model, "Gemini calls retried (429, 503).";
    PromptTokens: Count / Model, "Gemini's prompt token count.";
    ResponseTokens: Count / Model, "Gemini's response token count.";
    ThoughtsTokens: Count / Model, "Gemini's thinking token count.";
    StoreRetries: Count, "DynamoDB calls retried (conflicts, throttling, 5xx, timeouts).";
    StoreFailures: Count, "DynamoDB steps that failed after their retries.";
    LoginsSucceeded: Count, "Logins that opened a session.";
    LoginsFailed: Count, "Logins refused for a wrong name or password.";
    LoginsThrottled: Count, "Logins (and password checks) refused by the back-off.";
    Registrations: Count, "Accounts created.";
    RegistrationsThrottled: Count, "Registrations refused by the address or global budget.";
}

/// One invocation's metrics. Written as one EMF line when the last holder drops it.
#[derive(Debug)]
pub struct Record {
    namespace: Arc<str>,
    function: &'static str,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Values per (metric, finer dimension value): counts are summed, durations kept.
    values: BTreeMap<(Metric, Option<String>), Vec<f64>>,
}

impl Record {
    pub fn new(namespace: impl Into<Arc<str>>, function: &'static str) -> Arc<Self> {
        Arc::new(Self {
            namespace: namespace.into(),
            function,
            entries: Mutex::default(),
        })
    }

    fn add(&self, metric: Metric, dimension: Option<&str>, value: f64) {
        let key = (metric, dimension.map(str::to_owned));
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let values = entries.values.entry(key).or_default();
        match metric.unit() {
            Unit::Count => match values.first_mut() {
                Some(sum) => *sum += value,
                None => values.push(value),
            },
            Unit::Milliseconds if values.len() < MAX_VALUES => values.push(value),
            Unit::Milliseconds => {}
        }
    }

    /// The total (counts) or the values (durations) recorded for `metric`, over every
    /// value of its finer dimension: for tests and logs.
    pub fn values(&self, metric: Metric) -> Vec<f64> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut all: Vec<f64> = Vec::new();
        for ((m, _), values) in &entries.values {
            if *m != metric {
                continue;
            }
            match metric.unit() {
                Unit::Count => match all.first_mut() {
                    Some(sum) => *sum += values.iter().sum::<f64>(),
                    None => all.push(values.iter().sum()),
                },
                Unit::Milliseconds => all.extend(values),
            }
        }
        all
    }

    /// The total of a count metric (0 if nothing was recorded).
    pub fn total(&self, metric: Metric) -> f64 {
        self.values(metric).iter().sum()
    }

    /// The EMF document of what was recorded; `None` when nothing was.
    ///
    /// EMF gives each dimension one value per document (a top-level member). An
    /// invocation normally has one model and one error code; should a second value of a
    /// dimension turn up, the metrics that saw it are published under `[Function]` alone
    /// rather than under the wrong value.
    pub fn document(&self, timestamp_ms: u64) -> Option<Value> {
        let entries = self.entries.lock().ok()?;
        if entries.values.is_empty() {
            return None;
        }
        // Each metric's merged values, and the one value of its finer dimension (`None`
        // when it had none, or more than one).
        let mut merged: BTreeMap<Metric, (Vec<f64>, Option<&str>, bool)> = BTreeMap::new();
        for ((metric, value), values) in &entries.values {
            let (all, dim_value, mixed) =
                merged.entry(*metric).or_insert((Vec::new(), None, false));
            match metric.unit() {
                Unit::Count => match all.first_mut() {
                    Some(sum) => *sum += values.iter().sum::<f64>(),
                    None => all.push(values.iter().sum()),
                },
                Unit::Milliseconds => all.extend(values),
            }
            all.truncate(MAX_VALUES);
            match (value.as_deref(), *dim_value) {
                (None, _) => {}
                (Some(v), None) if !*mixed => *dim_value = Some(v),
                (Some(v), Some(seen)) if v == seen => {}
                _ => (*dim_value, *mixed) = (None, true),
            }
        }
        // The value each finer dimension takes in this document: the first one seen.
        let mut chosen: BTreeMap<Dimension, &str> = BTreeMap::new();
        let mut sets: BTreeMap<Option<Dimension>, Vec<Metric>> = BTreeMap::new();
        for (metric, (_, value, _)) in &merged {
            let split = match (metric.dimension(), value) {
                (Some(dim), Some(value)) => {
                    (*chosen.entry(dim).or_insert(value) == *value).then_some(dim)
                }
                _ => None,
            };
            sets.entry(split).or_default().push(*metric);
        }
        let mut doc = Map::new();
        doc.insert("Function".into(), json!(self.function));
        for (dim, value) in &chosen {
            doc.insert(dim.name().into(), json!(value));
        }
        let directives: Vec<Value> = sets
            .iter()
            .map(|(dim, metrics)| {
                let dimensions = match dim {
                    Some(dim) => json!([["Function"], ["Function", dim.name()]]),
                    None => json!([["Function"]]),
                };
                let metrics: Vec<Value> = metrics
                    .iter()
                    .map(|m| json!({"Name": m.name(), "Unit": m.unit().as_str()}))
                    .collect();
                json!({"Namespace": &*self.namespace, "Dimensions": dimensions, "Metrics": metrics})
            })
            .collect();
        for (metric, (values, _, _)) in merged {
            let value = match values.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            doc.insert(metric.name().into(), value);
        }
        doc.insert(
            "_aws".into(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
        );
        Some(Value::Object(doc))
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Some(doc) = self.document(now) {
            // One write of one line, so it can't interleave with a log line.
            let mut line = doc.to_string();
            line.push('\n');
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<Record>;
}

/// Runs `fut` with `record` as the invocation's record.
pub async fn scope<F: std::future::Future>(record: Arc<Record>, fut: F) -> F::Output {
    CURRENT.scope(record, fut).await
}

/// The running invocation's record, to take into a task that outlives the handler.
pub fn current() -> Option<Arc<Record>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Counts `value` of `metric` (published under `[Function]`).
pub fn count(metric: Metric, value: u64) {
    let _ = CURRENT.try_with(|r| r.add(metric, None, value as f64));
}

/// Counts `value` of `metric` with its finer dimension's value (a model, an error code,
/// an outcome).
pub fn count_by(metric: Metric, dimension: &str, value: u64) {
    let _ = CURRENT.try_with(|r| r.add(metric, Some(dimension), value as f64));
}

/// Records a duration of `metric`, with its finer dimension's value if it has one.
pub fn time(metric: Metric, dimension: Option<&str>, took: Duration) {
    let ms = took.as_secs_f64() * 1000.0;
    let _ = CURRENT.try_with(|r| r.add(metric, dimension, (ms * 100.0).round() / 100.0));
}
