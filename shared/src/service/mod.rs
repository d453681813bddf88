//! The rules: what a chat costs and how its charge ends, with no HTTP in them. The
//! handlers in `api` call these and render what they return.

pub mod accounts;
pub mod charges;
pub mod chat;
pub mod conversations;
pub mod outcome;
pub mod sockets;
