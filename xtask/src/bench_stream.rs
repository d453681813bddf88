//! `cargo xtask bench-stream [--runs N] CHAT_BINARY`: how soon a streamed chat shows its
//! first words, against the same chat answered as one JSON body; and how many sequential
//! DynamoDB round trips an answered chat costs.
//!
//! Streaming: the chat binary (in Lambda response-streaming mode) behind the Runtime API
//! emulator, against DynamoDB Local and the Gemini stand-in paced like the real API
//! ([`Pacing::default`]) with a 120-word answer. `--runs` rounds (default 30), each one
//! `Accept: text/event-stream` chat and one buffered chat (no `Accept`), interleaved.
//! Per streamed chat: from the stand-in writing its first chunk to the emulator reading
//! the first `delta` event (the function's own delay; goal ≤ 50 ms), and the time to the
//! first body byte from the invocation. The buffered chat's stand-in answers after the time
//! its stream took to finish (a buffered `generateContent` returns when generation ends),
//! so its total is what a client of the JSON answer waits.
//!
//! Round trips: a second process reaches DynamoDB Local through a relay
//! ([`FaultProxy`]), the stand-in answering at once. Calls per chat are the relay's
//! count; sequential round trips are read from the latency the relay adds when it holds
//! every call for [`HOLD`]: calls made side by side are held side by side.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use testkit::{
    GeminiStandIn, demo,
    faults::{Fault, FaultProxy, Rule},
    gemini::{Behavior, Pacing},
    runtime::{Functions, Outcome, RuntimeApi},
};

use crate::bench::percentile;

/// The stand-in's streamed answer.
const ANSWER: Behavior = Behavior::LongAnswer { words: 120 };
/// How long the relay holds each DynamoDB call when counting sequential round trips.
const HOLD: Duration = Duration::from_millis(50);
/// Chats per relay setting in the round-trip count.
const ROUND_TRIP_RUNS: usize = 15;

pub async fn run(args: &[String]) -> ExitCode {
    let Some((runs, binary)) = crate::runs_and_binary(args, 30) else {
        eprintln!("usage: cargo xtask bench-stream [--runs N] CHAT_BINARY");
        return ExitCode::from(2);
    };
    let binary = Path::new(&binary);

    let store = testkit::table::local_store("bench-stream").await;
    if let Err(e) = demo::seed(&store, 100_000_000).await {
        eprintln!("seeding the demo users failed: {e}");
        return ExitCode::FAILURE;
    }
    let standin = GeminiStandIn::with_behavior(ANSWER).await;
    standin.set_pacing(Pacing::default());
    let env = vec![
        ("TABLE_NAME", store.table().to_owned()),
        ("GEMINI_API_KEY", "bench".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        ("RUST_LOG", "warn".to_owned()),
        // A benchmark of latency, not of the per-user chat limits.
        ("CHATS_IN_FLIGHT", "1000".to_owned()),
        ("CHATS_PER_MINUTE", "100000".to_owned()),
    ];

    let streaming = match streaming(binary, &standin, &env, runs).await {
        Ok(timings) => timings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{runs} streamed and {runs} buffered chats, interleaved, one warm process; a {}-word answer paced {} ms to the first chunk, then {} words every {} ms\n",
        120,
        Pacing::default().first_chunk.as_millis(),
        Pacing::default().words_per_chunk,
        Pacing::default().interval.as_millis(),
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "", "p50", "p90", "max");
    for (label, times) in [
        (
            "stand-in's first chunk -> first delta",
            streaming.first_delta,
        ),
        ("time to first body byte (streamed)", streaming.first_byte),
        ("time to first delta (streamed)", streaming.to_delta),
        ("total (streamed)", streaming.streamed_total),
        ("total (buffered JSON)", streaming.buffered_total),
    ] {
        print_row(label, times);
    }

    standin.set_behavior(Behavior::Answer);
    match round_trips(binary, &env).await {
        Ok((calls, plain, held)) => {
            let added = held.as_secs_f64() - plain.as_secs_f64();
            println!(
                "\nDynamoDB through a relay, {ROUND_TRIP_RUNS} answered JSON chats per setting, interleaved"
            );
            println!("calls per chat: {calls:.1}");
            println!(
                "chat p50 {:.1} ms; with every call held {} ms: {:.1} ms; sequential round trips ≈ {:.2}",
                plain.as_secs_f64() * 1e3,
                HOLD.as_millis(),
                held.as_secs_f64() * 1e3,
                added / HOLD.as_secs_f64(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

struct Streaming {
    first_delta: Vec<Duration>,
    first_byte: Vec<Duration>,
    to_delta: Vec<Duration>,
    streamed_total: Vec<Duration>,
    buffered_total: Vec<Duration>,
}

async fn streaming(
    binary: &Path,
    standin: &GeminiStandIn,
    env: &[(&str, String)],
    runs: usize,
) -> Result<Streaming, String> {
    let runtime = RuntimeApi::start().await;
    let _function = Functions::spawn(binary, &runtime, 1, env);
    let mut timings = Streaming {
        first_delta: Vec::new(),
        first_byte: Vec::new(),
        to_delta: Vec::new(),
        streamed_total: Vec::new(),
        buffered_total: Vec::new(),
    };
    // Round 0 warms the process up and is not counted.
    for round in 0..=runs {
        let index = standin.requests();
        let started = Instant::now();
        let mut stream = runtime.invoke_streaming(chat_event(round, true));
        match tokio::time::timeout(Duration::from_secs(30), stream.prelude()).await {
            Ok(Ok(prelude)) if prelude.status == 200 => {}
            other => return Err(format!("a streamed chat got no 200 prelude: {other:?}")),
        }
        let (mut first_byte, mut first_delta, mut text) = (None, None, String::new());
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next_chunk())
                .await
                .map_err(|_| "a streamed chat stalled".to_owned())?;
            let Some(chunk) = chunk else { break };
            first_byte.get_or_insert(chunk.at);
            text.push_str(&String::from_utf8_lossy(&chunk.bytes));
            if first_delta.is_none() && text.contains("event: delta") {
                first_delta = Some(chunk.at);
            }
        }
        let ended = Instant::now();
        if !text.contains("event: done") {
            return Err(format!("a streamed chat did not finish: {text}"));
        }
        let recorded = standin.recorded();
        let request = recorded
            .get(index)
            .ok_or("the stand-in saw no request for a streamed chat")?;
        let (Some(first_byte), Some(first_delta), Some(first_chunk), Some(last_chunk)) = (
            first_byte,
            first_delta,
            request.chunks_written.first(),
            request.chunks_written.last(),
        ) else {
            return Err("a streamed chat had no delta".into());
        };
        // How long the stand-in took to stream the whole answer, for the buffered one.
        let generation = *last_chunk - request.received_at;

        let buffered = Instant::now();
        standin.set_behavior(Behavior::Slow(generation));
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            runtime.invoke(chat_event(round, false)),
        )
        .await;
        standin.set_behavior(ANSWER);
        match outcome {
            Ok(Outcome::Response(resp)) if resp["statusCode"] == 200 => {}
            other => return Err(format!("a buffered chat failed: {other:?}")),
        }
        if round > 0 {
            timings.buffered_total.push(buffered.elapsed());
            timings
                .first_delta
                .push(first_delta.saturating_duration_since(*first_chunk));
            timings.first_byte.push(first_byte - started);
            timings.to_delta.push(first_delta - started);
            timings.streamed_total.push(ended - started);
        }
    }
    Ok(timings)
}

/// Calls per answered chat, and the median chat latency with the relay passing calls
/// straight on and with it holding each for [`HOLD`].
async fn round_trips(
    binary: &Path,
    env: &[(&str, String)],
) -> Result<(f64, Duration, Duration), String> {
    let relay = FaultProxy::in_front_of_local().await;
    let mut env = env.to_vec();
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", relay.url()));
    let runtime = RuntimeApi::start().await;
    let _function = Functions::spawn(binary, &runtime, 1, &env);
    let (mut plain, mut held, mut calls) = (Vec::new(), Vec::new(), 0);
    for round in 0..=ROUND_TRIP_RUNS {
        for hold in [false, true] {
            relay.set_rules(hold.then(|| Rule::new(None, 1.0, Fault::Delay(HOLD))));
            let before = relay.forwarded();
            let started = Instant::now();
            match tokio::time::timeout(
                Duration::from_secs(30),
                runtime.invoke(chat_event(1000 + round, false)),
            )
            .await
            {
                Ok(Outcome::Response(resp)) if resp["statusCode"] == 200 => {}
                other => return Err(format!("a chat through the relay failed: {other:?}")),
            }
            let took = started.elapsed();
            // Round 0 warms up (and starts the conversation the others continue).
            if round > 0 {
                calls += relay.forwarded() - before;
                if hold { &mut held } else { &mut plain }.push(took);
            }
        }
    }
    let calls = calls as f64 / (2 * ROUND_TRIP_RUNS) as f64;
    Ok((calls, percentile(&mut plain, 50), percentile(&mut held, 50)))
}

fn print_row(label: &str, mut times: Vec<Duration>) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        label,
        ms(percentile(&mut times, 50)),
        ms(percentile(&mut times, 90)),
        ms(percentile(&mut times, 100)),
    );
}

/// `events/chat.json` (the demo user), as a streamed chat or as a buffered one (no
/// `Accept` header).
pub fn chat_event(n: usize, stream: bool) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/chat.json");
    let text = std::fs::read_to_string(path).expect("the sample event");
    let mut event: Value = serde_json::from_str(&text).expect("valid JSON");
    for field in ["headers", "multiValueHeaders"] {
        if let Some(headers) = event[field].as_object_mut() {
            headers.remove("Accept");
        }
    }
    if stream {
        event["headers"]["Accept"] = json!("text/event-stream");
        event["multiValueHeaders"]["Accept"] = json!(["text/event-stream"]);
    }
    let body = json!({"message": format!("question {n}")});
    event["body"] = json!(body.to_string());
    event["isBase64Encoded"] = json!(false);
    event
}
