//! What the exec handler keeps of a program's output: bounded log tails of stdout and stderr,
//! its result and release lines, and the length-capped line reader every pipe is read with.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The last `cap` bytes of a stream, kept as whole lines where possible.
#[derive(Debug)]
pub(super) struct LogTail {
    cap: usize,
    lines: VecDeque<String>,
    /// Bytes held, counting one newline per line.
    bytes: usize,
    /// Bytes dropped from the front so far.
    pub(super) dropped: u64,
}

impl LogTail {
    pub(super) fn new(cap: usize) -> Self {
        LogTail {
            cap,
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    pub(super) fn push(&mut self, line: &str) {
        let cost = line.len() + 1;
        if cost > self.cap {
            // One line bigger than the whole cap: keep only its end.
            self.dropped += (self.bytes + cost) as u64;
            self.lines.clear();
            self.bytes = 0;
            if self.cap > 1 {
                let kept = tail_at_char_boundary(line, self.cap - 1);
                self.dropped -= (kept.len() + 1) as u64;
                self.bytes = kept.len() + 1;
                self.lines.push_back(kept.to_string());
            }
            return;
        }
        self.lines.push_back(line.to_string());
        self.bytes += cost;
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len() + 1;
                    self.dropped += (old.len() + 1) as u64;
                }
                None => break,
            }
        }
    }

    pub(super) fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    pub(super) fn last_line(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .map(|line| line.trim())
            .find(|line| !line.is_empty())
    }
}

/// The last at most `max` bytes of `text`, starting on a character boundary.
fn tail_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What the readers learnt from the program. Shared so that it survives a reader being abandoned.
#[derive(Debug)]
pub(super) struct Captured {
    pub(super) stdout: LogTail,
    pub(super) stderr: LogTail,
    pub(super) result: Option<Value>,
    pub(super) release: Option<String>,
}

pub(super) type Shared = Arc<Mutex<Captured>>;

/// Reads one line of at most `max` bytes (without the newline) into `line`.
/// Returns `Ok(None)` at end of input, else whether the line was longer and got cut.
/// The rest of a long line is read and thrown away, so memory stays bounded whatever the input.
pub(super) async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(truncated));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[test]
    fn a_log_tail_keeps_the_last_whole_lines_within_its_cap() {
        let mut tail = LogTail::new(10);
        for line in ["aaa", "bbb", "ccc", "ddd"] {
            tail.push(line);
        }
        assert_eq!(tail.text(), "ccc\nddd\n");
        assert!(tail.bytes <= 10);
        assert_eq!(tail.dropped, 8);
        assert_eq!(tail.last_line(), Some("ddd"));
    }

    #[test]
    fn a_line_longer_than_the_cap_keeps_its_end_on_a_char_boundary() {
        let mut tail = LogTail::new(6);
        tail.push("xx");
        tail.push("abcdééfg");
        assert_eq!(tail.text(), "éfg\n");
        assert!(tail.bytes <= 6);
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let mut tail = LogTail::new(0);
        tail.push("anything");
        assert_eq!(tail.text(), "");
        assert_eq!(tail.last_line(), None);
    }

    #[tokio::test]
    async fn long_lines_are_cut_at_the_limit_and_the_rest_is_skipped() {
        let input: &[u8] = b"short\r\n0123456789abcdef\nnext\nlast-without-newline";
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        while let Some(truncated) = read_capped_line(&mut reader, &mut line, 8).await.unwrap() {
            seen.push((String::from_utf8_lossy(&line).into_owned(), truncated));
        }
        assert_eq!(
            seen,
            vec![
                ("short".to_string(), false),
                ("01234567".to_string(), true),
                ("next".to_string(), false),
                ("last-wit".to_string(), true),
            ]
        );
    }
}
