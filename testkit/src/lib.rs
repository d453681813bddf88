//! Test support: a stand-in for the Gemini REST API that runs on loopback.
//!
//! It speaks the documented `v1beta` protocol — `models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, the `x-goog-api-key` header, Google's error JSON —
//! and can be told to fail in each of the ways the real service does.
//!
//! Tables for tests and local runs, created from `template.yaml` ([`table`]), and the
//! demo accounts the sample events in `events/` use ([`demo`]), and a Lambda Runtime API
//! emulator to run the function binaries as processes ([`runtime`]), and a DynamoDB proxy
//! that answers as AWS does under contention ([`faults`]), and a local API Gateway
//! WebSocket API in front of the chat function ([`gateway`]).

pub mod demo;
pub mod emf;
pub mod events;
pub mod faults;
pub mod gateway;
pub mod gemini;
pub mod runtime;
pub mod sse;
pub mod table;

pub use gemini::{Behavior, GeminiStandIn, Pacing};
