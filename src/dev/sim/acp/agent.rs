//! An agent process as AGH runs one: launched from the provider command with the session's
//! variables, in its own process group, spoken to in ACP (JSON-RPC 2.0, one object per line) on
//! its stdin and stdout, and stopped as AGH stops it. Every stdout line is kept, so tests can
//! check that the agent wrote nothing but JSON-RPC there.
//!
//! AGH's side: `internal/acp/client.go` (launch ~244-320, stop ~841-896),
//! `internal/session/manager_start.go` ~654-686 (the variables), `internal/procutil/env.go`
//! ~54-82 (credential-shaped names stripped), `internal/subprocess/process.go` ~405-486 (the
//! group signals).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{oneshot, watch};

use crate::util::sync::lock;

/// How long AGH waits for an agent's answer to one request before giving up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether AGH strips `name` from the environment it hands its agents.
pub fn credential_shaped(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["API_KEY", "TOKEN", "AUTH", "SESSION"]
        .iter()
        .any(|part| upper.contains(part))
        || upper.ends_with("_KEY")
}

/// What the agent process is launched with.
#[derive(Clone, Debug)]
pub(super) struct Launch {
    /// The provider command's words.
    pub(super) argv: Vec<String>,
    /// The working directory: the session's workspace root.
    pub(super) cwd: std::path::PathBuf,
    /// The environment, before credential-shaped names are stripped: the daemon's own.
    pub(super) inherited: Vec<(String, String)>,
    /// Set after stripping: the session's `AGH_*` variables.
    pub(super) session_vars: Vec<(String, String)>,
}

/// The agent's stdin, shared by the requests sent to it and the answers to its own requests.
type SharedStdin = Arc<tokio::sync::Mutex<Option<ChildStdin>>>;

/// A running (or ended) agent process and its ACP connection.
#[derive(Debug)]
pub struct AgentProcess {
    pgid: u32,
    stdin: SharedStdin,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_id: AtomicU64,
    stdout: Arc<Mutex<Vec<String>>>,
    exited: watch::Receiver<bool>,
}

impl AgentProcess {
    /// Starts the process; `on_exit` runs once when it has exited.
    pub(super) fn launch(
        launch: &Launch,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> Result<AgentProcess, String> {
        let (program, args) = launch
            .argv
            .split_first()
            .ok_or_else(|| "the provider command is empty".to_string())?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(
                launch
                    .inherited
                    .iter()
                    .filter(|(name, _)| !credential_shaped(name))
                    .map(|(name, value)| (name, value)),
            )
            .envs(launch.session_vars.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start the agent {program:?}: {err}"))?;
        let pgid = child.id().unwrap_or_default();
        let stdin: SharedStdin = Arc::new(tokio::sync::Mutex::new(child.stdin.take()));
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "the agent's stdout is not a pipe".to_string())?;
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (exited_tx, exited) = watch::channel(false);
        tokio::spawn(read_stdout(
            stdout,
            pending.clone(),
            lines.clone(),
            stdin.clone(),
        ));
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exited_tx.send(true);
            on_exit();
        });
        Ok(AgentProcess {
            pgid,
            stdin,
            pending,
            next_id: AtomicU64::new(0),
            stdout: lines,
            exited,
        })
    }

    /// Sends one request and waits for its answer: the `result`, or the `error` as text.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (answer_tx, answer) = oneshot::channel();
        lock(&self.pending).insert(id, answer_tx);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| format!("the agent did not answer {method} within {ANSWER_TIMEOUT:?}"))?
            .map_err(|_| format!("the agent's stdout closed before it answered {method}"))?;
        match answer.get("error") {
            Some(error) => Err(format!(
                "the agent answered {method} with an error: {error}"
            )),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Sends one notification.
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), String> {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    async fn send(&self, message: Value) -> Result<(), String> {
        send_line(&self.stdin, &message).await
    }

    /// Closes the agent's stdin (AGH's stop).
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }

    /// Waits up to `within` for the process to exit; answers whether it did.
    pub async fn wait_exit(&self, within: Duration) -> bool {
        let mut exited = self.exited.clone();
        tokio::time::timeout(within, exited.wait_for(|exited| *exited))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// The process id, which is also its group's id.
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// Whether the process has exited.
    pub fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    /// Sends `signal` to the agent's process group.
    pub fn signal_group(&self, signal: rustix::process::Signal) {
        let Ok(raw) = i32::try_from(self.pgid) else {
            return;
        };
        if raw <= 1 {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(raw) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Every line the agent wrote on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }
}

/// Writes one JSON-RPC message as one line.
async fn send_line(stdin: &SharedStdin, message: &Value) -> Result<(), String> {
    let mut line = message.to_string();
    line.push('\n');
    let mut stdin = stdin.lock().await;
    let pipe = stdin
        .as_mut()
        .ok_or_else(|| "the agent's stdin is closed".to_string())?;
    pipe.write_all(line.as_bytes())
        .await
        .map_err(|err| format!("cannot write to the agent: {err}"))?;
    pipe.flush()
        .await
        .map_err(|err| format!("cannot write to the agent: {err}"))
}

async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    lines: Arc<Mutex<Vec<String>>>,
    stdin: SharedStdin,
) {
    let mut reader = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        lock(&lines).push(line.clone());
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match (message.get("method"), message.get("id")) {
            // An answer to one of ours.
            (None, Some(id)) => {
                if let Some(answer) = id.as_u64().and_then(|id| lock(&pending).remove(&id)) {
                    let _ = answer.send(message);
                }
            }
            // The agent's own request: what the simulator does not serve, as AGH answers a
            // method it does not serve (`internal/acp/handlers.go` ~77-109).
            (Some(method), Some(id)) => {
                let _ = send_line(&stdin, &method_not_found(id, method)).await;
            }
            // Notifications (`session/update`) need no answer.
            _ => {}
        }
    }
}

/// The `-32601` answer to a request whose method is not served.
pub fn method_not_found(id: &Value, method: &Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32601, "message": "Method not found", "data": {"method": method}}
    })
}

/// AGH's `initialize` params, verbatim (`internal/acp/client.go` ~396-429).
pub fn initialize_params() -> Value {
    json!({
        "clientCapabilities": {
            "auth": {},
            "fs": {"readTextFile": true, "writeTextFile": true},
            "terminal": true
        },
        "clientInfo": {"name": "agh", "version": "dev"},
        "protocolVersion": 1
    })
}

/// A `session/prompt`'s params; `synthetic` is the scheduler wake's `_meta.synthetic`
/// (`internal/acp/client.go` ~944-1001, `internal/daemon/scheduler_runtime.go` ~586-620).
pub fn prompt_params(acp_session_id: &str, text: &str, synthetic: Option<Value>) -> Value {
    let meta = match synthetic {
        Some(synthetic) => json!({"turn_source": "synthetic", "synthetic": synthetic}),
        None => json!({"turn_source": "user"}),
    };
    json!({
        "_meta": meta,
        "prompt": [{"type": "text", "text": text}],
        "sessionId": acp_session_id
    })
}

/// The session's working directory must exist for the launch; said plainly when it does not.
pub(super) fn check_cwd(cwd: &Path) -> Result<(), String> {
    if cwd.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the workspace root {} is not a directory",
            cwd.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_agents_own_requests_are_answered_method_not_found() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let answers = dir.path().join("answers");
        // An agent that asks for a permission and a file, then records what it was answered.
        let script = format!(
            r#"echo '{{"jsonrpc":"2.0","id":7,"method":"session/request_permission","params":{{}}}}'
echo '{{"jsonrpc":"2.0","id":"f","method":"fs/read_text_file","params":{{"path":"/etc/hostname"}}}}'
read first; read second; printf '%s\n%s\n' "$first" "$second" > '{}'"#,
            answers.display()
        );
        let launch = Launch {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            cwd: dir.path().to_path_buf(),
            inherited: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            session_vars: Vec::new(),
        };
        let process = AgentProcess::launch(&launch, || {}).expect("launches");
        assert!(process.wait_exit(Duration::from_secs(10)).await, "exits");
        let written = std::fs::read_to_string(&answers).expect("the agent recorded its answers");
        let lines: Vec<Value> = written
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON-RPC"))
            .collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert_eq!(lines[0]["id"], 7);
        assert_eq!(lines[0]["error"]["code"], -32601);
        assert_eq!(
            lines[0]["error"]["data"]["method"],
            "session/request_permission"
        );
        assert_eq!(lines[1]["id"], "f");
        assert_eq!(lines[1]["error"]["code"], -32601);
    }
}
