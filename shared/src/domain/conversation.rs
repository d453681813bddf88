//! Conversations and models: ids, titles and the priced model catalogue.

use std::fmt;

use super::Invalid;

/// A conversation's id: a UUID (v7 when we make one, so ids sort by creation time),
/// always in its lowercase hyphenated form so that one conversation has one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(String);

impl ConversationId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    /// Any UUID, in any case; anything else is refused before any I/O.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match uuid::Uuid::try_parse(raw.trim()) {
            Ok(id) if raw.trim().len() == 36 => Ok(Self(id.hyphenated().to_string())),
            _ => Err(Invalid::field(
                "conversation_id",
                "conversation_id must be a conversation's id (a UUID).",
            )),
        }
    }

    /// An id read back from the store, which only ever holds parsed ids.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ConversationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation's title: 1 to 200 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 200;
    /// How much of the first message a default title keeps.
    pub const DEFAULT_CHARS: usize = 60;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let len = trimmed.chars().count();
        if len == 0 || len > Self::MAX_CHARS {
            return Err(Invalid::field(
                "title",
                format!("title must be 1 to {} characters long.", Self::MAX_CHARS),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The start of the first message: whitespace folded, at most
    /// [`Title::DEFAULT_CHARS`] characters, cut on a word boundary when there is one.
    pub fn from_message(message: &str) -> Self {
        let folded = message.split_whitespace().collect::<Vec<_>>().join(" ");
        if folded.chars().count() <= Self::DEFAULT_CHARS {
            return Self(folded);
        }
        let head: String = folded.chars().take(Self::DEFAULT_CHARS).collect();
        let cut = match head.rfind(' ') {
            Some(space) if space > 0 => &head[..space],
            _ => head.as_str(),
        };
        Self(format!("{}…", cut.trim_end()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A model users may choose, with its price in credits per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub cost: u64,
}

/// The models on offer, one of them the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCatalogue {
    models: Vec<Model>,
    default: usize,
}

impl ModelCatalogue {
    /// Parses `id=cost,id=cost,…` and names the default. Refuses an empty list, a price
    /// below 1, a name given twice, and a default not on the list.
    pub fn parse(spec: &str, default: &str) -> Result<Self, String> {
        let mut models: Vec<Model> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, cost) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {entry:?} is not model=cost"))?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(format!("model name {id:?} is not a Gemini model name"));
            }
            let cost: u64 = cost
                .trim()
                .parse()
                .map_err(|_| format!("the price of {id} is not a whole number"))?;
            if cost == 0 {
                return Err(format!("the price of {id} must be at least 1"));
            }
            if models.iter().any(|m| m.id == id) {
                return Err(format!("{id} is listed twice"));
            }
            models.push(Model {
                id: id.to_owned(),
                cost,
            });
        }
        if models.is_empty() {
            return Err("must list at least one model".into());
        }
        let default = models
            .iter()
            .position(|m| m.id == default.trim())
            .ok_or_else(|| format!("the default model {default:?} is not on the list"))?;
        Ok(Self { models, default })
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn default_model(&self) -> &Model {
        &self.models[self.default]
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The model a request names, or the default; an unknown name is a 400 that lists
    /// the allowed ones.
    pub fn choose(&self, requested: Option<&str>) -> Result<&Model, Invalid> {
        let Some(requested) = requested else {
            return Ok(self.default_model());
        };
        self.get(requested).ok_or_else(|| {
            let allowed: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            Invalid::field(
                "model",
                format!("model must be one of: {}.", allowed.join(", ")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_uuids_in_one_form() {
        let id = ConversationId::parse("0192F3A4-5B6C-7D8E-9FA0-B1C2D3E4F5A6").unwrap();
        assert_eq!(id.as_str(), "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6");
        for bad in [
            "",
            "abc",
            "0192f3a45b6c7d8e9fa0b1c2d3e4f5a6",
            "../x",
            "USER#x",
        ] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            Title::parse("  Trip plans ").unwrap().as_str(),
            "Trip plans"
        );
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse(&"x".repeat(201)).is_err());
        assert!(Title::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn default_titles_are_the_start_of_the_message_cut_on_a_word() {
        assert_eq!(
            Title::from_message("What is\n the capital?").as_str(),
            "What is the capital?"
        );
        let long = "Tell me everything about the history of the Roman Empire from its founding to its fall";
        let title = Title::from_message(long);
        assert_eq!(
            title.as_str(),
            "Tell me everything about the history of the Roman Empire…"
        );
        assert!(title.as_str().chars().count() <= Title::DEFAULT_CHARS + 1);
        let unbroken = "x".repeat(100);
        assert_eq!(Title::from_message(&unbroken).as_str().chars().count(), 61);
    }

    #[test]
    fn the_catalogue_is_checked_and_chooses_by_name() {
        let c = ModelCatalogue::parse(
            "gemini-flash-latest=100, gemini-flash-lite-latest=40",
            "gemini-flash-latest",
        )
        .unwrap();
        assert_eq!(c.default_model().cost, 100);
        assert_eq!(c.choose(None).unwrap().id, "gemini-flash-latest");
        assert_eq!(c.choose(Some("gemini-flash-lite-latest")).unwrap().cost, 40);
        let err = c.choose(Some("gpt-5")).unwrap_err();
        assert!(
            err.to_string().contains("gemini-flash-lite-latest"),
            "{err}"
        );
        for (spec, default) in [
            ("", "a"),
            ("a=0", "a"),
            ("a=1,a=2", "a"),
            ("a=1", "b"),
            ("a", "a"),
            ("a/b=1", "a/b"),
        ] {
            assert!(
                ModelCatalogue::parse(spec, default).is_err(),
                "{spec:?} was accepted"
            );
        }
    }
}
