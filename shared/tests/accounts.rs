//! Accounts people can trust: sessions that end, passwords that change, accounts that go,
//! and throttles that stop the abuser without stopping everyone else.

mod common;

use std::time::Duration;

use common::*;
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use shared::{App, api, audit};
use testkit::{Behavior, GeminiStandIn};

async fn call(
    app: &App,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Response<Body> {
    let body = body.map(|b| b.to_string());
    api::sessions::route(app, event(method, path, token, body.as_deref()))
        .await
        .unwrap()
}

async fn tokens_status(app: &App, token: &str) -> (u16, Value) {
    let resp = api::tokens::handle(app, event("GET", "/api/tokens/", Some(token), None))
        .await
        .unwrap();
    (resp.status().as_u16(), json_of(&resp))
}

async fn second_token(app: &App, name: &str) -> String {
    let resp = login(app, name, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    json_of(&resp)["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_logged_out_token_gets_401_and_other_sessions_keep_working() {
    let app = app().await;
    let first = user_token(&app, "john").await;
    let second = second_token(&app, "john").await;
    let resp = call(&app, "POST", "/api/logout/", Some(&first), None).await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    let (status, body) = tokens_status(&app, &first).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(tokens_status(&app, &second).await.0, 200);
    // Logging out again with the ended token: it is no longer anything.
    let resp = call(&app, "POST", "/api/logout", Some(&first), None).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn logout_all_ends_a_second_session() {
    let app = app().await;
    let first = user_token(&app, "john").await;
    let second = second_token(&app, "john").await;
    let resp = call(&app, "POST", "/api/logout/all/", Some(&first), None).await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    assert_eq!(json_of(&resp)["ended"], 2);
    assert_eq!(tokens_status(&app, &second).await.0, 401);
    assert_eq!(tokens_status(&app, &first).await.0, 401);
    // A new login works again.
    assert_eq!(
        tokens_status(&app, &second_token(&app, "john").await)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn sessions_are_listed_without_their_tokens() {
    let app = app().await;
    let first = user_token(&app, "john").await;
    let second = second_token(&app, "john").await;
    let resp = call(&app, "GET", "/api/sessions/", Some(&second), None).await;
    assert_eq!(resp.status(), 200);
    let text = std::str::from_utf8(resp.body().as_ref())
        .unwrap()
        .to_owned();
    let secret = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    assert!(
        !text.contains(&secret(&first)) && !text.contains(&secret(&second)),
        "{text}"
    );
    let sessions = json_of(&resp)["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    for s in &sessions {
        let (created, used, expires) = (
            s["created_at"].as_u64().unwrap(),
            s["last_used"].as_u64().unwrap(),
            s["expires_at"].as_u64().unwrap(),
        );
        assert!(created <= used && expires >= created + 29 * 86_400, "{s}");
    }
}

#[tokio::test]
async fn logins_beyond_the_cap_end_the_oldest_session() {
    let app = app_with(|c| c.max_sessions = 2).await;
    let first = user_token(&app, "john").await;
    let second = second_token(&app, "john").await;
    let third = second_token(&app, "john").await;
    assert_eq!(tokens_status(&app, &first).await.0, 401);
    assert_eq!(tokens_status(&app, &second).await.0, 200);
    assert_eq!(tokens_status(&app, &third).await.0, 200);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = app_with(|c| c.session_idle = Duration::from_millis(300)).await;
    let token = user_token(&app, "john").await;
    assert_eq!(tokens_status(&app, &token).await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = tokens_status(&app, &token).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_expired"))
    );
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let mut forged = token[..token.len() - 1].to_owned();
    forged.push(if token.ends_with('0') { '1' } else { '0' });
    assert_eq!(tokens_status(&app, &forged).await.0, 401);
    // Someone else's session id under john's name.
    let mary = user_token(&app, "mary").await;
    let mary_secret = mary.rsplit('.').next().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mixed = format!("{}.{}.{}", parts[0], parts[1], mary_secret);
    assert_eq!(tokens_status(&app, &mixed).await.0, 401);
}

#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let app = app().await;
    let first = user_token(&app, "john").await;
    let second = second_token(&app, "john").await;
    let wrong = json!({"old_password": "not it at all", "new_password": "a new password"});
    let resp = call(&app, "POST", "/api/password/", Some(&first), Some(wrong)).await;
    // Not a 401: the token is good, and a client must not take it for a dead session.
    assert_eq!(resp.status(), 403);
    assert_eq!(json_of(&resp)["code"], "wrong_password");
    assert_eq!(tokens_status(&app, &first).await.0, 200);
    assert_eq!(
        tokens_status(&app, &second).await.0,
        200,
        "a wrong old password changes nothing"
    );
    let short = json!({"old_password": PASSWORD, "new_password": "short"});
    let resp = call(&app, "POST", "/api/password/", Some(&first), Some(short)).await;
    assert_eq!(
        (resp.status().as_u16(), json_of(&resp)["field"].clone()),
        (400, json!("new_password"))
    );

    let change = json!({"old_password": PASSWORD, "new_password": "a new password"});
    let resp = call(&app, "POST", "/api/password/", Some(&first), Some(change)).await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    assert_eq!(
        tokens_status(&app, &first).await.0,
        200,
        "the asking session stays"
    );
    assert_eq!(tokens_status(&app, &second).await.0, 401);
    assert_eq!(login(&app, "john", PASSWORD).await.status(), 401);
    assert_eq!(login(&app, "john", "a new password").await.status(), 200);
}

/// Five wrong passwords for `name`, then the sixth attempt's response.
async fn sixth_attempt(app: &App, name: &str, sixth_password: &str) -> Response<Body> {
    for i in 0..5 {
        let resp = login(app, name, "wrong password").await;
        assert_eq!(resp.status(), 401, "attempt {i} for {name}");
    }
    login(app, name, sixth_password).await
}

#[tokio::test]
async fn the_sixth_wrong_password_in_a_row_is_throttled_alike_for_known_and_unknown_names() {
    let app = app().await;
    user_token(&app, "john").await;
    let known = sixth_attempt(&app, "john", "wrong password").await;
    let unknown = sixth_attempt(&app, "nobody", "wrong password").await;
    for resp in [&known, &unknown] {
        assert_eq!(resp.status(), 429);
        let wait: u64 = header(resp, "retry-after").unwrap().parse().unwrap();
        assert!((29..=30).contains(&wait), "{wait}");
    }
    assert_eq!(
        known.body().as_ref(),
        unknown.body().as_ref(),
        "identical bodies"
    );
    let names = |r: &Response<Body>| {
        let mut n: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&known), names(&unknown), "identical headers");
    assert_eq!(json_of(&known)["code"], "too_many_failed_logins");
    // While throttled, the right password gets the same answer: no oracle.
    let right = login(&app, "john", PASSWORD).await;
    assert_eq!(right.status(), 429);
    assert_eq!(right.body().as_ref(), known.body().as_ref());
    // Other names are not affected.
    assert_eq!(register(&app, "mary", PASSWORD).await.status(), 201);
    assert_eq!(login(&app, "mary", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_successful_login_resets_the_run_of_failures() {
    let app = app().await;
    user_token(&app, "john").await;
    for _ in 0..4 {
        assert_eq!(login(&app, "john", "wrong password").await.status(), 401);
    }
    assert_eq!(login(&app, "john", PASSWORD).await.status(), 200);
    for _ in 0..5 {
        assert_eq!(login(&app, "john", "wrong password").await.status(), 401);
    }
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_across_names() {
    let app = app_with(|c| c.limits.login_ip_failures = 3).await;
    for name in ["a-one", "a-two", "a-three"] {
        assert_eq!(login(&app, name, "wrong password").await.status(), 401);
    }
    let resp = login(&app, "a-four", "wrong password").await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_some());
}

#[tokio::test]
async fn registrations_from_one_address_are_limited() {
    let app = app_with(|c| c.limits.register_ip_limit = 2).await;
    assert_eq!(register(&app, "first", PASSWORD).await.status(), 201);
    assert_eq!(register(&app, "second", PASSWORD).await.status(), 201);
    let resp = register(&app, "third", PASSWORD).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(json_of(&resp)["code"], "too_many_registrations");
    assert!(header(&resp, "retry-after").is_some());
    assert_eq!(
        login(&app, "third", PASSWORD).await.status(),
        401,
        "not created"
    );
}

#[tokio::test]
async fn a_chat_over_the_per_minute_rate_gets_429_and_costs_nothing() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.limits.chats_per_minute = 2).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    testkit::demo::wait_for_a_fresh_minute(10).await;
    let first = chat(&chat_app, &token, "one").await;
    let second = chat(&chat_app, &token, "two").await;
    let third = chat(&chat_app, &token, "three").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(third.status(), 429, "{}", json_of(&third));
    assert_eq!(json_of(&third)["code"], "chat_rate_exceeded");
    assert!(header(&third, "retry-after").is_some());
    assert_eq!(balance(&chat_app.app, &token).await, 4000 - 2 * 100);
    assert_eq!(standin.requests(), 2);
    assert_books_balance(&chat_app.app, "john").await;
}

#[tokio::test]
async fn chats_beyond_the_in_flight_limit_get_429_and_cost_nothing() {
    let standin = GeminiStandIn::with_behavior(Behavior::Slow(Duration::from_millis(1500))).await;
    let app = app_with(|c| c.limits.chats_in_flight = 1).await;
    let chat_app = std::sync::Arc::new(chat_app_on(app, gemini_config(&standin)));
    let token = user_token(&chat_app.app, "john").await;
    let (a, t) = (chat_app.clone(), token.clone());
    let slow = tokio::spawn(async move { chat(&a, &t, "slow one").await.status() });
    while standin.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = chat(&chat_app, &token, "meanwhile").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(json_of(&resp)["code"], "too_many_chats_in_flight");
    assert_eq!(header(&resp, "retry-after"), Some("1"));
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        balance(&chat_app.app, &token).await,
        3900,
        "only the slow chat was paid"
    );
    assert_books_balance(&chat_app.app, "john").await;
}

#[tokio::test]
async fn a_chat_with_a_logged_out_token_is_refused_before_any_charge() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let token = user_token(&chat_app.app, "john").await;
    let other = second_token(&chat_app.app, "john").await;
    call(&chat_app.app, "POST", "/api/logout/", Some(&token), None).await;
    let resp = chat(&chat_app, &token, "hello").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(standin.requests(), 0);
    assert_eq!(balance(&chat_app.app, &other).await, 4000);
}

async fn delete(app: &App, token: &str, password: &str) -> Response<Body> {
    call(
        app,
        "DELETE",
        "/api/account/",
        Some(token),
        Some(json!({ "password": password })),
    )
    .await
}

#[tokio::test]
async fn a_deleted_accounts_books_still_audit_clean() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let app = &chat_app.app;
    let token = user_token(app, "john").await;
    let other = second_token(app, "john").await;
    assert_eq!(
        chat(&chat_app, &token, "a secret question").await.status(),
        200
    );
    assert_eq!(chat(&chat_app, &token, "[standin:503]").await.status(), 503);
    assert_eq!(
        chat(&chat_app, &token, "another secret").await.status(),
        200
    );
    let resp = chat_with_key(&chat_app, &token, "keyed secret", "k-1").await;
    assert_eq!(resp.status(), 200);

    let wrong = delete(app, &token, "wrong password").await;
    assert_eq!(
        (wrong.status().as_u16(), json_of(&wrong)["code"].clone()),
        (403, json!("wrong_password"))
    );
    let resp = delete(app, &token, PASSWORD).await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));

    // Sessions went with it; the user's items are gone; the name is free.
    assert_eq!(tokens_status(app, &token).await.0, 401);
    assert_eq!(tokens_status(app, &other).await.0, 401);
    assert!(app.store.chats("john").await.unwrap().is_empty());
    assert!(audit::audit(&app.store, "john").await.unwrap().is_none());
    let items = table_items(app).await;
    let text = format!("{items:?}");
    assert!(
        !text.contains("secret"),
        "conversation text is gone: {text}"
    );
    assert!(!text.contains("USER#john"), "{text}");

    // The charge records stay, anonymised, under a tombstone whose books balance.
    let tombstone = items
        .iter()
        .find_map(|i| {
            let pk = i.get("pk")?.as_s().ok()?;
            (i.get("sk")?.as_s().ok()? == "ACCOUNT")
                .then(|| pk.trim_start_matches("DELETED#").to_owned())
        })
        .expect("a tombstone");
    let books = audit::audit_deleted(&app.store, &tombstone)
        .await
        .unwrap()
        .unwrap();
    assert!(books.is_balanced(), "{books}");
    assert_eq!(
        (
            books.granted,
            books.balance,
            books.settled,
            books.completed_chats,
            books.refunded_chats
        ),
        (4000, 3700, 300, 3, 1)
    );

    // The name is free again, and the new account starts clean.
    let fresh = user_token(app, "john").await;
    assert_eq!(balance(app, &fresh).await, 4000);
    assert_books_balance(app, "john").await;
}

#[tokio::test]
async fn an_account_with_a_chat_running_is_not_deleted() {
    let standin = GeminiStandIn::with_behavior(Behavior::Slow(Duration::from_millis(1500))).await;
    let chat_app = std::sync::Arc::new(chat_app(&standin).await);
    let token = user_token(&chat_app.app, "john").await;
    let (a, t) = (chat_app.clone(), token.clone());
    let slow = tokio::spawn(async move { chat(&a, &t, "slow one").await.status() });
    while standin.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = delete(&chat_app.app, &token, PASSWORD).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json_of(&resp)["code"], "chats_running");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(delete(&chat_app.app, &token, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn wrong_passwords_behind_a_stolen_token_are_throttled_like_logins() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let wrong = json!({"old_password": "a guess", "new_password": "a new password"});
    for _ in 0..5 {
        let resp = call(
            &app,
            "POST",
            "/api/password/",
            Some(&token),
            Some(wrong.clone()),
        )
        .await;
        assert_eq!(resp.status(), 403);
    }
    let resp = call(&app, "POST", "/api/password/", Some(&token), Some(wrong)).await;
    assert_eq!(resp.status(), 429);
    let resp = delete(&app, &token, PASSWORD).await;
    assert_eq!(resp.status(), 429, "even the right password waits");
    assert_eq!(login(&app, "John", PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn tokens_costs_one_read_and_chat_a_read_a_debit_and_the_settle() {
    let standin = GeminiStandIn::start().await;
    let direct = chat_app(&standin).await;
    let token = user_token(&direct.app, "john").await;
    // Counts what reaches DynamoDB: no faults set.
    let relay = testkit::faults::FaultProxy::in_front_of_local().await;
    let ops = || -> Vec<String> {
        relay
            .take_operations()
            .iter()
            .map(|op| op.to_ascii_lowercase())
            .collect()
    };
    let store = store_through(&relay, direct.app.store.table()).await;
    let app = App::new(direct.app.config.clone(), store);
    let chat_app = chat_app_on(app, gemini_config(&standin));

    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    assert_eq!(ops(), ["getitem"]);
    assert_eq!(chat(&chat_app, &token, "hello").await.status(), 200);
    let mut ops_of_chat = ops();
    // The settle's three writes (the chat item, the close, the conversation) go side by
    // side, in any order; a new conversation has no history to read.
    ops_of_chat[2..].sort();
    assert_eq!(
        ops_of_chat,
        [
            "getitem",
            "updateitem",
            "putitem",
            "updateitem",
            "updateitem"
        ]
    );
    let resp = call(&chat_app.app, "GET", "/api/sessions/", Some(&token), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ops(), ["getitem"]);
}

#[tokio::test]
async fn guesses_sent_all_at_once_get_no_more_tries_than_guesses_in_a_row() {
    let app = std::sync::Arc::new(app().await);
    user_token(&app, "john").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.spawn(async move {
            login(&app, "john", &format!("guess number {i}"))
                .await
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
}
