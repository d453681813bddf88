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
    let resp = api::tokens_function(app, event("GET", "/api/tokens/", Some(token), None))
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
        // A 30 s back-off, said in whole minutes.
        assert_eq!(header(resp, "retry-after"), Some("60"));
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
    let standin = GeminiStandIn::with_behavior(Behavior::Slow(Duration::from_millis(4000))).await;
    let chat_app = std::sync::Arc::new(chat_app(&standin).await);
    let token = user_token(&chat_app.app, "john").await;
    let (a, t) = (chat_app.clone(), token.clone());
    let slow = tokio::spawn(async move { chat(&a, &t, "slow one").await.status() });
    while standin.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client retrying as told: the right password, each time, never runs into the
    // wrong-password back-off.
    for attempt in 0..6 {
        let resp = delete(&chat_app.app, &token, PASSWORD).await;
        assert_eq!(resp.status(), 409, "attempt {attempt}");
        assert_eq!(json_of(&resp)["code"], "chats_running");
        assert!(!slow.is_finished(), "the chat must still be running");
    }
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(delete(&chat_app.app, &token, PASSWORD).await.status(), 200);
}

async fn change_password(app: &App, token: &str, old: &str, new: &str) -> Response<Body> {
    let body = json!({"old_password": old, "new_password": new});
    call(app, "POST", "/api/password/", Some(token), Some(body)).await
}

#[tokio::test]
async fn wrong_passwords_behind_a_stolen_token_are_throttled_per_session() {
    let app = std::sync::Arc::new(app().await);
    let stolen = user_token(&app, "john").await;
    // Twenty guesses at once through the stolen session: five are checked.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (app, stolen) = (app.clone(), stolen.clone());
        tasks.spawn(async move {
            let resp =
                change_password(&app, &stolen, &format!("guess {i}"), "a new password").await;
            (resp.status().as_u16(), json_of(&resp)["code"].clone())
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    let count = |status, code: &str| {
        answers
            .iter()
            .filter(|a| **a == (status, json!(code)))
            .count()
    };
    assert_eq!(count(403, "wrong_password"), 5, "{answers:?}");
    assert_eq!(count(429, "too_many_wrong_passwords"), 15, "{answers:?}");
    // Held back, that session gets the same answer with the right password.
    let resp = change_password(&app, &stolen, PASSWORD, "a new password").await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(wait > 0 && wait.is_multiple_of(60), "{wait}");
    assert_eq!(delete(&app, &stolen, PASSWORD).await.status(), 429);

    // None of it stands in the owner's way: a login, then a password change from the
    // new session, which ends the stolen one.
    let owner = second_token(&app, "john").await;
    let resp = change_password(&app, &owner, PASSWORD, "a new password").await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    assert_eq!(tokens_status(&app, &stolen).await.0, 401);
    assert_eq!(tokens_status(&app, &owner).await.0, 200);
}

#[tokio::test]
async fn strangers_failed_logins_never_block_a_signed_in_users_password_checks() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    for i in 0..8 {
        let resp = login_from(&app, "john", "a guess", "203.0.113.9").await;
        assert_eq!(resp.status(), if i < 5 { 401 } else { 429 }, "attempt {i}");
    }
    let resp = change_password(&app, &token, PASSWORD, "a new password").await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    let resp = delete(&app, &token, "a new password").await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
}

/// The owner's home network (and its other addresses), and one attacker address.
const HOME: &str = "198.51.100.7";
const HOME_TOO: &str = "198.51.100.201";
const ATTACKER: &str = "203.0.113.9";

/// What a 429 looks like apart from its Retry-After value: status, body, header names.
fn shape(resp: &Response<Body>) -> (u16, Vec<u8>, Vec<String>) {
    let mut names: Vec<String> = resp.headers().keys().map(|k| k.to_string()).collect();
    names.sort();
    (resp.status().as_u16(), resp.body().to_vec(), names)
}

/// Guesses for `name` with a wrong password: five from [`ATTACKER`] and its 429s, then one
/// from each of `networks` fresh networks. Returns how many were checked (got 401) from
/// the many networks, and the last refusal.
async fn hammer(app: &App, name: &str, networks: usize) -> (usize, Response<Body>) {
    for i in 0..5 {
        let resp = login_from(app, name, "a wrong guess", ATTACKER).await;
        assert_eq!(resp.status(), 401, "{name}: attempt {i}");
    }
    for _ in 0..3 {
        let resp = login_from(app, name, "a wrong guess", ATTACKER).await;
        assert_eq!(resp.status(), 429, "{name}");
    }
    let (mut checked, mut last) = (0, None);
    for i in 0..networks {
        let ip = format!("192.0.{i}.1");
        let resp = login_from(app, name, "another wrong guess", &ip).await;
        match resp.status().as_u16() {
            401 => checked += 1,
            429 => last = Some(resp),
            other => panic!("{name} from {ip}: {other}"),
        }
    }
    (checked, last.expect("the name's ceiling was reached"))
}

#[tokio::test]
async fn an_attacker_at_one_or_many_addresses_cannot_lock_the_owner_out() {
    let app = app_with(|c| c.limits.login_name_failures = 12).await;
    assert_eq!(
        register_from(&app, "john", PASSWORD, HOME).await.status(),
        201
    );
    assert_eq!(login_from(&app, "john", PASSWORD, HOME).await.status(), 200);

    // One address: five guesses, then the back-off, for the right password too.
    for i in 0..5 {
        let resp = login_from(&app, "john", "a wrong guess", ATTACKER).await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    let held = login_from(&app, "john", PASSWORD, ATTACKER).await;
    assert_eq!(
        held.status(),
        429,
        "no oracle: the right password waits too"
    );
    assert_eq!(json_of(&held)["code"], "too_many_failed_logins");
    // The owner, at home, from any address there: in.
    assert_eq!(login_from(&app, "john", PASSWORD, HOME).await.status(), 200);
    assert_eq!(
        login_from(&app, "john", PASSWORD, HOME_TOO).await.status(),
        200
    );

    // Many networks: together they get the name's ceiling of checked guesses, no more
    // (five of the twelve were spent above).
    let mut checked = 0;
    for i in 0..20 {
        let resp = login_from(&app, "john", "a wrong guess", &format!("192.0.{i}.1")).await;
        match resp.status().as_u16() {
            401 => checked += 1,
            status => assert_eq!(status, 429, "from 192.0.{i}.1"),
        }
    }
    assert_eq!(checked, 7, "guessing stays throttled");
    // A network the account never logged in from waits, whatever the password...
    let fresh = login_from(&app, "john", PASSWORD, "192.0.200.1").await;
    assert_eq!(fresh.status(), 429);
    // ...while the owner, at home, is in.
    let resp = login_from(&app, "john", PASSWORD, HOME_TOO).await;
    assert_eq!(resp.status(), 200);
    let token = json_of(&resp)["token"].as_str().unwrap().to_owned();
    assert_eq!(tokens_status(&app, &token).await.0, 200);
}

#[tokio::test]
async fn a_known_and_an_unknown_name_under_attack_answer_alike() {
    let app = app_with(|c| c.limits.login_name_failures = 12).await;
    assert_eq!(
        register_from(&app, "john", PASSWORD, HOME).await.status(),
        201
    );
    assert_eq!(login_from(&app, "john", PASSWORD, HOME).await.status(), 200);
    let (known_checked, known) = hammer(&app, "john", 12).await;
    let (unknown_checked, unknown) = hammer(&app, "nobody", 12).await;
    assert_eq!((known_checked, unknown_checked), (7, 7));
    assert_eq!(shape(&known), shape(&unknown));
    for resp in [&known, &unknown] {
        let wait: u64 = header(resp, "retry-after").unwrap().parse().unwrap();
        assert!(wait > 0 && wait.is_multiple_of(60), "whole minutes: {wait}");
    }
    // The right password from a fresh network: the same refusal as a wrong one.
    let right = login_from(&app, "john", PASSWORD, "192.0.201.1").await;
    assert_eq!(shape(&right), shape(&known));
}

#[tokio::test]
async fn refused_logins_never_count_against_the_network_they_came_from() {
    let app = app_with(|c| c.limits.login_ip_failures = 3).await;
    assert_eq!(register(&app, "john", PASSWORD).await.status(), 201);
    // Others behind the owner's shared address use up its failures.
    const SHARED: &str = "198.51.100.7";
    for name in ["a-one", "a-two", "a-three"] {
        assert_eq!(
            login_from(&app, name, "a wrong guess", SHARED)
                .await
                .status(),
            401
        );
    }
    // The owner there is refused before any check, however often they try...
    for attempt in 0..6 {
        let resp = login_from(&app, "john", PASSWORD, SHARED).await;
        assert_eq!(resp.status(), 429, "attempt {attempt}");
    }
    // ...and none of it counted against their network: from another address of it, in.
    let resp = login_from(&app, "john", PASSWORD, "198.51.100.8").await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
}

/// A store that waits as long as a test holds a request at the proxy.
fn patient() -> shared::store::RetryPolicy {
    shared::store::RetryPolicy {
        attempt_timeout: Duration::from_secs(120),
        budget: Duration::from_secs(120),
        ..Default::default()
    }
}

/// `john`'s login through a proxy that holds its session's write (after the password
/// was checked) until the returned hold is released.
async fn held_login(
    app: &App,
) -> (
    testkit::faults::FaultProxy,
    testkit::faults::Hold,
    tokio::task::JoinHandle<Response<Body>>,
) {
    let relay = testkit::faults::FaultProxy::in_front_of_local().await;
    let through = app_through(&relay, app, patient()).await;
    // The session's write names the new session `#new`; nothing else does.
    let hold = relay.hold("UpdateItem", "\"#new\"");
    let login = tokio::spawn(async move { login(&through, "john", PASSWORD).await });
    hold.arrived(1).await;
    (relay, hold, login)
}

#[tokio::test]
async fn a_login_checked_before_a_password_change_opens_no_session_after_it() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let (_relay, hold, held) = held_login(&app).await;
    let resp = change_password(&app, &token, PASSWORD, "a new password").await;
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    hold.release();
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 401, "{}", json_of(&resp));
    let resp = call(&app, "GET", "/api/sessions/", Some(&token), None).await;
    assert_eq!(json_of(&resp)["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_login_checked_before_logout_everywhere_opens_no_session_after_it() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let (_relay, hold, held) = held_login(&app).await;
    let resp = call(&app, "POST", "/api/logout/all/", Some(&token), None).await;
    assert_eq!(resp.status(), 200);
    hold.release();
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 401, "{}", json_of(&resp));
    // Nothing of john's is signed in; a new login works.
    let fresh = second_token(&app, "john").await;
    let resp = call(&app, "GET", "/api/sessions/", Some(&fresh), None).await;
    assert_eq!(json_of(&resp)["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_login_checked_before_the_account_was_deleted_never_lands_in_the_names_next_account() {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let (_relay, hold, held) = held_login(&app).await;
    assert_eq!(delete(&app, &token, PASSWORD).await.status(), 200);
    // Someone else takes the name, with their own password.
    let newcomer = "the newcomer's password";
    assert_eq!(register(&app, "john", newcomer).await.status(), 201);
    hold.release();
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 401, "{}", json_of(&resp));
    let resp = login(&app, "john", newcomer).await;
    let theirs = json_of(&resp)["token"].as_str().unwrap().to_owned();
    let resp = call(&app, "GET", "/api/sessions/", Some(&theirs), None).await;
    assert_eq!(
        json_of(&resp)["sessions"].as_array().unwrap().len(),
        1,
        "only the newcomer's own session"
    );
}

#[tokio::test]
async fn a_logout_everywhere_checked_before_the_account_was_deleted_never_ends_the_next_owners_sessions()
 {
    let app = app().await;
    let token = user_token(&app, "john").await;
    let relay = testkit::faults::FaultProxy::in_front_of_local().await;
    let through = app_through(&relay, &app, patient()).await;
    // Only "log out everywhere" empties the sessions map.
    let hold = relay.hold("UpdateItem", "sessions = :empty");
    let held = {
        let token = token.clone();
        tokio::spawn(
            async move { call(&through, "POST", "/api/logout/all/", Some(&token), None).await },
        )
    };
    hold.arrived(1).await;
    assert_eq!(delete(&app, &token, PASSWORD).await.status(), 200);
    let newcomer = "the newcomer's password";
    assert_eq!(register(&app, "john", newcomer).await.status(), 201);
    let resp = login(&app, "john", newcomer).await;
    let theirs = json_of(&resp)["token"].as_str().unwrap().to_owned();
    hold.release();
    held.await.unwrap();
    let resp = call(&app, "GET", "/api/sessions/", Some(&theirs), None).await;
    assert_eq!(
        resp.status(),
        200,
        "the newcomer is still signed in: {}",
        json_of(&resp)
    );
}

#[tokio::test]
async fn registrations_beyond_the_hours_budget_are_paused_for_every_address() {
    let app = app_with(|c| c.limits.registrations_per_hour = 3).await;
    // The budget is the clock hour's: don't start in its last seconds.
    let into = shared::store::now_millis() % 3_600_000;
    if into > 3_600_000 - 20_000 {
        tokio::time::sleep(Duration::from_millis(3_600_000 - into + 50)).await;
    }
    assert_eq!(
        register_from(&app, "first", PASSWORD, "10.0.0.1")
            .await
            .status(),
        201
    );
    assert_eq!(
        register_from(&app, "second", PASSWORD, "10.0.1.1")
            .await
            .status(),
        201
    );
    // A name already taken makes no account, so it spends none of the budget.
    assert_eq!(
        register_from(&app, "first", PASSWORD, "10.0.2.1")
            .await
            .status(),
        409
    );
    assert_eq!(
        register_from(&app, "third", PASSWORD, "10.0.3.1")
            .await
            .status(),
        201
    );
    let resp = register_from(&app, "fourth", PASSWORD, "10.0.4.1").await;
    assert_eq!(resp.status(), 429, "{}", json_of(&resp));
    assert_eq!(json_of(&resp)["code"], "registrations_paused");
    let wait: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(
        (60..=3600).contains(&wait) && wait.is_multiple_of(60),
        "{wait}"
    );
    assert_eq!(
        login(&app, "fourth", PASSWORD).await.status(),
        401,
        "not created"
    );
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
    let app = app_through(&relay, &direct.app, Default::default()).await;
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
