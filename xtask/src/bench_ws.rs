//! `cargo xtask bench-ws [--runs N] CHAT_BINARY`: chat over a WebSocket, as API Gateway
//! would bill and deliver it.
//!
//! The chat binary behind the Runtime API emulator, the test kit's WebSocket gateway in
//! front (its `@connections` stand-in records each frame as it is posted), DynamoDB
//! Local, and the Gemini stand-in paced like the real API ([`Pacing::default`]).
//! - Frames and billed messages (API Gateway bills by the 32 KB) of a 1,000-word answer,
//!   against the chunks Gemini sent: 2 answers at the stand-in's usual pace, and 2 from a
//!   model seven times faster (4 words every 10 ms), where the 20-frames-a-second cap
//!   bites.
//! - From the stand-in writing its first chunk to the gateway receiving the first
//!   `delta` frame (the function's own delay, including the `@connections` post): `--runs`
//!   30-word answers (default 20), one warm process, after one that is not counted.

use std::{path::Path, process::ExitCode, time::Duration};

use serde_json::{Value, json};
use testkit::{
    GeminiStandIn, demo,
    events::json_event,
    gateway::{Client, Gateway, Invoker},
    gemini::{Behavior, Pacing},
    runtime::{Functions, Outcome, RuntimeApi},
};

const LONG: usize = 1000;
const LONG_RUNS: usize = 2;
/// A fast model: 4 words every 10 ms.
const FAST: Pacing = Pacing {
    first_chunk: Duration::from_millis(300),
    interval: Duration::from_millis(10),
    words_per_chunk: 4,
};
const SHORT: usize = 30;
/// API Gateway bills WebSocket messages in 32 KB units.
const BILLING_UNIT: usize = 32 * 1024;

pub async fn run(args: &[String]) -> ExitCode {
    let Some((runs, binary)) = crate::runs_and_binary(args, 20) else {
        eprintln!("usage: cargo xtask bench-ws [--runs N] CHAT_BINARY");
        return ExitCode::from(2);
    };
    match bench(Path::new(&binary), runs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(binary: &Path, runs: usize) -> Result<(), String> {
    let store = testkit::table::local_store("bench-ws").await;
    demo::seed(&store, 100_000_000)
        .await
        .map_err(|e| format!("seeding the demo users failed: {e}"))?;
    let standin = GeminiStandIn::with_behavior(Behavior::LongAnswer { words: LONG }).await;
    let pacing = Pacing::default();
    standin.set_pacing(pacing);
    let runtime = std::sync::Arc::new(RuntimeApi::start().await);
    let gateway = Gateway::start(Invoker::Emulator(runtime.clone())).await;
    let env = vec![
        ("TABLE_NAME", store.table().to_owned()),
        ("GEMINI_API_KEY", "bench".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        ("RUST_LOG", "warn".to_owned()),
        ("CHATS_IN_FLIGHT", "1000".to_owned()),
        ("CHATS_PER_MINUTE", "100000".to_owned()),
        ("WEBSOCKET_URL", gateway.url()),
        (
            "WEBSOCKET_MANAGEMENT_ENDPOINT",
            gateway.management_endpoint(),
        ),
    ];
    // Two processes: `$connect` and the chat are separate invocations.
    let _functions = Functions::spawn(binary, &runtime, 2, &env);

    let ticket = match tokio::time::timeout(
        Duration::from_secs(60),
        runtime.invoke(json_event(
            "POST",
            "/api/ws-ticket/",
            Some(demo::DEMO_TOKEN),
            None,
        )),
    )
    .await
    {
        Ok(Outcome::Response(resp)) if resp["statusCode"] == 200 => {
            let body: Value = serde_json::from_str(resp["body"].as_str().unwrap_or("{}"))
                .map_err(|e| e.to_string())?;
            body["ticket"].as_str().unwrap_or_default().to_owned()
        }
        other => return Err(format!("no ticket: {other:?}")),
    };
    let mut client = Client::connect(&format!("{}?ticket={ticket}", gateway.url()))
        .await
        .map_err(|status| format!("the WebSocket was refused: {status}"))?;

    println!(
        "Gemini stand-in paced {} ms to the first chunk, then {} words every {} ms\n",
        pacing.first_chunk.as_millis(),
        pacing.words_per_chunk,
        pacing.interval.as_millis()
    );
    println!(
        "{:<12} {:>10} {:>8} {:>8} {:>14} {:>12} {:>10}",
        "answer", "chunk every", "chunks", "frames", "delta frames", "billed msgs", "largest"
    );
    let mut round = 0;
    for (pace, _) in [pacing, pacing, FAST, FAST]
        .into_iter()
        .zip(0..LONG_RUNS * 2)
    {
        standin.set_pacing(pace);
        round += 1;
        let seen = chat(&standin, &gateway, &mut client, round).await?;
        let delta_frames = seen
            .frames
            .iter()
            .filter(|f| f.body["type"] == "delta")
            .count();
        let billed: usize = seen
            .frames
            .iter()
            .map(|f| f.bytes.div_ceil(BILLING_UNIT))
            .sum();
        let largest = seen.frames.iter().map(|f| f.bytes).max().unwrap_or(0);
        println!(
            "{:<12} {:>8}ms {:>8} {:>8} {:>14} {:>12} {:>9}B",
            format!("{LONG} words"),
            pace.interval.as_millis(),
            seen.chunks,
            seen.frames.len(),
            delta_frames,
            billed,
            largest
        );
    }

    standin.set_behavior(Behavior::LongAnswer { words: SHORT });
    standin.set_pacing(pacing);
    let mut first_delta = Vec::new();
    for i in 0..=runs {
        round += 1;
        let seen = chat(&standin, &gateway, &mut client, round).await?;
        if i > 0 {
            first_delta.push(seen.first_delta);
        }
    }
    first_delta.sort();
    let at = |q: f64| first_delta[((first_delta.len() - 1) as f64 * q).round() as usize];
    println!(
        "\n{runs} {SHORT}-word answers, one warm process: the stand-in's first chunk -> the gateway receives the first delta frame"
    );
    println!(
        "p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        first_delta.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    Ok(())
}

struct Seen {
    chunks: usize,
    frames: Vec<testkit::gateway::Frame>,
    first_delta: Duration,
}

/// One chat over the WebSocket: its frames (those posted for it, balance pushes
/// included), the stand-in's chunks, and the first delta's delay after the first chunk.
async fn chat(
    standin: &GeminiStandIn,
    gateway: &Gateway,
    client: &mut Client,
    round: usize,
) -> Result<Seen, String> {
    let index = standin.requests();
    let posted = gateway.frames().len();
    let request_id = format!("bench-{round}-{}", std::process::id());
    client
        .send(json!({
            "action": "chat", "message": format!("story {round}"),
            "request_id": request_id, "conversation_id": null,
        }))
        .await;
    client
        .until("done", Duration::from_secs(60))
        .await
        .ok_or("a chat over the WebSocket did not finish")?;
    // The balance push that goes with it, if it is not in yet.
    let frames = gateway
        .wait_for(Duration::from_secs(2), |frames| {
            frames[posted..].iter().any(|f| f.body["type"] == "balance")
        })
        .await;
    let frames = frames[posted..].to_vec();
    let recorded = standin.recorded();
    let request = recorded.get(index).ok_or("the stand-in saw no request")?;
    let first_chunk = *request.chunks_written.first().ok_or("no chunk")?;
    let first_delta = frames
        .iter()
        .find(|f| f.body["type"] == "delta")
        .ok_or("no delta frame")?
        .at;
    Ok(Seen {
        chunks: request.chunks_written.len(),
        first_delta: first_delta.saturating_duration_since(first_chunk),
        frames,
    })
}
