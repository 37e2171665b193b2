//! The process groups handler programs run in: the signals that stop a group, the record of
//! every group this worker started, and the sweep a starting worker makes of the groups a dead
//! predecessor left behind.
//!
//! A handler program runs in a group of its own, out of reach of a signal to the worker's group
//! (AGH's stop of its agent process, a terminal's Ctrl-C). It gets a parent-death signal, so it
//! dies with its worker however the worker dies, but what it started lives on in its group. So
//! each worker keeps a small state file listing its live groups (`<dir>/process-groups/<pid>.<n>.json`,
//! rewritten as groups start and end) and a starting worker kills the groups listed by workers
//! that are gone, before it adopts any lease: the run they worked on may be the one it adopts.
//!
//! A group id is a process id, and ids are reused. A listed group is killed only when the file
//! was written in this boot, its worker is gone (no process with that pid and start time), and the
//! group is still the one recorded: its leader, if alive, has the recorded start time (a group
//! cannot be renumbered while any member lives, so members without their leader are the
//! recorded group's).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::util::procfs;
use crate::util::sync::lock;

/// The folder under the state directory holding one file per worker process.
const FOLDER: &str = "process-groups";

/// Where the state files go: `$STATE_DIRECTORY` (systemd's `StateDirectory=`, the first when
/// several), else `$XDG_STATE_HOME/agh-worker`, else `$HOME/.local/state/agh-worker` (XDG's
/// default for it), else `.agh-worker` in the working directory.
pub fn state_dir(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(dirs) = set("STATE_DIRECTORY")
        && let Some(first) = std::env::split_paths(&dirs).next()
    {
        return first;
    }
    if let Some(home) = set("XDG_STATE_HOME") {
        return PathBuf::from(home).join("agh-worker");
    }
    if let Some(home) = set("HOME") {
        return PathBuf::from(home).join(".local/state/agh-worker");
    }
    PathBuf::from(".agh-worker")
}

/// The record of this worker's handler process groups. Cheap to clone; a disabled record (the
/// default, for embedders and tests that set no directory) keeps nothing on disk.
#[derive(Clone, Debug, Default)]
pub struct ProcessGroups {
    ledger: Option<Arc<Ledger>>,
}

#[derive(Debug)]
struct Ledger {
    file: PathBuf,
    groups: Mutex<BTreeMap<u32, GroupEntry>>,
    /// A state file that cannot be written is said once, not once per run.
    warned: AtomicBool,
}

/// What a state file holds.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    worker_pid: u32,
    worker_start_ticks: Option<u64>,
    boot_id: Option<String>,
    groups: Vec<GroupEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct GroupEntry {
    pgid: u32,
    leader_start_ticks: Option<u64>,
    run_id: String,
    program: String,
}

/// One group a sweep found alive and killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    /// The group id (the leader's pid).
    pub pgid: u32,
    /// The run its handler worked on.
    pub run_id: String,
    /// The handler's program.
    pub program: String,
    /// The worker process that started it.
    pub worker_pid: u32,
    /// How many processes were in the group.
    pub members: usize,
}

impl ProcessGroups {
    /// A record that keeps nothing on disk.
    pub fn disabled() -> Self {
        ProcessGroups::default()
    }

    /// A record in `dir` (see [`state_dir`]), in a file of its own: `<pid>.<n>.json`, `n`
    /// counting the workers built in this process (an embedding program may build several).
    pub fn in_dir(dir: &Path) -> Self {
        static BUILT: AtomicU64 = AtomicU64::new(0);
        let n = BUILT.fetch_add(1, Ordering::Relaxed);
        let file = dir
            .join(FOLDER)
            .join(format!("{}.{n}.json", std::process::id()));
        ProcessGroups {
            ledger: Some(Arc::new(Ledger {
                file,
                groups: Mutex::new(BTreeMap::new()),
                warned: AtomicBool::new(false),
            })),
        }
    }

    /// This worker's state file, when it keeps one.
    pub fn file(&self) -> Option<&Path> {
        self.ledger.as_deref().map(|ledger| ledger.file.as_path())
    }

    /// Records the group `pgid` a handler program for `run_id` leads, until the returned
    /// record is dropped.
    pub fn record(&self, pgid: u32, run_id: &str, program: &str) -> GroupRecord {
        if let Some(ledger) = &self.ledger {
            let entry = GroupEntry {
                pgid,
                leader_start_ticks: procfs::stat(pgid).map(|stat| stat.start_ticks),
                run_id: run_id.to_string(),
                program: program.to_string(),
            };
            lock(&ledger.groups).insert(pgid, entry);
            ledger.write();
        }
        GroupRecord {
            ledger: self.ledger.clone(),
            pgid,
        }
    }

    /// Sends `signal` to every group this record holds now (the handler programs of this worker
    /// that are still running); answers how many groups it reached. For a stop that cannot wait
    /// for each handler's own grace: AGH launched the worker and kills only its process group,
    /// never these. A disabled record holds nothing.
    pub fn signal_all(&self, signal: i32) -> usize {
        let Some(ledger) = &self.ledger else {
            return 0;
        };
        let groups: Vec<u32> = lock(&ledger.groups).keys().copied().collect();
        groups
            .into_iter()
            .filter(|pgid| signal::group(*pgid, signal))
            .count()
    }

    /// Kills the groups that workers no longer alive left in this record's folder, and removes
    /// their files. Nothing to do for a disabled record.
    pub fn sweep(&self) -> Vec<Swept> {
        let Some(ledger) = &self.ledger else {
            return Vec::new();
        };
        let Some(folder) = ledger.file.parent() else {
            return Vec::new();
        };
        sweep_folder(folder, &ledger.file)
    }
}

/// A group in the record; dropping it takes the group out (its program ended and the group
/// was emptied).
#[derive(Debug)]
pub struct GroupRecord {
    ledger: Option<Arc<Ledger>>,
    pgid: u32,
}

impl Drop for GroupRecord {
    fn drop(&mut self) {
        if let Some(ledger) = &self.ledger {
            lock(&ledger.groups).remove(&self.pgid);
            ledger.write();
        }
    }
}

impl Ledger {
    /// Rewrites the state file (removes it when no group is left). Written to a temporary file
    /// and renamed, so a crash mid-write leaves the previous version, never half of one.
    fn write(&self) {
        let groups: Vec<GroupEntry> = lock(&self.groups).values().cloned().collect();
        let result = if groups.is_empty() {
            match std::fs::remove_file(&self.file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        } else {
            let me = std::process::id();
            let state = StateFile {
                worker_pid: me,
                worker_start_ticks: procfs::stat(me).map(|stat| stat.start_ticks),
                boot_id: procfs::boot_id(),
                groups,
            };
            write_atomically(&self.file, &state)
        };
        if let Err(err) = result
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                file = %self.file.display(),
                error = %err,
                "cannot keep the record of handler process groups: after a crash, what a handler started may keep running; set STATE_DIRECTORY to a writable directory"
            );
        }
    }
}

/// The folder and the files are the worker's user's only: a starting worker kills the groups a
/// file lists, so nobody else may write one, and they name runs and programs.
fn write_atomically(file: &Path, state: &StateFile) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(folder) = file.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(folder)?;
    }
    let text = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let temporary = file.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // A temporary file a crash left keeps its mode when reopened: start afresh.
    let _ = std::fs::remove_file(&temporary);
    options.open(&temporary)?.write_all(&text)?;
    std::fs::rename(&temporary, file)
}

fn sweep_folder(folder: &Path, own_file: &Path) -> Vec<Swept> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let boot = procfs::boot_id();
    let mut swept = Vec::new();
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        if path == own_file || path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        if !owned_by_this_user(&path) {
            tracing::warn!(file = %path.display(), "a handler process-group record owned by another user; ignored (its groups are not signalled)");
            continue;
        }
        let state = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StateFile>(&bytes).ok());
        let Some(state) = state else {
            tracing::warn!(file = %path.display(), "an unreadable handler process-group record; removed");
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let this_boot = state.boot_id.is_some() && state.boot_id == boot;
        if this_boot && worker_alive(state.worker_pid, state.worker_start_ticks) {
            continue;
        }
        if this_boot {
            for group in &state.groups {
                if let Some(found) = kill_if_still_recorded(group, state.worker_pid) {
                    swept.push(found);
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    swept
}

/// Only a record this user wrote is acted on: a file someone else put in a shared folder could
/// otherwise name any of this user's process groups.
fn owned_by_this_user(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .is_ok_and(|meta| meta.uid() == rustix::process::geteuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

fn worker_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    procfs::stat(pid).is_some_and(|stat| start_ticks.is_none_or(|ticks| ticks == stat.start_ticks))
}

fn kill_if_still_recorded(group: &GroupEntry, worker_pid: u32) -> Option<Swept> {
    let members = procfs::group_members(group.pgid);
    if members.is_empty() {
        return None;
    }
    if let Some(leader) = members.iter().find(|member| member.pid == group.pgid)
        && group.leader_start_ticks != Some(leader.start_ticks)
    {
        // The number was reused by a group that is not the recorded one.
        return None;
    }
    if !signal::group(group.pgid, signal::SIGKILL) {
        return None;
    }
    tracing::warn!(
        pgid = group.pgid,
        run_id = %group.run_id,
        program = %group.program,
        worker_pid,
        members = members.len(),
        "killed a handler process group left running by a worker that died"
    );
    Some(Swept {
        pgid: group.pgid,
        run_id: group.run_id.clone(),
        program: group.program.clone(),
        worker_pid,
        members: members.len(),
    })
}

#[cfg(unix)]
pub mod signal {
    use rustix::process::{Pid, Signal, kill_process_group};

    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;

    /// Sends `signal` to every process in the group `pgid`. Returns whether any process got it.
    pub fn group(pgid: u32, signal: i32) -> bool {
        // pgid 0 or 1 would mean "our own group" or "everyone": never, whatever went wrong.
        let Ok(pgid) = i32::try_from(pgid) else {
            return false;
        };
        if pgid <= 1 {
            return false;
        }
        let (Some(pid), Some(signal)) = (Pid::from_raw(pgid), Signal::from_named_raw(signal))
        else {
            return false;
        };
        kill_process_group(pid, signal).is_ok()
    }

    /// Names of the signals numbered alike on Linux and the BSDs.
    pub fn name(signal: i32) -> &'static str {
        match signal {
            1 => "SIGHUP",
            2 => "SIGINT",
            3 => "SIGQUIT",
            4 => "SIGILL",
            6 => "SIGABRT",
            8 => "SIGFPE",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            13 => "SIGPIPE",
            14 => "SIGALRM",
            15 => "SIGTERM",
            _ => "signal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn the_state_directory_follows_systemd_then_xdg_then_home_then_the_working_directory() {
        let all = [
            ("STATE_DIRECTORY", "/var/lib/agh-worker:/var/lib/other"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(state_dir(env(&all)), PathBuf::from("/var/lib/agh-worker"));
        assert_eq!(state_dir(env(&all[1..])), PathBuf::from("/x/agh-worker"));
        assert_eq!(
            state_dir(env(&all[2..])),
            PathBuf::from("/h/.local/state/agh-worker")
        );
        assert_eq!(
            state_dir(env(&[("HOME", "")])),
            PathBuf::from(".agh-worker")
        );
    }

    #[test]
    fn groups_are_written_while_recorded_and_the_file_goes_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let groups = ProcessGroups::in_dir(dir.path());
        let file = groups.file().unwrap().to_path_buf();
        let first = groups.record(4001, "run-1", "/bin/a");
        let second = groups.record(4002, "run-2", "/bin/b");
        let state: StateFile = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(state.worker_pid, std::process::id());
        assert_eq!(state.groups.len(), 2);
        drop(first);
        let state: StateFile = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(state.groups[0].run_id, "run-2");
        drop(second);
        assert!(!file.exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_record_folder_and_file_are_the_workers_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let groups = ProcessGroups::in_dir(dir.path());
        let _record = groups.record(4001, "run-1", "/bin/a");
        let file = groups.file().unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn only_records_this_user_owns_are_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("1.0.json");
        std::fs::write(&mine, "{}").unwrap();
        assert!(owned_by_this_user(&mine));
        assert!(!owned_by_this_user(&dir.path().join("missing.json")));
        let me = rustix::process::geteuid();
        let theirs = if me.is_root() {
            let theirs = dir.path().join("2.0.json");
            std::fs::write(&theirs, "{}").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            theirs
        } else {
            // Owned by root, who is not this user.
            PathBuf::from("/")
        };
        assert!(!owned_by_this_user(&theirs));
    }

    #[test]
    fn a_disabled_record_writes_nothing() {
        let groups = ProcessGroups::disabled();
        let _record = groups.record(4001, "run-1", "/bin/a");
        assert!(groups.file().is_none());
        assert!(groups.sweep().is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_sweep_kills_only_recorded_groups_of_dead_workers_and_drops_their_files() {
        use std::os::unix::process::CommandExt;
        // A pid above Linux's largest pid_max: no process has it.
        const DEAD_WORKER: u32 = 4_194_305;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(FOLDER);
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = sleeper.id();
        let leader = procfs::stat(pgid).unwrap();
        let me = procfs::stat(std::process::id()).unwrap();
        let file = |worker_pid, worker_start_ticks, leader_start_ticks| StateFile {
            worker_pid,
            worker_start_ticks,
            boot_id: procfs::boot_id(),
            groups: vec![GroupEntry {
                pgid,
                leader_start_ticks,
                run_id: "run-x".into(),
                program: "sleep".into(),
            }],
        };
        // A living worker (this process): its groups are its own business.
        let alive = file(me.pid, Some(me.start_ticks), Some(leader.start_ticks));
        write_atomically(&folder.join("alive.json"), &alive).unwrap();
        // A dead worker whose group number now names another group (another start time).
        let reused = file(DEAD_WORKER, Some(1), Some(leader.start_ticks + 1));
        write_atomically(&folder.join("reused.json"), &reused).unwrap();
        std::fs::write(folder.join("broken.json"), b"{not json").unwrap();
        let groups = ProcessGroups::in_dir(dir.path());
        assert!(groups.sweep().is_empty(), "nothing may be killed yet");
        assert!(folder.join("alive.json").exists());
        assert!(!folder.join("reused.json").exists());
        assert!(!folder.join("broken.json").exists());
        assert!(sleeper.try_wait().unwrap().is_none(), "the sleeper lives");

        std::fs::remove_file(folder.join("alive.json")).unwrap();
        let orphaned = file(DEAD_WORKER, Some(1), Some(leader.start_ticks));
        write_atomically(&folder.join("orphaned.json"), &orphaned).unwrap();
        let swept = groups.sweep();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].pgid, pgid);
        assert_eq!(swept[0].worker_pid, DEAD_WORKER);
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "killed, not finished: {status:?}");
        assert!(!folder.join("orphaned.json").exists());
    }
}
