//! Deleting is final. A chat that was still settling when its account or conversation
//! was deleted must not bring anything back: not for the name's next owner, not in the
//! history, not through an idempotency key. The late writes are made late on purpose:
//! the fault proxy holds them until the test lets them land.

mod common;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use common::*;
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use shared::{App, ChatApp, audit, store::RetryPolicy};
use testkit::{Behavior, GeminiStandIn, faults::FaultProxy};

/// The answer's record: a chat item `PutItem` that carries a response.
const ANSWER_RECORD: &str = "\"response\"";

/// Budgets with room for a held write to land between a settle giving up on it
/// (two budgets) and the deletion's late pass (the write window, three budgets and an
/// attempt), on a loaded machine — and attempts long enough that the writes this test
/// does not hold are not given up on when the machine is busy.
fn policy() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(1500),
        budget: Duration::from_secs(3),
        ..Default::default()
    }
}

/// One table, reached directly and through a fault proxy.
struct Race {
    standin: GeminiStandIn,
    direct: ChatApp,
    proxied: ChatApp,
    proxy: FaultProxy,
}

async fn race() -> Race {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.store_retry = policy()).await;
    let direct = chat_app_on(app, gemini_config(&standin));
    let proxy = FaultProxy::in_front_of_local().await;
    let store = store_through_with(&proxy, direct.app.store.table(), policy()).await;
    let proxied = chat_app_through(&direct, store);
    Race {
        standin,
        direct,
        proxied,
        proxy,
    }
}

async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete_account(app: &App, token: &str) -> Response<Body> {
    let body = json!({ "password": PASSWORD }).to_string();
    let req = event("DELETE", "/api/account/", Some(token), Some(&body));
    shared::api::sessions::route(app, req).await.unwrap()
}

async fn call(chat_app: &ChatApp, method: &str, path: &str, token: &str) -> Response<Body> {
    chat_request(chat_app, event(method, path, Some(token), None)).await
}

fn chat_in(conversation: &str, message: &str) -> String {
    json!({ "message": message, "conversation_id": conversation }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settle_landing_after_the_account_is_deleted_never_reaches_the_names_next_owner() {
    let race = race().await;
    let store = &race.direct.app.store;
    let token = user_token(&race.direct.app, "john").await;
    // The answer's record is held past the settle's retries; its close lands.
    let held = race.proxy.hold("PutItem", ANSWER_RECORD);
    let (proxied, old) = (race.proxied.clone(), token.clone());
    let chatting =
        tokio::spawn(async move { chat(&proxied, &old, "my secret question").await.status() });
    held.arrived(1).await;
    until("the charge to close", || async {
        store.user("john").await.unwrap().unwrap().open.is_empty()
    })
    .await;

    // No chat is running as far as the account can tell: it is deleted.
    let (app, old) = (race.direct.app.clone(), token.clone());
    let deleting = tokio::spawn(async move { delete_account(&app, &old).await.status() });
    until("the name to be free", || async {
        store.user("john").await.unwrap().is_none()
    })
    .await;
    // The name's next owner.
    let fresh = user_token(&race.direct.app, "john").await;
    let resp = chat(&race.direct, &fresh, "hello from the new john").await;
    assert_eq!(resp.status(), 200);

    // The old chat's close landed; its record lands only now. Its own answer is 200, or
    // 503 when the machine is so slow that the settle was still deciding after the
    // account was gone (nothing is left to charge then): either way not this test's point.
    let old_status = chatting.await.unwrap();
    assert!(matches!(old_status.as_u16(), 200 | 503), "{old_status}");
    held.land().await;

    // The new owner sees nothing of it: history, conversations, balance, books.
    let chats = store.chats("john").await.unwrap();
    let messages: Vec<_> = chats.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(messages, ["hello from the new john"]);
    let list = json_of(&call(&race.direct, "GET", "/api/conversations/", &fresh).await);
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(balance(&race.direct.app, &fresh).await, 3900);
    let books = assert_books_balance(&race.direct.app, "john").await;
    assert_eq!((books.completed_chats, books.settled), (1, 100));

    // The deletion's late pass retired the late record too: no text is left, and the
    // deleted account's books hold its answered chat.
    assert_eq!(deleting.await.unwrap(), 200);
    assert!(!table_text(&race.direct.app).await.contains("secret"));
    let tombstone = {
        let text = table_text(&race.direct.app).await;
        let at = text.find("DELETED#").expect("a tombstone") + "DELETED#".len();
        text[at..at + 32].to_owned()
    };
    let books = audit::audit_deleted(store, &tombstone)
        .await
        .unwrap()
        .unwrap();
    assert!(books.is_balanced(), "{books}");
    assert_eq!(
        (books.completed_chats, books.settled, books.balance),
        (1, 100, 3900)
    );
    assert_eq!(race.standin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_running_while_its_conversation_is_deleted_does_not_bring_it_back() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = json_of(&chat(&chat_app, &token, "my first secret").await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();

    // A second chat in it, still waiting on Gemini when the conversation is deleted.
    standin.set_behavior(Behavior::Slow(Duration::from_millis(800)));
    let (app, t, body) = (
        chat_app.clone(),
        token.clone(),
        chat_in(&id, "my second secret"),
    );
    let chatting = tokio::spawn(async move {
        let headers = json!({
            "Content-Type": "application/json",
            "Authorization": format!("Token {t}"),
            "Idempotency-Key": "k-race",
        });
        let req = event_with("POST", "/api/chat/", headers, Some((body, false)));
        chat_request(&app, req).await
    });
    until("Gemini to be asked", || async { standin.requests() == 2 }).await;
    let path = format!("/api/conversations/{id}/");
    assert_eq!(call(&chat_app, "DELETE", &path, &token).await.status(), 204);

    // The chat still gets its answer, paid for once.
    let resp = chatting.await.unwrap();
    assert_eq!(resp.status(), 200, "{}", json_of(&resp));
    assert_eq!(json_of(&resp)["tokens_remaining"], 3800);

    // The conversation stays deleted, and no text of it is kept anywhere.
    let list = json_of(&call(&chat_app, "GET", "/api/conversations/", &token).await);
    assert_eq!(list["conversations"], json!([]), "{list}");
    let messages = format!("/api/conversations/{id}/messages/");
    assert_eq!(
        call(&chat_app, "GET", &messages, &token).await.status(),
        404
    );
    assert!(!table_text(&chat_app.app).await.contains("secret"));
    // Its idempotency key replays no text: the conversation is gone, nothing charged.
    standin.set_behavior(Behavior::Answer);
    let again = chat_with_key(&chat_app, &token, "my second secret", "k-race").await;
    let again_body: Value = json_of(&again);
    assert_eq!(again.status(), 404, "{again_body}");
    assert!(!again_body.to_string().contains("secret"));
    assert_eq!(balance(&chat_app.app, &token).await, 3800);
    // A chat sent alone starts afresh rather than continuing it.
    let alone = json_of(&chat(&chat_app, &token, "hello").await);
    assert_ne!(alone["conversation_id"], id.as_str());
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!((books.completed_chats, books.settled), (3, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_record_landing_after_its_conversation_was_deleted_loses_its_text() {
    let race = race().await;
    let token = user_token(&race.direct.app, "john").await;
    let first = json_of(&chat(&race.direct, &token, "my first secret").await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();

    // The next answer is counted in the conversation, but its record is held.
    let held = race.proxy.hold("PutItem", ANSWER_RECORD);
    let (proxied, t, body) = (
        race.proxied.clone(),
        token.clone(),
        chat_in(&id, "my second secret"),
    );
    let chatting = tokio::spawn(async move {
        let req = event("POST", "/api/chat/", Some(&t), Some(&body));
        chat_request(&proxied, req).await.status()
    });
    held.arrived(1).await;
    let account = account(&race.direct.app, "john").await;
    let conversation = shared::domain::ConversationId::parse(&id).unwrap();
    until("the answer to be counted", || async {
        let c = race
            .direct
            .app
            .store
            .conversation(&account, &conversation)
            .await;
        c.unwrap().is_some_and(|c| c.messages == 2)
    })
    .await;

    // Deleted now; the held record lands after the settle gave up on it.
    let (app, t, path) = (
        race.direct.clone(),
        token.clone(),
        format!("/api/conversations/{id}/"),
    );
    let deleting = tokio::spawn(async move { call(&app, "DELETE", &path, &t).await.status() });
    assert_eq!(chatting.await.unwrap(), 200);
    held.land().await;
    assert_eq!(deleting.await.unwrap(), 204);

    assert!(!table_text(&race.direct.app).await.contains("secret"));
    let list = json_of(&call(&race.direct, "GET", "/api/conversations/", &token).await);
    assert_eq!(list["conversations"], json!([]), "{list}");
    let books = assert_books_balance(&race.direct.app, "john").await;
    assert_eq!((books.completed_chats, books.settled), (2, 200));
}
