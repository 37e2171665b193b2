//! What an operator does to the soak's runs while they work: cancel a task whose exec handler is
//! working (its handler group must be gone within [`CANCEL_TOLERANCE`], with no terminal call,
//! which the ledger checks), and pause a task for a moment (its run goes on; the task is resumed
//! shortly after). And what the handlers' slow spawns left: one child per spawn.

use super::markers::{group_alive, read_markers};
use super::*;

/// How long a canceled run's handler group may live on: the worker sees the cancel on the task
/// stream within moments and stops the handler (SIGTERM, the script's trap). A group seen alive
/// by any check later than this is a violation (the checks run every 250 ms, so a group that
/// dies between two of them is judged by the earlier one).
pub(super) const CANCEL_TOLERANCE: Duration = Duration::from_secs(1);

impl Rig {
    /// Cancels or pauses the task of a run whose exec handler is working for its holder.
    pub(super) fn operate(&mut self, now: Instant) {
        let working: Vec<(String, String)> = read_markers(&self.markers)
            .into_iter()
            .filter(|marker| !self.canceled.contains_key(&marker.run_id))
            .filter_map(|marker| {
                let run = self.sim.run(&marker.run_id)?;
                self.holds(&marker, &run)
                    .then_some((marker.run_id, run.task_id))
            })
            .collect();
        if working.is_empty() {
            return;
        }
        let (run_id, task_id) = working[self.rng.usize(..working.len())].clone();
        if self.rng.bool() {
            if self
                .sim
                .cancel_task(&task_id, Some("soak: operator cancel"))
            {
                self.canceled.insert(run_id, now);
                self.report.operator_cancels += 1;
            }
        } else if self.sim.pause_task(&task_id, "soak: operator pause") {
            let resume_at = now + Duration::from_millis(self.rng.u64(300..1_500));
            self.paused.push((task_id, resume_at));
            self.report.pauses += 1;
        }
    }

    /// Resumes the paused tasks whose moment is over (all of them with `all`).
    pub(super) fn resume_paused(&mut self, now: Instant, all: bool) {
        let sim = &self.sim;
        self.paused.retain(|(task_id, at)| {
            if all || *at <= now {
                sim.resume_task(task_id);
                false
            } else {
                true
            }
        });
    }

    /// A canceled run's handler group still alive past [`CANCEL_TOLERANCE`] is a violation.
    pub(super) fn check_canceled(&mut self, now: Instant) {
        let markers = read_markers(&self.markers);
        let mut stopped = Vec::new();
        for (run_id, at) in &self.canceled {
            let alive: Vec<u32> = markers
                .iter()
                .filter(|marker| &marker.run_id == run_id && group_alive(marker.pid))
                .map(|marker| marker.pid)
                .collect();
            if alive.is_empty() {
                self.report.cancels_checked += 1;
                stopped.push(run_id.clone());
            } else if now.duration_since(*at) > CANCEL_TOLERANCE {
                self.report.violations.push(format!(
                    "handler group {alive:?} for run {run_id} still runs {} ms after an operator cancel",
                    now.duration_since(*at).as_millis()
                ));
                stopped.push(run_id.clone());
            }
        }
        for run_id in stopped {
            self.canceled.remove(&run_id);
        }
    }

    /// Each spawn names its child; a spawn asked again after a lost or late answer would make a
    /// second child of the same name. Every (parent, name) must be one child.
    pub(super) fn check_children(&mut self) {
        let listed = self.sim.sessions_listed();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        for session in listed["sessions"].as_array().into_iter().flatten() {
            let Some(parent) = session["lineage"]["parent_session_id"].as_str() else {
                continue;
            };
            let name = session["name"].as_str().unwrap_or_default().to_string();
            *seen.entry((parent.to_string(), name)).or_insert(0) += 1;
        }
        self.report.children = seen.values().sum();
        for ((parent, name), count) in seen {
            if count > 1 {
                self.report.violations.push(format!(
                    "{count} child sessions named {name:?} of session {parent}: a spawn was asked twice"
                ));
            }
        }
    }
}
