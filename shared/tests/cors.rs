//! CORS (`CORS_ALLOWED_ORIGINS`): preflights answered by the functions, the headers on
//! every kind of answer (JSON, errors, streams, the page) for a listed origin, and none
//! for any other. (A real browser on two origins: `scripts/browser_test.py`.)

mod common;

use common::*;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::{App, api, config::AllowedOrigins};
use testkit::{Behavior, sse::SseReader};

const FRONTEND: &str = "https://chat.example.com";
const STRANGER: &str = "https://evil.example";

fn listed() -> AllowedOrigins {
    AllowedOrigins::parse(&format!("{FRONTEND}, http://localhost:5173")).unwrap()
}

async fn app_for(origins: AllowedOrigins) -> App {
    app_with(|c| c.cors = origins).await
}

fn from(origin: &str, method: &str, path: &str, mut headers: Value, body: Option<&str>) -> Request {
    headers["Origin"] = json!(origin);
    event_with(method, path, headers, body.map(|b| (b.to_owned(), false)))
}

fn preflight(origin: &str, path: &str, method: &str) -> Request {
    from(
        origin,
        "OPTIONS",
        path,
        json!({
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        }),
        None,
    )
}

fn cors_headers(resp: &Response<Body>) -> Vec<&str> {
    resp.headers()
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_listed_origin_is_granted_its_preflight_on_every_function() {
    let app = app_for(listed()).await;
    let standin = testkit::GeminiStandIn::start().await;
    let chat_app = chat_app_on(app.clone(), gemini_config(&standin));
    let answers = [
        api::register_function(&app, preflight(FRONTEND, "/api/register/", "POST")).await,
        api::login_function(&app, preflight(FRONTEND, "/api/login/", "POST")).await,
        api::tokens_function(&app, preflight(FRONTEND, "/api/tokens/", "GET")).await,
        Ok(chat_request(&chat_app, preflight(FRONTEND, "/api/chat/", "POST")).await),
        Ok(chat_request(
            &chat_app,
            preflight(FRONTEND, "/api/conversations/x/", "PATCH"),
        )
        .await),
    ];
    for resp in answers {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.body().is_empty());
        assert_eq!(header(&resp, "access-control-allow-origin"), Some(FRONTEND));
        let methods = header(&resp, "access-control-allow-methods").unwrap();
        for m in ["GET", "POST", "PATCH", "DELETE"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = header(&resp, "access-control-allow-headers").unwrap();
        for h in ["Authorization", "Content-Type", "Idempotency-Key", "Accept"] {
            assert!(allowed.contains(h), "{allowed}");
        }
        assert!(
            header(&resp, "access-control-max-age")
                .unwrap()
                .parse::<u32>()
                .unwrap()
                > 0
        );
        assert_eq!(header(&resp, "vary"), Some("Origin"));
        // Tokens travel in a header: never credentials mode.
        assert_eq!(header(&resp, "access-control-allow-credentials"), None);
    }
}

#[tokio::test]
async fn any_other_origin_gets_no_cors_headers_at_all() {
    let app = app_for(listed()).await;
    let resp = api::tokens_function(&app, preflight(STRANGER, "/api/tokens/", "GET"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(cors_headers(&resp).is_empty(), "{:?}", resp.headers());
    let resp = api::tokens_function(&app, from(STRANGER, "GET", "/api/models/", json!({}), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(cors_headers(&resp).is_empty(), "{:?}", resp.headers());
    // The answer still depends on who asked, so caches must key on it.
    assert_eq!(header(&resp, "vary"), Some("Origin"));
    // A listed origin differs in case or path only if it is another origin.
    for near in [
        "https://chat.example.com:8443",
        "http://chat.example.com",
        "https://chat.example.com.evil",
    ] {
        let resp = api::tokens_function(&app, from(near, "GET", "/api/models/", json!({}), None))
            .await
            .unwrap();
        assert!(cors_headers(&resp).is_empty(), "{near}");
    }
}

#[tokio::test]
async fn by_default_no_origin_is_listed_and_nothing_changes() {
    let app = app_for(AllowedOrigins::default()).await;
    let resp = api::tokens_function(&app, preflight(FRONTEND, "/api/tokens/", "GET"))
        .await
        .unwrap();
    assert!(cors_headers(&resp).is_empty());
    let resp = api::tokens_function(&app, from(FRONTEND, "GET", "/api/models/", json!({}), None))
        .await
        .unwrap();
    assert!(cors_headers(&resp).is_empty());
    assert_eq!(header(&resp, "vary"), None);
    // An OPTIONS that is no preflight is an ordinary request: 405 with Allow.
    let resp = api::tokens_function(&app, event("OPTIONS", "/api/tokens/", None, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), Some("GET"));
}

#[tokio::test]
async fn every_answer_to_a_listed_origin_carries_its_headers_errors_and_streams_included() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let mut chat_app = chat_app;
    chat_app.app.config.cors = listed();
    let auth = format!("Token {token}");
    let check = |resp: &Response<Body>, what: &str| {
        assert_eq!(
            header(resp, "access-control-allow-origin"),
            Some(FRONTEND),
            "{what}"
        );
        assert_eq!(
            header(resp, "vary").map(|v| v.contains("Origin")),
            Some(true),
            "{what}"
        );
        let exposed = header(resp, "access-control-expose-headers").unwrap();
        for h in ["X-Tokens-Remaining", "Retry-After", "Idempotent-Replayed"] {
            assert!(exposed.contains(h), "{what}: {exposed}");
        }
    };

    // A JSON answer, with the balance header the page must be able to read.
    let body = json!({"message": "hello"}).to_string();
    let headers = json!({"Content-Type": "application/json", "Authorization": auth});
    let resp = chat_request(
        &chat_app,
        from(FRONTEND, "POST", "/api/chat/", headers.clone(), Some(&body)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    check(&resp, "chat JSON");
    assert_eq!(header(&resp, "x-tokens-remaining"), Some("3900"));

    // A streamed answer: the headers are in the stream's prelude, before the first event.
    let mut sse = headers.clone();
    sse["Accept"] = json!("text/event-stream");
    let resp = api::chat_function(
        &chat_app,
        from(FRONTEND, "POST", "/api/chat/", sse, Some(&body)),
    )
    .await
    .unwrap();
    assert_eq!(header_of(&resp, "content-type"), Some("text/event-stream"));
    assert_eq!(
        header_of(&resp, "access-control-allow-origin"),
        Some(FRONTEND)
    );
    let bytes = resp.into_body().collect().await;
    let events = SseReader::default().push(&bytes);
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("done"));

    // Errors: a 401 without a token, a 405, the history API's 404.
    let resp = chat_request(
        &chat_app,
        from(FRONTEND, "POST", "/api/chat/", json!({}), Some(&body)),
    )
    .await;
    assert_eq!(resp.status(), 401);
    check(&resp, "401");
    let resp = api::tokens_function(
        &chat_app.app,
        from(FRONTEND, "DELETE", "/api/tokens/", json!({}), None),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 405);
    check(&resp, "405");
    let missing = format!("/api/conversations/{}/", uuid::Uuid::now_v7());
    let resp = chat_request(
        &chat_app,
        from(
            FRONTEND,
            "DELETE",
            &missing,
            json!({"Authorization": auth}),
            None,
        ),
    )
    .await;
    assert_eq!(resp.status(), 404);
    check(&resp, "404");

    // The page's own files too, beside their own Vary.
    let resp = api::tokens_function(
        &chat_app.app,
        from(
            FRONTEND,
            "GET",
            "/",
            json!({"Accept-Encoding": "gzip"}),
            None,
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    check(&resp, "page");
    assert_eq!(header(&resp, "vary"), Some("Accept-Encoding, Origin"));
}

#[tokio::test]
async fn the_json_only_rule_for_register_and_login_still_holds_for_listed_origins() {
    let app = app_for(listed()).await;
    let form = "username=eve&password=pass1234";
    let headers = json!({"Content-Type": "application/x-www-form-urlencoded"});
    let resp = api::register_function(
        &app,
        from(
            FRONTEND,
            "POST",
            "/api/register/",
            headers.clone(),
            Some(form),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = api::login_function(
        &app,
        from(FRONTEND, "POST", "/api/login/", headers, Some(form)),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 415);
}

fn header_of<'a, B>(resp: &'a Response<B>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn the_list_takes_exact_origins_only() {
    let list = AllowedOrigins::parse(" https://Chat.Example.com ,, http://localhost:5173").unwrap();
    assert!(list.allows("https://chat.example.com"));
    assert!(list.allows("http://localhost:5173"));
    assert!(!list.allows("http://localhost:5174"));
    assert!(AllowedOrigins::parse("").unwrap().is_empty());
    for bad in [
        "*",
        "https://*.example.com",
        "chat.example.com",
        "https://chat.example.com/",
        "https://chat.example.com/app",
        "ftp://chat.example.com",
        "null",
        "https://",
    ] {
        assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
    }
}
