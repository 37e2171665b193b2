//! The answers and parameters only the operator commands use: users, participants, workspaces,
//! saved skills and buckets, GitHub accounts and repositories, the Sessions API's list filters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(doc)]
use super::Session;
use super::{lenient, lenient_id, lenient_u64, lenient_vec};

/// `GET /session` parameters of the Sessions API (agent executions, not Coder sessions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListAgentSessions {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// Any other documented filter (`sort`, `direction`, `projectId`, `trigger`, …).
    pub filters: BTreeMap<String, String>,
}

/// `GET /hub/sessions` filtered to the sessions a client can attach to (see
/// [`Session::is_connectable`]); `limit` and `offset` apply to the filtered list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListConnectable {
    pub search: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// `GET /hub/users` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListUsers {
    /// Matches display names.
    pub search: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// `GET /hub/session/{id}/participants` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListParticipants {
    pub limit: Option<u32>,
    pub include_disconnected: bool,
    /// Sent for parity with the SDK; the Hub route is documented to ignore it.
    pub offset: Option<u32>,
}

/// `GET /hub/agents` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListAgents {
    pub include_archived: bool,
}

/// A person the Hub knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubUser {
    #[serde(default, deserialize_with = "lenient")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_seen_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/users`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub users: Vec<HubUser>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub limit: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub offset: Option<u64>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Someone or something attached to a session: the lead, a sub-agent, an observer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub transport: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub agent_role: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub connected_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub disconnected_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/session/{id}/participants`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantList {
    #[serde(default, deserialize_with = "lenient")]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub participants: Vec<Participant>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A reusable set of repositories, skills and setup attached to sessions by `workspaceId`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    /// `user` or `org`.
    #[serde(default, deserialize_with = "lenient")]
    pub scope: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub repos: Vec<Map<String, Value>>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub saved_skill_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skill_bucket_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/workspaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub workspaces: Vec<Workspace>,
}

/// A skill in the caller's library.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedSkill {
    /// The library record id (what delete and `savedSkillIds` take).
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub repo: Option<String>,
    /// The skill's id within its repository.
    #[serde(default, deserialize_with = "lenient")]
    pub skill_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/skills/library`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedSkillList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skills: Vec<SavedSkill>,
}

/// A named group of saved skills.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillBucket {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub skill_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skills: Vec<SavedSkill>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/skills/buckets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillBucketList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub buckets: Vec<SkillBucket>,
}

/// A GitHub user or organisation reachable through a GitHub App installation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAccount {
    /// What [`list_github_repos`](crate::agentuity::AgentuityClient::list_github_repos) takes.
    #[serde(default, deserialize_with = "lenient_id")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub account_name: Option<String>,
    /// `User` or `Organization`.
    #[serde(default, deserialize_with = "lenient")]
    pub account_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub installation_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/github/accounts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAccountList {
    /// Whether the caller has connected GitHub at all.
    #[serde(default, deserialize_with = "lenient")]
    pub connected: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub accounts: Vec<GitHubAccount>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A repository of a GitHub account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubRepo {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub full_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub private: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub default_branch: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub clone_url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub archived: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/github/repos?accountId=`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubRepoList {
    #[serde(default, deserialize_with = "lenient_id")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub repositories: Vec<GitHubRepo>,
}
