//! The AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{
    BehaviorVersion, SdkConfig,
    environment::{EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider},
};
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};

/// Region, credentials and endpoints from the standard AWS environment (including
/// `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local), speaking TLS through rustls with
/// ring rather than the SDK's default aws-lc: a smaller binary and a much faster build.
/// It trusts the compiled-in roots the Gemini client trusts ([`crate::tls`]), not the
/// system store, which it would read from disk at every cold start.
pub async fn config() -> SdkConfig {
    let trust = TrustStore::empty().with_pem_certificate(crate::tls::aws_roots_pem());
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store of PEM roots builds");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
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
    loader.load().await
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
