//! Finding the AGH daemon the way the `agh` CLI does: an explicit endpoint, else the socket AGH's
//! own `config.toml` names in `[daemon] socket` or else `<home>/daemon.sock`, else loopback TCP on
//! the port the daemon recorded in `daemon.json`.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::AghConfig;
use super::daemon_config::configured_socket;
use crate::api::{Endpoint, EndpointParseError};

/// AGH's TCP port when `daemon.json` does not say otherwise.
pub const DEFAULT_TCP_PORT: u16 = 2123;

/// `daemon.json` is a few dozen bytes; the cap keeps a wrong file from being read whole.
const DAEMON_JSON_MAX_BYTES: u64 = 64 * 1024;

/// Why no endpoint could be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveEndpointError {
    #[error("agh.endpoint is invalid: {0}")]
    Invalid(#[from] EndpointParseError),
    #[error(
        "agh.endpoint is empty and there is no AGH home to look in: set AGH_HOME or agh.home (HOME is not set either), or set agh.endpoint"
    )]
    NoHome,
    /// AGH's `config.toml` exists but its `[daemon] socket` cannot be read; the `agh` CLI would
    /// stop here too.
    #[error(
        "cannot read [daemon] socket from AGH's configuration {}: {reason}: fix that file, or set agh.endpoint",
        file.display()
    )]
    DaemonConfig { file: PathBuf, reason: String },
    #[error(
        "[daemon] socket in {} is {socket:?}, and HOME is not set to expand its ~: set HOME, or set agh.endpoint",
        file.display()
    )]
    SocketNeedsHome { file: PathBuf, socket: String },
}

/// How the endpoint was chosen, for `check` output and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// `agh.endpoint` was set.
    Configured,
    /// `<home>/daemon.sock` exists (and `<home>/config.toml` names no other socket).
    Socket,
    /// The socket named by `[daemon] socket` in this `config.toml` exists.
    DaemonConfigSocket(PathBuf),
    /// No socket at `no_socket`; the port recorded in `file`.
    DaemonJson { file: PathBuf, no_socket: PathBuf },
    /// No socket at `no_socket` and no readable `daemon.json`: AGH's default port.
    Fallback { no_socket: PathBuf },
}

impl EndpointSource {
    /// One word or two for the kind of source: `configured`, `socket`, `agh config`,
    /// `daemon.json` or `fallback`.
    pub fn kind(&self) -> &'static str {
        match self {
            EndpointSource::Configured => "configured",
            EndpointSource::Socket => "socket",
            EndpointSource::DaemonConfigSocket(_) => "agh config",
            EndpointSource::DaemonJson { .. } => "daemon.json",
            EndpointSource::Fallback { .. } => "fallback",
        }
    }
}

impl fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointSource::Configured => f.write_str("agh.endpoint"),
            EndpointSource::Socket => f.write_str("found in the AGH home"),
            EndpointSource::DaemonConfigSocket(file) => {
                write!(f, "[daemon] socket in {}", file.display())
            }
            EndpointSource::DaemonJson { file, no_socket } => write!(
                f,
                "no socket at {}, port read from {}",
                no_socket.display(),
                file.display()
            ),
            EndpointSource::Fallback { no_socket } => write!(
                f,
                "no socket at {} and no readable daemon.json in the AGH home, AGH's default port {DEFAULT_TCP_PORT}",
                no_socket.display()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub endpoint: Endpoint,
    pub source: EndpointSource,
}

/// [`resolve_endpoint_with`] with the user's home from `$HOME`.
pub fn resolve_endpoint(agh: &AghConfig) -> Result<ResolvedEndpoint, ResolveEndpointError> {
    let user_home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from);
    resolve_endpoint_with(agh, user_home.as_deref())
}

/// `agh.endpoint` if set; else the socket AGH serves on — `[daemon] socket` from
/// `<home>/config.toml` (a leading `~` is `user_home`), or `<home>/daemon.sock` when that key is
/// not set — if it exists; else `http://127.0.0.1:<port>` with the port from `<home>/daemon.json`,
/// or 2123.
///
/// Like the `agh` CLI, the configuration decides which socket: when `[daemon] socket` names one,
/// a `daemon.sock` in the home is not looked at (the daemon serves only the socket it is
/// configured with, so a file there would be stale). Looks at the filesystem each time it is
/// called, so a daemon started after the worker is found.
pub fn resolve_endpoint_with(
    agh: &AghConfig,
    user_home: Option<&Path>,
) -> Result<ResolvedEndpoint, ResolveEndpointError> {
    if !agh.endpoint.trim().is_empty() {
        return Ok(ResolvedEndpoint {
            endpoint: Endpoint::parse(&agh.endpoint)?,
            source: EndpointSource::Configured,
        });
    }
    let home = agh.home.trim();
    if home.is_empty() {
        return Err(ResolveEndpointError::NoHome);
    }
    let home = Path::new(home);
    let config = home.join("config.toml");
    let (socket, named_in) = match configured_socket(&config, home, user_home)? {
        Some(socket) => (socket, Some(config)),
        None => (home.join("daemon.sock"), None),
    };
    if socket.exists() {
        return Ok(ResolvedEndpoint {
            endpoint: Endpoint::Unix(socket),
            source: match named_in {
                Some(config) => EndpointSource::DaemonConfigSocket(config),
                None => EndpointSource::Socket,
            },
        });
    }
    let info = home.join("daemon.json");
    let (port, source) = match recorded_port(&info) {
        Some(port) => (
            port,
            EndpointSource::DaemonJson {
                file: info,
                no_socket: socket,
            },
        ),
        None => (
            DEFAULT_TCP_PORT,
            EndpointSource::Fallback { no_socket: socket },
        ),
    };
    Ok(ResolvedEndpoint {
        endpoint: Endpoint::Http(format!("http://127.0.0.1:{port}")),
        source,
    })
}

/// The `port` in `daemon.json`, or `None` when the file is missing, unreadable or makes no sense
/// (AGH itself falls back to 2123 for a port ≤ 0).
fn recorded_port(path: &Path) -> Option<u16> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(DAEMON_JSON_MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let info: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = info.get("port")?.as_u64()?;
    u16::try_from(port).ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agh_with_home(home: &Path) -> AghConfig {
        AghConfig {
            home: home.display().to_string(),
            ..AghConfig::default()
        }
    }

    /// Resolution with no user home: nothing here reads `$HOME`.
    fn resolve(agh: &AghConfig) -> Result<ResolvedEndpoint, ResolveEndpointError> {
        resolve_endpoint_with(agh, None)
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    /// `<home>/config.toml` with `[daemon] socket = <socket>` among other AGH settings.
    fn write_daemon_config(home: &Path, socket: &str) -> PathBuf {
        let config = home.join("config.toml");
        write(
            &config,
            &format!(
                "# AGH's own configuration\n[http]\nhost = \"localhost\"\nport = 2123\n\n\
                 [daemon]\nsocket = {socket:?}\nlog_level = \"info\"\n\n\
                 [[agents]]\nname = \"coder\"\ncommand = [\"agent\", \"--acp\"]\n"
            ),
        );
        config
    }

    #[test]
    fn an_explicit_endpoint_wins_over_everything_in_the_home() {
        let home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        write(&home.path().join("named.sock"), "");
        write_daemon_config(home.path(), "named.sock");
        let agh = AghConfig {
            endpoint: "http://127.0.0.1:9999/".into(),
            ..agh_with_home(home.path())
        };
        let resolved = resolve(&agh).ok();
        assert_eq!(
            resolved,
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:9999".into()),
                source: EndpointSource::Configured,
            })
        );
    }

    #[test]
    fn an_explicit_endpoint_wins_even_over_an_agh_config_that_does_not_parse() {
        let home = tempdir();
        write(&home.path().join("config.toml"), "[daemon\nsocket = ");
        let agh = AghConfig {
            endpoint: "unix:/run/agh/daemon.sock".into(),
            ..agh_with_home(home.path())
        };
        assert_eq!(
            resolve(&agh).map(|r| r.source).ok(),
            Some(EndpointSource::Configured)
        );
    }

    #[test]
    fn an_explicit_endpoint_of_the_wrong_form_is_an_error() {
        let agh = AghConfig {
            endpoint: "https://agh".into(),
            ..AghConfig::default()
        };
        assert!(matches!(
            resolve(&agh),
            Err(ResolveEndpointError::Invalid(
                EndpointParseError::Unsupported(_)
            ))
        ));
    }

    #[test]
    fn the_socket_is_preferred_when_it_exists() {
        let home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        write(&home.path().join("daemon.json"), r#"{"port": 4000}"#);
        let resolved = resolve(&agh_with_home(home.path()));
        assert_eq!(
            resolved.map(|r| (r.endpoint, r.source)).ok(),
            Some((
                Endpoint::Unix(home.path().join("daemon.sock")),
                EndpointSource::Socket
            ))
        );
    }

    #[test]
    fn the_socket_named_by_daemon_socket_wins_over_daemon_sock_with_tilde_the_given_user_home() {
        let home = tempdir();
        let user_home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        let socket = user_home.path().join("agh.sock");
        write(&socket, "");
        for named in [socket.display().to_string(), "~/agh.sock".to_string()] {
            let config = write_daemon_config(home.path(), &named);
            let resolved =
                resolve_endpoint_with(&agh_with_home(home.path()), Some(user_home.path()));
            assert_eq!(
                resolved.ok(),
                Some(ResolvedEndpoint {
                    endpoint: Endpoint::Unix(socket.clone()),
                    source: EndpointSource::DaemonConfigSocket(config),
                }),
                "[daemon] socket = {named:?}"
            );
        }
    }

    #[test]
    fn when_the_named_socket_is_missing_daemon_sock_is_not_tried_and_tcp_names_the_socket() {
        let home = tempdir();
        write(&home.path().join("daemon.sock"), "");
        let info = home.path().join("daemon.json");
        write(&info, r#"{"port": 41234}"#);
        write_daemon_config(home.path(), "/nonexistent/agh.sock");
        let resolved = resolve(&agh_with_home(home.path()));
        assert_eq!(
            resolved.ok(),
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:41234".into()),
                source: EndpointSource::DaemonJson {
                    file: info,
                    no_socket: PathBuf::from("/nonexistent/agh.sock"),
                },
            })
        );
    }

    #[test]
    fn without_a_socket_the_port_comes_from_daemon_json() {
        let home = tempdir();
        let info = home.path().join("daemon.json");
        write(
            &info,
            r#"{"port": 41234, "pid": 77, "started_at": "2026-05-31T10:00:00Z"}"#,
        );
        let resolved = resolve(&agh_with_home(home.path()));
        assert_eq!(
            resolved.ok(),
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:41234".into()),
                source: EndpointSource::DaemonJson {
                    file: info,
                    no_socket: home.path().join("daemon.sock"),
                },
            })
        );
    }

    #[test]
    fn with_nothing_in_the_home_the_default_port_is_used() {
        let home = tempdir();
        let resolved = resolve(&agh_with_home(home.path()));
        assert_eq!(
            resolved.ok(),
            Some(ResolvedEndpoint {
                endpoint: Endpoint::Http("http://127.0.0.1:2123".into()),
                source: EndpointSource::Fallback {
                    no_socket: home.path().join("daemon.sock"),
                },
            })
        );
    }

    #[test]
    fn a_garbage_or_senseless_daemon_json_falls_back_to_the_default_port() {
        let home = tempdir();
        let info = home.path().join("daemon.json");
        for text in [
            "not json at all \u{0}\u{1}",
            r#"{"port": "2124"}"#,
            r#"{"port": 0}"#,
            r#"{"port": -5}"#,
            r#"{"port": 70000}"#,
            r#"[1, 2, 3]"#,
            "",
        ] {
            write(&info, text);
            let resolved = resolve(&agh_with_home(home.path())).ok();
            assert_eq!(
                resolved.map(|r| r.endpoint),
                Some(Endpoint::Http("http://127.0.0.1:2123".into())),
                "daemon.json was {text:?}"
            );
        }
    }

    #[test]
    fn no_endpoint_and_no_home_is_an_error_that_says_what_to_set() {
        let err = resolve(&AghConfig::default()).err();
        assert_eq!(err, Some(ResolveEndpointError::NoHome));
        assert!(
            ResolveEndpointError::NoHome
                .to_string()
                .contains("AGH_HOME")
        );
    }

    #[test]
    fn each_source_says_its_kind_and_the_file_it_came_from() {
        let config = PathBuf::from("/home/op/.agh/config.toml");
        let source = EndpointSource::DaemonConfigSocket(config);
        assert_eq!(
            format!("{}: {source}", source.kind()),
            "agh config: [daemon] socket in /home/op/.agh/config.toml"
        );
        let source = EndpointSource::DaemonJson {
            file: "/srv/agh/daemon.json".into(),
            no_socket: "/srv/agh/daemon.sock".into(),
        };
        assert_eq!(
            format!("{}: {source}", source.kind()),
            "daemon.json: no socket at /srv/agh/daemon.sock, port read from /srv/agh/daemon.json"
        );
        assert_eq!(
            format!(
                "{}: {}",
                EndpointSource::Configured.kind(),
                EndpointSource::Configured
            ),
            "configured: agh.endpoint"
        );
    }
}
