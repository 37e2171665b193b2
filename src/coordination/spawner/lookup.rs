//! Finding the child of a spawn whose answer was lost. AGH ignores `idempotency_key` and starts
//! the child's agent inside the request (`internal/session/spawn.go` Spawn → Create), so a spawn
//! asked again after a lost answer can make a second child. Instead the spawner names every child
//! it asks for and, when no answer says what happened, looks for that name among this session's
//! children (`GET /api/sessions`, `lineage.parent_session_id`) before deciding anything.

use crate::api::types::{SessionState, SpawnedSession};
use crate::api::{ApiError, ErrorKind};

/// Whether a failed spawn may still have created a child: no answer at all, or one that does not
/// say what happened. A 5xx counts: AGH answers 500 when a hook fails after the child was created
/// (`spawn.go` ~104-106).
pub fn outcome_unknown(err: &ApiError) -> bool {
    matches!(
        err.kind,
        ErrorKind::Transport
            | ErrorKind::Timeout
            | ErrorKind::Server
            | ErrorKind::MalformedBody
            | ErrorKind::ResponseTooLarge
            | ErrorKind::UnexpectedStatus
    )
}

/// The name a child is asked for under: the handler's own, else `<agent>-<run>-<nonce>`, so that
/// it can be told apart from its siblings if the answer is lost.
pub fn child_name(asked: Option<&str>, agent: &str, run_id: &str, nonce: u64) -> String {
    if let Some(name) = asked.map(str::trim).filter(|name| !name.is_empty()) {
        return name.to_string();
    }
    let run: String = run_id
        .chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{agent}-{run}-{nonce:x}")
}

/// What the children list says of one spawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The child is there and active: the spawn took effect.
    Found(SpawnedSession),
    /// A child by that name exists but is not active (still starting after the request was
    /// given up, which makes AGH fail its start, or stopping, or stopped).
    NotActive(SpawnedSession),
    /// No child by that name.
    Absent,
}

/// Among `children` (this session's, as AGH lists them), the one this spawn made: the same name
/// and agent, and not a child the worker already knew of (`known`, ids).
pub fn find(children: &[SpawnedSession], name: &str, agent: &str, known: &[String]) -> Lookup {
    let mut candidates = children.iter().filter(|child| {
        child.name.as_deref().map(str::trim) == Some(name)
            && child
                .agent_name
                .as_deref()
                .is_none_or(|child_agent| child_agent.trim() == agent)
            && !known.contains(&child.id)
    });
    let mut inactive = None;
    for child in candidates.by_ref() {
        match &child.state {
            None | Some(SessionState::Active) => return Lookup::Found(child.clone()),
            Some(_) => inactive = inactive.or_else(|| Some(child.clone())),
        }
    }
    inactive.map_or(Lookup::Absent, Lookup::NotActive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(id: &str, name: &str, agent: &str, state: SessionState) -> SpawnedSession {
        SpawnedSession {
            id: id.into(),
            name: Some(name.into()),
            agent_name: Some(agent.into()),
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn a_child_is_named_after_the_ask_or_after_its_agent_and_run() {
        assert_eq!(child_name(Some(" r1 "), "helper", "run-1", 7), "r1");
        assert_eq!(
            child_name(None, "helper", "run-0123456789abcdef", 255),
            "helper-89abcdef-ff"
        );
        assert_eq!(child_name(Some(""), "helper", "r", 1), "helper-r-1");
    }

    #[test]
    fn only_an_active_unknown_child_of_the_same_name_and_agent_counts_as_found() {
        let children = vec![
            child("s-old", "r1", "helper", SessionState::Active),
            child("s-other", "r2", "helper", SessionState::Active),
            child("s-agent", "r1", "reviewer", SessionState::Active),
            child("s-new", "r1", "helper", SessionState::Active),
        ];
        let known = vec!["s-old".to_string()];
        assert!(
            matches!(find(&children, "r1", "helper", &known), Lookup::Found(c) if c.id == "s-new")
        );
        assert_eq!(find(&children, "r3", "helper", &known), Lookup::Absent);
        let stopped = vec![child("s-x", "r1", "helper", SessionState::Stopped)];
        assert!(matches!(
            find(&stopped, "r1", "helper", &[]),
            Lookup::NotActive(c) if c.id == "s-x"
        ));
    }

    #[test]
    fn no_answer_and_a_server_error_leave_the_outcome_unknown_but_a_refusal_does_not() {
        let err = |kind| ApiError::local("spawn", kind, "x");
        assert!(outcome_unknown(&err(ErrorKind::Timeout)));
        assert!(outcome_unknown(&err(ErrorKind::Transport)));
        assert!(outcome_unknown(&err(ErrorKind::Server)));
        assert!(!outcome_unknown(&err(ErrorKind::SpawnLimit)));
        assert!(!outcome_unknown(&err(ErrorKind::SpawnValidation)));
    }
}
