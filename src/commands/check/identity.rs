//! The identity line: `GET /api/agent/me` with the configured identity and timeouts. Its answer
//! also feeds the claim line ([`super::claim`]).

use super::{CheckLine, Status};
use crate::api::AghClient;
use crate::api::types::Me;
use crate::config;

/// `GET /api/agent/me` with the configured identity and timeouts: the line, and `me` when AGH
/// answered it.
pub(super) async fn identity_check(
    config: &config::Config,
    endpoint: Option<crate::api::Endpoint>,
    probe: bool,
) -> (CheckLine, Option<Me>) {
    let skip = |why: &str| CheckLine::new("identity", Status::Skip, format!("identity: {why}"));
    if !probe {
        return (skip("not probed (--no-probe)"), None);
    }
    let Some(endpoint) = endpoint else {
        return (skip("not probed: no endpoint"), None);
    };
    let identity = config.identity();
    if config.attach.socket_path().is_some() && identity.session_id.is_empty() {
        return (
            skip("none of its own: a resident worker speaks as each attached session"),
            None,
        );
    }
    if identity.session_id.is_empty() || identity.agent.is_empty() {
        return (
            skip("not probed: agh.session_id and agh.agent must both be set"),
            None,
        );
    }
    let client = match AghClient::new(endpoint.clone(), identity.clone(), config.client_options()) {
        Ok(client) => client,
        Err(err) => {
            let line = CheckLine::new(
                "identity",
                Status::Fail,
                format!("cannot build a client for {endpoint}: {err}"),
            );
            return (line, None);
        }
    };
    let answer = client.me().await;
    let line = match &answer {
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
    };
    (line, answer.ok())
}
