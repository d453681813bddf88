//! Runs the Gemini stand-in for local development: canned answers, no network.
//!
//! `gemini-standin [ADDR]` (default `127.0.0.1:8090`). Streamed answers are paced like
//! the real API: the first chunk after ~300 ms, then a few words every ~70 ms.
//!
//! Put a directive in a chat message to see each failure (only the newest message
//! counts, not the conversation's history):
//! - `[standin:503]`, `[standin:429]`, any `[standin:4xx/5xx]`; `[standin:timeout]`;
//!   `[standin:malformed]`; `[standin:blocked]`; `[standin:safety]`; `[standin:empty]`
//! - `[standin:retrydelay=<raw>]`: a 429 whose `retryDelay` is `<raw>` (e.g. `1e400s`)
//! - `[standin:long]` / `[standin:long=<words>]`; `[standin:slow=<ms>]`
//! - `[standin:hostile]`: Markdown with hostile HTML and `javascript:` links in it
//! - streams: `[standin:drop=<n>]` (connection breaks after n chunks),
//!   `[standin:midsafety=<n>]` / `[standin:midrecitation=<n>]` (then a SAFETY /
//!   RECITATION stop: the words so far are charged), `[standin:stall=<n>]` (then
//!   silence), `[standin:truncate=<n>]` (then an end with no finish reason)
//! - `[standin:redirect]` / `[standin:redirect=307]`: a redirect, never to be followed

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
