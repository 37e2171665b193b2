//! Operating the worker: health rules, metrics and the HTTP server that serves them, systemd
//! notification, logging and signals.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod signals;
