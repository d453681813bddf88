//! `GET /` and `GET /assets/{file}`: the chat page, served by the API itself.
//!
//! The files live in `page/` at the repository root; `build.rs` embeds them (asset names
//! carry their content hash, each file is gzipped there). Served by the read-only tokens
//! function: no I/O, no permission. The HTML revalidates (`no-cache` and its `ETag`);
//! assets never change under their name, so browsers keep them a year (`immutable`).
//! Every answer carries the page's Content-Security-Policy: scripts, styles, images and
//! API calls from this origin only, nothing inline, no `eval`, no plugins, no `<base>`, no
//! framing.

use lambda_http::{
    Body, Request, RequestExt, Response,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    request::RequestContext,
};

use crate::{ApiError, http};

/// One file of the page, as `build.rs` embedded it.
pub(crate) struct PageFile {
    /// Where it is served (`/` or `/assets/<name>.<hash>.<ext>`).
    pub path: &'static str,
    pub content_type: &'static str,
    /// Strong validators, one per representation.
    pub etag: &'static str,
    pub gzip_etag: &'static str,
    pub plain: &'static [u8],
    pub gzip: &'static [u8],
    /// Named by its content hash: the same name never means other bytes.
    pub immutable: bool,
}

include!(concat!(env!("OUT_DIR"), "/page.rs"));

/// The page's policy. `trusted-types`: only the sanitiser's policy may write HTML into
/// the page, so an `innerHTML` of anything unsanitised throws instead of rendering.
/// `connect-src`: this origin, and the WebSocket API's when there is one (its own host,
/// `wss://<api>.execute-api…`; locally `ws://127.0.0.1:9001`).
pub fn content_security_policy(websocket_url: Option<&str>) -> String {
    let websocket = websocket_url.and_then(origin).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; \
         style-src 'self'; img-src 'self'; connect-src 'self'{websocket}; form-action 'none'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'; trusted-types dompurify"
    )
}

/// ` ws[s]://host[:port]` of a WebSocket URL, for a policy; `None` for anything else.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let ok = matches!(scheme, "ws" | "wss")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| format!(" {scheme}://{host}"))
}

/// Whether `path` (no trailing slash; the root is empty) is one of the page's.
pub fn serves(path: &str) -> bool {
    path.is_empty() || path == "/assets" || path.starts_with("/assets/")
}

pub async fn handle(req: Request, path: &str, websocket_url: Option<&str>) -> Response<Body> {
    http::respond(page(&req, path, websocket_url))
}

fn page(
    req: &Request,
    path: &str,
    websocket_url: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    let path = if path.is_empty() { "/" } else { path };
    if path == "/"
        && let Some(location) = stage_without_slash(req)
    {
        return Ok(redirect(&location));
    }
    let file = FILES
        .iter()
        .find(|f| f.path == path)
        .ok_or(ApiError::NotFound("file"))?;
    Ok(serve(file, req.headers(), websocket_url))
}

/// The page's relative links need its URL to end in `/`: `…/prod` is sent to `…/prod/`
/// (API Gateway routes both to `/`).
fn stage_without_slash(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV1(ctx) => ctx
            .path
            .as_deref()
            .filter(|p| !p.is_empty() && !p.ends_with('/'))
            .map(|p| format!("{p}/")),
        _ => None,
    }
}

fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn serve(file: &PageFile, request: &HeaderMap, websocket_url: Option<&str>) -> Response<Body> {
    let gzip = accepts_gzip(request) && file.gzip.len() < file.plain.len();
    let (etag, bytes) = if gzip {
        (file.gzip_etag, file.gzip)
    } else {
        (file.etag, file.plain)
    };
    let fresh = if_none_match(request, &[file.etag, file.gzip_etag]);
    let mut resp = if fresh {
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        Response::new(Body::Binary(bytes.to_vec()))
    };
    let headers = resp.headers_mut();
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_TYPE, file.content_type);
    set(headers, header::ETAG, etag);
    set(
        headers,
        header::CACHE_CONTROL,
        if file.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        },
    );
    if gzip && !fresh {
        set(headers, header::CONTENT_ENCODING, "gzip");
    }
    set(headers, header::VARY, "Accept-Encoding");
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(websocket_url)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    resp
}

/// `Accept-Encoding` names gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `If-None-Match` names one of `etags` (weak comparison, as for any GET), or is `*`.
fn if_none_match(headers: &HeaderMap, etags: &[&str]) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || etags.contains(&tag))
}
