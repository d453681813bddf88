//! `GET /api/models/` → `{"models": [{"id", "cost", "default"}]}`: the models a chat
//! may ask for and their prices. No authentication; served by the read-only `tokens`
//! function from its configuration, with no I/O.

use lambda_http::{
    Body, Request, Response,
    http::{Method, StatusCode},
};
use serde_json::json;

use crate::{ApiError, App, http};

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    http::respond(models(app, &req))
}

fn models(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    http::require_method(req, Method::GET)?;
    let catalogue = &app.config.models;
    let default = &catalogue.default_model().id;
    let models: Vec<_> = catalogue
        .models()
        .iter()
        .map(|m| json!({"id": m.id, "cost": m.cost, "default": &m.id == default}))
        .collect();
    Ok(http::json(StatusCode::OK, &json!({ "models": models })))
}
