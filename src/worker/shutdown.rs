//! The two shutdown phases, passed in by whoever runs the worker: never global.

use tokio_util::sync::CancellationToken;

/// The two shutdown phases: stop taking work (drain), and stop now.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// First SIGTERM/SIGINT: no new claims; the run in hand may finish until the drain deadline.
    pub drain: CancellationToken,
    /// Second signal, SIGQUIT, or the drain deadline: cancel the run in hand and release it.
    pub force: CancellationToken,
}

impl Shutdown {
    /// Whether the loop must take no new work. A stop-now without a drain first (SIGQUIT) counts
    /// too: watching only `drain` let the loop claim again after a forced release, and every new
    /// run was cancelled and released at once, in a tight loop.
    pub fn is_stopping(&self) -> bool {
        self.drain.is_cancelled() || self.force.is_cancelled()
    }

    /// A shutdown that follows this one and can also be started by itself (a listener that
    /// stops with its loop; one slot of a resident worker).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            drain: self.drain.child_token(),
            force: self.force.child_token(),
        }
    }

    /// Resolves when either phase begins.
    pub async fn stopping(&self) {
        tokio::select! {
            _ = self.drain.cancelled() => {}
            _ = self.force.cancelled() => {}
        }
    }
}
