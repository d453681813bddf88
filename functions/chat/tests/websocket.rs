//! Chat over a WebSocket through the built `chat` binary under the Runtime API
//! emulator, behind the test kit's gateway: a real WebSocket client, API Gateway's event
//! shapes, and a stand-in for `@connections` that records every frame.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use shared::store::ChargeState;
use testkit::{
    Behavior,
    events::json_event,
    gateway::{Client, Gateway, Invoker},
    gemini::Pacing,
    runtime::Functions,
};

const WAIT: Duration = Duration::from_secs(20);

struct Ws {
    setup: Setup,
    gateway: Gateway,
    _functions: Functions,
}

/// John with 4000 credits, three function processes (a cancel must find one free while
/// a chat runs, as Lambda scales out), the gateway in front of them.
async fn ws(extra: &[(&str, String)]) -> Ws {
    let setup = setup(4000).await;
    let gateway = Gateway::start(Invoker::Emulator(setup.runtime.clone())).await;
    let mut env = vec![
        ("WEBSOCKET_URL", gateway.url()),
        (
            "WEBSOCKET_MANAGEMENT_ENDPOINT",
            gateway.management_endpoint(),
        ),
        ("WEBSOCKET_CANCEL_POLL_MS", "100".to_owned()),
        // Long answers, paced: more than the 1.5 s the other process tests allow.
        ("GEMINI_STREAM_TIMEOUT_MS", "10000".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let functions = setup.functions(3, &env);
    Ws {
        setup,
        gateway,
        _functions: functions,
    }
}

impl Ws {
    async fn ticket(&self, token: &str) -> Value {
        let event = json_event("POST", "/api/ws-ticket/", Some(token), None);
        let (status, body) = invoke(&self.setup.runtime, event).await.http();
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn connect(&self, token: &str) -> Client {
        let ticket = self.ticket(token).await;
        let url = format!(
            "{}?ticket={}",
            ticket["url"].as_str().unwrap(),
            ticket["ticket"].as_str().unwrap()
        );
        Client::connect(&url)
            .await
            .expect("the connection is accepted")
    }
}

/// The first chunk after `first` ms, then three words every `interval` ms.
fn paced(first: u64, interval: u64) -> Pacing {
    Pacing {
        first_chunk: Duration::from_millis(first),
        interval: Duration::from_millis(interval),
        words_per_chunk: 3,
    }
}

fn chat(message: &str, request_id: &str) -> Value {
    json!({ "action": "chat", "message": message, "request_id": request_id, "conversation_id": null })
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

fn text_of(frames: &[Value]) -> String {
    of_type(frames, "delta")
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_over_a_websocket_streams_start_deltas_and_done_and_charges_once() {
    let ws = ws(&[]).await;
    ws.setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 120 });
    ws.setup.standin.set_pacing(paced(100, 10));
    let ticket = ws.ticket(&ws.setup.token).await;
    assert_eq!(ticket["expires_in"], 60);
    assert_eq!(ticket["url"], ws.gateway.url());
    let mut client = ws.connect(&ws.setup.token).await;

    client.send(chat("tell me a story", "r-1")).await;
    let frames = client.until("done", WAIT).await.expect("a done frame");
    let kinds: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] != "balance")
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "start");
    assert!(kinds[1..kinds.len() - 1].iter().all(|k| *k == "delta"));
    assert!(
        frames
            .iter()
            .filter(|f| f["type"] != "balance")
            .all(|f| f["request_id"] == "r-1")
    );
    let start = of_type(&frames, "start")[0];
    assert_eq!(start["tokens_remaining"], 3900);
    let done = *of_type(&frames, "done").last().unwrap();
    assert_eq!(done["response"].as_str().unwrap(), text_of(&frames));
    assert_eq!(done["tokens_remaining"], 3900);
    assert_eq!(done["finish_reason"], "STOP");
    assert_eq!(done["message"], "tell me a story");
    // 40 chunks, coalesced: fewer frames than Gemini sent.
    let deltas = of_type(&frames, "delta").len();
    let chunks = ws.setup.standin.recorded()[0].chunks_written.len();
    assert!(deltas < chunks, "{deltas} delta frames for {chunks} chunks");
    // The balance moved on the screen that chatted too.
    let balance = match of_type(&frames, "balance").first() {
        Some(frame) => (*frame).clone(),
        None => client.next(WAIT).await.expect("a balance frame"),
    };
    assert_eq!(balance, json!({ "type": "balance", "tokens": 3900 }));
    assert!(ws.gateway.frames().iter().all(|f| f.bytes < 32 * 1024));

    let chats = ws.setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert_eq!(ws.setup.shown_balance().await, 3900);
    ws.setup.books().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_before_the_first_words_stops_gemini_and_refunds() {
    let ws = ws(&[]).await;
    ws.setup.standin.set_pacing(paced(6000, 10));
    let mut client = ws.connect(&ws.setup.token).await;
    client.send(chat("think hard", "r-cancel-early")).await;
    // The model was asked: the credits are held and the chat runs.
    let asked = Instant::now() + WAIT;
    while ws.setup.standin.requests() == 0 && Instant::now() < asked {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Instant::now();
    client
        .send(json!({ "action": "cancel", "request_id": "r-cancel-early" }))
        .await;
    let mut frames = client.until("error", WAIT).await.expect("an error frame");
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "stopped before Gemini's first chunk"
    );
    if of_type(&frames, "balance").is_empty() {
        frames.push(client.next(WAIT).await.expect("a balance frame"));
    }
    let error = *of_type(&frames, "error").last().unwrap();
    assert_eq!(error["code"], "cancelled", "{error}");
    assert_eq!(error["request_id"], "r-cancel-early");
    assert_eq!(error["charged"], false);
    assert!(of_type(&frames, "delta").is_empty());

    // Refunded, nothing in the history, and Gemini let go.
    assert_eq!(ws.setup.shown_balance().await, 4000);
    let balance = *of_type(&frames, "balance").last().unwrap();
    assert_eq!(*balance, json!({ "type": "balance", "tokens": 4000 }));
    let chats = ws.setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Refunded);
    assert!(chats[0].response.is_none());
    ws.setup.books().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_after_the_first_words_keeps_and_charges_the_words_given() {
    let ws = ws(&[]).await;
    ws.setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 1000 });
    ws.setup.standin.set_pacing(paced(100, 40));
    let mut client = ws.connect(&ws.setup.token).await;
    client.send(chat("a very long story", "r-stop")).await;
    let mut frames = client.until("delta", WAIT).await.expect("the first words");
    client
        .send(json!({ "action": "cancel", "request_id": "r-stop" }))
        .await;
    frames.extend(client.until("done", WAIT).await.expect("a done frame"));

    let done = *of_type(&frames, "done").last().unwrap();
    assert_eq!(done["finish_reason"], "CANCELLED");
    assert_eq!(done["tokens_remaining"], 3900);
    let given = text_of(&frames);
    assert_eq!(done["response"].as_str().unwrap(), given);
    assert!(given.split_whitespace().count() < 500, "stopped early");

    // Kept in the history as far as it got, charged once; Gemini stopped.
    let chats = ws.setup.store.chats("john").await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert_eq!(chats[0].response.as_deref(), Some(given.as_str()));
    assert_eq!(chats[0].finish_reason.as_deref(), Some("CANCELLED"));
    assert_eq!(ws.setup.shown_balance().await, 3900);
    let recorded = &ws.setup.standin.recorded()[0];
    assert!(recorded.client_gone && !recorded.stream_completed);
    ws.setup.books().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_mid_answer_stops_the_posting_not_the_answer() {
    let ws = ws(&[]).await;
    ws.setup
        .standin
        .set_behavior(Behavior::LongAnswer { words: 150 });
    ws.setup.standin.set_pacing(paced(100, 20));
    let mut client = ws.connect(&ws.setup.token).await;
    client.send(chat("a story for nobody", "r-gone")).await;
    client.until("delta", WAIT).await.expect("the first words");
    client.vanish();

    // The answer is stored whole and charged once, though nobody read it.
    let deadline = Instant::now() + WAIT;
    let chats = loop {
        let chats = ws.setup.store.chats("john").await.unwrap();
        if !chats.is_empty() || Instant::now() > deadline {
            break chats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].state, ChargeState::Completed);
    assert_eq!(chats[0].finish_reason.as_deref(), Some("STOP"));
    assert_eq!(
        chats[0]
            .response
            .as_deref()
            .unwrap()
            .split_whitespace()
            .count(),
        150
    );
    assert!(ws.setup.standin.recorded()[0].stream_completed);
    assert_eq!(ws.setup.shown_balance().await, 3900);
    ws.setup.books().await;
    // One post found it gone; none was tried after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let undelivered = ws.gateway.frames().iter().filter(|f| !f.delivered).count();
    assert_eq!(undelivered, 1, "posting stopped at the first GoneException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_from_any_route_moves_the_balance_on_every_screen_of_that_user_only() {
    let ws = ws(&[]).await;
    let jane = shared::auth::Token::issue("jane").unwrap().expose();
    testkit::demo::user_with_token(&ws.setup.store, "jane", 4000, &jane)
        .await
        .unwrap();
    let mut tab = ws.connect(&ws.setup.token).await;
    let mut phone = ws.connect(&ws.setup.token).await;
    let mut janes = ws.connect(&jane).await;

    // A chat through the REST API, not the WebSocket.
    let (status, body) = invoke(
        &ws.setup.runtime,
        chat_event(&ws.setup.token, "hello", None),
    )
    .await
    .http();
    assert_eq!(status, 200, "{body}");
    for screen in [&mut tab, &mut phone] {
        let frame = screen.next(WAIT).await.expect("a balance push");
        assert_eq!(frame, json!({ "type": "balance", "tokens": 3900 }));
    }
    assert_eq!(
        janes.next(Duration::from_millis(800)).await,
        None,
        "nothing for another user"
    );

    // A refund moves it back, on both.
    let (status, _) = invoke(
        &ws.setup.runtime,
        chat_event(&ws.setup.token, "[standin:503]", None),
    )
    .await
    .http();
    assert_eq!(status, 503);
    for screen in [&mut tab, &mut phone] {
        // Held (3800), then given back.
        let held = screen.next(WAIT).await.expect("a balance push");
        assert_eq!(held, json!({ "type": "balance", "tokens": 3800 }));
        let back = screen.next(WAIT).await.expect("a balance push");
        assert_eq!(back, json!({ "type": "balance", "tokens": 3900 }));
    }
    // Asked for, the balance comes on the connection that asked.
    janes.send(json!({ "action": "balance" })).await;
    assert_eq!(
        janes.next(WAIT).await,
        Some(json!({ "type": "balance", "tokens": 4000 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_request_id_is_answered_again_and_charged_once() {
    let ws = ws(&[]).await;
    let mut client = ws.connect(&ws.setup.token).await;
    client.send(chat("hello", "r-same")).await;
    let first = client.until("done", WAIT).await.unwrap();
    let first = *of_type(&first, "done").last().unwrap();
    // The connection dropped; the client resends on a new one.
    client.close().await;
    let mut again = ws.connect(&ws.setup.token).await;
    again.send(chat("hello", "r-same")).await;
    let second = again.until("done", WAIT).await.unwrap();
    let second = *of_type(&second, "done").last().unwrap();
    assert_eq!(second["replayed"], true);
    assert_eq!(second["response"], first["response"]);
    assert_eq!(ws.setup.standin.requests(), 1);
    assert_eq!(ws.setup.shown_balance().await, 3900);
    ws.setup.books().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_expired_or_made_up_ticket_is_refused_at_connect() {
    let ws = ws(&[("WEBSOCKET_TICKET_SECS", "1".to_owned())]).await;
    let ticket = ws.ticket(&ws.setup.token).await;
    let url = format!(
        "{}?ticket={}",
        ws.gateway.url(),
        ticket["ticket"].as_str().unwrap()
    );
    let first = Client::connect(&url).await.expect("accepted once");
    assert_eq!(
        Client::connect(&url).await.err(),
        Some(401),
        "a used ticket"
    );

    let late = ws.ticket(&ws.setup.token).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let url = format!(
        "{}?ticket={}",
        ws.gateway.url(),
        late["ticket"].as_str().unwrap()
    );
    assert_eq!(
        Client::connect(&url).await.err(),
        Some(401),
        "an expired ticket"
    );

    let made_up = format!("{}?ticket={}", ws.gateway.url(), "ab".repeat(32));
    assert_eq!(Client::connect(&made_up).await.err(), Some(401));
    assert_eq!(
        Client::connect(&ws.gateway.url()).await.err(),
        Some(401),
        "no ticket"
    );
    // Without a token there is no ticket.
    let event = json_event("POST", "/api/ws-ticket/", None, None);
    assert_eq!(invoke(&ws.setup.runtime, event).await.http().0, 401);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_action_or_bad_json_is_an_error_frame_and_the_connection_stays() {
    let ws = ws(&[]).await;
    let mut client = ws.connect(&ws.setup.token).await;
    client.send(json!({ "action": "dance" })).await;
    let error = client.next(WAIT).await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "unknown_action");
    client
        .send(json!({ "action": "chat", "request_id": "r-x" }))
        .await;
    let error = client.next(WAIT).await.unwrap();
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("invalid_field"), Some("message"))
    );
    assert_eq!(error["request_id"], "r-x");
    client
        .send(json!({ "action": "cancel", "request_id": "nothing-running" }))
        .await;
    assert_eq!(client.next(WAIT).await.unwrap()["code"], "not_found");
    client.send(json!("not an object")).await;
    assert_eq!(client.next(WAIT).await.unwrap()["code"], "invalid_field");
    client.send(json!({ "action": "balance" })).await;
    assert_eq!(
        client.next(WAIT).await,
        Some(json!({ "type": "balance", "tokens": 4000 }))
    );
    assert_eq!(ws.setup.shown_balance().await, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logged_out_session_loses_its_tickets_and_its_connections() {
    let ws = ws(&[]).await;
    let mut client = ws.connect(&ws.setup.token).await;
    let spare = ws.ticket(&ws.setup.token).await;
    ws.setup.log_out().await;

    client.send(json!({ "action": "balance" })).await;
    let frame = client.next(WAIT).await.expect("told why");
    assert_eq!(frame["code"], "invalid_token", "{frame}");
    assert_eq!(client.next(WAIT).await, None, "closed by the server");
    let url = format!(
        "{}?ticket={}",
        ws.gateway.url(),
        spare["ticket"].as_str().unwrap()
    );
    assert_eq!(
        Client::connect(&url).await.err(),
        Some(401),
        "its ticket is refused"
    );
}
