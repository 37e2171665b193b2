//! One thin process's connection, from its attach request to the end of its slot: the slot's
//! worker is built with the session's identity and run; wakes are passed to it; its state goes
//! back as status lines; and AGH's stop, or the thin process going away, stops it as
//! `agh-worker acp` stops itself (no call to AGH, every handler group ended, within the budget).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::Resident;
use super::slots::{Refusal, Shared, Slot};
use crate::acp::session::{acp_settings, stop_worker};
use crate::acp::turn;
use crate::api::AghClient;
use crate::assembly::{Worker, WorkerBuilder};
use crate::attach::wire::{
    self, AttachRequest, FromResident, FromThin, PROTOCOL_VERSION, RefusalReason,
};
use crate::config::Config;
use crate::util::sync::lock;
use crate::worker::WorkerExit;

/// The longest wait for a new connection's attach request.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a slot's state is looked at for a new status line.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Serves one connection until its slot ends.
pub async fn serve(stream: UnixStream, resident: Arc<Resident>) {
    let (read_half, mut write_half) = stream.into_split();
    let mut incoming = wire::spawn_reader::<_, FromThin>(read_half);
    let request = match tokio::time::timeout(ATTACH_TIMEOUT, incoming.recv()).await {
        Ok(Some(Ok(FromThin::Attach(request)))) => request,
        Ok(Some(Ok(other))) => {
            let problem = format!("the first message must be an attach request, not {other:?}");
            refuse(&mut write_half, (RefusalReason::BadRequest, problem)).await;
            return;
        }
        Ok(Some(Err(err))) => {
            refuse(
                &mut write_half,
                (RefusalReason::BadRequest, err.to_string()),
            )
            .await;
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::warn!(
                "a connection sent no attach request within {} s; closed",
                ATTACH_TIMEOUT.as_secs()
            );
            return;
        }
    };
    let span =
        tracing::info_span!("slot", session_id = %request.session_id, thin_pid = request.pid);
    async move {
        let slot = match admit(&resident, &request) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::warn!(reason = ?refusal.0, problem = %refusal.1, "session refused");
                refuse(&mut write_half, refusal).await;
                return;
            }
        };
        tracing::info!(slot = slot.id, agent = %request.agent, "session attached");
        if wire::write(&mut write_half, &FromResident::Attached { slot: slot.id })
            .await
            .is_ok()
        {
            attend(&resident, &slot, &mut write_half, &mut incoming).await;
        } else {
            // Gone before it heard the answer: nothing was started.
            tracing::info!("the thin process left before its slot started");
        }
        resident.slots.free(slot.id);
        tracing::info!(
            slot = slot.id,
            attached = resident.slots.live().len(),
            "slot freed"
        );
    }
    .instrument(span)
    .await;
}

/// A slot for `request`, or why not.
fn admit(resident: &Resident, request: &AttachRequest) -> Result<Arc<Slot>, Refusal> {
    if request.version != PROTOCOL_VERSION {
        return Err((
            RefusalReason::Version,
            format!(
                "the thin process speaks attach protocol {}, this resident worker {PROTOCOL_VERSION}: run the same agh-worker version on both sides",
                request.version
            ),
        ));
    }
    if resident.shutdown.is_stopping() {
        return Err((
            RefusalReason::Stopping,
            "the resident worker is stopping".into(),
        ));
    }
    let config = slot_config(&lock(&resident.config), request);
    if let Err(errors) = config.validate() {
        return Err((
            RefusalReason::BadRequest,
            format!("the session's identity cannot be used: {errors}"),
        ));
    }
    resident
        .slots
        .admit(request, resident.shutdown.child(), |shared| {
            build(&config, &resident.client, shared)
        })
}

/// The resident's configuration with the session's identity in `[agh]`.
pub fn slot_config(base: &Config, request: &AttachRequest) -> Config {
    let mut config = base.clone();
    config.agh.session_id = request.session_id.clone();
    config.agh.agent = request.agent.clone();
    config.agh.workspace_id = request.workspace_id.clone().unwrap_or_default();
    config.agh.session_channel = request.session_channel.clone().unwrap_or_default();
    config
}

/// The slot's worker: built as `agh-worker acp` builds its own (the short lease of an
/// AGH-launched session), on the resident's connection pool.
fn build(config: &Config, client: &AghClient, shared: Shared) -> Result<Worker, String> {
    WorkerBuilder::new(config.clone())
        .settings(acp_settings(config))
        .client(client.for_identity(config.identity()))
        .status_board(shared.board)
        .request_counters(shared.requests)
        .build()
        .map_err(|err| err.to_string())
}

async fn refuse(write_half: &mut OwnedWriteHalf, (reason, message): Refusal) {
    let _ = wire::write(write_half, &FromResident::Refused { reason, message }).await;
}

/// Runs the slot's worker until the session stops, the thin process goes away, the loop ends by
/// itself, or the resident stops.
async fn attend(
    resident: &Resident,
    slot: &Slot,
    write_half: &mut OwnedWriteHalf,
    incoming: &mut tokio::sync::mpsc::Receiver<Result<FromThin, wire::WireError>>,
) {
    let worker = slot.worker.clone();
    let shutdown = slot.shutdown.clone();
    let mut running: JoinHandle<WorkerExit> =
        tokio::spawn(async move { worker.run(shutdown).await }.in_current_span());
    let mut status_every = tokio::time::interval(STATUS_EVERY);
    let mut last_line = String::new();
    loop {
        tokio::select! {
            message = incoming.recv() => match message {
                Some(Ok(FromThin::Wake { task_id, task_run_id })) => {
                    tracing::info!(%task_id, %task_run_id, "woken by AGH's scheduler: claiming now");
                    slot.worker.wake().wake();
                }
                Some(Ok(FromThin::Stop)) => {
                    tracing::info!("AGH is stopping this session: stopping its slot");
                    stop_worker(&slot.worker, &slot.shutdown, Some(running)).await;
                    let _ = wire::write(write_half, &FromResident::Stopped).await;
                    return;
                }
                Some(Ok(FromThin::Attach(_))) => {
                    tracing::warn!("a second attach request on one connection; ignored");
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "the thin process's connection failed: stopping its slot");
                    stop_worker(&slot.worker, &slot.shutdown, Some(running)).await;
                    return;
                }
                None => {
                    tracing::info!("the thin process went away (its session has ended): stopping its slot");
                    stop_worker(&slot.worker, &slot.shutdown, Some(running)).await;
                    return;
                }
            },
            _ = status_every.tick() => {
                let line = turn::describe(&slot.worker.status());
                if line != last_line {
                    if wire::write(write_half, &FromResident::Status { line: line.clone() }).await.is_err() {
                        // The reader sees the connection end next and stops the slot.
                        continue;
                    }
                    last_line = line;
                }
            }
            exit = &mut running => {
                if resident.shutdown.is_stopping() {
                    // The thin process attaches again to the next resident worker.
                    tracing::info!("slot drained: the resident worker is stopping");
                    return;
                }
                let reason = match exit {
                    Ok(exit) => format!("{exit:?}"),
                    Err(err) => format!("the worker loop failed: {err}"),
                };
                tracing::info!(%reason, "the slot's loop ended by itself");
                let _ = wire::write(write_half, &FromResident::Ended { reason }).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::MatchRule;
    use crate::api::{Endpoint, Identity};
    use crate::attach::resident::slots::Slots;
    use crate::handler::HandlerConfig;
    use crate::worker::Shutdown;

    fn resident(max_slots: usize) -> Resident {
        let mut config = Config {
            handlers: vec![HandlerConfig::noop("noop", MatchRule::default())],
            ..Config::default()
        };
        config.agh.endpoint = "http://127.0.0.1:9".into();
        let endpoint = Endpoint::parse("http://127.0.0.1:9").unwrap();
        Resident {
            client: AghClient::new(endpoint, Identity::default(), config.client_options()).unwrap(),
            config: Mutex::new(config),
            slots: Arc::new(Slots::new(max_slots)),
            shutdown: Shutdown::default(),
        }
    }

    fn request(session_id: &str, version: u32) -> AttachRequest {
        AttachRequest {
            version,
            session_id: session_id.into(),
            agent: "agh-worker".into(),
            workspace_id: None,
            session_channel: None,
            pid: 1,
        }
    }

    #[test]
    fn an_identity_the_configuration_would_refuse_gets_no_slot() {
        let resident = resident(2);
        let refused = admit(&resident, &request("sess\nX-Other: 1", PROTOCOL_VERSION));
        let Err((RefusalReason::BadRequest, why)) = refused else {
            panic!("a header-breaking session id must be refused: {refused:?}");
        };
        assert!(why.contains("agh.session_id"), "{why}");
        assert!(resident.slots.live().is_empty());
    }

    #[test]
    fn another_protocol_version_or_a_stopping_resident_gets_no_slot() {
        let resident = resident(2);
        assert!(matches!(
            admit(&resident, &request("sess-1", PROTOCOL_VERSION + 1)),
            Err((RefusalReason::Version, _))
        ));
        resident.shutdown.drain.cancel();
        assert!(matches!(
            admit(&resident, &request("sess-1", PROTOCOL_VERSION)),
            Err((RefusalReason::Stopping, _))
        ));
    }

    #[test]
    fn a_slot_speaks_as_its_session_and_the_resident_s_own_client_as_nobody() {
        let resident = resident(2);
        let slot = admit(&resident, &request("sess-1", PROTOCOL_VERSION)).unwrap();
        assert_eq!(slot.worker.client().identity().session_id, "sess-1");
        assert_eq!(
            resident.client.identity().session_id,
            "",
            "the resident's own client speaks as nobody"
        );
    }
}
