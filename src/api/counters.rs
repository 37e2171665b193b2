//! Counts of AGH API requests by call and outcome class, for the worker's `/metrics`.
//!
//! The client increments, the health server reads; labels are the client's fixed call names
//! and [`ErrorKind::as_str`](crate::api::ErrorKind::as_str) classes, so the set stays small
//! whatever the daemon answers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::error::ApiError;
use crate::util::sync::lock;

/// Class of a request that got the answer its call expects.
pub const CLASS_OK: &str = "ok";
/// Class of a long-poll (claim-next or recv with `wait`) that reached its client deadline: the
/// ordinary end of an idle wait, kept apart from `timeout` so idle workers do not look failing.
pub const CLASS_DEADLINE: &str = "deadline";

/// Request counts keyed by (call, class). One short lock per request: far below the cost of the
/// HTTP exchange it counts.
#[derive(Debug, Default)]
pub struct ApiRequestCounters {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ApiRequestCounters {
    /// Counts one request of `call` that ended in `class`.
    pub fn record(&self, call: &'static str, class: &'static str) {
        let mut counts = lock(&self.counts);
        *counts.entry((call, class)).or_insert(0) += 1;
    }

    /// Counts one request by its result: `ok`, or the error's class.
    pub fn record_result<T>(&self, call: &'static str, result: &Result<T, ApiError>) {
        self.record(call, class_of(result));
    }

    /// Every (call, class, count) seen so far, sorted.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        lock(&self.counts)
            .iter()
            .map(|(&(call, class), &count)| (call, class, count))
            .collect()
    }

    /// The count of one (call, class) pair.
    pub fn get(&self, call: &str, class: &str) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|(c, k, _)| *c == call && *k == class)
            .map_or(0, |(_, _, count)| count)
    }
}

/// `ok` for a success, else the error kind's class name.
pub(super) fn class_of<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => CLASS_OK,
        Err(err) => err.kind.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ErrorKind;

    #[test]
    fn requests_are_counted_per_call_and_class() {
        let counters = ApiRequestCounters::default();
        counters.record_result::<()>("me", &Ok(()));
        counters.record_result::<()>("me", &Ok(()));
        counters.record_result::<()>(
            "heartbeat",
            &Err(ApiError::local("heartbeat", ErrorKind::Timeout, "slow")),
        );
        counters.record("claim-next", CLASS_DEADLINE);
        assert_eq!(counters.get("me", "ok"), 2);
        assert_eq!(counters.get("heartbeat", "timeout"), 1);
        assert_eq!(counters.get("claim-next", "deadline"), 1);
        assert_eq!(counters.get("claim-next", "ok"), 0);
        assert_eq!(
            counters.snapshot(),
            vec![
                ("claim-next", "deadline", 1),
                ("heartbeat", "timeout", 1),
                ("me", "ok", 2)
            ]
        );
    }
}
