//! CORS, for frontends hosted on other origins (`CORS_ALLOWED_ORIGINS`).
//!
//! API Gateway's REST proxy integrations hand every request to the function, `OPTIONS`
//! included (the routes are `ANY`), and put no CORS headers on anything: SAM's `Cors`
//! property would answer preflights with MOCK methods that know one static origin. So each
//! function answers for itself, through [`serve`], which every function's entry point
//! wraps around its routes: preflights are answered here, and every response — JSON,
//! streamed, an error, a page file — gets its headers on the way out.
//!
//! An origin on the list gets `Access-Control-Allow-Origin` naming it, `Vary: Origin` and
//! the headers a client needs exposed. Any other origin gets no CORS headers, so browsers
//! keep their same-origin rule. Credentials mode is never granted: tokens travel in the
//! `Authorization` header, never in cookies.

use std::future::Future;

use lambda_http::{
    Error, Request, Response,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
};

use crate::config::AllowedOrigins;

/// The methods the API's routes use (a route called with another one answers 405).
pub const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE";
/// The request headers clients send.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Accept";
/// The response headers a client needs to read.
pub const EXPOSE_HEADERS: &str = "X-Tokens-Remaining, Retry-After, Idempotent-Replayed";
/// How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
pub const MAX_AGE_SECS: u32 = 3600;

/// Runs `handler` for `req` unless it is a CORS preflight, which is answered here; puts
/// the CORS headers on whatever goes out.
pub async fn serve<B, F, Fut>(
    origins: &AllowedOrigins,
    req: Request,
    handler: F,
) -> Result<Response<B>, Error>
where
    B: Default,
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<B>, Error>>,
{
    let allowed = allowed_origin(origins, req.headers());
    if is_preflight(&req) {
        let mut resp = Response::new(B::default());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Some(origin) = &allowed {
            let headers = resp.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(MAX_AGE_SECS),
            );
        }
        vary_on_origin(origins, resp.headers_mut());
        return Ok(resp);
    }
    // On the heap: a route's future is large (the chat lifecycle, a deletion), and held
    // inline it would sit on the caller's stack, which a debug build's test thread (2 MB)
    // does not have room for.
    let mut resp = Box::pin(handler(req)).await?;
    let headers = resp.headers_mut();
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    vary_on_origin(origins, headers);
    Ok(resp)
}

/// A browser's preflight: `OPTIONS` naming the method it wants to send. A bare `OPTIONS`
/// is an ordinary request (and gets the route's 405 with `Allow`).
fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The request's `Origin`, if it is on the list.
fn allowed_origin(origins: &AllowedOrigins, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    origins
        .allows(origin.to_str().ok()?)
        .then(|| origin.clone())
}

/// With a list, an answer depends on the `Origin` it was asked from, so caches must key
/// on it too (whether or not this request's origin was allowed).
fn vary_on_origin(origins: &AllowedOrigins, headers: &mut HeaderMap) {
    if origins.is_empty() {
        return;
    }
    let vary = match headers.get(header::VARY).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, Origin"),
        _ => "Origin".to_owned(),
    };
    if let Ok(vary) = HeaderValue::from_str(&vary) {
        headers.insert(header::VARY, vary);
    }
}
