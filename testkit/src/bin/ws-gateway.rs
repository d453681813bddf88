//! Runs the local WebSocket gateway (see `testkit::gateway`) in front of the chat function
//! that `cargo lambda watch` serves.
//!
//! `ws-gateway [WS_ADDR] [MANAGEMENT_ADDR] [INVOKE_URL]`, by default `127.0.0.1:9001`,
//! `127.0.0.1:9002` and
//! `http://127.0.0.1:9000/2015-03-31/functions/chat/invocations`. The chat function
//! needs `WEBSOCKET_MANAGEMENT_ENDPOINT=http://<MANAGEMENT_ADDR>/local` to post frames.

use testkit::gateway::{Gateway, Invoker};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = |default: &str| {
        let raw = args.next().unwrap_or_else(|| default.to_owned());
        raw.parse().unwrap_or_else(|e| {
            eprintln!("ws-gateway: bad address {raw:?}: {e}");
            std::process::exit(2);
        })
    };
    let ws = addr("127.0.0.1:9001");
    let management = addr("127.0.0.1:9002");
    let invoke = std::env::args().nth(3).unwrap_or_else(|| {
        "http://127.0.0.1:9000/2015-03-31/functions/chat/invocations".to_owned()
    });
    let gateway = Gateway::start_on(Invoker::http(&invoke), ws, management).await;
    eprintln!(
        "ws-gateway: WebSocket clients at {}, @connections at {}, invoking {invoke}",
        gateway.url(),
        gateway.management_endpoint()
    );
    let _ = tokio::signal::ctrl_c().await;
}
