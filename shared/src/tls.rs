//! The roots every outbound HTTPS call trusts — Gemini's (reqwest) and AWS's (the SDK's
//! client) — and the TLS client configuration built on them: rustls with ring.
//!
//! The roots are Mozilla's root program (the `webpki-root-certs` crate, generated from
//! the CCADB), compiled into the binary rather than read from the system store. Reading
//! the system store was most of a function's cold start: the SDK's client and reqwest each
//! read it (a bundle and ~150 files of PEM, base64-decoded), 3–10 ms apiece on the bench
//! machine against 0.1 ms to parse the compiled-in set. The system store on Lambda is
//! built from the same Mozilla list; what differs is who keeps it current: the compiled-in
//! set moves with `cargo update -p webpki-root-certs` and a deploy, where the system store
//! moves with Lambda's base image. The two services' roots are in it and checked by a
//! test below: Amazon Trust Services (every AWS endpoint) and Google Trust Services
//! (`generativelanguage.googleapis.com`).

use std::sync::Arc;

use base64::Engine;
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

/// The trusted roots, as DER.
pub fn roots() -> &'static [CertificateDer<'static>] {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
}

/// The roots as a store rustls verifies against.
pub fn root_store() -> RootCertStore {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(roots().iter().cloned());
    store
}

/// A TLS client configuration on [`root_store`], ring as its crypto provider, offering
/// HTTP/1.1 (the only HTTP version the clients here speak).
pub fn client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The roots as PEM: the AWS SDK's HTTPS client takes its trust store in no other form.
pub fn roots_pem() -> String {
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for cert in roots() {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        pem.push_str(&base64.encode(cert.as_ref()));
        pem.push_str("\n-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(store: &RootCertStore) -> Vec<String> {
        store
            .roots
            .iter()
            .map(|anchor| String::from_utf8_lossy(anchor.subject.as_ref()).into_owned())
            .collect()
    }

    /// The roots the two services' certificates chain to: Amazon Trust Services (and
    /// Starfield, which cross-signs it) for AWS; for Gemini, the two Google Trust Services
    /// roots Google issues web certificates under (GTS Root R1 for RSA, R4 for ECDSA).
    #[test]
    fn the_roots_of_aws_and_google_endpoints_are_trusted() {
        let subjects = subjects(&root_store());
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
            "GTS Root R1",
            "GTS Root R4",
        ] {
            assert!(
                subjects.iter().any(|s| s.contains(name)),
                "{name} is not among the {} trusted roots",
                subjects.len()
            );
        }
    }

    #[test]
    fn every_root_parses_and_the_pem_form_holds_the_same_roots() {
        let store = root_store();
        assert_eq!(
            store.len(),
            roots().len(),
            "a compiled-in root did not parse"
        );
        let from_pem: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(roots_pem().as_bytes())
                .collect::<Result<_, _>>()
                .expect("valid PEM");
        assert_eq!(from_pem, roots());
    }
}
