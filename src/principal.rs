//! Principals: who is calling. Over HTTP every request is made by the principal its bearer token
//! names (the HTTP layer puts a [`Principal`] into the request's extensions); over stdio there
//! is one caller and no principal. A principal's name is also the name of its storage subfolder
//! and part of its environment volumes' names, so it is validated like a folder name.

use std::fmt;

use crate::error::ConfigError;

/// The principal of `AUTH_TOKEN` (a single token).
pub const DEFAULT_PRINCIPAL: &str = "default";
/// Longest principal name.
pub const MAX_PRINCIPAL_LEN: usize = 64;

/// A validated principal name: 1–64 ASCII letters, digits, `_`, `-` or `.`, starting with a
/// letter or digit (so never `.`, `..` or a hidden folder).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

impl Principal {
    /// Validates `name`; `setting` names where it came from, for the error.
    pub fn new(setting: &'static str, name: &str) -> Result<Self, ConfigError> {
        let ok_start = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok_start && ok_chars && name.len() <= MAX_PRINCIPAL_LEN {
            Ok(Principal(name.to_string()))
        } else {
            Err(ConfigError::InvalidSetting {
                setting,
                value: name.to_string(),
                reason: format!(
                    "a principal is 1-{MAX_PRINCIPAL_LEN} letters, digits, '_', '-' or '.', \
                     starting with a letter or digit"
                ),
            })
        }
    }

    /// The principal of `AUTH_TOKEN`.
    pub fn default_principal() -> Self {
        Principal(DEFAULT_PRINCIPAL.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_folder_safe() {
        for good in ["default", "ci", "team-a", "a.b_c", "X1"] {
            assert_eq!(Principal::new("T", good).unwrap().as_str(), good);
        }
        let long = "a".repeat(MAX_PRINCIPAL_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "-x",
            "é",
            long.as_str(),
        ] {
            let err = Principal::new("AUTH_TOKENS_FILE", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("AUTH_TOKENS_FILE"), "{bad}: {err}");
        }
    }
}
