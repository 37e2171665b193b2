//! `/metrics`: the Prometheus families, built from the live state on each scrape with
//! prometheus-client. Counters are copied from the status board (the worker keeps them), the
//! histograms are the board's own (observed at record time), the gauges follow the health rules
//! of [`super::health`].

use std::sync::atomic::AtomicU64;
use std::time::Duration;

// The status board keeps tokio's clock (see `worker::status`).
use tokio::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::health::{HealthTimings, liveness, readiness};
use super::server::VERSION;
use crate::api::ApiRequestCounters;
use crate::worker::{Counters, RunHistograms, WorkerStatus};
use crate::worker::{StatusBoard, WorkerState};

/// Content type of `/metrics`: prometheus-client writes the OpenMetrics text format, which
/// Prometheus scrapes natively.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, &'static str)>;

/// A counter family with one series per label set, each set to its value.
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, value) in series {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// A gauge of seconds (its name gets the `_seconds` suffix).
fn seconds(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    registry.register_with_unit(name, help, Unit::Seconds, gauge);
}

const WORKER_STATES: [(WorkerState, &str); 7] = [
    (WorkerState::Starting, "starting"),
    (WorkerState::Idle, "idle"),
    (WorkerState::Running, "running"),
    (WorkerState::BackingOff, "backing_off"),
    (WorkerState::IdentityStale, "identity_stale"),
    (WorkerState::Draining, "draining"),
    (WorkerState::Stopped, "stopped"),
];

/// One claim loop as `/metrics` sees it: its snapshot and its handlers' health.
#[derive(Clone, Debug)]
pub struct LoopView {
    pub snapshot: WorkerStatus,
    /// Every configured handler with whether it can work, by name.
    pub handlers: Vec<(String, bool)>,
}

impl LoopView {
    /// The loop that writes `board`, now.
    pub fn of(board: &StatusBoard) -> Self {
        LoopView {
            snapshot: board.snapshot(),
            handlers: board.handler_health().handlers(),
        }
    }
}

/// How many sessions a resident worker serves, and may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCounts {
    pub attached: usize,
    pub max: usize,
}

/// Everything `/metrics` is rendered from: one worker's loop, or a resident worker's slots
/// (counters summed, gauges counting loops, one histogram pair shared by all).
#[derive(Debug)]
pub struct MetricsInput<'a> {
    pub loops: Vec<LoopView>,
    /// Counts of loops that have ended (a resident worker's slots that are gone).
    pub retired: Counters,
    pub histograms: &'a RunHistograms,
    pub ready: bool,
    pub healthy: bool,
    pub api_requests: Option<&'a ApiRequestCounters>,
    pub uptime: Duration,
    /// Set for a resident worker.
    pub slots: Option<SlotCounts>,
}

/// The metrics text now of the worker whose loop writes `board`. `stopping`: a shutdown began;
/// `api_requests`: the AGH client's counts, when it keeps them; `uptime`: time since start.
pub fn render(
    board: &StatusBoard,
    stopping: bool,
    timings: &HealthTimings,
    api_requests: Option<&ApiRequestCounters>,
    uptime: Duration,
) -> String {
    let view = LoopView::of(board);
    let now = Instant::now();
    let ready = readiness(&view.snapshot, stopping, now, timings).is_ready();
    let healthy = liveness(&view.snapshot, now, timings).is_ok();
    render_input(&MetricsInput {
        loops: vec![view],
        retired: Counters::default(),
        histograms: board.histograms(),
        ready,
        healthy,
        api_requests,
        uptime,
        slots: None,
    })
}

/// The metrics text of `input`.
pub fn render_input(input: &MetricsInput<'_>) -> String {
    let now = Instant::now();
    let mut c = input.retired.clone();
    for view in &input.loops {
        c.add(&view.snapshot.counters);
    }
    let c = &c;
    let count = |test: &dyn Fn(&LoopView) -> bool| {
        i64::try_from(input.loops.iter().filter(|view| test(view)).count()).unwrap_or(i64::MAX)
    };
    let mut registry = Registry::with_prefix("agh_worker");
    registry.register(
        "build",
        "Build information of this agh-worker",
        Info::new(vec![("version", VERSION)]),
    );
    // Counter families of one label: name, help, the label, and the count of each of its values.
    let labelled = [
        (
            "runs_claimed",
            "Runs taken on: from a claim, or adopted as an orphaned lease at start-up",
            "origin",
            vec![("claimed", c.runs_claimed), ("adopted", c.runs_adopted)],
        ),
        (
            "runs_finished",
            "Runs that ended, by outcome",
            "outcome",
            vec![
                ("completed", c.runs_completed),
                ("failed", c.runs_failed),
                ("released", c.runs_released),
                ("lease_lost", c.leases_lost),
                ("terminal_call_failed", c.terminal_call_failures),
                ("canceled", c.runs_canceled),
            ],
        ),
        (
            "heartbeats",
            "Lease renewals, by result",
            "result",
            vec![("ok", c.heartbeats_ok), ("failed", c.heartbeats_failed)],
        ),
        (
            "leases_lost",
            "Leases lost: rejected by the daemon, or given up as renewals failed until the deadline",
            "reason",
            vec![
                ("rejected", c.leases_lost_rejected),
                ("deadline", c.leases_lost_deadline),
            ],
        ),
        (
            "channel_messages",
            "Channel messages routed to handlers (received) and sent for them (sent)",
            "direction",
            vec![("received", c.messages_received), ("sent", c.messages_sent)],
        ),
        (
            "spawns",
            "Child sessions asked for by handlers, by result",
            "result",
            vec![("created", c.spawns_created), ("refused", c.spawns_refused)],
        ),
    ];
    for (name, help, label, series) in labelled {
        let series = series
            .into_iter()
            .map(|(value, count)| (vec![(label, value)], count));
        counters(&mut registry, name, help, series);
    }
    for (name, help, value) in [
        (
            "claim_errors",
            "Claim-next calls that failed",
            c.claim_errors,
        ),
        (
            "channel_message_send_failures",
            "Channel messages a handler asked for that could not be sent",
            c.message_send_failures,
        ),
    ] {
        counter(&mut registry, name, help, value);
    }
    if let Some(requests) = input.api_requests {
        counters(
            &mut registry,
            "api_requests",
            "AGH API requests (each attempt), by endpoint and outcome class: ok, deadline (a long-poll that ended empty) or an error class",
            requests
                .snapshot()
                .into_iter()
                .map(|(call, class, count)| (vec![("endpoint", call), ("class", class)], count)),
        );
    }

    let children: usize = input
        .loops
        .iter()
        .map(|view| view.snapshot.children.len())
        .sum();
    for (name, help, value) in [
        (
            "runs_in_flight",
            "Runs in hand now (0 or 1 per claim loop: per slot in a resident worker)",
            count(&|view| view.snapshot.current.is_some()),
        ),
        (
            "children",
            "Live child sessions created by this worker's handlers",
            i64::try_from(children).unwrap_or(i64::MAX),
        ),
        (
            "ready",
            "1 when /readyz answers 200",
            i64::from(input.ready),
        ),
        (
            "healthy",
            "1 when /healthz answers 200",
            i64::from(input.healthy),
        ),
        (
            "identity_ok",
            "Claim loops whose session identity AGH accepts now (1 or 0; per slot in a resident worker)",
            count(&|view| view.snapshot.identity_ok),
        ),
    ] {
        gauge(&mut registry, name, help, value);
    }
    if let Some(slots) = input.slots {
        gauge(
            &mut registry,
            "slots",
            "Sessions attached to this resident worker, one claim loop each",
            i64::try_from(slots.attached).unwrap_or(i64::MAX),
        );
        gauge(
            &mut registry,
            "slots_max",
            "The most sessions this resident worker serves at once (worker.max_slots)",
            i64::try_from(slots.max).unwrap_or(i64::MAX),
        );
    }
    // A handler is healthy when it can work in every loop that has it.
    let mut by_handler = std::collections::BTreeMap::<String, bool>::new();
    for (name, healthy) in input.loops.iter().flat_map(|view| view.handlers.iter()) {
        let entry = by_handler.entry(name.clone()).or_insert(true);
        *entry &= *healthy;
    }
    let handlers = Family::<Vec<(&'static str, String)>, Gauge>::default();
    for (name, healthy) in by_handler {
        handlers
            .get_or_create(&vec![("handler", name)])
            .set(i64::from(healthy));
    }
    registry.register(
        "handler_healthy",
        "1 per configured handler that can work, 0 while it cannot until a person acts (see /readyz)",
        handlers,
    );
    let states = Family::<Labels, Gauge>::default();
    for (value, name) in WORKER_STATES {
        states
            .get_or_create(&vec![("state", name)])
            .set(count(&|view| view.snapshot.state == value));
    }
    registry.register(
        "state",
        "Claim loops in each state (1 for the current one of a worker; one per slot in a resident worker)",
        states,
    );
    let last_contact = input
        .loops
        .iter()
        .filter_map(|view| view.snapshot.last_contact_instant)
        .max()
        .map(|at| now.saturating_duration_since(at).as_secs_f64());
    if let Some(age) = last_contact {
        seconds(
            &mut registry,
            "last_contact_age",
            "Time since AGH last answered",
            age,
        );
    }
    seconds(
        &mut registry,
        "uptime",
        "Time since start",
        input.uptime.as_secs_f64(),
    );

    let histograms = input.histograms;
    registry.register_with_unit(
        "claim_to_start",
        "Claim answer to handler start",
        Unit::Seconds,
        histograms.start_latency.clone(),
    );
    registry.register_with_unit(
        "handler_duration",
        "Handler run time, start to return",
        Unit::Seconds,
        histograms.handler_duration.clone(),
    );

    let mut text = String::new();
    if let Err(err) = encode(&mut text, &registry) {
        // Writing to a String cannot fail; say so in the body rather than panic if it ever does.
        text = format!("# the metrics could not be encoded: {err}\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ops::health::tests::timings;
    use crate::ops::server::{HealthInfo, HealthState};
    use crate::worker::Shutdown;

    /// The health state of a worker with `board` and default timings.
    fn state(board: StatusBoard) -> HealthState {
        HealthState::new(
            board,
            Shutdown::default(),
            timings(),
            HealthInfo {
                version: VERSION.into(),
                session_id: "sess-1".into(),
                agent: "worker".into(),
                workspace_id: None,
                endpoint: "http://127.0.0.1:1".into(),
            },
        )
    }

    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn the_handler_health_gauge_has_one_series_per_configured_handler() {
        let board = StatusBoard::default();
        board
            .handler_health()
            .configure([("coder", false), ("exec", false)]);
        board
            .handler_health()
            .reporter("coder")
            .unhealthy("refused");
        let state = state(board);
        has_lines(
            &state.metrics_text(),
            &[
                "agh_worker_handler_healthy{handler=\"coder\"} 0",
                "agh_worker_handler_healthy{handler=\"exec\"} 1",
            ],
        );
        let status = state.status_json();
        let reasons = status["not_ready_reasons"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(reasons.contains(&"handler_unhealthy".into()), "{status}");
        assert_eq!(status["unhealthy_handlers"][0]["reason"], "refused");
    }

    #[test]
    fn metrics_carry_every_documented_family_with_the_prefix() {
        let board = StatusBoard::default();
        board.record_start_latency(Duration::from_millis(3));
        board.record_handler_duration(Duration::from_millis(250));
        board.run_ended(crate::worker::RunEnd::Completed);
        let requests = Arc::new(ApiRequestCounters::default());
        requests.record("claim-next", "ok");
        let state = state(board).with_api_requests(requests);
        has_lines(
            &state.metrics_text(),
            &[
                &format!("agh_worker_build_info{{version=\"{VERSION}\"}} 1") as &str,
                "agh_worker_runs_finished_total{outcome=\"completed\"} 1",
                "agh_worker_runs_claimed_total{origin=\"claimed\"} 0",
                "agh_worker_heartbeats_total{result=\"ok\"} 0",
                "agh_worker_leases_lost_total{reason=\"deadline\"} 0",
                "agh_worker_api_requests_total{endpoint=\"claim-next\",class=\"ok\"} 1",
                "agh_worker_claim_to_start_seconds_count 1",
                "agh_worker_handler_duration_seconds_count 1",
                "agh_worker_runs_in_flight 0",
                "agh_worker_state{state=\"starting\"} 1",
                "agh_worker_channel_messages_total{direction=\"sent\"} 0",
                "agh_worker_spawns_total{result=\"refused\"} 0",
                "agh_worker_claim_errors_total 0",
                "agh_worker_channel_message_send_failures_total 0",
                "agh_worker_identity_ok 0",
                "# EOF",
            ],
        );
    }
}
