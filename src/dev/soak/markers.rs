//! The handlers' marker files: which run each handler process works on, and the check that no
//! handler keeps running for a run its worker no longer holds.

use super::*;

impl Rig {
    /// A handler whose run is not held by its worker's session any more must be gone within
    /// `HANDLER_TOLERANCE`.
    pub(super) fn check_markers(&mut self, now: Instant) {
        let markers = read_markers(&self.markers);
        let present: HashSet<String> = markers.iter().map(|m| m.file.clone()).collect();
        self.unheld_since.retain(|file, _| present.contains(file));
        for marker in markers {
            if self.reported.contains(&marker.file) {
                continue;
            }
            if !self.knows_worker(marker.worker_pid) {
                // A worker this soak did not start (cannot happen).
                continue;
            }
            let held = self
                .sim
                .run(&marker.run_id)
                .is_some_and(|run| self.holds(&marker, &run));
            if held {
                self.unheld_since.remove(&marker.file);
                continue;
            }
            let since = *self.unheld_since.entry(marker.file.clone()).or_insert(now);
            if now.duration_since(since) < HANDLER_TOLERANCE || !group_alive(marker.pid) {
                continue;
            }
            self.reported.insert(marker.file.clone());
            // A SIGKILLed worker's handler dies with it (parent-death signal) and what it started
            // is killed by the next worker's sweep, which comes within the restart delay.
            let how = if self.killed_pids.contains(&marker.worker_pid) {
                "was SIGKILLed"
            } else {
                "stopped holding it"
            };
            self.report.violations.push(format!(
                "handler group {} still runs for run {} {} s after worker pid {} {how}",
                marker.pid,
                marker.run_id,
                HANDLER_TOLERANCE.as_secs(),
                marker.worker_pid
            ));
        }
    }
}

/// One handler marker file: `<run>.<worker pid>.<handler pid>`, holding the session that
/// claimed the run once the handler has read its task.
pub(super) struct Marker {
    pub(super) file: String,
    pub(super) run_id: String,
    pub(super) worker_pid: u32,
    pub(super) pid: u32,
    pub(super) session: Option<String>,
}

pub(super) fn read_markers(dir: &Path) -> Vec<Marker> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let mut parts = file.rsplitn(3, '.');
            let pid = parts.next()?.parse().ok()?;
            let worker_pid = parts.next()?.parse().ok()?;
            let run_id = parts.next()?.to_owned();
            let session = std::fs::read_to_string(entry.path())
                .ok()
                .filter(|session| !session.is_empty());
            Some(Marker {
                file,
                run_id,
                worker_pid,
                pid,
                session,
            })
        })
        .collect()
}

/// Whether anything of the handler's process group lives: the handler script leads its group,
/// so the marker's pid is the group id, and what the script started is in the group too.
pub(super) fn group_alive(pgid: u32) -> bool {
    !crate::util::procfs::group_members(pgid).is_empty()
}
