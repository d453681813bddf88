//! Session items: one per login token, keyed by the token's SHA-256 and expired by
//! DynamoDB TTL (which is lazy, so readers check `expires_at` too).

use super::{Error, PK, SK, Store, TTL_ATTRIBUTE, get_n, get_s, n, now_millis, s};

const SESSION: &str = "SESSION";

#[derive(Debug, Clone)]
pub struct Session {
    pub user_key: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Session {
    pub fn is_expired(&self, now_secs: u64) -> bool {
        self.expires_at <= now_secs
    }
}

fn session_pk(digest: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    s(format!("SESSION#{digest}"))
}

impl Store {
    pub async fn put_session(&self, digest: &str, session: &Session) -> Result<(), Error> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, session_pk(digest))
            .item(SK, s(SESSION))
            .item("user_key", s(&session.user_key))
            .item(TTL_ATTRIBUTE, n(session.expires_at))
            .item("created_at", n(now_millis()));
        // No condition: the digest is of 256 fresh random bits, and a retried put whose
        // first attempt landed must not fail.
        self.send("PutItem", || put.clone().send())
            .await
            .map_err(|f| f.into_error("PutItem"))?;
        Ok(())
    }

    pub async fn session(&self, digest: &str) -> Result<Option<Session>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, session_pk(digest))
            .key(SK, s(SESSION))
            // A token must work the moment login returns it.
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Ok(Some(Session {
            user_key: get_s(&item, "user_key")?,
            expires_at: get_n(&item, TTL_ATTRIBUTE)?,
        }))
    }
}
