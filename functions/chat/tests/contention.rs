//! The built `chat` binary against DynamoDB as AWS behaves under contention and load:
//! a proxy in front of DynamoDB Local answers a share of requests with transaction
//! conflicts, throttling and 500s (some after applying the write). Every answer given
//! must be paid for exactly once, every failure refunded, and the books must balance —
//! also after abandoned-charge recovery has run.

mod common;

use common::*;
use serde_json::Value;
use shared::audit::Books;
use testkit::{
    faults::{Fault, FaultProxy, Rule},
    runtime::Outcome,
};

/// The chat processes reach DynamoDB through `proxy`, with fast recovery.
fn through(proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    let mut env = fast_recovery();
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", proxy.url()));
    env
}

/// Sends `count` chats at once (every third with an Idempotency-Key) and returns the
/// status and body of each.
async fn chats_at_once(setup: &Setup, count: usize) -> Vec<(u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let key = (i % 3 == 0).then(|| format!("key-{i}"));
        let event = chat_event(&setup.token, &format!("question {i}"), key.as_deref());
        let runtime = setup.runtime.clone();
        tasks.spawn(async move { invoke(&runtime, event).await.http() });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.unwrap());
    }
    results
}

/// Every answer carries the balance it left; every failure is the store's 503.
fn tally(results: &[(u16, Value)]) -> usize {
    let mut answered = 0;
    for (status, body) in results {
        match status {
            200 => {
                assert!(body["tokens_remaining"].is_u64(), "{body}");
                answered += 1;
            }
            503 => assert_eq!(body["code"], "service_unavailable", "{body}"),
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    answered
}

/// Past the charge timeout, one more chat (with the faults off) recovers whatever the
/// run left open. Returns the books after it.
async fn after_recovery(setup: &Setup, proxy: &FaultProxy) -> Books {
    proxy.set_rules([]);
    tokio::time::sleep(PAST_THE_CHARGE_TIMEOUT).await;
    let (status, body) = invoke(
        &setup.runtime,
        chat_event(&setup.token, "one more, after the storm", None),
    )
    .await
    .http();
    assert_eq!(status, 200, "{body}");
    let books = setup.books().await;
    assert_eq!(
        books.open_charges, 0,
        "recovery closed every open charge:\n{books}"
    );
    books
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_chats_under_conflicts_are_each_paid_once() {
    let setup = setup(10_000).await;
    let proxy = FaultProxy::in_front_of_local().await;
    // 40% of writes meet a transaction holding their item; 20% of reads are throttled.
    proxy.set_rules([
        Rule::new(Some("UpdateItem"), 0.4, Fault::TransactionConflict),
        Rule::new(Some("PutItem"), 0.4, Fault::TransactionConflict),
        Rule::new(Some("DeleteItem"), 0.4, Fault::TransactionConflict),
        Rule::new(Some("GetItem"), 0.2, Fault::Throttling),
        Rule::new(Some("BatchGetItem"), 0.2, Fault::Throttling),
    ]);
    let _functions = setup.functions(8, &through(&proxy));

    let results = chats_at_once(&setup, 60).await;
    let answered = tally(&results);
    assert!(
        proxy.injected() > 40,
        "faults were injected: {}",
        proxy.injected()
    );
    assert!(answered >= 54, "almost all answered: {answered} of 60");

    // Every answer given is on record and paid; every other chat cost nothing.
    let books = setup.books().await;
    assert_eq!(books.completed_chats, answered, "{books}");
    // Paid, or owed by a charge whose close is left to recovery.
    assert_eq!(
        books.settled + books.answered_open,
        100 * answered as u64,
        "{books}"
    );

    let books = after_recovery(&setup, &proxy).await;
    assert_eq!(books.completed_chats, answered + 1);
    assert_eq!(books.balance, 10_000 - 100 * (answered as u64 + 1));
    assert_eq!(books.settled, 100 * (answered as u64 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_and_server_errors_lose_no_credit() {
    let setup = setup(10_000).await;
    let proxy = FaultProxy::in_front_of_local().await;
    // Any call: throttled, a 500 before applying, or a 500 after applying it.
    proxy.set_rules([
        Rule::new(None, 0.15, Fault::Throttling),
        Rule::new(None, 0.1, Fault::InternalError),
        Rule::new(None, 0.05, Fault::AppliedThenLost),
    ]);
    let _functions = setup.functions(8, &through(&proxy));

    let results = chats_at_once(&setup, 60).await;
    let answered = tally(&results);
    assert!(
        proxy.injected() > 30,
        "faults were injected: {}",
        proxy.injected()
    );
    assert!(answered >= 54, "almost all answered: {answered} of 60");

    let books = setup.books().await;
    // A settle whose writes landed although their replies were lost is found out and
    // answered; only if the store also failed that finding out is the 503 one whose
    // answer may be on record and owed. Never the reverse.
    assert!(books.completed_chats >= answered, "{books}");
    let books = after_recovery(&setup, &proxy).await;
    assert_eq!(
        books.balance,
        10_000 - 100 * books.completed_chats as u64,
        "{books}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_whose_charge_could_not_be_closed_is_settled_not_refunded() {
    let setup = setup(4000).await;
    let proxy = FaultProxy::in_front_of_local().await;
    // The close of every settled charge fails, however often it is retried.
    proxy
        .set_rules([Rule::new(Some("UpdateItem"), 1.0, Fault::InternalError)
            .when_body_contains("ADD spent")]);
    let _functions = setup.functions(1, &through(&proxy));

    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(
        status, 200,
        "the answer is on record, so it is given: {body}"
    );
    assert_eq!(body["tokens_remaining"], 3900);

    // Long after, the balance still shows it paid: it was answered.
    tokio::time::sleep(PAST_THE_CHARGE_TIMEOUT).await;
    assert_eq!(setup.shown_balance().await, 3900);

    let books = after_recovery(&setup, &proxy).await;
    assert_eq!(
        (books.balance, books.completed_chats, books.refunded_chats),
        (3800, 2, 0),
        "recovery settled the answered charge instead of refunding it:\n{books}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_after_the_answer_is_a_503_and_costs_nothing() {
    let setup = setup(4000).await;
    let proxy = FaultProxy::in_front_of_local().await;
    // Neither the answer's record nor the charge's close gets through.
    proxy.set_rules([
        Rule::new(Some("UpdateItem"), 1.0, Fault::Throttling).when_body_contains("ADD spent"),
        Rule::new(Some("PutItem"), 1.0, Fault::Throttling).when_body_contains("\"response\""),
    ]);
    let _functions = setup.functions(1, &through(&proxy));

    let (status, body) = invoke(&setup.runtime, chat_event(&setup.token, "hello", None))
        .await
        .http();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(setup.standin.requests(), 1);

    // Refunded before the 503, for certain: no charge waits for recovery.
    assert_eq!(setup.shown_balance().await, 4000);
    let books = setup.books().await;
    assert_eq!(
        (books.balance, books.open_charges, books.refunded_chats),
        (4000, 0, 1),
        "{books}"
    );
    let chats = setup.store.chats("john").await.unwrap();
    assert!(chats[0].reason.as_deref().unwrap().starts_with("withheld"));

    let books = after_recovery(&setup, &proxy).await;
    assert_eq!(
        (books.balance, books.completed_chats, books.refunded_chats),
        (3900, 1, 1),
        "{books}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debit_that_keeps_failing_is_a_503_and_gemini_is_not_asked() {
    let setup = setup(4000).await;
    let proxy = FaultProxy::in_front_of_local().await;
    proxy.set_rules([
        Rule::new(Some("UpdateItem"), 1.0, Fault::TransactionConflict)
            .when_body_contains("tokens - :cost"),
    ]);
    let _functions = setup.functions(1, &through(&proxy));

    let event = chat_event(&setup.token, "hello", Some("k-1"));
    let outcome = invoke(&setup.runtime, event).await;
    let (status, body) = outcome.http();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    let Outcome::Response(resp) = &outcome else {
        unreachable!()
    };
    assert_eq!(resp["multiValueHeaders"]["retry-after"][0], "1", "{resp}");
    assert_eq!(setup.standin.requests(), 0);
    assert_eq!(setup.shown_balance().await, 4000);

    // The key was freed: the same request, once the store recovers, is answered.
    proxy.set_rules([]);
    let event = chat_event(&setup.token, "hello", Some("k-1"));
    let (status, body) = invoke(&setup.runtime, event).await.http();
    assert_eq!(status, 200, "{body}");
    let books = setup.books().await;
    assert_eq!((books.balance, books.completed_chats), (3900, 1));
}
