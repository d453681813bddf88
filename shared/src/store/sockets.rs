//! WebSocket tickets and connections.
//!
//! | item    | pk                    | sk       | attributes |
//! |---------|-----------------------|----------|------------|
//! | ticket  | `TICKET#<sha256 hex>` | `TICKET` | user_key, account, session, digest, valid_until (millis), expires_at (TTL) |
//! | socket  | `SOCKET#<connection>` | `SOCKET` | user_key, account, session, digest, expires_at (TTL) |
//!
//! and, on the user item, `sockets`: connection id → until when it may live (millis).
//!
//! Why two places for a connection: API Gateway names only the connection on each
//! message, so finding its account takes an item keyed by the connection; and whoever
//! charges a user has just read the user item, so the map there tells it whom to push the
//! new balance to with no read of its own. The map is also what bounds a user's
//! connections: adding one is a conditional write on its size.
//!
//! A ticket is deleted by the `$connect` that uses it (a conditional delete that returns
//! what it deleted): used once. TTL deletion is lazy, so `valid_until` is checked too.

use std::collections::HashMap;

use aws_sdk_dynamodb::{operation::delete_item::DeleteItemError, types::AttributeValue};

use super::{
    Account, Error, Item, PK, PROFILE, SK, Store, TTL_ATTRIBUTE, get_n, get_opt_s, get_s, n,
    now_millis, s, users::SOCKETS,
};

/// Who a ticket or a connection belongs to: the account and the login session that made
/// it, with the digest of that session's token, so that the session is checked as a
/// token would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOwner {
    pub account: Account,
    pub session_id: String,
    pub digest: String,
}

/// A ticket as `$connect` took it.
#[derive(Debug, Clone)]
pub struct TakenTicket {
    pub owner: SocketOwner,
    /// Millis; a ticket past it is refused, whatever TTL has not deleted yet.
    pub valid_until: u64,
}

const TICKET: &str = "TICKET";
const SOCKET: &str = "SOCKET";

fn ticket_key(digest: &str) -> [(&'static str, AttributeValue); 2] {
    [(PK, s(format!("{TICKET}#{digest}"))), (SK, s(TICKET))]
}

fn socket_key(connection: &str) -> [(&'static str, AttributeValue); 2] {
    [(PK, s(format!("{SOCKET}#{connection}"))), (SK, s(SOCKET))]
}

fn owner_of(item: &Item) -> Result<SocketOwner, Error> {
    Ok(SocketOwner {
        account: Account::new(get_s(item, "user_key")?, get_opt_s(item, "account")),
        session_id: get_s(item, "session")?,
        digest: get_s(item, "digest")?,
    })
}

fn owner_attributes(owner: &SocketOwner) -> Vec<(&'static str, AttributeValue)> {
    let mut attributes = vec![
        ("user_key", s(&owner.account.user_key)),
        ("session", s(&owner.session_id)),
        ("digest", s(&owner.digest)),
    ];
    if let Some(id) = owner.account.id() {
        attributes.push(("account", s(id)));
    }
    attributes
}

/// Seconds since the epoch, for the TTL attribute, of `millis`.
fn ttl(millis: u64) -> AttributeValue {
    n(millis / 1000 + 1)
}

impl Store {
    /// Keeps a ticket (by the digest of its secret) for `owner` until `valid_until`.
    pub async fn put_ticket(
        &self,
        digest: &str,
        owner: &SocketOwner,
        valid_until: u64,
    ) -> Result<(), Error> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("valid_until", n(valid_until))
            .item(TTL_ATTRIBUTE, ttl(valid_until));
        for (name, value) in ticket_key(digest)
            .into_iter()
            .chain(owner_attributes(owner))
        {
            put = put.item(name, value);
        }
        self.send("PutItem", || put.clone().send())
            .await
            .map_err(|f| f.into_error("PutItem"))?;
        Ok(())
    }

    /// Takes the ticket whose secret has `digest`: deletes it and returns what it was.
    /// `None`: no such ticket, or already used.
    pub async fn take_ticket(&self, digest: &str) -> Result<Option<TakenTicket>, Error> {
        let [pk, sk] = ticket_key(digest);
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .condition_expression("attribute_exists(pk)")
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        let old = match self.send("DeleteItem", || delete.clone().send()).await {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(failure) => match failure.service_error("DeleteItem")? {
                DeleteItemError::ConditionalCheckFailedException(_) => return Ok(None),
                e => return Err(Error::dynamo("DeleteItem")(e)),
            },
        };
        if old.is_empty() {
            return Ok(None);
        }
        Ok(Some(TakenTicket {
            owner: owner_of(&old)?,
            valid_until: get_n(&old, "valid_until")?,
        }))
    }

    /// Adds connection `id` to the user item's `sockets` (dropping `stale` ones) and
    /// writes its own item, side by side. The user item's write is conditional: the
    /// session still that of `owner` and alive at `now`, and fewer than `max` connections
    /// once `stale` are gone. `Ok(false)`: refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_socket(
        &self,
        owner: &SocketOwner,
        id: &str,
        until: u64,
        has_map: bool,
        stale: &[&str],
        max: usize,
        now: u64,
        idle_cutoff: u64,
    ) -> Result<bool, Error> {
        let (owns, owns_value) = owner.account.still_owns_name();
        let mut remove = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, owner.account.user_pk())
            .key(SK, s(PROFILE))
            .expression_attribute_names("#sid", &owner.session_id)
            .expression_attribute_names("#sockets", SOCKETS)
            .expression_attribute_values(":digest", s(&owner.digest))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":idle", n(idle_cutoff));
        let set = if has_map {
            for (i, old) in stale.iter().enumerate() {
                update = update.expression_attribute_names(format!("#s{i}"), *old);
                remove.push(format!("#sockets.#s{i}"));
            }
            update = update
                .expression_attribute_names("#new", id)
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":room", n(max + stale.len()));
            "SET #sockets.#new = :until"
        } else {
            update = update.expression_attribute_values(
                ":sockets",
                AttributeValue::M(HashMap::from([(id.to_owned(), n(until))])),
            );
            "SET #sockets = :sockets"
        };
        let room = if has_map {
            "size(#sockets) < :room"
        } else {
            "attribute_not_exists(#sockets)"
        };
        let mut expression = set.to_owned();
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let mut update = update
            .update_expression(expression)
            .condition_expression(format!(
                "{owns} AND sessions.#sid.digest = :digest AND sessions.#sid.expires_at > :now \
             AND sessions.#sid.last_used > :idle AND {room}"
            ));
        if let Some(value) = owns_value {
            update = update.expression_attribute_values(":account", value);
        }
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(TTL_ATTRIBUTE, ttl(until));
        for (name, value) in socket_key(id).into_iter().chain(owner_attributes(owner)) {
            put = put.item(name, value);
        }
        let (added, written) = tokio::join!(
            self.send_conditional("UpdateItem", || update.clone().send()),
            self.send("PutItem", || put.clone().send()),
        );
        let added = added?.is_some();
        written.map_err(|f| f.into_error("PutItem"))?;
        if !added {
            // Refused: its item would only wait for its TTL.
            self.forget_socket_item(id).await?;
        }
        Ok(added)
    }

    /// The owner of connection `id`, if it is open.
    pub async fn socket(&self, id: &str) -> Result<Option<SocketOwner>, Error> {
        let [(_, pk), (_, sk)] = socket_key(id);
        // Consistent: a message may follow its `$connect` at once.
        let Some(item) = self.item(pk, sk).await? else {
            return Ok(None);
        };
        if get_n(&item, TTL_ATTRIBUTE).unwrap_or(0) < now_millis() / 1000 {
            return Ok(None);
        }
        owner_of(&item).map(Some)
    }

    /// Forgets connection `id` of `account`: its entry in the user item and its own item,
    /// side by side. Either may be gone already.
    pub async fn close_socket(&self, account: &Account, id: &str) -> Result<(), Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.user_pk())
            .key(SK, s(PROFILE))
            .update_expression("REMOVE #sockets.#id")
            .condition_expression("attribute_exists(#sockets)")
            .expression_attribute_names("#sockets", SOCKETS)
            .expression_attribute_names("#id", id);
        let (removed, forgot) = tokio::join!(
            self.send_conditional("UpdateItem", || update.clone().send()),
            self.forget_socket_item(id),
        );
        removed?;
        forgot
    }

    async fn forget_socket_item(&self, id: &str) -> Result<(), Error> {
        let [pk, sk] = socket_key(id);
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1);
        self.send("DeleteItem", || delete.clone().send())
            .await
            .map_err(|f| f.into_error("DeleteItem"))?;
        Ok(())
    }
}
