//! `agh-worker check`: everything `run` would need, tested in one go and reported as a checklist.
//!
//! Meant for the moment after installing or changing a deployment (`systemctl`, a container, a
//! sidecar): it loads the configuration without stopping at the first problem, shows where every
//! effective value came from, resolves the AGH endpoint, asks AGH who this session is, checks
//! each handler, and probes what handlers talk to (a webhook's URL, Agentuity with a coder key). Exit codes match `run`'s: 64 when the configuration cannot even be loaded (syntax,
//! unknown keys, mistyped values), 1 when any check fails, 0 when all pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::api::AghClient;
use crate::cli::{CheckArgs, Cli};
use crate::config::{self, ConfigSources, LoadedConfig, Origin, resolve_endpoint};
use crate::exit;
use crate::handler::exec::ExecConfig;
use crate::handler::{HandlerConfig, HandlerKind};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not checked (a previous failure makes it meaningless, or this build cannot check it).
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "–",
        }
    }
}

/// One checklist line, with its details (problems, or what was found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    /// Stable identifier for scripts: `config`, `endpoint`, `identity`, `handlers`,
    /// `handler:<name>`, `webhook:<name>`, `coder:<name>`, `file:<key>`.
    pub id: String,
    pub status: Status,
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl CheckLine {
    fn new(id: impl Into<String>, status: Status, summary: impl Into<String>) -> Self {
        CheckLine {
            id: id.into(),
            status,
            summary: summary.into(),
            details: Vec::new(),
        }
    }

    fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// One effective setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: String,
    /// The value as JSON; the string `<redacted>` for secret-looking keys.
    pub value: Value,
    /// `default`, `file …`, `env NAME` or `flag`.
    pub origin: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// True when no check failed.
    pub ok: bool,
    pub exit_code: u8,
    /// The configuration file read, if any.
    pub config_file: Option<PathBuf>,
    pub settings: Vec<Setting>,
    pub checks: Vec<CheckLine>,
}

/// `agh-worker check`: prints the checklist (or JSON with `--json`) and answers the exit code.
pub async fn run(cli: &Cli, args: &CheckArgs) -> ExitCode {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    let mut stdout = std::io::stdout().lock();
    let loaded = match config::load_unvalidated(&sources) {
        Ok(loaded) => loaded,
        Err(err) => {
            let problems: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
            let line = CheckLine::new("config", Status::Fail, "the configuration cannot be loaded")
                .with_details(problems);
            let report = Report {
                ok: false,
                exit_code: exit::BAD_CONFIG,
                config_file: sources.file.clone(),
                settings: Vec::new(),
                checks: vec![line],
            };
            print_report(&report, cli.json, &mut stdout);
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let report = inspect(&loaded, !args.no_probe).await;
    print_report(&report, cli.json, &mut stdout);
    ExitCode::from(report.exit_code)
}

fn print_report(report: &Report, json: bool, out: &mut dyn Write) {
    let text = if json {
        serde_json::to_string_pretty(report).unwrap_or_default()
    } else {
        render(report)
    };
    // A closed stdout (`check | head`) is not worth a panic; the exit code still tells.
    let _ = writeln!(out, "{text}");
}

/// Runs every check on a loaded configuration; `probe` false skips the calls to AGH and to what
/// handlers talk to.
pub async fn inspect(loaded: &LoadedConfig, probe: bool) -> Report {
    let config = &loaded.config;
    let mut checks = Vec::new();

    let validation = match config.validate() {
        Ok(()) => CheckLine::new("config", Status::Pass, "the configuration is valid"),
        Err(errors) => {
            let details = errors
                .0
                .iter()
                .map(|error| {
                    let mut error = error.clone();
                    error.origin = loaded.origins.get(&error.key).cloned();
                    error.to_string()
                })
                .collect::<Vec<_>>();
            CheckLine::new(
                "config",
                Status::Fail,
                format!("the configuration has {} problem(s)", details.len()),
            )
            .with_details(details)
        }
    };
    checks.push(validation);

    let endpoint = match resolve_endpoint(&config.agh) {
        Ok(resolved) => {
            checks.push(CheckLine::new(
                "endpoint",
                Status::Pass,
                format!(
                    "AGH endpoint {} ({})",
                    resolved.endpoint,
                    how_resolved(&resolved.source)
                ),
            ));
            Some(resolved.endpoint)
        }
        Err(err) => {
            checks.push(CheckLine::new(
                "endpoint",
                Status::Fail,
                format!("no AGH endpoint: {err}"),
            ));
            None
        }
    };

    checks.push(identity_check(config, endpoint, probe).await);
    checks.extend(handler_checks(&config.handlers, loaded.origin("handlers")));
    if probe {
        checks.extend(webhook_probes(&config.handlers, config.agh.request_timeout()).await);
        checks.extend(coder_probes(&config.handlers, config.agh.request_timeout()).await);
    }
    checks.extend(credential_file_checks(config));

    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report {
        ok,
        exit_code: if ok { 0 } else { 1 },
        config_file: loaded.file_used.clone(),
        settings: loaded
            .entries()
            .into_iter()
            .map(|entry| Setting {
                // `entries()` writes values as JSON text; a redacted one stays the marker string.
                value: serde_json::from_str(&entry.value).unwrap_or(Value::String(entry.value)),
                key: entry.key,
                origin: entry.origin.to_string(),
            })
            .collect(),
        checks,
    }
}

/// The endpoint source as `kind: why`, e.g. `configured: agh.endpoint` or
/// `agh config: [daemon] socket in /home/op/.agh/config.toml`.
fn how_resolved(source: &config::EndpointSource) -> String {
    format!("{}: {source}", source.kind())
}

/// `GET /api/agent/me` with the configured identity and timeouts.
async fn identity_check(
    config: &config::Config,
    endpoint: Option<crate::api::Endpoint>,
    probe: bool,
) -> CheckLine {
    let skip = |why: &str| CheckLine::new("identity", Status::Skip, format!("identity: {why}"));
    if !probe {
        return skip("not probed (--no-probe)");
    }
    let Some(endpoint) = endpoint else {
        return skip("not probed: no endpoint");
    };
    let identity = config.identity();
    if identity.session_id.is_empty() || identity.agent.is_empty() {
        return skip("not probed: agh.session_id and agh.agent must both be set");
    }
    let client = match AghClient::new(endpoint.clone(), identity.clone(), config.client_options()) {
        Ok(client) => client,
        Err(err) => {
            return CheckLine::new(
                "identity",
                Status::Fail,
                format!("cannot build a client for {endpoint}: {err}"),
            );
        }
    };
    match client.me().await {
        Ok(me) => {
            let session = if me.self_info.session_id.is_empty() {
                identity.session_id.clone()
            } else {
                me.self_info.session_id.clone()
            };
            let agent = if me.self_info.agent_name.is_empty() {
                identity.agent.clone()
            } else {
                me.self_info.agent_name.clone()
            };
            let workspace = me
                .workspace
                .as_ref()
                .and_then(|w| w.id.clone().or_else(|| w.name.clone()))
                .unwrap_or_else(|| "(none)".to_string());
            let leases = match me.active_task_leases.len() {
                0 => "no active lease".to_string(),
                1 => "1 active lease".to_string(),
                n => format!("{n} active leases"),
            };
            let mut details = Vec::new();
            if let Some(state) = me.session.as_ref().and_then(|s| s.state.as_ref()) {
                details.push(format!("session state: {}", state.as_str()));
            }
            for lease in &me.active_task_leases {
                details.push(format!(
                    "holds run {} (task {}) until {}: `run` adopts or releases it at start (worker.orphan_policy)",
                    lease.run_id,
                    lease.task_id.as_deref().unwrap_or("?"),
                    lease.lease_until.as_deref().unwrap_or("?"),
                ));
            }
            CheckLine::new(
                "identity",
                Status::Pass,
                format!(
                    "identity accepted by AGH: session {session}, agent {agent}, workspace {workspace}; {leases}"
                ),
            )
            .with_details(details)
        }
        Err(err) if err.kind.is_identity() => CheckLine::new(
            "identity",
            Status::Fail,
            format!(
                "AGH rejected the identity (session {}, agent {})",
                identity.session_id, identity.agent
            ),
        )
        .with_details(vec![err.to_string()]),
        Err(err) => CheckLine::new(
            "identity",
            Status::Fail,
            format!("AGH did not answer at {endpoint}"),
        )
        .with_details(vec![err.to_string()]),
    }
}

/// One line per handler, plus a failing line when there are none (`run` refuses to start then).
fn handler_checks(handlers: &[HandlerConfig], origin: Option<&Origin>) -> Vec<CheckLine> {
    if handlers.is_empty() {
        return vec![CheckLine::new(
            "handlers",
            Status::Fail,
            "no handlers are configured: `run` would exit 64",
        )
        .with_details(vec![
            "add a [[handlers]] entry to the config file or set AGH_WORKER__HANDLERS (see config/agh-worker.toml)"
                .to_string(),
        ])];
    }
    let from = origin
        .map(|o| o.to_string())
        .unwrap_or_else(|| "default".to_string());
    handlers
        .iter()
        .enumerate()
        .map(|(index, handler)| handler_check(index, handler, &from))
        .collect()
}

fn handler_check(index: usize, handler: &HandlerConfig, from: &str) -> CheckLine {
    let id = format!("handler:{}", handler.name);
    let kind = kind_name(handler.kind);
    let label = format!("handler {:?} ({kind}, {from})", handler.name);
    let path = format!("handlers[{index}]");
    // `if` rather than `match`: the set of kinds grows (webhook, coder), and a kind this check
    // does not know yet must be reported as skipped, not break the build.
    if handler.kind == HandlerKind::Exec {
        let problems = match &handler.exec {
            Some(exec) => exec.problems(&format!("{path}.exec")),
            None => vec![format!(
                "{path}.exec is missing: an exec handler needs [handlers.exec] with at least `program`"
            )],
        };
        let program = handler
            .exec
            .as_ref()
            .map(|e: &ExecConfig| e.program.display().to_string())
            .unwrap_or_default();
        if problems.is_empty() {
            CheckLine::new(id, Status::Pass, format!("{label}: runs {program}"))
        } else {
            CheckLine::new(id, Status::Fail, format!("{label}: cannot run")).with_details(problems)
        }
    } else if handler.kind == HandlerKind::Webhook {
        let problems = match &handler.webhook {
            Some(webhook) => webhook.problems(&format!("{path}.webhook")),
            None => vec![format!(
                "{path}.webhook is missing: a webhook handler needs [handlers.webhook] with at least `url`"
            )],
        };
        let url = handler
            .webhook
            .as_ref()
            .map(|w| w.url.clone())
            .unwrap_or_default();
        if problems.is_empty() {
            CheckLine::new(id, Status::Pass, format!("{label}: posts tasks to {url}"))
        } else {
            CheckLine::new(id, Status::Fail, format!("{label}: cannot post tasks"))
                .with_details(problems)
        }
    } else if handler.kind == HandlerKind::Coder {
        let problems = match &handler.coder {
            Some(coder) => {
                let mut problems = coder.problems(&format!("{path}.coder"));
                // The key may come from the environment; a run without one fails at once.
                if let Err(err) = coder.client.resolve_key(&crate::agentuity::process_env()) {
                    problems.push(format!("{path}.coder: {err}"));
                }
                problems
            }
            None => vec![format!(
                "{path}.coder is missing: a coder handler needs [handlers.coder]"
            )],
        };
        if problems.is_empty() {
            CheckLine::new(
                id,
                Status::Pass,
                format!("{label}: runs tasks as Agentuity Coder sessions"),
            )
        } else {
            CheckLine::new(id, Status::Fail, format!("{label}: cannot start sessions"))
                .with_details(problems)
        }
    } else if handler.kind == HandlerKind::Noop {
        CheckLine::new(
            id,
            Status::Pass,
            format!("{label}: completes every run at once"),
        )
    } else {
        CheckLine::new(
            id,
            Status::Skip,
            format!("{label}: this check does not know how to test this kind yet"),
        )
    }
}

/// One line per webhook handler: does its URL answer at all?
async fn webhook_probes(
    handlers: &[HandlerConfig],
    timeout: std::time::Duration,
) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for handler in handlers {
        let Some(webhook) = handler
            .webhook
            .as_ref()
            .filter(|_| handler.kind == HandlerKind::Webhook)
        else {
            continue;
        };
        let id = format!("webhook:{}", handler.name);
        let line = match crate::handler::webhook::probe(webhook, timeout).await {
            Ok(answer) => CheckLine::new(
                id,
                Status::Pass,
                format!("handler {:?}: {answer}", handler.name),
            ),
            Err(problem) => CheckLine::new(
                id,
                Status::Fail,
                format!("handler {:?}: {problem}", handler.name),
            )
            .with_details(vec![
                "start the sidecar, or fix handlers[].webhook.url".to_string(),
            ]),
        };
        lines.push(line);
    }
    lines
}

/// One line per coder handler with a key: does Agentuity accept it? (A handler without one
/// already fails its `handler:` line.)
async fn coder_probes(handlers: &[HandlerConfig], timeout: std::time::Duration) -> Vec<CheckLine> {
    let env = crate::agentuity::process_env();
    let mut lines = Vec::new();
    for handler in handlers {
        let Some(coder) = handler
            .coder
            .as_ref()
            .filter(|_| handler.kind == HandlerKind::Coder)
            .filter(|coder| coder.client.resolve_key(&env).is_ok())
        else {
            continue;
        };
        let id = format!("coder:{}", handler.name);
        let line = match crate::handler::coder::probe(coder, &env, timeout).await {
            Ok(answer) => CheckLine::new(
                id,
                Status::Pass,
                format!("handler {:?}: {answer}", handler.name),
            ),
            Err(failure) => CheckLine::new(
                id,
                Status::Fail,
                format!("handler {:?}: {}", handler.name, failure.problem),
            )
            .with_details(vec![failure.detail]),
        };
        lines.push(line);
    }
    lines
}

/// The kind as spelled in the configuration.
fn kind_name(kind: HandlerKind) -> String {
    match serde_json::to_value(kind) {
        Ok(Value::String(name)) => name,
        _ => format!("{kind:?}").to_lowercase(),
    }
}

/// Every `…_file` key with a value (such as a webhook handler's `secret_file`) must name a
/// readable file. A relative path is resolved against `$CREDENTIALS_DIRECTORY` when systemd
/// provides one (`LoadCredential=`), else against the working directory.
fn credential_file_checks(config: &config::Config) -> Vec<CheckLine> {
    let tree = serde_json::to_value(config).unwrap_or(Value::Null);
    let mut found = Vec::new();
    collect_file_keys(&tree, String::new(), &mut found);
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    found
        .into_iter()
        .map(|(key, raw)| {
            let path = resolve_file(&raw, credentials.as_deref());
            match std::fs::File::open(&path) {
                Ok(_) => CheckLine::new(
                    format!("file:{key}"),
                    Status::Pass,
                    format!("{key}: {} is readable", path.display()),
                ),
                Err(err) => CheckLine::new(
                    format!("file:{key}"),
                    Status::Fail,
                    format!("{key}: {} cannot be read: {err}", path.display()),
                )
                .with_details(vec![match &credentials {
                    Some(_) => "relative paths are resolved against $CREDENTIALS_DIRECTORY; check the unit's LoadCredential= lines".to_string(),
                    None => "no $CREDENTIALS_DIRECTORY (not started by systemd with LoadCredential=), so a relative path is resolved against the working directory".to_string(),
                }]),
            }
        })
        .collect()
}

fn collect_file_keys(value: &Value, path: String, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match child {
                    Value::String(text) if key.ends_with("_file") && !text.trim().is_empty() => {
                        found.push((child_path, text.clone()));
                    }
                    _ => collect_file_keys(child, child_path, found),
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_file_keys(child, format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// An absolute path as it is; a relative one inside the credentials directory when there is one.
pub fn resolve_file(raw: &str, credentials: Option<&Path>) -> PathBuf {
    let path = Path::new(raw);
    match credentials {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// The checklist for a person.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&match &report.config_file {
        Some(path) => format!("Configuration file: {}\n", path.display()),
        None => "Configuration file: none (defaults, environment and flags only)\n".to_string(),
    });
    if !report.settings.is_empty() {
        out.push_str("\nEffective settings (value, then where it came from):\n");
        let key_width = report
            .settings
            .iter()
            .map(|s| s.key.len())
            .max()
            .unwrap_or(0);
        let value_width = report
            .settings
            .iter()
            .map(|s| s.value.to_string().chars().count().min(40))
            .max()
            .unwrap_or(0);
        for setting in &report.settings {
            out.push_str(&format!(
                "  {:key_width$} = {:value_width$}  ({})\n",
                setting.key,
                setting.value.to_string(),
                setting.origin
            ));
        }
    }
    out.push_str("\nChecks:\n");
    for check in &report.checks {
        out.push_str(&format!("  {} {}\n", check.status.mark(), check.summary));
        for detail in &check.details {
            out.push_str(&format!("      - {detail}\n"));
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    out.push('\n');
    out.push_str(&if failed == 0 {
        "All checks passed.".to_string()
    } else {
        format!(
            "{failed} of {} checks failed (exit {}).",
            report.checks.len(),
            report.exit_code
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(config: config::Config) -> LoadedConfig {
        LoadedConfig {
            config,
            origins: Default::default(),
            file_used: None,
        }
    }

    #[test]
    fn a_coder_handler_is_checked_for_its_settings() {
        let good: HandlerConfig = serde_json::from_value(serde_json::json!({
            "name": "c", "kind": "coder", "coder": {"key": "ag_k"}
        }))
        .unwrap_or_else(|e| panic!("coder handler fixture: {e}"));
        let line = handler_check(0, &good, "file");
        assert_eq!(line.status, Status::Pass, "{line:?}");
        let bad: HandlerConfig = serde_json::from_value(serde_json::json!({
            "name": "c", "kind": "coder", "coder": {"key": "ag_k", "workflow_mode": "maybe"}
        }))
        .unwrap_or_else(|e| panic!("coder handler fixture: {e}"));
        let line = handler_check(0, &bad, "file");
        assert_eq!(line.status, Status::Fail, "{line:?}");
        assert!(
            line.details.iter().any(|d| d.contains("workflow_mode")),
            "{line:?}"
        );
    }

    /// Through serde, not a struct literal: handler kinds add fields of their own.
    fn noop(name: &str) -> HandlerConfig {
        serde_json::from_value(serde_json::json!({"name": name, "kind": "noop"}))
            .unwrap_or_else(|e| panic!("noop handler fixture: {e}"))
    }

    #[tokio::test]
    async fn a_valid_configuration_without_a_probe_passes_every_check_it_makes() {
        let mut config = config::Config::default();
        config.agh.endpoint = "http://127.0.0.1:2123".into();
        config.agh.session_id = "sess-1".into();
        config.agh.agent = "worker".into();
        config.handlers = vec![noop("n")];
        let report = inspect(&loaded(config), false).await;
        assert!(report.ok, "{report:#?}");
        assert_eq!(report.exit_code, 0);
        let identity = report.checks.iter().find(|c| c.id == "identity");
        assert_eq!(identity.map(|c| c.status), Some(Status::Skip));
    }

    #[tokio::test]
    async fn every_validation_problem_and_a_missing_handler_table_fail_the_check() {
        let mut config = config::Config::default();
        config.agh.endpoint = "http://127.0.0.1:2123".into();
        config.worker.lease_seconds = 0;
        let report = inspect(&loaded(config), false).await;
        assert!(!report.ok);
        assert_eq!(report.exit_code, 1);
        let problems = report
            .checks
            .iter()
            .find(|c| c.id == "config")
            .map(|c| c.details.join("\n"))
            .unwrap_or_default();
        assert!(problems.contains("agh.session_id"), "{problems}");
        assert!(problems.contains("agh.agent"), "{problems}");
        assert!(problems.contains("worker.lease_seconds"), "{problems}");
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.id == "handlers" && c.status == Status::Fail)
        );
    }

    #[test]
    fn relative_credential_paths_resolve_inside_the_credentials_directory() {
        let dir = Path::new("/run/credentials/agh-worker.service");
        assert_eq!(
            resolve_file("webhook-secret", Some(dir)),
            dir.join("webhook-secret")
        );
        assert_eq!(
            resolve_file("/etc/agh-worker/secret", Some(dir)),
            PathBuf::from("/etc/agh-worker/secret")
        );
        assert_eq!(
            resolve_file("webhook-secret", None),
            PathBuf::from("webhook-secret")
        );
    }

    #[test]
    fn file_keys_are_found_in_sections_and_in_handler_tables() {
        let tree = serde_json::json!({
            "log": {"level": "info"},
            "handlers": [{"name": "w", "webhook": {"url": "http://x", "secret_file": "s"}}],
        });
        let mut found = Vec::new();
        collect_file_keys(&tree, String::new(), &mut found);
        assert_eq!(
            found,
            vec![(
                "handlers[0].webhook.secret_file".to_string(),
                "s".to_string()
            )]
        );
    }

    #[test]
    fn the_human_checklist_marks_each_line_and_sums_up_failures() {
        let report = Report {
            ok: false,
            exit_code: 1,
            config_file: None,
            settings: vec![Setting {
                key: "agh.endpoint".into(),
                value: Value::String("unix:/run/agh/daemon.sock".into()),
                origin: "env AGH_WORKER__AGH__ENDPOINT".into(),
            }],
            checks: vec![
                CheckLine::new("config", Status::Pass, "the configuration is valid"),
                CheckLine::new("identity", Status::Fail, "AGH did not answer")
                    .with_details(vec!["me: transport".into()]),
            ],
        };
        let text = render(&report);
        assert!(text.contains("✓ the configuration is valid"), "{text}");
        assert!(text.contains("✗ AGH did not answer"), "{text}");
        assert!(text.contains("- me: transport"), "{text}");
        assert!(text.contains("(env AGH_WORKER__AGH__ENDPOINT)"), "{text}");
        assert!(text.ends_with("1 of 2 checks failed (exit 1)."), "{text}");
    }
}
