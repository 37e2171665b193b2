//! systemd notifications: READY=1 once the loop runs, STATUS= lines as its state changes,
//! STOPPING=1 on drain, and WATCHDOG=1 only while the loop is seen ticking, so a wedged loop
//! stops the pings and systemd restarts the service. Without `NOTIFY_SOCKET` nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use crate::worker::{Shutdown, StatusBoard, WorkerState};

/// What the notifier reads at each tick.
#[derive(Clone, Debug)]
pub struct Beat {
    /// Ready to work: READY=1 is sent the first time.
    pub ready: bool,
    /// Ended: the notifier stops.
    pub stopped: bool,
    /// When the watched loop last showed it was alive.
    pub last_tick: tokio::time::Instant,
    /// The `STATUS=` line.
    pub line: String,
}

/// Starts the notifier of a worker; it ends when the worker reports `Stopped`.
pub fn spawn(status: StatusBoard, shutdown: Shutdown) -> JoinHandle<()> {
    spawn_with(shutdown, move || {
        let snapshot = status.snapshot();
        Beat {
            ready: snapshot.state != WorkerState::Starting,
            stopped: snapshot.state == WorkerState::Stopped,
            last_tick: snapshot.last_tick,
            line: status_line(&snapshot),
        }
    })
}

/// Starts a notifier that reads `beat` at each tick (a resident worker's own beat).
pub fn spawn_with(shutdown: Shutdown, beat: impl Fn() -> Beat + Send + 'static) -> JoinHandle<()> {
    tokio::spawn(async move {
        let watchdog = watchdog_interval();
        let every = watchdog
            .map(|w| (w / 3).clamp(Duration::from_millis(200), Duration::from_secs(5)))
            .unwrap_or(Duration::from_secs(1));
        let mut ready_sent = false;
        let mut stopping_sent = false;
        let mut last_line = String::new();
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            let now = beat();
            if now.stopped {
                return;
            }
            let mut states = Vec::new();
            if !ready_sent && now.ready {
                states.push(NotifyState::Ready);
                ready_sent = true;
            }
            if !stopping_sent && shutdown.drain.is_cancelled() {
                states.push(NotifyState::Stopping);
                stopping_sent = true;
            }
            if now.line != last_line {
                last_line = now.line;
                states.push(NotifyState::Status(&last_line));
            }
            // The loop ticks at least every few seconds while alive, even inside long-polls.
            let alive = watchdog.is_some_and(|w| now.last_tick.elapsed() < w);
            if alive {
                states.push(NotifyState::Watchdog);
            }
            if !states.is_empty()
                && let Err(err) = sd_notify::notify(&states)
            {
                tracing::debug!(error = %err, "systemd notification failed");
            }
        }
    })
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One human line for `systemctl status`.
pub fn status_line(status: &crate::worker::WorkerStatus) -> String {
    let counters = &status.counters;
    let state = match status.state {
        WorkerState::Starting => "starting",
        WorkerState::Idle => "waiting for work",
        WorkerState::Running => "running",
        WorkerState::BackingOff => "AGH unavailable, backing off",
        WorkerState::IdentityStale => "session not active, probing",
        WorkerState::Draining => "draining",
        WorkerState::Stopped => "stopped",
    };
    let current = status
        .current
        .as_ref()
        .map(|c| format!(" {}", c.run_id))
        .unwrap_or_default();
    format!(
        "{state}{current}; {} completed, {} failed, {} released, {} leases lost",
        counters.runs_completed, counters.runs_failed, counters.runs_released, counters.leases_lost
    )
}
