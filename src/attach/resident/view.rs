//! What the resident worker's health server shows: every slot in `/status` (each as a worker's
//! own `/status` would show it), totals over the slots and the slot counts in `/metrics`,
//! liveness over every slot's loop, and readiness to take sessions.

use std::sync::Arc;
use std::time::SystemTime;

// The status board keeps tokio's clock (see `worker::status`).
use tokio::time::Instant;

use serde_json::{Value, json};

use super::slots::{Slot, Slots};
use crate::ops::health::{HealthTimings, liveness, unix_seconds};
use crate::ops::metrics::{LoopView, MetricsInput, SlotCounts, render_input};
use crate::ops::server::{HealthInfo, HealthState, HealthView, VERSION};
use crate::worker::Shutdown;

/// The resident worker as its health server sees it.
#[derive(Clone, Debug)]
pub struct ResidentView {
    pub slots: Arc<Slots>,
    pub shutdown: Shutdown,
    pub timings: HealthTimings,
    /// The AGH endpoint, as shown (never with credentials).
    pub endpoint: String,
    /// The attach socket, as shown.
    pub socket: String,
    pub started: Instant,
    pub started_at: SystemTime,
}

impl ResidentView {
    /// One slot as a worker's own health state (its `/status` body, its rules).
    fn slot_state(&self, slot: &Slot) -> HealthState {
        let client = slot.worker.client();
        HealthState::new(
            slot.worker.status_board().clone(),
            slot.shutdown.clone(),
            self.timings,
            HealthInfo::new(client.identity(), client.endpoint()),
        )
    }

    /// Whether every slot's loop is alive, with each slot's answer.
    fn slots_alive(&self) -> (bool, Vec<Value>) {
        let now = Instant::now();
        let mut all = true;
        let answers = self
            .slots
            .live()
            .iter()
            .map(|slot| {
                let answer = liveness(&slot.worker.status(), now, &self.timings);
                all &= answer.is_ok();
                json!({"slot": slot.id, "session_id": slot.session.session_id, "liveness": answer})
            })
            .collect();
        (all, answers)
    }

    /// Ready to take sessions: not stopping, and a slot free.
    fn ready(&self) -> (bool, Vec<&'static str>) {
        let mut reasons = Vec::new();
        if self.shutdown.is_stopping() {
            reasons.push("draining");
        }
        if self.slots.live().len() >= self.slots.max() {
            reasons.push("no_free_slot");
        }
        (reasons.is_empty(), reasons)
    }
}

impl HealthView for ResidentView {
    fn liveness_answer(&self) -> (bool, Value) {
        let (alive, slots) = self.slots_alive();
        let status = if alive { "ok" } else { "stale" };
        (alive, json!({"status": status, "slots": slots}))
    }

    fn readiness_answer(&self) -> (bool, Value) {
        let (ready, reasons) = self.ready();
        let status = if ready { "ready" } else { "not_ready" };
        let body = json!({
            "status": status,
            "reasons": reasons,
            "slots_attached": self.slots.live().len(),
            "max_slots": self.slots.max(),
        });
        (ready, body)
    }

    fn status_json(&self) -> Value {
        let (ready, reasons) = self.ready();
        let (healthy, _) = self.slots_alive();
        let slots: Vec<Value> = self
            .slots
            .live()
            .iter()
            .map(|slot| {
                let mut body = self.slot_state(slot).status_json();
                if let Value::Object(fields) = &mut body {
                    fields.insert("slot".into(), json!(slot.id));
                    fields.insert("thin_pid".into(), json!(slot.session.pid));
                    fields.insert("attached_at".into(), json!(unix_seconds(slot.attached_at)));
                }
                body
            })
            .collect();
        json!({
            "version": VERSION,
            "mode": "resident",
            "attach_socket": self.socket,
            "endpoint": self.endpoint,
            "ready": ready,
            "not_ready_reasons": reasons,
            "healthy": healthy,
            "max_slots": self.slots.max(),
            "slots_attached": slots.len(),
            "started_at": unix_seconds(self.started_at),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "counters": self.slots.totals(),
            "slots": slots,
        })
    }

    fn metrics_text(&self) -> String {
        let live = self.slots.live();
        let loops: Vec<LoopView> = live
            .iter()
            .map(|slot| LoopView::of(slot.worker.status_board()))
            .collect();
        let (healthy, _) = self.slots_alive();
        render_input(&MetricsInput {
            loops,
            retired: self.slots.retired(),
            histograms: self.slots.histograms(),
            ready: self.ready().0,
            healthy,
            api_requests: Some(self.slots.requests()),
            uptime: self.started.elapsed(),
            slots: Some(SlotCounts {
                attached: live.len(),
                max: self.slots.max(),
            }),
        })
    }
}
