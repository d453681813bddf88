//! `cargo xtask bench-history [--runs N] CHAT_BINARY`: does a chat's latency grow with
//! the length of its conversation?
//!
//! Seeds one user with two conversations, one of 10 and one of 2,000 stored, answered
//! messages, then sends `--runs` chats (default 50) into each, interleaved, through the
//! chat binary behind the Lambda Runtime API emulator, against DynamoDB Local and the
//! Gemini stand-in. Prints p50 / p90 for each and the ratio of the medians. The context
//! read takes the newest turns only, so the goal is a ratio of at most 1.1.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use shared::{
    domain::{ConversationId, Usage},
    store::{ChatOutcome, OpenCharge, Store, now_millis},
};
use testkit::{
    GeminiStandIn, demo,
    runtime::{Functions, Outcome, RuntimeApi},
};

pub async fn run(args: &[String]) -> ExitCode {
    let Some((runs, binary)) = crate::runs_and_binary(args, 50) else {
        eprintln!("usage: cargo xtask bench-history [--runs N] CHAT_BINARY");
        return ExitCode::from(2);
    };

    let store = testkit::table::local_store("bench-history").await;
    if let Err(e) = demo::seed(&store, 100_000_000).await {
        eprintln!("seeding the demo users failed: {e}");
        return ExitCode::FAILURE;
    }
    let mut conversations = Vec::new();
    for length in [10usize, 2_000] {
        match seed_conversation(&store, length).await {
            Ok(id) => conversations.push((length, id)),
            Err(e) => {
                eprintln!("seeding a conversation of {length} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let standin = GeminiStandIn::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("GEMINI_API_KEY", "bench".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        ("RUST_LOG", "warn".to_owned()),
        // One user's hundred chats, timed rather than refused by the per-user limits.
        ("CHATS_IN_FLIGHT", "1000".to_owned()),
        ("CHATS_PER_MINUTE", "100000".to_owned()),
    ];
    let runtime = RuntimeApi::start().await;
    let mut function = Functions::spawn(Path::new(&binary), &runtime, 1, &env);
    let mut timings = vec![Vec::new(); conversations.len()];
    // One warm-up each, then the runs, interleaved so that drift hits both alike.
    for round in 0..=runs {
        for (i, (_, id)) in conversations.iter().enumerate() {
            let started = Instant::now();
            if !answers(&runtime, chat_event(id, round)).await {
                eprintln!("a chat failed");
                function.kill_all();
                return ExitCode::FAILURE;
            }
            if round > 0 {
                timings[i].push(started.elapsed());
            }
        }
    }
    function.kill_all();

    println!(
        "{runs} chats into each conversation, one warm process, DynamoDB Local and the Gemini stand-in on loopback\n"
    );
    println!("{:<24} {:>10} {:>10}", "stored messages", "p50", "p90");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let mut medians = Vec::new();
    for ((length, _), times) in conversations.iter().zip(&mut timings) {
        times.sort_unstable();
        let p = |q: usize| times[(times.len() - 1) * q / 100];
        medians.push(p(50));
        println!("{:<24} {:>10} {:>10}", length, ms(p(50)), ms(p(90)));
    }
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64();
    println!("\nratio of medians (2,000 / 10): {ratio:.2}");
    ExitCode::SUCCESS
}

/// A conversation of `length` answered messages of the demo user, written the way the
/// settle writes them (chat item, close, conversation item).
async fn seed_conversation(store: &Store, length: usize) -> Result<ConversationId, String> {
    let id = ConversationId::new();
    let account = store
        .user(demo::DEMO_USER)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no demo user")?
        .account;
    for n in 0..length {
        let charge = OpenCharge {
            id: uuid_v7(),
            account: account.clone(),
            conversation_id: id.as_str().to_owned(),
            cost: 1,
            opened_at: now_millis(),
        };
        let message = format!("stored question {n}: {}", "lorem ipsum ".repeat(20));
        let response = format!("stored answer {n}: {}", "dolor sit amet ".repeat(40));
        let answered = ChatOutcome::Answered {
            message: &message,
            response: &response,
            model: "gemini-flash-latest",
            usage: Usage::default(),
            balance: 0,
            finish_reason: Some("STOP"),
        };
        store
            .record_chat(&charge, answered)
            .await
            .map_err(|e| e.to_string())?;
        store
            .touch_conversation(&charge, "bench", "gemini-flash-latest", 0)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(id)
}

fn uuid_v7() -> String {
    ConversationId::new().as_str().to_owned()
}

async fn answers(runtime: &RuntimeApi, event: Value) -> bool {
    match tokio::time::timeout(Duration::from_secs(30), runtime.invoke(event)).await {
        Ok(Outcome::Response(resp)) => resp["statusCode"].as_u64() == Some(200),
        _ => false,
    }
}

/// `events/chat.json` (the demo user) continuing conversation `id`.
fn chat_event(id: &ConversationId, n: usize) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/chat.json");
    let text = std::fs::read_to_string(path).expect("the sample event");
    let mut event: Value = serde_json::from_str(&text).expect("valid JSON");
    let body = json!({"message": format!("question {n}"), "conversation_id": id.as_str()});
    event["body"] = json!(body.to_string());
    event["isBase64Encoded"] = json!(false);
    event
}
