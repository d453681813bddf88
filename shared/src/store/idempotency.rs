//! Idempotency records: one per (user, `Idempotency-Key`), kept 24 hours.
//!
//! A chat sent with a key first claims the key. The first request's outcome is written
//! into the record in the same transaction that settles or refunds its charge, so a
//! record says `done` exactly when the charge is closed; retries then get the stored
//! response instead of a second charge.

use std::time::Duration;

use aws_sdk_dynamodb::{
    operation::{put_item::PutItemError, update_item::UpdateItemError},
    types::{Delete, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update},
};

use super::{Error, Item, PK, SK, Store, TTL_ATTRIBUTE, get_n, get_s, n, now_millis, s, user_pk};

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub balance: Option<u64>,
}

#[derive(Debug)]
pub enum Claim {
    /// The key is this request's: go ahead.
    Claimed,
    /// The first request with this key finished: answer with its response.
    Replay(StoredResponse),
    /// The key was first used for a different message.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

fn idem_sk(key: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(format!("IDEM#{key}"))
}

impl Store {
    /// Claims `key` for this user and request `fingerprint`. A claim left `running` for
    /// longer than `takeover_after` belongs to a request whose process died; a retry
    /// takes it over (its charge is recovered like any abandoned one).
    pub async fn claim_idempotency_key(
        &self,
        user_key: &str,
        key: &str,
        fingerprint: &str,
        takeover_after: Duration,
    ) -> Result<Claim, Error> {
        let now = now_millis();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, user_pk(user_key))
            .item(SK, idem_sk(key))
            .item("state", s("running"))
            .item("fingerprint", s(fingerprint))
            .item("started_at", n(now))
            .item(TTL_ATTRIBUTE, n((now / 1000) + RETENTION.as_secs()))
            .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now / 1000))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match result.map_err(|e| e.into_service_error()) {
            Ok(_) => return Ok(Claim::Claimed),
            Err(PutItemError::ConditionalCheckFailedException(e)) => e.item.unwrap_or_default(),
            Err(e) => return Err(Error::dynamo("PutItem")(e)),
        };
        if get_s(&old, "fingerprint")? != fingerprint {
            return Ok(Claim::Mismatch);
        }
        if get_s(&old, "state")? == "done" {
            return Ok(Claim::Replay(stored_response(&old)?));
        }
        let started_at = get_n(&old, "started_at")?;
        if now.saturating_sub(started_at) <= takeover_after.as_millis() as u64 {
            return Ok(Claim::InProgress);
        }
        self.take_over(user_key, key, started_at, now).await
    }

    async fn take_over(
        &self,
        user_key: &str,
        key: &str,
        started_at: u64,
        now: u64,
    ) -> Result<Claim, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, idem_sk(key))
            .update_expression("SET started_at = :now")
            .condition_expression("#state = :running AND started_at = :then")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":then", n(started_at))
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        match result.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(Claim::Claimed),
            // Another retry took it over first.
            Err(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(Claim::InProgress),
            Err(e) => Err(Error::dynamo("UpdateItem")(e)),
        }
    }

    /// The write that records the outcome, to join the settle or refund transaction.
    pub fn idempotency_done(
        &self,
        user_key: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<TransactWriteItem, Error> {
        let expression = match response.balance {
            Some(_) => "SET #state = :done, #status = :status, body = :body, balance = :balance",
            None => "SET #state = :done, #status = :status, body = :body",
        };
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, idem_sk(key))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":status", n(response.status))
            .expression_attribute_values(":body", s(&response.body));
        let update = match response.balance {
            Some(balance) => update.expression_attribute_values(":balance", n(balance)),
            None => update,
        };
        let update = update.build().map_err(Error::dynamo("build Update"))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The write that forgets the key (nothing was charged, so a retry may run anew),
    /// to join a refund transaction.
    pub fn idempotency_release(
        &self,
        user_key: &str,
        key: &str,
    ) -> Result<TransactWriteItem, Error> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, idem_sk(key))
            .build()
            .map_err(Error::dynamo("build Delete"))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Forgets the key when the request ended before anything was charged.
    pub async fn release_idempotency_key(&self, user_key: &str, key: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, idem_sk(key))
            .send()
            .await
            .map_err(Error::dynamo("DeleteItem"))?;
        Ok(())
    }
}

fn stored_response(item: &Item) -> Result<StoredResponse, Error> {
    Ok(StoredResponse {
        status: u16::try_from(get_n(item, "status")?)
            .map_err(|_| Error::Corrupt("stored status out of range".into()))?,
        body: get_s(item, "body")?,
        balance: item
            .contains_key("balance")
            .then(|| get_n(item, "balance"))
            .transpose()?,
    })
}
