//! `GET /api/openapi.json`: the API's contract, `openapi.yaml` at the repository root,
//! converted to JSON at build time (`build.rs`) and embedded.

use lambda_http::{
    Body, Request, Response,
    http::{Method, StatusCode},
};

use crate::{ApiError, http};

/// The contract as JSON.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub async fn handle(req: Request) -> Response<Body> {
    http::respond(openapi(&req))
}

fn openapi(req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    Ok(http::json_text(StatusCode::OK, OPENAPI_JSON.to_owned()))
}
