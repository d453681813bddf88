//! `cargo xtask audit <user>` against DynamoDB Local: balanced books exit 0, books that
//! lost credits outside the charge lifecycle exit 1 and say by how much.

use std::process::Command;

use aws_sdk_dynamodb::types::AttributeValue;
use shared::{
    service::charges::{Answered, Charges},
    store::{ChatOutcome, OpenCharge, now_millis},
};
use testkit::demo;

fn audit(table: &str, user: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["audit", user, "--table", table])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[tokio::test]
async fn audit_reports_balanced_and_unbalanced_books() {
    let store = testkit::table::local_store("audit").await;
    let (client, table) = (store.client().clone(), store.table().to_owned());
    let token = demo::user_with_new_token(&store, "john", 4000)
        .await
        .unwrap();
    let guard = demo::guard(&token);
    let account = store.user("john").await.unwrap().unwrap().account;

    // One settled chat, one refunded, one still open.
    let charges = Charges::new(&store, std::time::Duration::from_secs(60));
    let charge = |id: &str| OpenCharge {
        id: id.to_owned(),
        account: account.clone(),
        conversation_id: "c1".to_owned(),
        cost: 100,
        opened_at: now_millis(),
    };
    for outcome in ["settle", "refund", "open"] {
        let hold = charges.hold(charge(outcome), &guard).await.unwrap();
        match outcome {
            "settle" => {
                let answer = Answered {
                    message: "q",
                    response: "hi",
                    model: "m",
                    usage: Default::default(),
                    balance: hold.balance,
                    finish_reason: None,
                    title: "q",
                };
                charges.settle(&hold, answer).await.unwrap();
            }
            "refund" => assert!(charges.refund(&hold, "q", "test").await),
            _ => {}
        }
    }
    let (code, text) = audit(&table, "John");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("balanced: granted = balance + settled + open"),
        "{text}"
    );
    assert!(text.contains("3800"), "{text}");

    // Credits taken without a charge record: the audit must notice.
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("USER#john".into()))
        .key("sk", AttributeValue::S("PROFILE".into()))
        .update_expression("SET tokens = tokens - :n")
        .expression_attribute_values(":n", AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    let (code, text) = audit(&table, "john");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("NOT BALANCED: 7 credits unaccounted for"),
        "{text}"
    );

    // An answer on record that no charge paid for: the free answer the audit exists for.
    let free = ChatOutcome::Answered {
        message: "q",
        response: "free",
        model: "m",
        usage: Default::default(),
        balance: 0,
        finish_reason: None,
    };
    store.record_chat(&charge("free"), free).await.unwrap();
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("USER#john".into()))
        .key("sk", AttributeValue::S("PROFILE".into()))
        .update_expression("SET tokens = tokens + :n")
        .expression_attribute_values(":n", AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    let (code, text) = audit(&table, "john");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("NOT BALANCED: 100 credits of answers never paid for"),
        "{text}"
    );

    let (code, text) = audit(&table, "nobody");
    assert_eq!(code, 2, "{text}");
}

#[tokio::test]
async fn audit_checks_a_deleted_accounts_books_by_its_tombstone() {
    let store = testkit::table::local_store("audit").await;
    let table = store.table().to_owned();
    let token = demo::user_with_new_token(&store, "john", 4000)
        .await
        .unwrap();
    let charges = Charges::new(&store, std::time::Duration::from_secs(60));
    let account = store.user("john").await.unwrap().unwrap().account;
    let charge = OpenCharge {
        id: "01900000-0000-7000-8000-000000000001".to_owned(),
        account: account.clone(),
        conversation_id: "c1".to_owned(),
        cost: 100,
        opened_at: now_millis(),
    };
    let hold = charges.hold(charge, &demo::guard(&token)).await.unwrap();
    let answer = Answered {
        message: "q",
        response: "hi",
        model: "m",
        title: "q",
        usage: Default::default(),
        balance: hold.balance,
        finish_reason: None,
    };
    charges.settle(&hold, answer).await.unwrap();

    // The store's deletion steps, as the account service runs them.
    let (user, id) = store
        .mark_deleting(&account, "tomb1")
        .await
        .unwrap()
        .unwrap();
    store.retire_items(&account, &id, None).await.unwrap();
    store.write_tombstone(&user, &id).await.unwrap();
    assert!(store.delete_user("john", &id).await.unwrap());

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["audit", "--deleted", "tomb1", "--table", &table])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("balanced"), "{text}");
    assert!(text.contains("3900"), "{text}");
    let (code, text) = audit(&table, "john");
    assert_eq!(code, 2, "the account itself is gone: {text}");
}
