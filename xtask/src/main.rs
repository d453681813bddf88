//! Project tasks.
//!
//! `cargo xtask bench [--spawns N] [--warm N] [--gap N] RELEASE_DIR`: init, first request,
//! warm latency and memory of the four functions against a hello-world `lambda_http`
//! binary, and the chat's response completion (see `bench.rs`; `scripts/bench` builds the
//! release binaries and runs it).
//!
//! `cargo xtask bench-history [--runs N] CHAT_BINARY`: chat latency against a conversation
//! of 10 and of 2,000 stored messages (see `bench_history.rs`).
//!
//! `cargo xtask bench-stream [--runs N] CHAT_BINARY`: how soon a streamed chat shows its
//! first words against the same chat answered as JSON, and the DynamoDB round trips of an
//! answered chat (see `bench_stream.rs`).
//!
//! `cargo xtask bench-page [--runs N]`: the chat page's first visit in bytes (budget
//! 100 KB), and what gzipping at cold start would cost against build time (see
//! `bench_page.rs`).
//!
//! `cargo xtask cost [--runs N] [--gemini-ms MS] [--prompt-tokens N] [--response-tokens N]
//! [--thoughts-tokens N] [--model ID] BIN_DIR`: what a million chats, balance reads,
//! logins and registrations cost, by component, from measured inputs and
//! `xtask/prices.yaml` (see `cost.rs`; `scripts/cost` runs it on release builds).
//!
//! `cargo xtask bench-deletion [--chats N] LOGIN_BINARY`: an account with N stored chats
//! (default 5,000) deleted through the login function: requests, time, DynamoDB calls
//! (see `bench_deletion.rs`).
//!
//! `cargo xtask audit <username> [--table NAME]`: checks that the account's books
//! balance (granted = balance + settled + open) on whatever DynamoDB the standard AWS
//! environment points at (`AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local). The table is
//! `--table` or `TABLE_NAME`. Exits 0 when balanced, 1 when not, 2 on usage errors.
//! `cargo xtask audit --deleted <id>` checks a deleted account's books instead (its
//! tombstone `DELETED#<id>` and the anonymised charge records under it).

use std::process::ExitCode;

use shared::{audit, domain::Username, store::Store};

mod bench;
mod bench_deletion;
mod bench_history;
mod bench_page;
mod bench_stream;
mod bench_ws;
mod cost;

const USAGE: &str = "usage: cargo xtask audit (<username> | --deleted <id>) [--table NAME]\n       cargo xtask bench [--spawns N] [--warm N] [--gap N] RELEASE_DIR\n       cargo xtask bench-history [--runs N] CHAT_BINARY\n       cargo xtask bench-stream [--runs N] CHAT_BINARY\n       cargo xtask bench-page [--runs N]\n       cargo xtask bench-deletion [--chats N] LOGIN_BINARY\n       cargo xtask cost [--runs N] [--gemini-ms MS] [--prompt-tokens N] [--response-tokens N] [--thoughts-tokens N] [--model ID] BIN_DIR\n       cargo xtask bench-ws [--runs N] CHAT_BINARY";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("audit") => audit_command(&args[1..]).await,
        Some("bench") => bench::run(&args[1..]).await,
        Some("bench-history") => bench_history::run(&args[1..]).await,
        Some("bench-stream") => bench_stream::run(&args[1..]).await,
        Some("bench-ws") => bench_ws::run(&args[1..]).await,
        Some("bench-deletion") => bench_deletion::run(&args[1..]).await,
        Some("cost") => cost::run(&args[1..]).await,
        Some("bench-page") => bench_page::run(&args[1..]).await,
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `[--runs N] BINARY`, the arguments of the chat benches: `None` when the binary is
/// missing or `N` is 0.
fn runs_and_binary(args: &[String], default_runs: usize) -> Option<(usize, String)> {
    let (mut runs, mut binary) = (default_runs, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs),
            path => binary = Some(path.to_owned()),
        }
    }
    binary.filter(|_| runs > 0).map(|binary| (runs, binary))
}

async fn audit_command(args: &[String]) -> ExitCode {
    let (mut user, mut table) = (None, std::env::var("TABLE_NAME").ok());
    let mut deleted = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--table" => table = args.next().cloned(),
            "--deleted" if user.is_none() => deleted = args.next().cloned(),
            other if user.is_none() && !other.starts_with('-') => user = Some(other.to_owned()),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(id), Some(table)) = (&deleted, &table) {
        let store = Store::connect(&shared::aws::config().await, table, Default::default());
        return report(
            &format!("deleted account {id}"),
            &store,
            audit::audit_deleted(&store, id).await,
        );
    }
    let (Some(user), Some(table)) = (user, table) else {
        eprintln!("{USAGE}\n(the table comes from --table or TABLE_NAME)");
        return ExitCode::from(2);
    };
    let key = match Username::parse(&user) {
        Ok(name) => name.key(),
        Err(e) => {
            eprintln!("{user:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let store = Store::connect(&shared::aws::config().await, table, Default::default());
    report(&user, &store, audit::audit(&store, &key).await)
}

fn report(
    user: &str,
    store: &Store,
    books: Result<Option<audit::Books>, shared::store::Error>,
) -> ExitCode {
    match books {
        Ok(Some(books)) => {
            println!("books of {user} in {}:\n{books}", store.table());
            if books.is_balanced() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(None) => {
            eprintln!("no account {user:?} in {}", store.table());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("audit failed: {}", shared::error::Chain(&e));
            ExitCode::from(2)
        }
    }
}
