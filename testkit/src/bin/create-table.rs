//! `create-table NAME`: creates NAME from `template.yaml`'s table on the DynamoDB that the
//! AWS environment points at (DynamoDB Local for local runs), keeping an existing one,
//! and seeds the demo accounts the sample events in `events/` use.

use shared::store::Store;
use testkit::{demo, table::TableSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: create-table TABLE_NAME");
        std::process::exit(2);
    };
    if let Err(e) = run(&name).await {
        eprintln!("create-table: {e}");
        std::process::exit(1);
    }
}

async fn run(name: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let retry = shared::store::RetryPolicy {
        attempt_timeout: std::time::Duration::from_secs(10),
        budget: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let store = Store::connect(&shared::aws::config().await, name, retry);
    let client = store.client();
    if client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .is_ok()
    {
        eprintln!("table {name} exists; keeping its data");
    } else {
        TableSpec::ours().create(client, name).await?;
        eprintln!("created table {name} from template.yaml");
    }
    let config = shared::Config::from_env().ok();
    let start_tokens = config.map_or(4000, |c| c.start_tokens);
    demo::seed(&store, start_tokens).await?;
    eprintln!(
        "demo users: {} / {} (token in events/chat.json) and {} ({} credits)",
        demo::DEMO_USER,
        demo::DEMO_PASSWORD,
        demo::BROKE_USER,
        demo::BROKE_TOKENS
    );
    Ok(())
}
