//! The durable copy of `acp`'s log. AGH keeps only the last 128 KiB of an agent's stderr, in
//! memory, and shows it only when the agent dies unexpectedly (`internal/subprocess/process.go`
//! ~262, 695-720), so a worker it launched keeps its own file: appended to by every `acp`
//! process of the host (each line names its session), moved to `<file>.1` beyond a size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::AcpConfig;
use crate::util::sync::lock;

/// The value of `acp.log_file` that turns the file off.
pub const OFF: &str = "off";

/// Where the log file goes: `acp.log_file`, else `acp.log` in `state_dir`; `None` when off.
pub fn path(config: &AcpConfig, state_dir: &Path) -> Option<PathBuf> {
    match config.log_file.trim() {
        OFF => None,
        "" => Some(state_dir.join("acp.log")),
        path => Some(PathBuf::from(path)),
    }
}

/// Why the log file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the log file {path}: {source}; set acp.log_file to a writable path, or to \"off\""
)]
pub struct LogFileError {
    path: String,
    source: std::io::Error,
}

/// A log file capped in size: beyond `max_bytes` it becomes `<file>.1` and a new one begins.
#[derive(Clone, Debug)]
pub struct CappedFile {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    max_bytes: u64,
    open: Mutex<Open>,
}

#[derive(Debug)]
struct Open {
    file: File,
    size: u64,
}

impl CappedFile {
    /// Opens (or creates, with its folder) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64) -> Result<CappedFile, LogFileError> {
        let open = open_append(path).map_err(|source| LogFileError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(CappedFile {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                max_bytes,
                open: Mutex::new(open),
            }),
        })
    }
}

fn open_append(path: &Path) -> std::io::Result<Open> {
    if let Some(folder) = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // The log names sessions, runs and handler output: for the worker's user only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    let size = file.metadata()?.len();
    Ok(Open { file, size })
}

impl Inner {
    fn write_line(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut open = lock(&self.open);
        if open.size > 0 && open.size + buf.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            // Another acp process may have rotated it first: then this one only reopens.
            let _ = std::fs::rename(&self.path, &rotated);
            *open = open_append(&self.path)?;
        }
        open.file.write_all(buf)?;
        open.size += buf.len() as u64;
        Ok(())
    }
}

/// The writer [`CappedFile`] hands the log for one line.
#[derive(Debug)]
pub struct LineWriter {
    inner: Arc<Inner>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CappedFile {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            inner: self.inner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(log_file: &str) -> AcpConfig {
        AcpConfig {
            log_file: log_file.into(),
            ..AcpConfig::default()
        }
    }

    #[test]
    fn the_log_file_defaults_to_the_state_directory_and_can_be_turned_off() {
        let state = Path::new("/var/lib/agh-worker");
        assert_eq!(
            path(&config(""), state),
            Some(PathBuf::from("/var/lib/agh-worker/acp.log"))
        );
        assert_eq!(
            path(&config("/tmp/x.log"), state),
            Some(PathBuf::from("/tmp/x.log"))
        );
        assert_eq!(path(&config("off"), state), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_log_file_and_its_successor_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("acp.log");
        let capped = CappedFile::open(&file, 20).expect("opens");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("the file exists")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&file), 0o600);
        let mut writer = capped.make_writer();
        writer.write_all(b"first line 12345\n").expect("writes");
        writer.write_all(b"second line\n").expect("writes");
        assert_eq!(mode(&file), 0o600, "the file begun after the move");
    }

    #[test]
    fn a_file_past_its_cap_moves_aside_and_a_new_one_begins() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("logs/acp.log");
        let capped = CappedFile::open(&file, 20).expect("opens");
        let mut writer = capped.make_writer();
        writer.write_all(b"first line 12345\n").expect("writes");
        writer.write_all(b"second line\n").expect("writes");
        let rotated = std::fs::read_to_string(dir.path().join("logs/acp.log.1")).expect("rotated");
        let current = std::fs::read_to_string(&file).expect("current");
        assert_eq!(rotated, "first line 12345\n");
        assert_eq!(current, "second line\n");
    }
}
