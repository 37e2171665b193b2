//! Handler health: whether each configured handler can work, written by the handler's runs and
//! read by `/readyz`, `/status` and `/metrics`. A handler that needs a person to act (a refused
//! key) reports itself unhealthy; the next accepted call makes it healthy again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::util::sync::lock;
use tokio::time::Instant;

/// A handler that cannot work until a person acts (Agentuity refused its key, say).
#[derive(Clone, Debug, PartialEq)]
pub struct UnhealthyHandler {
    pub name: String,
    /// What is wrong and what to do, in one sentence; never a secret.
    pub reason: String,
    /// When it became unhealthy (it has been, without a break, since).
    pub since: SystemTime,
    pub since_instant: Instant,
}

/// One configured handler's record.
#[derive(Clone, Debug, Default)]
struct HandlerRecord {
    /// Bumped when the record is reset, so a run that started before the reset cannot write
    /// its stale verdict over the fresh record.
    generation: u64,
    problem: Option<UnhealthyHandler>,
}

/// Per handler name: healthy, or unhealthy with a reason and since when. Handlers write it
/// through a [`HandlerHealthReporter`]; the health server reads it through the status board.
/// Cloned handles share the record.
#[derive(Clone, Debug, Default)]
pub struct HandlerHealth {
    inner: Arc<Mutex<HandlerRecords>>,
}

#[derive(Debug, Default)]
struct HandlerRecords {
    by_name: BTreeMap<String, HandlerRecord>,
    next_generation: u64,
}

impl HandlerHealth {
    fn lock(&self) -> MutexGuard<'_, HandlerRecords> {
        lock(&self.inner)
    }

    /// Makes the record follow a new handler table: `handlers` are the configured names, each
    /// with whether its old verdict still stands. Names no longer configured are dropped; a
    /// verdict that no longer stands is cleared, and reports from runs that started before are
    /// ignored from now on.
    pub fn configure<I, S>(&self, handlers: I)
    where
        I: IntoIterator<Item = (S, bool)>,
        S: Into<String>,
    {
        let mut records = self.lock();
        let mut old = std::mem::take(&mut records.by_name);
        for (name, verdict_stands) in handlers {
            let name = name.into();
            let record = match old.remove(&name) {
                Some(record) if verdict_stands => record,
                _ => {
                    records.next_generation += 1;
                    HandlerRecord {
                        generation: records.next_generation,
                        problem: None,
                    }
                }
            };
            records.by_name.insert(name, record);
        }
    }

    /// The reporter one run of handler `name` writes through.
    pub fn reporter(&self, name: &str) -> HandlerHealthReporter {
        let mut records = self.lock();
        let generation = records
            .by_name
            .entry(name.to_string())
            .or_default()
            .generation;
        HandlerHealthReporter {
            health: self.clone(),
            name: name.to_string(),
            generation,
        }
    }

    /// Every configured handler with whether it is healthy, by name.
    pub fn handlers(&self) -> Vec<(String, bool)> {
        self.lock()
            .by_name
            .iter()
            .map(|(name, record)| (name.clone(), record.problem.is_none()))
            .collect()
    }

    /// The unhealthy handlers, by name.
    pub fn unhealthy(&self) -> Vec<UnhealthyHandler> {
        self.lock()
            .by_name
            .values()
            .filter_map(|record| record.problem.clone())
            .collect()
    }

    fn set(&self, name: &str, generation: u64, reason: Option<String>) {
        let mut records = self.lock();
        let Some(record) = records
            .by_name
            .get_mut(name)
            .filter(|r| r.generation == generation)
        else {
            return;
        };
        match (reason, &mut record.problem) {
            (Some(reason), Some(problem)) => problem.reason = reason,
            (Some(reason), problem @ None) => {
                tracing::warn!(handler = name, reason = %reason, "handler unhealthy: /readyz reports handler_unhealthy until a run with it succeeds");
                *problem = Some(UnhealthyHandler {
                    name: name.to_string(),
                    reason,
                    since: SystemTime::now(),
                    since_instant: Instant::now(),
                });
            }
            (None, problem @ Some(_)) => {
                tracing::info!(handler = name, "handler healthy again");
                *problem = None;
            }
            (None, None) => {}
        }
    }
}

/// What one run of a handler writes its health through.
#[derive(Clone, Debug, Default)]
pub struct HandlerHealthReporter {
    health: HandlerHealth,
    name: String,
    generation: u64,
}

impl HandlerHealthReporter {
    /// The handler cannot work until a person acts; `reason` says what to do (never a secret).
    pub fn unhealthy(&self, reason: impl Into<String>) {
        self.health
            .set(&self.name, self.generation, Some(reason.into()));
    }

    /// The handler just worked (a call it makes was accepted).
    pub fn healthy(&self) {
        self.health.set(&self.name, self.generation, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_stays_unhealthy_from_its_first_refusal_until_a_call_succeeds() {
        let health = HandlerHealth::default();
        health.configure([("coder", false), ("exec", false)]);
        let coder = health.reporter("coder");
        coder.unhealthy("Agentuity refused the key (401)");
        let first = health.unhealthy();
        coder.unhealthy("Agentuity denied the key access (403)");
        let again = health.unhealthy();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].name, "coder");
        assert_eq!(again[0].reason, "Agentuity denied the key access (403)");
        assert_eq!(again[0].since, first[0].since, "since the first refusal");
        assert_eq!(
            health.handlers(),
            vec![("coder".to_string(), false), ("exec".to_string(), true)]
        );
        coder.healthy();
        assert!(health.unhealthy().is_empty());
    }

    #[test]
    fn a_new_table_drops_removed_handlers_resets_the_others_it_says_and_ignores_older_runs() {
        let health = HandlerHealth::default();
        health.configure([("kept", false), ("reset", false), ("removed", false)]);
        let old_runs: Vec<HandlerHealthReporter> = ["kept", "reset", "removed"]
            .iter()
            .map(|name| health.reporter(name))
            .collect();
        for run in &old_runs {
            run.unhealthy("refused");
        }
        health.configure([("kept", true), ("reset", false), ("added", true)]);
        let names = |list: Vec<UnhealthyHandler>| -> Vec<String> {
            list.into_iter().map(|h| h.name).collect()
        };
        assert_eq!(names(health.unhealthy()), vec!["kept".to_string()]);
        assert_eq!(
            health.handlers(),
            vec![
                ("added".to_string(), true),
                ("kept".to_string(), false),
                ("reset".to_string(), true)
            ]
        );
        // A run of the old table ending now says nothing about the reset or removed handler.
        for run in &old_runs {
            run.unhealthy("refused again");
        }
        assert_eq!(names(health.unhealthy()), vec!["kept".to_string()]);
        health
            .reporter("reset")
            .unhealthy("refused by a run of the new table");
        assert_eq!(
            names(health.unhealthy()),
            vec!["kept".to_string(), "reset".to_string()]
        );
    }
}
