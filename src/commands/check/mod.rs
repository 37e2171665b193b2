//! `agh-worker check`: everything `run` would need, tested in one go and reported as a checklist.
//!
//! Meant for the moment after installing or changing a deployment (`systemctl`, a container, a
//! sidecar): it loads the configuration without stopping at the first problem, shows where every
//! effective value came from, resolves the AGH endpoint, asks AGH who this session is and what it
//! can claim, checks each handler, and probes what handlers talk to (a webhook's URL, Agentuity
//! with a coder key). Exit codes match `run`'s: 64 when the configuration cannot even be loaded
//! (syntax, unknown keys, mistyped values), 1 when any check fails, 0 when all pass (warnings
//! included).

mod claim;
mod files;
mod handlers;
mod identity;
mod mode;
mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::cli::{CheckArgs, Cli};
use crate::config::{self, ConfigSources, LoadedConfig, resolve_endpoint};
use crate::exit;

pub use files::resolve_file;
pub use render::render;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not checked (a previous failure makes it meaningless, or this build cannot check it).
    Skip,
    /// Works, but will not do what a worker is for (e.g. nothing could ever be claimed); does not
    /// change the exit code.
    Warn,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "–",
            Status::Warn => "!",
        }
    }
}

/// One checklist line, with its details (problems, or what was found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    /// Stable identifier for scripts: `config`, `endpoint`, `identity`, `claim`, `handlers`,
    /// `handler:<name>`, `webhook:<name>`, `coder:<name>`, `file:<key>`, `mode`.
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

    let (identity, me) = identity::identity_check(config, endpoint, probe).await;
    checks.push(identity);
    checks.push(mode::mode_check(config));
    checks.push(claim::claim_check(me.as_ref(), &config.worker));
    checks.extend(handlers::handler_checks(
        &config.handlers,
        loaded.origin("handlers"),
    ));
    if probe {
        let timeout = config.agh.request_timeout();
        checks.extend(handlers::webhook_probes(&config.handlers, timeout).await);
        checks.extend(handlers::coder_probes(&config.handlers, timeout).await);
    }
    checks.extend(files::credential_file_checks(config));

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::HandlerConfig;

    fn loaded(config: config::Config) -> LoadedConfig {
        LoadedConfig {
            config,
            origins: Default::default(),
            file_used: None,
        }
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
}
