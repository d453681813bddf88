//! Password hashing and login tokens.
//!
//! Passwords: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), run on
//! tokio's blocking pool so a hash never stalls the async runtime.
//! Tokens: 256 random bits shown to the client once; the store keeps only their
//! SHA-256, so a leaked table can't be replayed as logins.

use std::sync::OnceLock;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use sha2::{Digest, Sha256};

use crate::{domain::Password, error::ApiError};

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) for a new password.
pub async fn hash_password(password: Password) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        argon2()
            .hash_password(password.expose())
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::internal(format!("argon2 hashing failed: {e}")))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Checks a password against a stored PHC string. `None` (no such user) still costs one
/// full verification, so response times don't tell which usernames exist.
pub async fn verify_password(stored: Option<String>, password: Password) -> Result<bool, ApiError> {
    let known = stored.is_some();
    tokio::task::spawn_blocking(move || {
        let phc = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let ok = argon2().verify_password(password.expose(), phc).is_ok();
        known && ok
    })
    .await
    .map_err(ApiError::internal)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        argon2()
            .hash_password(b"not a real password; equalises timing")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A fresh login token: 32 random bytes as 64 hex characters.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The form a token is stored and looked up in.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Cheap shape check that spares the store a lookup for obvious garbage.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let phc = hash_password(Password::parse("correct horse").unwrap())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let good = verify_password(Some(phc.clone()), Password::parse("correct horse").unwrap());
        assert!(good.await.unwrap());
        let bad = verify_password(Some(phc), Password::parse("wrong horse").unwrap());
        assert!(!bad.await.unwrap());
        let nobody = verify_password(
            None,
            Password::parse("not a real password; equalises timing").unwrap(),
        );
        assert!(!nobody.await.unwrap());
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_token(&a));
        assert_eq!(token_digest(&a).len(), 64);
        assert_ne!(token_digest(&a), a);
        assert!(!looks_like_token("abc"));
    }
}
