//! The metrics record of one invocation, as CloudWatch would read its EMF line.

use std::time::Duration;

use shared::telemetry::metrics::{self, Metric, Record};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn emitted(record: &Record) -> testkit::emf::EmfDocument {
    let doc = record.document(now_ms()).expect("a document");
    testkit::emf::parse(&doc.to_string()).expect("valid EMF")
}

#[tokio::test]
async fn a_chats_facts_become_one_valid_emf_document_split_by_model() {
    let record = Record::new("ChatBackend", "chat");
    metrics::scope(record.clone(), async {
        metrics::count_by(Metric::ChatsAnswered, "gemini-flash-latest", 1);
        metrics::count_by(Metric::CreditsCharged, "gemini-flash-latest", 100);
        metrics::time(
            Metric::GeminiLatency,
            Some("gemini-flash-latest"),
            Duration::from_millis(812),
        );
        metrics::count(Metric::StoreRetries, 2);
        metrics::count(Metric::StoreRetries, 1);
    })
    .await;
    let doc = emitted(&record);
    assert_eq!(doc.metrics["ChatsAnswered"].total(), 1.0);
    assert_eq!(doc.metrics["CreditsCharged"].total(), 100.0);
    assert_eq!(doc.metrics["GeminiLatency"].values, vec![812.0]);
    assert_eq!(
        doc.metrics["GeminiLatency"].unit.as_deref(),
        Some("Milliseconds")
    );
    assert_eq!(doc.metrics["StoreRetries"].total(), 3.0);
    let by_model = vec![
        vec![("Function".to_owned(), "chat".to_owned())],
        vec![
            ("Function".to_owned(), "chat".to_owned()),
            ("Model".to_owned(), "gemini-flash-latest".to_owned()),
        ],
    ];
    assert_eq!(doc.metrics["CreditsCharged"].dimension_sets, by_model);
    assert_eq!(
        doc.metrics["StoreRetries"].dimension_sets,
        vec![vec![("Function".to_owned(), "chat".to_owned())]]
    );
    assert!(doc.metrics.values().all(|m| m.namespace == "ChatBackend"));
    // Never a user, a message or anything else beside the dimensions.
    let mut members: Vec<_> = doc.properties.keys().cloned().collect();
    members.sort();
    assert_eq!(members, ["Function", "Model"]);
}

#[tokio::test]
async fn a_second_value_of_a_dimension_is_published_under_the_function_only() {
    let record = Record::new("ChatBackend", "chat");
    metrics::scope(record.clone(), async {
        metrics::count_by(Metric::CreditsRefunded, "gemini-flash-latest", 100);
        metrics::count_by(Metric::CreditsRefunded, "gemini-flash-lite-latest", 40);
        metrics::count_by(Metric::ChatsAnswered, "gemini-flash-lite-latest", 1);
    })
    .await;
    let doc = emitted(&record);
    assert_eq!(doc.metrics["CreditsRefunded"].total(), 140.0);
    assert_eq!(doc.metrics["CreditsRefunded"].dimension_sets.len(), 1);
    assert_eq!(
        doc.metrics["ChatsAnswered"].dimension_sets[1][1],
        ("Model".to_owned(), "gemini-flash-lite-latest".to_owned())
    );
}

#[tokio::test]
async fn durations_keep_each_value_up_to_emfs_hundred() {
    let record = Record::new("ChatBackend", "chat");
    metrics::scope(record.clone(), async {
        for ms in 0..150 {
            metrics::time(Metric::FirstChunkLatency, None, Duration::from_millis(ms));
        }
    })
    .await;
    let doc = emitted(&record);
    assert_eq!(doc.metrics["FirstChunkLatency"].values.len(), 100);
}

#[tokio::test]
async fn nothing_recorded_writes_nothing_and_outside_an_invocation_nothing_is_recorded() {
    let record = Record::new("ChatBackend", "tokens");
    assert!(record.document(now_ms()).is_none());
    metrics::count(Metric::ChatsAnswered, 1); // no invocation: dropped, no panic
    assert!(metrics::current().is_none());
}

#[tokio::test]
async fn a_task_that_outlives_the_handler_records_into_the_same_line() {
    let record = Record::new("ChatBackend", "chat");
    let current = metrics::scope(record.clone(), async { metrics::current() })
        .await
        .expect("inside an invocation");
    tokio::spawn(metrics::scope(current, async {
        metrics::count_by(Metric::ChatsStreamed, "gemini-flash-latest", 1);
    }))
    .await
    .unwrap();
    assert_eq!(record.total(Metric::ChatsStreamed), 1.0);
}

#[test]
fn every_metric_has_a_unique_name() {
    let mut names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Metric::ALL.len());
}
