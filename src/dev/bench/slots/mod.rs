//! The resident worker's slots (`agh-worker run --attach`): throughput with 1, 2, 4 and 8 slots
//! in one process against the simulator's own ceiling for as many sessions at once, the memory
//! an extra idle slot costs, and how soon AGH's wake prompt brings a queued run to a slot.
//!
//! All of it runs real processes: the resident, and one thin `acp --attach` process per session
//! started by the simulator through its agent provider, as AGH starts them; the simulator is
//! served from this process on a Unix socket, as AGH's daemon is found on a host.

mod rates;
mod rig;
mod wake;

use std::path::Path;

use super::stats::{max, median, min_max, percentile};
use super::{Plan, Row};
use rates::{floor_rate, slots_rate};
use rig::MAX_SLOTS;
use wake::idle_slots;

/// The slot counts measured; the first is the one the others are compared with.
const COUNTS: [usize; 4] = [1, 2, 4, MAX_SLOTS];

/// The share of N times one slot's rate that N slots should reach.
const SCALING_GOAL: f64 = 0.8;

/// The most an extra idle slot should cost, KiB.
const RSS_PER_SLOT_GOAL_KIB: f64 = 1024.0;

pub(super) async fn slots(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
    // rates[i][r]: runs/s with COUNTS[i] slots (or floor loops) in repeat r.
    let mut resident = vec![Vec::new(); COUNTS.len()];
    let mut floor = vec![Vec::new(); COUNTS.len()];
    for round in 0..plan.repeat {
        eprintln!("bench:   repeat {}/{}", round + 1, plan.repeat);
        for (index, &count) in COUNTS.iter().enumerate() {
            // Alternating which goes first spreads slow moments of a busy machine over both.
            if round % 2 == 0 {
                floor[index].push(floor_rate(count, plan.runs).await?);
                resident[index].push(slots_rate(exe, count, plan.runs).await?);
            } else {
                resident[index].push(slots_rate(exe, count, plan.runs).await?);
                floor[index].push(floor_rate(count, plan.runs).await?);
            }
        }
    }
    let mut rows = Vec::new();
    for (index, &count) in COUNTS.iter().enumerate() {
        rows.push(Row::samples(
            format!(
                "simulator ceiling: {} at once, runs/s",
                counted(count, "floor loop")
            ),
            &floor[index],
            0,
        ));
    }
    for (index, &count) in COUNTS.iter().enumerate() {
        rows.push(Row::samples(
            format!("resident, {}, noop handler, runs/s", counted(count, "slot")),
            &resident[index],
            0,
        ));
    }
    for (index, &count) in COUNTS.iter().enumerate().skip(1) {
        rows.push(scaling_row(
            count,
            &resident[0],
            &resident[index],
            &floor[index],
        ));
    }

    let samples = plan.latency_samples * 2;
    eprintln!("bench:   {MAX_SLOTS} idle slots, {samples} wake samples");
    let idle = idle_slots(exe, samples).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_slot = idle.rss_all.saturating_sub(idle.rss_one) as f64 / (MAX_SLOTS - 1) as f64;
    rows.push(Row::new(
        "resident RSS, 1 slot attached and idle, MiB",
        format!("{:.1}", mib(idle.rss_one)),
    ));
    rows.push(
        Row::new(
            format!("resident RSS, {MAX_SLOTS} slots attached and idle, MiB"),
            format!("{:.1}", mib(idle.rss_all)),
        )
        .spread(format!("{:.1} after the wake samples", mib(idle.rss_after))),
    );
    rows.push(
        Row::new(
            format!(
                "RSS per extra idle slot, KiB: (RSS {MAX_SLOTS} − RSS 1) ÷ {}",
                MAX_SLOTS - 1
            ),
            format!("{per_slot:.0}"),
        )
        .target("≤ 1024", per_slot <= RSS_PER_SLOT_GOAL_KIB),
    );
    let missed = if idle.missed == 0 {
        String::new()
    } else {
        format!("; {} wakes brought no claim", idle.missed)
    };
    for (what, values) in [
        ("claim answered", &idle.claims),
        ("exec handler running", &idle.starts),
    ] {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        rows.push(
            Row::new(
                format!("wake prompt → {what} p50, ms ({MAX_SLOTS} idle slots)"),
                format!("{:.1}", percentile(&sorted, 50.0)),
            )
            .spread(format!(
                "p10–p90 {:.1}–{:.1}",
                percentile(&sorted, 10.0),
                percentile(&sorted, 90.0)
            )),
        );
        rows.push(
            Row::new(
                format!("wake prompt → {what} p99, ms ({MAX_SLOTS} idle slots)"),
                format!("{:.1}", percentile(&sorted, 99.0)),
            )
            .spread(format!(
                "max {:.1}; {} samples{missed}",
                max(&sorted),
                sorted.len()
            )),
        );
    }
    Ok(rows)
}

/// N slots' rate over N times one slot's, per repeat, against [`SCALING_GOAL`]; where the
/// simulator cannot serve that much (its ceiling for N sessions below the goal), the goal is
/// that share of the ceiling instead, and the target says so.
fn scaling_row(count: usize, one: &[f64], many: &[f64], ceiling: &[f64]) -> Row {
    let n = count as f64;
    let ratios: Vec<f64> = one
        .iter()
        .zip(many)
        .map(|(one, many)| many / (n * one))
        .collect();
    let ratio = median(&ratios);
    let wanted = SCALING_GOAL * n * median(one);
    let ceiling = median(ceiling);
    let row = Row::new(
        format!("{count} slots ÷ ({count} × 1 slot)"),
        format!("{ratio:.2}"),
    )
    .spread(format!(
        "{}; ceiling allows {:.2}",
        min_max(&ratios, 2),
        ceiling / (n * median(one))
    ));
    if ceiling * SCALING_GOAL >= wanted {
        row.target(format!("≥ {SCALING_GOAL}"), ratio >= SCALING_GOAL)
    } else {
        let bound = SCALING_GOAL * ceiling / (n * median(one));
        row.target(
            format!("simulator-bound: ≥ {SCALING_GOAL} × ceiling = {bound:.2}"),
            ratio >= bound,
        )
    }
}

/// "1 slot", "2 slots".
fn counted(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_held_to_eighty_percent_of_n_times_one_slot_while_the_simulator_can_serve_that() {
        // One slot 100 runs/s; the simulator serves 400 runs/s to four sessions.
        let row = scaling_row(4, &[100.0], &[330.0], &[400.0]);
        assert_eq!(row.value, "0.82");
        assert_eq!(row.target, "≥ 0.8");
        assert_eq!(row.met, Some(true));
        let row = scaling_row(4, &[100.0], &[300.0], &[400.0]);
        assert_eq!(row.met, Some(false));
    }

    #[test]
    fn below_the_simulators_ceiling_the_goal_is_eighty_percent_of_the_ceiling() {
        // The simulator serves four sessions only 200 runs/s: 0.8 × 200 ÷ 400 = 0.4.
        let row = scaling_row(4, &[100.0], &[170.0], &[200.0]);
        assert_eq!(row.target, "simulator-bound: ≥ 0.8 × ceiling = 0.40");
        assert_eq!(row.met, Some(true));
        assert!(row.spread.contains("ceiling allows 0.50"), "{}", row.spread);
        let row = scaling_row(4, &[100.0], &[150.0], &[200.0]);
        assert_eq!(row.met, Some(false));
    }
}
