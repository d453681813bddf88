//! Demo accounts for local runs and for replaying `events/`: the sample events carry
//! these tokens, so they work against a table seeded here. Local tables only — nothing
//! deployed ever holds them.

use std::time::Duration;

use shared::{
    auth::{self, Token},
    domain::{Password, Username},
    store::{NewSession, SessionEntry, Store, now_millis},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";
/// The token in `events/chat.json` and `events/tokens.json`: user `demo` (hex
/// `64656d6f`), a fixed session id and secret.
pub const DEMO_TOKEN: &str =
    "64656d6f.d0d0d0d0d0d0d0d0.dededededededededededededededededededededededededededededededede";
/// A user with less than one chat's worth of credits (`events/chat-not-enough-credits.json`).
pub const BROKE_USER: &str = "broke";
pub const BROKE_TOKEN: &str =
    "62726f6b65.b0b0b0b0b0b0b0b0.b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
pub const BROKE_TOKENS: u64 = 50;

/// Creates the demo users and their sessions unless they exist. Safe to run again.
pub async fn seed(store: &Store, start_tokens: u64) -> Result<(), BoxError> {
    user_with_token(store, DEMO_USER, start_tokens, DEMO_TOKEN).await?;
    user_with_token(store, BROKE_USER, BROKE_TOKENS, BROKE_TOKEN).await
}

/// Creates `name` (password [`DEMO_PASSWORD`], `tokens` credits) with a fresh session,
/// and returns its token.
pub async fn user_with_new_token(
    store: &Store,
    name: &str,
    tokens: u64,
) -> Result<String, BoxError> {
    let token = Token::issue(&Username::parse(name)?.key())?.expose();
    user_with_token(store, name, tokens, &token).await?;
    Ok(token)
}

/// Creates `name` (password [`DEMO_PASSWORD`], `tokens` credits) if missing, and the
/// session of `token` (which must name this user), valid for a year, if missing.
pub async fn user_with_token(
    store: &Store,
    name: &str,
    tokens: u64,
    token: &str,
) -> Result<(), BoxError> {
    let username = Username::parse(name)?;
    let token = Token::parse(token).ok_or("not a token")?;
    if token.user_key != username.key() {
        return Err(format!("the token is not {name}'s").into());
    }
    let hash = auth::hash_password(Password::parse(DEMO_PASSWORD)?).await?;
    store.create_user(&username, &hash, tokens).await?;
    let user = store.user(&username.key()).await?.ok_or("user vanished")?;
    if user.session(&token.session_id).is_none() {
        let now = now_millis();
        let session = SessionEntry {
            id: token.session_id.clone(),
            digest: token.digest(),
            created_at: now,
            // Demo sessions never go idle in a year of replays.
            last_used: now + Duration::from_secs(365 * 86_400).as_millis() as u64,
            expires_at: now + Duration::from_secs(365 * 86_400).as_millis() as u64,
            checks: Default::default(),
        };
        let new = NewSession {
            session: &session,
            evict: &[],
            network: None,
            forget: &[],
            now,
        };
        store.add_session(&user, &new).await?;
    }
    Ok(())
}

/// A debit guard for `token`'s session with no practical limits, for tests that hold
/// charges directly through `Charges`.
pub fn guard(token: &str) -> shared::store::DebitGuard {
    let token = Token::parse(token).expect("a token");
    let now = now_millis();
    shared::store::DebitGuard {
        session_id: token.session_id.clone(),
        digest: token.digest(),
        now,
        idle_cutoff: 0,
        max_in_flight: 1_000,
        window: now / 60_000,
        max_per_window: 1_000_000,
        stale_windows: Vec::new(),
    }
}

/// Waits, if needed, until at least `secs` seconds are left in the current clock minute:
/// for tests of the per-minute chat limit, whose window is the clock minute.
pub async fn wait_for_a_fresh_minute(secs: u64) {
    let into = now_millis() % 60_000;
    if into + secs * 1000 > 60_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 50)).await;
    }
}

/// `count` answered chats in one new conversation of `account`, at no cost (the books
/// stay as they are), each with a question and an answer of some length: a long history
/// to read or delete. Written a few at a time.
pub async fn seed_answered_chats(
    store: &Store,
    account: &shared::store::Account,
    count: usize,
) -> Result<(), BoxError> {
    use futures_util::{StreamExt, TryStreamExt, stream};
    use shared::{
        domain::{ConversationId, Usage},
        store::{ChatOutcome, OpenCharge},
    };
    let conversation = ConversationId::new();
    stream::iter(0..count)
        .map(|n| {
            let charge = OpenCharge {
                id: uuid::Uuid::now_v7().to_string(),
                account: account.clone(),
                conversation_id: conversation.as_str().to_owned(),
                cost: 0,
                opened_at: now_millis(),
            };
            async move {
                let message = format!("question {n}: {}", "lorem ipsum ".repeat(20));
                let response = format!("answer {n}: {}", "dolor sit amet ".repeat(40));
                let answered = ChatOutcome::Answered {
                    message: &message,
                    response: &response,
                    model: "gemini-flash-latest",
                    usage: Usage::default(),
                    balance: 0,
                    finish_reason: Some("STOP"),
                };
                store.record_chat(&charge, answered).await.map(|_| ())
            }
        })
        .buffer_unordered(8)
        .try_collect::<()>()
        .await?;
    Ok(())
}
