//! The one error type every handler returns, and its mapping to HTTP.
//!
//! Expected failures carry what the client needs to act on them; unexpected ones keep
//! their cause chain for the log and reach the client as an opaque 500.

use std::time::Duration;

use lambda_http::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::{
    auth,
    domain::Invalid,
    gemini,
    service::{
        accounts::{AccountError, Limit},
        charges::ChargeError,
        chat::ChatError,
        conversations::ConversationError,
        sockets::SocketError,
    },
    store,
};

pub use crate::telemetry::{BoxError, Chain};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The request body is not valid JSON.")]
    MalformedJson,
    #[error("{message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("Send the body as application/json (Content-Type {0:?} is not accepted here).")]
    UnsupportedMediaType(String),
    #[error("The request body is larger than {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Method {method} is not allowed here.")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("Authentication credentials were not provided.")]
    NotAuthenticated,
    #[error("Invalid token.")]
    InvalidToken,
    #[error("Token has expired; log in again.")]
    TokenExpired,
    #[error("Invalid username or password.")]
    InvalidCredentials,
    #[error("The password is not right.")]
    WrongPassword,
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("A user with that username already exists.")]
    UsernameTaken,
    #[error("{}", .what.detail())]
    Throttled {
        what: Throttle,
        retry_after: Duration,
    },
    #[error("Chats are still running on this account; try again when they have finished.")]
    ChatsRunning,
    #[error("Not enough credits: a chat costs {cost} and you have {balance}.")]
    InsufficientCredits { balance: u64, cost: u64 },
    #[error("This Idempotency-Key was already used with a different message.")]
    IdempotencyKeyReused,
    #[error("A request with this Idempotency-Key is still running; retry shortly.")]
    IdempotencyInProgress,
    #[error("The model would not answer this message ({reason}); you were not charged.")]
    ContentBlocked { reason: String },
    /// A WebSocket client stopped its chat before the first words: refunded. (Never an
    /// HTTP answer: only a WebSocket client can cancel.)
    #[error("You stopped the answer before its first words; you were not charged.")]
    Cancelled,
    /// A WebSocket message whose `action` this API does not know.
    #[error("Unknown action {0:?}; send chat, cancel or balance.")]
    UnknownAction(String),
    /// A WebSocket ticket that does not exist, was used or has expired.
    #[error("The ticket is not valid (unknown, used or expired); ask for a new one.")]
    BadTicket,
    #[error("Too many open WebSocket connections on this account; close one first.")]
    TooManyConnections,
    #[error("{}", upstream_detail(.0))]
    Upstream(#[source] gemini::Error),
    #[error("The service is briefly overloaded; try again shortly. You were not charged.")]
    Unavailable(#[source] store::Error),
    /// The answer could not be stored, and the store kept failing while the service
    /// found out whether it had been charged.
    #[error(
        "The service is briefly overloaded and could not confirm that your answer was stored. If it was, it appears in your history and was charged; if not, you are not charged. A retry with the same Idempotency-Key gets whichever it was."
    )]
    Unsettled(#[source] store::Error),
    #[error("Internal server error.")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            message: message.into(),
        }
    }

    pub fn internal(err: impl Into<BoxError>) -> Self {
        Self::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MalformedJson | InvalidField { .. } | UnknownAction(_) => StatusCode::BAD_REQUEST,
            BadTicket => StatusCode::UNAUTHORIZED,
            TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Cancelled => StatusCode::CONFLICT,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            NotAuthenticated | InvalidToken | TokenExpired | InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            WrongPassword => StatusCode::FORBIDDEN,
            NotFound(_) => StatusCode::NOT_FOUND,
            UsernameTaken | IdempotencyInProgress | ChatsRunning => StatusCode::CONFLICT,
            Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ContentBlocked { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Upstream(e) if e.is_overloaded() => StatusCode::SERVICE_UNAVAILABLE,
            Upstream(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            Upstream(_) => StatusCode::BAD_GATEWAY,
            Unavailable(_) | Unsettled(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, machine-readable name of the error.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MalformedJson => "malformed_json",
            InvalidField { .. } => "invalid_field",
            UnsupportedMediaType(_) => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            MethodNotAllowed { .. } => "method_not_allowed",
            NotAuthenticated => "not_authenticated",
            InvalidToken => "invalid_token",
            TokenExpired => "token_expired",
            InvalidCredentials => "invalid_credentials",
            WrongPassword => "wrong_password",
            NotFound(_) => "not_found",
            UsernameTaken => "username_taken",
            Throttled { what, .. } => what.code(),
            ChatsRunning => "chats_running",
            IdempotencyKeyReused => "idempotency_key_reused",
            IdempotencyInProgress => "idempotency_in_progress",
            InsufficientCredits { .. } => "insufficient_credits",
            ContentBlocked { .. } => "content_blocked",
            Cancelled => "cancelled",
            UnknownAction(_) => "unknown_action",
            BadTicket => "invalid_ticket",
            TooManyConnections => "too_many_connections",
            Upstream(e) if e.is_overloaded() => "model_unavailable",
            Upstream(e) if e.is_timeout() => "model_timeout",
            Upstream(_) => "model_error",
            Unavailable(_) | Unsettled(_) => "service_unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// The JSON body: `{"detail", "code"}` plus whatever helps the client act.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("detail".into(), self.to_string().into());
        body.insert("code".into(), self.code().into());
        match self {
            Self::InvalidField { field, .. } => {
                body.insert("field".into(), (*field).into());
            }
            Self::InsufficientCredits { balance, cost } => {
                body.insert("tokens".into(), json!(balance));
                body.insert("cost".into(), json!(cost));
            }
            _ => {}
        }
        Value::Object(body)
    }

    /// Headers the status calls for.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::NotAuthenticated | Self::InvalidToken | Self::TokenExpired => {
                vec![("www-authenticate", "Token".into())]
            }
            Self::MethodNotAllowed { allowed, .. } => vec![("allow", (*allowed).into())],
            Self::IdempotencyInProgress
            | Self::Unavailable(_)
            | Self::Unsettled(_)
            | Self::ChatsRunning => {
                vec![("retry-after", "1".into())]
            }
            Self::Throttled { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                vec![("retry-after", secs.max(1).to_string())]
            }
            Self::InsufficientCredits { balance, .. } => {
                vec![("x-tokens-remaining", balance.to_string())]
            }
            Self::Upstream(e) if e.is_overloaded() => {
                let wait = e.retry_after().unwrap_or(Duration::from_secs(5));
                vec![("retry-after", wait.as_secs().max(1).to_string())]
            }
            _ => vec![],
        }
    }
}

/// What a 429 throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Failed logins, per (username, network), per username or per client address: one
    /// answer for all, so the response never tells which (nor whether the name exists).
    Login,
    /// Wrong passwords given through one session (password change, account deletion).
    WrongPasswords,
    Register,
    /// Every address's registrations together, this hour.
    RegisterBudget,
    ChatsInFlight,
    ChatRate,
}

impl Throttle {
    fn detail(self) -> &'static str {
        match self {
            Self::Login => "Too many failed logins; wait as long as Retry-After says.",
            Self::WrongPasswords => {
                "Too many wrong passwords through this session; wait as long as Retry-After says."
            }
            Self::Register => {
                "Too many registrations from this address; wait as long as Retry-After says."
            }
            Self::RegisterBudget => {
                "New accounts are paused for now; try again after Retry-After seconds."
            }
            Self::ChatsInFlight => {
                "Too many chats at once; wait for one to finish. You were not charged."
            }
            Self::ChatRate => "Too many chats this minute; slow down. You were not charged.",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Login => "too_many_failed_logins",
            Self::WrongPasswords => "too_many_wrong_passwords",
            Self::Register => "too_many_registrations",
            Self::RegisterBudget => "registrations_paused",
            Self::ChatsInFlight => "too_many_chats_in_flight",
            Self::ChatRate => "chat_rate_exceeded",
        }
    }
}

impl From<auth::Error> for ApiError {
    fn from(err: auth::Error) -> Self {
        Self::internal(err)
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidToken => ApiError::InvalidToken,
            AccountError::TokenExpired => ApiError::TokenExpired,
            AccountError::InvalidCredentials => ApiError::InvalidCredentials,
            AccountError::WrongPassword => ApiError::WrongPassword,
            AccountError::Throttled { limit, retry_after } => ApiError::Throttled {
                what: match limit {
                    Limit::FailedLogins => Throttle::Login,
                    Limit::WrongPasswords => Throttle::WrongPasswords,
                    Limit::Registrations => Throttle::Register,
                    Limit::RegistrationBudget => Throttle::RegisterBudget,
                },
                retry_after,
            },
            AccountError::UsernameTaken => ApiError::UsernameTaken,
            AccountError::ChatsRunning => ApiError::ChatsRunning,
            AccountError::Store(e) => e.into(),
            AccountError::Internal(e) => e.into(),
        }
    }
}

impl From<gemini::Error> for ApiError {
    fn from(err: gemini::Error) -> Self {
        match err.blocked_reason() {
            Some(reason) => Self::ContentBlocked {
                reason: reason.to_owned(),
            },
            None => Self::Upstream(err),
        }
    }
}

fn upstream_detail(err: &gemini::Error) -> &'static str {
    if err.is_overloaded() {
        "The model is busy right now; try again shortly. You were not charged."
    } else if err.is_timeout() {
        "The model took too long to answer. You were not charged."
    } else {
        "The model failed to answer. You were not charged."
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> Self {
        if err.is_unavailable() {
            Self::Unavailable(err)
        } else {
            Self::Internal(err.into())
        }
    }
}

impl From<ChargeError> for ApiError {
    fn from(err: ChargeError) -> Self {
        ChatError::from(err).into()
    }
}

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::Insufficient { balance, cost } => {
                Self::InsufficientCredits { balance, cost }
            }
            ChatError::NoAccount => Self::InvalidToken,
            ChatError::SessionEnded { expired: false } => Self::InvalidToken,
            ChatError::SessionEnded { expired: true } => Self::TokenExpired,
            ChatError::TooManyInFlight => Self::Throttled {
                what: Throttle::ChatsInFlight,
                retry_after: Duration::from_secs(1),
            },
            ChatError::RateExceeded => Self::Throttled {
                what: Throttle::ChatRate,
                retry_after: Duration::from_secs(60 - crate::store::now_millis() / 1000 % 60),
            },
            ChatError::KeyReused => Self::IdempotencyKeyReused,
            ChatError::InProgress => Self::IdempotencyInProgress,
            ChatError::NoConversation => Self::NotFound("conversation"),
            ChatError::Model(e) => e.into(),
            ChatError::Cancelled => Self::Cancelled,
            ChatError::Withheld(e) => Self::Unavailable(e),
            ChatError::Unsettled(e) if e.is_unavailable() => Self::Unsettled(e),
            ChatError::Unsettled(e) | ChatError::Store(e) => e.into(),
        }
    }
}

impl From<SocketError> for ApiError {
    fn from(err: SocketError) -> Self {
        match err {
            SocketError::BadTicket | SocketError::TicketExpired => Self::BadTicket,
            SocketError::SessionEnded { expired: true } => Self::TokenExpired,
            SocketError::SessionEnded { expired: false } | SocketError::UnknownConnection => {
                Self::InvalidToken
            }
            SocketError::TooManyConnections => Self::TooManyConnections,
            SocketError::Disabled => Self::NotFound("WebSocket endpoint"),
            SocketError::Store(e) => e.into(),
            SocketError::Internal(e) => e.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(err: Invalid) -> Self {
        match err {
            Invalid::Field { field, message } => Self::InvalidField { field, message },
            Invalid::Credentials => Self::InvalidCredentials,
        }
    }
}

impl From<ConversationError> for ApiError {
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::NotFound => Self::NotFound("conversation"),
            ConversationError::BadCursor => {
                Self::invalid("cursor", "cursor must be a next_cursor this API gave out.")
            }
            ConversationError::Store(e) => e.into(),
        }
    }
}
