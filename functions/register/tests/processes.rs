//! The built `register` binary as a process behind a Lambda Runtime API emulator, against
//! DynamoDB Local: browser-safe bodies and per-address limits.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use testkit::{
    events::{event, json_event},
    runtime::{Functions, Outcome, RuntimeApi},
};

const REGISTER: &str = env!("CARGO_BIN_EXE_register");

async fn send(runtime: &RuntimeApi, event: Value) -> Value {
    match tokio::time::timeout(Duration::from_secs(60), runtime.invoke(event))
        .await
        .expect("an answer within 60 s")
    {
        Outcome::Response(resp) => resp,
        other => panic!("the function failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_encoded_register_gets_415_and_the_eleventh_from_one_address_429() {
    let store = testkit::table::local_store("register").await;
    let runtime = RuntimeApi::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let _functions = Functions::spawn(Path::new(REGISTER), &runtime, 1, &env);

    // What a cross-site form would send.
    let form = event(
        "POST",
        "/api/register/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("username=victim&password=chosen-by-the-page"),
        "198.51.100.7",
    );
    let resp = send(&runtime, form).await;
    assert_eq!(resp["statusCode"], 415, "{resp}");
    assert_eq!(
        resp["multiValueHeaders"]["x-content-type-options"][0],
        "nosniff"
    );
    assert!(store.user("victim").await.unwrap().is_none());

    // Ten registrations an hour from one address (the default), then 429.
    for i in 0..10 {
        let body = json!({"username": format!("user{i}"), "password": "a good password"});
        let resp = send(
            &runtime,
            json_event("POST", "/api/register/", None, Some(body)),
        )
        .await;
        assert_eq!(resp["statusCode"], 201, "{resp}");
    }
    let body = json!({"username": "user10", "password": "a good password"});
    let (status, body) = Outcome::Response(
        send(
            &runtime,
            json_event("POST", "/api/register/", None, Some(body)),
        )
        .await,
    )
    .http();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_registrations"))
    );
    assert!(store.user("user10").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_registration_is_refused_before_the_password_is_hashed() {
    let store = testkit::table::local_store("register").await;
    let runtime = RuntimeApi::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("REGISTER_IP_LIMIT", "6".to_owned()),
    ];
    let functions = Functions::spawn(Path::new(REGISTER), &runtime, 1, &env);
    let register = |name: String| {
        let body = json!({"username": name, "password": "a good password"});
        json_event("POST", "/api/register/", None, Some(body))
    };
    // Warm: the first request pays for the start-up, which is not what is measured.
    let resp = send(
        &runtime,
        json_event("POST", "/api/register/", None, Some(json!({}))),
    )
    .await;
    assert_eq!(resp["statusCode"], 400, "{resp}");

    // What six registrations cost the function: six password hashes, mostly (CPU time
    // of the process, so other work on the machine doesn't count).
    let before = functions.cpu_ticks();
    for i in 0..6 {
        let resp = send(&runtime, register(format!("user{i}"))).await;
        assert_eq!(resp["statusCode"], 201, "{resp}");
    }
    let six_hashes = functions.cpu_ticks() - before;

    // Twenty-four refused ones, from the same address: they must not hash.
    let before = functions.cpu_ticks();
    for i in 0..24 {
        let (status, body) =
            Outcome::Response(send(&runtime, register(format!("more{i}"))).await).http();
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("too_many_registrations"))
        );
    }
    let refused = functions.cpu_ticks() - before;
    // A refusal costs a few store calls: under a third of a registration each. Had it
    // hashed the password, it would cost about as much as a registration.
    assert!(
        refused * 3 < six_hashes * 4,
        "24 refusals took {refused} ticks of CPU, 6 registrations {six_hashes}"
    );
}
