//! `create-table NAME`: creates NAME from `template.yaml`'s table on the DynamoDB that the
//! AWS environment points at (DynamoDB Local for local runs). An existing table is kept.

use testkit::table::TableSpec;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: create-table TABLE_NAME");
        std::process::exit(2);
    };
    let client = aws_sdk_dynamodb::Client::new(&shared::aws::config().await);
    match client.describe_table().table_name(&name).send().await {
        Ok(_) => eprintln!("table {name} exists; keeping its data"),
        Err(_) => match TableSpec::ours().create(&client, &name).await {
            Ok(()) => eprintln!("created table {name} from template.yaml"),
            Err(e) => {
                eprintln!("create-table: {e}");
                std::process::exit(1);
            }
        },
    }
}
