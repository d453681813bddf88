//! The `login` function: login, logout, sessions, password and account deletion — the
//! routes that touch sessions and password hashes. See `shared::api::sessions`.

use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::App::from_env().await?;
    run(service_fn(|req| shared::api::login_function(&app, req))).await
}
