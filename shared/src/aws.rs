//! The AWS SDK configuration, loaded once per cold start and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};
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
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
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
