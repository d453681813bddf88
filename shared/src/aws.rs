//! The AWS SDK configuration, loaded once per cold start and shared by every client, and
//! the HTTP client every SDK call goes through.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aws_config::{
    BehaviorVersion, SdkConfig,
    environment::{EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider},
};
use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;

/// Region, credentials and endpoints from the standard AWS environment (including
/// `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local), every call made through [`SdkHttp`].
pub async fn config() -> SdkConfig {
    let http = SdkHttp::default();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http.clone());
    // On Lambda (and under `sam local`) the role's credentials and the region are in the
    // environment, the first place the default chains look. Naming those providers when
    // the variables are there skips building the rest of the chains (profile, SSO, web
    // identity, container, IMDS): ~0.5 ms of a ~3 ms init. Without them (a profile or SSO
    // user running locally) the default chains stay in charge.
    if is_set("AWS_ACCESS_KEY_ID") && is_set("AWS_SECRET_ACCESS_KEY") {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if is_set("AWS_REGION") || is_set("AWS_DEFAULT_REGION") {
        loader = loader.region(EnvironmentVariableRegionProvider::new());
    }
    let sdk = loader.load().await;
    // The connection pool the clients' calls will ask for, built now rather than on the
    // first request: their timeouts are the SDK's (a client's own settings add operation
    // and attempt limits, which the SDK enforces itself).
    if let Some(timeouts) = sdk.timeout_config() {
        http.connector(Timeouts {
            connect: timeouts.connect_timeout(),
            read: timeouts.read_timeout(),
        });
    }
    sdk
}

/// The SDK's HTTP client: reqwest on rustls and ring, the stack the Gemini client speaks
/// through, rather than the SDK's own hyper client. One HTTP/1.1 client stack in the
/// binary, not two (the SDK's would bring a second hyper client and TLS connector, and
/// HTTP/2: ~0.5 MB of code for `h2` alone, docs/performance.md). It trusts Amazon's roots, compiled in
/// ([`crate::tls::aws_client_config`]): no system store is read at cold start.
///
/// The SDK asks for a connector per set of connection timeouts; each is built once and
/// kept, with its own connection pool.
#[derive(Debug, Clone, Default)]
pub struct SdkHttp {
    connectors: Arc<Mutex<Vec<(Timeouts, SharedHttpConnector)>>>,
}

/// The connection timeouts the SDK asks a connector for: to connect (TCP and TLS), and
/// from the request sent to the response's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeouts {
    connect: Option<Duration>,
    read: Option<Duration>,
}

impl SdkHttp {
    fn connector(&self, timeouts: Timeouts) -> SharedHttpConnector {
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, connector)) = connectors.iter().find(|(t, _)| *t == timeouts) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(Connector::new(timeouts));
        connectors.push((timeouts, connector.clone()));
        connector
    }
}

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector(Timeouts {
            connect: settings.connect_timeout(),
            read: settings.read_timeout(),
        })
    }
}

#[derive(Debug)]
struct Connector {
    /// A client that could not be built answers every call with why.
    http: Result<reqwest::Client, String>,
    read_timeout: Option<Duration>,
}

impl Connector {
    fn new(timeouts: Timeouts) -> Self {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::aws_client_config())
            // The SDK follows no redirects; an AWS endpoint that sends one is answered as is.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(limit) = timeouts.connect {
            builder = builder.connect_timeout(limit);
        }
        Self {
            http: builder
                .build()
                .map_err(|e| format!("building the AWS HTTP client: {e}")),
            read_timeout: timeouts.read,
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = match &self.http {
            Ok(http) => http.clone(),
            Err(e) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::other(
                    e.clone().into(),
                    None,
                )));
            }
        };
        let request = match request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(e.into()))
            .and_then(|r| {
                reqwest::Request::try_from(r.map(reqwest::Body::wrap))
                    .map_err(|e| ConnectorError::user(e.into()))
            }) {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(e)),
        };
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let sent = http.execute(request);
            let response = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, sent)
                    .await
                    .map_err(|e| ConnectorError::timeout(e.into()))?,
                None => sent.await,
            }
            .map_err(connector_error)?;
            let response = lambda_http::http::Response::from(response);
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// How the SDK (and the store's retries) should take a failed call: a timeout or a broken
/// connection is worth another attempt, a request that could not be built is not.
fn connector_error(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        ConnectorError::timeout(err.into())
    } else if err.is_builder() {
        ConnectorError::user(err.into())
    } else if err.is_connect() {
        ConnectorError::io(err.into()).never_connected()
    } else {
        ConnectorError::io(err.into())
    }
}

/// A variable the environment providers would take (set and not blank).
fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.to_string_lossy().trim().is_empty())
}

/// Reads a SecureString from SSM Parameter Store, decrypted.
pub async fn ssm_secure_string(
    config: &SdkConfig,
    name: &str,
) -> Result<String, crate::error::BoxError> {
    let out = aws_sdk_ssm::Client::new(config)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading SSM parameter {name}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(e)
            )
        })?;
    out.parameter
        .and_then(|p| p.value)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("SSM parameter {name} is empty").into())
}
