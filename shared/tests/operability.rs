//! The operator's contract: the alarms and the dashboard in `template.yaml` watch metrics
//! the code really records, and the operations guide lists exactly the metrics there are.

use std::collections::BTreeSet;

use serde_norway::Value;
use shared::telemetry::metrics::Metric;

const TEMPLATE: &str = include_str!("../../template.yaml");
const OPERATIONS: &str = include_str!("../../docs/operations.md");
const FUNCTIONS: [&str; 4] = ["register", "login", "chat", "tokens"];

fn template() -> Value {
    serde_norway::from_str(TEMPLATE).expect("template.yaml")
}

/// The names between `MetricName=\"` and `\"` in a metric-math expression.
fn names_in_expression(expr: &str) -> Vec<String> {
    expr.split("MetricName=\\\"")
        .skip(1)
        .chain(expr.split("MetricName=\"").skip(1))
        .filter_map(|rest| rest.split(['\\', '"']).next())
        .map(str::to_owned)
        .collect()
}

/// A scalar, or the string inside `!Sub`.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Tagged(tagged) => text(&tagged.value),
        Value::Sequence(seq) => seq.first().and_then(text),
        _ => None,
    }
}

fn is_ref_to(value: &Value, parameter: &str) -> bool {
    matches!(value, Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some(parameter))
}

/// Every metric of the functions' own namespace a piece of the template names.
fn own_metrics_named(resource: &Value) -> Vec<String> {
    let props = &resource["Properties"];
    let mut names = Vec::new();
    if is_ref_to(&props["Namespace"], "MetricsNamespace") {
        names.push(props["MetricName"].as_str().expect("MetricName").to_owned());
    }
    for query in props["Metrics"].as_sequence().into_iter().flatten() {
        let metric = &query["MetricStat"]["Metric"];
        if is_ref_to(&metric["Namespace"], "MetricsNamespace") {
            names.push(
                metric["MetricName"]
                    .as_str()
                    .expect("MetricName")
                    .to_owned(),
            );
        }
        if let Some(expr) = text(&query["Expression"]) {
            names.extend(names_in_expression(&expr));
        }
    }
    names
}

fn alarms(doc: &Value) -> Vec<(String, Value)> {
    doc["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(name, r)| (name.as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// The metrics the library records somewhere (a `Metric::Name` outside its definition).
fn recorded() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("telemetry/metrics.rs")
            {
                let source = std::fs::read_to_string(&path).unwrap();
                for rest in source.split("Metric::").skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    if Metric::ALL.iter().any(|m| m.name() == name) {
                        found.insert(name);
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    found
}

#[test]
fn every_metric_is_recorded_somewhere() {
    let all: BTreeSet<String> = Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
    assert_eq!(
        recorded(),
        all,
        "metrics defined (right) but never recorded"
    );
}

#[test]
fn every_alarm_watches_a_metric_the_code_records_and_has_a_tunable_threshold() {
    let doc = template();
    let recorded = recorded();
    let parameters = doc["Parameters"].as_mapping().expect("Parameters");
    let alarms = alarms(&doc);
    assert!(!alarms.is_empty());
    for (name, alarm) in &alarms {
        for metric in own_metrics_named(alarm) {
            assert!(
                recorded.contains(&metric),
                "{name} watches {metric}, which nothing records"
            );
        }
        let threshold = &alarm["Properties"]["Threshold"];
        let Value::Tagged(t) = threshold else {
            panic!("{name}: the threshold is not a parameter");
        };
        let parameter = t.value.as_str().unwrap();
        assert!(
            parameters
                .get(parameter)
                .is_some_and(|p| p.get("Default").is_some()),
            "{name}: threshold parameter {parameter} has no default"
        );
        let actions = alarm["Properties"]["AlarmActions"].as_sequence();
        assert!(
            actions.is_some_and(|a| a.iter().any(|v| is_ref_to(v, "AlarmTopic"))),
            "{name} notifies nobody"
        );
    }
}

#[test]
fn the_promised_alarms_are_all_there() {
    let doc = template();
    let alarms = alarms(&doc);
    let watches = |namespace: &str, metric: &str| -> Vec<&Value> {
        alarms
            .iter()
            .map(|(_, a)| a)
            .filter(|a| {
                let props = &a["Properties"];
                let direct = props["Namespace"].as_str() == Some(namespace)
                    && props["MetricName"].as_str() == Some(metric);
                let queried = props["Metrics"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|q| {
                        q["MetricStat"]["Metric"]["Namespace"].as_str() == Some(namespace)
                            && q["MetricStat"]["Metric"]["MetricName"].as_str() == Some(metric)
                    });
                let own = namespace == "own" && own_metrics_named(a).iter().any(|m| m == metric);
                direct || queried || own
            })
            .collect()
    };
    assert_eq!(
        watches("AWS/ApiGateway", "5XXError").len(),
        1,
        "API 5xx rate"
    );
    for metric in ["Errors", "Throttles"] {
        let functions: BTreeSet<String> = watches("AWS/Lambda", metric)
            .iter()
            .map(|a| {
                let dims = &a["Properties"]["Dimensions"][0]["Value"];
                match dims {
                    Value::Tagged(t) => t.value.as_str().unwrap().to_owned(),
                    _ => panic!("FunctionName is not a !Ref"),
                }
            })
            .collect();
        let expected: BTreeSet<String> = FUNCTIONS
            .iter()
            .map(|f| format!("{}{}Function", f[..1].to_uppercase(), &f[1..]))
            .collect();
        assert_eq!(functions, expected, "Lambda {metric} per function");
    }
    assert!(
        !watches("AWS/DynamoDB", "WriteThrottleEvents").is_empty(),
        "table throttling"
    );
    for metric in [
        "ChatsFailed",
        "CreditsRefunded",
        "GeminiLatency",
        "StoreFailures",
        "LoginsThrottled",
    ] {
        assert!(!watches("own", metric).is_empty(), "an alarm on {metric}");
    }
}

#[test]
fn the_dashboard_shows_metrics_the_code_records() {
    let doc = template();
    let body = text(&doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
        .expect("a dashboard body");
    let recorded = recorded();
    let mut shown: Vec<String> = names_in_expression(&body);
    shown.extend(
        body.split("[\"${Ns}\", \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned),
    );
    assert!(
        shown.len() >= 10,
        "the dashboard shows too little: {shown:?}"
    );
    for metric in shown {
        assert!(
            recorded.contains(&metric),
            "the dashboard shows {metric}, which nothing records"
        );
    }
    for headline in [
        "ChatsAnswered",
        "CreditsCharged",
        "GeminiLatency",
        "ChatsFailed",
        "PromptTokens",
    ] {
        assert!(body.contains(headline), "the dashboard lacks {headline}");
    }
}

#[test]
fn the_operations_guide_lists_exactly_the_metrics_there_are() {
    let section = OPERATIONS
        .split("<!-- metrics -->")
        .nth(1)
        .expect("docs/operations.md marks its metrics table with <!-- metrics -->");
    let listed: BTreeSet<String> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let all: BTreeSet<String> = Metric::ALL.iter().map(|m| m.name().to_owned()).collect();
    assert_eq!(
        listed, all,
        "docs/operations.md (left) and the code (right) differ"
    );
}
