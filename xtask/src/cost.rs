//! `cargo xtask cost [--runs N] [--gemini-ms MS] [--prompt-tokens N] [--response-tokens N]
//! [--thoughts-tokens N] [--model ID] BIN_DIR`: what a million chats (JSON and streamed),
//! balance reads, logins and registrations cost, by component, from measured inputs and
//! the list prices in `xtask/prices.yaml`.
//!
//! Each route's function (the binaries in `BIN_DIR`, release builds for figures worth
//! quoting) runs as a process behind the Lambda Runtime API emulator, with Lambda's JSON
//! log format at INFO as deployed, against DynamoDB Local through the testkit proxy and
//! the Gemini stand-in answering in `--gemini-ms` (default 1000: the whole answer; a
//! stream's first chunk comes at 40 % of it). After two warm-up invocations, `--runs`
//! (default 20) invocations are measured:
//! - **Lambda**: one request each, and the billed duration (each invocation's time from
//!   the emulator handing it out to holding the whole response, rounded up to the
//!   millisecond) times the memory `template.yaml` gives the function;
//! - **API Gateway**: one REST request each;
//! - **DynamoDB**: read and write request units as DynamoDB reports them (the proxy asks
//!   for `ReturnConsumedCapacity: TOTAL`); a write refused by its condition reports none
//!   and is counted as one write unit, what AWS bills at least;
//! - **CloudWatch Logs**: the bytes each invocation writes to standard output (log lines
//!   and its metrics line);
//! - **Gemini**: the stand-in's token counts are not a real answer's, so a chat's tokens
//!   are stated (`--prompt-tokens` 600, `--response-tokens` 300, `--thoughts-tokens` 0 by
//!   default) and priced for `--model` (default `gemini-flash-latest`).
//!
//! Not per request, so not in the table: CloudWatch custom metrics ($0.30 per metric
//! series a month), alarms, the dashboard, data transfer out. Needs
//! `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use serde_norway::Value as Yaml;
use testkit::{
    Behavior, GeminiStandIn, demo,
    events::json_event,
    faults::FaultProxy,
    gemini::Pacing,
    runtime::{Functions, Outcome, RuntimeApi},
};

use crate::bench_stream::chat_event;

const PRICES: &str = include_str!("../prices.yaml");

/// A cost component: what a million requests of a route cost in it.
type Component = Box<dyn Fn(Route, &Measured) -> f64>;
/// A process's environment.
type Env = Vec<(&'static str, String)>;
const PER: f64 = 1_000_000.0;

/// What is asked for, in the order the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    ChatJson,
    ChatStream,
    Balance,
    Login,
    Register,
}

impl Route {
    const ALL: [Route; 5] = [
        Self::ChatJson,
        Self::ChatStream,
        Self::Balance,
        Self::Login,
        Self::Register,
    ];

    fn title(self) -> &'static str {
        match self {
            Self::ChatJson => "chat (JSON)",
            Self::ChatStream => "chat (stream)",
            Self::Balance => "balance read",
            Self::Login => "login",
            Self::Register => "registration",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Self::ChatJson | Self::ChatStream => "chat",
            Self::Balance => "tokens",
            Self::Login => "login",
            Self::Register => "register",
        }
    }

    fn event(self, n: usize) -> Value {
        match self {
            Self::ChatJson => chat_event(n, false),
            Self::ChatStream => chat_event(n, true),
            Self::Balance => json_event("GET", "/api/tokens/", Some(demo::DEMO_TOKEN), None),
            Self::Login => json_event(
                "POST",
                "/api/login/",
                None,
                Some(json!({"username": demo::DEMO_USER, "password": demo::DEMO_PASSWORD})),
            ),
            Self::Register => json_event(
                "POST",
                "/api/register/",
                None,
                Some(json!({
                    "username": format!("cost{}x{n}", std::process::id()),
                    "password": "a long enough password",
                })),
            ),
        }
    }
}

/// One route's measured inputs, per request.
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    memory_mb: f64,
    billed_ms: f64,
    p50_ms: f64,
    read_units: f64,
    write_units: f64,
    log_bytes: f64,
}

struct Options {
    runs: usize,
    gemini_ms: u64,
    prompt_tokens: f64,
    response_tokens: f64,
    thoughts_tokens: f64,
    model: String,
    dir: PathBuf,
}

pub async fn run(args: &[String]) -> ExitCode {
    let mut options = Options {
        runs: 20,
        gemini_ms: 1000,
        prompt_tokens: 600.0,
        response_tokens: 300.0,
        thoughts_tokens: 0.0,
        model: "gemini-flash-latest".to_owned(),
        dir: PathBuf::new(),
    };
    let mut dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--runs" => options.runs = value().parse().unwrap_or(0),
            "--gemini-ms" => options.gemini_ms = value().parse().unwrap_or(0),
            "--prompt-tokens" => options.prompt_tokens = value().parse().unwrap_or(-1.0),
            "--response-tokens" => options.response_tokens = value().parse().unwrap_or(-1.0),
            "--thoughts-tokens" => options.thoughts_tokens = value().parse().unwrap_or(-1.0),
            "--model" => options.model = value(),
            path => dir = Some(PathBuf::from(path)),
        }
    }
    let tokens_ok = [
        options.prompt_tokens,
        options.response_tokens,
        options.thoughts_tokens,
    ]
    .iter()
    .all(|t| *t >= 0.0);
    let Some(dir) = dir.filter(|_| options.runs > 0 && options.gemini_ms > 0 && tokens_ok) else {
        eprintln!(
            "usage: cargo xtask cost [--runs N] [--gemini-ms MS] [--prompt-tokens N] [--response-tokens N] [--thoughts-tokens N] [--model ID] BIN_DIR"
        );
        return ExitCode::from(2);
    };
    options.dir = dir;
    match cost(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cost: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn cost(options: &Options) -> Result<(), String> {
    let prices: Yaml = serde_norway::from_str(PRICES).map_err(|e| format!("prices.yaml: {e}"))?;
    let price = |path: &[&str]| -> Result<f64, String> {
        let mut value = &prices;
        for key in path {
            value = &value[*key];
        }
        value
            .as_f64()
            .ok_or_else(|| format!("prices.yaml has no {}", path.join(".")))
    };
    let store = testkit::table::local_store("cost").await;
    demo::seed(&store, 1_000_000_000)
        .await
        .map_err(|e| format!("seeding the demo users: {e}"))?;
    let proxy = FaultProxy::in_front_of_local().await;
    proxy.count_capacity();
    let standin = GeminiStandIn::start().await;
    let gemini = Duration::from_millis(options.gemini_ms);

    let mut measured = Vec::new();
    for route in Route::ALL {
        match route {
            Route::ChatStream => {
                // The canned answer comes in five chunks of two words: the first at 40 %
                // of the stated latency, the last at 100 %.
                standin.set_behavior(Behavior::Answer);
                standin.set_pacing(Pacing {
                    first_chunk: gemini * 2 / 5,
                    interval: gemini * 3 / 20,
                    words_per_chunk: 2,
                });
            }
            _ => standin.set_behavior(Behavior::Slow(gemini)),
        }
        let m = measure(route, options, &store, &proxy, &standin).await?;
        eprintln!(
            "{:<14} p50 {:>7.1} ms, billed {:>7.1} ms at {} MB, {:.2} RRU, {:.2} WRU, {:.0} log bytes",
            route.title(),
            m.p50_ms,
            m.billed_ms,
            m.memory_mb,
            m.read_units,
            m.write_units,
            m.log_bytes
        );
        measured.push((route, m));
    }

    // Cost per million requests, by component.
    let gb_second = price(&["aws", "lambda_gb_second_arm64"])?;
    let lambda_requests = price(&["aws", "lambda_requests_per_million"])?;
    let api = price(&["aws", "api_gateway_rest_requests_per_million"])?;
    let wru = price(&["aws", "dynamodb_write_request_units_per_million"])?;
    let rru = price(&["aws", "dynamodb_read_request_units_per_million"])?;
    let logs_gb = price(&["aws", "cloudwatch_logs_ingested_per_gb"])?;
    let model_in = price(&["gemini", &options.model, "input_per_million_tokens"])?;
    let model_out = price(&["gemini", &options.model, "output_per_million_tokens"])?;
    let gemini_per_chat = (options.prompt_tokens * model_in
        + (options.response_tokens + options.thoughts_tokens) * model_out)
        / PER;
    let components: [(&str, Component); 7] = [
        (
            "Lambda duration",
            Box::new(move |_, m| m.billed_ms / 1000.0 * m.memory_mb / 1024.0 * gb_second * PER),
        ),
        ("Lambda requests", Box::new(move |_, _| lambda_requests)),
        ("API Gateway (REST)", Box::new(move |_, _| api)),
        ("DynamoDB reads", Box::new(move |_, m| m.read_units * rru)),
        ("DynamoDB writes", Box::new(move |_, m| m.write_units * wru)),
        (
            "CloudWatch Logs",
            Box::new(move |_, m| m.log_bytes * PER / (1u64 << 30) as f64 * logs_gb),
        ),
        (
            "Gemini tokens",
            Box::new(move |r, _| match r {
                Route::ChatJson | Route::ChatStream => gemini_per_chat * PER,
                _ => 0.0,
            }),
        ),
    ];

    println!(
        "Cost per 1,000,000 requests, USD ({} list prices of {}, {}), Gemini answering in {} ms; {} runs per route.",
        prices["region"].as_str().unwrap_or("?"),
        prices["date"].as_str().unwrap_or("?"),
        prices["currency"].as_str().unwrap_or("?"),
        options.gemini_ms,
        options.runs
    );
    println!(
        "Gemini: {} at {} prompt + {} response + {} thinking tokens a chat (stated, not measured).\n",
        options.model, options.prompt_tokens, options.response_tokens, options.thoughts_tokens
    );
    let header: Vec<&str> = Route::ALL.iter().map(|r| r.title()).collect();
    println!("| component | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(header.len()));
    let mut totals = [0.0; 5];
    for (name, cost) in &components {
        let row: Vec<String> = measured
            .iter()
            .enumerate()
            .map(|(i, (route, m))| {
                let c = cost(*route, m);
                totals[i] += c;
                format!("{c:.2}")
            })
            .collect();
        println!("| {name} | {} |", row.join(" | "));
    }
    let row: Vec<String> = totals.iter().map(|t| format!("**{t:.2}**")).collect();
    println!("| **total** | {} |", row.join(" | "));
    println!("\nMeasured per request:\n");
    println!("| route | function, memory | billed ms (mean) | p50 ms | RRU | WRU | log bytes |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (route, m) in &measured {
        println!(
            "| {} | {}, {} MB | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} |",
            route.title(),
            route.binary(),
            m.memory_mb,
            m.billed_ms,
            m.p50_ms,
            m.read_units,
            m.write_units,
            m.log_bytes
        );
    }
    for (i, (route, m)) in measured.iter().enumerate().take(2) {
        let ranked = |aws_only: bool| {
            components
                .iter()
                .filter(|(name, _)| !aws_only || *name != "Gemini tokens")
                .map(|(name, cost)| (*name, cost(*route, m)))
                .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a })
        };
        let (name, biggest) = ranked(false);
        println!(
            "\nBiggest component of a {}: {name}, {:.0} % of it. {}",
            route.title(),
            biggest / totals[i] * 100.0,
            halving(name)
        );
        let (name, biggest) = ranked(true);
        println!(
            "Of AWS's part ({:.2}): {name}, {biggest:.2}. {}",
            totals[i] - components[6].1(*route, m),
            halving(name)
        );
    }
    Ok(())
}

/// What would halve a component.
fn halving(component: &str) -> &'static str {
    match component {
        "Gemini tokens" => {
            "Output tokens are most of it: half the answer length (GEMINI_MAX_OUTPUT_TOKENS, a shorter system instruction asking for brevity) or gemini-flash-lite-latest (a sixth of the output price) would more than halve it."
        }
        "Lambda duration" => {
            "A chat's function mostly waits for Gemini, and waiting is billed by memory: 128 MB instead of 256 MB halves it (measure the CPU-bound part first)."
        }
        "API Gateway (REST)" => {
            "Fixed per request; an HTTP API costs $1.00 a million but cannot stream responses."
        }
        "DynamoDB writes" => {
            "A chat writes the user item twice (the debit, the close) and its chat and conversation items once; units follow item size, so the user item (its sessions and open charges) is where to look."
        }
        _ => "",
    }
}

async fn measure(
    route: Route,
    options: &Options,
    store: &shared::store::Store,
    proxy: &FaultProxy,
    standin: &GeminiStandIn,
) -> Result<Measured, String> {
    let binary = options.dir.join(route.binary());
    if !binary.exists() {
        return Err(format!("no binary at {}", binary.display()));
    }
    let (memory_mb, mut env) = template_function(route.binary())?;
    env.extend([
        ("TABLE_NAME", store.table().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", proxy.url()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("GEMINI_API_KEY", "cost".to_owned()),
        ("GEMINI_BASE_URL", standin.base_url()),
        // One client sends every request: the limits meant for one client stay out of it.
        ("REGISTER_IP_LIMIT", "1000000".to_owned()),
        ("REGISTRATIONS_PER_HOUR", "1000000".to_owned()),
        ("CHATS_IN_FLIGHT", "1000".to_owned()),
        ("CHATS_PER_MINUTE", "1000000".to_owned()),
    ]);
    let runtime = RuntimeApi::start().await;
    let functions = Functions::spawn(Path::new(&binary), &runtime, 1, &env);
    for n in 0..2 {
        invoke(&runtime, route.event(1_000_000 + n)).await?;
    }
    // Let the warm-ups' metrics lines out before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.take_capacity();
    functions.clear_stdout();
    let mut took = Vec::new();
    for n in 0..options.runs {
        let started = Instant::now();
        invoke(&runtime, route.event(n)).await?;
        took.push(started.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let capacity = proxy.take_capacity();
    let runs = options.runs as f64;
    let billed: f64 = took
        .iter()
        .map(|d| (d.as_secs_f64() * 1000.0).ceil())
        .sum::<f64>()
        / runs;
    took.sort();
    Ok(Measured {
        memory_mb,
        billed_ms: billed,
        p50_ms: took[took.len() / 2].as_secs_f64() * 1000.0,
        read_units: capacity.read_units / runs,
        write_units: capacity.billed_write_units() / runs,
        log_bytes: functions.stdout().len() as f64 / runs,
    })
}

async fn invoke(runtime: &RuntimeApi, event: Value) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(60), runtime.invoke(event)).await {
        Ok(outcome @ Outcome::Response(_)) => match outcome.http() {
            (status, _) if (200..300).contains(&status) => Ok(()),
            (status, body) => Err(format!("answered {status}: {body}")),
        },
        Ok(other) => Err(format!("the function failed: {other:?}")),
        Err(_) => Err("no answer within 60 s".into()),
    }
}

/// The function's memory in `template.yaml`, and the literal environment values the
/// template gives it (globals, then its own).
fn template_function(binary: &str) -> Result<(f64, Env), String> {
    let template: Yaml = serde_norway::from_str(testkit::table::TEMPLATE)
        .map_err(|e| format!("template.yaml: {e}"))?;
    let resource = format!("{}{}Function", binary[..1].to_uppercase(), &binary[1..]);
    let properties = &template["Resources"][resource.as_str()]["Properties"];
    let memory = properties["MemorySize"]
        .as_f64()
        .ok_or(format!("{resource} has no MemorySize"))?;
    let mut env = vec![("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string())];
    for variables in [
        &template["Globals"]["Function"]["Environment"]["Variables"],
        &properties["Environment"]["Variables"],
    ] {
        for (name, value) in variables.as_mapping().into_iter().flatten() {
            // Literal values only: a `!Ref` stands for a parameter the code defaults.
            if let (Some(name), Yaml::String(value)) = (name.as_str(), value) {
                // Leaked: a handful of short names, once per run of the task.
                env.push((
                    Box::leak(name.to_owned().into_boxed_str()),
                    value.to_owned(),
                ));
            }
        }
    }
    Ok((memory, env))
}
