//! `agh-worker bench` end to end in its smoke size: it runs every section against the built-in
//! simulator and prints the table. No figure is checked: a test machine's speed says nothing.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agh-worker");

#[test]
fn the_bench_command_runs_every_section_and_prints_its_table() {
    let output = Command::new(BIN)
        .args(["bench", "--smoke", "--repeat", "1", "--runs", "200"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run agh-worker bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for section in agh_worker::dev::bench::SECTIONS {
        assert!(
            stdout.contains(&format!("## {section}")),
            "no {section:?} section in:\n{stdout}"
        );
    }
    assert!(stdout.contains("| figure | median | spread | target | met |"));
    assert!(!stdout.contains("(not measured)"), "{stdout}");
}

#[test]
fn the_coder_section_runs_alone_against_the_dev_hub_in_both_follow_modes() {
    let output = Command::new(BIN)
        .args(["bench", "--smoke", "--only", "coder"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run agh-worker bench --only coder");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let sections: Vec<&str> = stdout.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(sections, ["## Coder handler (fake Hub)"], "{stdout}");
    assert!(!stdout.contains("(not measured)"), "{stdout}");
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
