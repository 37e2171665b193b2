//! The table layouts of the list commands: which field of an answer holds the rows, and which
//! columns a terminal shows of each.

use serde_json::Value;

use super::table::{self, Column};

/// Which rows of a list answer a table shows, and in which columns.
pub(super) struct Layout {
    /// The answer's field holding the rows; `None`: the answer is the array itself.
    rows: Option<&'static str>,
    columns: &'static [Column],
}

pub(super) const SESSIONS: Layout = Layout {
    rows: Some("sessions"),
    columns: &[
        Column::new("ID", &["/sessionId"]),
        Column::new("STATUS", &["/status"]),
        Column::new("MODE", &["/workflowMode", "/mode"]),
        Column::new("LABEL", &["/label"]).at_most(32),
        Column::new("UPDATED", &["/lastActivityAt", "/updatedAt", "/createdAt"]),
    ],
};

pub(super) const EVENTS: Layout = Layout {
    rows: Some("events"),
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("OCCURRED", &["/occurredAt"]),
        Column::new("EVENT", &["/event"]).at_most(28),
        Column::new("CATEGORY", &["/category"]).at_most(16),
        Column::new("AGENT", &["/agent"]).at_most(20),
    ],
};

pub(super) const PARTICIPANTS: Layout = Layout {
    rows: Some("participants"),
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("ROLE", &["/role"]).at_most(16),
        Column::new("AGENT ROLE", &["/agentRole"]).at_most(16),
        Column::new("TRANSPORT", &["/transport"]).at_most(12),
        Column::new("CONNECTED", &["/connectedAt"]),
        Column::new("DISCONNECTED", &["/disconnectedAt"]),
    ],
};

pub(super) const USERS: Layout = Layout {
    rows: Some("users"),
    columns: &[
        Column::new("ID", &["/userId"]),
        Column::new("NAME", &["/displayName"]).at_most(24),
        Column::new("EMAIL", &["/email"]).at_most(32),
        Column::new("LAST SEEN", &["/lastSeenAt", "/lastLoginAt"]),
    ],
};

pub(super) const AGENTS: Layout = Layout {
    rows: Some("agents"),
    columns: &[
        Column::new("SLUG", &["/slug", "/draft/slug", "/published/slug"]),
        Column::new(
            "NAME",
            &[
                "/displayName",
                "/draft/displayName",
                "/published/displayName",
            ],
        )
        .at_most(24),
        Column::new("LIFECYCLE", &["/lifecycle"]).at_most(12),
        Column::new("VERSION", &["/latestPublishedVersion"]),
        Column::new("UPDATED", &["/updatedAt"]),
    ],
};

pub(super) const VERSIONS: Layout = Layout {
    rows: Some("versions"),
    columns: &[
        Column::new("VERSION", &["/version"]),
        Column::new("SLUG", &["/slug"]),
        Column::new("CREATED", &["/createdAt"]),
        Column::new("BY", &["/createdByUserId"]),
        Column::new("ID", &["/id"]),
    ],
};

pub(super) const WORKSPACES: Layout = Layout {
    rows: Some("workspaces"),
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("NAME", &["/name"]).at_most(24),
        Column::new("SCOPE", &["/scope"]).at_most(8),
        Column::new("DESCRIPTION", &["/description"]).at_most(32),
        Column::new("CREATED", &["/createdAt"]),
    ],
};

pub(super) const SKILLS: Layout = Layout {
    rows: Some("skills"),
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("NAME", &["/name"]).at_most(24),
        Column::new("REPO", &["/repo"]).at_most(32),
        Column::new("SKILL ID", &["/skillId"]).at_most(24),
        Column::new("SOURCE", &["/source"]).at_most(12),
    ],
};

pub(super) const BUCKETS: Layout = Layout {
    rows: Some("buckets"),
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("NAME", &["/name"]).at_most(24),
        Column::new("SKILLS", &["/skillCount"]),
        Column::new("DESCRIPTION", &["/description"]).at_most(32),
    ],
};

pub(super) const GITHUB_ACCOUNTS: Layout = Layout {
    rows: Some("accounts"),
    columns: &[
        Column::new("ID", &["/accountId"]),
        Column::new("NAME", &["/accountName"]).at_most(32),
        Column::new("TYPE", &["/accountType"]).at_most(12),
        Column::new("INSTALLATION", &["/installationId"]),
    ],
};

pub(super) const GITHUB_REPOS: Layout = Layout {
    rows: Some("repositories"),
    columns: &[
        Column::new("NAME", &["/fullName", "/name"]).at_most(40),
        // Copied into `coder.repo_url`: never cut short.
        Column::new("CLONE URL", &["/cloneUrl"]).at_most(200),
        Column::new("BRANCH", &["/defaultBranch"]).at_most(24),
        Column::new("PRIVATE", &["/private"]),
        Column::new("ARCHIVED", &["/archived"]),
    ],
};

pub(super) const AGENT_SESSIONS: Layout = Layout {
    rows: None,
    columns: &[
        Column::new("ID", &["/id"]),
        Column::new("TRIGGER", &["/trigger"]).at_most(10),
        Column::new("SUCCESS", &["/success"]),
        Column::new("COST", &["/total_cost"]),
        Column::new("STARTED", &["/start_time"]),
    ],
};

impl Layout {
    /// The table of `answer`, or `None` when the answer does not hold the expected rows (then
    /// it is printed as JSON rather than as an empty table hiding what came back).
    pub(super) fn render(&self, answer: &Value) -> Option<String> {
        let rows = match self.rows {
            Some(field) => answer.get(field)?,
            None => answer,
        };
        Some(table::render(self.columns, rows.as_array()?))
    }
}
