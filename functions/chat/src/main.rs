//! The `chat` function: see `shared::api::chat` and `shared::api::ws`. HTTP requests are
//! answered in Lambda's response-streaming mode, so an answer can go out as Server-Sent
//! Events (a JSON answer is one piece); WebSocket events get a buffered answer.

use std::time::{Duration, Instant};

use lambda_http::{Error, lambda_runtime, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::ChatApp::from_env().await?;
    // The runtime's loop ends when it can't deliver a response (a stream whose reader
    // went away mid-write). The next invocation is no reason to die: start the loop again,
    // unless it keeps failing at once (the Runtime API itself is gone).
    let mut quick_failures = 0;
    loop {
        let started = Instant::now();
        let Err(err) = lambda_runtime::run(service_fn(|event| {
            shared::api::chat_invocation(&app, event)
        }))
        .await
        else {
            return Ok(());
        };
        quick_failures = if started.elapsed() < Duration::from_secs(1) {
            quick_failures + 1
        } else {
            0
        };
        if quick_failures >= 5 {
            return Err(err);
        }
        tracing::error!(error = %err, "the runtime loop stopped; starting it again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
