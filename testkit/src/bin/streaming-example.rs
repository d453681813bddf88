//! A response-streaming function on the real `lambda_http` runtime, so the Runtime API
//! emulator is tested against what the runtime actually sends. It streams "one ",
//! "two ", "three" 50 ms apart; for a path ending in `/fail` the body then fails.

use std::{convert::Infallible, io, time::Duration};

use axum::body::Bytes;
use http_body_util::channel::Channel;
use lambda_http::{Request, Response, http::HeaderValue, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::run_with_streaming_response(service_fn(handler)).await
}

async fn handler(req: Request) -> Result<Response<Channel<Bytes, io::Error>>, Infallible> {
    let fail = req.uri().path().ends_with("/fail");
    let (mut tx, body) = Channel::new(1);
    tokio::spawn(async move {
        for word in ["one ", "two ", "three"] {
            if tx.send_data(Bytes::from(word)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if fail {
            tx.abort(io::Error::other("the model stream broke"));
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    Ok(resp)
}
