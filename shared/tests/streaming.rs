//! `POST /api/chat/` with `Accept: text/event-stream`: the answer as Server-Sent Events
//! while Gemini writes it, billed by the same charge lifecycle as a JSON answer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use shared::{ChatApp, http::StreamBody, store::ChargeState};
use testkit::{Behavior, gemini::Pacing, sse::SseReader};

/// A streamed chat: the response's status, headers and its still-open body.
async fn stream_chat(
    chat_app: &ChatApp,
    token: &str,
    message: &str,
    key: Option<&str>,
) -> lambda_http::Response<StreamBody> {
    let mut headers = json!({
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": format!("Token {token}"),
    });
    if let Some(key) = key {
        headers["Idempotency-Key"] = json!(key);
    }
    let body = json!({ "message": message }).to_string();
    let req = event_with("POST", "/api/chat/", headers, Some((body, false)));
    shared::api::chat::handle(chat_app, req).await.unwrap()
}

/// Server-Sent Events as they arrive: `(name, data, arrival)`.
async fn read_events(body: &mut StreamBody, until: Option<usize>) -> Vec<(String, Value, Instant)> {
    let (mut events, mut reader) = (Vec::new(), SseReader::default());
    while until.is_none_or(|n| events.len() < n) {
        let Some(chunk) = body.next_chunk().await else {
            break;
        };
        let at = Instant::now();
        events.extend(reader.push(&chunk).into_iter().map(|(n, d)| (n, d, at)));
    }
    events
}

fn names(events: &[(String, Value, Instant)]) -> Vec<&str> {
    events.iter().map(|(n, _, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_streamed_answer_arrives_word_by_word_and_matches_the_history() {
    let (standin, chat_app, token) = john_chatting(Behavior::LongAnswer { words: 60 }).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(100),
        interval: Duration::from_millis(40),
        words_per_chunk: 3,
    });
    let resp = stream_chat(&chat_app, &token, "tell me a story", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header_of(&resp, "content-type"), Some("text/event-stream"));
    let mut body = resp.into_body();
    let events = read_events(&mut body, None).await;

    let names = names(&events);
    assert_eq!(names.first(), Some(&"start"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(names[1..names.len() - 1].iter().all(|n| *n == "delta"));
    assert!(names.len() > 4, "several deltas: {names:?}");

    let start = &events[0].1;
    assert_eq!(start["tokens_remaining"], 3900);
    assert!(start["conversation_id"].is_string() && start["model"].is_string());

    let text: String = events
        .iter()
        .filter(|(n, _, _)| n == "delta")
        .map(|(_, d, _)| d["text"].as_str().unwrap())
        .collect();
    let done = &events.last().unwrap().1;
    assert_eq!(done["message"], "tell me a story");
    assert_eq!(
        done["response"],
        text.as_str(),
        "done carries the whole answer"
    );
    assert_eq!(done["tokens_remaining"], 3900);
    assert_eq!(done["conversation_id"], start["conversation_id"]);

    // The first words reached the client while Gemini was still writing.
    let recorded = standin.recorded();
    let chunks = &recorded.last().unwrap().chunks_written;
    let first_delta_at = events[1].2;
    assert!(
        first_delta_at < *chunks.last().unwrap(),
        "the first delta came before the stand-in wrote its last chunk"
    );

    let chats = chat_app.app.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert_eq!(chats[0].response.as_deref(), Some(text.as_str()));
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
    assert_books_balance(&chat_app.app, "john").await;
}

/// Paced like the real API (a pause, then a few words at a time), only faster.
fn quick(standin: &testkit::GeminiStandIn) {
    standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(40),
        interval: Duration::from_millis(20),
        words_per_chunk: 3,
    });
}

fn deltas(events: &[(String, Value, Instant)]) -> String {
    events
        .iter()
        .filter(|(n, _, _)| n == "delta")
        .map(|(_, d, _)| d["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_failure_of_gemini_midway_ends_with_an_error_event_and_is_refunded() {
    for (behavior, code) in [
        (Behavior::DropAfter(2), "model_error"),
        (Behavior::StallAfter(2), "model_timeout"),
    ] {
        let (standin, chat_app, token) = john_chatting(behavior.clone()).await;
        quick(&standin);
        let resp = stream_chat(&chat_app, &token, "a long question", None).await;
        assert_eq!(resp.status(), 200, "{behavior:?}");
        let events = read_events(&mut resp.into_body(), None).await;
        let names = names(&events);
        assert_eq!(names.first(), Some(&"start"), "{behavior:?}");
        assert!(names.contains(&"delta"), "{behavior:?}: {names:?}");
        let (last, data, _) = events.last().unwrap();
        assert_eq!(last, "error", "{behavior:?}: {names:?}");
        assert_eq!(data["code"], code, "{behavior:?}: {data}");
        assert!(data["detail"].is_string());
        // The event says what it cost: nothing, and the balance is whole again.
        assert_eq!(data["charged"], false, "{behavior:?}: {data}");
        assert_eq!(data["tokens_remaining"], 4000, "{behavior:?}: {data}");
        assert_eq!(balance(&chat_app.app, &token).await, 4000, "{behavior:?}");
        let books = assert_books_balance(&chat_app.app, "john").await;
        assert_eq!((books.refunded_chats, books.completed_chats), (1, 0));
    }
}

/// A prompt that makes Gemini stop midway (a safety filter, recitation) no longer gets
/// its words for free: they are charged once, and kept in the conversation as its answer.
#[tokio::test]
async fn a_stop_the_prompt_caused_midway_is_charged_once_and_its_words_are_kept() {
    for reason in ["SAFETY", "RECITATION"] {
        let (standin, chat_app, token) = john_chatting(Behavior::StopAfter(3, reason)).await;
        quick(&standin);
        let resp = stream_chat(&chat_app, &token, "recite the book", None).await;
        assert_eq!(resp.status(), 200, "{reason}");
        let events = read_events(&mut resp.into_body(), None).await;
        let names = names(&events);
        assert_eq!(
            names.iter().filter(|n| **n == "delta").count(),
            3,
            "{names:?}"
        );
        let (last, data, _) = events.last().unwrap();
        assert_eq!(last, "error", "{reason}: {names:?}");
        assert_eq!(data["code"], "content_blocked", "{data}");
        assert_eq!(data["charged"], true, "{data}");
        assert_eq!(data["tokens_remaining"], 3900, "{data}");
        assert_eq!(data["cost"], 100, "{data}");
        assert_eq!(data["finish_reason"], reason, "{data}");
        let given = deltas(&events);
        assert!(!given.is_empty());

        // Charged once; the words given are the answer on record, with why it stopped.
        assert_eq!(balance(&chat_app.app, &token).await, 3900, "{reason}");
        let chats = chat_app.app.store.chats("john").await.unwrap();
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].state, ChargeState::Completed);
        assert_eq!(chats[0].response.as_deref(), Some(given.as_str()));
        assert_eq!(chats[0].finish_reason.as_deref(), Some(reason));
        let books = assert_books_balance(&chat_app.app, "john").await;
        assert_eq!((books.completed_chats, books.settled), (1, 100));

        // The history shows it as answered, and the next turn has it as context.
        let id = events[0].1["conversation_id"].as_str().unwrap().to_owned();
        let path = format!("/api/conversations/{id}/messages/");
        let resp = chat_request(&chat_app, event("GET", &path, Some(&token), None)).await;
        let page = json_of(&resp);
        assert_eq!(page["messages"][0]["response"], given.as_str(), "{page}");
        assert_eq!(page["messages"][0]["finish_reason"], reason, "{page}");
        standin.set_behavior(Behavior::Answer);
        let body = json!({"message": "go on", "conversation_id": id}).to_string();
        let next = chat_request(
            &chat_app,
            event("POST", "/api/chat/", Some(&token), Some(&body)),
        )
        .await;
        assert_eq!(next.status(), 200);
        let (_, sent) = standin.last_request().unwrap();
        assert_eq!(
            sent["contents"][1]["parts"][0]["text"],
            given.as_str(),
            "{sent}"
        );
        assert_eq!(standin.requests(), 2, "one model call per chat");
        assert_books_balance(&chat_app.app, "john").await;
    }
}

#[tokio::test]
async fn a_retry_of_a_cut_answer_replays_it_and_charges_nothing() {
    let (standin, chat_app, token) = john_chatting(Behavior::StopAfter(2, "SAFETY")).await;
    quick(&standin);
    let first = stream_chat(&chat_app, &token, "hello", Some("k-cut")).await;
    let first = read_events(&mut first.into_body(), None).await;
    assert_eq!(first.last().unwrap().1["charged"], true);

    let again = stream_chat(&chat_app, &token, "hello", Some("k-cut")).await;
    assert_eq!(header_of(&again, "idempotent-replayed"), Some("true"));
    let again = read_events(&mut again.into_body(), None).await;
    assert_eq!(names(&again), ["done"]);
    assert_eq!(again[0].1["response"], deltas(&first).as_str());
    assert_eq!(again[0].1["finish_reason"], "SAFETY");
    assert_eq!(standin.requests(), 1);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);
    assert_books_balance(&chat_app.app, "john").await;
}

/// Cancelling is the service's concept (a client of a later transport may ask a turn
/// to stop): the words handed out by then are the answer, charged once and kept, and
/// Gemini is not read further.
#[tokio::test]
async fn a_turn_cancelled_after_its_first_words_is_charged_for_them_and_stops_gemini() {
    use shared::service::chat::{Begun, CANCELLED, ChatRequest, ChatService, Progress};

    let (standin, chat_app, token) = john_chatting(Behavior::LongAnswer { words: 200 }).await;
    quick(&standin);
    let app = &chat_app.app;
    let authed = app.accounts().authenticate(&token).await.unwrap();
    let service = ChatService {
        store: &app.store,
        gemini: &chat_app.gemini,
        config: &app.config,
        push: shared::service::sockets::Push::new(&app.store, &chat_app.connections),
    };
    let request = ChatRequest {
        account: authed.user.account.clone(),
        message: shared::domain::ChatMessage::parse("a long story", 8000).unwrap(),
        idempotency_key: None,
        conversation: shared::service::conversations::Choice::New,
        model: app.config.models.default_model().clone(),
        guard: app.accounts().debit_guard(&authed),
        last_conversation: None,
        watchers: Default::default(),
    };
    let Begun::Started(turn) = service.begin(request).await.unwrap() else {
        panic!("a fresh turn");
    };
    let open = service.open_stream(turn).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut stop = Some(stop);
    let mut progress = Vec::new();
    open.run_until(
        service,
        async {
            let _ = stopped.await;
        },
        |p| {
            if matches!(p, Progress::Delta(_)) && progress.len() == 2 {
                // The client asks to stop after its second delta.
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            progress.push(p);
        },
    )
    .await;

    let given: String = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let Some(Progress::Cut(answer)) = progress.last() else {
        panic!("a cut answer: {progress:?}");
    };
    assert_eq!(answer.response, given);
    assert_eq!(answer.finish_reason.as_deref(), Some(CANCELLED));
    assert_eq!(answer.tokens_remaining, 3900);
    let deltas = progress
        .iter()
        .filter(|p| matches!(p, Progress::Delta(_)))
        .count();
    assert!(deltas < 10, "stopped early: {deltas} deltas");

    // Gemini's stream was let go, not read to its end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !standin.recorded()[0].client_gone {
        assert!(Instant::now() < deadline, "Gemini was still being read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!standin.recorded()[0].stream_completed);
    let chats = app.store.chats("john").await.unwrap();
    assert_eq!(chats[0].response.as_deref(), Some(given.as_str()));
    assert_eq!(chats[0].finish_reason.as_deref(), Some(CANCELLED));
    assert_eq!(balance(app, &token).await, 3900);
    assert_books_balance(app, "john").await;
}

#[tokio::test]
async fn a_failure_before_the_first_words_is_an_error_status() {
    let (standin, chat_app, token) = john_chatting(Behavior::Status(503)).await;
    let resp = stream_chat(&chat_app, &token, "hello", None).await;
    assert_eq!(resp.status(), 503);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await).unwrap();
    assert_eq!(body["code"], "model_unavailable");
    assert!(standin.requests() >= 1);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
}

#[tokio::test]
async fn a_client_that_stops_reading_still_gets_its_answer_stored_and_charged_once() {
    let (standin, chat_app, token) = john_chatting(Behavior::LongAnswer { words: 60 }).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(20),
        interval: Duration::from_millis(20),
        words_per_chunk: 3,
    });
    let resp = stream_chat(&chat_app, &token, "tell me a story", None).await;
    let mut body = resp.into_body();
    let events = read_events(&mut body, Some(2)).await;
    assert_eq!(names(&events), ["start", "delta"]);
    drop(body); // the client goes away

    // The function reads Gemini to the end and settles.
    let deadline = Instant::now() + Duration::from_secs(10);
    let chats = loop {
        let chats = chat_app.app.store.chats("john").await.unwrap();
        if !chats.is_empty() || Instant::now() > deadline {
            break chats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(chats.len(), 1, "the answer is in the history");
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert!(standin.recorded().last().unwrap().stream_completed);
    assert_eq!(balance(&chat_app.app, &token).await, 3900, "charged once");
    assert_books_balance(&chat_app.app, "john").await;
}

#[tokio::test]
async fn a_streamed_retry_with_the_same_key_replays_the_outcome() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    standin.set_pacing(Pacing::immediate());
    let first = stream_chat(&chat_app, &token, "hello", Some("k-1")).await;
    let first = read_events(&mut first.into_body(), None).await;
    let done = &first.last().unwrap().1;

    let again = stream_chat(&chat_app, &token, "hello", Some("k-1")).await;
    assert_eq!(header_of(&again, "idempotent-replayed"), Some("true"));
    let again = read_events(&mut again.into_body(), None).await;
    assert_eq!(names(&again), ["done"]);
    assert_eq!(&again[0].1, done);
    assert_eq!(standin.requests(), 1);
    assert_eq!(balance(&chat_app.app, &token).await, 3900);

    // The same key asked for JSON gets the JSON answer of the same outcome.
    let json = chat_with_key(&chat_app, &token, "hello", "k-1").await;
    assert_eq!(json.status(), 200);
    assert_eq!(json_of(&json)["response"], done["response"]);
}

fn header_of<'a, B>(resp: &'a lambda_http::Response<B>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}
