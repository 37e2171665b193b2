//! Signals → shutdown tokens and reload requests; the only place that touches signals.
//!
//! First SIGTERM/SIGINT: drain (stop claiming, let the run in hand finish until the drain
//! deadline). A second SIGTERM/SIGINT, or SIGQUIT: force (cancel the run in hand and release it).
//! SIGHUP: reload the configuration's safe subset.

use futures_util::StreamExt;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

use crate::worker::Shutdown;

/// Listens for signals until the process ends. Returns the receiver of reload requests.
pub fn install(shutdown: Shutdown) -> std::io::Result<mpsc::Receiver<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP])?;
    let (reload_tx, reload_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => {
                    // A reload already pending covers this one too.
                    let _ = reload_tx.try_send(());
                }
                SIGQUIT => {
                    tracing::warn!("SIGQUIT: stopping now");
                    shutdown.drain.cancel();
                    shutdown.force.cancel();
                }
                _ if shutdown.drain.is_cancelled() => {
                    tracing::warn!(
                        signal,
                        "second stop signal: cancelling the run in hand and releasing it"
                    );
                    shutdown.force.cancel();
                }
                _ => {
                    tracing::info!(
                        signal,
                        "stop signal: no new claims; the run in hand may finish (a second signal stops it now)"
                    );
                    shutdown.drain.cancel();
                }
            }
        }
    });
    Ok(reload_rx)
}
