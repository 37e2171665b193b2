//! The listener's pure rules: which message ids are news, how long to pause before asking
//! again, and what a failed `recv` means for its channel.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::api::{ApiError, ErrorKind};

/// The ids seen most recently: a set for lookups and a FIFO that evicts the oldest beyond `cap`.
#[derive(Debug)]
pub struct SeenIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl SeenIds {
    pub fn new(cap: usize) -> Self {
        SeenIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records `id`; true when it was not seen before (within the window).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// How long to wait before asking again, given the pause wanted and how long the request took:
/// a long-poll that waited out its deadline has already spent the pause.
pub fn remaining_pause(pause: Duration, request_took: Duration) -> Duration {
    pause.saturating_sub(request_took)
}

/// What a recv failure means for the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvFailure {
    /// 503 (network disabled or not configured; over TCP the text is masked, so any 503 other
    /// than an identity lookup), or a channel the daemon refuses (400): probe slowly.
    ChannelUnavailable,
    /// Anything else: back off (jittered, capped) and try again.
    Transient,
}

pub fn classify_recv_failure(err: &ApiError) -> RecvFailure {
    match err.kind {
        ErrorKind::ServiceUnavailable | ErrorKind::Validation | ErrorKind::RouteNotFound => {
            RecvFailure::ChannelUnavailable
        }
        _ => RecvFailure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::backoff::Backoff;

    #[test]
    fn seen_ids_report_news_once_and_forget_the_oldest_beyond_the_cap() {
        let mut seen = SeenIds::new(3);
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(seen.insert("c"));
        assert!(seen.insert("d"));
        assert_eq!(seen.len(), 3);
        // "a" was evicted, so it counts as new again; "d" is remembered.
        assert!(!seen.insert("d"));
        assert!(seen.insert("a"));
    }

    #[test]
    fn idle_backoff_doubles_to_its_cap_and_resets_on_news() {
        let mut idle = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let delays: Vec<u64> = (0..7)
            .map(|_| idle.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        idle.reset();
        assert_eq!(idle.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn a_long_poll_that_waited_has_already_spent_its_pause() {
        assert_eq!(
            remaining_pause(Duration::from_secs(5), Duration::from_secs(30)),
            Duration::ZERO
        );
        assert_eq!(
            remaining_pause(Duration::from_secs(5), Duration::from_secs(1)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn a_503_means_a_slow_probe_and_a_transport_error_a_backoff() {
        let disabled =
            ApiError::from_response("recv", 503, br#"{"error":"api: network is disabled"}"#);
        assert_eq!(
            classify_recv_failure(&disabled),
            RecvFailure::ChannelUnavailable
        );
        let masked = ApiError::from_response("recv", 503, br#"{"error":"Service Unavailable"}"#);
        assert_eq!(
            classify_recv_failure(&masked),
            RecvFailure::ChannelUnavailable
        );
        let transport = ApiError::local("recv", ErrorKind::Transport, "connection refused");
        assert_eq!(classify_recv_failure(&transport), RecvFailure::Transient);
    }
}
