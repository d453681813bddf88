//! The built `tokens` binary as a process behind a Lambda Runtime API emulator.

use std::{path::Path, time::Duration};

use testkit::{
    events::json_event,
    runtime::{Functions, RuntimeApi},
};

const TOKENS: &str = env!("CARGO_BIN_EXE_tokens");

/// Buffered functions share the chat function's Runtime API client: its connection must
/// have Nagle's algorithm off too (see patches/).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_api_connection_has_nagle_off() {
    let runtime = RuntimeApi::start().await;
    // The model catalogue needs no table: the table name is never used.
    let env = [("TABLE_NAME", "unused".to_owned())];
    let functions = Functions::spawn(Path::new(TOKENS), &runtime, 1, &env);
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        runtime.invoke(json_event("GET", "/api/models/", None, None)),
    )
    .await
    .expect("an answer within 60 s");
    let (status, body) = answer.http();
    assert_eq!(status, 200, "{body}");
    let nodelay = functions
        .runtime_api_nodelay(&runtime)
        .expect("the tokens process's sockets can be read");
    assert!(
        !nodelay.is_empty(),
        "the tokens process holds no Runtime API connection"
    );
    assert!(
        nodelay.iter().all(|on| *on),
        "TCP_NODELAY is off on the Runtime API connection: {nodelay:?}"
    );
}
