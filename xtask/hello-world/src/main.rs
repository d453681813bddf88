//! The smallest `lambda_http` function: what `cargo lambda new` writes for an HTTP
//! function (a tracing subscriber, then `run`), on the runtime flavour the four functions
//! use. `cargo xtask bench` measures the functions against it.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

async fn hello(_: Request) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello, world".into())?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    run(service_fn(hello)).await
}
