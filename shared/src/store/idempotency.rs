//! Idempotency records: one per (user, `Idempotency-Key`), kept 24 hours.
//!
//! A chat sent with a key first claims the key for its charge (the record names the
//! charge as its `owner`). When the chat ends, the service's outcome is written into the
//! record; a retry then gets that outcome instead of a second charge. The record holds the
//! outcome as the service serialised it: the store does not read it.

use std::time::Duration;

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};

use super::{Account, Error, Item, PK, SK, Store, TTL_ATTRIBUTE, get_n, get_s, n, now_millis, s};

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Who holds a key: the charge of the request that claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub charge_id: String,
    pub conversation_id: String,
}

#[derive(Debug)]
pub enum Claim {
    /// The key is this request's: go ahead.
    Claimed,
    /// The first request with this key finished: its outcome, as stored.
    Replay(String),
    /// The key was first used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// The first request claimed the key longer ago than the charge timeout and never
    /// finished: its process died. Its charge tells what became of it.
    Stale { owner: KeyOwner, started_at: u64 },
}

const IDEM_PREFIX: &str = "IDEM#";

fn idem_sk(key: &str) -> AttributeValue {
    s(format!("{IDEM_PREFIX}{key}"))
}

impl Store {
    /// Claims `key` for this user, request `fingerprint` and charge `owner`.
    pub async fn claim_idempotency_key(
        &self,
        account: &Account,
        key: &str,
        fingerprint: &str,
        owner: &KeyOwner,
        stale_after: Duration,
    ) -> Result<Claim, Error> {
        let now = now_millis();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, account.items_pk())
            .item(SK, idem_sk(key))
            .item("state", s("running"))
            .item("fingerprint", s(fingerprint))
            .item("owner", s(&owner.charge_id))
            .item("conversation", s(&owner.conversation_id))
            .item("started_at", n(now))
            .item(TTL_ATTRIBUTE, n((now / 1000) + RETENTION.as_secs()))
            .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now / 1000))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let old = match self.send("PutItem", || put.clone().send()).await {
            Ok(_) => return Ok(Claim::Claimed),
            Err(failure) => match failure.service_error("PutItem")? {
                PutItemError::ConditionalCheckFailedException(e) => e.item.unwrap_or_default(),
                e => return Err(Error::dynamo("PutItem")(e)),
            },
        };
        if get_s(&old, "fingerprint")? != fingerprint {
            return Ok(Claim::Mismatch);
        }
        if get_s(&old, "state")? == "done" {
            return Ok(Claim::Replay(get_s(&old, "outcome")?));
        }
        let old_owner = KeyOwner {
            charge_id: get_s(&old, "owner")?,
            conversation_id: get_s(&old, "conversation")?,
        };
        if old_owner == *owner {
            return Ok(Claim::Claimed); // our own claim, from an attempt whose answer was lost
        }
        let started_at = get_n(&old, "started_at")?;
        if now.saturating_sub(started_at) <= stale_after.as_millis() as u64 {
            return Ok(Claim::InProgress);
        }
        Ok(Claim::Stale {
            owner: old_owner,
            started_at,
        })
    }

    /// Moves a stale claim to `owner`. `Ok(false)`: another retry took it first.
    pub async fn take_over_idempotency_key(
        &self,
        account: &Account,
        key: &str,
        stale: &KeyOwner,
        owner: &KeyOwner,
    ) -> Result<bool, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, idem_sk(key))
            .update_expression("SET started_at = :now, #owner = :me, conversation = :conv")
            .condition_expression("#state = :running AND (#owner = :then OR #owner = :me)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(now_millis()))
            .expression_attribute_values(":me", s(&owner.charge_id))
            .expression_attribute_values(":conv", s(&owner.conversation_id))
            .expression_attribute_values(":then", s(&stale.charge_id))
            .expression_attribute_values(":running", s("running"));
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Stores the outcome of the request that owns the key. `Ok(false)`: the key is no
    /// longer this owner's (it was taken over, or closed by its conversation's
    /// deletion), and nothing changed.
    pub async fn finish_idempotency_key(
        &self,
        account: &Account,
        key: &str,
        owner: &KeyOwner,
        outcome: &str,
    ) -> Result<bool, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, idem_sk(key))
            .update_expression("SET #state = :done, outcome = :outcome")
            // Still running: a key its conversation's deletion has closed keeps what
            // that deletion wrote.
            .condition_expression("#owner = :me AND #state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":outcome", s(outcome))
            .expression_attribute_values(":me", s(&owner.charge_id))
            .expression_attribute_values(":running", s("running"));
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Forgets the key, if `owner` still holds it: the request ended without a charge
    /// (or with its charge refunded for a reason that may not recur), so a retry may run
    /// anew.
    pub async fn release_idempotency_key(
        &self,
        account: &Account,
        key: &str,
        owner: &KeyOwner,
    ) -> Result<(), Error> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, idem_sk(key))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&owner.charge_id));
        self.send_conditional("DeleteItem", || delete.clone().send())
            .await?;
        Ok(())
    }

    /// Asks the request running under `key` to stop (a client's cancel, which may reach
    /// another process than the one running it). `Ok(false)`: no request is running
    /// under that key.
    pub async fn request_cancel(&self, account: &Account, key: &str) -> Result<bool, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, idem_sk(key))
            .update_expression("SET cancel = :yes")
            .condition_expression("#state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":running", s("running"));
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Whether the request running under `key` was asked to stop: a consistent read of
    /// one small attribute.
    pub async fn cancel_requested(&self, account: &Account, key: &str) -> Result<bool, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, account.items_pk())
            .key(SK, idem_sk(key))
            .projection_expression("cancel")
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        Ok(matches!(
            out.item.as_ref().and_then(|item| item.get("cancel")),
            Some(AttributeValue::Bool(true))
        ))
    }

    /// Closes every key whose request went into conversation `conversation`, running or
    /// done, with `outcome` (what its conversation's deletion leaves to replay instead of
    /// its text). A request still running then cannot store its own. Returns how many.
    pub async fn close_idempotency_keys(
        &self,
        account: &Account,
        conversation: &str,
        outcome: &str,
    ) -> Result<usize, Error> {
        let query = self
            .client
            .query()
            .key_condition_expression("pk = :pk AND begins_with(sk, :idem)")
            .filter_expression("conversation = :conversation")
            .projection_expression("pk, sk")
            .expression_attribute_values(":pk", account.items_pk())
            .expression_attribute_values(":idem", s(IDEM_PREFIX))
            .expression_attribute_values(":conversation", s(conversation));
        let keys = self.query_all(query).await?;
        let close = |key: Item| async move {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression("SET #state = :done, outcome = :outcome")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":done", s("done"))
                .expression_attribute_values(":outcome", s(outcome));
            self.send_conditional("UpdateItem", || update.clone().send())
                .await
        };
        let closed = futures_util::future::try_join_all(keys.into_iter().map(close)).await?;
        Ok(closed.len())
    }
}
