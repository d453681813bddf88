//! Throttle counters: one small item per (kind, subject[, window]), e.g.
//! `THROTTLE#login-net#john#203.0.113.0/24`, `THROTTLE#login-ip#203.0.113.7#1795514400`.
//! They expire
//! by TTL, and readers check `expires_at` too (TTL deletion is lazy). Living in the
//! table, they hold across every Lambda instance.
//!
//! A counter write retried after a lost answer may count once more: a throttle errs
//! towards strictness by one, never towards letting more through.

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{Error, PK, SK, Store, TTL_ATTRIBUTE, get_n, n, now_millis, s};

const THROTTLE: &str = "THROTTLE";

/// What [`Store::reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Go ahead: this is attempt number `attempts` of the run.
    Granted { attempts: u64 },
    /// Throttled until `until` (milliseconds since the Unix epoch).
    Refused { until: u64 },
}

fn throttle_pk(key: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(format!("{THROTTLE}#{key}"))
}

impl Store {
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
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Reserves one attempt on a run counter (failed logins in a row for one name),
    /// atomically, before the attempt is checked: the first `free` attempts of a run go
    /// ahead, later ones only once `next_at` has passed, and each attempt pushes `next_at`
    /// to at least `hold_until`, so concurrent guesses can't slip through together.
    /// A counter past its `expires_at` (TTL not yet applied) starts a new run.
    pub async fn reserve(
        &self,
        key: &str,
        free: u64,
        hold_until: u64,
        expires_at: u64,
    ) -> Result<Reservation, Error> {
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
                .expression_attribute_values(":hold", n(hold_until))
                .expression_attribute_values(":ttl", n(expires_at))
                .expression_attribute_values(":now_secs", n(now / 1000))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            if fresh {
                update
                    .update_expression("SET n = :one, last_at = :now, next_at = :hold, #ttl = :ttl")
                    .condition_expression("#ttl <= :now_secs")
            } else {
                update
                    .update_expression("ADD n :one SET last_at = :now, next_at = :hold, #ttl = :ttl")
                    .condition_expression(
                        "attribute_not_exists(n) OR (#ttl > :now_secs AND (n < :free OR next_at <= :now))",
                    )
                    .expression_attribute_values(":free", n(free))
            }
        };
        for fresh in [false, true] {
            let update = update(fresh);
            match self.send("UpdateItem", || update.clone().send()).await {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    return Ok(Reservation::Granted {
                        attempts: get_n(&item, "n")?,
                    });
                }
                Err(failure) => match failure.service_error("UpdateItem")? {
                    UpdateItemError::ConditionalCheckFailedException(e) => {
                        let old = e.item.unwrap_or_default();
                        let expired = get_n(&old, TTL_ATTRIBUTE).is_ok_and(|t| t <= now / 1000);
                        if !fresh && expired {
                            continue;
                        }
                        return Ok(Reservation::Refused {
                            until: get_n(&old, "next_at").unwrap_or(now),
                        });
                    }
                    e => return Err(Error::dynamo("UpdateItem")(e)),
                },
            }
        }
        Ok(Reservation::Refused { until: now })
    }

    /// Holds the run counter `key` shut until `until` (milliseconds): the back-off after
    /// a failed attempt.
    pub async fn hold_until(&self, key: &str, until: u64) -> Result<(), Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, throttle_pk(key))
            .key(SK, s(THROTTLE))
            .update_expression("SET next_at = :until")
            .condition_expression("attribute_exists(n)")
            .expression_attribute_values(":until", n(until));
        // A failed condition: the counter was reset meanwhile.
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?;
        Ok(())
    }

    /// Gives back one count taken with [`Store::take`] (an attempt that turned out not to
    /// be a failure).
    pub async fn give_back(&self, key: &str) -> Result<(), Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, throttle_pk(key))
            .key(SK, s(THROTTLE))
            .update_expression("ADD n :minus_one")
            .condition_expression("n > :zero")
            .expression_attribute_values(":minus_one", n(-1))
            .expression_attribute_values(":zero", n(0));
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?;
        Ok(())
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
