//! The HTTP contract, through the real handlers: exact bodies, every status.

mod common;

use base64::Engine;
use common::*;
use serde_json::json;
use shared::api::register as register_fn;
use testkit::GeminiStandIn;

/// Each function's entry point, as its `main` calls it: what the deployed function
/// answers, headers included.
mod login_fn {
    pub use shared::api::sessions::route as handle;
}
mod tokens_fn {
    pub use shared::api::tokens_function as handle;
}

#[tokio::test]
async fn register_returns_the_original_body_and_4000_credits() {
    let app = app().await;
    let resp = register(&app, "john", PASSWORD).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(
        json_of(&resp),
        json!({"message": "User registered successfully.", "username": "john", "tokens": 4000})
    );
}

#[tokio::test]
async fn register_honours_a_configured_starting_balance() {
    let app = app_with(|c| c.start_tokens = 250).await;
    assert_eq!(
        json_of(&register(&app, "john", PASSWORD).await)["tokens"],
        250
    );
}

#[tokio::test]
async fn usernames_are_unique_whatever_their_case() {
    let app = app().await;
    assert_eq!(register(&app, "John", PASSWORD).await.status(), 201);
    for again in ["John", "john", "JOHN"] {
        let resp = register(&app, again, "another password").await;
        assert_eq!(resp.status(), 409, "{again}");
        assert_eq!(json_of(&resp)["code"], "username_taken");
    }
    // The first account is untouched: its password still works, under any case.
    assert_eq!(login(&app, "jOhN", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn register_explains_each_invalid_field() {
    let app = app().await;
    let cases = [
        (
            json!({"username": "john", "password": "pass123"}),
            "password",
        ),
        (
            json!({"username": "john", "password": "x".repeat(257)}),
            "password",
        ),
        (json!({"username": "jo", "password": PASSWORD}), "username"),
        (
            json!({"username": "john doe", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "jöhn", "password": PASSWORD}),
            "username",
        ),
        (json!({"password": PASSWORD}), "username"),
        (json!({"username": "john"}), "password"),
        (json!({"username": 42, "password": PASSWORD}), "username"),
        (json!({"username": "john", "password": null}), "password"),
    ];
    for (body, field) in cases {
        let req = event("POST", "/api/register/", None, Some(&body.to_string()));
        let resp = register_fn::handle(&app, req).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let got = json_of(&resp);
        assert_eq!(got["code"], "invalid_field", "{body}");
        assert_eq!(got["field"], field, "{body}");
        assert!(got["detail"].as_str().unwrap().contains(field), "{got}");
    }
    // None of them created the account.
    assert_eq!(register(&app, "john", PASSWORD).await.status(), 201);
}

#[tokio::test]
async fn bodies_that_are_not_a_json_object_are_400() {
    let app = app().await;
    for body in [
        "{not json",
        "",
        "[1,2]",
        "\"john\"",
        "{\"username\": \"john\", ",
    ] {
        let resp = register_fn::handle(&app, event("POST", "/api/register/", None, Some(body)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        let code = json_of(&resp)["code"].as_str().unwrap().to_owned();
        assert!(
            code == "malformed_json" || code == "invalid_field",
            "{body:?}: {code}"
        );
    }
    let resp = login_fn::handle(&app, event("POST", "/api/login/", None, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json_of(&resp)["code"], "malformed_json");
}

#[tokio::test]
async fn oversized_bodies_are_413_and_other_media_types_415() {
    let app = app().await;
    let huge = json!({"username": "john", "password": "x".repeat(70_000)}).to_string();
    let resp = register_fn::handle(&app, event("POST", "/api/register/", None, Some(&huge)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(json_of(&resp)["code"], "payload_too_large");

    let headers = json!({"Content-Type": "text/plain"});
    let body = json!({"username": "john", "password": PASSWORD}).to_string();
    let req = event_with("POST", "/api/register/", headers, Some((body, false)));
    let resp = register_fn::handle(&app, req).await.unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(json_of(&resp)["code"], "unsupported_media_type");
}

#[tokio::test]
async fn register_and_login_refuse_bodies_a_web_form_could_send_with_415() {
    // Form posts and bodies with no Content-Type (what a cross-site <form> or a
    // `no-cors` fetch can send without asking) are refused, so no web page can register
    // or log in on its visitors' behalf.
    let app = app().await;
    let json_body = json!({"username": "john", "password": PASSWORD}).to_string();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&json_body);
    let form = "username=john&password=correct+horse+battery".to_owned();
    let cases = [
        (json!({}), (encoded, true)),
        (
            json!({"Content-Type": "application/x-www-form-urlencoded"}),
            (form, false),
        ),
        (
            json!({"Content-Type": "application/x-www-form-urlencoded"}),
            (json_body.clone(), false),
        ),
        (
            json!({"Content-Type": "text/plain"}),
            (json_body.clone(), false),
        ),
        (json!({}), (json_body, false)),
    ];
    for (headers, body) in cases {
        for path in ["/api/register/", "/api/login/"] {
            let req = event_with("POST", path, headers.clone(), Some(body.clone()));
            let resp = match path {
                "/api/register/" => register_fn::handle(&app, req).await,
                _ => login_fn::handle(&app, req).await,
            }
            .unwrap();
            assert_eq!(resp.status(), 415, "{path} {headers}");
            assert_eq!(json_of(&resp)["code"], "unsupported_media_type");
            assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
        }
    }
    // None of them created the account.
    assert_eq!(register(&app, "john", PASSWORD).await.status(), 201);
}

#[tokio::test]
async fn every_function_refuses_other_methods_with_405() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let app = &chat_app.app;
    let cases = [
        ("GET", "/api/register/", "POST"),
        ("PUT", "/api/login/", "POST"),
        ("DELETE", "/api/tokens/", "GET"),
        ("GET", "/api/chat/", "POST"),
    ];
    for (method, path, allowed) in cases {
        let req = event(method, path, None, None);
        let resp = match path {
            "/api/register/" => register_fn::handle(app, req).await.unwrap(),
            "/api/login/" => login_fn::handle(app, req).await.unwrap(),
            "/api/tokens/" => tokens_fn::handle(app, req).await.unwrap(),
            _ => chat_request(&chat_app, req).await,
        };
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(header(&resp, "allow"), Some(allowed));
        assert_eq!(json_of(&resp)["code"], "method_not_allowed");
    }
    assert_eq!(standin.requests(), 0);
}

#[tokio::test]
async fn login_returns_a_token_that_reads_the_balance() {
    let app = app().await;
    register(&app, "john", PASSWORD).await;
    let resp = login(&app, "john", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let body = json_of(&resp);
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let token = body["token"].as_str().unwrap();
    // Opaque to clients, with 256 secret bits in it.
    assert!(token.len() > 64, "{token}");

    let resp = tokens_fn::handle(&app, event("GET", "/api/tokens/", Some(token), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&resp), json!({"tokens": 4000}));
    assert_eq!(header(&resp, "x-tokens-remaining"), Some("4000"));
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));
    assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn each_login_issues_a_new_token_and_old_ones_keep_working() {
    let app = app().await;
    let first = user_token(&app, "john").await;
    let second = json_of(&login(&app, "john", PASSWORD).await)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(balance(&app, &first).await, 4000);
    assert_eq!(balance(&app, &second).await, 4000);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_the_same_401() {
    let app = app().await;
    register(&app, "john", PASSWORD).await;
    let wrong = login(&app, "john", "not the password").await;
    let unknown = login(&app, "nobody", PASSWORD).await;
    let invalid_name = login(&app, "no one!", PASSWORD).await;
    for resp in [&wrong, &unknown, &invalid_name] {
        assert_eq!(resp.status(), 401);
        assert_eq!(
            json_of(resp),
            json!({"detail": "Invalid username or password.", "code": "invalid_credentials"})
        );
    }
}

#[tokio::test]
async fn tokens_needs_a_valid_token() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let unknown = "ab".repeat(32);
    let cases: [(Option<String>, &str); 6] = [
        (None, "not_authenticated"),
        (Some(format!("Token {unknown}")), "invalid_token"),
        (Some("Token short".into()), "invalid_token"),
        (Some(format!("Basic {token}")), "invalid_token"),
        (Some("Token".into()), "invalid_token"),
        (
            Some(format!("Token {}", token.to_uppercase().replace('A', "0"))),
            "invalid_token",
        ),
    ];
    for (authorization, code) in cases {
        let mut headers = json!({});
        if let Some(value) = &authorization {
            headers["Authorization"] = json!(value);
        }
        let resp = tokens_fn::handle(&app, event_with("GET", "/api/tokens/", headers, None))
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{authorization:?}");
        assert_eq!(header(&resp, "www-authenticate"), Some("Token"));
        assert_eq!(json_of(&resp)["code"], code, "{authorization:?}");
    }
    // Bearer is accepted as well as Token, in any case.
    let headers = json!({"Authorization": format!("bearer {token}")});
    let resp = tokens_fn::handle(&app, event_with("GET", "/api/tokens", headers, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = app_with(|c| c.token_ttl = std::time::Duration::ZERO).await;
    let token = user_token(&app, "john").await;
    let resp = tokens_fn::handle(&app, event("GET", "/api/tokens/", Some(&token), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(&resp)["code"], "token_expired");
    assert_eq!(header(&resp, "www-authenticate"), Some("Token"));
}

#[tokio::test]
async fn paths_work_with_and_without_the_trailing_slash() {
    let app = app().await;
    let body = json!({"username": "john", "password": PASSWORD}).to_string();
    let resp = register_fn::handle(&app, event("POST", "/api/register", None, Some(&body)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = login_fn::handle(&app, event("POST", "/api/login", None, Some(&body)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bodies_keep_the_original_field_order() {
    let app = app().await;
    let resp = register(&app, "john", PASSWORD).await;
    assert_eq!(
        std::str::from_utf8(resp.body().as_ref()).unwrap(),
        r#"{"message":"User registered successfully.","username":"john","tokens":4000}"#
    );
}

#[tokio::test]
async fn every_response_says_nosniff_and_no_store_whatever_the_route() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let app = &chat_app.app;
    let token = user_token(app, "john").await;
    let t = Some(token.as_str());
    let mut answers = Vec::new();

    let credentials = json!({"username": "mary", "password": PASSWORD}).to_string();
    for (method, path, body) in [
        ("POST", "/api/register/", Some(credentials.as_str())),
        ("POST", "/api/register/", Some("{oops")),
        ("GET", "/api/register/", None),
    ] {
        let resp = register_fn::handle(app, event(method, path, None, body)).await;
        answers.push((format!("{method} {path}"), resp.unwrap()));
    }
    let wrong = json!({"old_password": "not it", "new_password": "a new password"}).to_string();
    for (method, path, token, body) in [
        ("POST", "/api/login/", None, Some(credentials.as_str())),
        ("POST", "/api/login/", None, Some("{}")),
        ("GET", "/api/sessions/", t, None),
        ("POST", "/api/password/", t, Some(wrong.as_str())),
        ("POST", "/api/logout/", None, None),
    ] {
        let resp = login_fn::handle(app, event(method, path, token, body)).await;
        answers.push((format!("{method} {path}"), resp.unwrap()));
    }
    for (path, token) in [
        ("/api/tokens/", t),
        ("/api/tokens/", None),
        ("/api/models/", None),
        ("/api/openapi.json", None),
    ] {
        let resp = tokens_fn::handle(app, event("GET", path, token, None)).await;
        answers.push((format!("GET {path}"), resp.unwrap()));
    }

    // Chat: JSON, streamed, replayed; the history API, a conversation's deletion (204).
    let resp = chat(&chat_app, &token, "hello").await;
    let conversation = json_of(&resp)["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.push(("chat".into(), resp));
    let headers = json!({
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": format!("Token {token}"),
    });
    let body = json!({"message": "a streamed one"}).to_string();
    let req = event_with("POST", "/api/chat/", headers, Some((body, false)));
    answers.push(("chat, streamed".into(), chat_request(&chat_app, req).await));
    for _ in 0..2 {
        let resp = chat_with_key(&chat_app, &token, "keyed", "k-1").await;
        answers.push(("chat with a key".into(), resp));
    }
    answers.push((
        "chat without a token".into(),
        chat_request(&chat_app, event("POST", "/api/chat/", None, Some("{}"))).await,
    ));
    let one = format!("/api/conversations/{conversation}/");
    for (method, path) in [
        ("GET", "/api/conversations/".to_owned()),
        ("DELETE", one.clone()),
        ("DELETE", one),
    ] {
        let req = event(method, &path, t, None);
        answers.push((
            format!("{method} {path}"),
            chat_request(&chat_app, req).await,
        ));
    }

    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status().as_u16()).collect();
    for wanted in [200, 201, 204, 400, 401, 403, 404, 405] {
        assert!(statuses.contains(&wanted), "no {wanted} among {statuses:?}");
    }
    for (what, resp) in &answers {
        let status = resp.status();
        assert_eq!(
            header(resp, "x-content-type-options"),
            Some("nosniff"),
            "{what}: {status}"
        );
        assert_eq!(
            header(resp, "cache-control"),
            Some("no-store"),
            "{what}: {status}"
        );
    }
}
