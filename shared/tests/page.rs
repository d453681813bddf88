//! The chat page, as the tokens function serves it: `GET /` and its files under
//! `/assets/`, with their types, validators, caching, compression and security headers.
//! (What the page does in a browser is `scripts/browser_test.py`'s.)

mod common;

use std::io::Read;

use common::{event_with, header};
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use shared::api::tokens_function;

async fn get(path: &str, headers: Value) -> Response<Body> {
    let app = common::app().await;
    tokens_function(&app, event_with("GET", path, headers, None))
        .await
        .unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// The page's HTML as a browser gets it (gzip accepted), unzipped.
async fn html() -> (Response<Body>, String) {
    let resp = get("/", json!({"Accept-Encoding": "gzip, deflate, br"})).await;
    let text = String::from_utf8(gunzip(resp.body().as_ref())).unwrap();
    (resp, text)
}

/// Every `/assets/…` file the HTML names.
fn assets(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("assets/"))
        .map(|s| format!("/{s}"))
        .collect()
}

#[tokio::test]
async fn the_page_is_served_at_the_root_with_its_security_headers() {
    let (resp, html) = html().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(html.starts_with("<!doctype html>"), "{html:.80}");
    assert!(html.contains("id=\"messages\""));
    let csp = header(&resp, "content-security-policy").unwrap();
    for directive in [
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "default-src 'none'",
        // The API's own origin, and the WebSocket API the page may connect to.
        "connect-src 'self' ws://127.0.0.1:9001;",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(&resp, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
    // The HTML revalidates, so a deploy is seen at once; it names its assets by hash.
    assert_eq!(header(&resp, "cache-control"), Some("no-cache"));
    assert!(header(&resp, "etag").is_some());
    // No inline script: every script is a file from this origin.
    assert!(!html.contains("<script>"), "inline script in the page");
    let scripts = html.matches("<script").count();
    assert_eq!(
        scripts,
        html.matches("<script defer src=\"assets/").count(),
        "every script is an asset"
    );
    // Nothing from another origin.
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[tokio::test]
async fn assets_have_hashed_names_their_types_and_are_cached_for_good() {
    let (_, html) = html().await;
    let assets = assets(&html);
    assert!(assets.len() >= 5, "{assets:?}");
    for path in &assets {
        let resp = get(path, json!({"Accept-Encoding": "gzip"})).await;
        assert_eq!(resp.status(), 200, "{path}");
        let expected = match path.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert_eq!(header(&resp, "content-type"), Some(expected), "{path}");
        assert_eq!(
            header(&resp, "cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{path}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
        // The name carries a hash: `<stem>.<12 hex>.<ext>`.
        let name = path.rsplit('/').next().unwrap();
        let hash = name.rsplit('.').nth(1).unwrap();
        assert!(
            hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
    }
    let resp = get("/assets/app.000000000000.js", json!({})).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(common::json_of(&resp)["code"], "not_found");
}

#[tokio::test]
async fn files_go_out_gzipped_when_the_client_accepts_it_and_plain_otherwise() {
    let (_, html) = html().await;
    let script = assets(&html)
        .into_iter()
        .find(|a| a.contains("/app.") && a.ends_with(".js"))
        .unwrap();
    let zipped = get(&script, json!({"Accept-Encoding": "gzip, br"})).await;
    assert_eq!(header(&zipped, "content-encoding"), Some("gzip"));
    assert_eq!(header(&zipped, "vary"), Some("Accept-Encoding"));
    let plain = get(&script, json!({})).await;
    assert_eq!(header(&plain, "content-encoding"), None);
    let refused = get(&script, json!({"Accept-Encoding": "gzip;q=0, identity"})).await;
    assert_eq!(header(&refused, "content-encoding"), None);
    assert_eq!(gunzip(zipped.body().as_ref()), plain.body().as_ref());
    assert!(zipped.body().len() * 2 < plain.body().len(), "gzip pays");
    assert_ne!(header(&zipped, "etag"), header(&plain, "etag"));
}

#[tokio::test]
async fn a_browser_that_has_the_page_revalidates_it_for_a_304() {
    let (first, _) = html().await;
    let etag = header(&first, "etag").unwrap().to_owned();
    let again = get(
        "/",
        json!({"Accept-Encoding": "gzip", "If-None-Match": etag}),
    )
    .await;
    assert_eq!(again.status(), 304);
    assert!(again.body().is_empty());
    assert_eq!(header(&again, "etag"), Some(etag.as_str()));
    let changed = get(
        "/",
        json!({"Accept-Encoding": "gzip", "If-None-Match": "\"other\""}),
    )
    .await;
    assert_eq!(changed.status(), 200);
}

#[tokio::test]
async fn the_page_is_read_only() {
    let app = common::app().await;
    for path in ["/", "/assets/app.js"] {
        let resp = tokens_function(&app, event_with("POST", path, json!({}), None))
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{path}");
        assert_eq!(header(&resp, "allow"), Some("GET"));
    }
}

#[tokio::test]
async fn the_stage_url_without_its_slash_is_sent_to_the_one_with_it() {
    // API Gateway routes `…/prod` and `…/prod/` both to `/`; the page's relative links
    // need the slash.
    let app = common::app().await;
    let text = include_str!("../../events/page.json");
    let mut event: Value = serde_json::from_str(text).unwrap();
    event["requestContext"]["path"] = json!("/prod");
    let req = lambda_http::request::from_str(&event.to_string()).unwrap();
    let resp = tokens_function(&app, req).await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(header(&resp, "location"), Some("/prod/"));
    let req = lambda_http::request::from_str(text).unwrap();
    let resp = tokens_function(&app, req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_first_visit_transfers_at_most_100_kb() {
    let (resp, html) = html().await;
    let mut total = resp.body().len();
    for path in assets(&html) {
        total += get(&path, json!({"Accept-Encoding": "gzip"}))
            .await
            .body()
            .len();
    }
    assert!(total <= 100 * 1024, "{total} bytes");
}
