//! `agh-worker bench`: throughput, per-run overhead, idle footprint, latency and growth of the
//! worker against the built-in AGH simulator on loopback, the coder handler against the dev
//! Coder Hub, and the resident worker's slots (`run --attach`), printed as one table.
//!
//! Two kinds of measurement. In-process ones (throughput, start latency, lease loss) run the
//! simulator and the worker loop in this process over loopback TCP, so the numbers are about the
//! worker's own code and not process start-up. Process ones (idle footprint, start-up, SIGTERM,
//! growth) start this very executable as `agh-worker run`, configured only through the
//! environment, against a simulator served from this process, and read `/proc/<pid>/…`; the
//! slots section starts it as a resident worker and the simulator starts its thin processes.
//!
//! Nothing here asserts a target: the table says whether each one was met, and the exit code is
//! non-zero only when a measurement could not be made at all.

mod child;
mod coder;
mod floor;
mod growth;
mod idle;
mod latency;
mod rig;
mod slots;
mod stats;
mod throughput;

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::BenchArgs;

use coder::coder;
use growth::growth;
use idle::idle_footprint;
use latency::latency;
use slots::slots;
use throughput::{against_curl, throughput};

/// The section titles, printed as they are (the smoke test looks for them).
pub const SECTIONS: [&str; 7] = [
    "Throughput and per-run overhead",
    "Against a hand-written curl loop",
    "Idle footprint",
    "Latency",
    "Growth",
    "Coder handler (fake Hub)",
    "Resident worker slots",
];

/// How much of everything to do.
#[derive(Clone, Debug)]
struct Plan {
    repeat: u32,
    /// No-op runs per repeat, for the worker and for the floor.
    runs: u64,
    /// Exec runs per repeat (each starts a process).
    exec_runs: u64,
    /// Runs of the curl loop per repeat (each starts several processes).
    curl_runs: u64,
    idle: Duration,
    latency_samples: usize,
    lease_samples: usize,
    /// Runs after which the first and the second growth reading are taken.
    growth: (u64, u64),
    /// Coder runs per follow mode timed from their deciding broadcast.
    coder_samples: usize,
    /// How long the coder runs whose Hub requests are counted last.
    coder_window: Duration,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Plan {
        let mut plan = if args.smoke {
            Plan {
                repeat: 1,
                runs: 100,
                exec_runs: 20,
                curl_runs: 10,
                idle: Duration::from_secs(1),
                latency_samples: 5,
                lease_samples: 1,
                growth: (50, 150),
                coder_samples: 2,
                coder_window: Duration::from_secs(3),
            }
        } else if args.quick {
            Plan {
                repeat: 3,
                runs: 1_000,
                exec_runs: 300,
                curl_runs: 100,
                idle: Duration::from_secs(10),
                latency_samples: 30,
                lease_samples: 5,
                growth: (1_000, 10_000),
                coder_samples: 10,
                coder_window: Duration::from_secs(60),
            }
        } else {
            Plan {
                repeat: 5,
                runs: 3_000,
                exec_runs: 1_000,
                curl_runs: 300,
                idle: Duration::from_secs(60),
                latency_samples: 100,
                lease_samples: 10,
                growth: (1_000, 100_000),
                coder_samples: 30,
                coder_window: Duration::from_secs(60),
            }
        };
        if let Some(repeat) = args.repeat {
            plan.repeat = repeat.max(1);
        }
        if let Some(runs) = args.runs {
            plan.runs = runs.max(1);
            // Exec runs start a process each: a third of the no-op count keeps a repeat short.
            plan.exec_runs = (runs / 3).max(1);
            plan.curl_runs = plan.curl_runs.min(runs.max(1));
        }
        plan
    }
}

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    spread: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            spread: String::new(),
            target: String::new(),
            met: None,
        }
    }

    /// The median of `samples` with `decimals` places, and their min–max as the spread.
    fn samples(figure: impl Into<String>, samples: &[f64], decimals: usize) -> Row {
        Row::new(figure, format!("{:.*}", decimals, stats::median(samples)))
            .spread(stats::min_max(samples, decimals))
    }

    fn spread(mut self, spread: impl Into<String>) -> Row {
        self.spread = spread.into();
        self
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Runs the benchmark and prints its table.
pub async fn run(args: &BenchArgs) -> ExitCode {
    // Warnings only: the worker under test logs at info per run, and a subscriber writing those
    // lines would measure the terminal, not the worker (the growth section runs the binary with
    // its default info logging to /dev/null instead).
    crate::ops::logging::init("warn", crate::config::LogFormat::Text);
    let plan = Plan::from_args(args);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("agh-worker bench: cannot find this executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("# agh-worker bench");
    println!();
    println!(
        "build: {}; cores: {}; load average at start: {}",
        if cfg!(debug_assertions) {
            "debug (figures are not representative: use `cargo run --release -- bench`)"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "plan: {} repeats; {} no-op runs, {} exec runs, {} curl-loop runs per repeat; idle {} s; \
         {} latency samples; {} lease-loss samples; growth after {} and {} runs; \
         {} coder runs per follow mode, {} s coder run for Hub requests",
        plan.repeat,
        plan.runs,
        plan.exec_runs,
        plan.curl_runs,
        plan.idle.as_secs(),
        plan.latency_samples,
        plan.lease_samples,
        plan.growth.0,
        plan.growth.1,
        plan.coder_samples,
        plan.coder_window.as_secs()
    );
    let mut failed = false;
    let sections: [(&str, SectionFuture<'_>); 7] = [
        (SECTIONS[0], Box::pin(throughput(&plan))),
        (SECTIONS[1], Box::pin(against_curl(&plan))),
        (SECTIONS[2], Box::pin(idle_footprint(&plan, &exe))),
        (SECTIONS[3], Box::pin(latency(&plan, &exe))),
        (SECTIONS[4], Box::pin(growth(&plan, &exe))),
        (SECTIONS[5], Box::pin(coder(&plan))),
        (SECTIONS[6], Box::pin(slots(&plan, &exe))),
    ];
    let only = args.only.as_deref().map(str::to_lowercase);
    for (title, section) in sections {
        if only
            .as_deref()
            .is_some_and(|only| !title.to_lowercase().contains(only))
        {
            continue;
        }
        eprintln!("bench: {title} …");
        let rows = match section.await {
            Ok(rows) => rows,
            Err(err) => {
                failed = true;
                vec![Row::new("(not measured)", format!("error: {err:#}"))]
            }
        };
        print_section(title, &rows);
    }
    println!();
    println!("load average at end: {}", load_average());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

type SectionFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Row>>> + 'a>>;

fn print_section(title: &str, rows: &[Row]) {
    println!();
    println!("## {title}");
    println!();
    println!("| figure | median | spread | target | met |");
    println!("|---|--:|--:|---|---|");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.figure, row.value, row.spread, row.target, met
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}
