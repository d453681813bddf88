//! `cargo xtask cold-start [--runs N] [--warm N] BINARY...`: how fast each function
//! binary starts and answers, and how much memory it takes.
//!
//! Each binary is started `--runs` times (default 20) behind the Lambda Runtime API
//! emulator and timed from process start to its first response — runtime start-up,
//! configuration, SDK and HTTP clients, and one real request against DynamoDB Local (and
//! the Gemini stand-in for chat) — then answers `--warm` more requests (default 20).
//! Peak resident memory is read from /proc. Needs `AWS_ENDPOINT_URL_DYNAMODB` pointing at
//! DynamoDB Local; `scripts/bench` sets everything up.

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use testkit::{
    GeminiStandIn, demo,
    runtime::{Functions, Outcome, RuntimeApi},
};

pub async fn run(args: &[String]) -> ExitCode {
    let (mut runs, mut warm, mut binaries) = (20usize, 20usize, Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs),
            "--warm" => warm = args.next().and_then(|n| n.parse().ok()).unwrap_or(warm),
            path => binaries.push(path.to_owned()),
        }
    }
    if binaries.is_empty() || runs == 0 {
        eprintln!("usage: cargo xtask cold-start [--runs N] [--warm N] BINARY...");
        return ExitCode::from(2);
    }

    let store = testkit::table::local_store("bench").await;
    if let Err(e) = demo::seed(&store, 100_000_000).await {
        eprintln!("seeding the demo users failed: {e}");
        return ExitCode::FAILURE;
    }
    let standin = GeminiStandIn::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("GEMINI_API_KEY", "bench".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        ("RUST_LOG", "warn".to_owned()),
    ];

    println!(
        "{runs} cold starts and {warm} warm requests each; DynamoDB Local and the Gemini stand-in on loopback\n"
    );
    println!(
        "{:<10} {:>9} {:>11} {:>11} {:>11} {:>11} {:>10}",
        "function", "size MB", "cold p50", "cold p90", "warm p50", "warm p90", "peak RSS"
    );
    let mut failed = false;
    for binary in &binaries {
        let path = Path::new(binary);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(binary);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let (mut cold, mut hot, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            // A fresh emulator per process: a process killed while polling would
            // otherwise leave a poll behind that swallows the next invocation.
            let runtime = RuntimeApi::start().await;
            let started = Instant::now();
            let mut function = Functions::spawn(path, &runtime, 1, &env);
            if !answers(&runtime, event_for(name, i * (warm + 1))).await {
                eprintln!("{name}: the first request failed (run {i})");
                failed = true;
                break;
            }
            cold.push(started.elapsed());
            for n in 1..=warm {
                let t = Instant::now();
                if !answers(&runtime, event_for(name, i * (warm + 1) + n)).await {
                    eprintln!("{name}: a warm request failed");
                    failed = true;
                }
                hot.push(t.elapsed());
            }
            rss.extend(function.peak_rss_kib());
            function.kill_all();
        }
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<10} {:>9.1} {:>11} {:>11} {:>11} {:>11} {:>7.1} MB",
            name,
            size,
            ms(percentile(&mut cold, 50)),
            ms(percentile(&mut cold, 90)),
            ms(percentile(&mut hot, 50)),
            ms(percentile(&mut hot, 90)),
            percentile(&mut rss, 50) as f64 / 1024.0,
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Invokes once; true for a 2xx answer within 30 s.
async fn answers(runtime: &RuntimeApi, event: Value) -> bool {
    match tokio::time::timeout(Duration::from_secs(30), runtime.invoke(event)).await {
        Ok(Outcome::Response(resp)) => resp["statusCode"].as_u64().is_some_and(|s| s < 300),
        _ => false,
    }
}

fn percentile<T: Ord + Copy + Default>(values: &mut [T], p: usize) -> T {
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable();
    values[(values.len() - 1) * p / 100]
}

/// The sample event for the function, from `events/`; register gets a fresh username
/// each time so that every request creates an account.
fn event_for(function: &str, n: usize) -> Value {
    let file = match function {
        "register" => "register.json",
        "login" => "login.json",
        "chat" => "chat.json",
        _ => "tokens.json",
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/");
    let text = std::fs::read_to_string(format!("{path}{file}")).expect("the sample event");
    let mut event: Value = serde_json::from_str(&text).expect("valid JSON");
    if function == "register" {
        let body =
            json!({"username": format!("bench{n}-{}", std::process::id()), "password": "pass1234"});
        event["body"] = json!(body.to_string());
        event["isBase64Encoded"] = json!(false);
    }
    event
}
