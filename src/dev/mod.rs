//! Development tools shipped in the binary: the built-in simulator, a minimal Coder Hub, the demo,
//! the benchmark and the fault soak.

use std::time::Duration;

use crate::config::OrphanPolicy;
use crate::worker::WorkerSettings;

pub mod bench;
pub mod demo;
mod demo_acp;
pub mod hub;
pub mod serve;
pub mod sim;
pub mod soak;

/// The loop settings of a worker run in this process against the built-in simulator (the demo,
/// the bench): long-poll claims, a 60 s lease heartbeated every 20 s, orphans released, quick
/// backoffs and drain, and no limits; each tool overrides what it needs.
fn in_process_settings() -> WorkerSettings {
    WorkerSettings {
        lease: Duration::from_secs(60),
        heartbeat_every: Duration::from_secs(20),
        claim_wait: true,
        orphan_policy: OrphanPolicy::Release,
        drain_timeout: Duration::from_secs(5),
        max_runtime: None,
        max_runs: None,
        idle_exit: None,
        once: false,
        identity_probe: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        cancel_grace: Duration::from_secs(5),
        poll_interval: Duration::from_millis(200),
        required_capabilities: Vec::new(),
        priority_min: None,
        follow_task_events: true,
    }
}
