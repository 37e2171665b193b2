//! Operating the worker: health probes and metrics, the HTTP server, systemd notification,
//! logging and signals.

pub mod health;
pub mod logging;
pub mod notify;
pub mod signals;
