//! Runs the Gemini stand-in for local development: canned answers, no network.
//!
//! `gemini-standin [ADDR]` (default `127.0.0.1:8090`); put `[standin:503]`,
//! `[standin:timeout]`, `[standin:safety]`… in a chat message to see each failure.

use testkit::GeminiStandIn;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let addr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("gemini-standin: bad address {addr:?}: {e}");
            std::process::exit(2);
        }
    };
    let standin = GeminiStandIn::start_on(addr, None).await;
    eprintln!(
        "gemini-standin: canned Gemini answers at {}",
        standin.base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
}
