//! `cargo xtask audit <user>` against DynamoDB Local: balanced books exit 0, books that
//! lost credits outside the charge lifecycle exit 1 and say by how much.

use std::process::Command;

use aws_sdk_dynamodb::types::AttributeValue;
use shared::{
    auth,
    store::{Answered, Debit},
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
    demo::user_with_token(&store, "john", 4000, &auth::new_token().unwrap())
        .await
        .unwrap();

    // One settled chat, one refunded, one still open.
    for outcome in ["settle", "refund", "open"] {
        let Debit::Debited { charge, .. } = store.debit("john", 100).await.unwrap() else {
            panic!("debit refused");
        };
        match outcome {
            "settle" => {
                let answer = Answered {
                    response: "hi",
                    model: "m",
                    usage: Default::default(),
                };
                assert!(store.settle(&charge, "q", answer, None).await.unwrap());
            }
            "refund" => assert!(
                store
                    .refund(&charge, Some("q"), "test", None)
                    .await
                    .unwrap()
            ),
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

    let (code, text) = audit(&table, "nobody");
    assert_eq!(code, 2, "{text}");
}
