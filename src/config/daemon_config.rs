//! The one key of AGH's own `<home>/config.toml` the worker reads: `[daemon] socket`, the socket
//! the daemon serves its API on. Everything else in that file belongs to AGH and is ignored.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::endpoint::ResolveEndpointError;
use super::load::tilde_rest;

/// AGH's `config.toml` is a few KiB; the cap keeps a wrong file from being read whole.
const DAEMON_CONFIG_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
struct DaemonConfigFile {
    #[serde(default)]
    daemon: DaemonSection,
}

#[derive(Debug, Default, Deserialize)]
struct DaemonSection {
    #[serde(default)]
    socket: Option<String>,
}

/// The socket `[daemon] socket` in `config` names, or `None` when the file is missing or the key
/// is unset or empty. A leading `~` is `user_home`. A file that exists but cannot be read or
/// parsed is an error, as it is for the `agh` CLI.
pub(super) fn configured_socket(
    config: &Path,
    home: &Path,
    user_home: Option<&Path>,
) -> Result<Option<PathBuf>, ResolveEndpointError> {
    let unreadable = |reason: String| ResolveEndpointError::DaemonConfig {
        file: config.to_path_buf(),
        reason,
    };
    let file = match std::fs::File::open(config) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(unreadable(err.to_string())),
    };
    let mut text = String::new();
    file.take(DAEMON_CONFIG_MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|err| unreadable(err.to_string()))?;
    if text.len() as u64 > DAEMON_CONFIG_MAX_BYTES {
        return Err(unreadable(format!(
            "larger than {DAEMON_CONFIG_MAX_BYTES} bytes"
        )));
    }
    let parsed: DaemonConfigFile =
        toml::from_str(&text).map_err(|err| unreadable(describe_toml_error(&text, &err)))?;
    let Some(socket) = parsed.daemon.socket.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let path = match tilde_rest(&socket) {
        None => PathBuf::from(&socket),
        Some(rest) => {
            let Some(user_home) = user_home else {
                return Err(ResolveEndpointError::SocketNeedsHome {
                    file: config.to_path_buf(),
                    socket,
                });
            };
            match rest.trim_start_matches('/') {
                "" => user_home.to_path_buf(),
                rest => user_home.join(rest),
            }
        }
    };
    // AGH's documentation does not say what a relative `[daemon] socket` is relative to; the AGH
    // home is taken, the one directory the daemon and its workers are sure to share. (An absolute
    // path replaces the home in `join`.)
    Ok(Some(home.join(path)))
}

/// A TOML error in one line: `line N: message` (the parser's own text spans several lines).
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let line = err
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count() + 1);
    let message = err.message().trim();
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    /// `[daemon] socket` read from `text` as `<home>/config.toml`, with `/home/op` as the user's
    /// home.
    fn socket_from(home: &Path, text: &str) -> Result<Option<PathBuf>, ResolveEndpointError> {
        let config = home.join("config.toml");
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write: {e}"));
        configured_socket(&config, home, Some(Path::new("/home/op")))
    }

    #[test]
    fn the_socket_is_read_among_any_other_agh_settings() {
        let home = tempdir();
        let text = "# AGH's own configuration\n[http]\nhost = \"localhost\"\nport = 2123\n\n\
                    [daemon]\nlog_level = \"info\"\nsocket = \"/run/agh/agh.sock\"\n\n\
                    [[agents]]\nname = \"coder\"\ncommand = [\"agent\", \"--acp\"]\n";
        assert_eq!(
            socket_from(home.path(), text).ok(),
            Some(Some(PathBuf::from("/run/agh/agh.sock")))
        );
    }

    #[test]
    fn a_leading_tilde_is_the_user_home_and_tilde_user_is_left_alone() {
        let home = tempdir();
        for (socket, expected) in [
            (
                "~/.agh/daemon.sock",
                PathBuf::from("/home/op/.agh/daemon.sock"),
            ),
            ("~", PathBuf::from("/home/op")),
            ("~op/agh.sock", home.path().join("~op/agh.sock")),
        ] {
            let text = format!("[daemon]\nsocket = {socket:?}\n");
            assert_eq!(
                socket_from(home.path(), &text).ok(),
                Some(Some(expected)),
                "socket = {socket:?}"
            );
        }
    }

    #[test]
    fn a_leading_tilde_without_a_user_home_is_an_error_naming_the_file() {
        let home = tempdir();
        let config = home.path().join("config.toml");
        std::fs::write(&config, "[daemon]\nsocket = \"~/.agh/daemon.sock\"\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let err = configured_socket(&config, home.path(), None).err();
        assert_eq!(
            err,
            Some(ResolveEndpointError::SocketNeedsHome {
                file: config.clone(),
                socket: "~/.agh/daemon.sock".into(),
            })
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(&config.display().to_string()), "{text}");
        assert!(text.contains("HOME"), "{text}");
    }

    #[test]
    fn a_relative_socket_is_taken_relative_to_the_agh_home() {
        let home = tempdir();
        assert_eq!(
            socket_from(home.path(), "[daemon]\nsocket = \"run/agh.sock\"\n").ok(),
            Some(Some(home.path().join("run/agh.sock")))
        );
    }

    #[test]
    fn a_missing_file_or_an_unset_or_empty_key_names_no_socket() {
        let home = tempdir();
        assert_eq!(
            configured_socket(&home.path().join("config.toml"), home.path(), None).ok(),
            Some(None)
        );
        for text in [
            "",
            "[http]\nport = 3000\n",
            "[daemon]\nlog_level = \"debug\"\n",
            "[daemon]\nsocket = \"\"\n",
            "[daemon]\nsocket = \"  \"\n[daemon.extra]\nx = [1, 2]\n",
        ] {
            assert_eq!(
                socket_from(home.path(), text).ok(),
                Some(None),
                "config.toml was {text:?}"
            );
        }
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error_naming_the_file_and_line() {
        let home = tempdir();
        let config = home.path().join("config.toml");
        for (text, line) in [
            ("[http]\nport = 2123\n[daemon\nsocket = \"x\"\n", "line 3"),
            ("[daemon]\nsocket = 5\n", "line 2"),
            ("daemon = \"not a table\"\n", "line 1"),
        ] {
            let err = socket_from(home.path(), text).err();
            let Some(ResolveEndpointError::DaemonConfig { file, reason }) = &err else {
                panic!("config.toml {text:?} gave {err:?}");
            };
            assert_eq!(file, &config);
            assert!(reason.starts_with(line), "{text:?}: {reason}");
            let shown = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(shown.contains(&config.display().to_string()), "{shown}");
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_or_is_too_large_is_an_error() {
        let home = tempdir();
        // A directory where the file should be: opening works, reading does not.
        let config = home.path().join("config.toml");
        std::fs::create_dir(&config).unwrap_or_else(|e| panic!("mkdir: {e}"));
        assert!(matches!(
            configured_socket(&config, home.path(), None),
            Err(ResolveEndpointError::DaemonConfig { .. })
        ));
        let home = tempdir();
        let too_large = "#".repeat(DAEMON_CONFIG_MAX_BYTES as usize + 1);
        let err = socket_from(home.path(), &too_large).err();
        assert!(
            matches!(&err, Some(ResolveEndpointError::DaemonConfig { reason, .. }) if reason.contains("larger than")),
            "{err:?}"
        );
    }
}
