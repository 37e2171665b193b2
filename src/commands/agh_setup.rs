//! `agh-worker agh-setup`: registers the worker with AGH as an agent of its own, the way AGH
//! registers its own test agent (`internal/testutil/acpmock/registration.go` ~122-136, ~189-210):
//! a provider whose command AGH launches (`[providers.NAME]` in `$AGH_HOME/config.toml`,
//! `harness = "acp"`, `auth_mode = "none"`, `none_security = "local_transport"`), an agent
//! definition that uses it (`$AGH_HOME/agents/NAME/AGENT.md`: YAML front matter and a non-empty
//! body, `internal/config/agent.go` ~276-282), and, when the worker claims only runs needing
//! capabilities, a catalog that gives the agent those capabilities (`capabilities.toml`,
//! `internal/config/capabilities.go`: `id`, `summary` and `outcome` required).
//!
//! It prints what it would write; `--write` writes it. It never clobbers: a file that already says
//! something else is shown as a diff and left alone (exit 73). In `config.toml` it appends a marked
//! block, and replaces only a block it marked itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{AghSetupArgs, Cli};
use crate::config::{self, ConfigSources};
use crate::exit;

/// One file the setup wants, and what it would do to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Planned {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub action: Action,
}

/// What the setup does to one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The file is missing: create it with this text.
    Create(String),
    /// The file lacks our part: append this block.
    Append(String),
    /// The file has a block we marked, saying something else: the file's new text.
    ReplaceBlock(String),
    /// Already as wanted.
    Unchanged,
    /// The file says something else that is not ours to change: the lines that differ.
    Conflict(String),
}

/// The inputs of a setup, so that planning is a pure function.
#[derive(Debug)]
pub struct SetupInputs {
    /// `$AGH_HOME`.
    pub home: PathBuf,
    /// Provider and agent name.
    pub name: String,
    /// The command AGH launches, shell-quoted.
    pub command: String,
    /// `worker.required_capabilities`.
    pub capabilities: Vec<String>,
}

/// The files a setup wants, read against what `home` holds now.
pub fn plan(inputs: &SetupInputs) -> std::io::Result<Vec<Planned>> {
    let mut planned = Vec::new();
    let config = inputs.home.join("config.toml");
    planned.push(Planned {
        action: config_action(read_optional(&config)?, inputs),
        path: config,
    });
    let agent_dir = inputs.home.join("agents").join(&inputs.name);
    let agent = agent_dir.join("AGENT.md");
    planned.push(Planned {
        action: whole_file_action(read_optional(&agent)?, agent_definition(inputs)),
        path: agent,
    });
    if !inputs.capabilities.is_empty() {
        let catalog = agent_dir.join("capabilities.toml");
        planned.push(Planned {
            action: whole_file_action(read_optional(&catalog)?, capability_catalog(inputs)),
            path: catalog,
        });
    }
    Ok(planned)
}

fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(std::io::Error::new(
            err.kind(),
            format!("cannot read {}: {err}", path.display()),
        )),
    }
}

fn block_start(name: &str) -> String {
    format!("# >>> agh-worker agent {name:?} (written by `agh-worker agh-setup`) >>>")
}

fn block_end(name: &str) -> String {
    format!("# <<< agh-worker agent {name:?} <<<")
}

/// The `[providers.NAME]` table, as lines.
fn provider_table(inputs: &SetupInputs) -> String {
    format!(
        "[providers.{name}]\ncommand = {command}\ndisplay_name = \"agh-worker\"\nharness = \"acp\"\nauth_mode = \"none\"\nnone_security = \"local_transport\"\n",
        name = toml_key(&inputs.name),
        command = toml_string(&inputs.command),
    )
}

fn provider_block(inputs: &SetupInputs) -> String {
    format!(
        "{}\n{}{}\n",
        block_start(&inputs.name),
        provider_table(inputs),
        block_end(&inputs.name)
    )
}

fn config_action(existing: Option<String>, inputs: &SetupInputs) -> Action {
    let block = provider_block(inputs);
    let Some(text) = existing else {
        return Action::Create(block);
    };
    let (start, end) = (block_start(&inputs.name), block_end(&inputs.name));
    if let Some(at) = text.find(&start)
        && let Some(until) = text[at..].find(&end)
    {
        let until = at + until + end.len();
        let until = until + usize::from(text[until..].starts_with('\n'));
        if text[at..until] == block {
            return Action::Unchanged;
        }
        return Action::ReplaceBlock(format!("{}{block}{}", &text[..at], &text[until..]));
    }
    let theirs = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|table| table.get("providers")?.get(&inputs.name).cloned());
    match theirs {
        Some(existing) => {
            let wanted = toml::from_str::<toml::Table>(&provider_table(inputs))
                .ok()
                .and_then(|table| table.get("providers")?.get(&inputs.name).cloned());
            if wanted.as_ref() == Some(&existing) {
                return Action::Unchanged;
            }
            Action::Conflict(line_diff(
                &table_lines(&text, &inputs.name),
                &provider_table(inputs),
            ))
        }
        None => {
            let separator = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            Action::Append(format!("{separator}{block}"))
        }
    }
}

fn whole_file_action(existing: Option<String>, wanted: String) -> Action {
    match existing {
        None => Action::Create(wanted),
        Some(text) if text == wanted => Action::Unchanged,
        Some(text) => Action::Conflict(line_diff(&text, &wanted)),
    }
}

fn agent_definition(inputs: &SetupInputs) -> String {
    format!(
        "---\nname: {name}\nprovider: {name}\n---\n\n\
         agh-worker: a task worker, not a chat agent. AGH launches `{command}` for each session\n\
         of this agent. It claims the runs of tasks owned by the pool \"{name}\" and hands each to\n\
         its configured handlers; it answers every prompt at once, saying what it is doing.\n",
        name = inputs.name,
        command = inputs.command,
    )
}

fn capability_catalog(inputs: &SetupInputs) -> String {
    let mut text = String::from(
        "# Capabilities of the agh-worker agent: the runs it claims require them\n\
         # (worker.required_capabilities). Describe them better if you like.\n",
    );
    for id in &inputs.capabilities {
        text.push_str(&format!(
            "\n[[capabilities]]\nid = {id}\nsummary = {summary}\noutcome = {outcome}\n",
            id = toml_string(id),
            summary = toml_string(&format!(
                "Runs tasks that need {id} with agh-worker handlers"
            )),
            outcome = toml_string("The run completed or failed by its handler"),
        ));
    }
    text
}

/// The lines of `text` from the `[providers.NAME]` header to the next table header.
fn table_lines(text: &str, name: &str) -> String {
    let headers = [
        format!("[providers.{name}]"),
        format!("[providers.{}]", toml_string(name)),
    ];
    let mut lines = text
        .lines()
        .skip_while(|line| !headers.contains(&line.trim().to_string()));
    let mut shown = String::new();
    if let Some(header) = lines.next() {
        shown.push_str(header.trim());
        shown.push('\n');
    }
    for line in lines.take_while(|line| !line.trim_start().starts_with('[')) {
        if !line.trim().is_empty() {
            shown.push_str(line.trim());
            shown.push('\n');
        }
    }
    shown
}

/// A TOML basic string: quoted, with `"`, `\` and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A bare key when it can be one, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        key.to_string()
    } else {
        toml_string(key)
    }
}

/// `existing` and `wanted` line by line: lines only in the first marked `-`, only in the second
/// `+`, common ones indented. Enough for the few lines of a provider table or an agent file.
fn line_diff(existing: &str, wanted: &str) -> String {
    let old: Vec<&str> = existing.lines().collect();
    let new: Vec<&str> = wanted.lines().collect();
    let mut out = String::from("--- what is there\n+++ what agh-setup would write\n");
    for line in &old {
        let mark = if new.contains(line) { ' ' } else { '-' };
        out.push_str(&format!("{mark} {line}\n"));
    }
    for line in new.iter().filter(|line| !old.contains(line)) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

/// The command AGH should launch: this binary, by its absolute path, with `acp`, attached to the
/// resident worker at `attach` when there is one.
fn default_command(attach: Option<&std::path::Path>) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|path| path.canonicalize().ok())
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "agh-worker".to_string());
    match attach {
        Some(socket) => format!(
            "{} acp --attach {}",
            shell_quote(&exe),
            shell_quote(&format!("unix:{}", socket.display()))
        ),
        None => format!("{} acp", shell_quote(&exe)),
    }
}

/// Quotes `word` for AGH's shell-style split when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How to create a task this agent's sessions work on, with the `agh` CLI
/// (`internal/cli/task.go` ~370-385 and `enqueue <task-id>` ~2000).
fn task_example(name: &str) -> String {
    format!(
        "agh task create --scope workspace --workspace <workspace> --title \"…\" \\\n  \
         --description \"…\" --owner-kind pool --owner-ref {name}\n\
         agh task enqueue <task-id>\n"
    )
}

/// Runs `agh-worker agh-setup`.
pub fn run(cli: &Cli, args: &AghSetupArgs) -> ExitCode {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    let loaded = match config::load_unvalidated(&sources) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("agh-worker: the configuration cannot be used:\n{err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let home = match args.agh_home.clone() {
        Some(home) => home,
        None if !loaded.config.agh.home.is_empty() => PathBuf::from(&loaded.config.agh.home),
        None => {
            eprintln!(
                "agh-worker: there is no AGH home to set up: set AGH_HOME, or pass --agh-home PATH"
            );
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    if !valid_name(&args.name) {
        eprintln!(
            "agh-worker: --name {:?} cannot name an agent: use letters, digits, '-' and '_'",
            args.name
        );
        return ExitCode::from(exit::BAD_CONFIG);
    }
    let inputs = SetupInputs {
        home,
        name: args.name.clone(),
        command: args.command.clone().unwrap_or_else(|| {
            let attach = match &args.attach {
                Some(socket) => crate::config::AttachConfig {
                    socket: socket.clone(),
                }
                .socket_path(),
                None => loaded.config.attach.socket_path(),
            };
            default_command(attach.as_deref())
        }),
        capabilities: loaded.config.worker.required_capabilities.clone(),
    };
    let planned = match plan(&inputs) {
        Ok(planned) => planned,
        Err(err) => {
            eprintln!("agh-worker: {err}");
            return ExitCode::from(exit::IO_ERROR);
        }
    };
    let mut out = std::io::stdout().lock();
    let code = report_and_apply(&planned, args.write, &mut out);
    if code == ExitCode::SUCCESS {
        let _ = writeln!(
            out,
            "\nTasks owned by the pool {:?} are worked by this agent's sessions, which AGH starts \
             by itself:\n\n{}",
            inputs.name,
            task_example(&inputs.name)
        );
    }
    code
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn report_and_apply(planned: &[Planned], write: bool, out: &mut dyn Write) -> ExitCode {
    let conflicts = planned
        .iter()
        .filter(|p| matches!(p.action, Action::Conflict(_)))
        .count();
    for item in planned {
        let path = item.path.display();
        let _ = match &item.action {
            Action::Create(text) => writeln!(out, "== {path} (new)\n{text}"),
            Action::Append(text) => writeln!(out, "== {path} (append)\n{text}"),
            Action::ReplaceBlock(_) => {
                writeln!(
                    out,
                    "== {path} (replace the block agh-setup wrote before)\n"
                )
            }
            Action::Unchanged => writeln!(out, "== {path} (already set up)\n"),
            Action::Conflict(diff) => writeln!(
                out,
                "== {path} (says something else: left alone; change it by hand or pass another --name)\n{diff}"
            ),
        };
    }
    if conflicts > 0 {
        let _ = writeln!(
            out,
            "agh-setup: {conflicts} file(s) in the way; nothing written"
        );
        return ExitCode::from(exit::CANT_CREATE);
    }
    if !write {
        let _ = writeln!(
            out,
            "Nothing written: run again with --write to install these."
        );
        return ExitCode::SUCCESS;
    }
    for item in planned {
        if let Err(err) = apply(item) {
            let _ = writeln!(
                out,
                "agh-setup: cannot write {}: {err}",
                item.path.display()
            );
            return ExitCode::from(exit::IO_ERROR);
        }
    }
    let _ = writeln!(out, "Written. AGH reads them at its next start.");
    ExitCode::SUCCESS
}

fn apply(item: &Planned) -> std::io::Result<()> {
    if let Some(dir) = item.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match &item.action {
        Action::Create(text) | Action::ReplaceBlock(text) => {
            let temporary = item.path.with_extension("agh-setup.tmp");
            std::fs::write(&temporary, text)?;
            std::fs::rename(&temporary, &item.path)
        }
        Action::Append(text) => {
            let mut file = std::fs::OpenOptions::new().append(true).open(&item.path)?;
            file.write_all(text.as_bytes())
        }
        Action::Unchanged | Action::Conflict(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(home: &Path) -> SetupInputs {
        SetupInputs {
            home: home.to_path_buf(),
            name: "agh-worker".into(),
            command: "/usr/local/bin/agh-worker acp".into(),
            capabilities: Vec::new(),
        }
    }

    #[test]
    fn an_empty_home_gets_a_provider_block_and_an_agent_definition() {
        let dir = tempfile::tempdir().unwrap();
        let planned = plan(&inputs(dir.path())).unwrap();
        assert_eq!(planned.len(), 2);
        let Action::Create(config) = &planned[0].action else {
            panic!("{:?}", planned[0]);
        };
        let table: toml::Table = toml::from_str(config).unwrap();
        let provider = &table["providers"]["agh-worker"];
        assert_eq!(
            provider["command"].as_str(),
            Some("/usr/local/bin/agh-worker acp")
        );
        assert_eq!(provider["harness"].as_str(), Some("acp"));
        assert_eq!(provider["auth_mode"].as_str(), Some("none"));
        assert_eq!(provider["none_security"].as_str(), Some("local_transport"));
        let Action::Create(agent) = &planned[1].action else {
            panic!("{:?}", planned[1]);
        };
        assert!(agent.starts_with("---\nname: agh-worker\nprovider: agh-worker\n---\n\n"));
    }

    #[test]
    fn an_existing_config_gets_a_block_appended_and_a_second_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "[daemon]\nsocket = \"~/agh.sock\"").unwrap();
        let planned = plan(&inputs(dir.path())).unwrap();
        assert!(
            matches!(&planned[0].action, Action::Append(text) if text.starts_with("\n\n# >>>"))
        );
        for item in &planned {
            apply(item).unwrap();
        }
        let text = std::fs::read_to_string(&config).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["daemon"]["socket"].as_str(), Some("~/agh.sock"));
        assert!(table["providers"]["agh-worker"].is_table());
        let again = plan(&inputs(dir.path())).unwrap();
        assert!(
            again.iter().all(|p| p.action == Action::Unchanged),
            "{again:?}"
        );
    }

    #[test]
    fn a_block_written_before_is_replaced_and_nothing_around_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = inputs(dir.path());
        old.command = "/old/agh-worker acp".into();
        let text = format!("[daemon]\n\n{}\n[http]\nport = 1\n", provider_block(&old));
        std::fs::write(dir.path().join("config.toml"), &text).unwrap();
        let planned = plan(&inputs(dir.path())).unwrap();
        let Action::ReplaceBlock(new) = &planned[0].action else {
            panic!("{:?}", planned[0]);
        };
        assert!(new.contains("/usr/local/bin/agh-worker acp") && !new.contains("/old/"));
        assert!(new.starts_with("[daemon]\n\n# >>>") && new.ends_with("\n[http]\nport = 1\n"));
    }

    #[test]
    fn a_provider_of_that_name_written_by_hand_is_a_conflict_shown_as_a_diff() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "[providers.agh-worker]\ncommand = \"something-else\"\n",
        )
        .unwrap();
        let planned = plan(&inputs(dir.path())).unwrap();
        let Action::Conflict(diff) = &planned[0].action else {
            panic!("{:?}", planned[0]);
        };
        assert!(diff.contains("- command = \"something-else\""), "{diff}");
        assert!(
            diff.contains("+ command = \"/usr/local/bin/agh-worker acp\""),
            "{diff}"
        );
        let mut out = Vec::new();
        assert_eq!(
            report_and_apply(&planned, true, &mut out),
            ExitCode::from(exit::CANT_CREATE)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.toml")).unwrap(),
            "[providers.agh-worker]\ncommand = \"something-else\"\n",
            "nothing was written"
        );
    }

    #[test]
    fn required_capabilities_give_the_agent_a_catalog_with_the_required_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut wanted = inputs(dir.path());
        wanted.capabilities = vec!["builds".into(), "deploys".into()];
        let planned = plan(&wanted).unwrap();
        let Action::Create(catalog) = &planned[2].action else {
            panic!("{:?}", planned[2]);
        };
        let table: toml::Table = toml::from_str(catalog).unwrap();
        let capabilities = table["capabilities"].as_array().unwrap();
        assert_eq!(capabilities.len(), 2);
        for capability in capabilities {
            for field in ["id", "summary", "outcome"] {
                assert!(capability[field].as_str().is_some_and(|s| !s.is_empty()));
            }
        }
    }

    #[test]
    fn toml_strings_round_trip_whatever_they_hold() {
        for text in ["plain", "with \"quotes\"", "back\\slash", "tab\there", "é"] {
            let table: toml::Table = toml::from_str(&format!("k = {}", toml_string(text))).unwrap();
            assert_eq!(table["k"].as_str(), Some(text));
        }
    }

    #[test]
    fn paths_with_spaces_are_quoted_for_a_shell_style_split() {
        assert_eq!(shell_quote("/usr/bin/agh-worker"), "/usr/bin/agh-worker");
        assert_eq!(
            shell_quote("/opt/my tools/agh-worker"),
            "'/opt/my tools/agh-worker'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
