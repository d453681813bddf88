//! Demo accounts for local runs and for replaying `events/`: the sample events carry
//! these tokens, so they work against a table seeded here. Local tables only — nothing
//! deployed ever holds them.

use std::time::Duration;

use shared::{
    auth,
    domain::{Password, Username},
    store::{Session, Store, now_millis},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";
/// The token in `events/chat.json` and `events/tokens.json`.
pub const DEMO_TOKEN: &str = "dededededededededededededededededededededededededededededededede";
/// A user with less than one chat's worth of credits (`events/chat-not-enough-credits.json`).
pub const BROKE_USER: &str = "broke";
pub const BROKE_TOKEN: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
pub const BROKE_TOKENS: u64 = 50;

/// Creates the demo users and their sessions unless they exist. Safe to run again.
pub async fn seed(store: &Store, start_tokens: u64) -> Result<(), BoxError> {
    user_with_token(store, DEMO_USER, start_tokens, DEMO_TOKEN).await?;
    user_with_token(store, BROKE_USER, BROKE_TOKENS, BROKE_TOKEN).await
}

/// Creates `name` (password [`DEMO_PASSWORD`], `tokens` credits) if missing, and a
/// session for `token` valid for a year if missing.
pub async fn user_with_token(
    store: &Store,
    name: &str,
    tokens: u64,
    token: &str,
) -> Result<(), BoxError> {
    let username = Username::parse(name)?;
    let hash = auth::hash_password(Password::parse(DEMO_PASSWORD)?).await?;
    store.create_user(&username, &hash, tokens).await?;
    let digest = auth::token_digest(token);
    if store.session(&digest).await?.is_none() {
        let expires_at = Duration::from_millis(now_millis()) + Duration::from_secs(365 * 86_400);
        let session = Session {
            user_key: username.key(),
            expires_at: expires_at.as_secs(),
        };
        store.put_session(&digest, &session).await?;
    }
    Ok(())
}
