//! A Server-Sent Events decoder: bytes in, whole events out, as the WHATWG event-stream rules
//! say. One implementation for every stream the worker follows (AGH's task stream, the Coder
//! Hub's session stream).
//!
//! It never holds more than `max_event_bytes` of one event (line plus buffered data), so a
//! stream that never ends a line cannot grow memory without bound: it fails with
//! [`SseError::EventTooLarge`] instead. Bytes that are not UTF-8 are replaced, as browsers do.

use std::time::Duration;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `"message"` when the event named none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream when this event was dispatched (ids persist across
    /// events until changed): the value to resume with in `Last-Event-ID`.
    pub id: Option<String>,
}

/// Why the decoder gave up on a stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// One event (or one line) grew past the limit the stream was opened with.
    #[error("a server-sent event exceeded {limit} bytes")]
    EventTooLarge {
        /// The configured limit.
        limit: usize,
    },
}

/// Incremental decoder state; feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
    /// The byte-order mark is skipped once, at the start of the stream.
    at_start: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry: Option<Duration>,
}

impl SseDecoder {
    /// A decoder that refuses events (or lines) larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: String::new(),
            data: String::new(),
            has_data: false,
            last_id: None,
            retry: None,
        }
    }

    /// A decoder that resumes after `last_id` (what a reconnect sent in `Last-Event-ID`).
    pub fn resuming(max_event_bytes: usize, last_id: Option<String>) -> Self {
        let mut decoder = SseDecoder::new(max_event_bytes);
        decoder.last_id = last_id;
        decoder
    }

    /// The last event id the stream set, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection delay the stream asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Decodes `chunk`, returning every event it completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];
        if !self.at_start {
            return self.feed_body(chunk);
        }
        // The first bytes are held until they show whether the stream starts with a BOM.
        let mut pending = std::mem::take(&mut self.line);
        pending.extend_from_slice(chunk);
        if pending.len() < BOM.len() && BOM.starts_with(&pending) {
            self.line = pending;
            return Ok(Vec::new());
        }
        self.at_start = false;
        let body = pending.strip_prefix(BOM).unwrap_or(&pending);
        self.feed_body(body)
    }

    fn feed_body(&mut self, mut rest: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        if std::mem::replace(&mut self.after_cr, false) && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.push_line_bytes(&rest[..end])?;
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.take_line(&line)? {
                events.push(event);
            }
            let was_cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if was_cr {
                match rest.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                }
            }
        }
        self.push_line_bytes(rest)?;
        Ok(events)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn take_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(millis) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(millis));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if !std::mem::replace(&mut self.has_data, false) {
            return None;
        }
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_whole(input: &[u8]) -> Vec<SseEvent> {
        SseDecoder::new(1 << 16).feed(input).unwrap()
    }

    fn decode_byte_by_byte(input: &[u8]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new(1 << 16);
        let mut events = Vec::new();
        for byte in input {
            events.extend(decoder.feed(std::slice::from_ref(byte)).unwrap());
        }
        events
    }

    #[test]
    fn named_events_with_ids_are_dispatched_on_a_blank_line() {
        let input = b"id: 7\nevent: task.run_canceled\ndata: {\"a\":1}\n\n";
        let events = decode_whole(input);
        assert_eq!(
            events,
            vec![SseEvent {
                event: "task.run_canceled".into(),
                data: "{\"a\":1}".into(),
                id: Some("7".into()),
            }]
        );
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_events() {
        let input = b"\xEF\xBB\xBFid: 1\r\nevent: a\r\ndata: x\r\ndata: y\r\n\r\n: comment\n\ndata:z\r\rid: 2\ndata: w\n\n";
        let whole = decode_whole(input);
        assert_eq!(whole, decode_byte_by_byte(input));
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].data, "x\ny");
        assert_eq!(whole[0].event, "a");
        assert_eq!(whole[1].event, "message");
        assert_eq!(whole[1].data, "z");
        assert_eq!(whole[1].id.as_deref(), Some("1"));
        assert_eq!(whole[2].id.as_deref(), Some("2"));
    }

    #[test]
    fn comments_and_events_without_data_dispatch_nothing() {
        assert!(decode_whole(b": keep-alive\n\nevent: ping\n\n").is_empty());
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(decode_whole(b"data: half").is_empty());
    }

    #[test]
    fn retry_is_read_only_when_it_is_all_digits() {
        let mut decoder = SseDecoder::new(1024);
        decoder.feed(b"retry: 15x\n").unwrap();
        assert_eq!(decoder.retry(), None);
        decoder.feed(b"retry: 1500\n").unwrap();
        assert_eq!(decoder.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_resumed_decoder_reports_the_id_it_resumed_from() {
        let mut decoder = SseDecoder::resuming(1024, Some("41".into()));
        let events = decoder.feed(b"data: x\n\n").unwrap();
        assert_eq!(events[0].id.as_deref(), Some("41"));
    }

    #[test]
    fn a_line_that_never_ends_fails_instead_of_growing() {
        let mut decoder = SseDecoder::new(64);
        let err = decoder.feed(&[b'a'; 65]).unwrap_err();
        assert_eq!(err, SseError::EventTooLarge { limit: 64 });
    }

    #[test]
    fn many_data_lines_cannot_exceed_the_limit_either() {
        let mut decoder = SseDecoder::new(64);
        let mut failed = false;
        for _ in 0..20 {
            if decoder.feed(b"data: 0123456789\n").is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        let events = decode_whole(b"data: \xff\n\n");
        assert_eq!(events[0].data, "\u{FFFD}");
    }
}
