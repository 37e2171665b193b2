//! Which tasks a handler takes: the `match` rule of a `[[handlers]]` entry (or of an in-process
//! handler) and its title glob.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TaskDocument;

/// Conditions on task fields; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchRule {
    /// Glob on the task title (`*` any run of characters, `?` one character), case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Task priorities accepted (`low`, `medium`, `high`, `urgent`); empty accepts all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub priority: Vec<String>,
    /// A key that must be present in the run's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_key: Option<String>,
}

impl MatchRule {
    /// Whether a task satisfies every given condition.
    pub fn accepts(&self, document: &TaskDocument) -> bool {
        if let Some(pattern) = &self.title
            && !glob_matches(&pattern.to_lowercase(), &document.title.to_lowercase())
        {
            return false;
        }
        if !self.priority.is_empty() {
            let priority = document
                .claim
                .task
                .priority
                .as_ref()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "medium".to_string());
            if !self
                .priority
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&priority))
            {
                return false;
            }
        }
        if let Some(key) = &self.metadata_key {
            let in_run = document
                .claim
                .run
                .metadata
                .as_ref()
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key(key));
            let in_task = document
                .claim
                .task
                .extra
                .get("metadata")
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key(key));
            if !in_run && !in_task {
                return false;
            }
        }
        true
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else literally.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last star swallow one more character and try again.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_matches("deploy *", "deploy web"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a?c", "abc"));
        assert!(glob_matches("*fix*bug*", "please fix this bug now"));
        assert!(!glob_matches("deploy *", "redeploy web"));
        assert!(!glob_matches("a?c", "ac"));
    }
}
