//! What Linux's `/proc` says about processes: start times, process groups, the boot. Used to
//! tell a process group this worker's predecessor left behind from an unrelated one that
//! reuses its number. Elsewhere every answer is "unknown" (`None` or empty).

use std::path::Path;

/// The fields of `/proc/<pid>/stat` the worker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// When it started, in clock ticks since boot: with the pid, a process's identity.
    pub start_ticks: u64,
    /// A zombie has exited and waits to be reaped: not alive for any purpose here.
    pub zombie: bool,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    // After the name: state (3), ppid (4), pgrp (5), … starttime (22).
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let state = *fields.first()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        pid,
        pgrp,
        start_ticks,
        zombie: state == "Z" || state == "X",
    })
}

/// The stat of a living process, if it exists (and is not a zombie).
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text).filter(|stat| !stat.zombie)
}

/// This boot's id: process start times are only comparable within one boot.
pub fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The living members of process group `pgrp`.
pub fn group_members(pgrp: u32) -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|stat| stat.pgrp == pgrp)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                pgrp: 4240,
                start_ticks: 987654,
                zombie: false,
            }
        );
    }

    #[test]
    fn a_zombie_is_recognised_and_garbage_is_not_a_process() {
        let line = "7 (sh) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0 0";
        assert!(parse_stat(line).unwrap().zombie);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_found_in_its_own_group() {
        let me = stat(std::process::id()).unwrap();
        assert!(group_members(me.pgrp).iter().any(|m| m.pid == me.pid));
        assert!(boot_id().is_some());
    }
}
