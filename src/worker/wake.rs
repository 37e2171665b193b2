//! The nudge that makes the claim loop claim at once: AGH's scheduler prompts an idle session
//! about a run it could claim (`agh-worker acp` turns that prompt into a wake). A wake cuts the
//! loop's pause short, or a claim long-poll that is open (the daemon re-checks a long-poll only
//! every poll interval); a wake while a run is in hand is moot, since the loop claims right after.

use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::Notify;

/// A handle to wake one claim loop. Cheap to clone; waking a loop that nobody runs does nothing.
#[derive(Clone, Debug, Default)]
pub struct Wake {
    notify: Arc<Notify>,
}

impl Wake {
    /// Asks the loop to claim now. Remembered until the loop next waits, if it is busy.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next wake (or at once, for one that came while nobody waited).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Drops a wake that came while the loop had a run in hand.
    pub(crate) fn forget(&self) {
        let _ = self.notify.notified().now_or_never();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_sent_before_anyone_waits_is_kept_for_the_next_wait() {
        let wake = Wake::default();
        wake.wake();
        assert!(wake.woken().now_or_never().is_some());
        assert!(wake.woken().now_or_never().is_none());
    }

    #[tokio::test]
    async fn a_forgotten_wake_does_not_cut_the_next_wait_short() {
        let wake = Wake::default();
        wake.wake();
        wake.forget();
        assert!(wake.woken().now_or_never().is_none());
    }
}
