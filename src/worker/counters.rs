//! The worker's counters since start: what `/status` lists and `/metrics` exports, and what a
//! resident worker sums over its slots.

use serde::Serialize;

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub runs_claimed: u64,
    pub runs_adopted: u64,
    pub runs_completed: u64,
    pub runs_failed: u64,
    pub runs_released: u64,
    pub leases_lost: u64,
    /// Of `leases_lost`: the daemon answered that the lease was no longer ours.
    pub leases_lost_rejected: u64,
    /// Of `leases_lost`: renewals kept failing until the reckoned lease end came too near.
    pub leases_lost_deadline: u64,
    pub terminal_call_failures: u64,
    /// Runs an operator cancelled while they were in hand.
    pub runs_canceled: u64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
    pub claim_errors: u64,
    /// Channel messages routed to handlers (new ones, after dedupe).
    pub messages_received: u64,
    /// Channel messages sent for handlers (progress, messages, replies).
    pub messages_sent: u64,
    pub message_send_failures: u64,
    pub spawns_created: u64,
    /// Spawns refused locally (budget) or by the daemon (limit, permission, validation).
    pub spawns_refused: u64,
}

impl Counters {
    /// Adds `other`'s counts to these (a resident worker's totals over its slots).
    pub fn add(&mut self, other: &Counters) {
        let Counters {
            runs_claimed,
            runs_adopted,
            runs_completed,
            runs_failed,
            runs_released,
            leases_lost,
            leases_lost_rejected,
            leases_lost_deadline,
            terminal_call_failures,
            runs_canceled,
            heartbeats_ok,
            heartbeats_failed,
            claim_errors,
            messages_received,
            messages_sent,
            message_send_failures,
            spawns_created,
            spawns_refused,
        } = other;
        self.runs_claimed += runs_claimed;
        self.runs_adopted += runs_adopted;
        self.runs_completed += runs_completed;
        self.runs_failed += runs_failed;
        self.runs_released += runs_released;
        self.leases_lost += leases_lost;
        self.leases_lost_rejected += leases_lost_rejected;
        self.leases_lost_deadline += leases_lost_deadline;
        self.terminal_call_failures += terminal_call_failures;
        self.runs_canceled += runs_canceled;
        self.heartbeats_ok += heartbeats_ok;
        self.heartbeats_failed += heartbeats_failed;
        self.claim_errors += claim_errors;
        self.messages_received += messages_received;
        self.messages_sent += messages_sent;
        self.message_send_failures += message_send_failures;
        self.spawns_created += spawns_created;
        self.spawns_refused += spawns_refused;
    }

    /// Runs that reached an end of any kind.
    pub fn runs_finished(&self) -> u64 {
        self.runs_completed
            + self.runs_failed
            + self.runs_released
            + self.leases_lost
            + self.terminal_call_failures
            + self.runs_canceled
    }
}
