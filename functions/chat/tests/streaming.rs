//! Streamed answers through the built `chat` binary in Lambda's response-streaming mode
//! (the JSON prelude, eight NUL bytes, then the body), behind the Runtime API emulator.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use shared::store::ChargeState;
use testkit::{
    Behavior,
    gemini::Pacing,
    runtime::{Chunk, StreamEnd, StreamingInvocation},
    sse::SseReader,
};

/// Events as they arrive: `(name, data, arrival)`; stops after `until` if given.
async fn events(
    stream: &mut StreamingInvocation,
    until: Option<usize>,
) -> Vec<(String, Value, Instant)> {
    let (mut events, mut reader) = (Vec::new(), SseReader::default());
    while until.is_none_or(|n| events.len() < n) {
        let Some(Chunk { bytes, at }) = stream.next_chunk().await else {
            break;
        };
        events.extend(reader.push(&bytes).into_iter().map(|(n, d)| (n, d, at)));
    }
    events
}

/// Paced like the real API, faster: the first chunk after 150 ms, then one every 40 ms.
fn paced(setup: &Setup) {
    setup.standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(150),
        interval: Duration::from_millis(40),
        words_per_chunk: 3,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_words_arrive_while_gemini_is_still_writing() {
    let setup = setup(4000).await;
    setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 60 });
    paced(&setup);
    let _functions = setup.functions(1, &[]);

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    let prelude = stream.prelude().await.unwrap().clone();
    assert_eq!(prelude.status, 200);
    assert_eq!(prelude.headers["content-type"], "text/event-stream");
    let events = events(&mut stream, None).await;
    assert_eq!(stream.end().await, StreamEnd::Completed);

    let names: Vec<&str> = events.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[0], "start");
    assert_eq!(*names.last().unwrap(), "done");
    let recorded = setup.standin.recorded();
    let last_chunk = *recorded.last().unwrap().chunks_written.last().unwrap();
    assert!(
        events[1].2 < last_chunk,
        "the first delta left the function before the stand-in wrote its last chunk"
    );

    // `done` is what the history holds, and the user paid once.
    let done = &events.last().unwrap().1;
    let chats = setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert_eq!(done["response"], chats[0].response.as_deref().unwrap());
    assert_eq!(done["conversation_id"], chats[0].conversation_id.as_str());
    assert_eq!(done["tokens_remaining"], 3900);
    let books = setup.books().await;
    assert_eq!((books.balance, books.completed_chats), (3900, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stand_in_failure_midway_is_an_error_event_and_the_credits_come_back() {
    let setup = setup(4000).await;
    setup.standin.set_behavior(Behavior::DropAfter(3));
    paced(&setup);
    let _functions = setup.functions(1, &[]);

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    assert_eq!(stream.prelude().await.unwrap().status, 200);
    let events = events(&mut stream, None).await;
    let names: Vec<&str> = events.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"));
    assert!(names.contains(&"delta"));
    let (last, data, _) = events.last().unwrap();
    assert_eq!(last, "error", "{names:?}");
    assert_eq!(data["code"], "model_error");
    assert_eq!(
        (&data["charged"], &data["tokens_remaining"]),
        (&json!(false), &json!(4000))
    );
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.refunded_chats, books.open_charges),
        (4000, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_safety_stop_midway_is_charged_once_for_the_words_given() {
    let setup = setup(4000).await;
    setup.standin.set_behavior(Behavior::StopAfter(4, "SAFETY"));
    paced(&setup);
    let _functions = setup.functions(1, &[]);

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    assert_eq!(stream.prelude().await.unwrap().status, 200);
    let events = events(&mut stream, None).await;
    assert_eq!(stream.end().await, StreamEnd::Completed);
    let given: String = events
        .iter()
        .filter(|(n, _, _)| n == "delta")
        .map(|(_, d, _)| d["text"].as_str().unwrap())
        .collect();
    let (last, data, _) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(data["code"], "content_blocked", "{data}");
    assert_eq!(data["charged"], true, "{data}");
    assert_eq!(data["tokens_remaining"], 3900, "{data}");

    let chats = setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].response.as_deref(), Some(given.as_str()));
    assert_eq!(chats[0].finish_reason.as_deref(), Some("SAFETY"));
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.completed_chats, books.open_charges),
        (3900, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_still_gets_its_answer_stored_and_charged_once() {
    let setup = setup(4000).await;
    setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 90 });
    paced(&setup);
    let _functions = setup.functions(1, &[]);

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    assert_eq!(stream.prelude().await.unwrap().status, 200);
    let first = events(&mut stream, Some(2)).await;
    assert_eq!(first[1].0, "delta");
    let id = stream.request_id().to_owned();
    stream.disconnect();

    let record = tokio::time::timeout(Duration::from_secs(30), setup.runtime.stream_record(&id))
        .await
        .expect("the function finished its stream");
    assert_eq!(record.end, StreamEnd::Completed);
    assert!(record.client_left_after.is_some());
    assert!(setup.standin.recorded().last().unwrap().stream_completed);
    let chats = setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1, "the answer is in the history");
    assert_eq!(chats[0].state, ChargeState::Completed);
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.completed_chats, books.open_charges),
        (3900, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_header_the_answer_is_json_from_the_same_function() {
    let setup = setup(4000).await;
    let _functions = setup.functions(1, &[]);
    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(status, 200);
    assert_eq!(body["message"], "hello");
    assert_eq!(body["tokens_remaining"], 3900);
}
