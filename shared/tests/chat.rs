//! Chatting: what a chat returns, what it costs, and that a failed answer costs nothing.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use serde_json::json;
use shared::store::ChargeState;
use testkit::{Behavior, GeminiStandIn};

#[tokio::test]
async fn chat_answers_and_charges_100_credits() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;

    let resp = chat(&chat_app, &token, "What is the capital of France?").await;
    assert_eq!(resp.status(), 200);
    let body = json_of(&resp);
    // The original three fields, then the conversation and the model.
    let fields: Vec<_> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "message",
            "response",
            "tokens_remaining",
            "conversation_id",
            "model"
        ],
        "{body}"
    );
    assert_eq!(body["model"], "gemini-flash-latest");
    assert_eq!(body["message"], "What is the capital of France?");
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .contains("What is the capital of France?")
    );
    assert_eq!(body["tokens_remaining"], 3900);
    assert_eq!(header(&resp, "x-tokens-remaining"), Some("3900"));
    assert_eq!(balance(&chat_app.app, &token).await, 3900);

    // Gemini got the documented request: key in the header, the message as user content.
    let (headers, request) = standin.last_request().unwrap();
    assert_eq!(headers["x-goog-api-key"], API_KEY);
    assert_eq!(
        request["contents"],
        json!([{"role": "user", "parts": [{"text": "What is the capital of France?"}]}])
    );

    // The chat is stored with its answer, model, cost and Gemini's usage.
    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    let stored = &chats[0];
    assert_eq!(stored.state, ChargeState::Completed);
    assert_eq!(stored.message, "What is the capital of France?");
    assert_eq!(stored.response.as_deref(), body["response"].as_str());
    assert_eq!(stored.model.as_deref(), Some("gemini-flash-latest"));
    assert_eq!(stored.cost, 100);
    let usage = stored.usage.unwrap();
    assert!(
        usage.prompt_tokens > 0
            && usage.total_tokens == usage.prompt_tokens + usage.response_tokens
    );
}

#[tokio::test]
async fn chats_are_stored_in_time_order() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    for i in 0..5 {
        assert_eq!(
            chat(&chat_app, &token, &format!("question {i}"))
                .await
                .status(),
            200
        );
    }
    let messages: Vec<_> = chat_app
        .app
        .store
        .chats("john")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(
        messages,
        (0..5).map(|i| format!("question {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn chat_cost_is_configurable() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| {
        c.models =
            shared::domain::ModelCatalogue::parse("gemini-flash-latest=7", "gemini-flash-latest")
                .unwrap()
    })
    .await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    assert_eq!(
        json_of(&chat(&chat_app, &token, "hi").await)["tokens_remaining"],
        3993
    );
}

#[tokio::test]
async fn not_enough_credits_is_402_with_the_balance_and_never_reaches_gemini() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.start_tokens = 150).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;

    assert_eq!(
        json_of(&chat(&chat_app, &token, "first").await)["tokens_remaining"],
        50
    );
    let resp = chat(&chat_app, &token, "second").await;
    assert_eq!(resp.status(), 402);
    let body = json_of(&resp);
    assert_eq!(body["code"], "insufficient_credits");
    assert_eq!(header(&resp, "x-tokens-remaining"), Some("50"));
    assert_eq!(body["tokens"], 50);
    assert_eq!(body["cost"], 100);
    assert!(body["detail"].as_str().unwrap().contains("50"));
    assert_eq!(standin.requests(), 1);
    assert_eq!(balance(&chat_app.app, &token).await, 50);
}

#[tokio::test]
async fn bad_chat_input_is_400_and_free() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.max_message_chars = 20).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    let bodies = [
        "{\"message\": ",
        "{}",
        "{\"message\": 5}",
        "{\"message\": \"   \"}",
        "{\"message\": \"this message is longer than twenty characters\"}",
        "[\"hello\"]",
    ];
    for body in bodies {
        let resp = chat_request(
            &chat_app,
            event("POST", "/api/chat/", Some(&token), Some(body)),
        )
        .await;
        assert_eq!(resp.status(), 400, "{body}");
    }
    assert_eq!(standin.requests(), 0);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    assert!(chat_app.app.store.chats("john").await.unwrap().is_empty());
}

#[tokio::test]
async fn chat_without_a_valid_token_is_401_and_free() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let body = json!({"message": "hi"}).to_string();
    let resp = chat_request(&chat_app, event("POST", "/api/chat/", None, Some(&body))).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(&resp)["code"], "not_authenticated");
    let forged = "cd".repeat(32);
    let resp = chat_request(
        &chat_app,
        event("POST", "/api/chat/", Some(&forged), Some(&body)),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(&resp)["code"], "invalid_token");
    assert_eq!(standin.requests(), 0);
}

/// Every way Gemini can fail: the status the client sees, and a balance that does
/// not move.
#[tokio::test]
async fn every_gemini_failure_is_refunded() {
    let cases = [
        (Behavior::Status(400), 502, "model_error"),
        (Behavior::Status(403), 502, "model_error"),
        (Behavior::Status(404), 502, "model_error"),
        (Behavior::Status(429), 503, "model_unavailable"),
        (Behavior::Status(500), 502, "model_error"),
        (Behavior::Status(503), 503, "model_unavailable"),
        (Behavior::Status(504), 504, "model_timeout"),
        (Behavior::Hang, 504, "model_timeout"),
        (Behavior::Malformed, 502, "model_error"),
        (Behavior::NoCandidates, 502, "model_error"),
        (Behavior::PromptBlocked, 422, "content_blocked"),
        (Behavior::SafetyFinish, 422, "content_blocked"),
    ];
    let standin = GeminiStandIn::start().await;
    let mut gemini = gemini_config(&standin);
    gemini.timeout = Duration::from_millis(1500);
    let chat_app = chat_app_on(app().await, gemini);
    let token = user_token(&chat_app.app, "john").await;
    for (behavior, status, code) in &cases {
        standin.set_behavior(behavior.clone());
        let resp = chat(&chat_app, &token, "hello").await;
        let body = json_of(&resp);
        assert_eq!(resp.status(), *status, "{behavior:?}: {body}");
        assert_eq!(body["code"], *code, "{behavior:?}");
        assert!(
            body["detail"].as_str().unwrap().contains("not charged"),
            "{body}"
        );
        if *status == 503 {
            assert!(header(&resp, "retry-after").is_some(), "{behavior:?}");
        }
        assert_eq!(balance(&chat_app.app, &token).await, 4000, "{behavior:?}");
    }
    // Each failed chat is on record as refunded, with the reason.
    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), cases.len());
    assert!(
        chats.iter().all(|c| c.state == ChargeState::Refunded
            && c.reason.is_some()
            && c.response.is_none())
    );

    // And the account still works.
    standin.set_behavior(Behavior::Answer);
    assert_eq!(
        json_of(&chat(&chat_app, &token, "hello").await)["tokens_remaining"],
        3900
    );
    assert_books_balance(&chat_app.app, "john").await;
}

/// A buffered answer hands nothing out until Gemini's reply is whole, so a reply that
/// stopped for the prompt's sake is withheld and costs nothing, even when it carries
/// the words written before the stop.
#[tokio::test]
async fn a_json_answer_stopped_by_a_safety_filter_is_withheld_and_refunded() {
    for reason in ["SAFETY", "RECITATION"] {
        let (standin, chat_app, token) = john_chatting(Behavior::StopAfter(3, reason)).await;
        let resp = chat(&chat_app, &token, "hello").await;
        let body = json_of(&resp);
        assert_eq!(resp.status(), 422, "{body}");
        assert_eq!(body["code"], "content_blocked");
        assert!(body.get("response").is_none(), "{body}");
        assert_eq!(standin.requests(), 1);
        assert_eq!(balance(&chat_app.app, &token).await, 4000);
        let chats = chat_app.app.store.chats("john").await.unwrap();
        assert!(chats.iter().all(|c| c.state == ChargeState::Refunded));
        assert_books_balance(&chat_app.app, "john").await;
    }
}

#[tokio::test]
async fn overload_is_retried_and_charged_once() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    standin.script([
        Behavior::Status(503),
        Behavior::Status(429),
        Behavior::Answer,
    ]);
    let resp = chat(&chat_app, &token, "hello").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&resp)["tokens_remaining"], 3900);
    assert_eq!(standin.requests(), 3);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (standin, chat_app, token) = john_chatting(Behavior::Status(503)).await;
    assert_eq!(chat(&chat_app, &token, "hello").await.status(), 503);
    assert_eq!(standin.requests(), 3, "one call and two retries");
    // Errors that retrying can't fix are not retried.
    standin.set_behavior(Behavior::Status(500));
    assert_eq!(chat(&chat_app, &token, "hello").await.status(), 502);
    assert_eq!(standin.requests(), 4);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
}

#[tokio::test]
async fn a_long_quota_wait_fails_fast_and_passes_the_wait_on() {
    let standin = GeminiStandIn::with_behavior(Behavior::RateLimited {
        retry_delay_secs: 30.0,
    })
    .await;
    let chat_app = chat_app(&standin).await;
    let token = user_token(&chat_app.app, "john").await;
    let resp = chat(&chat_app, &token, "hello").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), Some("30"));
    assert_eq!(standin.requests(), 1);
}

/// The heart of the product: 200 chats at once for one user with 4000 credits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_chats_spend_exactly_the_balance() {
    let standin = GeminiStandIn::start().await;
    let chat_app = Arc::new(chat_app(&standin).await);
    let token = Arc::new(user_token(&chat_app.app, "john").await);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (chat_app, token) = (chat_app.clone(), token.clone());
        tasks.spawn(async move { chat(&chat_app, &token, &format!("question {i}")).await });
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        match resp.status().as_u16() {
            200 => ok.push(json_of(&resp)["tokens_remaining"].as_u64().unwrap()),
            402 => refused += 1,
            other => panic!("unexpected {other}: {}", json_of(&resp)),
        }
    }
    assert_eq!(ok.len(), 40);
    assert_eq!(refused, 160);
    // Each success saw a distinct balance: 3900, 3800, ..., 0.
    ok.sort_unstable();
    assert_eq!(ok, (0..40).map(|i| i * 100).collect::<Vec<_>>());
    assert_eq!(balance(&chat_app.app, &token).await, 0);
    assert_eq!(standin.requests(), 40, "no Gemini call went unpaid");
    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 40);
    assert!(chats.iter().all(|c| c.state == ChargeState::Completed));
    assert_books_balance(&chat_app.app, "john").await;
}

/// Failures in the middle of a concurrent run: paid answers and refunds add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_refund_exactly_what_failed() {
    let standin = GeminiStandIn::start().await;
    let mut gemini = gemini_config(&standin);
    gemini.timeout = Duration::from_millis(1500);
    // Enough credits for every chat to be in flight at once.
    let app = app_with(|c| c.start_tokens = 7000).await;
    let chat_app = Arc::new(chat_app_on(app, gemini));
    let token = Arc::new(user_token(&chat_app.app, "john").await);
    let faults = [
        "",
        "[standin:500]",
        "[standin:timeout]",
        "[standin:malformed]",
        "[standin:safety]",
        "[standin:blocked]",
        "[standin:400]",
    ];

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..70 {
        let (chat_app, token) = (chat_app.clone(), token.clone());
        let message = format!("question {i} {}", faults[i % faults.len()]);
        tasks.spawn(async move { chat(&chat_app, &token, &message).await.status().as_u16() });
    }
    let mut answered = 0;
    while let Some(status) = tasks.join_next().await {
        if status.unwrap() == 200 {
            answered += 1;
        }
    }
    assert_eq!(answered, 10);
    assert_eq!(balance(&chat_app.app, &token).await, 7000 - 10 * 100);
    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(
        chats
            .iter()
            .filter(|c| c.state == ChargeState::Completed)
            .count(),
        10
    );
    assert_eq!(
        chats
            .iter()
            .filter(|c| c.state == ChargeState::Refunded)
            .count(),
        60
    );
    assert_books_balance(&chat_app.app, "john").await;
}
