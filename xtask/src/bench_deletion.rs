//! `cargo xtask bench-deletion [--chats N] LOGIN_BINARY`: how an account with a long
//! history is deleted. Seeds one account with N answered chats (default 5,000), then
//! sends `DELETE /api/account/` to the login binary (behind the Lambda Runtime API
//! emulator, with the 10 s `FUNCTION_TIMEOUT_SECS` the template gives it) until it
//! answers 200, as a client told `202 deletion_in_progress` would. Its DynamoDB calls go
//! through the testkit proxy, which counts them and the write units they consumed.
//! Prints the requests it took, each one's time, the calls by operation and the units.
//! DynamoDB Local applies requests one at a time, so times here are not AWS's; the calls
//! are.

use std::{
    collections::BTreeMap,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::json;
use testkit::{
    demo::{self, DEMO_PASSWORD},
    events::json_event,
    faults::FaultProxy,
    runtime::{Functions, Outcome, RuntimeApi},
};

pub async fn run(args: &[String]) -> ExitCode {
    let (mut chats, mut binary) = (5_000usize, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chats" => chats = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            path => binary = Some(path.to_owned()),
        }
    }
    let Some(binary) = binary.filter(|_| chats > 0) else {
        eprintln!("usage: cargo xtask bench-deletion [--chats N] LOGIN_BINARY");
        return ExitCode::from(2);
    };
    match bench(Path::new(&binary), chats).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-deletion: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(binary: &Path, chats: usize) -> Result<(), String> {
    let store = testkit::table::local_store("bench-deletion").await;
    let token = demo::user_with_new_token(&store, "john", 4000)
        .await
        .map_err(|e| e.to_string())?;
    let account = store
        .user("john")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no user")?
        .account;
    let seeding = Instant::now();
    demo::seed_answered_chats(&store, &account, chats)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "seeded {chats} chats in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let proxy = FaultProxy::in_front_of_local().await;
    proxy.count_capacity();
    let runtime = RuntimeApi::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", proxy.url()),
        ("FUNCTION_TIMEOUT_SECS", "10".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let _functions = Functions::spawn(binary, &runtime, 1, &env);
    // A warm process: its first request would time its cold start too.
    let warm = json_event("GET", "/api/sessions/", Some(&token), None);
    runtime.invoke(warm).await;
    proxy.take_operations();
    proxy.take_capacity();

    let started = Instant::now();
    let mut requests = Vec::new();
    loop {
        let event = json_event(
            "DELETE",
            "/api/account/",
            Some(&token),
            Some(json!({ "password": DEMO_PASSWORD })),
        );
        let sent = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(60), runtime.invoke(event))
            .await
            .map_err(|_| "no answer within 60 s")?;
        let (status, body) = match outcome {
            outcome @ Outcome::Response(_) => outcome.http(),
            other => return Err(format!("the function failed: {other:?}")),
        };
        requests.push((status, sent.elapsed()));
        match status {
            200 => break,
            202 if requests.len() < 50 => {}
            _ => return Err(format!("answered {status}: {body}")),
        }
    }
    let total = started.elapsed();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for op in proxy.take_operations() {
        *calls.entry(op).or_default() += 1;
    }
    let capacity = proxy.take_capacity();

    println!("Deleting an account with {chats} stored chats through the login function:");
    for (i, (status, took)) in requests.iter().enumerate() {
        println!(
            "  request {}: {status} in {:.2} s",
            i + 1,
            took.as_secs_f64()
        );
    }
    println!(
        "  in all: {} requests, {:.2} s, {} DynamoDB calls ({}), {:.0} read and {:.0} write units",
        requests.len(),
        total.as_secs_f64(),
        calls.values().sum::<usize>(),
        calls
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        capacity.read_units,
        capacity.billed_write_units()
    );
    println!(
        "  one at a time (before batching) the same would have been {} sequential writes",
        2 * chats
    );
    Ok(())
}
