//! The faults the soak injects into the simulator: error answers, delays, dropped answers,
//! garbage bodies, forced lease expiry and restarts.

use super::markers::read_markers;
use super::*;

impl Rig {
    pub(super) fn inject_fault(&mut self) {
        const ROUTES: [Route; 7] = [
            Route::ClaimNext,
            Route::Heartbeat,
            Route::Complete,
            Route::Fail,
            Route::Release,
            Route::Me,
            Route::Context,
        ];
        let route = ROUTES[self.rng.usize(..ROUTES.len())];
        let (label, fault) = match self.rng.u32(0..20) {
            0..=8 => {
                let status = [500, 502, 503][self.rng.usize(..3)];
                let error = "soak: injected server error".to_owned();
                (
                    "5xx",
                    Fault::new(
                        route,
                        FaultKind::Status { status, error },
                        self.rng.u32(1..4),
                    ),
                )
            }
            9 => {
                // Past the request deadline, or past the long-poll deadline for a claim.
                let (route, millis) = if self.rng.bool() {
                    (Route::ClaimNext, self.rng.u64(2_500..3_500))
                } else {
                    let routes = [Route::Heartbeat, Route::Complete, Route::Me, Route::Context];
                    (routes[self.rng.usize(..4)], self.rng.u64(1_200..2_500))
                };
                let delay = FaultKind::Delay(Duration::from_millis(millis));
                ("delay", Fault::new(route, delay, 1))
            }
            10..=13 => {
                // A spawn's answer lost after the child was made: the worker must find the child,
                // not ask for a second one.
                let route = [Route::ClaimNext, Route::Complete, Route::Spawn][self.rng.usize(..3)];
                (
                    "drop-after-commit",
                    Fault::new(route, FaultKind::DropAfterCommit, 1),
                )
            }
            14..=17 => ("garbage", Fault::new(route, FaultKind::Garbage, 1)),
            _ => ("truncated", Fault::new(route, FaultKind::Truncated, 1)),
        };
        self.sim.inject_fault(fault);
        *self.report.faults.entry(label).or_insert(0) += 1;
    }

    /// Ends the lease of a run in hand: preferably one whose exec handler is working (so the
    /// worker must stop it), otherwise one claimed recently.
    pub(super) fn expire_one(&mut self, recent: &[crate::dev::sim::TransitionEvent]) -> bool {
        let mut candidates: Vec<String> = read_markers(&self.markers)
            .into_iter()
            .map(|marker| marker.run_id)
            .collect();
        if candidates.is_empty() || self.rng.bool() {
            candidates.extend(
                recent
                    .iter()
                    .rev()
                    .filter(|event| event.kind == TransitionKind::Claimed)
                    .take(8)
                    .map(|event| event.run_id.clone()),
            );
        }
        while !candidates.is_empty() {
            let run_id = candidates.swap_remove(self.rng.usize(..candidates.len()));
            if self.expired.contains(&run_id) {
                continue;
            }
            if self.sim.expire_lease(&run_id) {
                self.expired.insert(run_id);
                self.report.expiries += 1;
                return true;
            }
        }
        false
    }

    /// Restarts both simulator servers: every connection is cut, expired leases swept.
    pub(super) async fn restart_sim(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.tcp.take() {
            self.tcp = Some(server.restart().await.context("simulator restart (TCP)")?);
        }
        if let Some(server) = self.unix.take() {
            self.unix = Some(server.restart().await.context("simulator restart (Unix)")?);
        }
        self.report.sim_restarts += 1;
        Ok(())
    }
}
