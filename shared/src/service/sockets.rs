//! WebSocket connections as the service sees them: tickets, who a connection belongs
//! to, a cancel that reaches the process running a chat, and the push of a new balance
//! to every screen of its user. No API Gateway event shapes here (`api::ws` reads them).
//!
//! - **Ticket** ([`Sockets::issue_ticket`]): a signed-in session gets a single-use
//!   secret that lives at most a minute, bound to that session.
//! - **Connect** ([`Sockets::connect`]): the ticket taken (deleted) at once, its expiry
//!   and its session checked, the connection added to the user item under a bound on
//!   their number. Two round trips in sequence: take the ticket, then read the user
//!   (session, stale connections) alongside nothing; then the conditional add.
//! - **Each message** ([`Sockets::caller`]): the connection's owner, then its session as
//!   a token's is checked; a logged-out session's connections stop working here.
//! - **Cancel** ([`Sockets::cancel`]): a flag on the running chat's idempotency record,
//!   which the chat polls ([`Sockets::cancelled`]): a cancel may land on another process
//!   than the one running the chat.
//! - **Push** ([`Push::balance`]): after a charge or refund, every open connection of the
//!   user gets `{"type": "balance", "tokens"}`. Whom to tell comes from the user item
//!   that authenticated the chat, so a user with no connection costs nothing.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::accounts::{AccountError, Accounts, Authed};
use crate::{
    auth::{self, Ticket},
    config::{Config, SocketConfig},
    connections::{ConnectionId, Connections, Posted},
    store::{self, Account, Store, now_millis},
    telemetry::Chain,
};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// No such ticket, or it was used already.
    #[error("no such ticket")]
    BadTicket,
    #[error("the ticket has expired")]
    TicketExpired,
    /// The session that made the ticket or the connection has ended.
    #[error("the session has ended")]
    SessionEnded { expired: bool },
    #[error("too many connections")]
    TooManyConnections,
    /// The connection is not (or no longer) one this service knows.
    #[error("unknown connection")]
    UnknownConnection,
    #[error("no WebSocket API is configured")]
    Disabled,
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Internal(#[from] auth::Error),
}

impl From<AccountError> for SocketError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::TokenExpired => Self::SessionEnded { expired: true },
            AccountError::Store(e) => Self::Store(e),
            AccountError::Internal(e) => Self::Internal(e),
            _ => Self::SessionEnded { expired: false },
        }
    }
}

/// A ticket as its client gets it.
#[derive(Debug)]
pub struct IssuedTicket {
    pub ticket: Ticket,
    pub expires_in: Duration,
    pub url: String,
}

/// The WebSocket rules over a store, the configuration and the `@connections` client.
#[derive(Debug, Clone, Copy)]
pub struct Sockets<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub settings: &'a SocketConfig,
    pub connections: &'a Connections,
}

impl<'a> Sockets<'a> {
    fn accounts(&self) -> Accounts<'a> {
        Accounts::new(self.store, self.config)
    }

    pub fn push(&self) -> Push<'a> {
        Push {
            store: self.store,
            connections: self.connections,
        }
    }

    /// A ticket for `authed`'s session: one write.
    pub async fn issue_ticket(&self, authed: &Authed) -> Result<IssuedTicket, SocketError> {
        let url = self
            .config
            .websocket_url
            .clone()
            .ok_or(SocketError::Disabled)?;
        let owner = authed
            .socket_owner()
            .ok_or(SocketError::SessionEnded { expired: false })?;
        let ticket = Ticket::issue()?;
        let ttl = self.settings.ticket_ttl;
        let valid_until = now_millis() + ttl.as_millis() as u64;
        self.store
            .put_ticket(&ticket.digest(), &owner, valid_until)
            .await?;
        Ok(IssuedTicket {
            ticket,
            expires_in: ttl,
            url,
        })
    }

    /// Opens connection `id` with the ticket `raw`, which is used up whatever happens.
    pub async fn connect(&self, raw: &str, id: &ConnectionId) -> Result<Authed, SocketError> {
        let ticket = Ticket::parse(raw).ok_or(SocketError::BadTicket)?;
        let taken = self
            .store
            .take_ticket(&ticket.digest())
            .await?
            .ok_or(SocketError::BadTicket)?;
        let now = now_millis();
        if taken.valid_until <= now {
            return Err(SocketError::TicketExpired);
        }
        let authed = self.accounts().session_of(&taken.owner).await?;
        // Connections whose time is up, or beyond what the user may hold (the oldest
        // first, by their end): their `$disconnect` never came.
        let user = &authed.user;
        let stale: Vec<&str> = user
            .sockets
            .iter()
            .filter(|(_, until)| *until <= now)
            .map(|(id, _)| id.as_str())
            .collect();
        let until = now + SocketConfig::CONNECTION_LIFE.as_millis() as u64;
        let idle_cutoff = now.saturating_sub(self.config.session_idle.as_millis() as u64);
        let opened = self
            .store
            .open_socket(
                &taken.owner,
                id.as_str(),
                until,
                user.has_sockets_map,
                &stale,
                self.settings.max_per_user,
                now,
                idle_cutoff,
            )
            .await?;
        if !opened {
            let live = user.sockets.len() - stale.len();
            return Err(if live >= self.settings.max_per_user {
                SocketError::TooManyConnections
            } else {
                // The session ended between the read and the write.
                SocketError::SessionEnded { expired: false }
            });
        }
        tracing::info!(user = %user.user_key, connection = %id, "websocket connected");
        Ok(authed)
    }

    /// Forgets connection `id` (`$disconnect`; best effort, as API Gateway's is).
    pub async fn disconnect(&self, id: &ConnectionId) {
        let closed = async {
            if let Some(owner) = self.store.socket(id.as_str()).await? {
                self.store.close_socket(&owner.account, id.as_str()).await?;
            }
            Ok::<_, store::Error>(())
        };
        if let Err(e) = closed.await {
            tracing::warn!(connection = %id, error = %Chain(&e), "disconnect not recorded; the connection's TTL ends it");
        }
    }

    /// Who sent a message on connection `id`, with their session checked as a token's
    /// is: two reads in sequence (the connection's item names the user item).
    pub async fn caller(&self, id: &ConnectionId) -> Result<Authed, SocketError> {
        let owner = self
            .store
            .socket(id.as_str())
            .await?
            .ok_or(SocketError::UnknownConnection)?;
        Ok(self.accounts().session_of(&owner).await?)
    }

    /// Closes connection `id` from the server's side (its session ended) and forgets it.
    pub async fn hang_up(&self, id: &ConnectionId) {
        let (closed, ()) = tokio::join!(self.connections.close(id), self.disconnect(id));
        if let Err(e) = closed {
            tracing::warn!(connection = %id, error = %Chain(&e), "could not close a connection");
        }
    }

    /// Asks the chat running under `key` for `account` to stop. `false`: none is running.
    pub async fn cancel(&self, account: &Account, key: &str) -> Result<bool, SocketError> {
        Ok(self.store.request_cancel(account, key).await?)
    }

    /// Completes when the chat under `key` is asked to stop: a consistent read of its
    /// idempotency record every [`SocketConfig::cancel_poll`]. A read that fails is
    /// tried again at the next tick.
    pub async fn cancelled(&self, account: &Account, key: &str) {
        let mut tick = tokio::time::interval(self.settings.cancel_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.store.cancel_requested(account, key).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %Chain(&e), "could not look for a cancel"),
            }
        }
    }
}

/// Tells a user's open connections their new balance.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    store: &'a Store,
    connections: &'a Connections,
}

/// Whom a turn tells of its balance: the account's open connections, as the user item
/// that authenticated the request listed them.
#[derive(Debug, Clone, Default)]
pub struct Watchers {
    account: Option<Account>,
    sockets: Vec<ConnectionId>,
}

impl Watchers {
    /// The live connections in a user item's `sockets`.
    pub fn of(account: &Account, sockets: &[(String, u64)]) -> Self {
        let now = now_millis();
        Self {
            account: Some(account.clone()),
            sockets: sockets
                .iter()
                .filter(|(_, until)| *until > now)
                .filter_map(|(id, _)| ConnectionId::parse(id))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// The frame a balance push sends.
pub fn balance_frame(tokens: u64) -> Bytes {
    Bytes::from(json!({ "type": "balance", "tokens": tokens }).to_string())
}

impl<'a> Push<'a> {
    pub fn new(store: &'a Store, connections: &'a Connections) -> Self {
        Self { store, connections }
    }

    /// Posts `tokens` to every connection in `watchers`, side by side; a connection
    /// found gone is forgotten. No I/O at all when there are none.
    pub async fn balance(&self, watchers: &Watchers, tokens: u64) {
        let Some(account) = &watchers.account else {
            return;
        };
        if watchers.is_empty() || !self.connections.enabled() {
            return;
        }
        let frame = balance_frame(tokens);
        futures_util::future::join_all(watchers.sockets.iter().map(|id| {
            let frame = frame.clone();
            async move {
                match self.connections.post(id, frame).await {
                    Ok(Posted::Sent) => {}
                    Ok(Posted::Gone) => {
                        if let Err(e) = self.store.close_socket(account, id.as_str()).await {
                            tracing::warn!(connection = %id, error = %Chain(&e), "could not forget a gone connection");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(connection = %id, error = %Chain(&e), "balance push failed")
                    }
                }
            }
        }))
        .await;
    }
}
