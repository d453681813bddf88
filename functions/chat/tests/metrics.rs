//! What an operator sees of a chat: the built `chat` binary's standard output (what
//! Lambda ships to CloudWatch Logs) holds one Embedded Metric Format line per
//! invocation, valid by the specification, whose values are what happened; and every
//! line the chat logs carries its request id and charge id.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use testkit::{
    Behavior,
    emf::{self, EmfDocument},
    gemini::Pacing,
    sse::SseReader,
};

const PRICE: f64 = 100.0;
const MODEL: &str = "gemini-flash-latest";

fn logged_as_json() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("METRICS_NAMESPACE", "ChatBackendTest".to_owned()),
    ]
}

/// The EMF documents of the output once `count` have been written: each checked
/// against the specification.
async fn documents(functions: &testkit::runtime::Functions, count: usize) -> Vec<EmfDocument> {
    let out = functions
        .wait_for_lines("\"_aws\"", count, Duration::from_secs(10))
        .await;
    // A moment more, so that a second line for the same invocation would show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let docs = emf::documents(&functions.stdout()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(docs.len(), count, "one metrics line per invocation:\n{out}");
    docs
}

fn total(doc: &EmfDocument, metric: &str) -> f64 {
    doc.metrics.get(metric).map_or(0.0, |m| m.total())
}

/// The log lines (not metrics) of the output, as JSON.
fn log_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.contains("\"_aws\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A log line's span fields, innermost last, merged.
fn span_fields(line: &Value) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    for span in line["spans"].as_array().into_iter().flatten() {
        for (k, v) in span.as_object().unwrap() {
            fields.insert(k.clone(), v.clone());
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_json_chat_writes_one_metrics_line_with_the_price_charged() {
    let setup = setup(4000).await;
    let functions = setup.functions(1, &logged_as_json());
    let (status, _) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(status, 200);

    let [doc] = <[EmfDocument; 1]>::try_from(documents(&functions, 1).await).unwrap();
    assert!(
        doc.metrics
            .values()
            .all(|m| m.namespace == "ChatBackendTest")
    );
    assert_eq!(total(&doc, "ChatsAnswered"), 1.0);
    assert_eq!(total(&doc, "CreditsCharged"), PRICE);
    assert_eq!(total(&doc, "CreditsRefunded"), 0.0);
    assert_eq!(total(&doc, "ChatsFailed"), 0.0);
    assert_eq!(
        total(&doc, "ChatsStreamed"),
        0.0,
        "a JSON answer is not a stream"
    );
    assert_eq!(doc.metrics["GeminiLatency"].values.len(), 1);
    assert_eq!(
        doc.metrics["GeminiLatency"].unit.as_deref(),
        Some("Milliseconds")
    );
    assert!(total(&doc, "PromptTokens") > 0.0 && total(&doc, "ResponseTokens") > 0.0);
    assert_eq!(doc.properties["Function"], "chat");
    assert_eq!(doc.properties["Model"], MODEL);
    assert!(
        doc.metrics["CreditsCharged"].dimension_sets.contains(&vec![
            ("Function".to_owned(), "chat".to_owned()),
            ("Model".to_owned(), MODEL.to_owned())
        ]),
        "credits by model"
    );
    let books = setup.books().await;
    assert_eq!(books.settled, PRICE as u64);

    // Its log line says which request and which charge.
    let out = functions.stdout();
    let answered = log_lines(&out)
        .into_iter()
        .find(|l| l["fields"]["message"] == "chat answered")
        .unwrap_or_else(|| panic!("no `chat answered` line:\n{out}"));
    let fields = span_fields(&answered);
    assert!(
        fields["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(fields["charge"], answered["fields"]["charge"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_chat_counts_its_first_chunk_latency_and_gemini_s_usage() {
    let setup = setup(4000).await;
    setup.standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(120),
        interval: Duration::from_millis(20),
        words_per_chunk: 3,
    });
    setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 30 });
    let functions = setup.functions(1, &logged_as_json());

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    assert_eq!(stream.prelude().await.unwrap().status, 200);
    let (mut events, mut reader) = (Vec::new(), SseReader::default());
    while let Some(chunk) = stream.next_chunk().await {
        events.extend(reader.push(&chunk.bytes));
    }
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");

    let [doc] = <[EmfDocument; 1]>::try_from(documents(&functions, 1).await).unwrap();
    assert_eq!(total(&doc, "ChatsStreamed"), 1.0);
    assert_eq!(total(&doc, "ChatsAnswered"), 1.0);
    assert_eq!(total(&doc, "CreditsCharged"), PRICE);
    let first = &doc.metrics["FirstChunkLatency"].values;
    let whole = &doc.metrics["GeminiLatency"].values;
    assert_eq!((first.len(), whole.len()), (1, 1));
    assert!(first[0] >= 100.0, "the stand-in waits 120 ms: {first:?}");
    assert!(
        whole[0] > first[0],
        "the whole call outlasts its first chunk"
    );
    assert_eq!(
        (total(&doc, "PromptTokens"), total(&doc, "ResponseTokens")),
        (
            done["usage"]["prompt_tokens"].as_f64().unwrap(),
            done["usage"]["response_tokens"].as_f64().unwrap()
        ),
        "the tokens Gemini counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_chat_counts_its_error_code_and_the_refund_not_a_charge() {
    let setup = setup(4000).await;
    let functions = setup.functions(1, &logged_as_json());
    let (status, body) = invoke(
        &setup.runtime,
        chat_event(&setup.token, "hello [standin:500]", None),
    )
    .await
    .http();
    assert_eq!((status, body["code"].as_str()), (502, Some("model_error")));

    let [doc] = <[EmfDocument; 1]>::try_from(documents(&functions, 1).await).unwrap();
    assert_eq!(total(&doc, "ChatsFailed"), 1.0);
    assert_eq!(doc.properties["Code"], "model_error");
    assert!(
        doc.metrics["ChatsFailed"].dimension_sets.contains(&vec![
            ("Function".to_owned(), "chat".to_owned()),
            ("Code".to_owned(), "model_error".to_owned())
        ]),
        "failures by code"
    );
    assert_eq!(total(&doc, "CreditsRefunded"), PRICE);
    assert_eq!(total(&doc, "CreditsCharged"), 0.0);
    assert_eq!(total(&doc, "ChatsAnswered"), 0.0);
    assert_eq!(doc.metrics["GeminiLatency"].values.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_failing_midway_logs_and_counts_from_the_task_that_outlives_the_handler() {
    let setup = setup(4000).await;
    setup.standin.set_behavior(Behavior::DropAfter(3));
    let functions = setup.functions(1, &logged_as_json());

    let mut stream = setup.runtime.invoke_streaming(streamed(&setup, "a story"));
    let request_id = stream.request_id().to_owned();
    assert_eq!(stream.prelude().await.unwrap().status, 200);
    while stream.next_chunk().await.is_some() {}

    let [doc] = <[EmfDocument; 1]>::try_from(documents(&functions, 1).await).unwrap();
    assert_eq!(total(&doc, "ChatsFailed"), 1.0);
    assert_eq!(doc.properties["Code"], "model_error");
    assert_eq!(total(&doc, "CreditsRefunded"), PRICE);
    assert_eq!(total(&doc, "ChatsStreamed"), 0.0);
    assert_eq!(doc.metrics["FirstChunkLatency"].values.len(), 1);

    // Every line logged once the charge was held names the request and the charge,
    // those written by the streaming task included.
    let out = functions.stdout();
    let lines = log_lines(&out);
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request failed")
        .unwrap_or_else(|| panic!("no `request failed` line:\n{out}"));
    let charge = span_fields(failed)["charge"].clone();
    assert!(charge.as_str().is_some_and(|c| c.len() == 36), "{failed}");
    let chat_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| span_fields(l).contains_key("charge"))
        .collect();
    assert!(chat_lines.len() >= 2, "the refund and the failure:\n{out}");
    for line in chat_lines {
        let fields = span_fields(line);
        assert_eq!(fields["requestId"], request_id.as_str(), "{line}");
        assert_eq!(fields["charge"], charge, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_chats_are_counted_apart_from_failures_and_refusals_write_nothing() {
    let setup = setup(4000).await;
    let mut env = logged_as_json();
    env.push(("CHATS_PER_MINUTE", "1".to_owned()));
    demo_fresh_minute().await;
    let functions = setup.functions(1, &env);
    let ok = invoke(&setup.runtime, chat_event(&setup.token, "one", None)).await;
    assert_eq!(ok.http().0, 200);
    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "two", None))
        .await
        .http();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("chat_rate_exceeded"))
    );
    // A client's mistake records nothing, so it writes no line at all.
    let (status, _) = invoke(&setup.runtime, chat_event("not-a-token", "three", None))
        .await
        .http();
    assert_eq!(status, 401);

    let docs = documents(&functions, 2).await;
    let throttled = docs
        .iter()
        .find(|d| d.metrics.contains_key("ChatsThrottled"))
        .expect("a line for the throttled chat");
    assert_eq!(total(throttled, "ChatsThrottled"), 1.0);
    assert_eq!(throttled.properties["Code"], "chat_rate_exceeded");
    assert_eq!(total(throttled, "ChatsFailed"), 0.0);
}

/// The per-minute chat limit counts by the clock's minute: start well inside one.
async fn demo_fresh_minute() {
    testkit::demo::wait_for_a_fresh_minute(15).await;
}
