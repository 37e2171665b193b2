//! An exec handler's configuration (`handlers[].exec`): the program, its arguments and
//! environment, the caps on what it writes, and the checks `agh-worker check` reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables never passed through from the worker's environment, whatever `pass_env` says.
const NEVER_PASSED: &[&str] = &["AGENTUITY_SDK_KEY"];
/// Prefix of the worker's own configuration variables; they may hold secrets.
const WORKER_CONFIG_PREFIX: &str = "AGH_WORKER__";
/// Name fragments that mark a variable as a secret (compared case-insensitively).
const SECRET_MARKERS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"];

/// Configuration of one exec handler (`handlers[].exec`).
#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// The program to run: a path, or a bare name looked up on the passed `PATH`.
    pub program: PathBuf,
    /// Arguments, passed as they are (no shell).
    pub args: Vec<String>,
    /// Working directory of the program; the worker's own when unset.
    pub working_dir: Option<PathBuf>,
    /// Extra variables set for the program; explicit, so secrets may be given here on purpose.
    pub env: BTreeMap<String, String>,
    /// Names of worker environment variables passed through; nothing else is inherited.
    pub pass_env: Vec<String>,
    /// Grace between SIGTERM and SIGKILL when the run is stopped, in milliseconds.
    pub kill_grace_ms: u64,
    /// Bytes of stdout log (non-protocol lines) kept; the tail is kept.
    pub stdout_cap_bytes: usize,
    /// Bytes of stderr kept; the tail is kept.
    pub stderr_cap_bytes: usize,
    /// Longest protocol line accepted; longer lines are truncated and treated as log.
    pub max_line_bytes: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            program: PathBuf::new(),
            args: Vec::new(),
            working_dir: None,
            env: BTreeMap::new(),
            pass_env: ["PATH", "HOME", "LANG", "TZ"]
                .into_iter()
                .map(String::from)
                .collect(),
            kill_grace_ms: 5000,
            stdout_cap_bytes: 64 * 1024,
            stderr_cap_bytes: 64 * 1024,
            max_line_bytes: 1024 * 1024,
        }
    }
}

/// Written by hand so that `env` values, which may be secrets given on purpose, never reach a
/// log line or an error through `{:?}`; their names are shown.
impl std::fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: BTreeMap<&str, &str> = self
            .env
            .keys()
            .map(|name| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ExecConfig")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("working_dir", &self.working_dir)
            .field("env", &env)
            .field("pass_env", &self.pass_env)
            .field("kill_grace_ms", &self.kill_grace_ms)
            .field("stdout_cap_bytes", &self.stdout_cap_bytes)
            .field("stderr_cap_bytes", &self.stderr_cap_bytes)
            .field("max_line_bytes", &self.max_line_bytes)
            .finish()
    }
}

impl ExecConfig {
    /// Every problem with this configuration, each naming the key under `path`
    /// (e.g. `handlers[0].exec`) and saying what to change. Empty when it is usable.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.program.as_os_str().is_empty() {
            problems.push(format!(
                "{path}.program is empty: set it to the program to run for each task"
            ));
        } else if let Some(problem) = program_problem(&self.program, self.working_dir.as_deref()) {
            problems.push(format!("{path}.program: {problem}"));
        }
        if let Some(dir) = &self.working_dir
            && !dir.is_dir()
        {
            problems.push(format!(
                "{path}.working_dir: {} is not an existing directory: create it or change the setting",
                quoted(dir)
            ));
        }
        for name in &self.pass_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!(
                    "{path}.pass_env: {name:?} is not a variable name: remove it"
                ));
            } else if let Some(why) = refused_pass_env(name)
                && !self.env.contains_key(name)
            {
                problems.push(format!(
                    "{path}.pass_env: {name:?} is never passed through ({why}): remove it, or set \
                     the value explicitly in {path}.env if the program really needs it"
                ));
            }
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!(
                    "{path}.env: {name:?} is not a variable name: remove it"
                ));
            }
        }
        if self.max_line_bytes == 0 {
            problems.push(format!(
                "{path}.max_line_bytes is 0: no protocol line would fit; use at least 4096 (default 1048576)"
            ));
        }
        problems
    }
}

/// Why `program` cannot be started, if that can be told without starting it.
fn program_problem(program: &Path, working_dir: Option<&Path>) -> Option<String> {
    let has_separator = program.components().count() > 1 || program.is_absolute();
    if has_separator {
        let resolved = match working_dir {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_path_buf(),
        };
        return match std::fs::metadata(&resolved) {
            Err(err) => Some(format!(
                "cannot use {}: {err}: check the path",
                quoted(&resolved)
            )),
            Ok(meta) if !meta.is_file() => Some(format!(
                "{} is not a file: point it at the program itself",
                quoted(&resolved)
            )),
            Ok(meta) if !is_executable(&meta) => Some(format!(
                "{} is not executable: chmod +x it",
                quoted(&resolved)
            )),
            Ok(_) => None,
        };
    }
    // A bare name is looked up on the PATH the program will get: the worker's, when passed.
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && is_executable(&meta))
    });
    (!found).then(|| {
        format!(
            "{} was not found on PATH: give its full path",
            quoted(program)
        )
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

pub(super) fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Why a `pass_env` name is refused, or `None` when it may pass.
pub(super) fn refused_pass_env(name: &str) -> Option<&'static str> {
    if name.starts_with(WORKER_CONFIG_PREFIX) {
        return Some("the worker's own configuration");
    }
    if NEVER_PASSED.contains(&name) {
        return Some("the worker's own credential");
    }
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS
        .iter()
        .any(|marker| upper.contains(marker))
        .then_some("its name marks it as a secret")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_names_are_refused_for_pass_through() {
        for name in [
            "MY_API_KEY",
            "github_token",
            "Db_Password",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "AGH_WORKER__AGH__SESSION_ID",
            "AGENTUITY_SDK_KEY",
        ] {
            assert!(refused_pass_env(name).is_some(), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "AGH_HOME",
            "AGH_WORKER_RUN_ID",
        ] {
            assert!(refused_pass_env(name).is_none(), "{name}");
        }
    }

    #[test]
    fn the_default_config_asks_for_a_program() {
        let config = ExecConfig::default();
        assert_eq!(config.pass_env, ["PATH", "HOME", "LANG", "TZ"]);
        let problems = config.problems("handlers[0].exec");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("handlers[0].exec.program is empty"));
    }

    #[test]
    fn problems_name_every_bad_setting() {
        let config = ExecConfig {
            program: "/definitely/not/here".into(),
            working_dir: Some("/definitely/not/a/dir".into()),
            pass_env: vec!["PATH".into(), "MY_API_KEY".into(), "".into()],
            max_line_bytes: 0,
            ..ExecConfig::default()
        };
        let problems = config.problems("handlers[1].exec");
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().all(|p| p.starts_with("handlers[1].exec.")));
        assert!(problems[0].contains("/definitely/not/here"));
    }

    #[test]
    fn an_explicit_value_makes_a_secret_name_acceptable() {
        let config = ExecConfig {
            program: "sh".into(),
            pass_env: vec!["MY_API_KEY".into()],
            env: [("MY_API_KEY".to_string(), "given".to_string())].into(),
            ..ExecConfig::default()
        };
        assert_eq!(config.problems("h"), Vec::<String>::new());
    }

    #[test]
    fn debug_output_shows_env_names_but_never_their_values() {
        let config = ExecConfig {
            program: "/usr/local/bin/handler".into(),
            env: [("DEPLOY_TOKEN".to_string(), "tok-very-secret-42".to_string())].into(),
            ..ExecConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("tok-very-secret-42"), "{text}");
        assert!(text.contains("\"DEPLOY_TOKEN\": \"<redacted>\""), "{text}");
        assert!(text.contains("/usr/local/bin/handler"), "{text}");
    }

    #[test]
    fn the_config_rejects_unknown_keys() {
        let err = serde_json::from_value::<ExecConfig>(json!({"program": "x", "argz": []}));
        assert!(err.is_err());
        let config: ExecConfig = serde_json::from_value(json!({"program": "x"})).unwrap();
        assert_eq!(config.kill_grace_ms, 5000);
        assert_eq!(config.max_line_bytes, 1 << 20);
    }
}
