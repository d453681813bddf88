//! A checker for CloudWatch Embedded Metric Format lines, after the specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>):
//! what CloudWatch Logs would accept and extract, so tests can read a function's output
//! and know its metrics reach CloudWatch.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The units CloudWatch accepts.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric of a checked document.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfMetric {
    pub namespace: String,
    pub unit: Option<String>,
    pub values: Vec<f64>,
    /// Each dimension set it is published under, with the dimensions' values.
    pub dimension_sets: Vec<Vec<(String, String)>>,
}

impl EmfMetric {
    /// The sum of its values (a count's total).
    pub fn total(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// A checked EMF document: its metrics by name.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfDocument {
    pub timestamp: u64,
    pub metrics: BTreeMap<String, EmfMetric>,
    /// The document's top-level members that are not metrics or `_aws`.
    pub properties: Map<String, Value>,
}

/// Parses `line` and checks it against the specification.
pub fn parse(line: &str) -> Result<EmfDocument, String> {
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let doc = doc.as_object().ok_or("the root is not an object")?;
    let aws = doc
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    let timestamp = aws
        .get("Timestamp")
        .and_then(Value::as_u64)
        .ok_or("_aws.Timestamp is not a whole number of epoch milliseconds")?;
    // Within two weeks back and two hours ahead of now, or CloudWatch drops it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    if timestamp + 14 * 86_400_000 < now || timestamp > now + 2 * 3_600_000 {
        return Err(format!("_aws.Timestamp {timestamp} is too far from now"));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics is not an array")?;
    if directives.is_empty() {
        return Err("_aws.CloudWatchMetrics is empty".into());
    }
    let mut metrics = BTreeMap::new();
    for directive in directives {
        let directive = directive
            .as_object()
            .ok_or("a directive is not an object")?;
        let namespace = directive
            .get("Namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty() && n.len() <= 255)
            .ok_or("a directive's Namespace is missing, blank or too long")?;
        let sets = directive
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("a directive's Dimensions is not an array")?;
        let mut dimension_sets = Vec::new();
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > 30 {
                return Err("a dimension set has more than 30 dimensions".into());
            }
            let mut resolved = Vec::new();
            for name in set {
                let name = name.as_str().ok_or("a dimension name is not a string")?;
                let value = doc.get(name).and_then(Value::as_str).ok_or(format!(
                    "dimension {name} has no string value in the document"
                ))?;
                resolved.push((name.to_owned(), value.to_owned()));
            }
            dimension_sets.push(resolved);
        }
        let defs = directive
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("a directive's Metrics is not an array")?;
        if defs.len() > 100 {
            return Err("a directive has more than 100 metrics".into());
        }
        for def in defs {
            let def = def
                .as_object()
                .ok_or("a metric definition is not an object")?;
            let name = def
                .get("Name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty() && n.len() <= 255)
                .ok_or("a metric definition's Name is missing or too long")?;
            let unit = match def.get("Unit") {
                None => None,
                Some(Value::String(u)) if UNITS.contains(&u.as_str()) => Some(u.clone()),
                Some(other) => return Err(format!("metric {name}: unit {other} is not valid")),
            };
            if let Some(res) = def.get("StorageResolution")
                && res != 1
                && res != 60
            {
                return Err(format!("metric {name}: StorageResolution {res}"));
            }
            let values = match doc.get(name) {
                Some(Value::Number(n)) => vec![n.as_f64().ok_or("not a finite number")?],
                Some(Value::Array(values)) if !values.is_empty() && values.len() <= 100 => values
                    .iter()
                    .map(|v| {
                        v.as_f64()
                            .ok_or(format!("metric {name}: a value is not a number"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(format!(
                        "metric {name} has no value (a number or 1-100 numbers)"
                    ));
                }
            };
            if metrics.contains_key(name) {
                return Err(format!("metric {name} is defined twice"));
            }
            metrics.insert(
                name.to_owned(),
                EmfMetric {
                    namespace: namespace.to_owned(),
                    unit,
                    values,
                    dimension_sets: dimension_sets.clone(),
                },
            );
        }
    }
    let properties = doc
        .iter()
        .filter(|(k, _)| *k != "_aws" && !metrics.contains_key(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(EmfDocument {
        timestamp,
        metrics,
        properties,
    })
}

/// The EMF documents among a process's output lines (those with an `_aws` member), each
/// checked; any line that looks like one but breaks the specification is an error.
pub fn documents(output: &str) -> Result<Vec<EmfDocument>, String> {
    output
        .lines()
        .filter(|line| line.trim_start().starts_with('{') && line.contains("\"_aws\""))
        .map(|line| parse(line).map_err(|e| format!("{e}: {line}")))
        .collect()
}
