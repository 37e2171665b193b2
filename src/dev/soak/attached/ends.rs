//! The checks after an attached session's end: the handler groups its slot had at work are
//! gone, and the resident's `/status` no longer lists the slot.

use super::*;

/// A session that has ended, with what must be over by when.
pub(super) struct Ended {
    pub(super) session_id: String,
    /// The resident's handler groups working for it when its end began.
    pub(super) groups: Vec<Work>,
    pub(super) groups_by: Option<Instant>,
    pub(super) slot_by: Option<Instant>,
}

impl Rig {
    /// The checks of ended sessions that are due: their handler groups, then their slot.
    pub(super) async fn check_ended(&mut self, now: Instant) {
        let mut ended = std::mem::take(&mut self.attached.ended);
        for end in &mut ended {
            if end.groups_by.is_some_and(|by| now >= by) {
                end.groups_by = None;
                self.check_ended_groups(end);
            }
            if end.slot_by.is_some_and(|by| now >= by) {
                end.slot_by = None;
                self.check_slot_freed(&end.session_id).await;
            }
        }
        ended.retain(|end| end.groups_by.is_some() || end.slot_by.is_some());
        self.attached.ended.extend(ended);
    }

    fn check_ended_groups(&mut self, end: &Ended) {
        let mut groups = end.groups.clone();
        groups.extend(
            self.attached_work()
                .into_iter()
                .filter(|work| work.session == end.session_id),
        );
        // A resident SIGKILLed meanwhile left its groups to the next one's sweep, checked apart.
        let alive: Vec<(&str, u32)> = groups
            .iter()
            .filter(|work| !self.killed_pids.contains(&work.resident) && group_alive(work.group))
            .map(|work| (work.run.as_str(), work.group))
            .collect();
        if alive.is_empty() {
            self.report.attached.groups_ended += end.groups.len() as u64;
            return;
        }
        self.report.violations.push(format!(
            "handler groups (run, group) {alive:?} of the attached session {} still run {} ms after it ended",
            end.session_id,
            (SLOT_STOP + HANDLERS_GONE).as_millis()
        ));
    }

    async fn check_slot_freed(&mut self, session_id: &str) {
        let Some(status) = self.resident_status().await else {
            self.report.attached.slots_unchecked += 1;
            return;
        };
        let listed = status["slots"].as_array().is_some_and(|slots| {
            slots
                .iter()
                .any(|slot| slot["identity"]["session_id"] == session_id)
        });
        if listed {
            self.report.violations.push(format!(
                "the resident's /status still lists a slot of session {session_id} {} ms after the session ended",
                SLOT_LISTED.as_millis()
            ));
        } else {
            self.report.attached.slots_freed += 1;
        }
    }

    /// The resident's `/status`, or `None` while it does not answer.
    async fn resident_status(&self) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .unix_socket(self.attached.health.clone())
            .timeout(Duration::from_secs(1))
            .build()
            .ok()?;
        let response = client.get("http://resident/status").send().await.ok()?;
        let body = response.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }
}
