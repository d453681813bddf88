//! Property tests for everything that reads client input: whatever a client sends, the
//! parsers answer (no panic), and what they accept keeps the promises the API makes.
//!
//! Cases per property: proptest's default, 256, or `PROPTEST_CASES` (e.g.
//! `PROPTEST_CASES=10000 cargo test -p shared --test properties`). A failure prints the
//! smallest input found; proptest saves its seed in `properties.proptest-regressions`
//! beside this file, so every later run tries it first (commit that file).
//!
//! The pattern for a new parser `parse(&str) -> Result<T, E>`:
//! 1. `any_text()` in, and `accepted_only_if(parse(&s), |v| <the rule>)` — never panics,
//!    never accepts what the rule forbids;
//! 2. a strategy for valid inputs (a regex such as `"[a-z0-9]{1,64}"`) and
//!    `prop_assert!(parse(&s).is_ok())` — it does accept what it should;
//! 3. where the rule is simple enough, say exactly when it accepts (an oracle) instead
//!    of 1 and 2 (see the password and message properties).
//!
//! For parsers that read a request, `request(..)` builds one from a method, headers of
//! arbitrary (valid) bytes and a body.

use lambda_http::{
    Body, Request,
    http::{HeaderName, HeaderValue, Method},
};
use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::{Map, Value};
use shared::{
    ApiError,
    domain::{ChatMessage, Password, Username},
    http::{MAX_BODY_BYTES, auth_token, idempotency_key, json_object, string_field},
};

// ---- Reusable strategies and checks ----

/// Any string, weighted towards the characters parsers look at: ASCII punctuation,
/// whitespace of every kind, and the odd non-ASCII letter.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,64}",
        "[a-zA-Z0-9@.+_ \t\n\u{a0}\u{3000}é-]{0,200}",
        r"\s{0,5}[ -~]{0,10}\s{0,5}",
    ]
}

/// Bytes a header value may hold (visible ASCII, space, tab, and obs-text 0x80–0xFF).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

/// `Authorization` values: any bytes, and a scheme that parses followed by any bytes.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        header_bytes(120),
        (
            "(Token|token|Bearer|bEaReR)",
            "[ \t]{0,2}",
            header_bytes(60)
        )
            .prop_map(|(scheme, gap, rest)| [scheme.as_bytes(), gap.as_bytes(), &rest].concat()),
    ]
}

/// A request with these headers and body; header values are raw bytes.
fn request(method: Method, headers: &[(&str, &[u8])], body: Vec<u8>) -> Request {
    let mut req = Request::new(Body::Binary(body));
    *req.method_mut() = method;
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value).expect("header_bytes() makes valid values");
        req.headers_mut()
            .append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    }
    req
}

/// Fails the case if `parsed` was accepted but breaks `rule`.
fn accepted_only_if<T: std::fmt::Debug, E>(
    parsed: Result<T, E>,
    rule: impl FnOnce(&T) -> bool,
) -> Result<(), TestCaseError> {
    if let Ok(value) = &parsed {
        prop_assert!(rule(value), "accepted {value:?}");
    }
    Ok(())
}

fn code(err: &ApiError) -> (u16, &'static str) {
    (err.status().as_u16(), err.code())
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/problem+json",
];

// ---- shared::http ----

proptest! {
    #[test]
    fn json_bodies_parse_to_exactly_the_object_they_hold(
        body in prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..200),
            "[ \\[\\]{}\":,0-9a-z\\\\]{0,40}".prop_map(String::into_bytes),
        ],
        declared in prop::option::of(prop::sample::select(JSON_TYPES)),
    ) {
        let headers: Vec<(&str, &[u8])> =
            declared.iter().map(|t| ("content-type", t.as_bytes())).collect();
        let parsed = json_object(&request(Method::POST, &headers, body.clone()));
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(expected)) => prop_assert_eq!(parsed.unwrap(), expected),
            Ok(_) => prop_assert_eq!(code(&parsed.unwrap_err()), (400, "invalid_field")),
            Err(_) => prop_assert_eq!(code(&parsed.unwrap_err()), (400, "malformed_json")),
        }
    }

    #[test]
    fn any_body_with_any_content_type_gets_an_answer_from_the_documented_set(
        declared in prop::option::of(header_bytes(80)),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let headers: Vec<(&str, &[u8])> =
            declared.iter().map(|t| ("content-type", t.as_slice())).collect();
        if let Err(err) = json_object(&request(Method::POST, &headers, body)) {
            prop_assert!(
                [
                    (400, "malformed_json"),
                    (400, "invalid_field"),
                    (415, "unsupported_media_type"),
                ]
                .contains(&code(&err)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn any_body_over_the_limit_is_refused_with_413(
        extra in 1usize..4096,
        declared in prop::option::of(prop_oneof![
            prop::sample::select(JSON_TYPES).prop_map(str::to_owned),
            Just("application/x-www-form-urlencoded".to_owned()),
            "[a-z]{1,8}/[a-z]{1,8}",
        ]),
    ) {
        // A valid JSON object, padded: only its size is wrong.
        let mut body = br#"{"message": "hello"}"#.to_vec();
        body.resize(MAX_BODY_BYTES + extra, b' ');
        let headers: Vec<(&str, &[u8])> =
            declared.iter().map(|t| ("content-type", t.as_bytes())).collect();
        let err = json_object(&request(Method::POST, &headers, body)).unwrap_err();
        prop_assert_eq!(code(&err), (413, "payload_too_large"));
    }

    #[test]
    fn form_bodies_read_as_their_fields(
        pairs in prop::collection::vec((any_text(), any_text()), 0..8),
    ) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let req = request(
            Method::POST,
            &[("content-type", b"application/x-www-form-urlencoded")],
            body.into_bytes(),
        );
        // A repeated name keeps its last value.
        let expected: Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        prop_assert_eq!(json_object(&req).unwrap(), expected);
    }

    #[test]
    fn other_declared_types_are_refused_with_415(
        essence in "[a-z]{1,12}/[a-z.-]{1,16}",
        params in "(; [a-z]{1,8}=[a-z0-9]{1,8}){0,2}",
    ) {
        prop_assume!(!essence.ends_with("json") && essence != "application/x-www-form-urlencoded");
        let declared = format!("{essence}{params}");
        let req = request(Method::POST, &[("content-type", declared.as_bytes())], b"{}".to_vec());
        prop_assert_eq!(code(&json_object(&req).unwrap_err()), (415, "unsupported_media_type"));
    }

    #[test]
    fn string_field_returns_the_string_or_names_the_field(
        obj in prop::collection::btree_map("[a-c]{1,2}", any_json(), 0..5),
    ) {
        let obj: Map<String, Value> = obj.into_iter().collect();
        for field in ["a", "b", "ab"] {
            match (string_field(&obj, field), obj.get(field)) {
                (Ok(text), Some(Value::String(held))) => prop_assert_eq!(text, held.as_str()),
                (Err(err), held) => {
                    prop_assert_eq!(code(&err), (400, "invalid_field"));
                    prop_assert_eq!(&err.body()["field"], field);
                    prop_assert!(!matches!(held, Some(Value::String(_))));
                }
                (result, held) => prop_assert!(false, "{result:?} for {held:?}"),
            }
        }
    }

    #[test]
    fn auth_token_returns_a_nonblank_part_of_the_header_or_401(value in authorization()) {
        let req = request(Method::GET, &[("authorization", &value)], Vec::new());
        match auth_token(&req) {
            Ok(token) => {
                prop_assert!(!token.is_empty());
                prop_assert_eq!(token, token.trim());
                prop_assert!(std::str::from_utf8(&value).unwrap().contains(token));
            }
            Err(err) => prop_assert_eq!(code(&err), (401, "invalid_token")),
        }
    }

    #[test]
    fn well_formed_authorization_headers_give_their_token(
        scheme in prop::sample::select(&["Token", "token", "Bearer", "BEARER"][..]),
        token in "[A-Za-z0-9_.~+/=-]{1,128}",
        pad in "[ \t]{0,3}",
    ) {
        let header = format!("{pad}{scheme} {token}{pad}");
        let req = request(Method::GET, &[("authorization", header.as_bytes())], Vec::new());
        prop_assert_eq!(auth_token(&req).unwrap(), token.as_str());
    }

    #[test]
    fn idempotency_keys_accepted_are_1_to_255_visible_ascii(value in header_bytes(300)) {
        let req = request(Method::POST, &[("idempotency-key", &value)], Vec::new());
        match idempotency_key(&req) {
            Ok(Some(key)) => {
                prop_assert!((1..=255).contains(&key.len()), "{} bytes", key.len());
                prop_assert!(key.bytes().all(|b| b.is_ascii_graphic()), "{key:?}");
            }
            Ok(None) => prop_assert!(false, "a sent key was ignored"),
            Err(err) => prop_assert_eq!(code(&err), (400, "invalid_field")),
        }
    }

    #[test]
    fn valid_idempotency_keys_are_kept_as_sent(key in "[!-~]{1,255}") {
        let req = request(Method::POST, &[("idempotency-key", key.as_bytes())], Vec::new());
        prop_assert_eq!(idempotency_key(&req).unwrap(), Some(key));
    }
}

/// An accepted token never contains whitespace (`Token a b` is refused, not read as `a b`).
#[test]
fn auth_tokens_never_contain_whitespace() {
    proptest!(|(value in authorization())| {
        let req = request(Method::GET, &[("authorization", &value)], Vec::new());
        accepted_only_if(auth_token(&req), |t| !t.chars().any(char::is_whitespace))?;
    });
}

// ---- shared::domain ----

proptest! {
    #[test]
    fn usernames_accepted_are_3_to_150_allowed_characters(raw in any_text()) {
        accepted_only_if(Username::parse(&raw), |name| {
            (3..=150).contains(&name.as_str().chars().count())
                && name
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c))
                && name.as_str() == raw
        })?;
    }

    #[test]
    fn valid_usernames_are_kept_as_typed_and_keyed_lowercase(raw in "[A-Za-z0-9@.+_-]{3,150}") {
        let name = Username::parse(&raw).unwrap();
        prop_assert_eq!(name.as_str(), raw.as_str());
        prop_assert_eq!(name.key(), raw.to_ascii_lowercase());
    }

    #[test]
    fn passwords_are_accepted_exactly_when_8_to_256_characters(raw in prop_oneof![
        any_text(),
        "[ -~\u{e9}\u{1f600}]{250,260}",
    ]) {
        let chars = raw.chars().count();
        prop_assert_eq!(Password::parse(&raw).is_ok(), (8..=256).contains(&chars));
        prop_assert_eq!(Password::parse_for_login(&raw).is_ok(), (1..=256).contains(&chars));
    }

    #[test]
    fn messages_are_accepted_exactly_when_not_blank_and_within_the_limit(
        raw in any_text(),
        max in 0usize..300,
    ) {
        let ok = !raw.trim().is_empty() && raw.chars().count() <= max;
        match ChatMessage::parse(&raw, max) {
            Ok(message) => {
                prop_assert!(ok);
                prop_assert_eq!(message.as_str(), raw.as_str());
                let fingerprint = message.fingerprint();
                prop_assert_eq!(fingerprint.len(), 64);
                prop_assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            Err(_) => prop_assert!(!ok),
        }
    }
}
