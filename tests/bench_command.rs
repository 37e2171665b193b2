//! `agh-worker bench` end to end in its smoke size: it runs every section against the built-in
//! simulator (and the coder section against the dev Coder Hub) and prints the table. No figure is
//! checked: a test machine's speed says nothing.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agh-worker");

/// Runs `agh-worker bench` with `args`, expects it to succeed, and answers what it printed.
fn bench(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("bench")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run agh-worker bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(!stdout.contains("(not measured)"), "{stdout}");
    stdout
}

#[test]
fn the_bench_command_runs_every_section_and_prints_its_table() {
    let stdout = bench(&["--smoke", "--repeat", "1", "--runs", "200"]);
    for section in agh_worker::dev::bench::SECTIONS {
        assert!(
            stdout.contains(&format!("## {section}")),
            "no {section:?} section in:\n{stdout}"
        );
    }
    assert!(stdout.contains("| figure | median | spread | target | met |"));
}

#[test]
fn the_coder_section_runs_alone_against_the_dev_hub_in_both_follow_modes() {
    let stdout = bench(&["--smoke", "--only", "coder"]);
    let sections: Vec<&str> = stdout.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(sections, ["## Coder handler (fake Hub)"], "{stdout}");
    for mode in ["stream", "poll"] {
        for figure in [
            format!("run completed at AGH, follow = {mode}, p50, ms"),
            format!("run completed at AGH, follow = {mode}, p99, ms"),
            format!("Hub requests per run minute, follow = {mode}"),
        ] {
            assert!(stdout.contains(&figure), "no {figure:?} in:\n{stdout}");
        }
    }
}
