//! Where a lease starts in the worker's reckoning: its first deadline and its first renewal,
//! for a run just claimed and for an adopted one.

#[cfg(test)]
use std::time::Duration;
use std::time::SystemTime;

use tokio::time::Instant;

use super::WorkerSettings;
use super::lease::Origin;

/// The lease as the keeper starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FirstReckoning {
    /// The conservative end of the lease until the first renewal moves it.
    pub deadline: Instant,
    /// When the first heartbeat is due.
    pub first_beat: Instant,
}

/// Reckons a lease at `now`. A claim's lease runs from when the claim was sent. An adopted
/// lease's age is known only from the daemon's `lease_until` (`daemon_lease_until`, already
/// parsed; `None` when unset or unreadable): the time left by the wall clock, never more than one
/// configured lease, with the first heartbeat due one interval after that lease would have
/// started. Unknown, or too close to read safely: renew at once and assume only twice the margin.
pub(super) fn reckon(
    origin: Origin,
    claim_sent: Instant,
    daemon_lease_until: Option<SystemTime>,
    settings: &WorkerSettings,
    now: Instant,
) -> FirstReckoning {
    let margin = settings.lease_margin();
    let unknown_age = now + margin * 2;
    let at_once = |deadline| FirstReckoning {
        deadline,
        first_beat: now,
    };
    match origin {
        Origin::Claimed => {
            let reckoned = claim_sent + settings.lease;
            // A waiting claim answered late in its long poll was committed just before its
            // answer, not when it was sent. Reckoning from the send alone put the deadline inside
            // the margin at once (e.g. a 30 s lease claimed 28 s into a 30 s long poll), and the
            // keeper gave a fresh lease up without trying a single renewal. Such a claim is
            // treated like an adopted lease of unknown age instead.
            if reckoned < unknown_age {
                return at_once(unknown_age);
            }
            FirstReckoning {
                deadline: reckoned,
                first_beat: reckoned - settings.lease + settings.heartbeat_every,
            }
        }
        Origin::Adopted => {
            let left = daemon_lease_until
                .and_then(|until| until.duration_since(SystemTime::now()).ok())
                .map(|left| left.min(settings.lease));
            match left {
                Some(left) if left > margin * 2 => {
                    let deadline = now + left;
                    let started = deadline.checked_sub(settings.lease).unwrap_or(now);
                    let due = (started + settings.heartbeat_every).max(now);
                    FirstReckoning {
                        deadline,
                        first_beat: due.min(deadline - margin * 2),
                    }
                }
                _ => at_once(unknown_age),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn settings() -> WorkerSettings {
        let mut settings = WorkerSettings::from_config(&Config::default());
        settings.lease = secs(60);
        settings.heartbeat_every = secs(20);
        settings
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_claim_renews_one_interval_after_it_was_sent() {
        let now = Instant::now();
        let first = reckon(Origin::Claimed, now, None, &settings(), now);
        assert_eq!(first.deadline, now + secs(60));
        assert_eq!(first.first_beat, now + secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_answered_late_in_its_long_poll_renews_at_once() {
        let sent = Instant::now();
        tokio::time::advance(secs(55)).await;
        let now = Instant::now();
        let first = reckon(Origin::Claimed, sent, None, &settings(), now);
        assert_eq!(first.first_beat, now);
        assert_eq!(first.deadline, now + secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_lease_is_renewed_from_its_real_lease_until() {
        let now = Instant::now();
        // 50 s left of a 60 s lease: it started 10 s ago, so the first beat is due in 10 s.
        let until = SystemTime::now() + secs(50);
        let first = reckon(Origin::Adopted, now, Some(until), &settings(), now);
        let deadline = first.deadline - now;
        assert!(deadline <= secs(50) && deadline > secs(49), "{deadline:?}");
        let beat = first.first_beat - now;
        assert!(beat <= secs(10) && beat > secs(9), "{beat:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_lease_near_its_end_is_renewed_at_once() {
        let now = Instant::now();
        let until = SystemTime::now() + secs(25);
        let first = reckon(Origin::Adopted, now, Some(until), &settings(), now);
        assert_eq!(first.first_beat, now);
        assert!(first.deadline - now <= secs(25));
        let late = SystemTime::now() + secs(15);
        let first = reckon(Origin::Adopted, now, Some(late), &settings(), now);
        assert_eq!((first.first_beat, first.deadline), (now, now + secs(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_lease_of_unknown_age_is_renewed_at_once() {
        let now = Instant::now();
        let first = reckon(Origin::Adopted, now, None, &settings(), now);
        assert_eq!((first.first_beat, first.deadline), (now, now + secs(20)));
        // A lease_until far beyond one lease (another clock, a longer lease) counts as one lease.
        let far = SystemTime::now() + secs(3600);
        let first = reckon(Origin::Adopted, now, Some(far), &settings(), now);
        assert!(first.deadline - now <= secs(60));
    }
}
