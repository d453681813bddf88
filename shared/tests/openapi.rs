//! The published contract (`openapi.yaml`) against what is deployed and served: the
//! document `GET /api/openapi.json` returns, the routes `template.yaml` gives API Gateway,
//! the local router in the workspace `Cargo.toml`, and the error codes the service has.
//! (Behaviour against the contract is schemathesis's job, in `scripts/e2e.py`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{event, header, json_of};
use serde_json::Value;

const SPEC: &str = include_str!("../../openapi.yaml");
const TEMPLATE: &str = include_str!("../../template.yaml");
const WORKSPACE: &str = include_str!("../../Cargo.toml");
const MAKEFILE: &str = include_str!("../../Makefile");
const ERRORS: &str = include_str!("../src/error.rs");

fn spec() -> Value {
    serde_norway::from_str(SPEC).expect("openapi.yaml is YAML that maps to JSON")
}

/// The documented paths, less those the contract lists as not served yet.
fn served_spec_paths() -> BTreeSet<String> {
    let spec = spec();
    let pending: BTreeSet<&str> = spec["x-pending-routes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    spec["paths"]
        .as_object()
        .expect("openapi.yaml has paths")
        .keys()
        .filter(|p| !pending.contains(p.as_str()))
        .cloned()
        .collect()
}

/// The form a route is documented in: with a trailing slash, but a file (a name with a
/// dot, the chat page's files under `/assets/`) without, and the root as `/`.
fn documented_form(path: &str) -> String {
    if is_file(path) {
        path.trim_end_matches('/').to_owned()
    } else {
        format!("{}/", path.trim_end_matches('/'))
    }
}

fn is_file(path: &str) -> bool {
    path.starts_with("/assets/")
        || path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.'))
}

/// Every `Api` event in the template: path → the binary of the function it reaches.
fn template_routes() -> BTreeMap<String, String> {
    let doc: serde_norway::Value = serde_norway::from_str(TEMPLATE).expect("template.yaml");
    let mut routes = BTreeMap::new();
    for resource in doc["Resources"].as_mapping().expect("Resources").values() {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        let binary = resource["Metadata"]["Binary"]
            .as_str()
            .expect("a function with API events names its binary");
        for ev in events.values() {
            if ev["Type"].as_str() == Some("Api") {
                let path = ev["Properties"]["Path"]
                    .as_str()
                    .expect("an Api event's Path");
                routes.insert(path.to_owned(), binary.to_owned());
            }
        }
    }
    routes
}

/// `[workspace.metadata.lambda.watch.router]`: path → function, as `scripts/dev` routes.
fn local_routes() -> BTreeMap<String, String> {
    let section = WORKSPACE
        .split("[workspace.metadata.lambda.watch.router]")
        .nth(1)
        .expect("the workspace Cargo.toml has a local router");
    section
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| l.starts_with('"'))
        .map(|l| {
            let (path, function) = l.split_once('=').expect("\"path\" = \"function\"");
            let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
            (unquote(path), unquote(function))
        })
        .collect()
}

#[tokio::test]
async fn the_served_contract_is_openapi_yaml_as_json() {
    let app = common::app().await;
    for path in ["/api/openapi.json", "/api/openapi.json/"] {
        let resp = shared::api::tokens_function(&app, event("GET", path, None, None))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "content-type"), Some("application/json"));
        let served = json_of(&resp);
        assert_eq!(served, spec(), "{path} serves openapi.yaml");
        assert!(served["openapi"].as_str().unwrap().starts_with("3.1."));
    }
    // The balance still answers beside it, on the same function.
    let resp = shared::api::tokens_function(&app, event("GET", "/api/tokens/", None, None))
        .await
        .unwrap();
    assert_eq!(json_of(&resp)["code"], "not_authenticated");
}

#[tokio::test]
async fn the_contract_is_read_only() {
    let app = common::app().await;
    let req = event("POST", "/api/openapi.json", None, Some("{}"));
    let resp = shared::api::tokens_function(&app, req).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), Some("GET"));
    assert_eq!(json_of(&resp)["code"], "method_not_allowed");
}

#[test]
fn every_deployed_route_is_documented_and_every_documented_route_is_deployed() {
    let deployed: BTreeSet<String> = template_routes()
        .keys()
        .map(|p| documented_form(p))
        .collect();
    assert_eq!(
        deployed,
        served_spec_paths(),
        "template.yaml's API routes (left) and openapi.yaml's paths (right) differ"
    );
}

#[test]
fn every_api_route_is_deployed_with_and_without_its_trailing_slash() {
    let routes = template_routes();
    // The root has no slashless twin, and the page's assets are files.
    for path in routes
        .keys()
        .filter(|p| *p != "/" && !p.starts_with("/assets/"))
    {
        let bare = path.trim_end_matches('/');
        let twin = if path.ends_with('/') {
            bare.to_owned()
        } else {
            format!("{bare}/")
        };
        assert_eq!(
            routes.get(&twin),
            routes.get(path),
            "{path} and {twin} must reach the same function"
        );
    }
}

#[test]
fn the_local_router_sends_every_route_to_the_function_api_gateway_does() {
    assert_eq!(local_routes(), template_routes());
}

#[test]
fn every_error_code_the_service_has_is_in_the_contract() {
    // The codes are the snake_case string literals `ApiError::code` and `Throttle::code`
    // return (`Variant => "code"`).
    let service: BTreeSet<&str> = ERRORS
        .lines()
        .filter_map(|l| l.split_once("=> \"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(code, _)| code))
        .filter(|code| code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert!(service.len() >= 20, "found only {service:?} in error.rs");

    let mut documented = BTreeSet::new();
    collect_codes(&spec()["components"], &mut documented);
    let missing: Vec<_> = service
        .iter()
        .filter(|c| !documented.contains(**c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a response in openapi.yaml: {missing:?}"
    );
}

/// Every value a `code` property is pinned to (`const` or `enum`), anywhere below `node`.
fn collect_codes(node: &Value, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(code) = map.get("properties").and_then(|p| p.get("code")) {
                let pinned = code.get("const").into_iter().chain(
                    code.get("enum")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                );
                out.extend(pinned.filter_map(Value::as_str).map(str::to_owned));
            }
            map.values().for_each(|v| collect_codes(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_codes(v, out)),
        _ => {}
    }
}

/// `sam build` runs the Makefile's `build-<logical id>` target for each function: every
/// function has one, it builds the binary the template names (the one the routes above
/// are checked against), and for the architecture the template deploys.
#[test]
fn the_makefile_builds_each_function_as_the_template_names_it() {
    let doc: serde_norway::Value = serde_norway::from_str(TEMPLATE).expect("template.yaml");
    assert_eq!(
        doc["Globals"]["Function"]["Architectures"][0].as_str(),
        Some("arm64")
    );
    assert!(MAKEFILE.contains("TARGET := aarch64-unknown-linux-musl\n"));
    let mut built = BTreeSet::new();
    for (id, resource) in doc["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().expect("a logical id");
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("makefile")
        );
        let binary = resource["Metadata"]["Binary"]
            .as_str()
            .expect("a function names its binary");
        let rule = format!("build-{id}:\n\t$(call function,{binary})\n");
        assert!(MAKEFILE.contains(&rule), "the Makefile has no `{rule}`");
        built.insert(binary.to_owned());
    }
    assert_eq!(
        built,
        BTreeSet::from(["chat", "login", "register", "tokens"].map(String::from))
    );
}
