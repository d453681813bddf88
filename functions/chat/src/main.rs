//! The `chat` function: see `shared::api::chat`.

use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::ChatApp::from_env().await?;
    run(service_fn(|req| shared::api::chat_function(&app, req))).await
}
