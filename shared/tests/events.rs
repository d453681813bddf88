//! Every sample event in `events/` goes through its function's handler and gets the
//! status `events/manifest.json` promises, so the samples can't rot.

mod common;

use common::*;
use serde_json::Value;
use shared::api;
use testkit::{GeminiStandIn, demo};

#[tokio::test]
async fn every_sample_event_gets_its_documented_status() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let manifest: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap())
            .unwrap();
    let listed: Vec<&str> = manifest
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && n != "manifest.json")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "every event file has a manifest entry, and the reverse"
    );

    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    demo::seed(&chat_app.app.store, chat_app.app.config.start_tokens)
        .await
        .unwrap();

    for entry in &manifest {
        let file = entry["event"].as_str().unwrap();
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let resp = match entry["function"].as_str().unwrap() {
            "register" => api::register_function(&chat_app.app, req).await.unwrap(),
            "login" => api::login_function(&chat_app.app, req).await.unwrap(),
            "tokens" => api::tokens_function(&chat_app.app, req).await.unwrap(),
            "chat" => {
                let resp = api::chat_function(&chat_app, req).await.unwrap();
                let (parts, body) = resp.into_parts();
                lambda_http::Response::from_parts(
                    parts,
                    lambda_http::Body::Binary(body.collect().await.to_vec()),
                )
            }
            other => panic!("{file}: unknown function {other}"),
        };
        assert_eq!(
            u64::from(resp.status().as_u16()),
            entry["status"].as_u64().unwrap(),
            "{file} ({}): {}",
            entry["what"],
            json_of(&resp)
        );
    }
}

/// The WebSocket samples in `events/websocket/` are what the chat function takes from
/// API Gateway: each is told from an HTTP event and answered. The `$connect` sample's
/// ticket was never issued, so it is refused; the rest are answered `200` (what a client
/// learns comes as frames, through `@connections`).
#[tokio::test]
async fn every_websocket_sample_event_is_answered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/websocket");
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    for (file, status) in [
        ("connect.json", 401),
        ("chat.json", 200),
        ("cancel.json", 200),
        ("balance.json", 200),
        ("disconnect.json", 200),
    ] {
        let event: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap())
                .unwrap();
        assert!(api::ws::is_websocket(&event), "{file}");
        let answer = api::ws::handle(&chat_app, event).await;
        assert_eq!(answer["statusCode"], status, "{file}: {answer}");
    }
    assert_eq!(standin.requests(), 0, "an unknown connection asks no model");
}
