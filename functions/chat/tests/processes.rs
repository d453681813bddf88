//! The built `chat` binary, run as separate processes behind a Lambda Runtime API
//! emulator, against DynamoDB Local and the Gemini stand-in: concurrency across
//! processes, faults in the middle of a run, and a process killed mid-answer.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use shared::store::ChargeState;
use testkit::{Behavior, runtime::Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_chats_across_eight_processes_spend_exactly_the_balance() {
    let setup = setup(4000).await;
    let mut functions = setup.functions(8, &[]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (runtime, event) = (
            setup.runtime.clone(),
            chat_event(&setup.token, &format!("question {i}"), None),
        );
        tasks.spawn(async move { invoke(&runtime, event).await.http() });
    }
    let (mut answered, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            (200, _) => answered += 1,
            (402, body) => {
                assert_eq!(body["code"], "insufficient_credits");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((answered, refused), (40, 160));
    assert_eq!(functions.exited(), 0, "no process crashed");
    assert!(setup.runtime.init_errors().is_empty());
    assert_eq!(setup.standin.requests(), 40, "no Gemini call went unpaid");
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.completed_chats, books.open_charges),
        (0, 40, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gemini_faults_in_the_middle_of_a_run_lose_no_credit() {
    let setup = setup(7000).await;
    let _functions = setup.functions(8, &[]);
    let faults = [
        "",
        "[standin:429]",
        "[standin:500]",
        "[standin:503]",
        "[standin:timeout]",
        "[standin:malformed]",
        "[standin:safety]",
        "[standin:blocked]",
        "[standin:empty]",
        "[standin:404]",
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..70 {
        let message = format!("question {i} {}", faults[i % faults.len()]);
        let (runtime, event) = (
            setup.runtime.clone(),
            chat_event(&setup.token, &message, None),
        );
        tasks.spawn(async move { invoke(&runtime, event).await.http().0 });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 7);
    assert!(
        statuses
            .iter()
            .all(|s| [200, 422, 502, 503, 504].contains(s)),
        "{statuses:?}"
    );
    let books = setup.books().await;
    assert_eq!(books.balance, 7000 - 7 * 100);
    assert_eq!(
        (
            books.completed_chats,
            books.refunded_chats,
            books.open_charges
        ),
        (7, 63, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_killed_mid_answer_gets_its_credits_back() {
    let setup = setup(4000).await;
    let fast_recovery = fast_recovery();
    setup.standin.set_behavior(Behavior::Hang);
    let mut functions = setup.functions(1, &fast_recovery);
    let runtime = setup.runtime.clone();
    let event = chat_event(
        &setup.token,
        "a question that never gets its answer",
        Some("retry-me"),
    );
    let in_flight = tokio::spawn(async move { runtime.invoke(event).await });

    // Wait until the process has debited and is waiting on Gemini, then kill it.
    for _ in 0..200 {
        if setup.standin.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(setup.standin.requests(), 1, "the chat reached Gemini");
    functions.kill_all();
    in_flight.abort();

    // The debit stands, held by an open charge: nothing is lost, the books balance.
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.open, books.open_charges),
        (3900, 100, 1)
    );

    // Past the charge timeout, the user's next request brings the credits back. The
    // retry carries the same Idempotency-Key, whose dead claim it takes over.
    // Past the charge timeout the balance shows the credits as returned, before any
    // other chat has run to write that down.
    assert_eq!(
        setup.shown_balance().await,
        3900,
        "still held while it may be live"
    );
    tokio::time::sleep(PAST_THE_CHARGE_TIMEOUT).await;
    assert_eq!(
        setup.shown_balance().await,
        4000,
        "an abandoned charge shows as returned"
    );
    setup.standin.set_behavior(Behavior::Answer);
    let _functions = setup.functions(1, &fast_recovery);
    let retry = chat_event(
        &setup.token,
        "a question that never gets its answer",
        Some("retry-me"),
    );
    let (status, body) = invoke(&setup.runtime, retry).await.http();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["tokens_remaining"], 3900,
        "one chat paid for, the dead one refunded"
    );

    let books = setup.books().await;
    assert_eq!(
        (
            books.balance,
            books.open_charges,
            books.completed_chats,
            books.refunded_chats
        ),
        (3900, 0, 1, 1)
    );
    let chats = setup.store.chats("john").await.unwrap();
    let refunded = chats
        .iter()
        .find(|c| c.state == ChargeState::Refunded)
        .unwrap();
    assert!(
        refunded.reason.as_deref().unwrap().starts_with("abandoned"),
        "{refunded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_over_the_rate_gets_429_and_the_balance_is_untouched() {
    let setup = setup(4000).await;
    let _functions = setup.functions(1, &[("CHATS_PER_MINUTE", "2".to_owned())]);
    testkit::demo::wait_for_a_fresh_minute(10).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let event = chat_event(&setup.token, &format!("question {i}"), None);
        statuses.push(invoke(&setup.runtime, event).await.http());
    }
    let third = statuses.pop().unwrap();
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(third.0, 429, "{}", third.1);
    assert_eq!(third.1["code"], "chat_rate_exceeded");
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.completed_chats, books.open_charges),
        (3800, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_with_a_logged_out_token_gets_401_and_costs_nothing() {
    let setup = setup(4000).await;
    let _functions = setup.functions(1, &[]);
    let john = setup.store.user("john").await.unwrap().unwrap();
    setup.store.end_sessions(&john.account, None).await.unwrap();
    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(setup.standin.requests(), 0);
    assert_eq!(setup.books().await.balance, 4000);
}
/// `events/chat.json` turned into any request to the chat function.
fn request_event(token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut event = chat_event(token, "", None);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    event["path"] = json!(path);
    event["httpMethod"] = json!(method);
    event["requestContext"]["path"] = json!(format!("/prod{path}"));
    event["requestContext"]["httpMethod"] = json!(method);
    event["body"] = body.map_or(Value::Null, |b| json!(b.to_string()));
    if let Some((k, v)) = query.split_once('=') {
        event["queryStringParameters"] = json!({ k: v });
        event["multiValueQueryStringParameters"] = json!({ k: [v] });
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_through_the_built_binary_is_priced_paged_and_deleted() {
    let setup = setup(4000).await;
    // Prices from the environment, as the template sets them.
    let models = (
        "MODELS",
        "gemini-flash-latest=100,gemini-flash-lite-latest=25".to_owned(),
    );
    let _functions = setup.functions(2, &[models]);
    let send = |body: Value| {
        let runtime = setup.runtime.clone();
        let event = request_event(&setup.token, "POST", "/api/chat/", Some(body));
        async move { invoke(&runtime, event).await.http() }
    };
    let (status, first) =
        send(json!({"message": "one", "model": "gemini-flash-lite-latest"})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["tokens_remaining"], 3975);
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let (_, second) = send(json!({"message": "two"})).await;
    assert_eq!(second["conversation_id"], id.as_str());
    assert_eq!(second["tokens_remaining"], 3875);
    let (_, third) = send(json!({"message": "three", "conversation_id": id})).await;
    assert_eq!(third["conversation_id"], id.as_str());
    let (status, other) = send(
        json!({"message": "x", "conversation_id": shared::domain::ConversationId::new().as_str()}),
    )
    .await;
    assert_eq!(status, 404, "{other}");

    let get = |path: String| {
        let runtime = setup.runtime.clone();
        let event = request_event(&setup.token, "GET", &path, None);
        async move { invoke(&runtime, event).await.http() }
    };
    let (status, page) = get(format!("/api/conversations/{id}/messages?limit=2")).await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].clone())
        .collect();
    assert_eq!(texts, [json!("one"), json!("two")]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = get(format!("/api/conversations/{id}/messages/?cursor={cursor}")).await;
    assert_eq!(rest["messages"][0]["message"], "three");
    let (_, list) = get("/api/conversations".to_owned()).await;
    assert_eq!(list["conversations"][0]["messages"], 3);

    let delete = request_event(
        &setup.token,
        "DELETE",
        &format!("/api/conversations/{id}/"),
        None,
    );
    let deleted = invoke(&setup.runtime, delete).await;
    let Outcome::Response(resp) = deleted else {
        panic!("{deleted:?}")
    };
    assert_eq!(resp["statusCode"], 204);
    let books = setup.books().await;
    assert_eq!(
        (books.settled, books.completed_chats, books.balance),
        (225, 3, 3775)
    );
}

/// A streamed response leaves as several small writes (prelude, delimiter, body); with
/// Nagle's algorithm on, each waits for the previous one's delayed ACK, ~40 ms on every
/// answer. `lambda_runtime_api_client` 1.1.1 leaves it on: patches/ turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_api_connection_has_nagle_off() {
    let setup = setup(1000).await;
    let functions = setup.functions(1, &[]);
    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(status, 200, "{body}");
    let nodelay = functions
        .runtime_api_nodelay(&setup.runtime)
        .expect("the chat process's sockets can be read");
    assert!(
        !nodelay.is_empty(),
        "the chat process holds no Runtime API connection"
    );
    assert!(
        nodelay.iter().all(|on| *on),
        "TCP_NODELAY is off on the Runtime API connection: {nodelay:?}"
    );
}
