//! The roots every outbound HTTPS call trusts — Gemini's (reqwest) and AWS's (the SDK's
//! calls, through reqwest too, see [`crate::aws`]) — and the TLS client configuration
//! built on them: rustls with ring.
//!
//! The roots are Mozilla's root program (the `webpki-roots` crate, generated from the
//! CCADB), compiled into the binary as trust anchors rustls takes as they are, rather than
//! read from the system store. Reading the system store was most of a function's cold
//! start: the SDK's client and reqwest each read it (a bundle and ~150 files of PEM,
//! base64-decoded), 3–10 ms apiece on the bench machine. Compiled in as certificates
//! (`webpki-root-certs`), they still had to be parsed at every cold start: 0.57 M
//! instructions, a quarter of the chat function's init (callgrind); as anchors, none. The
//! system store on Lambda is built from the same Mozilla list; what differs is who keeps it
//! current: the compiled-in set moves with `cargo update -p webpki-roots` and a deploy,
//! where the system store moves with Lambda's base image. The two services' roots are in
//! it and checked by a test below: Amazon Trust Services (every AWS endpoint) and Google
//! Trust Services (`generativelanguage.googleapis.com`).
//!
//! The AWS SDK's calls trust only Amazon Trust Services' roots (Amazon Root CA 1–4 and the
//! Starfield root that cross-signs them), the CAs of every AWS service endpoint since AWS
//! moved them all to its own certificates. Pointing the SDK at a TLS endpoint under another
//! CA (a proxy in front of DynamoDB) would need those roots added here. Gemini's client
//! keeps the whole set: its base URL is configurable.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, pki_types::TrustAnchor};

/// The trusted roots.
pub fn roots() -> &'static [TrustAnchor<'static>] {
    webpki_roots::TLS_SERVER_ROOTS
}

/// The roots as a store rustls verifies against.
pub fn root_store() -> RootCertStore {
    store(roots().iter())
}

fn store<'a>(anchors: impl Iterator<Item = &'a TrustAnchor<'static>>) -> RootCertStore {
    RootCertStore {
        roots: anchors.cloned().collect(),
    }
}

/// A TLS client configuration on [`root_store`], ring as its crypto provider, offering
/// HTTP/1.1 (the only HTTP version the clients here speak): Gemini's.
pub fn client_config() -> ClientConfig {
    config(root_store())
}

/// The same on Amazon Trust Services' roots only: the AWS SDK's.
pub fn aws_client_config() -> ClientConfig {
    config(aws_root_store())
}

fn config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Amazon Trust Services' roots (and Starfield's, which cross-signs them): what every AWS
/// service endpoint's certificate chains to (see the module's notes).
fn aws_root_store() -> RootCertStore {
    // A root's name is in its subject's DER; no other root names these.
    let names = AWS_ROOTS.map(memchr::memmem::Finder::new);
    store(roots().iter().filter(|anchor| {
        names
            .iter()
            .any(|name| name.find(anchor.subject.as_ref()).is_some())
    }))
}

/// Amazon Root CA 1 to 4, and the Starfield root that cross-signs them.
const AWS_ROOTS: [&str; 2] = [
    "Amazon Root CA ",
    "Starfield Services Root Certificate Authority - G2",
];

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

    /// Anchors taken as they are must still be what rustls would make of the roots:
    /// each one's subject a DER name, and the set Mozilla's (well over 100 roots).
    #[test]
    fn the_compiled_in_anchors_are_a_whole_root_set() {
        let store = root_store();
        assert!(store.len() > 100, "only {} roots", store.len());
        for anchor in &store.roots {
            // The Name's contents: its first relative distinguished name, a DER SET.
            let subject = anchor.subject.as_ref();
            assert_eq!(subject.first(), Some(&0x31), "{subject:?}");
            assert!(!anchor.subject_public_key_info.is_empty());
        }
    }

    /// Amazon Root CA 1 to 4 and the Starfield root, and nothing else: a name match that
    /// went wrong would either leave AWS endpoints untrusted or hand the SDK the whole set.
    #[test]
    fn the_aws_client_trusts_amazon_trust_services_roots_only() {
        let mut subjects = subjects(&aws_root_store());
        subjects.sort();
        let expected = [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ];
        assert_eq!(
            subjects.len(),
            expected.len(),
            "roots handed to the AWS client"
        );
        for (subject, name) in subjects.iter().zip(expected) {
            assert!(subject.contains(name), "{subject:?} is not {name}");
        }
    }
}
