//! A resident worker (`agh-worker run --attach unix:…`) serving the sessions the simulator starts
//! as AGH does, each running a thin `agh-worker acp --attach unix:…` process: several runs at
//! once in one process, a stopped session freeing only its slot, `worker.max_slots`, and each
//! side surviving the other's restart.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use agh_worker::dev::sim::acp::STOP_GRACE;
use agh_worker::dev::sim::{SimConfig, Simulator};
use support::acp_rig::{Rig, assert_only_json_rpc, calls_after_knowing_of_the_stop, completed};

/// How long after its stdin closes a call from a stopped session may still arrive: one sent just
/// before the thin process read the end of stdin, or before the resident heard of the stop.
const STOP_CALL_WINDOW: Duration = Duration::from_millis(250);
use support::client_rig::Transport;
use support::resident_rig::{Resident, attach_socket, thin_subcommand};

/// An exec handler that records its pid under `pids/<run>` and works until `gate` exists.
fn gated_handler(dir: &Path) -> String {
    let pids = dir.join("pids");
    std::fs::create_dir_all(&pids).expect("the pid folder");
    let script = format!(
        "echo $$ > '{pids}/'\"$AGH_WORKER_RUN_ID\"; while [ ! -e '{gate}' ]; do sleep 0.05; done",
        pids = pids.display(),
        gate = dir.join("gate").display()
    );
    format!(
        "[[handlers]]\nname = \"gated\"\nkind = \"exec\"\n[handlers.exec]\nprogram = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n"
    )
}

/// The runs whose handler has started, by the pid files they left.
fn started_runs(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir.join("pids"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_alive(pid_file: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    // A zombie has ended; only its parent's wait is missing.
    stat.is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Prompts the session until its answers mention `needle` (the thin process's line changes as
/// it loses or finds its resident), and returns what it said.
async fn answers_until(rig: &Rig, session_id: &str, needle: &str) -> String {
    let mut said = String::new();
    for _ in 0..200 {
        rig.sim
            .prompt_agent(session_id, "status?")
            .await
            .expect("the thin process answers at once");
        said = rig.sim.agent_stdout(session_id).join("\n");
        if said.contains(needle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    said
}

fn open_gate(dir: &Path) {
    std::fs::write(dir.join("gate"), b"").expect("the gate");
}

/// The rig with its provider running thin processes attached to `attach_socket(rig)`.
async fn rig_with_thin_provider(dir: &Path, transport: Transport) -> Rig {
    rig_with_thin_provider_and(dir, transport, SimConfig::default()).await
}

async fn rig_with_thin_provider_and(dir: &Path, transport: Transport, config: SimConfig) -> Rig {
    let rig = Rig::start_running(transport, config, &gated_handler(dir), "acp").await;
    let socket = attach_socket(&rig);
    rig.sim
        .set_agent_provider(agh_worker::dev::sim::acp::AgentProvider {
            command: format!(
                "{} --config '{}' {}",
                env!("CARGO_BIN_EXE_agh-worker"),
                rig.config_file().display(),
                thin_subcommand(&socket)
            ),
            env: vec![(
                "STATE_DIRECTORY".into(),
                rig.path("thin-state").display().to_string(),
            )],
            agh_home: Some(rig.agh_home()),
            agents: vec![support::acp_rig::AGENT.into()],
            workspace_root: Some(rig.dir.path().to_path_buf()),
        });
    rig
}

fn runs_held_by(sim: &Simulator, runs: &[String]) -> HashSet<String> {
    runs.iter()
        .filter_map(|run| sim.run(run))
        .filter(|run| run.status == "running" || run.status == "claimed")
        .filter_map(|run| run.session_id)
        .collect()
}

#[tokio::test]
async fn four_attached_sessions_run_four_runs_at_once_and_a_stopped_session_frees_only_its_slot() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let resident = Resident::start(&rig, 8).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(rig.session().await);
    }
    resident
        .until("four slots", |status| status["slots_attached"] == 4)
        .await;
    let runs: Vec<String> = (0..4).map(|n| rig.enqueue(&format!("run {n}"))).collect();
    rig.until("four handlers working at once", |_| {
        started_runs(dir.path()).len() == 4
    })
    .await;
    assert_eq!(
        runs_held_by(&rig.sim, &runs).len(),
        4,
        "each run is held by a session of its own"
    );
    // Leases of 6 s renewed every 2 s: each run gets heartbeats while all four work.
    rig.until("a heartbeat on every run", |sim| {
        runs.iter()
            .all(|run| sim.run(run).is_some_and(|run| run.heartbeat_at.is_some()))
    })
    .await;

    let stopped = &sessions[0];
    let stopped_run = runs
        .iter()
        .find(|run| {
            rig.sim.run(run).and_then(|run| run.session_id).as_deref()
                == Some(stopped.session_id.as_str())
        })
        .cloned()
        .expect("the stopped session holds a run");
    let stop = rig
        .sim
        .stop_agent_session(&stopped.session_id)
        .await
        .expect("stops");
    assert!(
        stop.exited_by_itself && stop.waited < STOP_GRACE,
        "the thin process exits by itself before AGH's SIGTERM: {stop:?}"
    );
    assert!(
        !pid_alive(&dir.path().join("pids").join(&stopped_run)),
        "the stopped session's handler is gone"
    );
    resident
        .until("three slots left", |status| status["slots_attached"] == 3)
        .await;
    assert_eq!(
        calls_after_knowing_of_the_stop(&rig.sim, &stopped.session_id, STOP_CALL_WINDOW),
        Vec::new(),
        "no call from the stopped session once its thin process knew of the stop"
    );
    let others: HashSet<String> = sessions[1..]
        .iter()
        .map(|session| session.session_id.clone())
        .collect();
    assert_eq!(
        resident
            .slot_sessions()
            .await
            .into_iter()
            .collect::<HashSet<_>>(),
        others
    );
    for run in runs.iter().filter(|run| **run != stopped_run) {
        assert!(
            pid_alive(&dir.path().join("pids").join(run)),
            "the other sessions' handlers keep working"
        );
    }
    assert_only_json_rpc(&rig.sim.agent_stdout(&stopped.session_id));

    // The stopped session's run is requeued when its lease expires and finished by another.
    open_gate(dir.path());
    rig.until("all four runs completed", |sim| completed(sim) == 4)
        .await;
    assert_eq!(rig.sim.ledger().violations_total, 0);
    for session in &sessions[1..] {
        rig.sim
            .stop_agent_session(&session.session_id)
            .await
            .expect("stops");
    }
    resident
        .until("no slot left", |status| status["slots_attached"] == 0)
        .await;
    assert!(resident.terminate().await.success());
}

#[tokio::test]
async fn the_thin_processes_outlive_a_resident_restart_and_their_runs_are_finished_by_the_next_one()
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Tcp).await;
    let resident = Resident::start(&rig, 8).await;
    let first = rig.session().await;
    let second = rig.session().await;
    let runs = [rig.enqueue("one"), rig.enqueue("two")];
    rig.until("both handlers working", |_| {
        started_runs(dir.path()).len() == 2
    })
    .await;

    resident.kill().await;
    // The sessions stay up, and say why nothing is worked on.
    let said = answers_until(&rig, &first.session_id, "not working").await;
    assert!(said.contains("resident worker"), "{said}");
    assert!(!rig.sim.agent_exited(&first.session_id));
    assert!(!rig.sim.agent_exited(&second.session_id));
    // The parent-death signal is sent as the resident dies; each handler ends once it is
    // scheduled, which a loaded machine may delay.
    rig.until("no handler outliving its resident worker", |_| {
        runs.iter()
            .all(|run| !pid_alive(&dir.path().join("pids").join(run)))
    })
    .await;

    let resident = Resident::start(&rig, 8).await;
    resident
        .until("both sessions attached again", |status| {
            status["slots_attached"] == 2
        })
        .await;
    open_gate(dir.path());
    rig.until("both runs completed", |sim| completed(sim) == 2)
        .await;
    assert_eq!(rig.sim.ledger().violations_total, 0);

    // A thin process killed: its slot goes, the resident and the other session carry on.
    let status = resident.status().await.expect("/status");
    let thin_pid = status["slots"]
        .as_array()
        .and_then(|slots| {
            slots
                .iter()
                .find(|slot| slot["identity"]["session_id"] == first.session_id.as_str())
        })
        .and_then(|slot| slot["thin_pid"].as_u64())
        .expect("the first session's thin pid");
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", &thin_pid.to_string()])
        .status()
        .await;
    resident
        .until("one slot left", |status| status["slots_attached"] == 1)
        .await;
    rig.enqueue("three");
    rig.until("a third run completed", |sim| completed(sim) == 3)
        .await;
    rig.sim
        .stop_agent_session(&second.session_id)
        .await
        .expect("stops");
    assert!(resident.terminate().await.success());
}

#[tokio::test]
async fn a_session_beyond_max_slots_is_told_no_says_so_to_agh_and_attaches_once_a_slot_frees() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let resident = Resident::start(&rig, 1).await;
    let first = rig.session().await;
    resident
        .until("one slot", |status| status["slots_attached"] == 1)
        .await;
    let second = rig.session().await;
    let said = answers_until(&rig, &second.session_id, "max_slots").await;
    assert!(said.contains("worker.max_slots"), "{said}");
    let ready = resident.status().await.expect("/status");
    assert_eq!(ready["ready"], false, "no free slot: {ready}");

    rig.sim
        .stop_agent_session(&first.session_id)
        .await
        .expect("stops");
    resident
        .until("the second session in the freed slot", |status| {
            status["slots"][0]["identity"]["session_id"] == second.session_id.as_str()
        })
        .await;
    rig.enqueue("after");
    open_gate(dir.path());
    rig.until("its run completed", |sim| completed(sim) == 1)
        .await;
    rig.sim
        .stop_agent_session(&second.session_id)
        .await
        .expect("stops");
    assert!(resident.terminate().await.success());
}

#[tokio::test]
async fn the_attach_socket_is_its_owner_s_alone_and_metrics_count_every_slot() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let resident = Resident::start(&rig, 3).await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&resident.socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only: {mode:o}");
    let session = rig.session().await;
    resident
        .until("one slot, idle", |status| {
            status["slots"][0]["state"] == "idle"
        })
        .await;
    let metrics = resident_metrics(&rig).await;
    for line in [
        "agh_worker_slots 1",
        "agh_worker_slots_max 3",
        "agh_worker_state{state=\"idle\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(resident.terminate().await.success());
    assert!(
        !resident_socket_left(&rig),
        "the socket goes with the resident"
    );
}

async fn resident_metrics(rig: &Rig) -> String {
    let client = reqwest::Client::builder()
        .unix_socket(rig.path("resident-health.sock"))
        .build()
        .expect("a client");
    client
        .get("http://resident/metrics")
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a body")
}

fn resident_socket_left(rig: &Rig) -> bool {
    attach_socket(rig).exists()
}

#[tokio::test]
async fn a_thin_process_without_its_resident_keeps_its_session_says_why_and_still_stops_in_time() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let session = rig.session().await;
    let said = answers_until(&rig, &session.session_id, "is not running").await;
    assert!(said.contains("This session stays up"), "{said}");
    assert!(!rig.sim.agent_exited(&session.session_id));
    let stop = rig
        .sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(
        stop.exited_by_itself && stop.waited < STOP_GRACE,
        "nothing to hand the stop to, and still out before AGH's SIGTERM: {stop:?}"
    );
    assert_only_json_rpc(&rig.sim.agent_stdout(&session.session_id));
}

#[tokio::test]
async fn a_scheduler_wake_reaches_an_attached_slot_and_it_claims_at_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The daemon re-checks an open long-poll only every poll interval (an hour here): only the
    // wake sent at enqueue, through the thin process and the resident, brings the run in time.
    let rig = rig_with_thin_provider_and(
        dir.path(),
        Transport::Unix,
        SimConfig {
            poll_interval: Duration::from_secs(3600),
            ..SimConfig::default()
        },
    )
    .await;
    let resident = Resident::start(&rig, 2).await;
    let session = rig.session().await;
    resident
        .until("the slot waiting in a long-poll", |status| {
            status["slots"][0]["state"] == "idle"
        })
        .await;
    rig.sim
        .wait_for_waiters(agh_worker::dev::sim::Route::ClaimNext, 1)
        .await;
    open_gate(dir.path());
    let run = rig.enqueue("woken");
    rig.until("the woken run completed", |sim| completed(sim) == 1)
        .await;
    assert_eq!(
        rig.sim.run(&run).and_then(|run| run.session_id),
        Some(session.session_id.clone())
    );
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(resident.terminate().await.success());
}

#[tokio::test]
async fn sighup_gives_every_slot_the_handler_table_of_the_file_as_it_is_now() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let resident = Resident::start(&rig, 2).await;
    let session = rig.session().await;
    resident
        .until("the slot idle", |status| {
            status["slots"][0]["state"] == "idle"
        })
        .await;
    // The gated handler would hold a run for ever (the gate stays shut); the new table's does not.
    let file = std::fs::read_to_string(rig.config_file()).expect("the config file");
    let (settings, _) = file.split_once("[[handlers]]").expect("a handler table");
    std::fs::write(
        rig.config_file(),
        format!("{settings}[[handlers]]\nname = \"after-reload\"\nkind = \"noop\"\n"),
    )
    .expect("the new config file");
    resident.reload().await;
    // The claim in hand when the signal came still uses the old table: let it take a run first.
    let mut runs = Vec::new();
    let mut said = String::new();
    for n in 0..2 {
        runs.push(rig.enqueue(&format!("after reload {n}")));
        if rig
            .sim
            .wait_until(Duration::from_secs(10), |sim| completed(sim) >= 1)
            .await
        {
            said = "completed".into();
            break;
        }
    }
    assert_eq!(said, "completed", "a run completed with the reloaded table");
    assert!(
        started_runs(dir.path()).len() < runs.len(),
        "not every run went to the old handler"
    );
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(resident.terminate().await.success());
}

#[tokio::test]
async fn a_slot_whose_loop_ends_by_itself_ends_its_thin_process_and_so_its_session() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = rig_with_thin_provider(dir.path(), Transport::Unix).await;
    let resident = Resident::start_with(&rig, 2, &["worker.max_runs=1"]).await;
    open_gate(dir.path());
    let session = rig.session().await;
    rig.enqueue("the only one");
    rig.until("its run completed", |sim| completed(sim) == 1)
        .await;
    resident
        .until("its slot freed", |status| status["slots_attached"] == 0)
        .await;
    // The simulator's own waits wake on requests, and an exit makes none: look every 50 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !rig.sim.agent_exited(&session.session_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the thin process did not exit with its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resident.terminate().await.success());
}
