//! The way-of-running line: whose session the worker uses. In AGH every session is an agent
//! process AGH starts itself (agh-runtime.md §1), so a worker that runs with a session of an
//! agent that is not an agh-worker agent borrows that agent's identity: the agent can heartbeat,
//! complete or fail the worker's run (leases belong to the session), and AGH's scheduler wakes it
//! about the same runs. The agent's definition says whether it is an agh-worker agent:
//! `$AGH_HOME/agents/NAME/AGENT.md`, whose `command` (or its provider's `command` in
//! `$AGH_HOME/config.toml`) is what AGH launches (`internal/config/agent.go`, `provider.go`).

use std::path::Path;

use super::{CheckLine, Status};
use crate::config;

/// The line for `config`'s identity, read from the AGH home's files.
pub(super) fn mode_check(config: &config::Config) -> CheckLine {
    let agent = config.agh.agent.trim();
    let home = Path::new(&config.agh.home);
    if agent.is_empty() || config.agh.home.is_empty() {
        return CheckLine::new(
            "mode",
            Status::Skip,
            "way of running: unknown (no agent name or no AGH home)",
        );
    }
    match launched_command(home, agent) {
        Some(command) if runs_agh_worker(&command) => CheckLine::new(
            "mode",
            Status::Pass,
            format!("way of running: the session of agent {agent}, an agh-worker agent (AGH launches `{command}`)"),
        )
        .with_details(vec![
            "AGH starts `agh-worker acp` for every session of this agent by itself; `run` with one of those sessions' identity would be a second worker on the same leases".to_string(),
        ]),
        Some(command) => CheckLine::new(
            "mode",
            Status::Warn,
            format!("way of running: a borrowed identity: agent {agent} is not an agh-worker agent (AGH launches `{command}` for it)"),
        )
        .with_details(borrowed_risk()),
        None => CheckLine::new(
            "mode",
            Status::Warn,
            format!(
                "way of running: agent {agent} has no definition in {}: probably a borrowed identity",
                home.join("agents").display()
            ),
        )
        .with_details(borrowed_risk()),
    }
}

fn borrowed_risk() -> Vec<String> {
    vec![
        "leases belong to the session: that agent can heartbeat, complete or fail this worker's run, and AGH wakes it about the same runs".to_string(),
        "register the worker as an agent of its own: `agh-worker agh-setup --write`, then let AGH launch it for tasks owned by its pool".to_string(),
    ]
}

/// What AGH launches for `agent`: the `command` of its AGENT.md, else its provider's.
fn launched_command(home: &Path, agent: &str) -> Option<String> {
    let definition =
        std::fs::read_to_string(home.join("agents").join(agent).join("AGENT.md")).ok()?;
    let front = front_matter(&definition);
    if let Some(command) = field(&front, "command") {
        return Some(command);
    }
    let provider = field(&front, "provider")?;
    let text = std::fs::read_to_string(home.join("config.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let command = table
        .get("providers")?
        .get(&provider)?
        .get("command")?
        .as_str()?;
    Some(command.to_string())
}

/// The YAML front matter of an AGENT.md: the lines between the opening and closing `---`.
fn front_matter(text: &str) -> Vec<&str> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("---") {
        return Vec::new();
    }
    lines.take_while(|line| line.trim() != "---").collect()
}

/// A top-level `key: value` of the front matter, unquoted (AGH writes single-quoted values).
fn field(front: &[&str], key: &str) -> Option<String> {
    front.iter().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim() != key || line.starts_with(char::is_whitespace) {
            return None;
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))
        {
            inner.replace("''", "'")
        } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.to_string()
        } else {
            value.to_string()
        };
        (!value.is_empty()).then_some(value)
    })
}

/// Whether a shell-style command line starts the agh-worker binary.
fn runs_agh_worker(command: &str) -> bool {
    let command = command.trim_start();
    let program = match command.chars().next() {
        Some(quote @ ('\'' | '"')) => command[1..].split(quote).next().unwrap_or_default(),
        _ => command.split_whitespace().next().unwrap_or_default(),
    };
    Path::new(program)
        .file_name()
        .is_some_and(|name| name == "agh-worker")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(agent_md: &str, config_toml: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("agents/ops");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("AGENT.md"), agent_md).unwrap();
        std::fs::write(home.path().join("config.toml"), config_toml).unwrap();
        home
    }

    fn config_for(home: &Path) -> config::Config {
        let mut config = config::Config::default();
        config.agh.agent = "ops".into();
        config.agh.home = home.display().to_string();
        config
    }

    #[test]
    fn an_agent_whose_provider_runs_agh_worker_is_recognised() {
        let home = home_with(
            "---\nname: ops\nprovider: workers\n---\n\nA worker.\n",
            "[providers.workers]\ncommand = \"/usr/bin/agh-worker acp\"\n",
        );
        let line = mode_check(&config_for(home.path()));
        assert_eq!(line.status, Status::Pass, "{line:?}");
    }

    #[test]
    fn an_llm_agent_is_a_borrowed_identity_with_its_risk_named() {
        let home = home_with(
            "---\nname: ops\nprovider: claude\ncommand: 'claude-code-acp --x'\n---\n\nHelpful.\n",
            "[providers.claude]\ncommand = \"/usr/bin/agh-worker acp\"\n",
        );
        let line = mode_check(&config_for(home.path()));
        assert_eq!(line.status, Status::Warn, "{line:?}");
        assert!(line.summary.contains("borrowed identity"), "{line:?}");
        assert!(
            line.details.iter().any(|d| d.contains("agh-setup")),
            "{line:?}"
        );
    }

    #[test]
    fn an_agent_without_a_definition_is_probably_borrowed() {
        let home = tempfile::tempdir().unwrap();
        let line = mode_check(&config_for(home.path()));
        assert_eq!(line.status, Status::Warn, "{line:?}");
    }

    #[test]
    fn quoted_paths_name_their_program() {
        assert!(runs_agh_worker("'/opt/my tools/agh-worker' acp"));
        assert!(runs_agh_worker("agh-worker acp"));
        assert!(!runs_agh_worker("/usr/bin/agh-worker-wrapper acp"));
        assert!(!runs_agh_worker(""));
    }
}
