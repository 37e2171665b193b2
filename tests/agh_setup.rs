//! `agh-worker agh-setup` against a scratch `$AGH_HOME`: what it prints, what `--write` installs,
//! that a second run changes nothing, and that a file saying something else is never overwritten.

mod support;

use support::binary::{describe, run_clean, stdout};

const COMMAND: &str = "/opt/agh-worker/bin/agh-worker acp";

#[tokio::test]
async fn without_write_it_shows_the_files_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let output = run_clean(
        &[("AGH_HOME", home.path())],
        &["agh-setup", "--command", COMMAND],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.contains("[providers.agh-worker]"), "{text}");
    assert!(text.contains("harness = \"acp\""), "{text}");
    assert!(text.contains("agents/agh-worker/AGENT.md (new)"), "{text}");
    assert!(
        text.contains("--owner-kind pool --owner-ref agh-worker"),
        "{text}"
    );
    assert!(text.contains("run again with --write"), "{text}");
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn write_installs_the_provider_the_agent_and_its_capabilities_once() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), "[http]\nport = 2123\n").unwrap();
    let vars = [
        ("AGH_HOME", home.path().as_os_str()),
        (
            "AGH_WORKER__WORKER__REQUIRED_CAPABILITIES",
            std::ffi::OsStr::new("[\"builds\"]"),
        ),
    ];
    let args = [
        "agh-setup",
        "--name",
        "builder",
        "--command",
        COMMAND,
        "--write",
    ];
    let output = run_clean(&vars, &args).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    let table: toml::Table = toml::from_str(&config).unwrap();
    assert_eq!(table["http"]["port"].as_integer(), Some(2123), "kept");
    let provider = &table["providers"]["builder"];
    assert_eq!(provider["command"].as_str(), Some(COMMAND));
    assert_eq!(provider["auth_mode"].as_str(), Some("none"));
    let agent = std::fs::read_to_string(home.path().join("agents/builder/AGENT.md")).unwrap();
    assert!(
        agent.starts_with("---\nname: builder\nprovider: builder\n---\n\n"),
        "{agent}"
    );
    let catalog =
        std::fs::read_to_string(home.path().join("agents/builder/capabilities.toml")).unwrap();
    let catalog: toml::Table = toml::from_str(&catalog).unwrap();
    assert_eq!(catalog["capabilities"][0]["id"].as_str(), Some("builds"));

    let again = run_clean(&vars, &args).await;
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(
        stdout(&again).matches("already set up").count() == 3,
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("config.toml")).unwrap(),
        config,
        "a second run changes nothing"
    );
}

#[tokio::test]
async fn an_agent_file_that_says_something_else_is_shown_as_a_diff_and_left_alone() {
    let home = tempfile::tempdir().unwrap();
    let agent_dir = home.path().join("agents/agh-worker");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let theirs = "---\nname: agh-worker\nprovider: claude\n---\n\nSomeone else's agent.\n";
    std::fs::write(agent_dir.join("AGENT.md"), theirs).unwrap();
    let output = run_clean(
        &[("AGH_HOME", home.path())],
        &["agh-setup", "--command", COMMAND, "--write"],
    )
    .await;
    assert_eq!(output.status.code(), Some(73), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.contains("- provider: claude"), "{text}");
    assert!(text.contains("+ provider: agh-worker"), "{text}");
    assert!(text.contains("nothing written"), "{text}");
    assert_eq!(
        std::fs::read_to_string(agent_dir.join("AGENT.md")).unwrap(),
        theirs
    );
    assert!(
        !home.path().join("config.toml").exists(),
        "no file written at all"
    );
}

#[tokio::test]
async fn a_resident_worker_s_socket_makes_the_command_the_thin_attached_process() {
    let home = tempfile::tempdir().unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_agh-worker")).unwrap();
    let thin = format!(
        "{} acp --attach unix:/run/agh-worker/attach.sock",
        exe.display()
    );
    let by_flag = run_clean(
        &[("AGH_HOME", home.path())],
        &["agh-setup", "--attach", "unix:/run/agh-worker/attach.sock"],
    )
    .await;
    assert_eq!(by_flag.status.code(), Some(0), "{}", describe(&by_flag));
    assert!(stdout(&by_flag).contains(&thin), "{}", stdout(&by_flag));
    let by_config = run_clean(
        &[
            ("AGH_HOME", home.path().as_os_str()),
            (
                "AGH_WORKER__ATTACH__SOCKET",
                std::ffi::OsStr::new("/run/agh-worker/attach.sock"),
            ),
        ],
        &["agh-setup"],
    )
    .await;
    assert_eq!(by_config.status.code(), Some(0), "{}", describe(&by_config));
    assert!(stdout(&by_config).contains(&thin), "{}", stdout(&by_config));
}
