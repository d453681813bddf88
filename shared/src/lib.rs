//! Everything the four functions share: domain rules, DynamoDB access, the Gemini
//! client, authentication, configuration and the one error type with its HTTP mapping.
//!
//! Each function's `main.rs` builds an [`App`] (or [`ChatApp`]) once per cold start
//! and hands every request to its handler in [`api`].

pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod config;
pub mod connections;
pub mod cors;
pub mod domain;
pub mod error;
pub mod gemini;
pub mod http;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use api::{App, ChatApp};
pub use config::Config;
pub use error::ApiError;
