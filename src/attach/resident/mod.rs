//! `agh-worker run --attach unix:PATH`: the resident worker. It listens on the attach socket
//! (owner-only, and only connections from its own user are served), gives each attached session
//! a slot (`slots`), serves each connection (`connection`), and shows every slot on its health
//! server (`view`).
//!
//! A stop signal drains every slot as `run` drains its one loop: runs in hand finish or are
//! released, then the connections close and each thin process attaches again to the next
//! resident worker, whose new slots adopt any lease left behind.

pub mod connection;
pub mod slots;
pub mod view;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use self::slots::Slots;
use self::view::ResidentView;
use crate::acp::session::acp_settings;
use crate::api::{AghClient, Identity};
use crate::assembly::BuildError;
use crate::cli::RunArgs;
use crate::config::{Config, ConfigSources};
use crate::exit;
use crate::ops::health::HealthTimings;
use crate::ops::logging::LogControl;
use crate::ops::notify::Beat;
use crate::ops::server::remove_stale_socket;
use crate::util::redact::without_userinfo;
use crate::util::sync::lock;
use crate::worker::Shutdown;

/// How often the accept loop shows it is alive (the systemd watchdog reads it).
const TICK: Duration = Duration::from_secs(1);

/// What every connection shares.
#[derive(Debug)]
pub struct Resident {
    /// The resident's configuration (replaced by a reload); each slot's is this with the
    /// session's identity.
    pub config: Mutex<Config>,
    /// The AGH client whose connection pool every slot's client shares.
    pub client: AghClient,
    pub slots: Arc<Slots>,
    pub shutdown: Shutdown,
}

/// `agh-worker run` with `attach.socket` set. `sources` and `log` serve SIGHUP reloads.
pub async fn run(
    config: Config,
    socket: PathBuf,
    args: &RunArgs,
    sources: ConfigSources,
    log: LogControl,
) -> ExitCode {
    if args.once || args.max_runs.is_some() || args.idle_exit.is_some() {
        eprintln!(
            "agh-worker run: --once, --max-runs and --idle-exit apply to one session's loop, not to a resident worker (attach.socket is set)"
        );
        return ExitCode::from(exit::BAD_CONFIG);
    }
    if config.handlers.is_empty() {
        eprintln!("agh-worker run: {}", BuildError::NoHandlers);
        return ExitCode::from(exit::BAD_CONFIG);
    }
    let client = match config
        .endpoint()
        .map_err(|err| err.to_string())
        .and_then(|endpoint| {
            AghClient::new(endpoint, Identity::default(), config.client_options())
                .map_err(|err| err.to_string())
        }) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("agh-worker run: cannot build the AGH client: {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let listener = match bind(&socket) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "agh-worker run: cannot serve attach.socket {}: {err}",
                socket.display()
            );
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let span = tracing::info_span!("resident", socket = %socket.display());
    serve(config, client, listener, socket, (sources, log))
        .instrument(span)
        .await
}

/// Binds the socket, owner-only; the user who owns it is the only one served.
fn bind(socket: &Path) -> std::io::Result<(UnixListener, u32)> {
    if let Some(parent) = socket.parent()
        && !parent.is_dir()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "its folder {} does not exist: create it (systemd: RuntimeDirectory=agh-worker)",
                parent.display()
            ),
        ));
    }
    remove_stale_socket(socket)?;
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(socket)?.uid();
    Ok((listener, owner))
}

async fn serve(
    config: Config,
    client: AghClient,
    (listener, owner): (UnixListener, u32),
    socket: PathBuf,
    (sources, log): (ConfigSources, LogControl),
) -> ExitCode {
    let shutdown = Shutdown::default();
    let mut reloads = match crate::ops::signals::install(shutdown.clone()) {
        Ok(reloads) => reloads,
        Err(err) => {
            eprintln!("agh-worker run: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let max_slots = usize::try_from(config.worker.max_slots).unwrap_or(usize::MAX);
    let slots = Arc::new(Slots::new(max_slots));
    let view = ResidentView {
        slots: slots.clone(),
        shutdown: shutdown.clone(),
        timings: HealthTimings::from_parts(&acp_settings(&config), &config.client_options()),
        endpoint: without_userinfo(&client.endpoint().to_string()),
        socket: format!("unix:{}", socket.display()),
        started: tokio::time::Instant::now(),
        started_at: SystemTime::now(),
    };
    let health = match crate::ops::server::start_configured(&config.health, view).await {
        Ok(health) => health,
        Err(err) => {
            eprintln!("agh-worker run: {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    tracing::info!(
        endpoint = %client.endpoint(),
        max_slots,
        handlers = config.handlers.len(),
        "resident worker serving attached sessions"
    );
    let resident = Arc::new(Resident {
        config: Mutex::new(config),
        client,
        slots: slots.clone(),
        shutdown: shutdown.clone(),
    });
    let last_tick = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let notifier = crate::ops::notify::spawn_with(shutdown.clone(), {
        let slots = slots.clone();
        let last_tick = last_tick.clone();
        move || beat(&slots, *lock(&last_tick))
    });
    let mut connections = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Some(stream) = same_user(stream, owner) {
                        connections.spawn(connection::serve(stream, resident.clone()).in_current_span());
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting on the attach socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick() => {
                *lock(&last_tick) = tokio::time::Instant::now();
                // Reap the connections that have ended.
                while connections.try_join_next().is_some() {}
            }
            Some(()) = reloads.recv() => reload(&resident, &sources, &log),
            _ = shutdown.stopping() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    tracing::info!(
        slots = slots.live().len(),
        "stop signal: draining every slot"
    );
    while connections.join_next().await.is_some() {}
    notifier.abort();
    let _ = notifier.await;
    if let Some(health) = health {
        health.stop().await;
    }
    let totals = slots.totals();
    tracing::info!(
        completed = totals.runs_completed,
        failed = totals.runs_failed,
        released = totals.runs_released,
        leases_lost = totals.leases_lost,
        "resident worker stopped"
    );
    ExitCode::SUCCESS
}

/// SIGHUP: the handler table, the log level and the `[worker]` keys of the file as it is now,
/// for every slot from its next claim and for slots made later; an invalid file changes nothing.
fn reload(resident: &Resident, sources: &ConfigSources, log: &LogControl) {
    let config = match crate::config::load(sources) {
        Ok(loaded) => loaded.config,
        Err(err) => {
            tracing::error!(error = %err, "reload refused; the running configuration stays in force");
            return;
        }
    };
    let slots = resident.slots.live();
    for slot in &slots {
        let slot_config = connection::slot_config(&config, &slot.session);
        slot.worker
            .reload(slot_config.handlers.clone(), acp_settings(&slot_config));
    }
    let level_applied = log.set_level(&config.log.level);
    tracing::info!(
        handlers = config.handlers.len(),
        slots = slots.len(),
        log_level = %config.log.level,
        level_applied,
        "configuration reloaded for every slot: handler table, log level and worker timeouts ([agh], attach.socket and worker.max_slots apply at restart)"
    );
    *lock(&resident.config) = config;
}

/// The connection, if its peer runs as the socket's owner; any other is closed unserved (the
/// socket's mode already keeps other users out; this holds even if the mode is changed).
fn same_user(stream: UnixStream, owner: u32) -> Option<UnixStream> {
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == owner => Some(stream),
        Ok(peer) => {
            tracing::warn!(
                peer_uid = peer.uid(),
                peer_pid = ?peer.pid(),
                owner_uid = owner,
                "a process of another user connected to the attach socket; closed unserved"
            );
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the peer of an attach connection; closed unserved");
            None
        }
    }
}

/// The systemd view: ready once listening, alive while the accept loop ticks.
fn beat(slots: &Slots, last_tick: tokio::time::Instant) -> Beat {
    let live = slots.live();
    let working = live
        .iter()
        .filter(|slot| slot.worker.status().current.is_some())
        .count();
    Beat {
        ready: true,
        stopped: false,
        last_tick,
        line: format!(
            "serving {} of {} sessions; {working} runs in hand",
            live.len(),
            slots.max()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's uid, as the owner of a file it creates.
    fn my_uid() -> u32 {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::metadata(file.path()).unwrap().uid()
    }

    #[tokio::test]
    async fn only_a_peer_of_the_socket_s_owner_is_served() {
        let me = my_uid();
        let (ours, _other_end) = UnixStream::pair().unwrap();
        assert!(same_user(ours, me).is_some());
        let (theirs, _other_end) = UnixStream::pair().unwrap();
        assert!(
            same_user(theirs, me.wrapping_add(1)).is_none(),
            "a peer running as another user is closed unserved"
        );
    }

    #[test]
    fn the_socket_is_created_owner_only_in_an_existing_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("attach.sock");
        let err = bind(&missing).unwrap_err();
        assert!(err.to_string().contains("RuntimeDirectory"), "{err}");
        let socket = dir.path().join("attach.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let (_listener, owner) = bind(&socket).unwrap();
        assert_eq!(owner, my_uid());
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
