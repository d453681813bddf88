//! The built `login` binary, run as a process behind a Lambda Runtime API emulator,
//! against DynamoDB Local: sessions that end, throttled password guessing that gives
//! nothing away, and a deleted account whose books still balance.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use shared::{
    audit,
    service::charges::{Answered, Charges},
    store::{OpenCharge, Store, now_millis},
};
use testkit::{
    demo::{self, DEMO_PASSWORD},
    events::{event, json_event},
    runtime::{Functions, Outcome, RuntimeApi},
};

const LOGIN: &str = env!("CARGO_BIN_EXE_login");

struct Setup {
    store: Store,
    runtime: RuntimeApi,
    _functions: Functions,
}

async fn setup() -> Setup {
    let store = testkit::table::local_store("login").await;
    let runtime = RuntimeApi::start().await;
    let env = [
        ("TABLE_NAME", store.table().to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let functions = Functions::spawn(Path::new(LOGIN), &runtime, 2, &env);
    Setup {
        store,
        runtime,
        _functions: functions,
    }
}

impl Setup {
    async fn send(&self, event: Value) -> Value {
        match tokio::time::timeout(Duration::from_secs(60), self.runtime.invoke(event))
            .await
            .expect("an answer within 60 s")
        {
            Outcome::Response(resp) => resp,
            other => panic!("the function failed: {other:?}"),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        Outcome::Response(self.send(json_event(method, path, token, body)).await).http()
    }

    async fn login(&self, name: &str, password: &str) -> Value {
        let body = json!({"username": name, "password": password});
        self.send(json_event("POST", "/api/login/", None, Some(body)))
            .await
    }

    async fn token(&self, name: &str) -> String {
        let (status, body) = Outcome::Response(self.login(name, DEMO_PASSWORD).await).http();
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_token_gets_401_and_logout_all_ends_a_second_session() {
    let setup = setup().await;
    demo::user_with_new_token(&setup.store, "john", 4000)
        .await
        .unwrap();
    let first = setup.token("john").await;
    let second = setup.token("john").await;
    let third = setup.token("john").await;

    let (status, body) = setup
        .call("GET", "/api/sessions/", Some(&first), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"].as_array().unwrap().len(), 4, "{body}");

    assert_eq!(
        setup
            .call("POST", "/api/logout/", Some(&first), None)
            .await
            .0,
        200
    );
    let (status, body) = setup.call("GET", "/api/sessions", Some(&first), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(
        setup
            .call("GET", "/api/sessions/", Some(&second), None)
            .await
            .0,
        200
    );

    assert_eq!(
        setup
            .call("POST", "/api/logout/all/", Some(&third), None)
            .await
            .0,
        200
    );
    assert_eq!(
        setup
            .call("GET", "/api/sessions/", Some(&second), None)
            .await
            .0,
        401
    );
    assert_eq!(
        setup
            .call("GET", "/api/sessions/", Some(&third), None)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_wrong_password_gets_the_same_429_for_a_known_and_an_unknown_name() {
    let setup = setup().await;
    demo::user_with_new_token(&setup.store, "john", 4000)
        .await
        .unwrap();
    let mut sixth = Vec::new();
    for name in ["john", "nobody-here"] {
        for _ in 0..5 {
            let (status, _) = Outcome::Response(setup.login(name, "wrong password").await).http();
            assert_eq!(status, 401);
        }
        sixth.push(setup.login(name, "wrong password").await);
    }
    let shape = |resp: &Value| {
        let mut headers: Vec<String> = resp["multiValueHeaders"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        headers.sort();
        (resp["statusCode"].clone(), resp["body"].clone(), headers)
    };
    assert_eq!(shape(&sixth[0]).0, 429);
    assert!(shape(&sixth[0]).2.contains(&"retry-after".to_owned()));
    assert_eq!(shape(&sixth[0]), shape(&sixth[1]), "{sixth:?}");
    assert!(
        sixth[0]["multiValueHeaders"]["retry-after"][0].is_string(),
        "{}",
        sixth[0]
    );
    // The right password, while throttled: the same answer.
    let right = setup.login("john", DEMO_PASSWORD).await;
    assert_eq!(shape(&right), shape(&sixth[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_encoded_login_gets_415_with_nosniff() {
    let setup = setup().await;
    let form = event(
        "POST",
        "/api/login/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("username=john&password=demo-password"),
        "198.51.100.7",
    );
    let resp = setup.send(form).await;
    assert_eq!(resp["statusCode"], 415, "{resp}");
    assert_eq!(
        resp["multiValueHeaders"]["x-content-type-options"][0],
        "nosniff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_books_still_audit_clean() {
    let setup = setup().await;
    let store = &setup.store;
    let token = demo::user_with_new_token(store, "john", 4000)
        .await
        .unwrap();
    // Two answered chats and one refunded, through the charge service.
    let charges = Charges::new(store, Duration::from_secs(60));
    let guard = demo::guard(&token);
    let account = store.user("john").await.unwrap().unwrap().account;
    for (i, answered) in [true, false, true].into_iter().enumerate() {
        let charge = OpenCharge {
            id: format!("0190000{i}-0000-7000-8000-000000000000"),
            account: account.clone(),
            conversation_id: format!("c{i}"),
            cost: 100,
            opened_at: now_millis(),
        };
        let hold = charges.hold(charge, &guard).await.unwrap();
        if answered {
            let answer = Answered {
                message: "a private question",
                response: "a private answer",
                model: "m",
                title: "a private question",
                usage: Default::default(),
                balance: hold.balance,
                finish_reason: None,
            };
            charges.settle(&hold, answer).await.unwrap();
        } else {
            assert!(charges.refund(&hold, "a private question", "test").await);
        }
    }

    let body = json!({"password": DEMO_PASSWORD});
    let (status, body) = setup
        .call("DELETE", "/api/account/", Some(&token), Some(body))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        setup
            .call("GET", "/api/sessions/", Some(&token), None)
            .await
            .0,
        401
    );

    let items = store
        .client()
        .scan()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let items = items.items.unwrap_or_default();
    assert!(
        !format!("{items:?}").contains("private"),
        "no conversation text is left"
    );
    let tombstone = items
        .iter()
        .find_map(|i| {
            let pk = i.get("pk")?.as_s().ok()?;
            (i.get("sk")?.as_s().ok()? == "ACCOUNT").then(|| pk["DELETED#".len()..].to_owned())
        })
        .expect("a tombstone");
    let books = audit::audit_deleted(store, &tombstone)
        .await
        .unwrap()
        .unwrap();
    assert!(books.is_balanced(), "{books}");
    assert_eq!(
        (
            books.settled,
            books.balance,
            books.completed_chats,
            books.refunded_chats
        ),
        (200, 3800, 2, 1)
    );

    // The name is free again, and its new owner logs in (`token` asserts the 200).
    demo::user_with_new_token(store, "john", 4000)
        .await
        .unwrap();
    setup.token("john").await;
}
