//! API Gateway's management API (`@connections`): how the chat function writes to a
//! WebSocket client. A frame is a `POST …/@connections/{id}`; a client that went away
//! answers 410 `GoneException`, which is an outcome here, not an error.
//!
//! The endpoint is `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`: the
//! template passes it as `WEBSOCKET_MANAGEMENT_ENDPOINT` (REST routes push balances too,
//! and have no WebSocket event to learn it from), and a WebSocket event's domain and
//! stage give it when it is not set. Locally it is the test kit's gateway.

use std::{sync::OnceLock, time::Duration};

use aws_config::{SdkConfig, timeout::TimeoutConfig};
use aws_sdk_apigatewaymanagement::{
    Client,
    operation::{
        delete_connection::DeleteConnectionError, post_to_connection::PostToConnectionError,
    },
    primitives::Blob,
};
use bytes::Bytes;

use crate::telemetry::BoxError;

/// A WebSocket connection, as API Gateway names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// API Gateway's ids are short base64-ish strings; anything else is not one of them.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=-_+/".contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    Sent,
    /// The client is gone (410): nothing more can reach it.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no @connections endpoint is configured")]
    NoEndpoint,
    #[error("@connections {op} failed")]
    Api {
        op: &'static str,
        #[source]
        source: BoxError,
    },
}

/// The management API client, built once per cold start (or, without a configured
/// endpoint, from the first WebSocket event). Cheap to share by reference.
#[derive(Debug)]
pub struct Connections {
    sdk: Option<SdkConfig>,
    client: OnceLock<Client>,
}

impl Connections {
    /// No endpoint and no SDK: every post fails with [`Error::NoEndpoint`]. For
    /// deployments without the WebSocket API, and tests that don't use it.
    pub fn disabled() -> Self {
        Self {
            sdk: None,
            client: OnceLock::new(),
        }
    }

    /// Clients on `sdk` (its credentials sign the posts); `endpoint` if known now.
    pub fn new(sdk: &SdkConfig, endpoint: Option<&str>) -> Self {
        let this = Self {
            sdk: Some(sdk.clone()),
            client: OnceLock::new(),
        };
        if let Some(endpoint) = endpoint {
            this.client.get_or_init(|| build(sdk, endpoint));
        }
        this
    }

    /// Learns the endpoint from a WebSocket event (`https://{domain}/{stage}`), unless one
    /// is known already.
    pub fn learn_endpoint(&self, domain: &str, stage: &str) {
        if let Some(sdk) = &self.sdk
            && self.client.get().is_none()
            && !domain.is_empty()
        {
            let endpoint = format!("https://{domain}/{stage}");
            self.client.get_or_init(|| build(sdk, &endpoint));
        }
    }

    /// Whether posts can go anywhere.
    pub fn enabled(&self) -> bool {
        self.client.get().is_some()
    }

    /// Sends one frame (a text message) to `id`.
    pub async fn post(&self, id: &ConnectionId, frame: Bytes) -> Result<Posted, Error> {
        let client = self.client.get().ok_or(Error::NoEndpoint)?;
        let sent = client
            .post_to_connection()
            .connection_id(id.as_str())
            .data(Blob::new(frame))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Posted::Sent),
            Err(e) => match e.into_service_error() {
                PostToConnectionError::GoneException(_) => Ok(Posted::Gone),
                e => Err(Error::Api {
                    op: "PostToConnection",
                    source: Box::new(e),
                }),
            },
        }
    }

    /// Closes `id` from the server's side (a session that ended). A connection already
    /// gone is closed.
    pub async fn close(&self, id: &ConnectionId) -> Result<(), Error> {
        let client = self.client.get().ok_or(Error::NoEndpoint)?;
        match client
            .delete_connection()
            .connection_id(id.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                DeleteConnectionError::GoneException(_) => Ok(()),
                e => Err(Error::Api {
                    op: "DeleteConnection",
                    source: Box::new(e),
                }),
            },
        }
    }
}

fn build(sdk: &SdkConfig, endpoint: &str) -> Client {
    // A frame is small and a client may be slow: a bounded wait, then the SDK's standard
    // retries (throttling, 5xx). A frame that still fails is dropped, not the answer.
    let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    Client::from_conf(config)
}
