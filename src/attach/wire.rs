//! The attach socket's protocol between a thin `agh-worker acp --attach` process and the resident
//! worker: one JSON object per line, each way, at most [`MAX_LINE_BYTES`] a line.
//!
//! The thin process speaks first: [`FromThin::Attach`] with its session's identity, then
//! [`FromThin::Wake`] for each scheduler wake prompt and [`FromThin::Stop`] once AGH closes its
//! stdin. The resident answers [`FromResident::Attached`] or [`FromResident::Refused`], then
//! pushes the slot's state as [`FromResident::Status`] lines (the thin process answers AGH's
//! prompts with the latest), [`FromResident::Stopped`] once a stop is done, and
//! [`FromResident::Ended`] when the slot's loop ended by itself. A connection that closes without
//! a stop ends the slot just the same: the thin process is gone, and so is its session.

use serde::{Deserialize, Serialize};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt,
    BufReader,
};
use tokio::sync::mpsc;

use crate::api::Identity;

/// The protocol version a thin process announces; the resident refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side sends or accepts (an identity and a status line fit many times).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What a thin process sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromThin {
    /// The first line: serve this session.
    Attach(AttachRequest),
    /// AGH's scheduler woke the session about a run: claim now.
    Wake {
        task_id: String,
        task_run_id: String,
    },
    /// AGH is stopping the session (stdin closed): end its handlers, call AGH no more.
    Stop,
}

/// The session a thin process hands over: the identity AGH gave it, and who it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub version: u32,
    pub session_id: String,
    pub agent: String,
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// `AGH_SESSION_CHANNEL`, when AGH gave one.
    #[serde(default)]
    pub session_channel: Option<String>,
    /// The thin process's pid, for the logs and `/status`.
    pub pid: u32,
}

impl AttachRequest {
    /// The session identity the slot speaks as.
    pub fn identity(&self) -> Identity {
        Identity {
            session_id: self.session_id.clone(),
            agent: self.agent.clone(),
            workspace_id: self.workspace_id.clone(),
        }
    }
}

/// What the resident sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromResident {
    /// The session has a slot; its loop starts now.
    Attached { slot: u64 },
    /// No slot: `reason` for programs, `message` for people (the thin process shows it to AGH).
    Refused {
        reason: RefusalReason,
        message: String,
    },
    /// The slot's state as one line.
    Status { line: String },
    /// The stop asked for is done: no handler left, no call to AGH any more.
    Stopped,
    /// The slot's loop ended by itself (`worker.max_runs`, `worker.idle_exit_seconds`).
    Ended { reason: String },
}

/// Why a session gets no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// `worker.max_slots` sessions are attached already.
    Full,
    /// This session is attached already, from another connection.
    AlreadyAttached,
    /// The thin process speaks another protocol version.
    Version,
    /// The first line was not a usable attach request.
    BadRequest,
    /// The resident is stopping.
    Stopping,
}

impl RefusalReason {
    /// Whether asking again later may succeed.
    pub fn is_temporary(self) -> bool {
        !matches!(self, RefusalReason::Version | RefusalReason::BadRequest)
    }
}

/// A line that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the attach socket failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a line on the attach socket is longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("a line on the attach socket is not a message of this protocol: {0}")]
    Malformed(String),
}

/// Reads the next message; `Ok(None)` when the other side closed the connection.
pub async fn read<R, T>(reader: &mut R) -> Result<Option<T>, WireError>
where
    R: AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut *reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE_BYTES {
            return Err(WireError::TooLong);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return parse(&line).map(Some);
    }
}

/// One line's message.
pub fn parse<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(line).map_err(|err| {
        // serde's message may quote the input: keep it short.
        WireError::Malformed(crate::util::text::cut_chars(&err.to_string(), 200))
    })
}

/// Reads `input` on a task of its own and hands each message (or the error that ended the
/// reading) to the receiver, which closes when the other side does. Reading a line is not
/// cancel-safe, so a `select!` waits on the receiver instead.
pub fn spawn_reader<R, T>(input: R) -> mpsc::Receiver<Result<T, WireError>>
where
    R: AsyncRead + Unpin + Send + 'static,
    T: for<'de> Deserialize<'de> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut reader = BufReader::new(input);
        loop {
            let next = read::<_, T>(&mut reader).await;
            let last = !matches!(next, Ok(Some(_)));
            let message = match next {
                Ok(Some(message)) => Ok(message),
                Ok(None) => return,
                Err(err) => Err(err),
            };
            if sender.send(message).await.is_err() || last {
                return;
            }
        }
    });
    receiver
}

/// Writes one message as a line.
pub async fn write<W, T>(writer: &mut W, message: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line =
        serde_json::to_vec(message).map_err(|err| WireError::Malformed(err.to_string()))?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(bytes: &[u8]) -> Vec<Result<Option<FromThin>, String>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = BufReader::new(bytes);
            let mut out = Vec::new();
            loop {
                match read::<_, FromThin>(&mut reader).await {
                    Ok(None) => break,
                    Ok(Some(message)) => out.push(Ok(Some(message))),
                    Err(err) => {
                        out.push(Err(err.to_string()));
                        if matches!(err, WireError::TooLong | WireError::Io(_)) {
                            break;
                        }
                    }
                }
            }
            out
        })
    }

    #[test]
    fn an_attach_request_reads_back_as_it_was_written() {
        let request = FromThin::Attach(AttachRequest {
            version: PROTOCOL_VERSION,
            session_id: "sess-1".into(),
            agent: "agh-worker".into(),
            workspace_id: None,
            session_channel: Some("chan".into()),
            pid: 42,
        });
        let line = serde_json::to_string(&request).unwrap();
        assert!(
            line.starts_with(r#"{"type":"attach","version":1,"#),
            "{line}"
        );
        let read = read_all(format!("\n{line}\n{{\"type\":\"stop\"}}\n").as_bytes());
        assert_eq!(read, vec![Ok(Some(request)), Ok(Some(FromThin::Stop))]);
    }

    #[test]
    fn a_line_past_the_limit_is_refused_without_reading_it_all() {
        let long = format!(
            "{{\"type\":\"wake\",\"task_id\":\"{}\"}}\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        let read = read_all(long.as_bytes());
        assert_eq!(read.len(), 1);
        assert!(
            read[0]
                .as_ref()
                .is_err_and(|err| err.contains("longer than")),
            "{read:?}"
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_malformed_not_ignored() {
        let read = read_all(b"{\"type\":\"wake\",\"task_id\":\"t\",\"task_run_id\":\"r\",\"now\":true}\n{\"type\":\"reboot\"}\n");
        assert_eq!(read.len(), 2);
        assert!(
            read.iter()
                .all(|one| one.as_ref().is_err_and(|err| err.contains("not a message"))),
            "{read:?}"
        );
    }

    #[test]
    fn only_a_malformed_first_line_or_an_old_version_is_final() {
        assert!(RefusalReason::Full.is_temporary());
        assert!(RefusalReason::AlreadyAttached.is_temporary());
        assert!(!RefusalReason::Version.is_temporary());
        assert!(!RefusalReason::BadRequest.is_temporary());
    }

    fn near_miss() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[ -~]{0,120}".prop_map(|text| text.into_bytes()),
            Just(br#"{"type":"attach"}"#.to_vec()),
            Just(br#"{"type":"wake","task_id":1}"#.to_vec()),
            Just(
                br#"{"type":"attach","version":1,"session_id":"s","agent":"a","pid":-1}"#.to_vec()
            ),
            "\\{\"type\":\"(attach|wake|stop)\"(,\"[a-z_]{1,12}\":\"[ -~]{0,20}\"){0,6}\\}"
                .prop_map(|text| text.into_bytes()),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_give_messages_or_typed_errors_and_never_more_than_a_line_at_a_time(
            chunks in prop::collection::vec(near_miss(), 0..12),
        ) {
            let mut bytes = Vec::new();
            for chunk in &chunks {
                bytes.extend_from_slice(chunk);
                bytes.push(b'\n');
            }
            let read = read_all(&bytes);
            // Every non-blank line gives exactly one answer (a message or an error), and bytes
            // with no newline in them are one line.
            prop_assert!(read.len() <= bytes.iter().filter(|byte| **byte == b'\n').count());
        }
    }
}
