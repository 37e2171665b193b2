//! Logging set-up: text or JSON lines on stderr, level from config or `RUST_LOG`, reloadable.
//!
//! JSON lines carry the fields of the current span, so everything logged while a run is in hand
//! has `"span":{"name":"run","run_id":…,"task_id":…,"attempt":…}`. Every line, text or JSON,
//! goes through [`Redacting`], so a raw claim token never reaches the log whatever logged it.

use std::io::Write;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::registry::LookupSpan;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

/// Changes the level filter of the installed subscriber (SIGHUP reload).
#[derive(Clone, Debug)]
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
    init_with_copy(level, format, None)
}

/// As [`init`], with every line also written to `copy` (`agh-worker acp`'s durable log file:
/// AGH keeps only a short tail of its agents' stderr). No colours then, on either.
pub fn init_with_copy(level: &str, format: LogFormat, copy: Option<BoxMakeWriter>) -> LogControl {
    let filter = rust_log()
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = copy.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = output_writer(copy);
    let output = match format {
        LogFormat::Json => json_lines(writer).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
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

/// Where every line goes: stderr, and `copy` too when given (the `acp` log file), both through
/// one [`Redacting`] writer.
fn output_writer(copy: Option<BoxMakeWriter>) -> Redacting<BoxMakeWriter> {
    Redacting(match copy {
        Some(copy) => BoxMakeWriter::new(std::io::stderr.and(copy)),
        None => BoxMakeWriter::new(std::io::stderr),
    })
}

/// The JSON line layer `--log-format json` installs, writing through [`Redacting`] to `writer`
/// (tests pass a buffer to check what operators would see).
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    json_lines(Redacting(writer))
}

fn json_lines<S, W>(writer: Redacting<W>) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
}

/// Wraps a log writer so `agh_claim_<token>` becomes `agh_claim_[REDACTED]` in every line.
/// The fmt layers write each line with one `write_all`, so a token is never split across writes.
#[derive(Clone, Copy, Debug)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// The writer [`Redacting`] hands out.
#[derive(Debug)]
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const PREFIX: &[u8] = b"agh_claim_";
        if !buf.windows(PREFIX.len()).any(|w| w == PREFIX) {
            return self.0.write(buf);
        }
        let redacted = crate::util::redact::redact_claim_tokens(&String::from_utf8_lossy(buf));
        self.0.write_all(redacted.as_bytes())?;
        // The whole input was taken, though the output length differs.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_of_the_log_gets_redacted_lines_too() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                crate::util::sync::lock(&self.0).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let copy = Buffer::default();
        let handed = copy.clone();
        let writer = output_writer(Some(BoxMakeWriter::new(move || handed.clone())));
        writer
            .make_writer()
            .write_all(b"a line naming agh_claim_AbC0123456789-_xyz\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&crate::util::sync::lock(&copy.0)),
            "a line naming agh_claim_[REDACTED]\n"
        );
    }

    #[test]
    fn claim_tokens_are_redacted_on_the_way_to_the_log() {
        let mut out = Vec::new();
        let mut writer = RedactingWriter(&mut out);
        writer
            .write_all(b"{\"title\":\"use agh_claim_AbC0123456789-_xyz now\"}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        writer
            .write_all(b"plain line\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"title\":\"use agh_claim_[REDACTED] now\"}\nplain line\n"
        );
    }
}
