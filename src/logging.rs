//! Logging set-up: text or JSON lines on stderr, level from config or `RUST_LOG`, reloadable.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

/// Changes the level filter of the installed subscriber (SIGHUP reload).
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogControl {
    /// Applies `level` unless `RUST_LOG` is set (it always wins). Answers false when not applied.
    pub fn set_level(&self, level: &str) -> bool {
        if rust_log().is_some() {
            return false;
        }
        match (&self.handle, EnvFilter::try_new(level)) {
            (Some(handle), Ok(filter)) => handle.reload(filter).is_ok(),
            _ => false,
        }
    }
}

fn rust_log() -> Option<EnvFilter> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| EnvFilter::try_new(value).ok())
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`.
/// Safe to call more than once (later calls change nothing), which tests rely on.
pub fn init(level: &str, format: LogFormat) -> LogControl {
    let filter = rust_log()
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    LogControl {
        handle: installed.then_some(handle),
    }
}
