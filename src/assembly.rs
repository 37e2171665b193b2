//! Assembling a worker: the one place where the AGH client, the status board, the handler table,
//! the coordination layer (outbox, spawner, channel listener) and the claim loop are wired
//! together. `agh-worker run`, the demo, the benchmark and the tests build their workers here, and
//! so does a Rust program that embeds the worker ([`WorkerBuilder`]).

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use crate::api::{AghClient, ApiError, ApiRequestCounters, Endpoint, EndpointParseError};
use crate::config::{Config, ResolveEndpointError};
use crate::coordination::listener::ListenerSettings;
use crate::coordination::{Coordination, CoordinationSettings};
use crate::handler::process_groups::{ProcessGroups, state_dir};
use crate::handler::{Handler, HandlerEvent, HandlerSet, MatchRule, SharedHandlers, TaskDocument};
use crate::worker::{
    ClaimLoop, EventSink, LogEvents, SharedSettings, Shutdown, StatusBoard, Wake, WorkerExit,
    WorkerSettings, WorkerStatus,
};

/// How long the outbox may take, after the loop has stopped, to send what handlers reported last.
const OUTBOX_FLUSH: Duration = Duration::from_secs(5);

/// Why a worker cannot be built. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Neither a configured `[[handlers]]` entry nor an in-process handler.
    #[error(
        "no handlers are configured: add a [[handlers]] entry to the config file or set \
         AGH_WORKER__HANDLERS (see config/agh-worker.toml), or add an in-process handler"
    )]
    NoHandlers,
    /// The daemon's address cannot be worked out from `[agh]`.
    #[error("cannot work out the AGH endpoint: {0}")]
    Endpoint(#[from] ResolveEndpointError),
    /// An endpoint given as text does not parse.
    #[error("the AGH endpoint is not usable: {0}")]
    EndpointText(#[from] EndpointParseError),
    /// The HTTP client cannot be built for that endpoint.
    #[error("cannot build the AGH client: {0}")]
    Client(#[from] ApiError),
}

/// Builds a [`Worker`] from a [`Config`] (loaded with [`crate::config::load`], or made in code)
/// and, optionally, in-process handlers.
#[derive(Debug)]
pub struct WorkerBuilder {
    config: Config,
    handlers: HandlerSet,
    settings: Option<WorkerSettings>,
    coordination: Option<CoordinationSettings>,
    listener: Option<Option<ListenerSettings>>,
    log_events_only: bool,
    client: Option<AghClient>,
    status: StatusBoard,
    process_groups: Option<ProcessGroups>,
    requests: Option<Arc<ApiRequestCounters>>,
}

impl WorkerBuilder {
    /// A builder for the worker `config` describes: its identity, endpoint, timings and
    /// `[[handlers]]` table.
    pub fn new(config: Config) -> Self {
        WorkerBuilder {
            handlers: HandlerSet::new(config.handlers.clone()),
            config,
            settings: None,
            coordination: None,
            listener: None,
            log_events_only: false,
            client: None,
            status: StatusBoard::default(),
            process_groups: None,
            requests: None,
        }
    }

    /// Adds an in-process handler for the tasks `matches` accepts ([`MatchRule::default`]
    /// accepts every task). In-process handlers are tried before the configured table, in the
    /// order they were added.
    pub fn handler(
        mut self,
        name: impl Into<String>,
        matches: MatchRule,
        handler: impl Handler,
    ) -> Self {
        self.handlers = self.handlers.with_in_process(name, matches, handler);
        self
    }

    /// Replaces the claim loop's settings derived from `[worker]` (the `run` flags, the demo).
    #[doc(hidden)]
    pub fn settings(mut self, settings: WorkerSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Replaces the outbox and spawner settings derived from `[coordination]`.
    #[doc(hidden)]
    pub fn coordination(mut self, settings: CoordinationSettings) -> Self {
        self.coordination = Some(settings);
        self
    }

    /// Replaces the channel listener's settings derived from the configuration; `None` runs no
    /// listener (as `coordination.listen = false` does).
    #[doc(hidden)]
    pub fn listener(mut self, settings: Option<ListenerSettings>) -> Self {
        self.listener = Some(settings);
        self
    }

    /// No coordination at all: what handlers report is only logged and spawn asks are refused.
    /// For measuring the bare claim loop.
    #[doc(hidden)]
    pub fn log_events_only(mut self) -> Self {
        self.log_events_only = true;
        self
    }

    /// Uses `client` instead of one built from `[agh]`.
    #[doc(hidden)]
    pub fn client(mut self, client: AghClient) -> Self {
        self.client = Some(client);
        self
    }

    /// Uses the endpoint at `url` (e.g. a simulator's base URL) instead of the configured one.
    pub fn endpoint(mut self, url: &str) -> Result<Self, BuildError> {
        let endpoint = Endpoint::parse(url)?;
        self.client = Some(AghClient::new(
            endpoint,
            self.config.identity(),
            self.config.client_options(),
        )?);
        Ok(self)
    }

    /// Where handler programs' process groups are recorded; by default in [`state_dir`] as the
    /// environment sets it.
    #[doc(hidden)]
    pub fn process_groups(mut self, groups: ProcessGroups) -> Self {
        self.process_groups = Some(groups);
        self
    }

    /// Writes the worker's state on `board` (a resident worker gives each slot a board sharing
    /// one pair of run histograms).
    #[doc(hidden)]
    pub fn status_board(mut self, board: StatusBoard) -> Self {
        self.status = board;
        self
    }

    /// Counts the worker's requests to AGH into `counters` (shared by a resident worker's slots).
    #[doc(hidden)]
    pub fn request_counters(mut self, counters: Arc<ApiRequestCounters>) -> Self {
        self.requests = Some(counters);
        self
    }

    /// Wires the worker. Nothing runs until [`Worker::run`].
    pub fn build(self) -> Result<Worker, BuildError> {
        if self.handlers.is_empty() {
            return Err(BuildError::NoHandlers);
        }
        let requests = self.requests.unwrap_or_default();
        let client = match self.client {
            Some(client) => client,
            None => AghClient::new(
                self.config.endpoint()?,
                self.config.identity(),
                self.config.client_options(),
            )?,
        };
        let api = Arc::new(client.with_request_counters(requests.clone()));
        let status = self.status;
        // Handlers report into the board's health record, which `/readyz` reads; a reload keeps it.
        let process_groups = self
            .process_groups
            .unwrap_or_else(|| ProcessGroups::in_dir(&state_dir(|name| std::env::var_os(name))));
        let handlers = Arc::new(SharedHandlers::new(
            self.handlers
                .with_health(status.handler_health().clone())
                .with_process_groups(process_groups.clone()),
        ));
        let settings = SharedSettings::new(
            self.settings
                .unwrap_or_else(|| WorkerSettings::from_config(&self.config)),
        );
        let events = if self.log_events_only {
            Events::Log(LogEvents)
        } else {
            Events::Coordination(Arc::new(Coordination::new(
                api.clone(),
                status.clone(),
                self.coordination
                    .unwrap_or_else(|| CoordinationSettings::from_config(&self.config)),
            )))
        };
        let listener = match self.listener {
            Some(listener) => listener,
            None => self
                .config
                .coordination
                .listen
                .then(|| ListenerSettings::from_config(&self.config)),
        };
        Ok(Worker {
            api,
            requests,
            process_groups,
            handlers,
            settings,
            status,
            events: Arc::new(events),
            listener,
            wake: Wake::default(),
        })
    }
}

/// What handlers report goes to the coordination layer, or only to the log.
#[derive(Debug)]
enum Events {
    Coordination(Arc<Coordination<AghClient>>),
    Log(LogEvents),
}

impl EventSink for Events {
    fn run_started(
        &self,
        document: &TaskDocument,
        inbound: tokio::sync::mpsc::Sender<crate::api::types::ChannelMessage>,
    ) {
        match self {
            Events::Coordination(coordination) => coordination.run_started(document, inbound),
            Events::Log(log) => log.run_started(document, inbound),
        }
    }

    fn run_ended(&self, run_id: &str) {
        match self {
            Events::Coordination(coordination) => coordination.run_ended(run_id),
            Events::Log(log) => log.run_ended(run_id),
        }
    }

    async fn handle(&self, document: &TaskDocument, event: HandlerEvent) {
        match self {
            Events::Coordination(coordination) => coordination.handle(document, event).await,
            Events::Log(log) => log.handle(document, event).await,
        }
    }
}

/// A worker, built and ready to run: it claims runs as its session, keeps each lease alive while
/// the chosen handler works, and finishes each run exactly once.
#[derive(Debug)]
pub struct Worker {
    api: Arc<AghClient>,
    requests: Arc<ApiRequestCounters>,
    process_groups: ProcessGroups,
    handlers: Arc<SharedHandlers>,
    settings: SharedSettings,
    status: StatusBoard,
    events: Arc<Events>,
    listener: Option<ListenerSettings>,
    wake: Wake,
}

impl Worker {
    /// Runs until `shutdown` (drain, then force), `max_runs` or idleness; never returns while a
    /// lease is held. The channel listener and the outbox run beside the loop and stop with it.
    pub async fn run(&self, shutdown: Shutdown) -> WorkerExit {
        // Before any lease is adopted: a handler a dead predecessor left running may be working
        // on the very run this worker is about to adopt.
        self.process_groups.sweep();
        // The listener follows the caller's shutdown, and also stops when the loop ends on its
        // own (max runs, idleness), which cancels nothing else.
        let listener_shutdown = shutdown.child();
        let mut listener = None;
        if let Events::Coordination(coordination) = self.events.as_ref() {
            if let Some(settings) = &self.listener {
                // In the caller's span: a resident worker's slot names its session there.
                listener = Some(tokio::spawn(
                    coordination
                        .listener(settings.clone(), listener_shutdown.clone())
                        .run()
                        .in_current_span(),
                ));
            }
            // Read the spawn budget at start, so the first spawn is checked without waiting.
            let spawner = coordination.spawner().clone();
            tokio::spawn(
                async move {
                    spawner.refresh().await;
                }
                .in_current_span(),
            );
        }
        let claim_loop = ClaimLoop {
            api: self.api.clone(),
            handlers: self.handlers.clone(),
            events: self.events.clone(),
            settings: self.settings.clone(),
            status: self.status.clone(),
            shutdown,
            wake: self.wake.clone(),
        };
        let exit = claim_loop.run().await;
        listener_shutdown.force.cancel();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        if let Events::Coordination(coordination) = self.events.as_ref() {
            coordination.flush(OUTBOX_FLUSH).await;
        }
        exit
    }

    /// The worker's state now: what `/status` shows.
    pub fn status(&self) -> WorkerStatus {
        self.status.snapshot()
    }

    /// The live status board (the health server reads it).
    #[doc(hidden)]
    pub fn status_board(&self) -> &StatusBoard {
        &self.status
    }

    /// Wakes the claim loop: claim now, cutting a pause or an open long-poll short (a scheduler
    /// wake prompt, `agh-worker acp`).
    #[doc(hidden)]
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// The record of this worker's handler process groups.
    #[doc(hidden)]
    pub fn handler_process_groups(&self) -> &ProcessGroups {
        &self.process_groups
    }

    /// The AGH client the worker uses.
    #[doc(hidden)]
    pub fn client(&self) -> &AghClient {
        &self.api
    }

    /// Requests made to AGH, by endpoint and answer class (for `/metrics`).
    #[doc(hidden)]
    pub fn request_counters(&self) -> &Arc<ApiRequestCounters> {
        &self.requests
    }

    /// Replaces the configured handler table and the loop's settings for runs that start from
    /// now on (SIGHUP). A run in hand keeps what it started with; in-process handlers stay.
    pub fn reload(&self, handlers: Vec<crate::handler::HandlerConfig>, settings: WorkerSettings) {
        self.handlers.replace(handlers);
        self.settings.replace(settings);
    }
}
