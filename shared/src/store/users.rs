//! User items: one per account, holding the password hash and the credit balance.

use std::collections::HashMap;

use aws_sdk_dynamodb::{operation::put_item::PutItemError, types::AttributeValue};

use super::{Error, PK, SK, Store, get_n, get_s, n, now_millis, s, user_pk};
use crate::domain::Username;

pub(crate) const PROFILE: &str = "PROFILE";

/// What the books of one account are checked against.
#[derive(Debug)]
pub struct Ledger {
    /// Every credit ever given to the account.
    pub granted: u64,
    pub balance: u64,
    pub open: Vec<super::OpenCharge>,
}

#[derive(Debug)]
pub struct UserCredentials {
    pub password_hash: String,
}

impl Store {
    /// Creates an account with `tokens` credits. `Ok(false)`: the name is taken,
    /// compared case-insensitively.
    pub async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        tokens: u64,
    ) -> Result<bool, Error> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, user_pk(&username.key()))
            .item(SK, s(PROFILE))
            .item("username", s(username.as_str()))
            .item("password_hash", s(password_hash))
            .item("tokens", n(tokens))
            .item("granted", n(tokens))
            .item("pending", AttributeValue::M(HashMap::new()))
            .item("created_at", n(now_millis()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(true),
            Err(PutItemError::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(Error::dynamo("PutItem")(e)),
        }
    }

    /// What login needs to check a password.
    pub async fn user_credentials(&self, user_key: &str) -> Result<Option<UserCredentials>, Error> {
        let Some(item) = self.get_user(user_key, "password_hash").await? else {
            return Ok(None);
        };
        Ok(Some(UserCredentials {
            password_hash: get_s(&item, "password_hash")?,
        }))
    }

    /// The current credit balance.
    pub async fn balance(&self, user_key: &str) -> Result<Option<u64>, Error> {
        match self.get_user(user_key, "tokens").await? {
            Some(item) => Ok(Some(get_n(&item, "tokens")?)),
            None => Ok(None),
        }
    }

    /// Credits granted, the balance and the open charges, read in one consistent read.
    pub async fn ledger(&self, user_key: &str) -> Result<Option<Ledger>, Error> {
        let Some(item) = self.get_user(user_key, "granted, tokens, pending").await? else {
            return Ok(None);
        };
        Ok(Some(Ledger {
            granted: get_n(&item, "granted")?,
            balance: get_n(&item, "tokens")?,
            open: super::credits::open_charges(user_key, &item)?,
        }))
    }

    async fn get_user(
        &self,
        user_key: &str,
        projection: &str,
    ) -> Result<Option<super::Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .projection_expression(projection)
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::dynamo("GetItem"))?;
        Ok(out.item)
    }
}
