//! Arbitrary requests through every function that reads client input.
//!
//! A request is built either as an API Gateway REST proxy event (JSON, parsed by
//! `lambda_http` as on Lambda, base64 body or not) or directly as a `lambda_http::Request`
//! (headers from raw bytes, any method). Besides "never panics", the invariants a client
//! could notice are asserted, so libFuzzer reports a parser that accepts garbage too.

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use lambda_http::{
    Body, Request,
    http::{HeaderName, HeaderValue, Method, StatusCode},
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use shared::{
    domain::{ChatMessage, Password, Username},
    http::{
        MAX_BODY_BYTES, auth_token, error_response, idempotency_key, json_object, require_method,
        string_field,
    },
};

#[derive(Debug, Arbitrary)]
struct Input {
    as_event: bool,
    base64_body: bool,
    method: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Well-formed header names, so the interesting ones are reached often.
    known: Vec<(Known, Vec<u8>)>,
    /// Pads the body past the size limit now and then.
    pad_to_limit: bool,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Known {
    ContentType,
    Authorization,
    IdempotencyKey,
}

impl Known {
    fn name(self) -> &'static str {
        match self {
            Known::ContentType => "content-type",
            Known::Authorization => "authorization",
            Known::IdempotencyKey => "idempotency-key",
        }
    }
}

const TEMPLATE: &str = include_str!("../../events/chat.json");

fuzz_target!(|input: Input| {
    // Leading spaces keep a JSON body JSON, so only its size decides.
    let mut body = Vec::new();
    if input.pad_to_limit {
        body.resize(MAX_BODY_BYTES, b' ');
    }
    body.extend_from_slice(&input.body);
    let Some(req) = (if input.as_event {
        event_request(&input, &body)
    } else {
        direct_request(&input, &body)
    }) else {
        return;
    };
    check(&req);
});

/// An API Gateway REST event, through `lambda_http`'s own deserialiser.
fn event_request(input: &Input, body: &[u8]) -> Option<Request> {
    let mut event: Value = serde_json::from_str(TEMPLATE).expect("the sample event is JSON");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut headers = Map::new();
    let mut multi = Map::new();
    let named = input.known.iter().map(|(k, v)| (k.name().as_bytes(), v));
    let raw = input.headers.iter().map(|(k, v)| (k.as_slice(), v));
    for (name, value) in named.chain(raw) {
        headers.insert(text(name), Value::String(text(value)));
        multi.insert(text(name), Value::Array(vec![Value::String(text(value))]));
    }
    event["headers"] = Value::Object(headers);
    event["multiValueHeaders"] = Value::Object(multi);
    event["httpMethod"] = Value::String(text(&input.method));
    event["isBase64Encoded"] = Value::Bool(input.base64_body);
    event["body"] = Value::String(if input.base64_body {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        text(body)
    });
    // lambda_http refuses some events (a bad method, a bad header); that is its edge,
    // not ours, and Lambda would fail the invocation before our code runs.
    lambda_http::request::from_str(&event.to_string()).ok()
}

/// A request built directly, with raw header bytes.
fn direct_request(input: &Input, body: &[u8]) -> Option<Request> {
    let method = Method::from_bytes(&input.method).ok()?;
    let body = match std::str::from_utf8(body) {
        Ok(text) if !input.base64_body => Body::Text(text.to_owned()),
        _ => Body::Binary(body.to_vec()),
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    let named = input.known.iter().map(|(k, v)| (k.name().as_bytes(), v));
    let raw = input.headers.iter().map(|(k, v)| (k.as_slice(), v));
    for (name, value) in named.chain(raw) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            req.headers_mut().append(name, value);
        }
    }
    Some(req)
}

fn check(req: &Request) {
    let _ = require_method(req, Method::POST).map_err(|e| error_response(&e));
    let _ = require_method(req, Method::GET).map_err(|e| error_response(&e));

    let size = req.body().as_ref().len();
    match json_object(req) {
        Ok(obj) => {
            assert!(size <= MAX_BODY_BYTES, "accepted a {size}-byte body");
            fields(&obj);
        }
        Err(err) => {
            let code = err.code();
            assert!(
                [
                    "malformed_json",
                    "invalid_field",
                    "unsupported_media_type",
                    "payload_too_large"
                ]
                .contains(&code),
                "body refused with {code}"
            );
            if size > MAX_BODY_BYTES {
                assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
            }
            let _ = error_response(&err);
        }
    }

    match auth_token(req) {
        Ok(token) => {
            assert!(!token.is_empty());
            assert!(
                !token.chars().any(char::is_whitespace),
                "token with whitespace: {token:?}"
            );
        }
        Err(err) => assert_eq!(err.status(), StatusCode::UNAUTHORIZED),
    }

    match idempotency_key(req) {
        Ok(Some(key)) => {
            assert!((1..=255).contains(&key.len()), "key of {} bytes", key.len());
            assert!(key.bytes().all(|b| b.is_ascii_graphic()), "key {key:?}");
        }
        Ok(None) => assert!(req.headers().get("idempotency-key").is_none()),
        Err(err) => assert_eq!(err.status(), StatusCode::BAD_REQUEST),
    }
}

/// The domain parsers, on whatever strings the body held.
fn fields(obj: &Map<String, Value>) {
    for field in ["username", "password", "message"] {
        let Ok(text) = string_field(obj, field) else {
            continue;
        };
        if let Ok(name) = Username::parse(text) {
            let len = name.as_str().chars().count();
            assert!((3..=150).contains(&len), "username of {len} chars");
            assert!(
                name.as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c)),
                "username {:?}",
                name.as_str()
            );
            assert_eq!(name.key(), name.as_str().to_ascii_lowercase());
        }
        if Password::parse(text).is_ok() {
            assert!((8..=256).contains(&text.chars().count()));
        }
        let _ = Password::parse_for_login(text);
        if let Ok(message) = ChatMessage::parse(text, 8000) {
            assert!(!message.as_str().trim().is_empty());
            assert!(message.as_str().chars().count() <= 8000);
        }
    }
}
