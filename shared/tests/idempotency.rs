//! `Idempotency-Key` on chat: a retried request is answered once and charged once.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use testkit::{Behavior, GeminiStandIn};

const KEY: &str = "4d5e8c1a-3b7f-4e0a-9c2d-1f6b8a7e5d40";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_retries_are_charged_once() {
    let standin = GeminiStandIn::with_behavior(Behavior::Slow(Duration::from_millis(500))).await;
    let chat_app = Arc::new(chat_app(&standin).await);
    let token = Arc::new(user_token(&chat_app.app, "john").await);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (chat_app, token) = (chat_app.clone(), token.clone());
        tasks.spawn(async move {
            let resp = chat_with_key(&chat_app, &token, "hello", KEY).await;
            (
                resp.status().as_u16(),
                resp.body().as_ref().to_vec(),
                header(&resp, "retry-after").map(str::to_owned),
            )
        });
    }
    let mut answers = Vec::new();
    let mut in_progress = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            (200, body, _) => answers.push(body),
            (409, body, retry_after) => {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["code"], "idempotency_in_progress");
                assert_eq!(retry_after.as_deref(), Some("1"));
                in_progress += 1;
            }
            (status, body, _) => panic!("{status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert_eq!(answers.len() + in_progress, 20);
    assert!(!answers.is_empty());
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every answer is the same body"
    );
    assert_eq!(standin.requests(), 1, "Gemini was asked once");
    assert_eq!(balance(&chat_app.app, &token).await, 3900, "charged once");

    // Once it has finished, the same key replays the first response, marked as such.
    let replay = chat_with_key(&chat_app, &token, "hello", KEY).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));
    assert_eq!(header(&replay, "x-tokens-remaining"), Some("3900"));
    assert_eq!(replay.body().as_ref(), answers[0].as_slice());
    assert_eq!(standin.requests(), 1);
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!(books.completed_chats, 1);
}

#[tokio::test]
async fn a_key_reused_for_another_message_is_422() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    assert_eq!(
        chat_with_key(&chat_app, &token, "hello", KEY)
            .await
            .status(),
        200
    );
    let resp = chat_with_key(&chat_app, &token, "something else", KEY).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(json_of(&resp)["code"], "idempotency_key_reused");
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let john = user_token(&chat_app.app, "john").await;
    let jane = user_token(&chat_app.app, "jane").await;
    assert_eq!(
        chat_with_key(&chat_app, &john, "hello", KEY).await.status(),
        200
    );
    let resp = chat_with_key(&chat_app, &jane, "hello", KEY).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "idempotent-replayed"), None);
    assert_eq!(balance(&chat_app.app, &john).await, 3900);
    assert_eq!(balance(&chat_app.app, &jane).await, 3900);
}

#[tokio::test]
async fn a_chat_that_failed_frees_its_key_for_the_retry() {
    let (standin, chat_app, token) = john_chatting(Behavior::Status(503)).await;
    assert_eq!(
        chat_with_key(&chat_app, &token, "hello", KEY)
            .await
            .status(),
        503
    );
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    standin.set_behavior(Behavior::Answer);
    let resp = chat_with_key(&chat_app, &token, "hello", KEY).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "idempotent-replayed"), None);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
    assert_books_balance(&chat_app.app, "john").await;
}

#[tokio::test]
async fn not_enough_credits_frees_the_key_too() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.start_tokens = 50).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    assert_eq!(
        chat_with_key(&chat_app, &token, "hello", KEY)
            .await
            .status(),
        402
    );
    // Not "in progress" and not replayed: the retry is judged afresh.
    assert_eq!(
        chat_with_key(&chat_app, &token, "hello", KEY)
            .await
            .status(),
        402
    );
}

#[tokio::test]
async fn a_blocked_prompt_is_replayed_not_retried() {
    let (standin, chat_app, token) = john_chatting(Behavior::SafetyFinish).await;
    let first = chat_with_key(&chat_app, &token, "hello", KEY).await;
    assert_eq!(first.status(), 422);
    let again = chat_with_key(&chat_app, &token, "hello", KEY).await;
    assert_eq!(again.status(), 422);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(json_of(&again), json_of(&first));
    assert_eq!(standin.requests(), 1);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
}

#[tokio::test]
async fn malformed_keys_are_400_and_free() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    for key in ["x".repeat(256), "has space".to_owned(), "ключ".to_owned()] {
        let resp = chat_with_key(&chat_app, &token, "hello", &key).await;
        assert_eq!(resp.status(), 400, "{key}");
        assert_eq!(json_of(&resp)["field"], "Idempotency-Key");
    }
    assert_eq!(standin.requests(), 0);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
}
