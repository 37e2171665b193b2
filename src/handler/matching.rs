//! Which tasks a handler takes: the `match` rule of a `[[handlers]]` entry (or of an in-process
//! handler) and its title glob.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TaskDocument;

/// Conditions on task fields; all given conditions must hold.
///
/// Metadata comes from two places, and a rule may name either or both: the run's metadata (what
/// the run was enqueued with, in the claim) and the task's own metadata (given when the task was
/// created, read from the task view after the claim). When the task view could not be read, a
/// `task_metadata_key` condition does not hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchRule {
    /// Glob on the task title (`*` any run of characters, `?` one character), case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Task priorities accepted (`low`, `medium`, `high`, `urgent`); empty accepts all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub priority: Vec<String>,
    /// A key that must be present in the run's metadata or in the task's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_key: Option<String>,
    /// A key that must be present in the run's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_metadata_key: Option<String>,
    /// A key that must be present in the task's own metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_metadata_key: Option<String>,
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
        let in_run = |key: &str| has_key(document.run_metadata.as_ref(), key);
        let in_task = |key: &str| has_key(document.task_metadata.as_ref(), key);
        if let Some(key) = &self.metadata_key
            && !in_run(key)
            && !in_task(key)
        {
            return false;
        }
        if let Some(key) = &self.run_metadata_key
            && !in_run(key)
        {
            return false;
        }
        if let Some(key) = &self.task_metadata_key
            && !in_task(key)
        {
            return false;
        }
        true
    }
}

fn has_key(metadata: Option<&Value>, key: &str) -> bool {
    metadata
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(key))
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

    fn document(run: Option<Value>, task: Option<Value>) -> TaskDocument {
        let mut document = TaskDocument::new(Default::default(), None, None);
        document.run_metadata = run;
        document.task_metadata = task;
        document
    }

    #[test]
    fn metadata_keys_are_looked_up_in_the_run_the_task_or_either() {
        let run_only = document(Some(serde_json::json!({"lane": 1})), None);
        let task_only = document(None, Some(serde_json::json!({"lane": 1})));
        let rule = |metadata, run, task| MatchRule {
            metadata_key: metadata,
            run_metadata_key: run,
            task_metadata_key: task,
            ..Default::default()
        };
        let lane = || Some("lane".to_string());
        let either = rule(lane(), None, None);
        assert!(either.accepts(&run_only) && either.accepts(&task_only));
        let run = rule(None, lane(), None);
        assert!(run.accepts(&run_only) && !run.accepts(&task_only));
        let task = rule(None, None, lane());
        assert!(!task.accepts(&run_only) && task.accepts(&task_only));
        assert!(!either.accepts(&document(None, None)));
    }
}
