//! The fake Hub's endpoints beyond the session lifecycle the handler drives: session update and
//! delete, builder sessions, participants, users, custom agents, workspaces, saved skills, skill
//! buckets and GitHub.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{Value, json};

use super::{NOW, State, Step, created, error, json_response, merge, number, percent};

const SNAPSHOT_FIELDS: [&str; 11] = [
    "slug",
    "displayName",
    "description",
    "instructions",
    "model",
    "thinkingLevel",
    "headlessCompatible",
    "tools",
    "serviceTools",
    "savedSkills",
    "companionAgents",
];

pub(super) fn new_agent(id: &str, body: &Value) -> Value {
    let mut agent = json!({
        "id": id,
        "ownerUserId": "user_jane",
        "lifecycle": "draft",
        "visibility": "private_draft",
        "createdAt": NOW,
        "updatedAt": NOW,
        "hasPublishedVersion": false,
        "hasUnpublishedChanges": true,
        "instructions": "",
        "headlessCompatible": false,
        "tools": [],
        "serviceTools": [],
        "savedSkills": [],
        "companionAgents": [],
    });
    for key in SNAPSHOT_FIELDS {
        if let Some(value) = body.get(key) {
            agent[key] = value.clone();
        }
    }
    agent["draft"] = snapshot(&agent);
    agent
}

fn snapshot(agent: &Value) -> Value {
    let mut out = json!({});
    for key in SNAPSHOT_FIELDS {
        if let Some(value) = agent.get(key) {
            out[key] = value.clone();
        }
    }
    out
}

/// The agent an `{idOrSlug}` path segment names.
fn agent_key(state: &State, id_or_slug: &str) -> Option<String> {
    if state.agents.contains_key(id_or_slug) {
        return Some(id_or_slug.to_string());
    }
    state
        .agents
        .iter()
        .find(|(_, agent)| agent["slug"] == id_or_slug)
        .map(|(id, _)| id.clone())
}

fn next_object(state: &mut State, prefix: &str) -> String {
    state.next_object += 1;
    format!("{prefix}_{}", state.next_object)
}

/// The Hub endpoints beyond the session lifecycle the handler drives.
pub(super) fn more(
    state: &mut State,
    method: &str,
    parts: &[&str],
    params: &BTreeMap<String, String>,
    body: Value,
) -> Response {
    let not_found = || json_response(404, json!({"code": "CODER_SESSION_NOT_FOUND"}));
    let ["api", "hub", rest @ ..] = parts else {
        return not_found();
    };
    let decoded: Vec<String> = rest.iter().map(|p| percent(p)).collect();
    let rest: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (method, rest.as_slice()) {
        ("PATCH", ["session", id]) => {
            let Some(current) = state.current.get_mut(*id) else {
                return not_found();
            };
            merge(current, &body);
            current["updatedAt"] = json!(NOW);
            let current = current.clone();
            // Later script steps keep what the update changed.
            if let Some(script) = state.scripts.get_mut(*id) {
                for step in script.iter_mut() {
                    merge(&mut step.detail, &body);
                }
            }
            let mut answer = json!({"sessionId": id});
            for key in [
                "label",
                "visibility",
                "tags",
                "skills",
                "defaultAgent",
                "enabledAgents",
                "metadata",
            ] {
                if let Some(value) = current.get(key) {
                    answer[key] = value.clone();
                }
            }
            json_response(200, answer)
        }
        ("DELETE", ["session", id]) => {
            if state.current.remove(*id).is_none() {
                return not_found();
            }
            state.scripts.remove(*id);
            state.deleted.push(id.to_string());
            json_response(200, json!({"sessionId": id, "status": "deleted"}))
        }
        ("POST", ["session", "builder"]) => {
            if let Some(source) = body.get("sourceSessionId").and_then(Value::as_str)
                && !state.current.contains_key(source)
            {
                return not_found();
            }
            let target = body
                .get("targetAgentId")
                .or_else(|| body.get("targetAgentSlug"))
                .and_then(Value::as_str);
            if let Some(target) = target
                && agent_key(state, target).is_none()
            {
                return error(404, "custom agent not found");
            }
            state.next_id += 1;
            let id = format!("codesess_{}", state.next_id);
            let visibility = body.get("visibility").cloned().unwrap_or(json!("private"));
            let detail = json!({
                "sessionId": id,
                "label": body.get("label").cloned().unwrap_or(json!("Agent builder")),
                "status": "creating",
                "bucket": "provisioning",
                "mode": "sandbox",
                "visibility": visibility,
                "sessionKind": "agent_builder",
                "builder": {
                    "mode": body.get("mode").cloned().unwrap_or(json!("new")),
                    "sourceSession": body.get("sourceSessionId").map(|s| json!({"sessionId": s})),
                },
                "createdAt": NOW,
            });
            state.current.insert(id.clone(), detail.clone());
            state
                .scripts
                .insert(id.clone(), vec![Step::detail(detail)].into());
            created(
                state,
                json!({"sessionId": id, "sandboxId": null, "status": "creating", "mode": "sandbox", "visibility": visibility}),
            )
        }
        ("GET", ["session", id, "participants"]) => {
            if !state.current.contains_key(*id) {
                return not_found();
            }
            let all = state.participants.get(*id).cloned().unwrap_or_else(|| {
                vec![
                    json!({"id": "lead", "role": "lead", "transport": "sandbox", "agentRole": "lead", "connectedAt": "2026-01-05T09:00:00Z", "lastActivityAt": NOW}),
                    json!({"id": "obs_1", "role": "observer", "transport": "websocket", "connectedAt": "2026-01-05T09:05:00Z", "disconnectedAt": "2026-01-05T09:10:00Z"}),
                ]
            });
            let include_gone =
                params.get("includeDisconnected").map(String::as_str) == Some("true");
            let mut participants: Vec<Value> = all
                .into_iter()
                .filter(|p| include_gone || p.get("disconnectedAt").is_none())
                .collect();
            if let Some(limit) = number(params, "limit") {
                participants.truncate(limit);
            }
            json_response(200, json!({"sessionId": id, "participants": participants}))
        }
        ("GET", ["users"]) => {
            let search = params
                .get("search")
                .map(|s| s.to_lowercase())
                .unwrap_or_default();
            let matching: Vec<Value> = state
                .users
                .iter()
                .filter(|u| {
                    u["displayName"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().contains(&search))
                })
                .cloned()
                .collect();
            let total = matching.len();
            let offset = number(params, "offset").unwrap_or(0);
            let limit = number(params, "limit").unwrap_or(50);
            let page: Vec<Value> = matching.into_iter().skip(offset).take(limit).collect();
            if state.users_bare {
                return json_response(200, Value::Array(page));
            }
            json_response(
                200,
                json!({"users": page, "total": total, "limit": limit, "offset": offset}),
            )
        }
        ("GET", ["agents"]) => {
            let archived = params.get("includeArchived").map(String::as_str) == Some("true");
            let agents: Vec<Value> = state
                .agents
                .values()
                .filter(|a| archived || a["lifecycle"] != "archived")
                .cloned()
                .collect();
            json_response(200, json!({"agents": agents}))
        }
        ("POST", ["agents"]) => {
            let Some(slug) = body.get("slug").and_then(Value::as_str) else {
                return json_response(
                    400,
                    json!({"success": false, "error": {"name": "ZodError", "issues": [{"code": "invalid_type", "path": ["slug"], "message": "Required"}]}}),
                );
            };
            if agent_key(state, slug).is_some() {
                return json_response(
                    409,
                    json!({"message": format!("a custom agent with slug {slug} exists")}),
                );
            }
            let id = next_object(state, "agent");
            let agent = new_agent(&id, &body);
            state.agents.insert(id, agent.clone());
            json_response(201, agent)
        }
        ("GET", ["agents", key]) => match agent_key(state, key) {
            Some(id) => json_response(200, state.agents[&id].clone()),
            None => error(404, "custom agent not found"),
        },
        ("PATCH", ["agents", key]) => {
            let Some(id) = agent_key(state, key) else {
                return error(404, "custom agent not found");
            };
            let agent = state.agents.get_mut(&id).expect("agent");
            for key in SNAPSHOT_FIELDS {
                if let Some(value) = body.get(key) {
                    agent[key] = value.clone();
                }
            }
            agent["draft"] = snapshot(agent);
            agent["hasUnpublishedChanges"] = json!(true);
            agent["updatedAt"] = json!(NOW);
            json_response(200, agent.clone())
        }
        ("POST", ["agents", key, "publish"]) => {
            let Some(id) = agent_key(state, key) else {
                return error(404, "custom agent not found");
            };
            let versions = state.agent_versions.entry(id.clone()).or_default();
            let number = versions.len() as u64 + 1;
            let agent = state.agents.get_mut(&id).expect("agent");
            let mut version = snapshot(agent);
            merge(
                &mut version,
                &json!({"id": format!("{id}_v{number}"), "agentId": id, "version": number, "createdByUserId": "user_jane", "createdAt": NOW}),
            );
            versions.push(version.clone());
            merge(
                agent,
                &json!({"lifecycle": "published", "visibility": "org", "hasPublishedVersion": true, "hasUnpublishedChanges": false, "latestPublishedVersion": number, "latestPublishedAt": NOW, "published": version}),
            );
            json_response(200, agent.clone())
        }
        ("POST", ["agents", key, "archive"]) => {
            let Some(id) = agent_key(state, key) else {
                return error(404, "custom agent not found");
            };
            let agent = state.agents.get_mut(&id).expect("agent");
            agent["lifecycle"] = json!("archived");
            json_response(200, agent.clone())
        }
        ("GET", ["agents", key, "versions"]) => match agent_key(state, key) {
            Some(id) => json_response(
                200,
                json!({"versions": state.agent_versions.get(&id).cloned().unwrap_or_default()}),
            ),
            None => error(404, "custom agent not found"),
        },
        ("POST", ["workspaces"]) => {
            let Some(name) = body.get("name").and_then(Value::as_str) else {
                return error(400, "name is required");
            };
            let id = next_object(state, "ws");
            let repos = body.get("repos").cloned().unwrap_or(json!([]));
            let skills = body.get("savedSkillIds").cloned().unwrap_or(json!([]));
            let buckets = body.get("skillBucketIds").cloned().unwrap_or(json!([]));
            let selections = [&repos, &skills, &buckets]
                .iter()
                .map(|v| v.as_array().map_or(0, Vec::len))
                .sum::<usize>();
            let workspace = json!({
                "id": id,
                "name": name,
                "description": body.get("description"),
                "scope": body.get("scope").cloned().unwrap_or(json!("user")),
                "ownerUserId": "user_jane",
                "repoCount": repos.as_array().map_or(0, Vec::len),
                "repos": repos,
                "dependencies": [],
                "setupScript": "",
                "systemPrompt": "",
                "systemPromptMode": "append",
                "savedSkillIds": skills,
                "skillBucketIds": buckets,
                "enabledAgents": [],
                "selectionCount": selections,
                "createdAt": NOW,
                "updatedAt": NOW,
            });
            state.workspaces.insert(id, workspace.clone());
            json_response(201, json!({"workspace": workspace}))
        }
        ("GET", ["workspaces"]) => json_response(
            200,
            json!({"workspaces": state.workspaces.values().cloned().collect::<Vec<_>>()}),
        ),
        ("GET", ["workspaces", id]) => match state.workspaces.get(*id) {
            Some(workspace) => json_response(200, json!({"workspace": workspace})),
            None => error(404, "workspace not found"),
        },
        ("DELETE", ["workspaces", id]) => match state.workspaces.remove(*id) {
            Some(_) => json_response(200, json!({"ok": true})),
            None => error(404, "workspace not found"),
        },
        ("POST", ["skills", "library"]) => {
            let (Some(repo), Some(skill_id), Some(name)) = (
                body.get("repo").and_then(Value::as_str),
                body.get("skillId").and_then(Value::as_str),
                body.get("name").and_then(Value::as_str),
            ) else {
                return error(400, "repo, skillId and name are required");
            };
            let id = next_object(state, "skill");
            let mut skill = json!({
                "id": id,
                "source": body.get("source").cloned().unwrap_or(json!("registry")),
                "repo": repo,
                "skillId": skill_id,
                "name": name,
                "createdAt": NOW,
                "updatedAt": NOW,
            });
            for key in ["description", "url", "content"] {
                if let Some(value) = body.get(key) {
                    skill[key] = value.clone();
                }
            }
            state.skills.insert(id, skill.clone());
            json_response(201, json!({"skill": skill}))
        }
        ("GET", ["skills", "library"]) => json_response(
            200,
            json!({"skills": state.skills.values().cloned().collect::<Vec<_>>()}),
        ),
        ("DELETE", ["skills", "library", id]) => match state.skills.remove(*id) {
            Some(_) => json_response(200, json!({"ok": true})),
            None => error(404, "saved skill not found"),
        },
        ("POST", ["skills", "buckets"]) => {
            let Some(name) = body.get("name").and_then(Value::as_str) else {
                return error(400, "name is required");
            };
            let mut skills = Vec::new();
            for id in body
                .get("savedSkillIds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match id.as_str().and_then(|id| state.skills.get(id)) {
                    Some(skill) => skills.push(skill.clone()),
                    None => return error(400, "One or more selected saved skills do not exist."),
                }
            }
            let id = next_object(state, "bucket");
            let mut bucket = json!({
                "id": id,
                "name": name,
                "createdAt": NOW,
                "updatedAt": NOW,
                "skillCount": skills.len(),
                "skills": skills,
            });
            if let Some(description) = body.get("description") {
                bucket["description"] = description.clone();
            }
            state.buckets.insert(id, bucket.clone());
            json_response(201, json!({"bucket": bucket}))
        }
        ("GET", ["skills", "buckets"]) => json_response(
            200,
            json!({"buckets": state.buckets.values().cloned().collect::<Vec<_>>()}),
        ),
        ("DELETE", ["skills", "buckets", id]) => match state.buckets.remove(*id) {
            Some(_) => json_response(200, json!({"ok": true})),
            None => error(404, "skill bucket not found"),
        },
        ("GET", ["github", "accounts"]) => json_response(200, state.github_accounts.clone()),
        ("GET", ["github", "repos"]) => {
            let Some(account) = params.get("accountId") else {
                return error(400, "accountId is required");
            };
            match state.github_repos.get(account) {
                Some(repos) => json_response(
                    200,
                    json!({"accountId": account, "totalCount": repos.len(), "repositories": repos}),
                ),
                None => error(404, "GitHub account not found"),
            }
        }
        _ => not_found(),
    }
}
