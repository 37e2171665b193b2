//! The handler lines: one per `[[handlers]]` entry (its settings), and the probes of what
//! handlers talk to (a webhook's sidecar, Agentuity with a coder key).

use serde_json::Value;

use super::{CheckLine, Status};
use crate::config::Origin;
use crate::handler::exec::ExecConfig;
use crate::handler::{HandlerConfig, HandlerKind};

/// One line per handler, plus a failing line when there are none (`run` refuses to start then).
pub(super) fn handler_checks(
    handlers: &[HandlerConfig],
    origin: Option<&Origin>,
) -> Vec<CheckLine> {
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
pub(super) async fn webhook_probes(
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
pub(super) async fn coder_probes(
    handlers: &[HandlerConfig],
    timeout: std::time::Duration,
) -> Vec<CheckLine> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
