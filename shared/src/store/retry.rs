//! What the store does about DynamoDB's transient failures: one policy, for every call.
//!
//! On AWS (never on DynamoDB Local, which applies requests one at a time) a write into
//! an item that a transaction holds fails with `TransactionConflictException`, two
//! transactions on one item cancel one with reason `TransactionConflict`, and any call
//! can be throttled or get a 500. The SDK's own retries would cover throttling and 5xx
//! but not conflicts, and would hide a token bucket that stops retrying under load; so
//! the SDK's retries are off and every call goes through [`Store::send`]: jittered
//! exponential backoff within a time budget, for transient failures only. A failed
//! condition is an answer and is returned at once.
//!
//! A retried write may have been applied by an attempt whose answer was lost (a 500 or
//! a timeout after DynamoDB applied it). Every conditional write in this crate is
//! written so that its retry recognises its own earlier success; see the callers.

use std::{any::Any, future::Future, time::Duration};

use aws_sdk_dynamodb::{
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
    operation::{
        delete_item::DeleteItemError, put_item::PutItemError,
        transact_write_items::TransactWriteItemsError, update_item::UpdateItemError,
    },
};
use backon::{ExponentialBuilder, Retryable};

use super::{Error, Store};
use crate::telemetry::metrics::{self, Metric};

/// How the store retries and how long one DynamoDB attempt may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// One attempt's limit (the SDK's attempt timeout).
    pub attempt_timeout: Duration,
    /// Everything one store step may spend: attempts and the waits between them.
    pub budget: Duration,
    /// Attempts at most, the first included.
    pub max_attempts: usize,
    /// The first wait; each next one doubles, with full jitter, up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(500),
            budget: Duration::from_millis(1_200),
            max_attempts: 6,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(400),
        }
    }
}

/// Why a call failed after the policy gave up, or at once.
pub(crate) enum Failure<E> {
    /// Conflicts, throttling, 5xx or timeouts outlasted the budget.
    Exhausted(SdkError<E, HttpResponse>),
    /// The budget ran out while an attempt was still in flight.
    OutOfTime,
    /// Anything else, including a failed condition: not retried.
    Final(SdkError<E, HttpResponse>),
}

impl Store {
    /// Runs one DynamoDB call under the retry policy. `call` builds and sends the request
    /// anew for each attempt.
    pub(crate) async fn send<T, E, F, Fut>(
        &self,
        op: &'static str,
        call: F,
    ) -> Result<T, Failure<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let policy = self.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1))
            .with_jitter();
        let attempts = call
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(is_transient)
            .notify(|err, wait| {
                metrics::count(Metric::StoreRetries, 1);
                tracing::warn!(
                    op,
                    code = err.code().unwrap_or("-"),
                    ?wait,
                    "DynamoDB call failed; retrying"
                )
            });
        let failure = match tokio::time::timeout(policy.budget, attempts).await {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(err)) if is_transient(&err) => Failure::Exhausted(err),
            Ok(Err(err)) => Failure::Final(err),
            Err(_) => Failure::OutOfTime,
        };
        if failure.is_failure() {
            metrics::count(Metric::StoreFailures, 1);
        }
        Err(failure)
    }
}

/// Service errors of a conditional write, which may say its condition failed.
pub(crate) trait ConditionalWrite {
    fn condition_failed(&self) -> bool;
}

impl ConditionalWrite for UpdateItemError {
    fn condition_failed(&self) -> bool {
        matches!(self, Self::ConditionalCheckFailedException(_))
    }
}

impl ConditionalWrite for PutItemError {
    fn condition_failed(&self) -> bool {
        matches!(self, Self::ConditionalCheckFailedException(_))
    }
}

impl ConditionalWrite for DeleteItemError {
    fn condition_failed(&self) -> bool {
        matches!(self, Self::ConditionalCheckFailedException(_))
    }
}

impl Store {
    /// [`Store::send`] for a conditional write whose failed condition needs no more
    /// telling apart: `Some(output)` when it landed, `None` when its condition failed.
    pub(crate) async fn send_conditional<T, E, F, Fut>(
        &self,
        op: &'static str,
        call: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ConditionalWrite + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.send(op, call).await {
            Ok(out) => Ok(Some(out)),
            Err(failure) => match failure.service_error(op)? {
                e if e.condition_failed() => Ok(None),
                e => Err(Error::dynamo(op)(e)),
            },
        }
    }
}

/// Worth another attempt: the same request may well succeed in a moment.
pub(crate) fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + 'static,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
        SdkError::ServiceError(ctx) => {
            if let Some(TransactWriteItemsError::TransactionCanceledException(e)) =
                (ctx.err() as &dyn Any).downcast_ref::<TransactWriteItemsError>()
            {
                // Cancelled for conflict or throttling only, never for a failed condition.
                let codes = e.cancellation_reasons().iter().filter_map(|r| r.code());
                let mut transient = false;
                for code in codes {
                    match code {
                        "None" => {}
                        "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded" => transient = true,
                        _ => return false,
                    }
                }
                return transient;
            }
            match err.code() {
                Some(
                    "TransactionConflictException"
                    | "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionInProgressException",
                ) => true,
                _ => ctx.raw().status().is_server_error(),
            }
        }
        _ => false,
    }
}

impl<E: ProvideErrorMetadata> Failure<E> {
    /// The call failed, rather than answered that its condition did not hold.
    fn is_failure(&self) -> bool {
        match self {
            Self::Final(SdkError::ServiceError(ctx)) => !matches!(
                ctx.err().code(),
                Some("ConditionalCheckFailedException" | "TransactionCanceledException")
            ),
            _ => true,
        }
    }
}

impl<E> Failure<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// The service's own error, to match a failed condition on; every other failure
    /// becomes the store's error.
    pub(crate) fn service_error(self, op: &'static str) -> Result<E, Error> {
        match self {
            Self::Final(SdkError::ServiceError(ctx)) => Ok(ctx.into_err()),
            Self::Final(other) => Err(Error::dynamo(op)(other)),
            Self::Exhausted(err) => Err(Error::Unavailable {
                op,
                source: Some(Box::new(err)),
            }),
            Self::OutOfTime => Err(Error::Unavailable { op, source: None }),
        }
    }

    /// The store's error for a call whose failed conditions need no telling apart.
    pub(crate) fn into_error(self, op: &'static str) -> Error {
        match self.service_error(op) {
            Ok(service) => Error::dynamo(op)(service),
            Err(err) => err,
        }
    }
}
