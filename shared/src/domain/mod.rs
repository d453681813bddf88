//! Pure types and rules: no I/O, no AWS. Values are parsed once at the edge and are
//! valid from then on.

use std::fmt;

mod client;
mod conversation;
mod model;

pub use client::{ClientAddr, Network};
pub use conversation::{ConversationId, Model, ModelCatalogue, Title};
pub use model::{InvalidModelName, ModelName, ThinkingFamily, ThinkingLevel};

/// A value that breaks a rule. The HTTP layer turns it into its 400 (or, for
/// [`Invalid::Credentials`], the login's 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `field` breaks a rule; `message` says which, for people.
    #[error("{message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// A password too long to be anyone's: at login, answered like a wrong one.
    #[error("invalid credentials")]
    Credentials,
}

impl Invalid {
    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self::Field {
            field,
            message: message.into(),
        }
    }
}

/// One earlier exchange of a conversation, as context for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastTurn {
    /// What the user said.
    pub message: String,
    /// What the model answered.
    pub response: String,
}

/// A username as the user typed it. Uniqueness is case-insensitive: [`Username::key`]
/// is what the store indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 150;

    /// Letters, digits and `@ . + - _` (the original service's rule, ASCII only so
    /// that case-insensitive comparison is unambiguous), 3 to 150 characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(Invalid::field(
                "username",
                format!(
                    "username must be {} to {} characters long.",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c))
        {
            return Err(Invalid::field(
                "username",
                "username may contain only letters, digits and @ . + - _ characters.",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form that makes `John` and `john` the same account.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password in transit. Never printed.
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if len < Self::MIN_LEN {
            return Err(Invalid::field(
                "password",
                format!(
                    "password must be at least {} characters long.",
                    Self::MIN_LEN
                ),
            ));
        }
        if len > Self::MAX_LEN {
            return Err(Invalid::field(
                "password",
                format!(
                    "password must be at most {} characters long.",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// For login: any non-empty string within the length cap may be tried, so that
    /// accounts made under older rules can still sign in.
    pub fn parse_for_login(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() {
            return Err(Invalid::field("password", "password is required."));
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(Invalid::Credentials);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A chat message: not blank, at most `max_chars` characters.
#[derive(Debug, Clone)]
pub struct ChatMessage(String);

impl ChatMessage {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, Invalid> {
        if raw.trim().is_empty() {
            return Err(Invalid::field("message", "message must not be empty."));
        }
        if raw.chars().count() > max_chars {
            return Err(Invalid::field(
                "message",
                format!("message must be at most {max_chars} characters long."),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Identifies the message without keeping it: what an idempotency key is bound to.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// What a model call consumed, as Gemini's `usageMetadata` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub thoughts_tokens: u64,
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_for_uniqueness() {
        let a = Username::parse("John.Doe").unwrap();
        assert_eq!(a.as_str(), "John.Doe");
        assert_eq!(a.key(), "john.doe");
    }

    #[test]
    fn usernames_reject_bad_characters_and_lengths() {
        for bad in ["jo", "john doe", "jöhn", "a/b", "x#y", &"a".repeat(151), ""] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Username::parse("a_b-c+d@e.f").is_ok());
    }

    #[test]
    fn passwords_are_bounded() {
        assert!(Password::parse("pass123").is_err());
        assert!(Password::parse("pass1234").is_ok());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("pass1234").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn chat_messages_must_have_content() {
        assert!(ChatMessage::parse("  \n", 10).is_err());
        assert!(ChatMessage::parse("hello", 4).is_err());
        assert_eq!(ChatMessage::parse("héllo", 5).unwrap().as_str(), "héllo");
    }
}
