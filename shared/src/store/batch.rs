//! Many writes at once: `BatchWriteItem` in chunks of DynamoDB's 25, several chunks in
//! flight, and what DynamoDB left unprocessed (a hot partition, throttling) sent again
//! after a jittered, growing wait. For jobs over many items (an account's deletion), not
//! for the conditional writes the credits rely on: a batch's writes are unconditional.

use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::stream::{self, StreamExt};

use super::{Error, Item, Store};
use crate::telemetry::metrics::{self, Metric};

/// Writes one `BatchWriteItem` takes at most.
pub(crate) const BATCH_SIZE: usize = 25;

/// `BatchWriteItem` calls in flight at once. Each is 25 writes of at most a few KB, so
/// this stays far inside the 1 MB/s and 1,000 writes/s a partition takes; a partition
/// that pushes back answers with unprocessed items, which wait and go again.
pub(crate) const PARALLEL_BATCHES: usize = 4;

impl Store {
    /// Puts `item`s, or deletes the items with these keys, all of them: `Ok` only once
    /// every write landed. Unconditional writes, so sending one twice is harmless.
    pub(crate) async fn write_all(&self, writes: Vec<WriteRequest>) -> Result<(), Error> {
        let batches: Vec<Vec<WriteRequest>> = writes
            .chunks(BATCH_SIZE)
            .map(<[WriteRequest]>::to_vec)
            .collect();
        let mut landed = stream::iter(batches)
            .map(|batch| self.write_batch(batch))
            .buffer_unordered(PARALLEL_BATCHES);
        while let Some(result) = landed.next().await {
            result?;
        }
        Ok(())
    }

    /// One batch, its unprocessed writes sent again until none are left or the retry
    /// policy's attempts are spent.
    async fn write_batch(&self, mut batch: Vec<WriteRequest>) -> Result<(), Error> {
        let policy = self.retry;
        let mut waits = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1))
            .with_jitter()
            .build();
        loop {
            let call = self
                .client
                .batch_write_item()
                .request_items(&self.table, batch.clone());
            let out = self
                .send("BatchWriteItem", || call.clone().send())
                .await
                .map_err(|f| f.into_error("BatchWriteItem"))?;
            batch = out
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if batch.is_empty() {
                return Ok(());
            }
            let Some(wait) = waits.next() else {
                metrics::count(Metric::StoreFailures, 1);
                return Err(Error::Unavailable {
                    op: "BatchWriteItem",
                    source: None,
                });
            };
            metrics::count(Metric::StoreRetries, 1);
            tracing::warn!(
                left = batch.len(),
                ?wait,
                "writes left unprocessed; sending them again"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// A put of `item` in a batch.
pub(crate) fn put(item: Item) -> Result<WriteRequest, Error> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(Error::dynamo("BatchWriteItem"))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// A delete of the item with `key` in a batch.
pub(crate) fn delete(key: Item) -> Result<WriteRequest, Error> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(Error::dynamo("BatchWriteItem"))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}
