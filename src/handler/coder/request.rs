//! What a coder session is created with: the body of `POST /hub/session` for a task (its text,
//! label, tags, loop, sandbox and repository settings) and the tag that marks it as the run's.

use serde_json::{Map, Value, json};

use super::config::CoderConfig;
use super::repo::RepoConfig;
use crate::agentuity::WorkflowMode;
use crate::handler::TaskDocument;

impl CoderConfig {
    /// The body of `POST /hub/session` for a task.
    pub fn session_body(&self, document: &TaskDocument) -> Value {
        let task = match &self.task_template {
            Some(template) => substitute(template, document),
            None => default_task_text(document),
        };
        let mut tags = vec![run_tag(&document.run_id)];
        if !document.task_id.is_empty() {
            tags.push(format!("agh-task:{}", document.task_id));
        }
        tags.extend(self.tags.iter().cloned());
        let mut body = json!({
            "task": task,
            "label": substitute(&self.label_template, document),
            "workflowMode": self.workflow_mode,
            "visibility": self.visibility,
            "tags": tags,
            // Strings only: the Hub accepts string metadata values on update.
            "metadata": {
                "agh_run_id": document.run_id,
                "agh_task_id": document.task_id,
                "agh_attempt": document.attempt.to_string(),
            },
        });
        let mut extra = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                extra.insert(key.into(), value);
            }
        };
        put("agent", self.agent.clone().map(Value::from));
        put("workspaceId", self.workspace_id.clone().map(Value::from));
        let first = RepoConfig {
            url: self.repo_url.clone(),
            clone_url: self.repo_clone_url.clone(),
            branch: self.repo_branch.clone(),
        };
        let repos: Vec<Value> = std::iter::once(&first)
            .chain(&self.repos)
            .filter_map(RepoConfig::to_ref)
            .collect();
        put("repo", repos.first().cloned());
        if repos.len() > 1 {
            put("repos", Some(Value::Array(repos)));
        }
        if self.mode() == WorkflowMode::Loop {
            let mut loop_body = json!({
                "goal": self.loop_goal.as_ref().map_or_else(|| task.clone(), |g| substitute(g, document)),
                "autoContinue": self.loop_auto_continue,
                "allowDetached": self.loop_allow_detached,
            });
            if let Some(max) = self.loop_max_iterations {
                loop_body["maxIterations"] = json!(max);
            }
            put("loop", Some(loop_body));
        }
        let mut timeout = Map::new();
        for (key, value) in [
            ("idle", &self.sandbox_idle_timeout),
            ("execution", &self.sandbox_execution_timeout),
            ("paused", &self.sandbox_paused_timeout),
        ] {
            if let Some(value) = value {
                timeout.insert(key.into(), json!(value));
            }
        }
        if !timeout.is_empty() {
            put("timeout", Some(Value::Object(timeout)));
        }
        if !self.env.is_empty() {
            put("env", Some(json!(self.env)));
        }
        if let Some(object) = body.as_object_mut() {
            object.append(&mut extra);
        }
        body
    }
}

/// The tag that marks a session as this run's.
pub fn run_tag(run_id: &str) -> String {
    format!("agh-run:{run_id}")
}

/// The task's description, from the task view read after the claim (the claim itself carries
/// none).
fn description(document: &TaskDocument) -> Option<String> {
    document.description.clone()
}

fn handoff(document: &TaskDocument) -> Option<String> {
    document
        .bundle
        .as_ref()
        .and_then(|b| b.handoff_summary.as_deref())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn default_task_text(document: &TaskDocument) -> String {
    let mut parts = vec![document.title.trim().to_string()];
    parts.extend(description(document));
    if let Some(summary) = handoff(document) {
        parts.push(format!("Handoff from earlier attempts:\n{summary}"));
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n\n")
}

fn substitute(template: &str, document: &TaskDocument) -> String {
    let identifier = document
        .claim
        .task
        .identifier
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| document.task_id.clone());
    template
        .replace("{title}", &document.title)
        .replace("{description}", &description(document).unwrap_or_default())
        .replace("{handoff_summary}", &handoff(document).unwrap_or_default())
        .replace("{task_id}", &document.task_id)
        .replace("{run_id}", &document.run_id)
        .replace("{attempt}", &document.attempt.to_string())
        .replace("{identifier}", &identifier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Claim, TaskView};

    fn document(description: Option<&str>) -> TaskDocument {
        let claim: Claim = serde_json::from_value(json!({
            "task": {"id": "task-1", "identifier": "ENG-7", "title": "Fix the login bug"},
            "run": {"id": "run-1", "attempt": 2},
        }))
        .unwrap();
        let view: TaskView = serde_json::from_value(json!({
            "task": {"id": "task-1", "description": description},
        }))
        .unwrap();
        TaskDocument::new(claim, None, None).with_task_view(&view)
    }

    #[test]
    fn the_description_placeholder_is_the_task_views_description() {
        let config = CoderConfig {
            task_template: Some("{identifier} {title}: {description}".into()),
            ..CoderConfig::default()
        };
        let body = config.session_body(&document(Some("Users cannot log in.")));
        assert_eq!(
            body["task"],
            "ENG-7 Fix the login bug: Users cannot log in."
        );
        let body = config.session_body(&document(None));
        assert_eq!(body["task"], "ENG-7 Fix the login bug: ");
    }

    #[test]
    fn several_repositories_go_out_as_repo_and_repos() {
        let claim: Claim = serde_json::from_value(json!({
            "task": {"id": "t", "title": "x"},
            "run": {"id": "r", "attempt": 1},
        }))
        .expect("claim");
        let config = CoderConfig {
            repo_url: Some("https://github.com/acme/app".into()),
            repos: vec![RepoConfig {
                clone_url: Some("https://github.com/acme/lib.git".into()),
                branch: Some("dev".into()),
                ..RepoConfig::default()
            }],
            ..CoderConfig::default()
        };
        let body = config.session_body(&TaskDocument::new(claim, None, None));
        assert_eq!(body["repo"]["cloneUrl"], "https://github.com/acme/app.git");
        assert_eq!(body["repos"][0], body["repo"]);
        assert_eq!(body["repos"][1]["url"], "https://github.com/acme/lib");
        assert_eq!(body["repos"][1]["branch"], "dev");
    }
}
