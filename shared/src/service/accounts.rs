//! Accounts and sessions: register, log in and out, list sessions, change the password,
//! delete the account, and the throttles that keep password guessing and account farming
//! from one client off everyone else. No HTTP here.
//!
//! A token names its user and session (see [`Token`]), so [`Accounts::authenticate`] is
//! one consistent read of the user item, which also brings the balance and the open
//! charges for whoever asked.
//!
//! Login throttling must not tell which usernames exist: the per-username counter is
//! keyed by the name as typed (case-folded), read and counted up the same way whether or
//! not the account exists, and a throttled attempt is refused before any password check,
//! right password or not.

use std::time::Duration;

use super::charges::{Charges, write_window};
use crate::{
    auth::{self, Token},
    config::Config,
    domain::{Password, Username},
    store::{self, DebitGuard, Reservation, SessionEntry, Store, UserItem, now_millis},
};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A signed-in user's password check failed (password change, account deletion): the
    /// token is fine, so this must not read as a token problem.
    #[error("wrong password")]
    WrongPassword,
    #[error("too many attempts")]
    Throttled { retry_after: Duration },
    #[error("username taken")]
    UsernameTaken,
    #[error("chats are still running on this account")]
    ChatsRunning,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Internal(#[from] auth::Error),
}

/// A request's authenticated user, with the user item as read to check the token.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user_key: String,
    pub session_id: String,
    pub user: UserItem,
}

impl Authed {
    fn session(&self) -> Option<&SessionEntry> {
        self.user.session(&self.session_id)
    }
}

/// A session as its owner may see it: never the token nor its digest. Times in seconds
/// since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: u64,
    pub last_used: u64,
    pub expires_at: u64,
    /// The session of the token that asked.
    pub current: bool,
}

/// The account rules over a store and the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Accounts<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
}

/// Whether `session` is still alive at `now` (milliseconds).
pub fn is_live(config: &Config, session: &SessionEntry, now: u64) -> bool {
    session.expires_at > now && session.last_used + config.session_idle.as_millis() as u64 > now
}

impl<'a> Accounts<'a> {
    pub fn new(store: &'a Store, config: &'a Config) -> Self {
        Self { store, config }
    }

    /// The user and session `raw` names, if its secret matches and it is alive: one read.
    pub async fn authenticate(&self, raw: &str) -> Result<Authed, AccountError> {
        let token = Token::parse(raw).ok_or(AccountError::InvalidToken)?;
        let user = self
            .store
            .user(&token.user_key)
            .await?
            .ok_or(AccountError::InvalidToken)?;
        let session = user
            .session(&token.session_id)
            .filter(|s| token.matches(&s.digest))
            .ok_or(AccountError::InvalidToken)?;
        if !is_live(self.config, session, now_millis()) {
            return Err(AccountError::TokenExpired);
        }
        Ok(Authed {
            user_key: token.user_key,
            session_id: token.session_id,
            user,
        })
    }

    /// Creates an account; `client` is the caller's address, throttled per window.
    pub async fn register(
        &self,
        username: &Username,
        password: Password,
        client: Option<&str>,
    ) -> Result<u64, AccountError> {
        let limits = &self.config.limits;
        let window = Window::new(limits.register_ip_window);
        let allowed = async {
            match client {
                None => Ok(true),
                Some(ip) => {
                    let key = format!("register-ip#{ip}#{}", window.start);
                    self.store
                        .take(&key, limits.register_ip_limit, window.expires_at())
                        .await
                }
            }
        };
        // The count and the (slow) hash side by side: the throttle costs no time.
        let (allowed, hash) = tokio::join!(allowed, auth::hash_password(password));
        if !allowed? {
            return Err(AccountError::Throttled {
                retry_after: window.remaining(),
            });
        }
        let tokens = self.config.start_tokens;
        if !self.store.create_user(username, &hash?, tokens).await? {
            return Err(AccountError::UsernameTaken);
        }
        Ok(tokens)
    }

    /// Checks a password and opens a session. Unknown user and wrong password are the
    /// same failure after the same work; throttled attempts are refused before the check.
    pub async fn login(
        &self,
        username: &str,
        password: Password,
        client: Option<&str>,
    ) -> Result<Token, AccountError> {
        let limits = &self.config.limits;
        let now = now_millis();
        let name_key = login_user_key(username);
        let ip_window = Window::new(limits.login_ip_window);
        let ip_key = client.map(|ip| format!("login-ip#{ip}#{}", ip_window.start));
        let user_key = Username::parse(username).ok().map(|u| u.key());
        // The attempt is counted before the password is checked, atomically, so that
        // guesses sent all at once are held to the same limits as guesses in a row.
        let (user, by_name, by_ip) = tokio::join!(
            async {
                match &user_key {
                    Some(key) => self.store.user(key).await,
                    None => Ok(None),
                }
            },
            self.reserve(&name_key, now),
            async {
                match &ip_key {
                    Some(key) => {
                        self.store
                            .take(key, limits.login_ip_failures, ip_window.expires_at())
                            .await
                    }
                    None => Ok(true),
                }
            },
        );
        let (user, by_name, ip_allowed) = (user?, by_name?, by_ip?);
        let attempts = match by_name {
            Ok(attempts) if ip_allowed => attempts,
            refused => {
                // A name held back: the address's count was no failure. (An address held
                // back leaves the name's attempt counted: undoing it would let one reset
                // the other.)
                if ip_allowed && let Some(key) = &ip_key {
                    self.store.give_back(key).await?;
                }
                let retry_after = match refused {
                    Err(wait) => wait,
                    Ok(_) => ip_window.remaining(),
                };
                return Err(AccountError::Throttled { retry_after });
            }
        };

        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !auth::verify_password(hash, password).await? {
            self.failed(&name_key, attempts, now).await?;
            return Err(AccountError::InvalidCredentials);
        }
        let Some(user) = user else {
            return Err(AccountError::InvalidCredentials);
        };
        let token = Token::issue(&user.user_key)?;
        let session = SessionEntry {
            id: token.session_id.clone(),
            digest: token.digest(),
            created_at: now,
            last_used: now,
            expires_at: now + self.config.token_ttl.as_millis() as u64,
        };
        let evict = self.evictions(&user, now);
        // A success ends the run of failures, and was no failure from this address.
        let (added, forgot) = tokio::join!(
            self.store.add_session(&user, &session, &evict),
            self.forget(&name_key, ip_key.as_deref()),
        );
        if let Err(e) = forgot {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not reset the failed-login counter");
        }
        if !added? {
            return Err(AccountError::InvalidCredentials); // deleted meanwhile
        }
        tracing::info!(user = %user.user_key, session = %session.id, evicted = evict.len(), "logged in");
        Ok(token)
    }

    /// Ends the session of the token that asked.
    pub async fn logout(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store
            .end_sessions(&authed.user_key, Some(&[authed.session_id.as_str()]))
            .await?;
        Ok(())
    }

    /// Ends every session of the user, the asking one included.
    pub async fn logout_all(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store.end_sessions(&authed.user_key, None).await?;
        Ok(())
    }

    /// The user's live sessions, oldest first.
    pub fn sessions(&self, authed: &Authed) -> Vec<SessionView> {
        let now = now_millis();
        authed
            .user
            .sessions
            .iter()
            .filter(|s| is_live(self.config, s, now))
            .map(|s| SessionView {
                id: s.id.clone(),
                created_at: s.created_at / 1000,
                last_used: s.last_used / 1000,
                expires_at: s.expires_at / 1000,
                current: s.id == authed.session_id,
            })
            .collect()
    }

    /// Changes the password if `old` is right, and ends every other session.
    pub async fn change_password(
        &self,
        authed: &Authed,
        old: Password,
        new: Password,
    ) -> Result<(), AccountError> {
        let current = authed.session().ok_or(AccountError::InvalidToken)?.clone();
        let stored = authed.user.password_hash.clone();
        self.check_password(authed, old).await?;
        let new_hash = auth::hash_password(new).await?;
        if !self
            .store
            .change_password(&authed.user_key, &stored, &new_hash, &current)
            .await?
        {
            // Changed by another request since this one read it.
            return Err(AccountError::WrongPassword);
        }
        tracing::info!(user = %authed.user_key, "password changed; other sessions ended");
        Ok(())
    }

    /// What a chat's debit checks in its own write: this session still there, alive, and
    /// the user under the in-flight and per-minute limits.
    pub fn debit_guard(&self, authed: &Authed) -> DebitGuard {
        let now = now_millis();
        let window = now / 60_000;
        DebitGuard {
            session_id: authed.session_id.clone(),
            digest: authed
                .session()
                .map(|s| s.digest.clone())
                .unwrap_or_default(),
            now,
            idle_cutoff: now.saturating_sub(self.config.session_idle.as_millis() as u64),
            max_in_flight: self.config.limits.chats_in_flight,
            window,
            max_per_window: self.config.limits.chats_per_minute,
            stale_windows: authed
                .user
                .chat_windows
                .iter()
                .map(|(w, _)| *w)
                .filter(|w| *w != window)
                .collect(),
        }
    }

    /// Deletes the account if `password` is right: its sessions go with the user item,
    /// its conversations lose their text, and its charge records move, anonymised, under
    /// a tombstone that keeps the books (see `audit::audit_deleted`). Refused while a
    /// chat is running; abandoned charges are settled or refunded first.
    ///
    /// The name is free again once the user item is gone. A chat whose charge was closed
    /// just before may still be writing its record (see `charges::write_window`): such
    /// records land under this account's id, where the name's next owner never reads,
    /// and a second pass, once they are over, retires them too, so that neither the
    /// text nor the books are left behind.
    pub async fn delete_account(
        &self,
        authed: &Authed,
        password: Password,
        charge_timeout: Duration,
    ) -> Result<String, AccountError> {
        self.check_password(authed, password).await?;
        let account = &authed.user.account;
        let id = hex::encode(uuid::Uuid::now_v7().as_bytes());
        let charges = Charges::new(self.store, charge_timeout);
        let mut recovered = false;
        let (user, id) = loop {
            match self.store.mark_deleting(account, &id).await? {
                Ok(marked) => break marked,
                Err(None) => return Err(AccountError::InvalidToken),
                Err(Some(user)) if !recovered => {
                    let now = now_millis();
                    let abandoned: Vec<_> = user
                        .open
                        .into_iter()
                        .filter(|c| c.is_abandoned(now, charge_timeout))
                        .collect();
                    if abandoned.is_empty() {
                        return Err(AccountError::ChatsRunning);
                    }
                    charges.recover(&abandoned).await;
                    recovered = true;
                }
                Err(Some(_)) => return Err(AccountError::ChatsRunning),
            }
        };
        self.store.retire_items(account, &id).await?;
        self.store.write_tombstone(&user, &id).await?;
        self.store.delete_user(&authed.user_key, &id).await?;
        tracing::info!(user = %authed.user_key, tombstone = %id, "account deleted");
        let wait = user.settling_until.saturating_sub(now_millis());
        if wait > 0 {
            let window = write_window(&self.config.store_retry);
            tokio::time::sleep(Duration::from_millis(wait).min(window)).await;
            // The account is gone whatever this finds; a failure only leaves records
            // under an id that nobody reads.
            match self.store.retire_items(account, &id).await {
                Ok(0) => {}
                Ok(late) => {
                    tracing::warn!(user = %authed.user_key, tombstone = %id, late, "retired records that landed after the deletion")
                }
                Err(e) => {
                    tracing::error!(user = %authed.user_key, tombstone = %id, error = %crate::telemetry::Chain(&e), "second pass of a deletion failed")
                }
            }
        }
        Ok(id)
    }

    /// Checks the password of a signed-in user (password change, account deletion) under
    /// the same per-name back-off as login: a stolen token must not become a way to guess
    /// the password without limit.
    async fn check_password(
        &self,
        authed: &Authed,
        password: Password,
    ) -> Result<(), AccountError> {
        let key = login_user_key(&authed.user.username);
        let now = now_millis();
        let attempts = match self.reserve(&key, now).await? {
            Ok(attempts) => attempts,
            Err(retry_after) => return Err(AccountError::Throttled { retry_after }),
        };
        let stored = Some(authed.user.password_hash.clone());
        if !auth::verify_password(stored, password).await? {
            self.failed(&key, attempts, now).await?;
            return Err(AccountError::WrongPassword);
        }
        if let Err(e) = self.forget(&key, None).await {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not reset the failed-login counter");
        }
        Ok(())
    }

    /// Counts an attempt on the name's run of failures: `Ok(attempt number)`, or
    /// `Err(wait)` while the run is held back.
    async fn reserve(
        &self,
        name_key: &str,
        now: u64,
    ) -> Result<Result<u64, Duration>, AccountError> {
        let limits = &self.config.limits;
        let hold = now + limits.login_backoff.as_millis() as u64;
        let expires_at = now / 1000 + FAILURES_KEPT.as_secs();
        Ok(
            match self
                .store
                .reserve(name_key, limits.login_free_failures, hold, expires_at)
                .await?
            {
                Reservation::Granted { attempts } => Ok(attempts),
                Reservation::Refused { until } => {
                    Err(Duration::from_millis(until.saturating_sub(now).max(1)))
                }
            },
        )
    }

    /// A failed attempt: past the free ones, the run is held back, doubling each time.
    async fn failed(&self, name_key: &str, attempts: u64, now: u64) -> Result<(), AccountError> {
        let limits = &self.config.limits;
        let Some(over) = attempts.checked_sub(limits.login_free_failures) else {
            return Ok(());
        };
        let wait = limits
            .login_backoff
            .saturating_mul(1u32.checked_shl(over.min(31) as u32).unwrap_or(u32::MAX))
            .min(limits.login_backoff_max);
        self.store
            .hold_until(name_key, now + wait.as_millis() as u64)
            .await?;
        Ok(())
    }

    /// A success: the run of failures ends, and the address gets its count back.
    async fn forget(&self, name_key: &str, ip_key: Option<&str>) -> Result<(), store::Error> {
        let ip = async {
            match ip_key {
                Some(key) => self.store.give_back(key).await,
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(self.store.reset(name_key), ip);
        a.and(b)
    }

    /// Sessions a new login ends: the dead ones, then the oldest beyond the cap.
    fn evictions<'u>(&self, user: &'u UserItem, now: u64) -> Vec<&'u str> {
        let (dead, mut live): (Vec<_>, Vec<_>) = user
            .sessions
            .iter()
            .partition(|s| !is_live(self.config, s, now));
        let mut evict: Vec<&str> = dead.iter().map(|s| s.id.as_str()).collect();
        live.sort_by_key(|s| s.created_at);
        let over = (live.len() + 1).saturating_sub(self.config.max_sessions);
        evict.extend(live.iter().take(over).map(|s| s.id.as_str()));
        evict
    }
}

/// The failed-login counter of a name: keyed by the name as typed (case-folded), whether
/// or not an account has it.
fn login_user_key(username: &str) -> String {
    let name: String = username.chars().take(Username::MAX_LEN).collect();
    format!("login-user#{}", name.to_ascii_lowercase())
}

/// How long a run of failed logins is remembered after its last failure.
const FAILURES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A fixed window of the clock, for per-window counters.
struct Window {
    /// Seconds since the Unix epoch.
    start: u64,
    length: u64,
}

impl Window {
    fn new(length: Duration) -> Self {
        let length = length.as_secs().max(1);
        let now = now_millis() / 1000;
        Self {
            start: now - now % length,
            length,
        }
    }

    fn remaining(&self) -> Duration {
        let now = now_millis() / 1000;
        Duration::from_secs((self.start + self.length).saturating_sub(now).max(1))
    }

    /// When the window's counter may go: a little after the window.
    fn expires_at(&self) -> u64 {
        self.start + self.length + 60
    }
}
