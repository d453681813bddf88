//! `cargo xtask bench [--spawns N] [--warm N] [--gap N] RELEASE_DIR`: the four functions
//! against a hello-world `lambda_http` binary, side by side in one run, each binary run as
//! a process behind the Lambda Runtime API emulator (`testkit::runtime`), against
//! DynamoDB Local and the Gemini stand-in (answering at once).
//!
//! - **init**: from spawning the process to its first `GET .../invocation/next` (the end
//!   of Lambda's init phase): runtime start-up, configuration, SDK and HTTP clients. The
//!   median of `--spawns` (default 15) fresh processes per binary, interleaved round by
//!   round (each round in a rotated order) so that the machine's load drifts over all
//!   binaries alike.
//! - **init CPU**: the CPU time (all threads) that process had used by its first poll: the
//!   same start-up as work done, steady where the wall time of a few milliseconds on a
//!   busy machine is mostly waiting for a core.
//! - **first request**: that fresh process's first invocation, from queueing it to the
//!   emulator holding the whole response — where init work put off until first use
//!   would show.
//! - **warm p50 / p99**: `--warm` (default 200) more invocations of one process.
//! - **peak RSS**: that process's `VmHWM` after them.
//! - **nodelay**: `TCP_NODELAY` on the process's Runtime API connections.
//! - **response completion** (chat): `--gap` (default 100) JSON and SSE chats through one
//!   warm process whose DynamoDB calls go through a relay. The settle is a chat's last
//!   DynamoDB call and precedes the handler's last byte, so the time from the relay
//!   handing back the last answer to the emulator holding the whole response bounds,
//!   from above, the time from the handler's last byte to the emulator holding it.
//!
//! Each function runs with the environment `template.yaml` gives it (its literal
//! values; `!Ref` parameters take their defaults in the code), Lambda's JSON log format
//! at INFO, and the limits meant for one client raised, so that the bench's hundreds of
//! requests from one address and one user are timed rather than refused. Needs
//! `AWS_ENDPOINT_URL_DYNAMODB`; `scripts/bench` builds the binaries and sets it all up.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use serde_norway::Value as Yaml;
use testkit::{
    GeminiStandIn, demo,
    faults::FaultProxy,
    runtime::{Functions, Outcome, RuntimeApi},
};

use crate::bench_stream::chat_event;

/// The baseline first, then the four functions.
const BINARIES: [&str; 5] = ["hello-world", "register", "login", "chat", "tokens"];
/// Longest wait for any one step.
const PATIENCE: Duration = Duration::from_secs(60);
/// Pause before each timed start.
const SETTLE: Duration = Duration::from_millis(50);

pub async fn run(args: &[String]) -> ExitCode {
    let (mut spawns, mut warm, mut gap_runs, mut dir) = (15usize, 200usize, 100usize, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |default| args.next().and_then(|n| n.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--spawns" => spawns = number(spawns),
            "--warm" => warm = number(warm),
            "--gap" => gap_runs = number(gap_runs),
            path => dir = Some(PathBuf::from(path)),
        }
    }
    let Some(dir) = dir.filter(|_| spawns > 0 && warm > 0 && gap_runs > 0) else {
        eprintln!("usage: cargo xtask bench [--spawns N] [--warm N] [--gap N] RELEASE_DIR");
        return ExitCode::from(2);
    };
    match bench(&dir, spawns, warm, gap_runs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What was measured of one binary.
#[derive(Default)]
struct Measured {
    size_mb: f64,
    init: Vec<Duration>,
    init_cpu: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
    peak_rss_kib: u64,
    nodelay: Vec<bool>,
}

async fn bench(dir: &Path, spawns: usize, warm: usize, gap_runs: usize) -> Result<(), String> {
    let store = testkit::table::local_store("bench").await;
    demo::seed(&store, 100_000_000)
        .await
        .map_err(|e| format!("seeding the demo users failed: {e}"))?;
    let standin = GeminiStandIn::start().await;
    let common = [
        ("TABLE_NAME", store.table().to_owned()),
        ("GEMINI_API_KEY", "bench".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("REGISTER_IP_LIMIT", "1000000".to_owned()),
        ("REGISTRATIONS_PER_HOUR", "1000000".to_owned()),
        ("CHATS_IN_FLIGHT", "1000".to_owned()),
        ("CHATS_PER_MINUTE", "1000000".to_owned()),
    ];
    let envs: Vec<Vec<(&str, String)>> = BINARIES
        .iter()
        .map(|name| {
            let mut env = template_env(name);
            env.extend(common.iter().map(|(k, v)| (*k, v.clone())));
            env
        })
        .collect();
    let paths: Vec<PathBuf> = BINARIES.iter().map(|name| dir.join(name)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(format!("no binary {}", missing.display()));
    }

    let mut measured: Vec<Measured> = paths
        .iter()
        .map(|p| Measured {
            size_mb: std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1e6),
            ..Measured::default()
        })
        .collect();
    let mut request = 0usize;
    for round in 0..spawns {
        // Each round starts with the next binary, so that none always follows the same
        // one (and the work DynamoDB Local is still doing for it).
        for i in (0..BINARIES.len()).map(|k| (round + k) % BINARIES.len()) {
            let name = BINARIES[i];
            // Let the previous process's aftermath settle before timing the next start.
            tokio::time::sleep(SETTLE).await;
            // A fresh emulator per process, so its first poll is this process's.
            let runtime = RuntimeApi::start().await;
            let spawned = Instant::now();
            let function = Functions::spawn(&paths[i], &runtime, 1, &envs[i]);
            let polled = tokio::time::timeout(PATIENCE, runtime.first_poll())
                .await
                .map_err(|_| format!("{name} never polled for an invocation"))?;
            measured[i].init_cpu.push(function.cpu_time());
            request += 1;
            let first = timed(&runtime, name, event_for(name, request)).await?;
            measured[i].init.push(polled - spawned);
            measured[i].first.push(first);
            drop(function);
        }
    }
    for (i, name) in BINARIES.iter().enumerate() {
        let runtime = RuntimeApi::start().await;
        let function = Functions::spawn(&paths[i], &runtime, 1, &envs[i]);
        for n in 0..=warm {
            request += 1;
            let took = timed(&runtime, name, event_for(name, request)).await?;
            // The first is the cold one, measured above.
            if n > 0 {
                measured[i].warm.push(took);
            }
        }
        measured[i].peak_rss_kib = function.peak_rss_kib().into_iter().max().unwrap_or(0);
        measured[i].nodelay = function
            .runtime_api_nodelay(&runtime)
            .map_err(|e| format!("reading {name}'s socket options: {e}"))?;
    }
    let chat = BINARIES.iter().position(|n| *n == "chat").expect("chat");
    let gaps = completion_gaps(&paths[chat], &envs[chat], gap_runs).await?;

    report(&measured, spawns, warm);
    println!(
        "\nchat, response completion: the relay hands back the chat's last DynamoDB answer (the settle) -> the emulator holds the whole response; {gap_runs} chats each, one warm process\n"
    );
    println!("{:<24} {:>9} {:>9} {:>9}", "", "p50", "p99", "max");
    for (label, mut times) in gaps {
        println!(
            "{:<24} {:>9} {:>9} {:>9}",
            label,
            ms(percentile(&mut times, 50)),
            ms(percentile(&mut times, 99)),
            ms(percentile(&mut times, 100)),
        );
    }
    Ok(())
}

fn report(measured: &[Measured], spawns: usize, warm: usize) {
    println!(
        "init: spawn -> first poll of the Runtime API, median of {spawns} spawns; init CPU: CPU time used by then (median); first request: that process's first invocation (median); warm: {warm} invocations of one process; peak RSS: its VmHWM after them\n"
    );
    println!(
        "{:<12} {:>8} {:>9} {:>7} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "binary",
        "size",
        "init",
        "× hello",
        "init CPU",
        "× hello",
        "first req",
        "warm p50",
        "warm p99",
        "peak RSS",
        "× hello",
        "nodelay"
    );
    let mut base_init = None;
    let mut base_cpu = None;
    let mut base_rss = None;
    for (name, m) in BINARIES.iter().zip(measured) {
        let (mut init, mut first, mut warm) = (m.init.clone(), m.first.clone(), m.warm.clone());
        let init = percentile(&mut init, 50);
        let cpu = percentile(&mut m.init_cpu.clone(), 50);
        let base_cpu = *base_cpu.get_or_insert(cpu.as_secs_f64());
        let rss = m.peak_rss_kib as f64 / 1024.0;
        let base_init = *base_init.get_or_insert(init.as_secs_f64());
        let base_rss = *base_rss.get_or_insert(rss);
        let nodelay = match (m.nodelay.iter().all(|on| *on), m.nodelay.is_empty()) {
            (_, true) => "none",
            (true, false) => "on",
            (false, false) => "OFF",
        };
        println!(
            "{:<12} {:>5.1} MB {:>9} {:>7.2} {:>9} {:>7.2} {:>10} {:>9} {:>9} {:>6.1} MB {:>7.2} {:>8}",
            name,
            m.size_mb,
            ms(init),
            init.as_secs_f64() / base_init,
            ms(cpu),
            cpu.as_secs_f64() / base_cpu,
            ms(percentile(&mut first, 50)),
            ms(percentile(&mut warm, 50)),
            ms(percentile(&mut warm, 99)),
            rss,
            rss / base_rss,
            nodelay,
        );
    }
}

/// JSON and SSE chats through one warm process, DynamoDB through a relay: for each,
/// the relay's last answer -> the emulator holding the whole response.
async fn completion_gaps(
    chat: &Path,
    env: &[(&str, String)],
    runs: usize,
) -> Result<[(&'static str, Vec<Duration>); 2], String> {
    let relay = FaultProxy::in_front_of_local().await;
    let mut env = env.to_vec();
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", relay.url()));
    let runtime = RuntimeApi::start().await;
    let _function = Functions::spawn(chat, &runtime, 1, &env);
    let (mut json, mut sse) = (Vec::new(), Vec::new());
    for round in 0..=runs {
        for streamed in [false, true] {
            let invoked = runtime.invoke_timed(chat_event(round, streamed));
            let (outcome, held) = tokio::time::timeout(PATIENCE, invoked)
                .await
                .map_err(|_| "a chat through the relay got no answer".to_owned())?;
            let body = match &outcome {
                Outcome::Response(resp) if resp["statusCode"] == 200 => resp["body"].to_string(),
                other => return Err(format!("a chat through the relay failed: {other:?}")),
            };
            if streamed && !body.contains("event: done") {
                return Err(format!("a streamed chat did not finish: {body}"));
            }
            let last = relay
                .last_answer_at()
                .ok_or("the chat made no DynamoDB call")?;
            // Round 0 warms the process up.
            if round > 0 {
                if streamed { &mut sse } else { &mut json }
                    .push(held.saturating_duration_since(last));
            }
        }
    }
    Ok([("JSON chat", json), ("SSE chat", sse)])
}

/// One invocation, from queueing it to the emulator holding the whole answer, which
/// must be a success.
async fn timed(runtime: &RuntimeApi, name: &str, event: Value) -> Result<Duration, String> {
    let queued = Instant::now();
    let (outcome, held) = tokio::time::timeout(PATIENCE, runtime.invoke_timed(event))
        .await
        .map_err(|_| format!("{name}: no answer within {PATIENCE:?}"))?;
    match outcome {
        Outcome::Response(resp) if resp["statusCode"].as_u64().is_some_and(|s| s < 300) => {
            Ok(held - queued)
        }
        other => Err(format!("{name}: the request failed: {other:?}")),
    }
}

/// The function's environment in `template.yaml` (globals, then its own), literal values
/// only, with its memory size and name as Lambda sets them. The hello world has none.
fn template_env(binary: &str) -> Vec<(&'static str, String)> {
    let template: Yaml =
        serde_norway::from_str(testkit::table::TEMPLATE).expect("template.yaml is YAML");
    let function = template["Resources"]
        .as_mapping()
        .into_iter()
        .flat_map(|resources| resources.values())
        .find(|r| r["Metadata"]["Binary"].as_str() == Some(binary));
    let mut env = vec![("AWS_LAMBDA_FUNCTION_NAME", binary.to_owned())];
    let Some(function) = function else {
        env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()));
        return env;
    };
    let memory = function["Properties"]["MemorySize"].as_u64().unwrap_or(128);
    env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()));
    for variables in [
        &template["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        for (name, value) in variables.as_mapping().into_iter().flatten() {
            let value = match value {
                Yaml::String(s) => s.clone(),
                Yaml::Number(n) => n.to_string(),
                _ => continue, // !Ref: the code's default stands in for the parameter's
            };
            if let Some(name) = name.as_str() {
                env.push((leak(name), value));
            }
        }
    }
    env
}

/// Environment names live as long as the bench.
fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

/// The sample event each binary answers; register gets a fresh username each time, so
/// that every request creates an account. The hello world takes any event.
fn event_for(binary: &str, n: usize) -> Value {
    if binary == "chat" {
        return chat_event(n, false);
    }
    let file = match binary {
        "register" => "register.json",
        "login" => "login.json",
        _ => "tokens.json",
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/");
    let text = std::fs::read_to_string(format!("{path}{file}")).expect("the sample event");
    let mut event: Value = serde_json::from_str(&text).expect("valid JSON");
    let body = match binary {
        "register" => {
            json!({"username": format!("bench{n}-{}", std::process::id()), "password": "pass1234"})
        }
        // Each login adds a session and the twenty-first ends the oldest: `broke` logs
        // in, so that the demo user's fixed session, which chat and tokens use, stays.
        "login" => json!({"username": demo::BROKE_USER, "password": demo::DEMO_PASSWORD}),
        _ => return event,
    };
    event["body"] = json!(body.to_string());
    event["isBase64Encoded"] = json!(false);
    event
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The `p`th percentile (nearest rank below); `p = 100` is the maximum.
pub fn percentile(values: &mut [Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    values[(values.len() - 1) * p / 100]
}
