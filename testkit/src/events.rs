//! API Gateway REST proxy events for process tests, built on the sample events in
//! `events/` so they have the shape API Gateway sends.

use serde_json::{Value, json};

const BASE: &str = include_str!("../../events/tokens.json");

/// `method path` with `headers` and an optional raw body, from client address `ip`.
pub fn event(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    ip: &str,
) -> Value {
    let mut event: Value = serde_json::from_str(BASE).expect("events/tokens.json is JSON");
    event["httpMethod"] = json!(method);
    event["path"] = json!(path);
    event["resource"] = json!(path);
    event["requestContext"]["httpMethod"] = json!(method);
    event["requestContext"]["resourcePath"] = json!(path);
    event["requestContext"]["path"] = json!(format!("/prod{path}"));
    event["requestContext"]["identity"]["sourceIp"] = json!(ip);
    for name in ["Authorization", "Content-Type"] {
        event["headers"].as_object_mut().unwrap().remove(name);
        event["multiValueHeaders"]
            .as_object_mut()
            .unwrap()
            .remove(name);
    }
    for (name, value) in headers {
        event["headers"][*name] = json!(value);
        event["multiValueHeaders"][*name] = json!([value]);
    }
    event["body"] = body.map_or(Value::Null, |b| json!(b));
    event["isBase64Encoded"] = json!(false);
    event
}

/// A JSON request, with a token if given.
pub fn json_event(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let auth = token.map(|t| format!("Token {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let body = body.map(|b| b.to_string());
    event(method, path, &headers, body.as_deref(), "198.51.100.7")
}
