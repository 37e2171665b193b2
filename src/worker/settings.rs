//! The claim loop's settings, and the snapshot of them each run keeps: a reload replaces what
//! later claims read, never what a run in flight was handed.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, OrphanPolicy};
use crate::handler::CANCEL_GRACE;
use crate::util::sync::Swap;

/// The loop's settings, from the configuration and the command line.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub lease: Duration,
    pub heartbeat_every: Duration,
    pub claim_wait: bool,
    pub orphan_policy: OrphanPolicy,
    pub drain_timeout: Duration,
    /// Ceiling on any handler's time; `None` = only the bundle's limit applies.
    pub max_runtime: Option<Duration>,
    pub max_runs: Option<u64>,
    pub idle_exit: Option<Duration>,
    /// `--once`: one run, or one empty claim wait, then exit.
    pub once: bool,
    pub identity_probe: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a cancelled handler gets to return before it is abandoned.
    pub cancel_grace: Duration,
    /// Pause between claims when `claim_wait` is off and nothing was claimable.
    pub poll_interval: Duration,
    pub required_capabilities: Vec<String>,
    pub priority_min: Option<i64>,
    /// Follow each run's task stream, so an operator cancel stops the handler at once.
    pub follow_task_events: bool,
}

impl WorkerSettings {
    /// Settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        let worker = &config.worker;
        WorkerSettings {
            lease: worker.lease(),
            heartbeat_every: worker.heartbeat_every(),
            claim_wait: worker.claim_wait,
            orphan_policy: worker.orphan_policy,
            drain_timeout: worker.drain_timeout(),
            max_runtime: worker.max_runtime(),
            max_runs: worker.max_runs(),
            idle_exit: worker.idle_exit(),
            once: false,
            identity_probe: worker.identity_probe(),
            initial_backoff: config.retry.initial_backoff(),
            max_backoff: config.retry.max_backoff(),
            cancel_grace: CANCEL_GRACE,
            poll_interval: Duration::from_secs(1),
            required_capabilities: worker.required_capabilities.clone(),
            priority_min: (worker.priority_min > 0).then_some(worker.priority_min as i64),
            follow_task_events: worker.follow_task_events,
        }
    }

    /// The local safety margin: the handler is cancelled this long before the reckoned lease end.
    pub fn lease_margin(&self) -> Duration {
        (self.lease / 6).max(Duration::from_secs(1))
    }
}

/// The settings in force, replaceable while the worker runs (SIGHUP reload). The loop reads
/// them at each claim; a run keeps the settings it started with (the `Arc` it was handed).
#[derive(Clone, Debug)]
pub struct SharedSettings {
    current: Arc<Swap<WorkerSettings>>,
}

impl SharedSettings {
    pub fn new(settings: WorkerSettings) -> Self {
        SharedSettings {
            current: Arc::new(Swap::new(settings)),
        }
    }

    /// The settings in force, frozen: a later reload does not change what this returned.
    pub fn get(&self) -> Arc<WorkerSettings> {
        self.current.get()
    }

    /// Replaces the settings for what starts from now on.
    pub fn replace(&self, settings: WorkerSettings) {
        self.current.replace(settings);
    }
}

impl From<WorkerSettings> for SharedSettings {
    fn from(settings: WorkerSettings) -> Self {
        SharedSettings::new(settings)
    }
}
