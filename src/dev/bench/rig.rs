//! The simulator rig on a loopback port, and the worker loop run in this process against it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;

use crate::api::{AghClient, ClientOptions, Endpoint, Identity};
use crate::assembly::{Worker, WorkerBuilder};
use crate::config::Config;
use crate::dev::sim::{SessionInfo, SimConfig, SimServer, Simulator, TaskSpec, TransitionKind};
use crate::handler::HandlerConfig;
use crate::worker::WorkerSettings;

/// A simulator served on a loopback port, with its default session.
pub(super) struct Rig {
    pub(super) sim: Simulator,
    pub(super) server: SimServer,
    pub(super) session: SessionInfo,
}

impl Rig {
    pub(super) async fn start() -> anyhow::Result<Rig> {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("serving the simulator on loopback")?;
        let session = sim
            .default_session()
            .context("the simulator has no default session")?;
        Ok(Rig {
            sim,
            server,
            session,
        })
    }

    pub(super) fn client(&self) -> anyhow::Result<AghClient> {
        let endpoint = Endpoint::parse(&self.server.base_url())?;
        let identity = Identity {
            session_id: self.session.session_id.clone(),
            agent: self.session.agent_name.clone(),
            workspace_id: None,
        };
        Ok(AghClient::new(
            endpoint,
            identity,
            ClientOptions::default(),
        )?)
    }

    pub(super) fn enqueue(&self, count: u64) {
        for index in 0..count {
            self.sim
                .enqueue_task(TaskSpec::titled(&format!("bench task {index}")));
        }
    }

    pub(super) fn completed(&self) -> u64 {
        self.sim.ledger().transitions_of(TransitionKind::Completed)
    }

    pub(super) async fn stop(self) {
        self.server.shutdown().await;
    }

    /// Stops the rig and answers the rate of `runs` runs done in `elapsed`, once the simulator
    /// shows every one of them completed (a rate of runs that did not complete means nothing).
    pub(super) async fn rate(self, runs: u64, elapsed: std::time::Duration) -> anyhow::Result<f64> {
        let completed = self.completed();
        anyhow::ensure!(
            completed == runs,
            "{completed} of {runs} runs completed in the simulator"
        );
        self.stop().await;
        Ok(runs as f64 / elapsed.as_secs_f64())
    }
}

/// The settings of an in-process worker: long-poll claims, a lease that needs no renewal
/// during a no-op run, and no idle exit.
pub(super) fn settings(
    max_runs: Option<u64>,
    lease: Duration,
    heartbeat: Duration,
) -> WorkerSettings {
    WorkerSettings {
        lease,
        heartbeat_every: heartbeat,
        max_runs,
        ..crate::dev::in_process_settings()
    }
}

/// A builder for the configured `handlers` (and no others).
pub(super) fn builder(handlers: Vec<HandlerConfig>) -> WorkerBuilder {
    WorkerBuilder::new(Config {
        handlers,
        ..Config::default()
    })
}

/// A worker of `builder` against the rig's simulator, without coordination: the bare loop.
pub(super) fn in_process_worker(
    rig: &Rig,
    builder: WorkerBuilder,
    settings: WorkerSettings,
) -> anyhow::Result<Worker> {
    Ok(builder
        .client(rig.client()?)
        .settings(settings)
        .log_events_only()
        .build()?)
}
