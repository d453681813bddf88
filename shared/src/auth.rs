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

use crate::domain::Password;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) for a new password.
pub async fn hash_password(password: Password) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        argon2()
            .hash_password(password.expose())
            .map(|hash| hash.to_string())
            .map_err(|e| Error(format!("argon2 hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error(format!("hashing task failed: {e}")))?
}

/// Checks a password against a stored PHC string. `None` (no such user) still costs one
/// full verification, so response times don't tell which usernames exist.
pub async fn verify_password(stored: Option<String>, password: Password) -> Result<bool, Error> {
    let known = stored.is_some();
    tokio::task::spawn_blocking(move || {
        let phc = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let ok = argon2().verify_password(password.expose(), phc).is_ok();
        known && ok
    })
    .await
    .map_err(|e| Error(format!("hashing task failed: {e}")))
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

/// A login token as the client holds it: `<hex user key>.<session id>.<hex secret>`.
///
/// The user key and session id let the service find the session in one read of the user
/// item; the 256-bit secret is what proves possession. Only the secret's SHA-256 is
/// stored, so a leaked table can't be replayed as logins. Clients treat the whole string
/// as opaque.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub user_key: String,
    pub session_id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {}, ***)", self.user_key, self.session_id)
    }
}

/// Longest user key a token may carry (usernames are at most 150 characters).
const MAX_KEY_HEX: usize = 2 * crate::domain::Username::MAX_LEN;

impl Token {
    /// A fresh token for a new session of `user_key`.
    pub fn issue(user_key: &str) -> Result<Self, Error> {
        Ok(Self {
            user_key: user_key.to_owned(),
            session_id: hex::encode(random::<8>()?),
            secret: hex::encode(random::<32>()?),
        })
    }

    /// A token from its parts: for fixed demo tokens only.
    pub fn from_parts(user_key: &str, session_id: &str, secret: &str) -> Option<Self> {
        Self::parse(&format!("{}.{session_id}.{secret}", hex::encode(user_key)))
    }

    /// Reads a token; `None` for anything not shaped like one (no store read needed).
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('.');
        let (key, session_id, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let hex_of = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if parts.next().is_some()
            || key.is_empty()
            || key.len() > MAX_KEY_HEX
            || !hex_of(session_id, 16)
            || !hex_of(secret, 64)
        {
            return None;
        }
        let user_key = String::from_utf8(hex::decode(key).ok()?).ok()?;
        Some(Self {
            user_key,
            session_id: session_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// What the client is given.
    pub fn expose(&self) -> String {
        format!(
            "{}.{}.{}",
            hex::encode(&self.user_key),
            self.session_id,
            self.secret
        )
    }

    /// What the store keeps: the SHA-256 of the secret.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether `stored` is this token's digest, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        let ours = self.digest();
        ours.len() == stored.len()
            && ours
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A WebSocket ticket: 256 random bits, handed out once and good for one `$connect`
/// (browsers can't send `Authorization` on a WebSocket, so the URL carries it). Only
/// its SHA-256 is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket(String);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket(***)")
    }
}

impl Ticket {
    pub fn issue() -> Result<Self, Error> {
        Ok(Self(hex::encode(random::<32>()?)))
    }

    /// `None` for anything not shaped like a ticket (no store read needed).
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// Hashing or randomness failed: nothing a client can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

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
    fn tokens_are_random_opaque_and_stored_hashed() {
        let a = Token::issue("john.doe").unwrap();
        let b = Token::issue("john.doe").unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.session_id, b.session_id);
        let parsed = Token::parse(&a.expose()).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(parsed.user_key, "john.doe");
        assert!(a.matches(&a.digest()));
        assert!(!b.matches(&a.digest()));
        assert!(!a.expose().contains(&a.digest()));
        assert!(!format!("{a:?}").contains(&a.secret));
        for bad in [
            "",
            "abc",
            "6a6f686e..",
            "6a6f686e.0011223344556677.00",
            "zz.0011223344556677.".repeat(2).as_str(),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
        let tampered = format!("{}0", a.expose());
        assert!(Token::parse(&tampered).is_none());
    }
}
