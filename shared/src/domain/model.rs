//! Model names, checked before they go into a URL, and the thinking control each
//! model family takes.

use std::fmt;

/// A Gemini model id that is safe to put in `models/{model}:generateContent`.
///
/// Lowercase ASCII letters, digits, `.` and `-`, 1–64 characters, beginning with
/// `gemini-`, and no `..`. Everything that could change the URL's meaning (`/`, `:`,
/// `?`, `#`, `%`, spaces) is refused by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Gemini model name (expected e.g. \"gemini-2.5-flash\")")]
pub struct InvalidModelName(String);

impl ModelName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidModelName> {
        let ok = raw.len() <= Self::MAX_LEN
            && raw.len() > "gemini-".len()
            && raw.starts_with("gemini-")
            && !raw.contains("..")
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            // Bounded, so a hostile value can't flood a log line.
            Err(InvalidModelName(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which thinking control this model takes, judged from its name.
    pub fn thinking_family(&self) -> ThinkingFamily {
        let rest = &self.0["gemini-".len()..];
        let version = rest.split('-').next().unwrap_or("");
        let mut numbers = version.split('.').map(str::parse::<u32>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(major)), _) if major >= 3 => ThinkingFamily::Level,
            (Some(Ok(2)), Some(Ok(5))) => ThinkingFamily::Budget,
            (Some(Ok(_)), _) => ThinkingFamily::None,
            // `gemini-flash-latest`, `gemini-pro-latest`: the alias moves between
            // families. Gemini 3 accepts `thinkingBudget` for backwards compatibility,
            // while a 2.5 model answers `thinkingLevel` with a 400, so the budget is
            // the one control that is safe whichever model the alias names today.
            _ if rest.ends_with("-latest") => ThinkingFamily::Budget,
            _ => ThinkingFamily::None,
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ModelName {
    type Err = InvalidModelName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// How a model's thinking is capped (sending both controls is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingFamily {
    /// Gemini 2.5 and the `*-latest` aliases: `thinkingConfig.thinkingBudget` (tokens).
    Budget,
    /// Gemini 3 and later: `thinkingConfig.thinkingLevel`.
    Level,
    /// Models without thinking (2.0, 1.5, …) or unknown ones: nothing is sent.
    None,
}

/// `thinkingConfig.thinkingLevel` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingLevel {
    Minimal,
    Low,
    Medium,
    High,
}

impl ThinkingLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl std::str::FromStr for ThinkingLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "minimal" => Ok(Self::Minimal),
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            _ => Err("expected one of minimal, low, medium, high".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_model_names_are_accepted() {
        for name in [
            "gemini-flash-latest",
            "gemini-pro-latest",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-3-pro-preview",
            "gemini-3.1-flash",
            "gemini-2.0-flash-001",
        ] {
            assert_eq!(ModelName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn names_that_could_bend_the_url_are_refused() {
        let long = format!("gemini-{}", "a".repeat(60));
        for name in [
            "",
            "gemini-",
            "flash",
            "gpt-4o",
            "Gemini-2.5-flash",
            "gemini-2.5-flash:streamGenerateContent",
            "gemini-../../v1/files",
            "gemini-2.5..flash",
            "gemini-2.5-flash/x",
            "gemini-2.5-flash?key=x",
            "gemini-2.5-flash#x",
            "gemini-2.5 flash",
            "gemini-2.5-flash%2f",
            "gemini-2.5-flash\n",
            "gemini-2.5-flásh",
            long.as_str(),
        ] {
            assert!(ModelName::parse(name).is_err(), "{name:?} was accepted");
        }
    }

    #[test]
    fn thinking_control_follows_the_model_family() {
        let family = |n: &str| ModelName::parse(n).unwrap().thinking_family();
        assert_eq!(family("gemini-2.5-flash"), ThinkingFamily::Budget);
        assert_eq!(family("gemini-2.5-pro"), ThinkingFamily::Budget);
        assert_eq!(family("gemini-3-flash-preview"), ThinkingFamily::Level);
        assert_eq!(family("gemini-3.1-pro"), ThinkingFamily::Level);
        assert_eq!(family("gemini-4-flash"), ThinkingFamily::Level);
        assert_eq!(family("gemini-flash-latest"), ThinkingFamily::Budget);
        assert_eq!(family("gemini-2.0-flash"), ThinkingFamily::None);
        assert_eq!(family("gemini-1.5-pro"), ThinkingFamily::None);
        assert_eq!(family("gemini-embedding-001"), ThinkingFamily::None);
    }
}
