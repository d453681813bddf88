//! A streamed answer: SSE events, each a whole `GenerateContentResponse`, read with
//! an idle timeout between chunks and a deadline for the whole answer.

use std::{pin::Pin, time::Duration};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_core::Stream;
use tokio::time::Instant;

use crate::{
    domain::Usage,
    telemetry::metrics::{self, Metric},
};

use super::{Error, ModelName, Reply, count_usage, finish, interpret};

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// What a streamed answer yields, in order: text deltas, then one `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The next piece of the answer (never empty; thoughts are left out).
    Text(String),
    /// The whole answer, its model, usage and finish reason. Nothing follows it.
    Done(Reply),
}

/// A streamed answer being read. `Send + 'static`, so a spawned task can drive it.
///
/// [`next`](Self::next) yields `Text` deltas, then exactly one `Done`, then `None`; or,
/// at any point, one `Err` and then `None`.
pub struct ReplyStream {
    events: Events,
    requested_model: ModelName,
    /// When the call was made: its latencies are measured from here.
    started: Instant,
    /// The first text chunk has been timed.
    first_timed: bool,
    /// The call's latency and usage have been recorded (once, at its end or drop).
    metered: bool,
    /// Gemini's counts as of the latest chunk, kept for the record.
    counted: Usage,
    deadline: Instant,
    total: Duration,
    idle: Duration,
    text: String,
    usage: Option<Usage>,
    model_version: Option<String>,
    /// Set once a chunk carried a finish reason: `Done` is next.
    finish_reason: Option<String>,
    over: bool,
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("model", &self.requested_model)
            .field("chars_so_far", &self.text.len())
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

impl ReplyStream {
    pub(super) fn new(
        response: reqwest::Response,
        requested_model: ModelName,
        started: Instant,
        deadline: Instant,
        total: Duration,
        idle: Duration,
    ) -> Self {
        Self {
            events: Box::pin(response.bytes_stream().eventsource()),
            requested_model,
            started,
            first_timed: false,
            metered: false,
            counted: Usage::default(),
            deadline,
            total,
            idle,
            text: String::new(),
            usage: None,
            model_version: None,
            finish_reason: None,
            over: false,
        }
    }

    /// What Gemini had counted by the latest chunk read (counts are cumulative): the
    /// usage of an answer that stopped before its end.
    pub fn usage_so_far(&self) -> Usage {
        self.usage.unwrap_or_default()
    }

    /// The next event, or `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, Error>> {
        if self.over {
            return None;
        }
        let event = self.advance().await;
        match event {
            Ok(StreamEvent::Text(_)) if !self.first_timed => {
                self.first_timed = true;
                let model = Some(self.requested_model.as_str());
                metrics::time(Metric::FirstChunkLatency, model, self.started.elapsed());
            }
            Ok(StreamEvent::Text(_)) => {}
            _ => {
                self.over = true;
                self.meter();
            }
        }
        Some(event)
    }

    /// Records the whole call's latency and what Gemini counted, once.
    fn meter(&mut self) {
        if std::mem::replace(&mut self.metered, true) {
            return;
        }
        let model = Some(self.requested_model.as_str());
        metrics::time(Metric::GeminiLatency, model, self.started.elapsed());
        count_usage(&self.requested_model, &self.counted);
    }

    async fn advance(&mut self) -> Result<StreamEvent, Error> {
        loop {
            if let Some(reason) = self.finish_reason.take() {
                return finish(
                    std::mem::take(&mut self.text),
                    Some(reason),
                    self.usage.take(),
                    self.model_version.take(),
                    &self.requested_model,
                )
                .map(StreamEvent::Done);
            }
            let wake = self.deadline.min(Instant::now() + self.idle);
            let events = &mut self.events;
            let next = std::future::poll_fn(|cx| events.as_mut().poll_next(cx));
            let event = match tokio::time::timeout_at(wake, next).await {
                Err(_) if Instant::now() >= self.deadline => {
                    return Err(Error::Timeout(self.total));
                }
                Err(_) => return Err(Error::Idle(self.idle)),
                Ok(None) => return Err(Error::Incomplete),
                Ok(Some(Err(EventStreamError::Transport(e)))) if e.is_timeout() => {
                    return Err(Error::Timeout(self.total));
                }
                Ok(Some(Err(EventStreamError::Transport(e)))) => {
                    return Err(Error::Disconnected(e));
                }
                Ok(Some(Err(e))) => return Err(Error::Malformed(e.to_string())),
                Ok(Some(Ok(event))) => event,
            };
            if event.data.trim().is_empty() {
                continue;
            }
            let chunk = serde_json::from_str(&event.data)
                .map_err(|e| Error::Malformed(e.to_string()))
                .and_then(interpret)?;
            // Usage is cumulative: the latest chunk's counts are the totals so far.
            self.usage = chunk.usage.or(self.usage.take());
            self.counted = self.usage.unwrap_or(self.counted);
            self.model_version = chunk.model_version.or(self.model_version.take());
            self.finish_reason = chunk.finish_reason;
            if !chunk.text.is_empty() {
                self.text.push_str(&chunk.text);
                return Ok(StreamEvent::Text(chunk.text));
            }
        }
    }
}

impl Drop for ReplyStream {
    /// A stream given up before its end (the client stopped it) still took its time and
    /// was billed for what Gemini had counted.
    fn drop(&mut self) {
        self.meter();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn a_reply_stream_can_move_to_a_spawned_task() {
        assert_send_static::<ReplyStream>();
    }
}
