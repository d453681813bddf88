//! Accounts and sessions: register, log in and out, list sessions, change the password,
//! delete the account, and the throttles that keep password guessing and account farming
//! from one client off everyone else. No HTTP here.
//!
//! A token names its user and session (see [`Token`]), so [`Accounts::authenticate`] is
//! one consistent read of the user item, which also brings the balance and the open
//! charges for whoever asked.
//!
//! Login throttling must not tell which usernames exist, nor let anyone lock the owner
//! out. Its counters are keyed by the name as typed (case-folded), read and counted the
//! same way whether or not the account exists, and a throttled attempt is refused before
//! any password check, right password or not:
//! - a run of failures per (name, client network) backs off exponentially: a guesser
//!   holds back only their own network;
//! - a far higher ceiling per name over a long window bounds guessing from many
//!   networks; past it, only networks the account has logged in from (remembered on the
//!   user item, so unknown names have none) may try the name;
//! - failures per client address across names bound one client's spraying.
//!
//! A signed-in user's password checks (password change, account deletion) are counted
//! per session, in the session's own entry: a stolen token can't guess without limit,
//! and no stranger's failures at the login stand in the owner's way.

use std::time::Duration;

use super::charges::{Charges, write_window};
use crate::{
    auth::{self, Token},
    config::Config,
    domain::{ClientAddr, Network, Password, Username},
    store::{
        self, DebitGuard, NewSession, PasswordChecks, Reservation, SessionEntry, SocketOwner,
        Store, UserItem, now_millis,
    },
    telemetry::metrics::{self, Metric},
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
    Throttled { limit: Limit, retry_after: Duration },
    #[error("username taken")]
    UsernameTaken,
    #[error("chats are still running on this account")]
    ChatsRunning,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Internal(#[from] auth::Error),
}

/// Which throttle refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Failed logins: per (name, network), per name, or per address. One answer for all
    /// three, so a refusal never tells which (nor whether the name exists).
    FailedLogins,
    /// Wrong passwords given through one session (password change, account deletion).
    WrongPasswords,
    /// Registrations from one address.
    Registrations,
    /// Registrations from everyone this hour.
    RegistrationBudget,
}

impl AccountError {
    /// A refusal by `limit`. The wait is rounded up to whole minutes: a client needs no
    /// more, and an exact figure would tell when someone else's attempt landed.
    fn throttled(limit: Limit, wait: Duration) -> Self {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        Self::Throttled {
            limit,
            retry_after: Duration::from_secs(minutes * 60),
        }
    }
}

/// How an account deletion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The account is gone; its books are kept under this tombstone id.
    Done(String),
    /// The account is closed and `retired` more of its items are gone, but the time ran
    /// out before the last: the same request again continues.
    Unfinished { retired: usize },
}

/// A request's authenticated user, with the user item as read to check the token.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user_key: String,
    pub session_id: String,
    pub user: UserItem,
}

impl Authed {
    /// Who a ticket made now by this session belongs to.
    pub fn socket_owner(&self) -> Option<SocketOwner> {
        Some(SocketOwner {
            account: self.user.account.clone(),
            session_id: self.session_id.clone(),
            digest: self.session()?.digest.clone(),
        })
    }

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
        let user = self.store.user(&token.user_key).await?;
        self.live_session(
            user,
            token.user_key.clone(),
            token.session_id.clone(),
            |digest| token.matches(digest),
        )
    }

    /// The session a WebSocket ticket or connection was made by, if it is still alive
    /// and still the account's: one read, the same checks as a token's.
    pub async fn session_of(&self, owner: &SocketOwner) -> Result<Authed, AccountError> {
        let account = &owner.account;
        let user = self
            .store
            .user(&account.user_key)
            .await?
            .filter(|user| user.account == *account);
        self.live_session(
            user,
            account.user_key.clone(),
            owner.session_id.clone(),
            |digest| digest == owner.digest,
        )
    }

    fn live_session(
        &self,
        user: Option<UserItem>,
        user_key: String,
        session_id: String,
        proves: impl Fn(&str) -> bool,
    ) -> Result<Authed, AccountError> {
        let user = user.ok_or(AccountError::InvalidToken)?;
        let session = user
            .session(&session_id)
            .filter(|s| proves(&s.digest))
            .ok_or(AccountError::InvalidToken)?;
        if !is_live(self.config, session, now_millis()) {
            return Err(AccountError::TokenExpired);
        }
        Ok(Authed {
            user_key,
            session_id,
            user,
        })
    }

    /// Creates an account; `client` is the caller's address, throttled per window, and
    /// every address together is held to the hour's budget of new accounts. Both counters
    /// are taken before the password is hashed, so a refused registration costs no
    /// argon2.
    pub async fn register(
        &self,
        username: &Username,
        password: Password,
        client: Option<&ClientAddr>,
    ) -> Result<u64, AccountError> {
        let result = self.create(username, password, client).await;
        match &result {
            Ok(_) => metrics::count(Metric::Registrations, 1),
            Err(AccountError::Throttled { .. }) => {
                metrics::count(Metric::RegistrationsThrottled, 1)
            }
            Err(_) => {}
        }
        result
    }

    async fn create(
        &self,
        username: &Username,
        password: Password,
        client: Option<&ClientAddr>,
    ) -> Result<u64, AccountError> {
        let limits = &self.config.limits;
        let ip_window = Window::new(limits.register_ip_window);
        let ip_key = client.map(|c| format!("register-ip#{}#{}", c.subject(), ip_window.start));
        let hour = Window::new(Duration::from_secs(3600));
        let budget_key = format!("register-all#{}", hour.start);
        let (by_ip, by_budget) = tokio::join!(
            self.take(ip_key.as_deref(), limits.register_ip_limit, &ip_window),
            self.take(Some(&budget_key), limits.registrations_per_hour, &hour),
        );
        let (ip_taken, budget_taken) = (by_ip?, by_budget?);
        if !(ip_taken && budget_taken) {
            // Refused by one, it was nothing to the other.
            self.give_back(&[
                (ip_taken, ip_key.as_deref()),
                (budget_taken, Some(&budget_key)),
            ])
            .await;
            return Err(match ip_taken {
                false => AccountError::throttled(Limit::Registrations, ip_window.remaining()),
                true => AccountError::throttled(Limit::RegistrationBudget, hour.remaining()),
            });
        }
        let hash = auth::hash_password(password).await?;
        let tokens = self.config.start_tokens;
        if !self.store.create_user(username, &hash, tokens).await? {
            // No account was made: the budget counts accounts (the address, attempts).
            self.give_back(&[(true, Some(&budget_key))]).await;
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
        client: Option<&ClientAddr>,
    ) -> Result<Token, AccountError> {
        let result = self.open_session(username, password, client).await;
        match &result {
            Ok(_) => metrics::count(Metric::LoginsSucceeded, 1),
            Err(AccountError::InvalidCredentials) => metrics::count(Metric::LoginsFailed, 1),
            Err(AccountError::Throttled { .. }) => metrics::count(Metric::LoginsThrottled, 1),
            Err(_) => {}
        }
        result
    }

    async fn open_session(
        &self,
        username: &str,
        password: Password,
        client: Option<&ClientAddr>,
    ) -> Result<Token, AccountError> {
        let limits = &self.config.limits;
        let now = now_millis();
        let name = typed_name(username);
        let network = client.map(ClientAddr::network);
        let run_key = format!(
            "login-net#{name}#{}",
            network.as_ref().map_or("unknown", Network::as_str)
        );
        let name_window = Window::new(limits.login_name_window);
        let name_key = format!("login-name#{name}#{}", name_window.start);
        let ip_window = Window::new(limits.login_ip_window);
        let ip_key = client.map(|c| format!("login-ip#{}#{}", c.subject(), ip_window.start));
        let user_key = Username::parse(username).ok().map(|u| u.key());
        // The attempt is counted before the password is checked, atomically, so that
        // guesses sent all at once are held to the same limits as guesses in a row.
        let (user, run, by_name, by_ip) = tokio::join!(
            async {
                match &user_key {
                    Some(key) => self.store.user(key).await,
                    None => Ok(None),
                }
            },
            self.reserve(&run_key, now),
            self.take(Some(&name_key), limits.login_name_failures, &name_window),
            self.take(ip_key.as_deref(), limits.login_ip_failures, &ip_window),
        );
        let (user, run, name_taken, ip_taken) = (user?, run?, by_name?, by_ip?);
        // Past the name's ceiling, networks the account has logged in from still may. An
        // unknown name has none, so this tells a stranger nothing.
        let known = match (&user, &network) {
            (Some(user), Some(network)) => user.knows(network),
            _ => false,
        };
        let refused = match run {
            Err(wait) => Some(wait),
            Ok(_) if !ip_taken => Some(ip_window.remaining()),
            Ok(_) if !name_taken && !known => Some(name_window.remaining()),
            Ok(_) => None,
        };
        let taken = [
            (name_taken, Some(name_key.as_str())),
            (ip_taken, ip_key.as_deref()),
        ];
        let attempts = match (run, refused) {
            (Ok(attempts), None) => attempts,
            (run, wait) => {
                // Not checked, so no failure for any counter that took one: refusals
                // never move a run or a window on (an owner refused on a new network
                // while the name is under attack keeps a clean run there).
                let run_taken = (run.is_ok(), Some(run_key.as_str()));
                self.give_back(&[taken[0], taken[1], run_taken]).await;
                let wait = wait.unwrap_or(limits.login_backoff);
                return Err(AccountError::throttled(Limit::FailedLogins, wait));
            }
        };

        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if !auth::verify_password(hash, password).await? {
            self.failed(&run_key, attempts, now).await?;
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
            checks: PasswordChecks::default(),
        };
        let evict = self.evictions(&user, now);
        let forget = forgotten_networks(&user, network.as_ref());
        let new = NewSession {
            session: &session,
            evict: &evict,
            network: network.as_ref(),
            forget: &forget,
            now,
        };
        // A success ends the network's run of failures, and was no failure for the name
        // or the address.
        let (added, ()) = tokio::join!(
            self.store.add_session(&user, &new),
            self.forget(&run_key, &taken),
        );
        if !added? {
            // The password, "log out everywhere" or the account changed since the read:
            // what was checked no longer holds.
            return Err(AccountError::InvalidCredentials);
        }
        tracing::info!(user = %user.user_key, session = %session.id, evicted = evict.len(), "logged in");
        Ok(token)
    }

    /// Ends the session of the token that asked.
    pub async fn logout(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store
            .end_sessions(&authed.user.account, Some(&[authed.session_id.as_str()]))
            .await?;
        Ok(())
    }

    /// Ends every session of the user, the asking one included.
    pub async fn logout_all(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store.end_sessions(&authed.user.account, None).await?;
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
        self.check_password(authed, old).await?;
        let new_hash = auth::hash_password(new).await?;
        // The session stays, its checks forgotten: the password was right.
        let keep = SessionEntry {
            checks: PasswordChecks::default(),
            ..current
        };
        if let Err(now) = self
            .store
            .change_password(&authed.user, &new_hash, &keep)
            .await?
        {
            let alive = now.is_some_and(|user| user.session(&authed.session_id).is_some());
            return Err(match alive {
                // Changed by another request since this one read it.
                true => AccountError::WrongPassword,
                // Ended meanwhile ("log out everywhere", account deletion).
                false => AccountError::InvalidToken,
            });
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
    ///
    /// A long history may not fit in one invocation: the items are retired in batches
    /// until the function's time, less what the end of a deletion needs, runs out; then
    /// the account stays closed (no chat, no new session) and the same request again
    /// continues where this one stopped ([`Deletion::Unfinished`]).
    pub async fn delete_account(
        &self,
        authed: &Authed,
        password: Password,
        charge_timeout: Duration,
    ) -> Result<Deletion, AccountError> {
        let started = tokio::time::Instant::now();
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
                        return Err(self.still_running(authed).await);
                    }
                    charges.recover(&abandoned).await;
                    recovered = true;
                }
                Err(Some(_)) => return Err(self.still_running(authed).await),
            }
        };
        // What comes after the first pass: the tombstone and the user item (a store step
        // each), the wait for late records, and their pass.
        let window = write_window(&self.config.store_retry);
        let wait =
            Duration::from_millis(user.settling_until.saturating_sub(now_millis())).min(window);
        let after = wait + self.config.store_retry.budget * 4;
        let until = started + self.config.function_timeout.saturating_sub(after);
        // Boxed: a pass holds several SDK calls' futures at once.
        let first = Box::pin(self.store.retire_items(account, &id, Some(until))).await?;
        if !first.finished {
            tracing::info!(user = %authed.user_key, tombstone = %id, retired = first.items, "account deletion to be continued");
            // The password was right: a client sending the request again as told must
            // not run into the wrong-password back-off.
            if let Err(e) = self
                .store
                .clear_password_checks(&authed.user_key, &authed.session_id)
                .await
            {
                tracing::warn!(error = %crate::telemetry::Chain(&e), "could not reset the password checks");
            }
            return Ok(Deletion::Unfinished {
                retired: first.items,
            });
        }
        self.store.write_tombstone(&user, &id).await?;
        self.store.delete_user(&authed.user_key, &id).await?;
        tracing::info!(user = %authed.user_key, tombstone = %id, retired = first.items, "account deleted");
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            // The account is gone whatever this finds; a failure only leaves records
            // under an id that nobody reads.
            match Box::pin(self.store.retire_items(account, &id, None)).await {
                Ok(late) if late.items == 0 => {}
                Ok(late) => {
                    let late = late.items;
                    tracing::warn!(user = %authed.user_key, tombstone = %id, late, "retired records that landed after the deletion")
                }
                Err(e) => {
                    tracing::error!(user = %authed.user_key, tombstone = %id, error = %crate::telemetry::Chain(&e), "second pass of a deletion failed")
                }
            }
        }
        Ok(Deletion::Done(id))
    }

    /// The refusal of an account deletion while chats run. The password was right, so
    /// the session's checks are forgotten: a client retrying as told must not run into
    /// the wrong-password back-off.
    async fn still_running(&self, authed: &Authed) -> AccountError {
        if let Err(e) = self
            .store
            .clear_password_checks(&authed.user_key, &authed.session_id)
            .await
        {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not reset the password checks");
        }
        AccountError::ChatsRunning
    }

    /// Checks the password of a signed-in user (password change, account deletion),
    /// throttled per session like a login from one network: a stolen token must not
    /// become a way to guess the password without limit. The check is counted in the
    /// session's entry before the password is checked, on the condition that the count is
    /// still the one read, so checks sent at once are counted one by one; the back-off a
    /// failure calls for is written with it. The caller's write on success (the new
    /// password, the deletion) forgets the count.
    async fn check_password(
        &self,
        authed: &Authed,
        password: Password,
    ) -> Result<(), AccountError> {
        let now = now_millis();
        let mut seen = authed.session().ok_or(AccountError::InvalidToken)?.checks;
        // Each lost race means another check was counted; after `free` of them the
        // back-off refuses, so this many rounds always settle.
        for _ in 0..self.config.limits.login_free_failures + 2 {
            if let Some(wait) = seen.held_until.checked_sub(now).filter(|w| *w > 0)
                && seen.count >= self.config.limits.login_free_failures
            {
                metrics::count(Metric::LoginsThrottled, 1);
                let wait = Duration::from_millis(wait);
                return Err(AccountError::throttled(Limit::WrongPasswords, wait));
            }
            let count = seen.count + 1;
            let next = PasswordChecks {
                count,
                held_until: self.backoff(count).map_or(0, |wait| now + as_millis(wait)),
            };
            match self
                .store
                .count_password_check(&authed.user_key, &authed.session_id, seen, next)
                .await?
            {
                Ok(()) => {
                    let stored = Some(authed.user.password_hash.clone());
                    return match auth::verify_password(stored, password).await? {
                        true => Ok(()),
                        false => Err(AccountError::WrongPassword),
                    };
                }
                Err(now) => match now.as_ref().and_then(|u| u.session(&authed.session_id)) {
                    Some(session) => seen = session.checks,
                    None => return Err(AccountError::InvalidToken),
                },
            }
        }
        metrics::count(Metric::LoginsThrottled, 1);
        Err(AccountError::throttled(
            Limit::WrongPasswords,
            self.config.limits.login_backoff,
        ))
    }

    /// Counts an attempt on a (name, network) run of failures: `Ok(attempt number)`, or
    /// `Err(wait)` while the run is held back.
    async fn reserve(
        &self,
        run_key: &str,
        now: u64,
    ) -> Result<Result<u64, Duration>, AccountError> {
        let limits = &self.config.limits;
        let hold = now + as_millis(limits.login_backoff);
        let expires_at = now / 1000 + FAILURES_KEPT.as_secs();
        Ok(
            match self
                .store
                .reserve(run_key, limits.login_free_failures, hold, expires_at)
                .await?
            {
                Reservation::Granted { attempts } => Ok(attempts),
                Reservation::Refused { until } => {
                    Err(Duration::from_millis(until.saturating_sub(now).max(1)))
                }
            },
        )
    }

    /// The wait after failed attempt number `attempts` of a run: none for the free ones,
    /// then the first back-off, doubling with each further failure, capped.
    fn backoff(&self, attempts: u64) -> Option<Duration> {
        let limits = &self.config.limits;
        let over = attempts.checked_sub(limits.login_free_failures)?;
        let factor = 1u32.checked_shl(over.min(31) as u32).unwrap_or(u32::MAX);
        Some(
            limits
                .login_backoff
                .saturating_mul(factor)
                .min(limits.login_backoff_max),
        )
    }

    /// A failed attempt: past the free ones, the run is held back, doubling each time.
    async fn failed(&self, run_key: &str, attempts: u64, now: u64) -> Result<(), AccountError> {
        let Some(wait) = self.backoff(attempts) else {
            return Ok(());
        };
        self.store
            .hold_until(run_key, now + as_millis(wait))
            .await?;
        Ok(())
    }

    /// Takes one from the window counter `key` (none: nothing to count, say yes).
    async fn take(
        &self,
        key: Option<&str>,
        max: u64,
        window: &Window,
    ) -> Result<bool, store::Error> {
        match key {
            Some(key) => self.store.take(key, max, window.expires_at()).await,
            None => Ok(true),
        }
    }

    /// Gives back the counts `taken` says were taken (at most three): attempts that turned
    /// out to be no failure. Best effort: a count not given back errs towards strictness.
    async fn give_back(&self, taken: &[(bool, Option<&str>)]) {
        let keys: Vec<&str> = taken
            .iter()
            .filter_map(|(was, key)| key.filter(|_| *was))
            .collect();
        debug_assert!(keys.len() <= 3, "{keys:?}");
        // Boxed: three SDK calls side by side would make every caller's future (and
        // a debug build's stack) much larger.
        let give = |i: usize| {
            let key = keys.get(i).copied();
            Box::pin(async move {
                match key {
                    Some(key) => self.store.give_back(key).await,
                    None => Ok(()),
                }
            })
        };
        let (a, b, c) = tokio::join!(give(0), give(1), give(2));
        if let Err(e) = a.and(b).and(c) {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not give a throttle count back");
        }
    }

    /// A success: the network's run of failures ends, and the window counters get their
    /// counts back.
    async fn forget(&self, run_key: &str, taken: &[(bool, Option<&str>)]) {
        let (reset, ()) = tokio::join!(self.store.reset(run_key), self.give_back(taken));
        if let Err(e) = reset {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not reset the failed-login counter");
        }
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

/// A name as typed (case-folded, cut at the longest name), as the failed-login counters
/// are keyed: whether or not an account has it.
fn typed_name(username: &str) -> String {
    let name: String = username.chars().take(Username::MAX_LEN).collect();
    name.to_ascii_lowercase()
}

/// How many networks an account remembers it logged in from (the most recent).
const KNOWN_NETWORKS: usize = 10;

/// The known networks a login from `network` makes the account forget: the oldest,
/// beyond [`KNOWN_NETWORKS`].
fn forgotten_networks<'u>(user: &'u UserItem, network: Option<&Network>) -> Vec<&'u Network> {
    let Some(network) = network else {
        return Vec::new();
    };
    let others: Vec<&Network> = user
        .networks
        .iter()
        .map(|(known, _)| known)
        .filter(|known| *known != network)
        .collect();
    let over = (others.len() + 1).saturating_sub(KNOWN_NETWORKS);
    others.into_iter().take(over).collect()
}

fn as_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
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
