//! `GET /api/openapi.json`: the API's contract, `openapi.yaml` at the repository root,
//! embedded at build time and served as JSON. The YAML is converted once per process, on
//! the first request for it, so the tokens function's cold start doesn't pay for it.

use std::sync::OnceLock;

use lambda_http::{
    Body, Request, Response,
    http::{Method, StatusCode},
};

use crate::{ApiError, http};

/// The contract as written.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");

pub async fn handle(req: Request) -> Response<Body> {
    http::respond(openapi(&req))
}

fn openapi(req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    Ok(http::json_text(StatusCode::OK, document()?.to_owned()))
}

/// The contract as JSON. A YAML error is a build mistake (a test reads the same file),
/// but it is still an answer, never a panic.
pub fn document() -> Result<&'static str, ApiError> {
    static JSON: OnceLock<Result<String, String>> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_norway::from_str::<serde_json::Value>(OPENAPI_YAML)
            .map_err(|e| e.to_string())
            .and_then(|doc| serde_json::to_string(&doc).map_err(|e| e.to_string()))
    })
    .as_deref()
    .map_err(|e| ApiError::internal(format!("openapi.yaml does not convert to JSON: {e}")))
}
