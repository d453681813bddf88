//! User items: one per account, holding the password hash and the credit balance.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};

use super::{Error, PK, SK, Store, get_n, get_s, n, now_millis, s, user_pk};
use crate::domain::Username;

pub(crate) const PROFILE: &str = "PROFILE";

/// What the books of one account are checked against.
#[derive(Debug)]
pub struct Ledger {
    /// Every credit ever given to the account.
    pub granted: u64,
    pub balance: u64,
    /// Credits of closed, answered charges.
    pub spent: u64,
    pub open: Vec<super::OpenCharge>,
}

/// The balance and the charges still holding credits.
#[derive(Debug)]
pub struct Account {
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
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, user_pk(&username.key()))
            .item(SK, s(PROFILE))
            .item("username", s(username.as_str()))
            .item("password_hash", s(password_hash))
            .item("tokens", n(tokens))
            .item("granted", n(tokens))
            .item("spent", n(0))
            .item("pending", AttributeValue::M(HashMap::new()))
            .item("created_at", n(now_millis()))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match self.send("PutItem", || put.clone().send()).await {
            Ok(_) => Ok(true),
            Err(failure) => match failure.service_error("PutItem")? {
                // A retry whose first attempt landed finds its own hash there.
                PutItemError::ConditionalCheckFailedException(e) => Ok(e.item.is_some_and(|old| {
                    get_s(&old, "password_hash").ok().as_deref() == Some(password_hash)
                })),
                e => Err(Error::dynamo("PutItem")(e)),
            },
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

    /// The current credit balance and the open charges.
    pub async fn account(&self, user_key: &str) -> Result<Option<Account>, Error> {
        let Some(item) = self.get_user(user_key, "tokens, pending").await? else {
            return Ok(None);
        };
        Ok(Some(Account {
            balance: get_n(&item, "tokens")?,
            open: super::credits::open_charges(user_key, &item)?,
        }))
    }

    /// Credits granted, the balance and the open charges, read in one consistent read.
    pub async fn ledger(&self, user_key: &str) -> Result<Option<Ledger>, Error> {
        let Some(item) = self
            .get_user(user_key, "granted, tokens, spent, pending")
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Ledger {
            granted: get_n(&item, "granted")?,
            balance: get_n(&item, "tokens")?,
            spent: get_n(&item, "spent")?,
            open: super::credits::open_charges(user_key, &item)?,
        }))
    }

    async fn get_user(
        &self,
        user_key: &str,
        projection: &str,
    ) -> Result<Option<super::Item>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .projection_expression(projection)
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        Ok(out.item)
    }
}
