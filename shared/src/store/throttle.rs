//! Throttle counters: one small item per (kind, subject[, window]), e.g.
//! `THROTTLE#login-user#john`, `THROTTLE#login-ip#203.0.113.7#1795514400`. They expire
//! by TTL, and readers check `expires_at` too (TTL deletion is lazy). Living in the
//! table, they hold across every Lambda instance.
//!
//! A counter write retried after a lost answer may count once more: a throttle errs
//! towards strictness by one, never towards letting more through.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

use super::{Error, PK, SK, Store, TTL_ATTRIBUTE, get_n, n, now_millis, s};

const THROTTLE: &str = "THROTTLE";

/// A counter as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    /// When it was last counted up, in milliseconds since the Unix epoch.
    pub last_at: u64,
}

fn throttle_pk(key: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(format!("{THROTTLE}#{key}"))
}

impl Store {
    /// The counter `key`; zero when absent or expired.
    pub async fn counter(&self, key: &str) -> Result<Counter, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, throttle_pk(key))
            .key(SK, s(THROTTLE))
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        let Some(item) = out.item else {
            return Ok(Counter::default());
        };
        if get_n(&item, TTL_ATTRIBUTE)? <= now_millis() / 1000 {
            return Ok(Counter::default());
        }
        Ok(Counter {
            count: get_n(&item, "n")?,
            last_at: get_n(&item, "last_at")?,
        })
    }

    /// Counts one more for `key`, kept until `expires_at` (seconds). A counter found
    /// expired (TTL not yet applied) starts again from one.
    pub async fn count_up(&self, key: &str, expires_at: u64) -> Result<(), Error> {
        let now = now_millis();
        let update = |fresh: bool| {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(PK, throttle_pk(key))
                .key(SK, s(THROTTLE))
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":ttl", n(expires_at))
                .expression_attribute_values(":now_secs", n(now / 1000));
            if fresh {
                update
                    .update_expression("SET n = :one, last_at = :now, #ttl = :ttl")
                    .condition_expression("#ttl <= :now_secs")
            } else {
                update
                    .update_expression("ADD n :one SET last_at = :now, #ttl = :ttl")
                    .condition_expression("attribute_not_exists(#ttl) OR #ttl > :now_secs")
            }
        };
        for fresh in [false, true] {
            let update = update(fresh);
            match self.send("UpdateItem", || update.clone().send()).await {
                Ok(_) => return Ok(()),
                Err(failure) => match failure.service_error("UpdateItem")? {
                    UpdateItemError::ConditionalCheckFailedException(_) => continue,
                    e => return Err(Error::dynamo("UpdateItem")(e)),
                },
            }
        }
        Ok(())
    }

    /// Counts one more for `key` if it is below `max`: `Ok(false)` when it is full.
    /// The key should name its window, so that a full counter empties by expiring.
    pub async fn take(&self, key: &str, max: u64, expires_at: u64) -> Result<bool, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, throttle_pk(key))
            .key(SK, s(THROTTLE))
            .update_expression("ADD n :one SET last_at = :now, #ttl = :ttl")
            .condition_expression("attribute_not_exists(n) OR n < :max")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .expression_attribute_values(":now", n(now_millis()))
            .expression_attribute_values(":ttl", n(expires_at));
        match self.send("UpdateItem", || update.clone().send()).await {
            Ok(_) => Ok(true),
            Err(failure) => match failure.service_error("UpdateItem")? {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                e => Err(Error::dynamo("UpdateItem")(e)),
            },
        }
    }

    /// Forgets the counter `key`.
    pub async fn reset(&self, key: &str) -> Result<(), Error> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, throttle_pk(key))
            .key(SK, s(THROTTLE));
        self.send("DeleteItem", || delete.clone().send())
            .await
            .map_err(|f| f.into_error("DeleteItem"))?;
        Ok(())
    }
}
