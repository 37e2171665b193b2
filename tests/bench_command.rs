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
