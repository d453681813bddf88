//! The `chat` function: see `shared::api::chat`. It runs in Lambda's response-streaming
//! mode, so an answer can go out as Server-Sent Events; a JSON answer is one piece.

use lambda_http::{Error, run_with_streaming_response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::ChatApp::from_env().await?;
    run_with_streaming_response(service_fn(|req| shared::api::chat_function(&app, req))).await
}
