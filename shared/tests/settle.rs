//! When a chat's settle writes fail: what the client is told must be what happened to
//! its credits. A write may land although its caller saw it fail (applied, then a 500)
//! or after the caller gave up on it; the service finds out before it answers.

mod common;

use common::*;
use serde_json::Value;
use shared::store::ChargeState;
use testkit::{
    Behavior,
    faults::{Fault, FaultProxy, Rule},
};

/// The answer's record: a chat item `PutItem` that carries a response.
const ANSWER_RECORD: &str = "\"response\"";
/// The close that keeps a settled charge's credits.
const KEEP_CLOSE: &str = "ADD spent";

#[tokio::test]
async fn settle_writes_that_landed_but_answered_500_give_the_answer_they_paid_for() {
    let (_standin, direct, token) = john_chatting(Behavior::Answer).await;
    let proxy = FaultProxy::in_front_of_local().await;
    let chat_app = chat_app_through(
        &direct,
        store_through(&proxy, direct.app.store.table()).await,
    );
    // Both settle writes are applied, and every answer to them is a 500.
    proxy.set_rules([
        Rule::new(Some("PutItem"), 1.0, Fault::AppliedThenLost).when_body_contains(ANSWER_RECORD),
        Rule::new(Some("UpdateItem"), 1.0, Fault::AppliedThenLost).when_body_contains(KEEP_CLOSE),
    ]);

    let resp = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    let body = json_of(&resp);
    assert_eq!(resp.status(), 200, "charged, so answered: {body}");
    assert_eq!(body["tokens_remaining"], 3900);
    assert!(proxy.injected() >= 2);

    proxy.set_rules([]);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!(
        (books.completed_chats, books.settled, books.open_charges),
        (1, 100, 0)
    );
    // The retry is the same answer, not a second charge.
    let again = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(json_of(&again)["response"], body["response"]);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
}

#[tokio::test]
async fn a_settle_that_cannot_land_is_refunded_for_good_before_the_503() {
    let (standin, direct, token) = john_chatting(Behavior::Answer).await;
    let proxy = FaultProxy::in_front_of_local().await;
    let chat_app = chat_app_through(
        &direct,
        store_through(&proxy, direct.app.store.table()).await,
    );
    // The answer's record is held (every attempt), to land after the retries gave up;
    // the close is throttled throughout.
    let held = proxy.hold("PutItem", ANSWER_RECORD);
    proxy.set_rules([
        Rule::new(Some("UpdateItem"), 1.0, Fault::Throttling).when_body_contains(KEEP_CLOSE)
    ]);

    let resp = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    let body = json_of(&resp);
    assert_eq!(resp.status(), 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    assert!(
        body["detail"].as_str().unwrap().contains("not charged"),
        "{body}"
    );
    assert!(
        held.unanswered() >= 1,
        "the answer's record is still on its way"
    );

    // Now the held answer records land: too late to charge anything.
    proxy.set_rules([]);
    held.land().await;
    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Refunded, "{:?}", chats[0]);
    assert_eq!(chats[0].response, None);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    assert_books_balance(&chat_app.app, "john").await;

    // The key was freed: the retry is answered, and charged once.
    let again = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    assert_eq!(again.status(), 200, "{}", json_of(&again));
    assert_eq!(standin.requests(), 2);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!((books.completed_chats, books.refunded_chats), (1, 1));
}

#[tokio::test]
async fn a_streamed_answer_whose_settle_cannot_land_says_it_was_not_charged() {
    let (_standin, direct, token) = john_chatting(Behavior::Answer).await;
    let proxy = FaultProxy::in_front_of_local().await;
    let chat_app = chat_app_through(
        &direct,
        store_through(&proxy, direct.app.store.table()).await,
    );
    let held = proxy.hold("PutItem", ANSWER_RECORD);
    proxy.set_rules([
        Rule::new(Some("UpdateItem"), 1.0, Fault::Throttling).when_body_contains(KEEP_CLOSE)
    ]);
    let events = stream_events(&chat_app, &token, "hello").await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["code"], "service_unavailable");
    assert_eq!(data["charged"], false, "{data}");
    assert_eq!(data["tokens_remaining"], 4000, "{data}");
    proxy.set_rules([]);
    held.land().await;
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    assert_books_balance(&chat_app.app, "john").await;
}

#[tokio::test]
async fn when_the_store_stays_down_the_503_does_not_claim_either_way() {
    let (_standin, direct, token) = john_chatting(Behavior::Answer).await;
    let proxy = FaultProxy::in_front_of_local().await;
    let chat_app = chat_app_through(
        &direct,
        store_through(&proxy, direct.app.store.table()).await,
    );
    // The settle's writes, and the reads that would tell what became of them, all fail.
    proxy.set_rules([
        Rule::new(Some("PutItem"), 1.0, Fault::Throttling).when_body_contains(ANSWER_RECORD),
        Rule::new(Some("UpdateItem"), 1.0, Fault::Throttling).when_body_contains(KEEP_CLOSE),
        Rule::new(Some("GetItem"), 1.0, Fault::Throttling).when_body_contains("CHAT#"),
        Rule::new(Some("GetItem"), 1.0, Fault::Throttling).when_body_contains("pending."),
    ]);
    let resp = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    let body = json_of(&resp);
    assert_eq!(resp.status(), 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("could not confirm"), "{detail}");
    assert!(!detail.contains("You were not charged"), "{detail}");
    // The key stays with that charge until recovery decides it.
    proxy.set_rules([]);
    let again = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    assert_eq!(again.status(), 409, "{}", json_of(&again));
}

/// A streamed chat's events, read whole: `(name, data)`.
async fn stream_events(
    chat_app: &shared::ChatApp,
    token: &str,
    message: &str,
) -> Vec<(String, Value)> {
    let headers = serde_json::json!({
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": format!("Token {token}"),
    });
    let body = serde_json::json!({ "message": message }).to_string();
    let req = event_with("POST", "/api/chat/", headers, Some((body, false)));
    let resp = chat_request(chat_app, req).await;
    let mut reader = testkit::sse::SseReader::default();
    reader.push(resp.body().as_ref())
}
