//! User items: one per account, holding the password hash, the credit balance, the
//! open charges and the login sessions. A token names its user and session, so finding
//! and checking a session is one consistent read of this item.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::{put_item::PutItemError, update_item::UpdateItemError},
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};

use super::{
    Account, Error, Item, PK, PROFILE, SK, Store, batch, deleted_pk, get_n, get_opt_s, get_s, n,
    now_millis, s, user_pk,
};
use crate::domain::{ConversationId, Network, Username};

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

/// One login session, as kept in the user item's `sessions` map. Times in milliseconds
/// since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub id: String,
    /// SHA-256 of the token's secret.
    pub digest: String,
    pub created_at: u64,
    pub last_used: u64,
    /// The absolute end, whatever the use.
    pub expires_at: u64,
    /// Password checks made through this session (password change, account deletion).
    pub checks: PasswordChecks,
}

/// The password checks of one session since the last right password: counted before each
/// check (`pw_checks`), and the time before which the next may not start
/// (`pw_held_until`, milliseconds). Kept in the session's entry, so a signed-in user's
/// checks are throttled per session, whatever strangers try at the login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordChecks {
    pub count: u64,
    pub held_until: u64,
}

impl SessionEntry {
    fn value(&self) -> AttributeValue {
        let mut entry = HashMap::from([
            ("digest".to_owned(), s(&self.digest)),
            ("created_at".to_owned(), n(self.created_at)),
            ("last_used".to_owned(), n(self.last_used)),
            ("expires_at".to_owned(), n(self.expires_at)),
        ]);
        if self.checks != PasswordChecks::default() {
            entry.insert(CHECKS.to_owned(), n(self.checks.count));
            entry.insert(CHECKS_HELD.to_owned(), n(self.checks.held_until));
        }
        AttributeValue::M(entry)
    }
}

const CHECKS: &str = "pw_checks";
const CHECKS_HELD: &str = "pw_held_until";

/// A whole user item, read once.
#[derive(Debug, Clone)]
pub struct UserItem {
    pub user_key: String,
    /// The account that holds the name now, and where its other items are.
    pub account: Account,
    pub username: String,
    pub password_hash: String,
    pub balance: u64,
    pub granted: u64,
    pub spent: u64,
    pub open: Vec<super::OpenCharge>,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionEntry>,
    /// Whether the item has a `sessions` map at all (accounts made before sessions
    /// moved into the user item have none).
    pub has_sessions_map: bool,
    /// Chats started per minute window: (window, count).
    pub chat_windows: Vec<(u64, u64)>,
    /// Bumped by every change that must end sessions being opened: a password change,
    /// "log out everywhere", account deletion. A login adds its session only if this
    /// and the password hash are still what it checked. Absent on older items: 0.
    pub cred_epoch: u64,
    /// Networks this account logged in from, with the last time (millis), newest last.
    pub networks: Vec<(Network, u64)>,
    /// Whether the item has a `networks` map at all (items from before it have none).
    pub has_networks_map: bool,
    /// The latest answered conversation and when it was answered (millis).
    pub last_conversation: Option<(ConversationId, u64)>,
    pub created_at: u64,
    /// Until when a request whose charge was closed may still write its records
    /// (millis; see `Charges::write_window`). 0 if no charge was ever closed.
    pub settling_until: u64,
    /// The account's open WebSocket connections and until when each may live (millis),
    /// so that whoever reads the user item knows whom to tell of a new balance.
    pub sockets: Vec<(String, u64)>,
    /// Whether the item has a `sockets` map at all (older items have none).
    pub has_sockets_map: bool,
}

impl UserItem {
    pub fn session(&self, id: &str) -> Option<&SessionEntry> {
        self.sessions.iter().find(|s| s.id == id)
    }

    /// Whether the account has logged in from `network`.
    pub fn knows(&self, network: &Network) -> bool {
        self.networks.iter().any(|(known, _)| known == network)
    }
}

/// What a login adds to the user item it checked the password of.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub session: &'a SessionEntry,
    /// Sessions ended to make room (dead ones, then the oldest beyond the cap).
    pub evict: &'a [&'a str],
    /// The network the login came from, remembered with the time.
    pub network: Option<&'a Network>,
    /// Known networks forgotten to keep the list short (never `network`).
    pub forget: &'a [&'a Network],
    pub now: u64,
}

fn user_item(user_key: &str, item: &Item) -> Result<UserItem, Error> {
    let mut sessions = match item.get("sessions") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .map(|(id, entry)| {
                let AttributeValue::M(entry) = entry else {
                    return Err(Error::Corrupt(format!("session {id} is not a map")));
                };
                Ok(SessionEntry {
                    id: id.clone(),
                    digest: get_s(entry, "digest")?,
                    created_at: get_n(entry, "created_at")?,
                    last_used: get_n(entry, "last_used")?,
                    expires_at: get_n(entry, "expires_at")?,
                    checks: PasswordChecks {
                        count: get_n(entry, CHECKS).unwrap_or(0),
                        held_until: get_n(entry, CHECKS_HELD).unwrap_or(0),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    sessions.sort_by_key(|s| (s.created_at, s.id.clone()));
    let chat_windows = match item.get("chat_rate") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .filter_map(|(w, c)| match c {
                AttributeValue::N(c) => Some((w.parse().ok()?, c.parse().ok()?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut networks: Vec<(Network, u64)> = match item.get("networks") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .filter_map(|(net, at)| match at {
                AttributeValue::N(at) => {
                    Some((Network::from_stored(net.clone()), at.parse().ok()?))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    networks.sort_by(|a, b| (a.1, a.0.as_str()).cmp(&(b.1, b.0.as_str())));
    let account = Account::new(user_key, get_opt_s(item, "account"));
    Ok(UserItem {
        user_key: user_key.to_owned(),
        username: get_opt_s(item, "username").unwrap_or_else(|| user_key.to_owned()),
        password_hash: get_s(item, "password_hash")?,
        balance: get_n(item, "tokens")?,
        granted: get_n(item, "granted")?,
        spent: get_n(item, "spent")?,
        open: super::credits::open_charges(&account, item)?,
        has_sessions_map: matches!(item.get("sessions"), Some(AttributeValue::M(_))),
        sessions,
        chat_windows,
        cred_epoch: get_n(item, CRED_EPOCH).unwrap_or(0),
        has_networks_map: matches!(item.get("networks"), Some(AttributeValue::M(_))),
        networks,
        last_conversation: match item.get("last_conversation") {
            Some(AttributeValue::M(last)) => Some((
                ConversationId::from_stored(get_s(last, "id")?),
                get_n(last, "at")?,
            )),
            _ => None,
        },
        created_at: get_n(item, "created_at").unwrap_or(0),
        settling_until: get_n(item, "settling_until").unwrap_or(0),
        sockets: match item.get(SOCKETS) {
            Some(AttributeValue::M(map)) => {
                let mut sockets: Vec<(String, u64)> = map
                    .iter()
                    .filter_map(|(id, until)| match until {
                        AttributeValue::N(until) => Some((id.clone(), until.parse().ok()?)),
                        _ => None,
                    })
                    .collect();
                sockets.sort();
                sockets
            }
            _ => Vec::new(),
        },
        has_sockets_map: matches!(item.get(SOCKETS), Some(AttributeValue::M(_))),
        account,
    })
}

const CRED_EPOCH: &str = "cred_epoch";
/// The user item's map of open WebSocket connections (see `store::sockets`).
pub(crate) const SOCKETS: &str = "sockets";

/// The condition that the user item's credential epoch is still `epoch` (`:epoch`); items
/// that never had one are at 0.
fn epoch_condition(epoch: u64) -> &'static str {
    if epoch == 0 {
        "(attribute_not_exists(cred_epoch) OR cred_epoch = :epoch)"
    } else {
        "cred_epoch = :epoch"
    }
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
            .item("account", s(Account::new_id()))
            .item("password_hash", s(password_hash))
            .item("tokens", n(tokens))
            .item("granted", n(tokens))
            .item("spent", n(0))
            .item("pending", AttributeValue::M(HashMap::new()))
            .item("sessions", AttributeValue::M(HashMap::new()))
            .item("chat_rate", AttributeValue::M(HashMap::new()))
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

    /// The whole user item, in one consistent read: what authentication, the balance
    /// and login need.
    pub async fn user(&self, user_key: &str) -> Result<Option<UserItem>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            // A token must work the moment login returns it.
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        out.item.map(|item| user_item(user_key, &item)).transpose()
    }

    /// Adds a session to `user`, ends those in `evict` and remembers the login's network,
    /// only if the credentials are still those the login checked: the same password hash
    /// and the same [`UserItem::cred_epoch`], and no deletion under way. So a password
    /// change, "log out everywhere" or an account deletion that lands between a login's
    /// read and this write is not undone by it, and a login to a deleted account never
    /// lands in the next account of that name. `Ok(false)`: they changed (or the user is
    /// gone). Plain `SET`s and `REMOVE`s, so a retry whose first attempt landed changes
    /// nothing.
    pub async fn add_session(&self, user: &UserItem, new: &NewSession<'_>) -> Result<bool, Error> {
        let session = new.session;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(&user.user_key))
            .key(SK, s(PROFILE))
            .condition_expression(format!(
                "attribute_exists(pk) AND attribute_not_exists(deleting) \
                 AND password_hash = :checked AND {}",
                epoch_condition(user.cred_epoch)
            ))
            .expression_attribute_values(":checked", s(&user.password_hash))
            .expression_attribute_values(":epoch", n(user.cred_epoch))
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()));
        let mut set = vec!["chat_rate = if_not_exists(chat_rate, :empty)".to_owned()];
        let mut remove = Vec::new();
        if user.has_sessions_map {
            set.push("sessions.#new = :session".to_owned());
            update = update
                .expression_attribute_names("#new", &session.id)
                .expression_attribute_values(":session", session.value());
            for (i, id) in new.evict.iter().enumerate() {
                update = update.expression_attribute_names(format!("#e{i}"), *id);
                remove.push(format!("sessions.#e{i}"));
            }
        } else {
            set.push("sessions = :sessions".to_owned());
            update = update.expression_attribute_values(
                ":sessions",
                AttributeValue::M(HashMap::from([(session.id.clone(), session.value())])),
            );
        }
        if let Some(network) = new.network {
            if user.has_networks_map {
                set.push("networks.#net = :now".to_owned());
                update = update
                    .expression_attribute_names("#net", network.as_str())
                    .expression_attribute_values(":now", n(new.now));
                for (i, old) in new.forget.iter().enumerate() {
                    update = update.expression_attribute_names(format!("#f{i}"), old.as_str());
                    remove.push(format!("networks.#f{i}"));
                }
            } else {
                set.push("networks = :networks".to_owned());
                update = update.expression_attribute_values(
                    ":networks",
                    AttributeValue::M(HashMap::from([(network.as_str().to_owned(), n(new.now))])),
                );
            }
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let update = update.update_expression(expression);
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Counts one password check on a session before the password is checked, if its
    /// count is still `seen` (so checks sent at once are counted one by one): the count
    /// becomes `next.count` and the next check waits until `next.held_until`.
    /// `Err(Some(item))`: the count moved meanwhile (or the session is gone), the item as
    /// it is now; `Err(None)`: no such user. A retry whose first attempt landed finds the
    /// count moved, and counts once more: strict by one, never lenient.
    pub async fn count_password_check(
        &self,
        user_key: &str,
        session_id: &str,
        seen: PasswordChecks,
        next: PasswordChecks,
    ) -> Result<Result<(), Option<UserItem>>, Error> {
        let seen_condition = if seen.count == 0 {
            "(attribute_not_exists(sessions.#sid.pw_checks) OR sessions.#sid.pw_checks = :seen)"
        } else {
            "sessions.#sid.pw_checks = :seen"
        };
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .update_expression(
                "SET sessions.#sid.pw_checks = :count, sessions.#sid.pw_held_until = :until",
            )
            .condition_expression(format!(
                "attribute_exists(sessions.#sid) AND {seen_condition}"
            ))
            .expression_attribute_names("#sid", session_id)
            .expression_attribute_values(":seen", n(seen.count))
            .expression_attribute_values(":count", n(next.count))
            .expression_attribute_values(":until", n(next.held_until))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        self.update_or_item(user_key, update).await
    }

    /// Forgets a session's password checks (the password was right, but nothing that
    /// rewrites the session followed).
    pub async fn clear_password_checks(
        &self,
        user_key: &str,
        session_id: &str,
    ) -> Result<(), Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .update_expression("REMOVE sessions.#sid.pw_checks, sessions.#sid.pw_held_until")
            .condition_expression("attribute_exists(sessions.#sid)")
            .expression_attribute_names("#sid", session_id);
        self.send_conditional("UpdateItem", || update.clone().send())
            .await?;
        Ok(())
    }

    /// Runs a conditional update of a user item: `Err(item)` with the item as it is when
    /// the condition failed (`None`: no such item).
    async fn update_or_item(
        &self,
        user_key: &str,
        update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Result<(), Option<UserItem>>, Error> {
        match self.send("UpdateItem", || update.clone().send()).await {
            Ok(_) => Ok(Ok(())),
            Err(failure) => match failure.service_error("UpdateItem")? {
                UpdateItemError::ConditionalCheckFailedException(e) => Ok(Err(e
                    .item
                    .map(|item| user_item(user_key, &item))
                    .transpose()?)),
                e => Err(Error::dynamo("UpdateItem")(e)),
            },
        }
    }

    /// Ends the sessions `ids` of `user_key` (all of them if `ids` is `None`).
    /// `Ok(false)`: no such user.
    pub async fn end_sessions(
        &self,
        account: &Account,
        ids: Option<&[&str]>,
    ) -> Result<bool, Error> {
        // A request checked before the name was deleted and registered again must not end
        // the next owner's sessions.
        let (owner, value) = account.still_owns_name();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.user_pk())
            .key(SK, s(PROFILE))
            .condition_expression(format!("attribute_exists(pk) AND {owner}"));
        if let Some(value) = value {
            update = update.expression_attribute_values(":account", value);
        }
        let update = match ids {
            // Ending them all also bumps the credential epoch, so a login checked before
            // this can't add its session after it.
            None => update
                .update_expression("SET sessions = :empty ADD cred_epoch :one")
                .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
                .expression_attribute_values(":one", n(1)),
            Some([]) => return Ok(true),
            Some(ids) => {
                let mut update = update;
                let mut paths = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    update = update.expression_attribute_names(format!("#s{i}"), *id);
                    paths.push(format!("sessions.#s{i}"));
                }
                update.update_expression(format!("REMOVE {}", paths.join(", ")))
            }
        };
        Ok(self
            .send_conditional("UpdateItem", || update.clone().send())
            .await?
            .is_some())
    }

    /// Replaces the password hash if the credentials are still those `checked` holds (the
    /// same hash and credential epoch), keeping only the session `keep`, and bumps the
    /// epoch so that no login checked against the old password adds a session after this.
    /// `Err(item)`: they changed meanwhile (or the user is gone), the item as it is now. A
    /// retry whose first attempt landed finds its own new hash and counts as done.
    pub async fn change_password(
        &self,
        checked: &UserItem,
        new_hash: &str,
        keep: &SessionEntry,
    ) -> Result<Result<(), Option<UserItem>>, Error> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, user_pk(&checked.user_key))
            .key(SK, s(PROFILE))
            .update_expression("SET password_hash = :new, sessions = :sessions ADD cred_epoch :one")
            .condition_expression(format!(
                "(password_hash = :old AND {}) OR password_hash = :new",
                epoch_condition(checked.cred_epoch)
            ))
            .expression_attribute_values(":old", s(&checked.password_hash))
            .expression_attribute_values(":new", s(new_hash))
            .expression_attribute_values(":epoch", n(checked.cred_epoch))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(
                ":sessions",
                AttributeValue::M(HashMap::from([(keep.id.clone(), keep.value())])),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        self.update_or_item(&checked.user_key, update).await
    }
}

/// The books of a deleted account, kept under `DELETED#<id>` with its anonymised chats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub granted: u64,
    /// Credits left unspent when the account was deleted.
    pub balance: u64,
    pub spent: u64,
    /// Milliseconds since the Unix epoch.
    pub deleted_at: u64,
}

const TOMBSTONE: &str = "ACCOUNT";

/// Attributes of a chat item that hold what the user wrote or was told.
const CHAT_TEXT: [&str; 2] = ["message", "response"];

/// Items a deletion reads per page (at most 1 MB comes back, whatever this says).
const RETIRE_PAGE: i32 = 500;

/// How far a pass over a deleted account's items got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// Items retired by this pass.
    pub items: usize,
    /// Nothing was left when it ended (it did not stop at its deadline).
    pub finished: bool,
}

impl Store {
    /// Marks the user item of `account` as being deleted, unless a charge is open: from
    /// then on no debit lands (the debit's condition). Returns the item with the
    /// deletion's id, the one already there if an earlier attempt set it. `Ok(Err(None))`:
    /// no such account (the name may belong to another account by now, which this never
    /// touches); `Ok(Err(Some(item)))`: a charge is open.
    pub async fn mark_deleting(
        &self,
        account: &Account,
        id: &str,
    ) -> Result<Result<(UserItem, String), Option<UserItem>>, Error> {
        let user_key = account.user_key.as_str();
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, account.user_pk())
            .key(SK, s(PROFILE))
            // The epoch bump: a login checked before this adds no session to the account.
            .update_expression("SET deleting = if_not_exists(deleting, :id) ADD cred_epoch :one")
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let (owner, value) = account.still_owns_name();
        let mut update = update.condition_expression(format!(
            "attribute_exists(pk) AND size(pending) = :zero AND {owner}"
        ));
        if let Some(value) = value {
            update = update.expression_attribute_values(":account", value);
        }
        match self.send("UpdateItem", || update.clone().send()).await {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let id = get_s(&item, "deleting")?;
                Ok(Ok((user_item(user_key, &item)?, id)))
            }
            Err(failure) => match failure.service_error("UpdateItem")? {
                UpdateItemError::ConditionalCheckFailedException(e) => Ok(Err(e
                    .item
                    .map(|item| user_item(user_key, &item))
                    .transpose()?
                    .filter(|user| user.account == *account))),
                e => Err(Error::dynamo("UpdateItem")(e)),
            },
        }
    }

    /// Moves the account's chats under `DELETED#<id>` without their text and deletes
    /// every other item it owns but its user item, a page at a time: each page's
    /// anonymised copies land (batched, several batches at once) before its originals
    /// go, and the next page is read meanwhile. Every write is a plain put or delete, so
    /// running it again (after a failure, a pass stopped at `until`, or for records that
    /// landed later) continues where it stopped: what was retired is gone, and a copy
    /// written twice is the same copy.
    ///
    /// Stops before starting another page after `until`, if given (the first is always
    /// retired): [`Retired::finished`] says whether anything may be left.
    pub async fn retire_items(
        &self,
        account: &Account,
        id: &str,
        until: Option<tokio::time::Instant>,
    ) -> Result<Retired, Error> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", account.items_pk())
            .consistent_read(true)
            .limit(RETIRE_PAGE);
        let read = |start: Option<Item>| {
            let page = query.clone().set_exclusive_start_key(start);
            Box::pin(async move {
                self.send("Query", || page.clone().send())
                    .await
                    .map_err(|f| f.into_error("Query"))
            })
        };
        let mut retired = Retired {
            items: 0,
            finished: false,
        };
        let mut page = read(None).await?;
        loop {
            let next = page.last_evaluated_key.take().filter(|k| !k.is_empty());
            let items = page.items.take().unwrap_or_default();
            let (done, following) = tokio::join!(self.retire_page(account, id, items), async {
                match next {
                    Some(start) => read(Some(start)).await.map(Some),
                    None => Ok(None),
                }
            });
            retired.items += done?;
            match following? {
                // Every pass retires a page at least, so that passes always get through.
                Some(_) if until.is_some_and(|until| tokio::time::Instant::now() >= until) => {
                    return Ok(retired);
                }
                Some(following) => page = following,
                None => {
                    retired.finished = true;
                    return Ok(retired);
                }
            }
        }
    }

    /// Retires one page of an account's items: the copies first, then the originals.
    async fn retire_page(
        &self,
        account: &Account,
        id: &str,
        items: Vec<Item>,
    ) -> Result<usize, Error> {
        let (mut copies, mut deletes) = (Vec::new(), Vec::new());
        for mut item in items {
            let sk = get_s(&item, SK)?;
            // An account made before ids keeps its items beside its user item, which
            // goes last (or is already the name's next owner's).
            if sk == PROFILE {
                continue;
            }
            let key = HashMap::from([(PK.to_owned(), account.items_pk()), (SK.to_owned(), s(&sk))]);
            if sk.starts_with("CHAT#") {
                item.insert(PK.to_owned(), deleted_pk(id));
                for attr in CHAT_TEXT {
                    item.remove(attr);
                }
                copies.push(batch::put(item)?);
            }
            deletes.push(batch::delete(key)?);
        }
        let count = deletes.len();
        // A chat's record is never gone before its anonymised copy is there.
        self.write_all(copies).await?;
        self.write_all(deletes).await?;
        Ok(count)
    }

    /// Writes the tombstone of the deleted account `id`: its books as `user` holds them.
    pub async fn write_tombstone(&self, user: &UserItem, id: &str) -> Result<(), Error> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, deleted_pk(id))
            .item(SK, s(TOMBSTONE))
            .item("granted", n(user.granted))
            .item("tokens", n(user.balance))
            .item("spent", n(user.spent))
            .item("deleted_at", n(now_millis()));
        self.send("PutItem", || put.clone().send())
            .await
            .map_err(|f| f.into_error("PutItem"))?;
        Ok(())
    }

    /// Deletes the user item marked for deletion `id`. `Ok(false)`: it is gone already.
    pub async fn delete_user(&self, user_key: &str, id: &str) -> Result<bool, Error> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, user_pk(user_key))
            .key(SK, s(PROFILE))
            .condition_expression("deleting = :id")
            .expression_attribute_values(":id", s(id));
        Ok(self
            .send_conditional("DeleteItem", || delete.clone().send())
            .await?
            .is_some())
    }

    /// The books of a deleted account.
    pub async fn tombstone(&self, id: &str) -> Result<Option<Tombstone>, Error> {
        let get = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, deleted_pk(id))
            .key(SK, s(TOMBSTONE))
            .consistent_read(true);
        let out = self
            .send("GetItem", || get.clone().send())
            .await
            .map_err(|f| f.into_error("GetItem"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        Ok(Some(Tombstone {
            id: id.to_owned(),
            granted: get_n(&item, "granted")?,
            balance: get_n(&item, "tokens")?,
            spent: get_n(&item, "spent")?,
            deleted_at: get_n(&item, "deleted_at")?,
        }))
    }
}
