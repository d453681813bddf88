//! Tables for tests and local runs, created from the `AWS::DynamoDB::Table` resource in
//! `template.yaml`, so the deployed table and the local ones can't drift apart.

use aws_sdk_dynamodb::{
    Client,
    types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    },
};
use serde_norway::Value;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The repository's `template.yaml`.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

/// What the template says the table looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// (name, type) pairs, e.g. `("pk", "S")`.
    pub attributes: Vec<(String, String)>,
    /// (name, `HASH` or `RANGE`) pairs.
    pub key_schema: Vec<(String, String)>,
    pub billing_mode: String,
    pub ttl_attribute: Option<String>,
    pub indexes: Vec<IndexSpec>,
}

/// A global secondary index of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    /// (name, `HASH` or `RANGE`) pairs.
    pub key_schema: Vec<(String, String)>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    pub non_key_attributes: Vec<String>,
}

impl TableSpec {
    /// Reads the single `AWS::DynamoDB::Table` resource of a SAM/CloudFormation template.
    pub fn from_template(template: &str) -> Result<Self, BoxError> {
        let doc: Value = serde_norway::from_str(template)?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or("template has no Resources")?;
        let mut tables = resources
            .values()
            .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::DynamoDB::Table"));
        let table = tables
            .next()
            .ok_or("template declares no AWS::DynamoDB::Table")?;
        if tables.next().is_some() {
            return Err("template declares more than one table".into());
        }
        let props = table
            .get("Properties")
            .ok_or("the table has no Properties")?;
        let pairs = |list: &str, a: &str, b: &str| pairs_of(props, list, a, b);
        let indexes = match props.get("GlobalSecondaryIndexes") {
            None => Vec::new(),
            Some(list) => list
                .as_sequence()
                .ok_or("GlobalSecondaryIndexes is not a list")?
                .iter()
                .map(|gsi| -> Result<IndexSpec, BoxError> {
                    let projection = gsi.get("Projection");
                    Ok(IndexSpec {
                        name: gsi
                            .get("IndexName")
                            .and_then(Value::as_str)
                            .ok_or("an index has no IndexName")?
                            .to_owned(),
                        key_schema: pairs_of(gsi, "KeySchema", "AttributeName", "KeyType")?,
                        projection: projection
                            .and_then(|p| p.get("ProjectionType"))
                            .and_then(Value::as_str)
                            .unwrap_or("KEYS_ONLY")
                            .to_owned(),
                        non_key_attributes: projection
                            .and_then(|p| p.get("NonKeyAttributes"))
                            .and_then(Value::as_sequence)
                            .map(|l| {
                                l.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let ttl = props.get("TimeToLiveSpecification");
        Ok(Self {
            attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType")?,
            key_schema: pairs("KeySchema", "AttributeName", "KeyType")?,
            billing_mode: props
                .get("BillingMode")
                .and_then(Value::as_str)
                .unwrap_or("PROVISIONED")
                .to_owned(),
            ttl_attribute: ttl
                .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
                .and_then(|t| t.get("AttributeName")?.as_str().map(str::to_owned)),
            indexes,
        })
    }

    /// The spec of this repository's template.
    pub fn ours() -> Self {
        Self::from_template(TEMPLATE).expect("template.yaml declares a readable table")
    }

    /// Creates `name` with this spec and turns TTL on.
    pub async fn create(&self, client: &Client, name: &str) -> Result<(), BoxError> {
        let mut create = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::from(self.billing_mode.as_str()));
        for (attr, kind) in &self.attributes {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::from(kind.as_str()))
                    .build()?,
            );
        }
        for (attr, kind) in &self.key_schema {
            create = create.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr)
                    .key_type(KeyType::from(kind.as_str()))
                    .build()?,
            );
        }
        for index in &self.indexes {
            let mut gsi = GlobalSecondaryIndex::builder().index_name(&index.name);
            for (attr, kind) in &index.key_schema {
                gsi = gsi.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(KeyType::from(kind.as_str()))
                        .build()?,
                );
            }
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(index.projection.as_str()))
                .set_non_key_attributes(
                    (!index.non_key_attributes.is_empty())
                        .then(|| index.non_key_attributes.clone()),
                )
                .build();
            create = create.global_secondary_indexes(gsi.projection(projection).build()?);
        }
        create.send().await.map_err(|e| {
            format!(
                "CreateTable {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
        if let Some(attr) = &self.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "UpdateTimeToLive {name}: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
        }
        Ok(())
    }
}

/// The (a, b) pairs of the list `list` of a template mapping, e.g. a key schema.
fn pairs_of(node: &Value, list: &str, a: &str, b: &str) -> Result<Vec<(String, String)>, BoxError> {
    node.get(list)
        .and_then(Value::as_sequence)
        .ok_or_else(|| format!("no {list} given"))?
        .iter()
        .map(|e| {
            let get = |k| e.get(k).and_then(Value::as_str).map(str::to_owned);
            get(a)
                .zip(get(b))
                .ok_or_else(|| format!("{list} entry lacks {a} or {b}").into())
        })
        .collect()
}

/// A store on a new, empty table named `<prefix>-<uuid>` on DynamoDB Local, for a test.
/// Refuses any endpoint but loopback, so a test can never create tables on AWS.
pub async fn local_store(prefix: &str) -> shared::store::Store {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .expect("these tests need DynamoDB Local: run them with scripts/test");
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "refusing to create test tables at {endpoint}"
    );
    let table = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    // Generous limits: a loaded 2-core test machine is slower than DynamoDB.
    let retry = shared::store::RetryPolicy {
        attempt_timeout: std::time::Duration::from_secs(5),
        budget: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let store = shared::store::Store::connect(&shared::aws::config().await, table.clone(), retry);
    TableSpec::ours()
        .create(store.client(), &table)
        .await
        .expect("create the test table");
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_table_matches_the_keys_the_code_uses() {
        let spec = TableSpec::ours();
        assert_eq!(
            spec.key_schema,
            vec![
                (shared::store::PK.to_owned(), "HASH".to_owned()),
                (shared::store::SK.to_owned(), "RANGE".to_owned())
            ]
        );
        assert_eq!(
            spec.ttl_attribute.as_deref(),
            Some(shared::store::TTL_ATTRIBUTE)
        );
        assert_eq!(spec.billing_mode, "PAY_PER_REQUEST");
        let index = spec
            .indexes
            .iter()
            .find(|i| i.name == shared::store::CONVERSATIONS_INDEX)
            .expect("the conversations index is declared");
        assert_eq!(
            index.key_schema,
            vec![
                ("pk".to_owned(), "HASH".to_owned()),
                ("updated_at".to_owned(), "RANGE".to_owned())
            ]
        );
    }
}
