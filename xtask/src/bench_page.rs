//! `cargo xtask bench-page [--runs N]`: what a first visit to the chat page costs.
//!
//! - Bytes transferred: `GET /` and every asset it names, as a browser asks for them
//!   (`Accept-Encoding: gzip`), through the tokens function's handler; the budget is
//!   100 KB. A repeat visit is the HTML's revalidation (a 304) only: assets are
//!   `immutable`.
//! - Where the gzipping happens: `shared/build.rs` compresses each file once at build
//!   time. The alternative, compressing at cold start, is timed here (the same files, the
//!   same level and the default one), so the choice rests on a number.
//! - A warm request for one file: the handler's own time.
//!
//! Runs in-process: serving the page needs no store or network.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use flate2::{Compression, write::GzEncoder};
use lambda_http::{Body, Request, Response};
use serde_json::json;
use shared::{App, Config, store::Store};

const BUDGET: usize = 100 * 1024;

pub async fn run(args: &[String]) -> ExitCode {
    let mut runs = 50usize;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs),
            _ => {
                eprintln!("usage: cargo xtask bench-page [--runs N]");
                return ExitCode::from(2);
            }
        }
    }
    if std::env::var_os("TABLE_NAME").is_none() {
        // SAFETY: nothing else runs yet (one thread), and nothing has read the environment.
        unsafe { std::env::set_var("TABLE_NAME", "bench-page") };
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store = Store::connect(
        &shared::aws::config().await,
        &config.table_name,
        Default::default(),
    );
    let app = App::new(config, store);

    let html = get(&app, "/", true).await;
    let text = String::from_utf8_lossy(&gunzip(html.body().as_ref())).into_owned();
    let assets: Vec<String> = text
        .split('"')
        .filter(|s| s.starts_with("assets/"))
        .map(|s| format!("/{s}"))
        .collect();

    println!("first visit, Accept-Encoding: gzip\n");
    println!("{:<40} {:>10} {:>10}", "file", "sent", "plain");
    let mut sent = html.body().len();
    let mut plain_total = get(&app, "/", false).await.body().len();
    let mut plains = vec![gunzip(html.body().as_ref())];
    println!("{:<40} {:>10} {:>10}", "/", sent, plain_total);
    for path in &assets {
        let zipped = get(&app, path, true).await;
        let plain = get(&app, path, false).await;
        println!(
            "{:<40} {:>10} {:>10}",
            path,
            zipped.body().len(),
            plain.body().len()
        );
        sent += zipped.body().len();
        plain_total += plain.body().len();
        plains.push(plain.body().to_vec());
    }
    println!(
        "{:<40} {:>10} {:>10}   ({} requests; budget {} bytes: {})",
        "total",
        sent,
        plain_total,
        assets.len() + 1,
        BUDGET,
        if sent <= BUDGET { "met" } else { "EXCEEDED" }
    );

    // The same work at cold start instead of at build time.
    let mut best = Vec::new();
    let mut default = Vec::new();
    for _ in 0..runs {
        best.push(time(|| compress_all(&plains, Compression::best())));
        default.push(time(|| compress_all(&plains, Compression::default())));
    }
    println!(
        "\ngzipping every file at cold start ({runs} runs, this machine's full core): \
         best level p50 {:.1} ms, default level p50 {:.1} ms; at build time: 0 ms at cold start",
        ms(percentile(&mut best, 50)),
        ms(percentile(&mut default, 50)),
    );

    let script = assets
        .iter()
        .find(|a| a.ends_with(".js"))
        .cloned()
        .unwrap_or_else(|| "/".to_owned());
    let mut warm = Vec::new();
    for _ in 0..runs {
        let req = request(&script, true);
        let started = Instant::now();
        let _ = shared::api::tokens_function(&app, req).await;
        warm.push(started.elapsed());
    }
    println!(
        "a warm request for {script}: p50 {:.3} ms, p90 {:.3} ms (handler only)",
        ms(percentile(&mut warm, 50)),
        ms(percentile(&mut warm, 90)),
    );
    if sent <= BUDGET {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn request(path: &str, gzip: bool) -> Request {
    let headers: &[(&str, &str)] = if gzip {
        &[("Accept-Encoding", "gzip, deflate, br")]
    } else {
        &[]
    };
    let event = testkit::events::event("GET", path, headers, None, "198.51.100.7");
    lambda_http::request::from_str(&json!(event).to_string()).expect("an API Gateway event")
}

async fn get(app: &App, path: &str, gzip: bool) -> Response<Body> {
    shared::api::tokens_function(app, request(path, gzip))
        .await
        .expect("the tokens function answers")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(bytes).read_to_end(&mut out) {
        Ok(_) => out,
        Err(_) => bytes.to_vec(),
    }
}

fn compress_all(files: &[Vec<u8>], level: Compression) -> usize {
    files
        .iter()
        .map(|f| {
            let mut gz = GzEncoder::new(Vec::new(), level);
            let _ = gz.write_all(f);
            gz.finish().map(|v| v.len()).unwrap_or(0)
        })
        .sum()
}

fn time(f: impl FnOnce() -> usize) -> Duration {
    let started = Instant::now();
    std::hint::black_box(f());
    started.elapsed()
}

fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    values
        .get((values.len() * p / 100).min(values.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
