//! Deleting an account with a long history: the items go in batches, a deletion that
//! failed midway is finished by the same request again without redoing what was done,
//! and one that runs out of time says so and is continued the same way. The books of
//! every chat survive, anonymised, under the tombstone.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use lambda_http::{Body, Response};
use serde_json::json;
use shared::{
    App,
    audit::{self, Books},
    store::{Account, RetryPolicy},
};
use testkit::faults::{Fault, FaultProxy, Rule};

async fn seed_chats(app: &App, account: &Account, count: usize) {
    testkit::demo::seed_answered_chats(&app.store, account, count)
        .await
        .unwrap();
}

/// Items still kept under the account's own partition.
async fn items_left(app: &App, account: &Account) -> usize {
    let pk = match account.id() {
        Some(id) => format!("ACCT#{id}"),
        None => format!("USER#{}", account.user_key),
    };
    let mut left = 0;
    let mut start = None;
    loop {
        let page = app
            .store
            .client()
            .query()
            .table_name(app.store.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        left += page.count as usize;
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return left,
        }
    }
}

/// The id the deletion put on the user item (the tombstone's).
async fn deletion_id(app: &App, user_key: &str) -> String {
    let item = app
        .store
        .client()
        .get_item()
        .table_name(app.store.table())
        .key("pk", AttributeValue::S(format!("USER#{user_key}")))
        .key("sk", AttributeValue::S("PROFILE".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the user item");
    item["deleting"].as_s().unwrap().clone()
}

async fn delete(app: &App, token: &str) -> Response<Body> {
    let body = json!({ "password": PASSWORD }).to_string();
    let req = event("DELETE", "/api/account/", Some(token), Some(&body));
    shared::api::sessions::route(app, req).await.unwrap()
}

async fn deleted_books(app: &App, id: &str) -> Books {
    let books = audit::audit_deleted(&app.store, id)
        .await
        .unwrap()
        .expect("a tombstone");
    assert!(books.is_balanced(), "{books}");
    books
}

fn batch_writes(operations: &[String]) -> usize {
    operations
        .iter()
        .filter(|op| *op == "BatchWriteItem")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_that_failed_midway_is_finished_by_the_retry_without_redoing_the_first_part() {
    const CHATS: usize = 700;
    let direct = app().await;
    let proxy = FaultProxy::in_front_of_local().await;
    // An injected failure is final after one more try.
    let policy = RetryPolicy {
        max_attempts: 2,
        ..Default::default()
    };
    let app = app_through(&proxy, &direct, policy).await;
    let token = user_token(&direct, "john").await;
    let account = account(&direct, "john").await;
    seed_chats(&direct, &account, CHATS).await;
    proxy.take_operations();

    // The store starts failing once the first page (500 chats: 20 batches of copies and
    // 20 of deletes) is through.
    let deleting = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move { delete(&app, &token).await })
    };
    let mut seen = Vec::new();
    while batch_writes(&seen) < 40 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        seen.extend(proxy.take_operations());
    }
    proxy.set_rules([Rule::new(Some("BatchWriteItem"), 1.0, Fault::InternalError)]);
    let failed = deleting.await.unwrap();
    assert_eq!(failed.status(), 503, "{:?}", json_of(&failed));
    seen.extend(proxy.take_operations());
    let left = items_left(&direct, &account).await;
    assert!(
        (1..CHATS).contains(&left),
        "part of the history is gone, part is left: {left} of {CHATS}"
    );
    let id = deletion_id(&direct, "john").await;

    proxy.set_rules([]);
    let done = delete(&app, &token).await;
    assert_eq!(done.status(), 200, "{:?}", json_of(&done));
    let again = proxy.take_operations();
    // Only what was left: a copy and a delete for each, 25 to a batch.
    assert_eq!(batch_writes(&again), 2 * left.div_ceil(25), "{again:?}");
    assert_eq!(items_left(&direct, &account).await, 0);
    // The same deletion, continued: one tombstone, every chat's record under it.
    assert!(direct.store.user("john").await.unwrap().is_none());
    let books = deleted_books(&direct, &id).await;
    assert_eq!(books.completed_chats, CHATS);
    assert!(
        !table_text(&direct).await.contains("dolor sit amet"),
        "no text is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_longer_than_the_function_s_time_is_deleted_over_several_requests() {
    const CHATS: usize = 1_200;
    // Under a second for the first pass: one page of 500, then the time is up.
    let app = app_with(|c| {
        c.function_timeout = Duration::from_secs(5);
        c.store_retry.budget = Duration::from_millis(1_200);
    })
    .await;
    let token = user_token(&app, "john").await;
    let account = account(&app, "john").await;
    seed_chats(&app, &account, CHATS).await;

    let first = delete(&app, &token).await;
    assert_eq!(first.status(), 202, "{:?}", json_of(&first));
    assert_eq!(json_of(&first)["code"], "deletion_in_progress");
    assert_eq!(header(&first, "retry-after"), Some("1"));
    let id = deletion_id(&app, "john").await;
    assert_eq!(items_left(&app, &account).await, CHATS - 500);
    // Closed meanwhile: no chat can be charged, no login opens a session.
    assert_eq!(login(&app, "john", PASSWORD).await.status(), 401);

    let mut statuses = vec![202];
    while statuses.last() == Some(&202) && statuses.len() < 10 {
        statuses.push(delete(&app, &token).await.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 200], "a page a request, then done");
    assert_eq!(items_left(&app, &account).await, 0);
    assert_eq!(deleted_books(&app, &id).await.completed_chats, CHATS);
}
