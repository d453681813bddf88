//! Reading Server-Sent Events as a client does, piece by piece as they arrive.

use serde_json::Value;

/// Collects `event:`/`data:` blocks from body pieces that may split them anywhere.
#[derive(Debug, Default)]
pub struct SseReader {
    pending: String,
}

impl SseReader {
    /// Adds a piece of the body; returns the events it completed, as `(name, data)`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, Value)> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let data = serde_json::from_str(&field("data:")).expect("event data is JSON");
            events.push((field("event:"), data));
        }
        events
    }
}
