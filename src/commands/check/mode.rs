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

/// The line for `config`'s way of running, read from the AGH home's files.
pub(super) fn mode_check(config: &config::Config) -> CheckLine {
    if let Some(socket) = config.attach.socket_path() {
        return resident_check(config, &socket);
    }
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

/// A resident worker: its socket's folder must exist, no other resident may be serving there,
/// and AGH's provider for `agh.agent` (when named) should run the thin process on that socket.
fn resident_check(config: &config::Config, socket: &Path) -> CheckLine {
    let at = format!("unix:{}", socket.display());
    let summary = format!(
        "way of running: a resident worker serving the sessions attached at {at} (up to {} at once)",
        config.worker.max_slots
    );
    let thin = format!("agh-worker acp --attach {at}");
    if let Some(folder) = socket.parent()
        && !folder.is_dir()
    {
        return CheckLine::new("mode", Status::Fail, summary).with_details(vec![format!(
            "the socket's folder {} does not exist: create it, owned by this user (systemd: RuntimeDirectory=agh-worker)",
            folder.display()
        )]);
    }
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return CheckLine::new("mode", Status::Warn, summary).with_details(vec![format!(
            "a resident worker is serving {at} already: a second one would take its socket over"
        )]);
    }
    let agent = config.agh.agent.trim();
    let home = Path::new(&config.agh.home);
    let provider = (!agent.is_empty() && !config.agh.home.is_empty())
        .then(|| launched_command(home, agent))
        .flatten();
    match provider {
        Some(command) if command.contains("--attach") && command.contains(&*socket.to_string_lossy()) => {
            CheckLine::new("mode", Status::Pass, summary).with_details(vec![format!(
                "AGH launches `{command}` for agent {agent}: its sessions attach here"
            )])
        }
        Some(command) => CheckLine::new("mode", Status::Warn, summary).with_details(vec![format!(
            "AGH launches `{command}` for agent {agent}, which does not attach here: make its provider command `{thin}`"
        )]),
        None => CheckLine::new("mode", Status::Pass, summary).with_details(vec![format!(
            "AGH's provider for the worker's agent must run `{thin}` (set agh.agent to have check read it)"
        )]),
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
    fn a_resident_worker_checks_its_socket_folder_and_the_agent_s_provider_command() {
        let home = home_with(
            "---\nname: ops\nprovider: workers\n---\n\nA worker.\n",
            "[providers.workers]\ncommand = \"agh-worker acp\"\n",
        );
        let mut config = config_for(home.path());
        config.attach.socket = format!("unix:{}/missing/attach.sock", home.path().display());
        let line = mode_check(&config);
        assert_eq!(line.status, Status::Fail, "{line:?}");
        assert!(line.details[0].contains("does not exist"), "{line:?}");

        config.attach.socket = format!("unix:{}/attach.sock", home.path().display());
        let line = mode_check(&config);
        assert_eq!(
            line.status,
            Status::Warn,
            "plain acp never attaches: {line:?}"
        );
        assert!(line.details[0].contains("acp --attach unix:"), "{line:?}");

        let attached = format!(
            "[providers.workers]\ncommand = \"agh-worker acp --attach unix:{}/attach.sock\"\n",
            home.path().display()
        );
        std::fs::write(home.path().join("config.toml"), attached).unwrap();
        let line = mode_check(&config);
        assert_eq!(line.status, Status::Pass, "{line:?}");
        assert!(line.summary.contains("resident worker"), "{line:?}");
    }

    #[test]
    fn quoted_paths_name_their_program() {
        assert!(runs_agh_worker("'/opt/my tools/agh-worker' acp"));
        assert!(runs_agh_worker("agh-worker acp"));
        assert!(!runs_agh_worker("/usr/bin/agh-worker-wrapper acp"));
        assert!(!runs_agh_worker(""));
    }
}
