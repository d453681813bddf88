//! What an operator sees of logins: the built `login` binary writes one Embedded Metric
//! Format line per invocation that records something, valid by the specification, and
//! counts a login that succeeded, one that failed and one the back-off refused.

use std::{path::Path, time::Duration};

use serde_json::json;
use testkit::{
    demo::{self, DEMO_PASSWORD},
    emf::{self, EmfDocument},
    events::json_event,
    runtime::{Functions, Outcome, RuntimeApi},
};

const LOGIN: &str = env!("CARGO_BIN_EXE_login");

async fn login(runtime: &RuntimeApi, name: &str, password: &str) -> u16 {
    let body = json!({"username": name, "password": password});
    let event = json_event("POST", "/api/login/", None, Some(body));
    match tokio::time::timeout(Duration::from_secs(60), runtime.invoke(event))
        .await
        .expect("an answer within 60 s")
    {
        outcome @ Outcome::Response(_) => outcome.http().0,
        other => panic!("the function failed: {other:?}"),
    }
}

/// The line written for the invocation just made (and only one).
async fn the_line(functions: &Functions) -> EmfDocument {
    let out = functions
        .wait_for_lines("\"_aws\"", 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut docs = emf::documents(&functions.stdout()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(docs.len(), 1, "one metrics line per invocation:\n{out}");
    functions.clear_stdout();
    docs.remove(0)
}

fn counted(doc: &EmfDocument) -> Vec<(String, f64)> {
    doc.metrics
        .iter()
        .map(|(name, m)| (name.clone(), m.total()))
        .filter(|(name, _)| name.starts_with("Login"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_a_wrong_password_and_a_throttled_guess_each_count_once() {
    let store = testkit::table::local_store("login-metrics").await;
    demo::user_with_new_token(&store, "john", 4000)
        .await
        .unwrap();
    let runtime = RuntimeApi::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("LOGIN_FREE_FAILURES", "1".to_owned()),
    ];
    let functions = Functions::spawn(Path::new(LOGIN), &runtime, 1, &env);

    assert_eq!(login(&runtime, "john", DEMO_PASSWORD).await, 200);
    let doc = the_line(&functions).await;
    assert_eq!(counted(&doc), [("LoginsSucceeded".to_owned(), 1.0)]);
    assert_eq!(doc.properties["Function"], "login");
    assert!(doc.metrics.values().all(|m| m.namespace == "ChatBackend"));
    assert_eq!(
        doc.metrics["LoginsSucceeded"].unit.as_deref(),
        Some("Count")
    );

    assert_eq!(login(&runtime, "john", "wrong password").await, 401);
    let doc = the_line(&functions).await;
    assert_eq!(counted(&doc), [("LoginsFailed".to_owned(), 1.0)]);

    // One free failure: the next attempt is held back, right password or not.
    assert_eq!(login(&runtime, "john", DEMO_PASSWORD).await, 429);
    let doc = the_line(&functions).await;
    assert_eq!(counted(&doc), [("LoginsThrottled".to_owned(), 1.0)]);
    // Nothing about who: the line names the function only.
    assert_eq!(
        doc.properties.keys().collect::<Vec<_>>(),
        ["Function"],
        "{:?}",
        doc.properties
    );
}
